//! Request routing and the handlers of every route (protocol spec 1.2-1.6).
//!
//! Paths are served with and without the trailing slash and with and without the `/v1`
//! prefix. Order inside a request: route (404), method (405), token (401), body, then
//! the command rules in `Commands::execute`. Every answer is JSON; each request is
//! logged once with method, path (never the query string, which holds the token),
//! status and duration. Bodies are never logged.
//!
//! Long-polls of `GET /v1/commands/<id>?wait=true` share a budget of
//! `max_long_polls`; beyond it a poll answers at once, which the conductor handles as
//! any answer of a running command. `POST ?wait=true` is not counted: the busy rule
//! lets only one command run, so at most one such request waits for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::api::auth;
use crate::api::error::ApiError;
use crate::api::limits::{json_depth_exceeds, BodyBudget, BodyShare, ServerLimits};
use crate::commands::Commands;
use crate::state::AgentState;

/// Where the documentation link of the discovery documents points.
const DOCS_URL: &str = "https://docs.openstack.org/ironic-python-agent/";

/// The media type advertised by `GET /v1/`.
const MEDIA_TYPE: &str = "application/vnd.openstack.ironic-python-agent.v1+json";

/// What every request handler needs.
#[derive(Debug)]
pub struct App {
    /// Shared agent state (token, start time).
    pub state: Arc<AgentState>,
    /// Command registry and history.
    pub commands: Arc<Commands>,
    /// Body and JSON bounds.
    pub limits: ServerLimits,
    /// `http` or `https`, for the discovery links.
    pub scheme: &'static str,
    /// Permits of the long-polls waiting now (`limits.max_long_polls`).
    pub long_polls: Semaphore,
    /// Bytes the bodies being read hold together (`limits.max_total_body_bytes`).
    pub bodies: BodyBudget,
}

/// What one connection has shown so far. Under pressure the server sheds a connection
/// until a request on it has carried the agent token, as the conductor's requests do.
#[derive(Debug, Default)]
pub struct Standing {
    head_seen: AtomicBool,
    trusted: AtomicBool,
}

impl Standing {
    /// Records that a complete request head arrived.
    pub fn saw_head(&self) {
        self.head_seen.store(true, Ordering::Release);
    }

    /// True once a complete request head arrived.
    pub fn head_seen(&self) -> bool {
        self.head_seen.load(Ordering::Acquire)
    }

    /// True once a request carried the agent token.
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    fn trust(&self) {
        self.trusted.store(true, Ordering::Release);
    }
}

/// The routes of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Root,
    V1,
    Status,
    Commands,
    Command(String),
}

impl Route {
    /// Maps a path; `None` is a 404.
    fn parse(path: &str) -> Option<Self> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Some(Self::Root);
        }
        let segments: Vec<&str> = trimmed.strip_prefix('/')?.split('/').collect();
        let unversioned = match segments.as_slice() {
            ["v1"] => return Some(Self::V1),
            ["v1", rest @ ..] => rest,
            rest => rest,
        };
        match unversioned {
            ["status"] => Some(Self::Status),
            ["commands"] => Some(Self::Commands),
            ["commands", id] if !id.is_empty() => Some(Self::Command((*id).to_owned())),
            _ => None,
        }
    }

    /// Methods the route answers (HEAD comes with GET, as in Werkzeug).
    fn allowed(&self) -> &'static str {
        match self {
            Self::Commands => "GET, HEAD, POST",
            _ => "GET, HEAD",
        }
    }

    fn accepts(&self, method: &Method) -> bool {
        *method == Method::GET
            || *method == Method::HEAD
            || (*method == Method::POST && *self == Self::Commands)
    }
}

/// Answers one request on a connection of `standing` and logs it.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    local: SocketAddr,
    standing: &Standing,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match dispatch(app, req, local, standing).await {
        Ok(response) => response,
        Err(err) => error_response(&err),
    };
    let status = response.status().as_u16();
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(%method, %path, status, duration_ms, "request");
    response
}

async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    local: SocketAddr,
    standing: &Standing,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let route = Route::parse(req.uri().path()).ok_or(ApiError::NotFound)?;
    if !route.accepts(req.method()) {
        return Err(ApiError::MethodNotAllowed(route.allowed()));
    }
    let query = req.uri().query().map(str::to_owned);
    match route {
        Route::Root => Ok(json_response(
            StatusCode::OK,
            &root_doc(&url_root(app, &req, local)),
        )),
        Route::V1 => Ok(json_response(
            StatusCode::OK,
            &v1_doc(&url_root(app, &req, local)),
        )),
        Route::Status => Ok(json_response(
            StatusCode::OK,
            &json!({"started_at": app.state.started_at, "version": crate::AGENT_VERSION}),
        )),
        Route::Commands => {
            auth::check_token(&app.state, query.as_deref())?;
            standing.trust();
            if req.method() == Method::POST {
                run_command(app, req, query.as_deref()).await
            } else {
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"commands": app.commands.list()}),
                ))
            }
        }
        Route::Command(id) => {
            auth::check_token(&app.state, query.as_deref())?;
            standing.trust();
            let result = match auth::wants_wait(query.as_deref())
                .then(|| app.long_polls.try_acquire().ok())
                .flatten()
            {
                Some(_waiting) => app.commands.wait(&id).await?,
                None => app.commands.get(&id)?,
            };
            Ok(json_response(StatusCode::OK, &result.to_json()))
        }
    }
}

/// `POST /v1/commands/`: body, then `name`/`params`, then the command rules.
async fn run_command(
    app: &App,
    req: Request<Incoming>,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (body, share) = read_body(req, &app.limits, &app.bodies).await?;
    if json_depth_exceeds(&body, app.limits.max_json_depth) {
        return Err(ApiError::BadRequest(format!(
            "Failed to decode JSON object: nesting deeper than {} levels",
            app.limits.max_json_depth
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("Failed to decode JSON object: {e}")))?;
    drop(body);
    drop(share);
    let (name, params) = name_and_params(value)
        .ok_or_else(|| ApiError::BadRequest("Missing or invalid name or params".to_owned()))?;
    let mut result = app.commands.execute(&name, params).await?;
    if auth::wants_wait(query) && result.is_running() {
        result = app.commands.wait(&result.id).await?;
    }
    Ok(json_response(StatusCode::OK, &result.to_json()))
}

/// `{"name": string, "params": object}`, else None.
fn name_and_params(body: Value) -> Option<(String, Map<String, Value>)> {
    let Value::Object(mut body) = body else {
        return None;
    };
    match (body.remove("name"), body.remove("params")) {
        (Some(Value::String(name)), Some(Value::Object(params))) => Some((name, params)),
        _ => None,
    }
}

/// Reads the whole body within the size and time limits, holding its bytes in a share
/// of the budget of all bodies: a body is refused with 413 as soon as it passes its own
/// limit or the budget runs out, never after buffering it.
async fn read_body<'a>(
    req: Request<Incoming>,
    limits: &ServerLimits,
    budget: &'a BodyBudget,
) -> Result<(Vec<u8>, BodyShare<'a>), ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = limits.max_body_bytes;
    let declared = match declared.map(usize::try_from) {
        None => 0,
        Some(Ok(len)) if len <= max => len,
        Some(_) => return Err(ApiError::PayloadTooLarge),
    };
    let mut share = budget.share();
    if !share.grow_to(declared) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut buf = Vec::with_capacity(declared);
    let mut body = req.into_body();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadRequest(format!("reading the body failed: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let needed = buf.len() + data.len();
            if needed > max {
                return Err(ApiError::PayloadTooLarge);
            }
            if needed > share.bytes() {
                // Grow geometrically, but take the bytes from the budget first.
                let target = needed.max(share.bytes().saturating_mul(2)).min(max);
                if !share.grow_to(target) {
                    return Err(ApiError::PayloadTooLarge);
                }
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.body_read_timeout, read).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Err(err)) => Err(err),
        Ok(Ok(())) => Ok((buf, share)),
    }
}

/// `R` of the discovery documents: scheme and Host, without a trailing slash.
fn url_root(app: &App, req: &Request<Incoming>, local: SocketAddr) -> String {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| local.to_string());
    format!("{}://{host}", app.scheme)
}

fn version_doc(root: &str) -> Value {
    json!({
        "id": "v1",
        "links": [
            {"href": format!("{root}/v1"), "rel": "self"},
            {"href": DOCS_URL, "rel": "describedby", "type": "text/html"},
        ],
    })
}

fn root_doc(root: &str) -> Value {
    json!({
        "name": "OpenStack Ironic Python Agent API",
        "description": "Ironic Python Agent is a provisioning agent for OpenStack Ironic",
        "versions": [version_doc(root)],
        "default_version": version_doc(root),
    })
}

fn v1_doc(root: &str) -> Value {
    let mut doc = version_doc(root);
    let extra = json!({
        "commands": [
            {"href": format!("{root}/v1/commands"), "rel": "self"},
            {"href": format!("{root}/commands"), "rel": "bookmark"},
        ],
        "status": [
            {"href": format!("{root}/v1/status"), "rel": "self"},
            {"href": format!("{root}/status"), "rel": "bookmark"},
        ],
        "media_types": [{"base": "application/json", "type": MEDIA_TYPE}],
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
    }
    doc
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The fault answer of an error (with `Allow` on a 405).
pub fn error_response(err: &ApiError) -> Response<Full<Bytes>> {
    if err.status().is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    let mut response = json_response(err.status(), &err.fault());
    if let ApiError::MethodNotAllowed(allow) = err {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_routes_with_and_without_slash_and_prefix() {
        let cases = [
            ("/", Some(Route::Root)),
            ("/v1", Some(Route::V1)),
            ("/v1/", Some(Route::V1)),
            ("/v1/status", Some(Route::Status)),
            ("/status/", Some(Route::Status)),
            ("/v1/commands/", Some(Route::Commands)),
            ("/commands", Some(Route::Commands)),
            ("/v1/commands/abc", Some(Route::Command("abc".into()))),
            ("/commands/abc/", Some(Route::Command("abc".into()))),
            ("/v2/", None),
            ("/v1/commands//", None),
            ("//", None),
            ("/v1/v1/status", None),
            ("/commands/a/b", None),
            ("/v1/nope", None),
        ];
        for (path, want) in cases {
            assert_eq!(Route::parse(path), want, "{path}");
        }
    }

    #[test]
    fn only_commands_take_post() {
        assert!(Route::Commands.accepts(&Method::POST));
        assert!(!Route::Status.accepts(&Method::POST));
        assert!(!Route::Command("x".into()).accepts(&Method::POST));
        assert!(!Route::Commands.accepts(&Method::DELETE));
    }

    #[test]
    fn discovery_documents_match_ipa() {
        let root = root_doc("http://10.0.0.2:9999");
        assert_eq!(
            root["versions"][0]["links"][0]["href"],
            "http://10.0.0.2:9999/v1"
        );
        assert_eq!(root["default_version"], root["versions"][0]);
        let v1 = v1_doc("https://h:1");
        assert_eq!(v1["id"], "v1");
        assert_eq!(v1["commands"][1]["href"], "https://h:1/commands");
        assert_eq!(v1["status"][0]["href"], "https://h:1/v1/status");
        assert_eq!(v1["media_types"][0]["type"], MEDIA_TYPE);
    }

    #[test]
    fn body_shape_is_checked() {
        assert!(name_and_params(json!({"name": "a.b", "params": {}})).is_some());
        assert!(name_and_params(json!({"name": "a.b"})).is_none());
        assert!(name_and_params(json!({"name": "a.b", "params": []})).is_none());
        assert!(name_and_params(json!({"name": 1, "params": {}})).is_none());
        assert!(name_and_params(json!([1])).is_none());
    }
}
