//! State shared by the API server, the command extensions and the heartbeat loop: it
//! sits below `api` and `commands` (which take it) and above `hardware` and `deploy`
//! (which it holds), and lends the heartbeat loop only its Ironic cells ([`Session`]).
//!
//! No globals: one `Arc<AgentState>` is built at start and passed down. Locks are
//! `std::sync` ones held for short critical sections, never across an `.await`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::deploy::{DeployEnv, DeployState};
use crate::hardware::Registry;
use crate::ironic::session::Session;
use crate::ironic::session::{LookupSettings, Secret};
use ira_hw::Inventory;

/// Everything the running agent shares between tasks.
#[derive(Debug)]
pub struct AgentState {
    /// Resolved configuration.
    pub config: Arc<Config>,
    /// Hardware managers, ordered by support level.
    pub managers: Arc<Registry>,
    /// Inventory snapshot taken at start (IPA caches it for the process lifetime).
    pub inventory: RwLock<Inventory>,
    /// The agent token, once known.
    pub token: RwLock<Option<Secret>>,
    /// The node from lookup or from the last command that carried one.
    pub node: Mutex<Option<Value>>,
    /// Settings from the lookup answer.
    pub lookup: Mutex<LookupSettings>,
    /// Progress text of long work, sent as `agent_status_message` where supported.
    pub status_message: Arc<Mutex<Option<String>>>,
    /// What the last image write left on the disk (image cache, partition UUIDs).
    pub deploy: Arc<DeployState>,
    /// Unix time the agent's main run began (`/v1/status` `started_at`).
    pub started_at: f64,
    /// Wakes the heartbeat loop for a forced heartbeat.
    pub heartbeat_now: Notify,
    /// Set to true when the agent must stop serving (lockdown, rescue, power off).
    pub stop_serving: watch::Sender<bool>,
    /// Set with `stop_serving` when the process must end once the API stopped (rescue)
    /// instead of idling until a signal (lockdown).
    pub exit_when_stopped: AtomicBool,
}

impl AgentState {
    /// A fresh state with no token and no node.
    pub fn new(config: Arc<Config>, managers: Arc<Registry>, inventory: Inventory) -> Self {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self {
            config,
            managers,
            inventory: RwLock::new(inventory),
            token: RwLock::new(None),
            node: Mutex::new(None),
            lookup: Mutex::new(LookupSettings::default()),
            status_message: Arc::new(Mutex::new(None)),
            deploy: Arc::default(),
            started_at,
            heartbeat_now: Notify::new(),
            stop_serving: watch::channel(false).0,
            exit_when_stopped: AtomicBool::new(false),
        }
    }

    /// Asks the heartbeat loop for a heartbeat as soon as its minimum gap allows.
    pub fn request_heartbeat(&self) {
        self.heartbeat_now.notify_one();
    }

    /// Checks a token from a request in constant time; false when none is held yet.
    pub fn token_matches(&self, candidate: &str) -> bool {
        let guard = self.token.read().expect("token lock poisoned");
        guard.as_ref().is_some_and(|t| t.matches(candidate))
    }

    /// A copy of the inventory snapshot; without BMC keys once the lookup said
    /// `agent_skip_bmc_detect` (IPA then reports them as null and omits `bmc_mac`).
    pub fn inventory(&self) -> Inventory {
        let mut inventory = self
            .inventory
            .read()
            .expect("inventory lock poisoned")
            .clone();
        if self.lookup_settings().skip_bmc_detect {
            inventory.bmc_address = None;
            inventory.bmc_v6address = None;
            inventory.bmc_mac = None;
        }
        inventory
    }

    /// A copy of the cached node, if any.
    pub fn node(&self) -> Option<Value> {
        self.node.lock().expect("node lock poisoned").clone()
    }

    /// A copy of the lookup settings.
    pub fn lookup_settings(&self) -> LookupSettings {
        self.lookup.lock().expect("lookup lock poisoned").clone()
    }

    /// The environment of a deploy command starting now (node and settings as they are).
    pub fn deploy_env(&self) -> DeployEnv {
        let managers = Arc::clone(&self.managers);
        DeployEnv {
            config: Arc::clone(&self.config),
            settings: self.lookup_settings(),
            node: self.node(),
            ppc64: self
                .inventory
                .read()
                .expect("inventory lock poisoned")
                .cpu
                .architecture
                .starts_with("ppc64"),
            cache: Arc::clone(&self.deploy),
            status: Arc::clone(&self.status_message),
            filter_devices: Arc::new(move |disks| managers.filter_devices(disks)),
        }
    }
}

impl Session for AgentState {
    fn token(&self) -> &RwLock<Option<Secret>> {
        &self.token
    }
    fn node_cell(&self) -> &Mutex<Option<Value>> {
        &self.node
    }
    fn settings(&self) -> &Mutex<LookupSettings> {
        &self.lookup
    }
    fn status_message(&self) -> &Mutex<Option<String>> {
        &self.status_message
    }
    fn heartbeat_now(&self) -> &Notify {
        &self.heartbeat_now
    }
    fn stop_serving(&self) -> &watch::Sender<bool> {
        &self.stop_serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_bmc_detect_hides_bmc_keys_from_later_inventories() {
        let inventory: Inventory = serde_json::from_value(serde_json::json!({
            "interfaces": [], "cpu": {"model_name": "", "frequency": "", "count": 0,
            "architecture": "x86_64", "flags": [], "socket_count": 1}, "disks": [],
            "memory": {"total": null, "physical_mb": null},
            "bmc_address": "192.0.2.10", "bmc_v6address": "::/0",
            "bmc_mac": "52:54:00:ab:cd:ef",
            "system_vendor": {"product_name": "", "serial_number": "", "manufacturer": "",
                "firmware": {"vendor": "", "version": "", "build_date": ""}},
            "boot": {"current_boot_mode": "bios", "pxe_interface": null}, "hostname": "h"
        }))
        .unwrap();
        let registry = Arc::new(Registry::with_builtin(&inventory));
        let state = AgentState::new(Arc::new(Config::default()), registry, inventory);
        assert_eq!(state.inventory().bmc_address.as_deref(), Some("192.0.2.10"));
        state.lookup.lock().unwrap().skip_bmc_detect = true;
        let inv = state.inventory();
        assert_eq!(
            (inv.bmc_address, inv.bmc_v6address, inv.bmc_mac),
            (None, None, None)
        );
    }
}
