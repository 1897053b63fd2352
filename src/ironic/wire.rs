//! JSON shapes exchanged with the Ironic API (protocol spec section 4), and the
//! microversion type that gates them.
//!
//! Parsing here is pure: functions take bytes or values and never do I/O, so every
//! shape is tested with literal documents. Unknown keys are ignored everywhere, as the
//! API adds keys between releases. To support a new field, add it to the struct with
//! `#[serde(default)]` and gate it by [`ApiVersion`] where the spec says so.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};

/// An Ironic API microversion such as `1.68`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major number (always 1 today).
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl ApiVersion {
    /// Builds `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// IPA's `MIN_IRONIC_VERSION`: assumed when discovery fails.
    pub const FALLBACK: Self = Self::new(1, 31);
    /// Heartbeats may carry `agent_version`.
    pub const AGENT_VERSION: Self = Self::new(1, 36);
    /// Lookup returns the token; heartbeats carry `agent_token`. Lookup header cap.
    pub const AGENT_TOKEN: Self = Self::new(1, 62);
    /// Heartbeats may carry `agent_verify_ca`; auto-TLS needs it. Heartbeat header cap.
    pub const AGENT_VERIFY_CA: Self = Self::new(1, 68);
    /// Heartbeats may carry `agent_status_message`.
    pub const AGENT_STATUS: Self = Self::new(1, 72);
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A version string that is not `X.Y`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API version {0:?}, expected X.Y")]
pub struct BadVersion(pub String);

impl FromStr for ApiVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_owned());
        let (major, minor) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(Self {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// The part of Ironic's root document (`GET /`) the agent reads.
#[derive(Debug, Clone, Deserialize)]
pub struct RootDocument {
    /// `default_version`, whose `version` is the maximum supported microversion.
    pub default_version: VersionDocument,
}

/// `default_version` of the root document.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionDocument {
    /// Maximum microversion, e.g. `"1.115"`.
    pub version: String,
    /// Minimum microversion, e.g. `"1.1"`.
    #[serde(default)]
    pub min_version: Option<String>,
}

/// Reads the maximum microversion out of a root document body.
pub fn parse_root_document(body: &[u8]) -> Result<ApiVersion, WireError> {
    let doc: RootDocument = serde_json::from_slice(body).map_err(WireError::Json)?;
    doc.default_version
        .version
        .parse()
        .map_err(|e: BadVersion| WireError::Shape(e.to_string()))
}

/// A body the agent could not use.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the expected types.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON, but a required part is missing.
    #[error("unexpected answer: {0}")]
    Shape(String),
}

/// The `config` block of a lookup answer (spec 4.2); every key is optional here and
/// applied only when present, as IPA does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LookupConfig {
    /// Basis of the heartbeat interval, seconds (a float is accepted).
    #[serde(default)]
    pub heartbeat_timeout: Option<f64>,
    /// The agent token, the mask `******`, or null.
    #[serde(default)]
    pub agent_token: Option<String>,
    /// Allow md5 image checksums.
    #[serde(default)]
    pub agent_md5_checksum_enable: Option<bool>,
    /// Turn off the image format safety inspection.
    #[serde(default)]
    pub disable_deep_image_inspection: Option<bool>,
    /// Formats allowed when inspection is on.
    #[serde(default)]
    pub permitted_image_formats: Option<Vec<String>>,
    /// Skip BMC detection in later inventories.
    #[serde(default)]
    pub agent_skip_bmc_detect: Option<bool>,
    /// Allow legacy grub installs.
    #[serde(default)]
    pub enable_bios_bootloader_install: Option<bool>,
    /// Minimum TLS version for the agent's server and client, `"1.2"` or `"1.3"`.
    #[serde(default)]
    pub tls_min_version: Option<String>,
    /// OpenSSL cipher list for TLS 1.2.
    #[serde(default)]
    pub tls_cipher_suites: Option<String>,
}

/// A usable lookup answer: the node (with a string `uuid`) and its config.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupAnswer {
    /// `node.uuid`.
    pub uuid: String,
    /// The trimmed node object as sent.
    pub node: Value,
    /// The `config` block.
    pub config: LookupConfig,
}

/// Parses a lookup answer body. An answer without `node.uuid` is an error (IPA retries
/// it); a very old API's top-level `heartbeat_timeout` is moved into `config`.
pub fn parse_lookup(body: &[u8]) -> Result<LookupAnswer, WireError> {
    let value: Value = serde_json::from_slice(body).map_err(WireError::Json)?;
    let Value::Object(mut top) = value else {
        return Err(WireError::Shape("lookup answer is not an object".into()));
    };
    let node = top
        .remove("node")
        .ok_or_else(|| WireError::Shape("lookup answer has no node".into()))?;
    let uuid = node
        .get("uuid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| WireError::Shape("lookup answer has no node.uuid".into()))?
        .to_owned();
    let mut config = match top.remove("config") {
        Some(Value::Object(map)) => map,
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(WireError::Shape("lookup config is not an object".into())),
    };
    // IPA: lookup_node moves a legacy top-level heartbeat_timeout into config.
    if !config.contains_key("heartbeat_timeout") {
        if let Some(hb) = top.remove("heartbeat_timeout") {
            config.insert("heartbeat_timeout".into(), hb);
        }
    }
    let config: LookupConfig =
        serde_json::from_value(Value::Object(config)).map_err(WireError::Json)?;
    Ok(LookupAnswer { uuid, node, config })
}

/// What the heartbeat body is built from; the version decides which keys appear.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatFields<'a> {
    /// `<proto>://<host>:<port>`.
    pub callback_url: &'a str,
    /// The token, if the agent holds one (sent as null otherwise).
    pub agent_token: Option<&'a str>,
    /// The agent's version string.
    pub agent_version: &'a str,
    /// PEM of the auto-generated certificate, if any.
    pub agent_verify_ca: Option<&'a str>,
    /// Progress text of long work.
    pub agent_status_message: Option<&'a str>,
}

/// Builds the heartbeat body for the microversion the request carries (spec 4.5):
/// any key the API does not know at that version would be refused with 400.
pub fn heartbeat_body(fields: &HeartbeatFields<'_>, version: ApiVersion) -> Value {
    let mut body = Map::new();
    body.insert("callback_url".into(), fields.callback_url.into());
    if version >= ApiVersion::AGENT_TOKEN {
        body.insert(
            "agent_token".into(),
            fields.agent_token.map_or(Value::Null, Value::from),
        );
    }
    if version >= ApiVersion::AGENT_VERSION {
        body.insert("agent_version".into(), fields.agent_version.into());
    }
    if version >= ApiVersion::AGENT_VERIFY_CA {
        if let Some(pem) = fields.agent_verify_ca {
            body.insert("agent_verify_ca".into(), pem.into());
        }
    }
    if version >= ApiVersion::AGENT_STATUS {
        if let Some(msg) = fields.agent_status_message {
            body.insert("agent_status_message".into(), msg.into());
        }
    }
    Value::Object(body)
}

/// Parses the inspection answer: `{"uuid": ...}` for the version-less request, or a
/// lookup-style `{"node": {"uuid": ...}}` from a newer API. None when neither is there.
pub fn parse_inspection_answer(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("uuid")
        .or_else(|| value.get("node").and_then(|n| n.get("uuid")))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

/// The most readable text of an Ironic error body, for logs only. Ironic wraps its fault
/// document as a JSON string in `error_message`; IPA also accepts an object there, or a
/// top-level `faultstring`/`title`. Falls back to the (shortened) raw body.
pub fn error_text(body: &[u8]) -> String {
    fn fault(v: &Value) -> Option<String> {
        v.get("faultstring")
            .or_else(|| v.get("title"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        match v.get("error_message") {
            Some(Value::String(inner)) => {
                return serde_json::from_str::<Value>(inner)
                    .ok()
                    .and_then(|i| fault(&i))
                    .unwrap_or_else(|| inner.clone());
            }
            Some(obj @ Value::Object(_)) => {
                if let Some(text) = fault(obj) {
                    return text;
                }
            }
            _ => {}
        }
        if let Some(text) = fault(&v) {
            return text;
        }
    }
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            "1.115".parse::<ApiVersion>().unwrap(),
            ApiVersion::new(1, 115)
        );
        assert!(ApiVersion::new(1, 115) > ApiVersion::AGENT_VERIFY_CA);
        assert!(ApiVersion::new(1, 9) < ApiVersion::FALLBACK);
        assert!("1".parse::<ApiVersion>().is_err());
        assert!("1.x".parse::<ApiVersion>().is_err());
        assert_eq!(ApiVersion::AGENT_TOKEN.to_string(), "1.62");
    }

    #[test]
    fn root_document_gives_max_version() {
        let body = br#"{"name":"OpenStack Ironic API","default_version":{"id":"v1","version":"1.115","min_version":"1.1","status":"CURRENT"}}"#;
        assert_eq!(parse_root_document(body).unwrap(), ApiVersion::new(1, 115));
        assert!(parse_root_document(b"{}").is_err());
        assert!(parse_root_document(b"<html>").is_err());
    }

    #[test]
    fn lookup_answer_parses_and_ignores_unknown_keys() {
        let body = json!({
            "node": {"uuid": "n-1", "properties": {}},
            "config": {"heartbeat_timeout": 30, "agent_token": "t", "metrics": {},
                       "tls_min_version": "1.3", "new_key": [1]}
        });
        let a = parse_lookup(body.to_string().as_bytes()).unwrap();
        assert_eq!(a.uuid, "n-1");
        assert_eq!(a.config.heartbeat_timeout, Some(30.0));
        assert_eq!(a.config.agent_token.as_deref(), Some("t"));
        assert_eq!(a.config.tls_min_version.as_deref(), Some("1.3"));
        assert_eq!(a.node["properties"], json!({}));
    }

    #[test]
    fn lookup_legacy_heartbeat_timeout_moves_into_config() {
        let body = br#"{"node": {"uuid": "u"}, "heartbeat_timeout": 120}"#;
        let a = parse_lookup(body).unwrap();
        assert_eq!(a.config.heartbeat_timeout, Some(120.0));
        assert_eq!(a.config.agent_token, None);
    }

    #[test]
    fn lookup_without_uuid_is_an_error() {
        for body in [
            r#"{"node": {}, "config": {}}"#,
            r#"{"node": {"uuid": null}}"#,
            r#"{"node": {"uuid": ""}}"#,
            r#"{"config": {}}"#,
            r#"[]"#,
            r#"garbage"#,
        ] {
            assert!(parse_lookup(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn heartbeat_body_keys_follow_the_version() {
        let f = HeartbeatFields {
            callback_url: "https://192.0.2.1:9999",
            agent_token: Some("tok"),
            agent_version: "1.0.0",
            agent_verify_ca: Some("PEM"),
            agent_status_message: Some("writing image"),
        };
        let keys = |v: Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(heartbeat_body(&f, ApiVersion::FALLBACK)),
            ["callback_url"]
        );
        assert_eq!(
            keys(heartbeat_body(&f, ApiVersion::AGENT_VERSION)),
            ["agent_version", "callback_url"]
        );
        assert_eq!(
            keys(heartbeat_body(&f, ApiVersion::AGENT_TOKEN)),
            ["agent_token", "agent_version", "callback_url"]
        );
        assert_eq!(
            keys(heartbeat_body(&f, ApiVersion::AGENT_VERIFY_CA)),
            [
                "agent_token",
                "agent_verify_ca",
                "agent_version",
                "callback_url"
            ]
        );
        let full = heartbeat_body(&f, ApiVersion::AGENT_STATUS);
        assert_eq!(full["agent_status_message"], "writing image");
        assert_eq!(full["agent_verify_ca"], "PEM");
        let none = HeartbeatFields {
            agent_token: None,
            agent_verify_ca: None,
            agent_status_message: None,
            ..f
        };
        let b = heartbeat_body(&none, ApiVersion::AGENT_STATUS);
        assert_eq!(b["agent_token"], Value::Null);
        assert_eq!(keys(b), ["agent_token", "agent_version", "callback_url"]);
    }

    #[test]
    fn inspection_answer_uuid() {
        assert_eq!(
            parse_inspection_answer(br#"{"uuid": "u1"}"#).as_deref(),
            Some("u1")
        );
        assert_eq!(
            parse_inspection_answer(br#"{"node": {"uuid": "u2"}, "config": {}}"#).as_deref(),
            Some("u2")
        );
        assert_eq!(parse_inspection_answer(b"{}"), None);
        assert_eq!(parse_inspection_answer(b""), None);
    }

    #[test]
    fn error_text_unwraps_ironic_faults() {
        let wrapped = br#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node is locked\", \"debuginfo\": null}"}"#;
        assert_eq!(error_text(wrapped), "Node is locked");
        assert_eq!(
            error_text(br#"{"error_message": {"faultstring": "x"}}"#),
            "x"
        );
        assert_eq!(error_text(br#"{"title": "Not Found"}"#), "Not Found");
        assert_eq!(error_text(b"plain"), "plain");
        assert!(error_text(&[b'a'; 500]).ends_with("..."));
    }
}
