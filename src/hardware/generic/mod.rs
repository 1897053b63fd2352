//! The built-in generic hardware manager: supports every machine at
//! [`SupportLevel::GENERIC`], lists IPA's generic clean, deploy and service steps and
//! runs them. Vendor managers outrank it on their hardware.
//!
//! Step bodies live in their own modules; this one only routes. Implemented:
//! `write_image` (through the agent's `prepare_image`), `inject_files`, the four erase
//! steps (`erase_devices`, `erase_devices_metadata`, `erase_devices_express`,
//! `erase_pstore`, in `crate::erase`) and `clean_uefi_nvram`; and `erase_block_device`,
//! which `erase_devices` reaches through the host so a vendor manager may take over its
//! own disks. The other listed steps (RAID, burn-in, bootc) fail with a clear message
//! instead of pretending success; an unknown step is "not mine", so dispatch reports
//! `HardwareManagerMethodNotFound`.

pub mod steps;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::Value;

use ira_hw::{
    EraseCall, HardwareManager, HwError, HwResult, Inventory, ManagerVersion, Step, StepCall,
    StepKind, SupportLevel,
};

use crate::erase::policy::ErasePolicy;

/// Class-like name grouping the generic steps in `get_*_steps` results.
pub const NAME: &str = "GenericHardwareManager";
/// `hardware_manager_version` name of the generic manager.
pub const VERSION_NAME: &str = "generic_hardware_manager";
/// `hardware_manager_version` value (1.1 added `erase_devices_metadata`, 1.2 service steps).
pub const VERSION: &str = "1.2";

/// IPA's `GenericHardwareManager`.
#[derive(Debug, Clone, Default)]
pub struct GenericHardwareManager {
    /// Priority of the `inject_files` deploy/service step (config `inject_files_priority`).
    inject_files_priority: i64,
    /// Devices the erase steps may touch (none by default).
    erase: crate::erase::EraseScope,
    /// Read between erase chunks; the agent raises it when it is told to stop (SIGTERM on
    /// the ramdisk's power-off), so an erase ends between writes and reports itself partial.
    /// Ironic itself aborts an abortable clean step by powering the node off.
    abort: Arc<AtomicBool>,
}

impl GenericHardwareManager {
    /// A generic manager reporting `inject_files` at `inject_files_priority`.
    pub fn new(inject_files_priority: i64) -> Self {
        Self {
            inject_files_priority,
            erase: crate::erase::EraseScope::disabled(),
            abort: Arc::default(),
        }
    }

    /// The same manager with erase steps working within `scope`.
    pub fn with_erase_scope(mut self, scope: crate::erase::EraseScope) -> Self {
        self.erase = scope;
        self
    }

    /// The same manager stopping its erases once `abort` is raised.
    pub fn with_abort(mut self, abort: Arc<AtomicBool>) -> Self {
        self.abort = abort;
        self
    }
}

impl HardwareManager for GenericHardwareManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: VERSION_NAME.to_owned(),
            version: VERSION.to_owned(),
        }
    }

    fn evaluate_hardware_support(&self, _inventory: &Inventory) -> SupportLevel {
        SupportLevel::GENERIC
    }

    fn get_steps(&self, kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        Ok(steps::steps(kind, self.inject_files_priority))
    }

    fn execute_step(&self, call: &StepCall<'_>) -> HwResult<Value> {
        // IPA dispatches by method name whatever the step kind, so any step this
        // manager lists in some table is "ours"; everything else goes to the next one.
        if !steps::ALL_STEP_NAMES.contains(&call.step) {
            return Err(HwError::NotMine);
        }
        if call.step == "write_image" {
            return write_image(call);
        }
        if call.step == "inject_files" {
            return crate::deploy::inject::inject_files(call);
        }
        if call.step == "erase_devices_metadata" {
            return Ok(crate::erase::erase_devices_metadata(
                &self.erase,
                call.node,
            )?);
        }
        if call.step == "erase_devices" {
            return Ok(crate::erase::full::erase_devices(
                &self.erase,
                call.node,
                call.host,
            )?);
        }
        if call.step == "erase_devices_express" {
            return Ok(crate::erase::express_step::erase_devices_express(
                &self.erase,
                call.node,
                &self.abort,
            )?);
        }
        if call.step == "erase_pstore" {
            crate::erase::pstore::erase_pstore(&self.erase)?;
            return Ok(Value::Null);
        }
        if call.step == "clean_uefi_nvram" {
            return clean_uefi_nvram(&self.erase.sysroot, call);
        }
        tracing::warn!(step = call.step, kind = %call.kind, "generic step has no implementation");
        Err(HwError::Failed(format!(
            "step {} is not implemented by this agent yet",
            call.step
        )))
    }

    fn erase_block_device(&self, call: &EraseCall<'_>) -> HwResult<Value> {
        self.erase_one(call)
    }
}

impl GenericHardwareManager {
    /// IPA's generic `erase_block_device` (spec 5.3), see `crate::erase::block_device`.
    fn erase_one(&self, call: &EraseCall<'_>) -> HwResult<Value> {
        let policy =
            ErasePolicy::from_node(call.node).map_err(|e| HwError::Failed(e.to_string()))?;
        crate::erase::block_device::erase_block_device(
            &self.erase,
            &policy,
            call.device,
            &self.abort,
            call.progress,
        )
        .map(|report| report.to_json())
        .map_err(|e| HwError::Failed(e.to_string()))
    }
}

/// `write_image` (deploy, priority 0 until the conductor asks): hands `image_info` and
/// `configdrive` to the agent's `standby.prepare_image`, as IPA does, and returns its
/// result object.
fn write_image(call: &StepCall<'_>) -> HwResult<Value> {
    let image_info = call
        .args
        .get("image_info")
        .filter(|v| v.is_object())
        .ok_or_else(|| {
            HwError::InvalidParams("write_image requires an image_info object".to_owned())
        })?;
    call.host
        .prepare_image(image_info, call.args.get("configdrive"))
}

/// `clean_uefi_nvram` (clean/deploy): bad `match_patterns` are invalid parameters.
fn clean_uefi_nvram(sysroot: &std::path::Path, call: &StepCall<'_>) -> HwResult<Value> {
    use crate::deploy::bootloader::nvram::{self, NvramError};
    match nvram::clean_uefi_nvram(sysroot, &crate::deploy::mount::SysMounter, call.args) {
        Ok(()) => Ok(Value::Null),
        Err(e @ NvramError::InvalidPatterns(_)) => Err(HwError::InvalidParams(e.to_string())),
        Err(e) => Err(HwError::Failed(e.to_string())),
    }
}
