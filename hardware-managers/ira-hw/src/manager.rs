//! The [`HardwareManager`] trait, support levels, steps and errors.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::inventory::{BlockDevice, Inventory};

/// How well a manager supports this machine (IPA's `HardwareSupport`); higher wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SupportLevel(pub u32);

impl SupportLevel {
    /// Not supported: the manager is dropped.
    pub const NONE: Self = Self(0);
    /// The generic manager's level.
    pub const GENERIC: Self = Self(1);
    /// A vendor manager that found its hardware.
    pub const MAINLINE: Self = Self(2);
    /// A service provider's own manager.
    pub const SERVICE_PROVIDER: Self = Self(3);
}

/// The three step families the conductor drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Cleaning (`clean.*`).
    Clean,
    /// Deployment (`deploy.*`).
    Deploy,
    /// Servicing (`service.*`).
    Service,
}

impl StepKind {
    /// The three kinds, in the order IPA lists its extensions.
    pub const ALL: [Self; 3] = [Self::Clean, Self::Deploy, Self::Service];

    /// `clean`, `deploy` or `service`, as used in result keys (`clean_steps`, `clean_result`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Deploy => "deploy",
            Self::Service => "service",
        }
    }

    /// Key of the step listing in `get_<kind>_steps` results, e.g. `clean_steps`.
    pub fn steps_key(self) -> &'static str {
        match self {
            Self::Clean => "clean_steps",
            Self::Deploy => "deploy_steps",
            Self::Service => "service_steps",
        }
    }

    /// Key of the step's return value in `execute_<kind>_step` results, e.g. `clean_result`.
    pub fn result_key(self) -> &'static str {
        match self {
            Self::Clean => "clean_result",
            Self::Deploy => "deploy_result",
            Self::Service => "service_result",
        }
    }

    /// Key of the echoed step object in `execute_<kind>_step` results, e.g. `clean_step`.
    pub fn step_key(self) -> &'static str {
        match self {
            Self::Clean => "clean_step",
            Self::Deploy => "deploy_step",
            Self::Service => "service_step",
        }
    }

    /// Name of the version parameter of `execute_<kind>_step`, e.g. `clean_version`.
    pub fn version_key(self) -> &'static str {
        match self {
            Self::Clean => "clean_version",
            Self::Deploy => "deploy_version",
            Self::Service => "service_version",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Description of one argument of a step (`argsinfo` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgInfo {
    /// Free-text description.
    pub description: String,
    /// Whether the conductor must supply it.
    pub required: bool,
}

/// A step descriptor as returned by `get_*_steps` (protocol spec 2.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Step name (= method name in IPA).
    pub step: String,
    /// Ironic interface owning it: `deploy`, `raid`, ...
    pub interface: String,
    /// 0 = only on request; > 0 runs automatically.
    pub priority: i64,
    /// Whether the conductor reboots the node after the step.
    pub reboot_requested: bool,
    /// Whether an abort may interrupt the step; absent for deploy steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abortable: Option<bool>,
    /// Argument descriptions, absent when the step takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<Map<String, Value>>,
}

impl Step {
    /// A step with no flags set beyond `reboot_requested: false`.
    pub fn new(step: &str, interface: &str, priority: i64) -> Self {
        Self {
            step: step.to_owned(),
            interface: interface.to_owned(),
            priority,
            reboot_requested: false,
            abortable: None,
            argsinfo: None,
        }
    }

    /// Sets `abortable`.
    pub fn abortable(mut self, abortable: bool) -> Self {
        self.abortable = Some(abortable);
        self
    }

    /// Adds one `argsinfo` entry.
    pub fn arg(mut self, name: &str, description: &str, required: bool) -> Self {
        let info = serde_json::json!({"description": description, "required": required});
        self.argsinfo
            .get_or_insert_with(Map::new)
            .insert(name.to_owned(), info);
        self
    }
}

/// Name and version a manager reports in `hardware_manager_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerVersion {
    /// `HARDWARE_MANAGER_NAME`, e.g. `generic_hardware_manager`.
    pub name: String,
    /// `HARDWARE_MANAGER_VERSION`, e.g. `1.2`.
    pub version: String,
}

/// Everything a step execution receives.
#[derive(Debug, Clone, Copy)]
pub struct StepCall<'a> {
    /// Which family the step belongs to.
    pub kind: StepKind,
    /// The step name.
    pub step: &'a str,
    /// The node object the conductor sent.
    pub node: &'a Value,
    /// The ports the conductor sent.
    pub ports: &'a [Value],
    /// `step.args`, the keyword arguments of the step.
    pub args: &'a Map<String, Value>,
    /// The agent's inventory snapshot.
    pub inventory: &'a Inventory,
    /// The agent's services (image writing, instance root, status line).
    pub host: &'a dyn crate::AgentHost,
}

/// Everything `erase_block_device` receives.
#[derive(Clone, Copy)]
pub struct EraseCall<'a> {
    /// The node object the conductor sent (its `driver_internal_info` holds the erase
    /// options, spec 5.7).
    pub node: &'a Value,
    /// The device to erase, as the disk listing shows it.
    pub device: &'a BlockDevice,
    /// The agent's services; `host.open_block_device` is the way to a writable device.
    pub host: &'a dyn crate::AgentHost,
    /// Where to report progress (the step turns it into the heartbeat status line).
    pub progress: crate::EraseProgressFn<'a>,
}

impl fmt::Debug for EraseCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EraseCall")
            .field("device", &self.device.name)
            .finish_non_exhaustive()
    }
}

/// Errors a manager returns; [`HwError::NotMine`] passes the call to the next manager.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    /// The manager does not handle this call (IPA's `IncompatibleHardwareMethodError`).
    #[error("not handled by this hardware manager")]
    NotMine,
    /// The manager is misconfigured; dispatch stops at once.
    #[error("hardware manager configuration error: {0}")]
    Configuration(String),
    /// The step's arguments are invalid (IPA's `InvalidCommandParamsError`).
    #[error("{0}")]
    InvalidParams(String),
    /// The step ran and failed.
    #[error("{0}")]
    Failed(String),
    /// A service of the agent ([`crate::AgentHost`]) failed with an IPA error class
    /// (`ImageChecksumError`, `InvalidImage`, `DeviceNotFound`, ...); a manager that passes
    /// it on unchanged makes the step fail with that class, as IPA re-raises a failed
    /// `prepare_image` from `write_image`.
    #[error("{class}: {details}")]
    Service {
        /// IPA error class name.
        class: &'static str,
        /// Instance details.
        details: String,
    },
}

/// Result type of manager methods.
pub type HwResult<T> = Result<T, HwError>;

/// A hardware manager: every default means "not mine" so vendors override only what
/// their hardware supports. Managers are synchronous and run on a blocking thread.
pub trait HardwareManager: Send + Sync + fmt::Debug {
    /// The class-like name used to group steps, e.g. `GenericHardwareManager`.
    fn name(&self) -> &'static str;

    /// Name and version for `hardware_manager_version`; must stay stable per ramdisk.
    fn version(&self) -> ManagerVersion;

    /// Support level on this machine; [`SupportLevel::NONE`] drops the manager.
    fn evaluate_hardware_support(&self, inventory: &Inventory) -> SupportLevel;

    /// Steps of `kind` this manager offers.
    fn get_steps(&self, _kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        Err(HwError::NotMine)
    }

    /// Runs a step by name; the returned value becomes `<kind>_result`.
    fn execute_step(&self, _call: &StepCall<'_>) -> HwResult<Value> {
        Err(HwError::NotMine)
    }

    /// Hides (None) or adjusts a device before it is listed.
    fn filter_device(&self, device: BlockDevice) -> Option<BlockDevice> {
        Some(device)
    }

    /// Erases one block device (IPA's `erase_block_device`); the generic `erase_devices`
    /// step asks every manager in support order, so a vendor manager takes over the
    /// devices it knows and answers [`HwError::NotMine`] for the rest. The value is that
    /// device's entry in the step result. May be called from several threads at once.
    fn erase_block_device(&self, _call: &EraseCall<'_>) -> HwResult<Value> {
        Err(HwError::NotMine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn step_kind_keys() {
        let keys: Vec<[&str; 5]> = StepKind::ALL
            .iter()
            .map(|k| {
                [
                    k.as_str(),
                    k.steps_key(),
                    k.result_key(),
                    k.step_key(),
                    k.version_key(),
                ]
            })
            .collect();
        assert_eq!(
            keys,
            [
                [
                    "clean",
                    "clean_steps",
                    "clean_result",
                    "clean_step",
                    "clean_version"
                ],
                [
                    "deploy",
                    "deploy_steps",
                    "deploy_result",
                    "deploy_step",
                    "deploy_version"
                ],
                [
                    "service",
                    "service_steps",
                    "service_result",
                    "service_step",
                    "service_version"
                ],
            ]
        );
        assert_eq!(StepKind::Deploy.to_string(), "deploy");
    }

    #[test]
    fn step_serializes_only_the_keys_it_has() {
        let bare = serde_json::to_value(Step::new("write_image", "deploy", 0)).unwrap();
        assert_eq!(
            bare,
            json!({"step": "write_image", "interface": "deploy", "priority": 0,
                   "reboot_requested": false})
        );
        let full = Step::new("clean_uefi_nvram", "deploy", 0)
            .abortable(true)
            .arg("match_patterns", "regexes", false);
        assert_eq!(
            serde_json::to_value(full).unwrap(),
            json!({"step": "clean_uefi_nvram", "interface": "deploy", "priority": 0,
                   "reboot_requested": false, "abortable": true,
                   "argsinfo": {"match_patterns": {"description": "regexes", "required": false}}})
        );
    }

    #[test]
    fn support_levels_order() {
        assert!(SupportLevel::NONE < SupportLevel::GENERIC);
        assert!(SupportLevel::GENERIC < SupportLevel::MAINLINE);
        assert!(SupportLevel::MAINLINE < SupportLevel::SERVICE_PROVIDER);
    }
}
