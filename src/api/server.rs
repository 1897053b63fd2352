//! The HTTP/1.1 server: accept loop, connection bound, optional TLS, per-connection
//! limits and graceful stop.
//!
//! Connections are bounded by a semaphore taken *before* `accept`, so extra clients wait
//! in the kernel backlog instead of costing memory. A TLS handshake and each request
//! head must arrive within `header_read_timeout`. Stopping (the `shutdown` signal or
//! `AgentState::stop_serving`) closes the listener, lets in-flight requests finish for
//! up to `shutdown_grace`, then drops what is left.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::api::limits::ServerLimits;
use crate::api::routes::{self, App};
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
    });
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        connections.spawn(connection(
            stream,
            peer,
            local,
            acceptor.clone(),
            Arc::clone(&app),
            stop_rx.clone(),
            permit,
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

/// One client connection, holding its slot until it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Small JSON answers: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return serve_io(stream, peer, local, app, stop).await;
    };
    let timeout = app.limits.header_read_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_io(tls, peer, local, app, stop).await,
        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Runs HTTP/1.1 on an established (plain or TLS) stream.
async fn serve_io<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
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
    let service = service_fn(move |req| {
        let app = Arc::clone(&service_app);
        async move { Ok::<_, Infallible>(routes::handle(&app, req, local).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
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
