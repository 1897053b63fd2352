//! What deploy work runs with ([`DeployEnv`]): built once where a command or step
//! starts, so `deploy/` reads no agent-wide state and never takes the agent's locks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::blockdev::AllowList;
use crate::config::Config;
use crate::ironic::LookupSettings;
use ira_hw::BlockDevice;

use super::status::StatusCell;
use super::DeployState;

/// The hardware managers' device filter (`filter_devices`), applied to the disk listing
/// before the install device is chosen.
pub type DeviceFilter = Arc<dyn Fn(Vec<BlockDevice>) -> Vec<BlockDevice> + Send + Sync>;

/// The environment of one deploy command.
#[derive(Clone)]
pub struct DeployEnv {
    /// Resolved configuration (download options, allow-list, system root).
    pub config: Arc<Config>,
    /// Settings from the lookup answer, as they were when the command started.
    pub settings: LookupSettings,
    /// The cached node, as it was when the command started.
    pub node: Option<Value>,
    /// Whether the agent runs on a ppc64 machine (PReP partition).
    pub ppc64: bool,
    /// What the last image write left on the disk; kept for the life of the agent.
    pub cache: Arc<DeployState>,
    /// The status message heartbeats carry.
    pub status: StatusCell,
    /// The hardware managers' device filter.
    pub filter_devices: DeviceFilter,
}

impl fmt::Debug for DeployEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployEnv")
            .field("sysroot", &self.sysroot())
            .field("settings", &self.settings)
            .field("ppc64", &self.ppc64)
            .finish_non_exhaustive()
    }
}

impl DeployEnv {
    /// The filesystem root sysfs, udev data and `/dev` are read under.
    pub fn sysroot(&self) -> &Path {
        self.config.root()
    }

    /// `device` (a `/dev/...` name) under the sysroot, as the process must open it.
    pub fn rooted(&self, device: &Path) -> PathBuf {
        crate::config::rooted(self.sysroot(), device)
    }

    /// The configured device allow-list (empty: every device but the running system's).
    pub fn allowlist(&self) -> AllowList {
        AllowList::new(self.config.device_allowlist.clone())
    }

    /// Sets the status message sent with the next heartbeats.
    pub fn set_status(&self, message: Option<String>) {
        super::status::set(&self.status, message);
    }
}
