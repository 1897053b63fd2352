//! The agent's side of its session with Ironic: the token, the node, the lookup settings
//! and the status message, which lookup writes and heartbeats read. The cells live in the
//! agent's shared state; this module only names them ([`Session`]), so the Ironic client
//! stays below everything that uses it.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Notify};

/// A secret string (the agent token): `Debug`/`Display` print `***`, equality is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that must send it (heartbeat body).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a candidate from a request.
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What the lookup answer's `config` block told the agent (protocol spec 4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct LookupSettings {
    /// `heartbeat_timeout` in seconds.
    pub heartbeat_timeout: u64,
    /// `agent_md5_checksum_enable`.
    pub md5_enabled: bool,
    /// `disable_deep_image_inspection`.
    pub disable_deep_image_inspection: bool,
    /// `permitted_image_formats`.
    pub permitted_image_formats: Vec<String>,
    /// `agent_skip_bmc_detect`.
    pub skip_bmc_detect: bool,
    /// `enable_bios_bootloader_install`.
    pub enable_bios_bootloader_install: bool,
    /// `tls_min_version` from Ironic, if sent.
    pub tls_min_version: Option<String>,
}

impl Default for LookupSettings {
    fn default() -> Self {
        Self {
            heartbeat_timeout: 300,
            md5_enabled: false,
            disable_deep_image_inspection: false,
            permitted_image_formats: ["raw", "gpt", "qcow2", "iso"].map(String::from).to_vec(),
            skip_bmc_detect: false,
            enable_bios_bootloader_install: false,
            tls_min_version: None,
        }
    }
}

/// The shared cells lookup writes and the heartbeat loop reads.
pub trait Session: Send + Sync + fmt::Debug {
    /// The agent token, once known.
    fn token(&self) -> &RwLock<Option<Secret>>;
    /// The node from lookup or from the last command that carried one.
    fn node_cell(&self) -> &Mutex<Option<Value>>;
    /// Settings from the lookup answer.
    fn settings(&self) -> &Mutex<LookupSettings>;
    /// Progress text of long work, sent as `agent_status_message`.
    fn status_message(&self) -> &Mutex<Option<String>>;
    /// Wakes the heartbeat loop for a forced heartbeat.
    fn heartbeat_now(&self) -> &Notify;
    /// True once the agent must stop serving (and heartbeating).
    fn stop_serving(&self) -> &watch::Sender<bool>;
}

impl<T: Session + ?Sized> Session for Arc<T> {
    fn token(&self) -> &RwLock<Option<Secret>> {
        (**self).token()
    }
    fn node_cell(&self) -> &Mutex<Option<Value>> {
        (**self).node_cell()
    }
    fn settings(&self) -> &Mutex<LookupSettings> {
        (**self).settings()
    }
    fn status_message(&self) -> &Mutex<Option<String>> {
        (**self).status_message()
    }
    fn heartbeat_now(&self) -> &Notify {
        (**self).heartbeat_now()
    }
    fn stop_serving(&self) -> &watch::Sender<bool> {
        (**self).stop_serving()
    }
}
