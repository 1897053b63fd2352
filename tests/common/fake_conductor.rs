//! An in-process stand-in for the Ironic API: hyper on 127.0.0.1, recording every
//! request and answering from a per-route script.
//!
//! Routes: `GET /` (root document, max version 1.115), `GET /v1/lookup`,
//! `POST /v1/heartbeat/{uuid}`, `POST /v1/continue_inspection`. Each route answers
//! with its queued replies first, in order, then with its default. A reply is a status
//! with a JSON or raw body, a dropped connection, or any of those after a delay.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Node UUID the default answers use.
pub const NODE_UUID: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
/// Token the default lookup answer hands out (43 characters like Ironic's).
pub const TOKEN: &str = "Xq3JfT0kenT0kenT0kenT0kenT0kenT0kenT0ken123";

/// The routes the fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /`
    Root,
    /// `GET /v1/lookup`
    Lookup,
    /// `POST /v1/heartbeat/{uuid}`
    Heartbeat,
    /// `POST /v1/continue_inspection`
    Inspection,
    /// Anything else (answered 404).
    Other,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status and JSON body.
    Json(u16, Value),
    /// Status and raw body (garbage, HTML...).
    Raw(u16, String),
    /// Status with an empty body.
    Empty(u16),
    /// Close the connection without answering.
    Drop,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which route it hit.
    pub route: Route,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Header names lower-case, values as text.
    pub headers: HashMap<String, String>,
    /// Body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    /// Raw body.
    pub raw_body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct Inner {
    requests: Vec<Recorded>,
    scripts: HashMap<Route, VecDeque<Reply>>,
    defaults: HashMap<Route, Reply>,
}

/// The running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeConductor {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

/// The default lookup answer: Ironic 39's shape with a fresh token.
pub fn lookup_answer(token: Option<&str>, heartbeat_timeout: u64) -> Value {
    json!({
        "node": {
            "uuid": NODE_UUID,
            "properties": {"cpu_arch": "x86_64"},
            "instance_info": {},
            "driver_internal_info": {"agent_secret_token": "******"},
            "links": []
        },
        "config": {
            "metrics": {"backend": "noop"},
            "heartbeat_timeout": heartbeat_timeout,
            "agent_token": token,
            "agent_token_required": true,
            "agent_md5_checksum_enable": true,
            "disable_deep_image_inspection": false,
            "permitted_image_formats": ["raw", "gpt", "qcow2", "iso"],
            "agent_skip_bmc_detect": false,
            "enable_bios_bootloader_install": false,
            "tls_min_version": "1.3",
            "tls_cipher_suites": null
        }
    })
}

/// Ironic's root document with `max` as the maximum version.
pub fn root_document(max: &str) -> Value {
    json!({
        "name": "OpenStack Ironic API",
        "versions": [{"id": "v1", "status": "CURRENT", "version": max, "min_version": "1.1"}],
        "default_version": {"id": "v1", "status": "CURRENT", "version": max, "min_version": "1.1"}
    })
}

impl FakeConductor {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on a given port of 127.0.0.1 (0 = any).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind fake conductor");
        let addr = listener.local_addr().expect("local addr");
        let mut defaults = HashMap::new();
        defaults.insert(Route::Root, Reply::Json(200, root_document("1.115")));
        defaults.insert(
            Route::Lookup,
            Reply::Json(200, lookup_answer(Some(TOKEN), 300)),
        );
        defaults.insert(Route::Heartbeat, Reply::Empty(202));
        defaults.insert(
            Route::Inspection,
            Reply::Json(202, json!({"uuid": NODE_UUID})),
        );
        defaults.insert(
            Route::Other,
            Reply::Json(
                404,
                json!({"error_message": "{\"faultstring\": \"Not Found\"}"}),
            ),
        );
        let inner = Arc::new(Mutex::new(Inner {
            requests: Vec::new(),
            scripts: HashMap::new(),
            defaults,
        }));
        let arrived = Arc::new(Notify::new());
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (inner2, arrived2) = (inner.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stop_rx => break,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let (inner, arrived) = (inner2.clone(), arrived2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, inner.clone(), arrived.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            inner,
            arrived,
            _stop: stop_tx,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues replies for a route (answered before its default, in order).
    pub fn script(&self, route: Route, replies: impl IntoIterator<Item = Reply>) {
        let mut inner = self.inner.lock().unwrap();
        inner.scripts.entry(route).or_default().extend(replies);
    }

    /// Replaces a route's default reply.
    pub fn set_default(&self, route: Route, reply: Reply) {
        self.inner.lock().unwrap().defaults.insert(route, reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests that hit `route`.
    pub fn requests_to(&self, route: Route) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == route)
            .collect()
    }

    /// Waits until `n` requests hit `route`; panics after `timeout`.
    pub async fn wait_for(&self, route: Route, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let got = self.requests_to(route);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {n} requests to {route:?}, got {}: {:?}",
                    got.len(),
                    self.requests()
                        .iter()
                        .map(|r| (&r.method, &r.path))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

fn route_of(method: &str, path: &str) -> Route {
    match (method, path.trim_end_matches('/')) {
        ("GET", "") => Route::Root,
        ("GET", "/v1/lookup") => Route::Lookup,
        ("POST", p) if p.starts_with("/v1/heartbeat/") => Route::Heartbeat,
        ("POST", "/v1/continue_inspection") => Route::Inspection,
        _ => Route::Other,
    }
}

/// Error a service returns to make hyper drop the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: Request<Incoming>,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let raw_body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let route = route_of(&method, &path);
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(Recorded {
            route,
            method,
            path,
            query,
            headers,
            body: serde_json::from_slice(&raw_body).ok(),
            raw_body,
            at: Instant::now(),
        });
        let queued = inner.scripts.get_mut(&route).and_then(VecDeque::pop_front);
        queued.unwrap_or_else(|| inner.defaults[&route].clone())
    };
    arrived.notify_waiters();
    answer(reply).await
}

async fn answer(mut reply: Reply) -> Result<Response<Full<Bytes>>, Dropped> {
    loop {
        let (status, body) = match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
                continue;
            }
            Reply::Drop => return Err(Dropped),
            Reply::Json(s, v) => (s, Bytes::from(v.to_string())),
            Reply::Raw(s, text) => (s, Bytes::from(text)),
            Reply::Empty(s) => (s, Bytes::new()),
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("valid response");
        return Ok(resp);
    }
}
