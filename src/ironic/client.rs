//! HTTP client of the Ironic API: URL failover, common headers, version discovery,
//! one-shot lookup and heartbeat requests (spec 4, 4.1, 4.5).
//!
//! Retrying is not done here: `lookup.rs`, `heartbeat.rs` and `inspection.rs` decide
//! what to retry and when. This module only fails over between configured API URLs,
//! and only on connection-level errors, never on an HTTP status.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use super::wire::{self, ApiVersion, HeartbeatFields};
use crate::config::Config;
use crate::tls_client::{self as tls, TlsError};

/// Header carrying the microversion.
const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";
/// Header carrying `global_request_id`.
const REQUEST_ID_HEADER: &str = "X-OpenStack-Request-ID";
/// Largest answer body read from Ironic; lookup answers are a few KiB.
const MAX_BODY: usize = 16 << 20;

/// How the client is built; [`ClientOptions::from_config`] gives the agent's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// API URLs in preference order, trailing slashes stripped.
    pub urls: Vec<String>,
    /// `X-OpenStack-Request-ID` value.
    pub request_id: Option<String>,
    /// `ironic_api_version`: skips discovery.
    pub forced_version: Option<ApiVersion>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Accept any server certificate.
    pub insecure: bool,
    /// CA bundle replacing the system roots.
    pub cafile: Option<std::path::PathBuf>,
    /// `1.2` or `1.3`.
    pub tls_min_version: String,
    /// Load the system CA bundle (some configured URL is https).
    pub system_roots: bool,
}

impl ClientOptions {
    /// Options from the agent configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            urls: config.api_urls.clone(),
            request_id: config.global_request_id.clone(),
            forced_version: config
                .ironic_api_version
                .map(|(major, minor)| ApiVersion::new(major, minor)),
            timeout: config.http_request_timeout,
            insecure: config.insecure,
            cafile: config.cafile.clone(),
            tls_min_version: config.tls_min_version.clone(),
            system_roots: config
                .api_urls
                .iter()
                .chain(&config.inspection_callback_url)
                .any(|u| u.starts_with("https://")),
        }
    }
}

/// Errors of one request (after failover).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No API URL is configured.
    #[error("no Ironic API URL configured")]
    NoUrl,
    /// Every URL failed at the connection level; the last error is kept.
    #[error("{url}: {source}")]
    Connect {
        /// The last URL tried.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer's body could not be read, or exceeded the size bound.
    #[error("{url}: reading the answer: {reason}")]
    Body {
        /// The URL that answered.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The request could not even be built (invalid URL).
    #[error("{url}: {source}")]
    Request {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// reqwest refused the client settings.
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// `GET /` gave no usable version document.
    #[error("Ironic API version discovery failed: {0}")]
    Discovery(String),
}

/// An HTTP answer: status and bounded body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes (at most 16 MiB).
    pub body: Bytes,
    /// Base URL that answered.
    pub url: String,
}

/// Why a heartbeat was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// No answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// 409: node locked and no callback URL recorded yet.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Any status other than 202.
    #[error("HTTP {status}: {text}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Ironic's error text.
        text: String,
    },
}

/// The client; share it behind an `Arc`.
#[derive(Debug)]
pub struct IronicClient {
    http: reqwest::Client,
    /// What the client was built from, to rebuild it with other TLS settings.
    opts: ClientOptions,
    /// Base URLs, the last one that answered first.
    urls: Mutex<Vec<String>>,
    forced_version: Option<ApiVersion>,
    /// Discovered maximum version; only a successful discovery is cached (IPA retries).
    discovered: Mutex<Option<ApiVersion>>,
}

impl IronicClient {
    /// Builds the client (TLS, headers, timeout).
    pub fn new(opts: &ClientOptions) -> Result<Self, ClientError> {
        let tls = tls::client_config_with(
            opts.insecure,
            opts.cafile.as_deref(),
            &opts.tls_min_version,
            opts.system_roots,
        )?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(id) = &opts.request_id {
            match HeaderValue::from_str(id) {
                Ok(v) => {
                    headers.insert(REQUEST_ID_HEADER, v);
                }
                Err(_) => tracing::warn!("global request id is not a valid header value, not sent"),
            }
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(headers)
            .timeout(opts.timeout)
            .build()
            .map_err(ClientError::Build)?;
        let urls = opts
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        Ok(Self {
            http,
            opts: opts.clone(),
            urls: Mutex::new(urls),
            forced_version: opts.forced_version,
            discovered: Mutex::new(None),
        })
    }

    /// The client the agent configuration describes.
    pub fn from_config(config: &Config) -> Result<Self, ClientError> {
        Self::new(&ClientOptions::from_config(config))
    }

    /// The same client with another minimum TLS version (the lookup's
    /// `tls_min_version` applies to outgoing connections from then on); the preferred URL
    /// and the discovered version carry over.
    pub fn with_tls_min_version(&self, min_version: &str) -> Result<Self, ClientError> {
        let mut opts = self.opts.clone();
        opts.tls_min_version = min_version.to_owned();
        opts.urls = self.urls();
        let client = Self::new(&opts)?;
        *client.discovered.lock().expect("version lock poisoned") =
            *self.discovered.lock().expect("version lock poisoned");
        Ok(client)
    }

    /// The API URLs, preferred first.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().expect("url lock poisoned").clone()
    }

    /// Sends one request to `path` (with its query) on the first API URL that accepts a
    /// connection; the one that answers becomes the preferred one.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        version: Option<ApiVersion>,
        body: Option<&Value>,
    ) -> Result<Response, ClientError> {
        let urls = self.urls();
        let mut last = None;
        for base in &urls {
            let url = format!("{base}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(v) = version {
                req = req.header(VERSION_HEADER, v.to_string());
            }
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            match req.send().await {
                Ok(resp) => {
                    self.prefer(base);
                    return read_response(resp, base).await;
                }
                Err(e) if e.is_builder() => {
                    return Err(ClientError::Request { url, source: e });
                }
                Err(e) => {
                    tracing::warn!(url = %base, error = %e, "Ironic API unreachable, trying the next URL");
                    last = Some(ClientError::Connect {
                        url: base.clone(),
                        source: e,
                    });
                }
            }
        }
        Err(last.unwrap_or(ClientError::NoUrl))
    }

    /// POSTs JSON to an absolute URL (the inspection callback): no failover, no
    /// version header.
    pub async fn post_absolute(&self, url: &str, body: &Value) -> Result<Response, ClientError> {
        let resp = self
            .http
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                if e.is_builder() {
                    ClientError::Request {
                        url: url.to_owned(),
                        source: e,
                    }
                } else {
                    ClientError::Connect {
                        url: url.to_owned(),
                        source: e,
                    }
                }
            })?;
        read_response(resp, url).await
    }

    /// Moves `base` to the front of the URL list.
    fn prefer(&self, base: &str) {
        let mut urls = self.urls.lock().expect("url lock poisoned");
        if let Some(pos) = urls.iter().position(|u| u == base) {
            if pos != 0 {
                let url = urls.remove(pos);
                urls.insert(0, url);
            }
        }
    }

    /// The API's maximum microversion: the forced one, the cached discovery, or a fresh
    /// `GET /`; 1.31 with a warning when discovery fails (not cached, so it is retried).
    pub async fn api_version(&self) -> ApiVersion {
        match self.discover().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    fallback = %ApiVersion::FALLBACK,
                    "Ironic API version discovery failed, assuming the minimum"
                );
                ApiVersion::FALLBACK
            }
        }
    }

    /// The forced or discovered maximum version; only a success is cached (IPA retries).
    pub async fn discover(&self) -> Result<ApiVersion, ClientError> {
        if let Some(v) = self.forced_version {
            return Ok(v);
        }
        if let Some(v) = *self.discovered.lock().expect("version lock poisoned") {
            return Ok(v);
        }
        // A connection-level error is returned as it is; an answer that is not a version
        // document becomes `Discovery`.
        let r = self.request(Method::GET, "/", None, None).await?;
        let found = if (200..300).contains(&r.status) {
            wire::parse_root_document(&r.body).map_err(|e| e.to_string())
        } else {
            Err(format!("HTTP {}: {}", r.status, wire::error_text(&r.body)))
        };
        let v = found.map_err(ClientError::Discovery)?;
        tracing::info!(version = %v, "Ironic API version discovered");
        *self.discovered.lock().expect("version lock poisoned") = Some(v);
        Ok(v)
    }

    pub async fn lookup_request(
        &self,
        addresses: &[String],
        node_uuid: Option<&str>,
    ) -> Result<Response, ClientError> {
        // Unlike IPA, no lookup goes out at the 1.31 fallback after a failed discovery:
        // below 1.62 Ironic hands out no token, and an agent without one can never be
        // driven. A failed discovery fails the attempt and lookup retries.
        let version = self.discover().await?.min(ApiVersion::AGENT_TOKEN);
        let mut path = format!("/v1/lookup?addresses={}", encode(&addresses.join(",")));
        if let Some(uuid) = node_uuid {
            path.push_str("&node_uuid=");
            path.push_str(&encode(uuid));
        }
        self.request(Method::GET, &path, Some(version), None).await
    }

    /// One `POST /v1/heartbeat/{uuid}`. The header is `min(discovered, 1.68)`, or 1.72
    /// when a status message is to be sent and the API knows that version.
    pub async fn heartbeat(
        &self,
        node_uuid: &str,
        fields: &HeartbeatFields<'_>,
    ) -> Result<(), HeartbeatError> {
        let discovered = self.api_version().await;
        let version =
            if fields.agent_status_message.is_some() && discovered >= ApiVersion::AGENT_STATUS {
                ApiVersion::AGENT_STATUS
            } else {
                discovered.min(ApiVersion::AGENT_VERIFY_CA)
            };
        let body = wire::heartbeat_body(fields, version);
        let path = format!("/v1/heartbeat/{}", encode(node_uuid));
        let resp = self
            .request(Method::POST, &path, Some(version), Some(&body))
            .await?;
        match resp.status {
            202 => Ok(()),
            409 => Err(HeartbeatError::Conflict(wire::error_text(&resp.body))),
            status => Err(HeartbeatError::Status {
                status,
                text: wire::error_text(&resp.body),
            }),
        }
    }
}

/// Reads a response body up to [`MAX_BODY`].
async fn read_response(mut resp: reqwest::Response, url: &str) -> Result<Response, ClientError> {
    let status = resp.status().as_u16();
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ClientError::Body {
                        url: url.to_owned(),
                        reason: format!("answer larger than {MAX_BODY} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ClientError::Body {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(Response {
        status,
        body: body.freeze(),
        url: url.to_owned(),
    })
}

/// Percent-encodes a query or path value, keeping the characters MACs and UUIDs use
/// (`:` and `,` stay readable, as IPA sends them).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_macs_and_escapes_the_rest() {
        assert_eq!(encode("52:54:00:12:34:56,aa:bb"), "52:54:00:12:34:56,aa:bb");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn urls_are_normalised_and_reordered() {
        let opts = ClientOptions {
            urls: vec!["http://a/".into(), "http://b//".into(), "".into()],
            request_id: Some("req-1".into()),
            forced_version: None,
            timeout: Duration::from_secs(1),
            insecure: false,
            cafile: None,
            tls_min_version: "1.2".into(),
            system_roots: true,
        };
        let c = IronicClient::new(&opts).unwrap();
        assert_eq!(c.urls(), ["http://a", "http://b"]);
        c.prefer("http://b");
        assert_eq!(c.urls(), ["http://b", "http://a"]);
        c.prefer("http://b");
        assert_eq!(c.urls(), ["http://b", "http://a"]);
    }
}
