//! The HTTP/1.1 server: accept loop, connection bound, optional TLS, per-connection
//! limits and graceful stop.
//!
//! Connections are bounded by a semaphore taken *before* `accept`, so extra clients wait
//! in the kernel backlog instead of costing memory. A TLS handshake and each request
//! head must arrive within `header_read_timeout`. The bound is large, so that clients
//! which open connections and send nothing cannot lock the conductor out: above
//! `busy_connections` (or at the bound) the server is under pressure, and a connection
//! is then shed `pressure_header_timeout` after its accept, oldest first, unless a
//! request on it carried the agent token (the conductor's keep-alive connections stay):
//! at once if no request head has arrived yet, else after the request in flight. Stopping (the `shutdown` signal or
//! `AgentState::stop_serving`) closes the listener, lets in-flight requests finish for
//! up to `shutdown_grace`, then drops what is left.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::api::limits::{BodyBudget, ServerLimits, BODY_ALLOWANCE};
use crate::api::routes::{self, App, Standing};
use crate::commands::Commands;
use crate::state::AgentState;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on `listener` with `limits` until `shutdown` or
/// `state.stop_serving` turns true; TLS when `tls` is given.
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<AgentState>,
    commands: Arc<Commands>,
    mut shutdown: watch::Receiver<bool>,
    limits: ServerLimits,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut stopping = state.stop_serving.subscribe();
    let app = Arc::new(App {
        state,
        commands,
        limits: limits.clone(),
        scheme,
        long_polls: Semaphore::new(limits.max_long_polls),
        bodies: BodyBudget::new(limits.max_total_body_bytes, BODY_ALLOWANCE),
    });
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let load = Load::new(&limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tracing::info!(%local, scheme, "serving the agent API");

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            () = stop_requested(&mut shutdown, &mut stopping) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop_requested(&mut shutdown, &mut stopping) => break,
        };
        while connections.try_join_next().is_some() {}
        let admitted = Slot {
            _permit: permit,
            _open: load.enter(),
            accepted: Instant::now(),
            pressure: load.pressure.subscribe(),
        };
        connections.spawn(connection(
            stream,
            peer,
            local,
            acceptor.clone(),
            Arc::clone(&app),
            stop_rx.clone(),
            admitted,
        ));
    }

    drop(listener);
    tracing::info!(%local, "stopping the agent API");
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still busy after the grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Resolves once either signal is true; a dropped sender never stops us.
async fn stop_requested(a: &mut watch::Receiver<bool>, b: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = wait_true(a) => {}
        () = wait_true(b) => {}
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The number of open connections and the pressure signal derived from it.
#[derive(Debug)]
struct Load {
    open: AtomicUsize,
    busy: usize,
    max: usize,
    pressure: watch::Sender<bool>,
}

impl Load {
    fn new(limits: &ServerLimits) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            busy: limits.busy_connections,
            max: limits.max_connections.max(1),
            pressure: watch::channel(false).0,
        })
    }

    /// Counts one more open connection until the returned guard drops.
    fn enter(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.update();
        Open(Arc::clone(self))
    }

    fn update(&self) {
        // Reading the count under the watch's lock: the last writer sees the last count.
        self.pressure.send_if_modified(|pressed| {
            let open = self.open.load(Ordering::Acquire);
            let now = open > self.busy || open >= self.max;
            std::mem::replace(pressed, now) != now
        });
    }
}

/// One open connection counted in [`Load`].
#[derive(Debug)]
struct Open(Arc<Load>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.update();
    }
}

/// What a connection holds from its accept to its end.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    _open: Open,
    accepted: Instant,
    pressure: watch::Receiver<bool>,
}

/// Resolves when a connection should be shed: the server is under pressure, the
/// connection is past `deadline`, and no request on it carried the token.
async fn shed(mut pressure: watch::Receiver<bool>, deadline: Instant, standing: Arc<Standing>) {
    tokio::time::sleep_until(deadline).await;
    loop {
        if standing.trusted() {
            return std::future::pending().await;
        }
        if *pressure.borrow_and_update() {
            return;
        }
        if pressure.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// One client connection, holding its slot until it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    slot: Slot,
) {
    // Small JSON answers: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let standing = Arc::new(Standing::default());
    let shed = shed(
        slot.pressure.clone(),
        slot.accepted + app.limits.pressure_header_timeout,
        Arc::clone(&standing),
    );
    tokio::pin!(shed);
    let Some(acceptor) = acceptor else {
        return serve_io(stream, peer, local, app, stop, standing, shed).await;
    };
    let timeout = app.limits.header_read_timeout;
    tokio::select! {
        handshake = tokio::time::timeout(timeout, acceptor.accept(stream)) => match handshake {
            Ok(Ok(tls)) => serve_io(tls, peer, local, app, stop, standing, shed).await,
            Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
        () = shed.as_mut() => tracing::debug!(%peer, "unfinished TLS handshake shed under pressure"),
    }
}

/// Runs HTTP/1.1 on an established (plain or TLS) stream.
async fn serve_io<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    standing: Arc<Standing>,
    shed: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.limits.header_read_timeout)
        .max_header_size(app.limits.max_header_bytes)
        .max_headers(app.limits.max_headers)
        .keep_alive(true);
    let service_app = Arc::clone(&app);
    let standing_of_service = Arc::clone(&standing);
    let service = service_fn(move |req| {
        standing_of_service.saw_head();
        let app = Arc::clone(&service_app);
        let standing = Arc::clone(&standing_of_service);
        async move { Ok::<_, Infallible>(routes::handle(&app, req, local, &standing).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        }
        () = shed => {
            if standing.head_seen() {
                // Answers the request in flight, if any, then closes.
                conn.as_mut().graceful_shutdown();
                let grace = app.limits.pressure_header_timeout;
                if let Ok(Err(err)) = tokio::time::timeout(grace, conn).await {
                    tracing::debug!(%peer, %err, "connection ended with an error while shed");
                }
            }
            tracing::debug!(%peer, "connection without the token shed under pressure");
        }
        () = wait_true(&mut stop) => {
            // Finishes the request in flight (e.g. the lockdown answer), then closes.
            conn.as_mut().graceful_shutdown();
            if let Err(err) = conn.await {
                tracing::debug!(%peer, %err, "connection ended with an error while stopping");
            }
        }
    }
}
