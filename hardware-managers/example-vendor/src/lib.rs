//! Example vendor hardware manager for the ira agent, and a guide to writing one.
//!
//! [`ExampleVendorManager`] claims machines whose SMBIOS manufacturer
//! (`inventory.system_vendor.manufacturer`) equals a configured vendor string
//! ("Example Corp" by default). On those machines it:
//!
//! * adds its own step `example_firmware_report` (clean and service, interface
//!   `deploy`, priority 0, so it runs only when an operator asks for it), which returns
//!   the firmware identity from the inventory and needs no root access;
//! * re-declares the generic `erase_devices` clean step at priority 5 instead of 10.
//!   Because this manager's support level ([`SupportLevel::MAINLINE`]) is higher than
//!   the generic manager's, its descriptor wins the name clash even with the lower
//!   priority: the erase still runs in automated cleaning, only later (after any
//!   conductor-side step of priority 6 to 9). It does not implement the step, so
//!   when the conductor runs `erase_devices` this manager answers "not mine" and the
//!   generic manager does the work;
//! * takes over `erase_block_device` for the disks it is configured to claim
//!   ([`ExampleVendorManager::claim_erase`], e.g. by model prefix): the generic
//!   `erase_devices` step asks every manager per disk in support order, so this one
//!   erases its disks its own way (here: one verified pass of zeros, written through the
//!   agent's device door `host.open_block_device`) and returns its own report, while
//!   every other disk goes on to the generic manager;
//! * adds the deploy step `example_write_files` (interface `deploy`, priority 0), an
//!   in-band deploy step that writes files into the instance just written: the agent
//!   mounts the instance's root filesystem for it and every write stays inside that
//!   mount (see [`write_files`]).
//!
//! # Writing a manager
//!
//! 1. Create a crate that depends on `ira-hw` and implement
//!    [`HardwareManager`]. Only `name`, `version` and `evaluate_hardware_support` are
//!    required; every other method defaults to [`HwError::NotMine`], which means
//!    "ask the next manager", so override only what your hardware needs.
//! 2. `evaluate_hardware_support` looks at the inventory and returns
//!    [`SupportLevel::NONE`] when the machine is not yours (the manager is then
//!    dropped), [`SupportLevel::MAINLINE`] when it is, or higher for a service
//!    provider's manager. Managers are tried in descending support order.
//! 3. `get_steps` lists your steps per [`StepKind`]. A step name that the generic
//!    manager also lists replaces its descriptor (the highest support level wins; then
//!    the higher priority; then the alphabetically first manager name). Give a step of
//!    your own a unique name.
//! 4. `execute_step` receives every step the conductor runs, by name, in support
//!    order. Handle the names you implement and return [`HwError::NotMine`] for all
//!    others. Return [`HwError::InvalidParams`] for bad arguments (the conductor sees a
//!    400 `InvalidCommandParamsError`), [`HwError::Failed`] when the step ran and
//!    failed, and [`HwError::Configuration`] when the manager itself is misconfigured
//!    (dispatch stops there). Never report success for work that was not done.
//! 5. `version` must change whenever your steps change: the conductor records
//!    `hardware_manager_version` when it lists steps and the agent refuses to run a
//!    step if it differs.
//! 6. Add the crate to the agent's `Cargo.toml` as an optional dependency behind a
//!    cargo feature and push it onto the list in `ira::hardware::builtin_managers`
//!    under `#[cfg(feature = "...")]`.
//!
//! Managers are synchronous and run on a blocking thread; keep them free of global
//! state and read hardware facts from the [`Inventory`] or under a root path you are
//! given, so they can be tested with fixtures.
//!
//! # A custom in-band deploy step
//!
//! A deploy step runs on the agent between the conductor's own steps (`write_image` is
//! priority 80, `prepare_instance_boot` 60), so a step at priority 61-79 sees the image
//! on disk before the node boots from it. To write one:
//!
//! 1. List it from `get_steps(StepKind::Deploy, ..)` with interface `deploy`. Priority
//!    0 means it runs only when an operator asks for it; declare its arguments with
//!    [`Step::arg`] (`required: true` makes the conductor refuse a request without it).
//! 2. In `execute_step`, validate `call.args` completely before touching anything and
//!    answer [`HwError::InvalidParams`] on bad input.
//! 3. To change files in the instance, call `call.host.with_instance_root(None, &mut
//!    |root| ..)` (or name a partition: device path, filesystem UUID, PARTUUID or
//!    label). The agent mounts the filesystem `nosuid,nodev,noexec` after the same
//!    device checks as a write and unmounts it when the closure returns. Treat the
//!    tenant's files as hostile: open the root with [`ira_hw::safe_path::RootDir`] and
//!    write through it, never with `root.join(path)`, so `etc -> /etc` or `../..` in
//!    the image cannot send a write outside the mount. Do not run programs from it.
//! 4. Return a JSON value; it becomes the step's `deploy_result`. Bump `version`.
//!
//! An operator runs it with the deploy, for example
//!
//! ```text
//! baremetal node deploy <node> --deploy-steps '[{"interface": "deploy",
//!     "step": "example_write_files", "priority": 75,
//!     "args": {"files": [{"path": "/etc/motd", "content": "hello\n", "mode": 420}]}}]'
//! ```
//!
//! or puts the same step into a deploy template (`baremetal deploy template create
//! CUSTOM_VENDOR_FILES --steps '[...]'`) matched by a trait of the instance's flavor.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use ira_hw::{
    BlockDevice, EraseCall, EraseProgress, HardwareManager, HwError, HwResult, Inventory,
    ManagerVersion, Step, StepCall, StepKind, SupportLevel,
};
use serde_json::{json, Value};

pub mod write_files;

/// Class-like name grouping this manager's steps in `get_*_steps` results.
pub const NAME: &str = "ExampleVendorHardwareManager";
/// `hardware_manager_version` name.
pub const VERSION_NAME: &str = "example_vendor_hardware_manager";
/// `hardware_manager_version` value; bump it whenever the steps change.
pub const VERSION: &str = "1.1";
/// Manufacturer string claimed when none is configured.
pub const DEFAULT_VENDOR: &str = "Example Corp";
/// This manager's own step.
pub const FIRMWARE_REPORT_STEP: &str = "example_firmware_report";
/// Priority at which this manager re-declares the generic `erase_devices` step.
pub const ERASE_DEVICES_PRIORITY: i64 = 5;

/// The `method` of this manager's erase reports.
pub const ERASE_METHOD: &str = "example_vendor_zero_fill";
/// Bytes per write of the zero fill.
const ZERO_CHUNK: usize = 1 << 20;

/// Which disks this manager erases itself.
pub type EraseClaim = Arc<dyn Fn(&BlockDevice) -> bool + Send + Sync>;

/// The example vendor manager; see the crate documentation.
#[derive(Clone)]
pub struct ExampleVendorManager {
    /// Exact `system_vendor.manufacturer` this manager claims.
    vendor: String,
    /// The disks `erase_block_device` takes over; none by default.
    claim: Option<EraseClaim>,
}

impl std::fmt::Debug for ExampleVendorManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExampleVendorManager")
            .field("vendor", &self.vendor)
            .field("claims_disks", &self.claim.is_some())
            .finish()
    }
}

impl Default for ExampleVendorManager {
    fn default() -> Self {
        Self::new(DEFAULT_VENDOR)
    }
}

impl ExampleVendorManager {
    /// A manager claiming machines whose manufacturer equals `vendor`.
    pub fn new(vendor: impl Into<String>) -> Self {
        Self {
            vendor: vendor.into(),
            claim: None,
        }
    }

    /// The same manager erasing the disks `claim` accepts itself.
    pub fn claim_erase(mut self, claim: EraseClaim) -> Self {
        self.claim = Some(claim);
        self
    }

    /// The same manager erasing the disks whose model starts with `prefix` itself.
    pub fn claim_erase_model_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.claim_erase(Arc::new(move |d: &BlockDevice| {
            d.model.as_deref().is_some_and(|m| m.starts_with(&prefix))
        }))
    }

    /// The vendor erase of a claimed disk: zeros over the whole device through the
    /// agent's door, flushed, then read back in full.
    fn zero_fill(&self, call: &EraseCall<'_>) -> HwResult<Value> {
        let dev = call.device;
        let mut file = call.host.open_block_device(&dev.name)?;
        let failed = |what: &str, e: std::io::Error| {
            HwError::Failed(format!("{NAME}: {what} {}: {e}", dev.name))
        };
        let started = std::time::Instant::now();
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut done = 0u64;
        while done < dev.size {
            let n = usize::try_from((dev.size - done).min(ZERO_CHUNK as u64))
                .expect("a chunk fits in memory");
            file.write_all(&zeros[..n])
                .map_err(|e| failed("writing", e))?;
            done += n as u64;
            (call.progress)(&EraseProgress {
                fraction: done as f64 / dev.size as f64,
                detail: "vendor zero fill".to_owned(),
            });
        }
        file.sync_all().map_err(|e| failed("flushing", e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| failed("rewinding", e))?;
        let mut buf = vec![0u8; ZERO_CHUNK];
        let mut checked = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| failed("reading back", e))?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(HwError::Failed(format!(
                    "{NAME}: {} is not zero near byte {checked} after the zero fill",
                    dev.name
                )));
            }
            checked += n as u64;
        }
        tracing::info!(device = %dev.name, bytes = done, "vendor erase done");
        Ok(json!({
            "device": dev.name,
            "method": ERASE_METHOD,
            "manager": NAME,
            "bytes": done,
            "seconds": started.elapsed().as_secs_f64(),
            "verified_bytes": checked,
        }))
    }

    /// The firmware report step: the SMBIOS identity, straight from the inventory.
    fn firmware_report(&self, call: &StepCall<'_>) -> HwResult<Value> {
        if !call.args.is_empty() {
            let names: Vec<&str> = call.args.keys().map(String::as_str).collect();
            return Err(HwError::InvalidParams(format!(
                "{FIRMWARE_REPORT_STEP} takes no arguments, got: {}",
                names.join(", ")
            )));
        }
        let vendor = &call.inventory.system_vendor;
        tracing::info!(step = FIRMWARE_REPORT_STEP, "reporting firmware identity");
        Ok(json!({
            "manufacturer": vendor.manufacturer,
            "product_name": vendor.product_name,
            "firmware": {
                "vendor": vendor.firmware.vendor,
                "version": vendor.firmware.version,
                "build_date": vendor.firmware.build_date,
            },
        }))
    }
}

impl HardwareManager for ExampleVendorManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: VERSION_NAME.to_owned(),
            version: VERSION.to_owned(),
        }
    }

    fn evaluate_hardware_support(&self, inventory: &Inventory) -> SupportLevel {
        if inventory.system_vendor.manufacturer == self.vendor {
            SupportLevel::MAINLINE
        } else {
            SupportLevel::NONE
        }
    }

    fn get_steps(&self, kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        let report = Step::new(FIRMWARE_REPORT_STEP, "deploy", 0).abortable(true);
        Ok(match kind {
            StepKind::Clean => vec![
                report,
                Step::new("erase_devices", "deploy", ERASE_DEVICES_PRIORITY).abortable(true),
            ],
            StepKind::Service => vec![report],
            StepKind::Deploy => vec![write_files::descriptor()],
        })
    }

    fn execute_step(&self, call: &StepCall<'_>) -> HwResult<Value> {
        match call.step {
            FIRMWARE_REPORT_STEP => self.firmware_report(call),
            write_files::STEP => write_files::execute(call),
            // erase_devices included: only its priority is ours, the step is generic
            // (it comes back here per disk through erase_block_device).
            _ => Err(HwError::NotMine),
        }
    }

    fn erase_block_device(&self, call: &EraseCall<'_>) -> HwResult<Value> {
        match &self.claim {
            Some(claim) if claim(call.device) => self.zero_fill(call),
            _ => Err(HwError::NotMine),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ira_hw::{BootInfo, Cpu, Firmware, Memory, SystemVendor};
    use serde_json::Map;

    fn inventory(manufacturer: &str) -> Inventory {
        Inventory {
            interfaces: Vec::new(),
            cpu: Cpu::default(),
            disks: Vec::new(),
            memory: Memory::default(),
            bmc_address: None,
            bmc_v6address: None,
            system_vendor: SystemVendor {
                product_name: "Box 9000 (SKU-1)".to_owned(),
                serial_number: "S1".to_owned(),
                manufacturer: manufacturer.to_owned(),
                firmware: Firmware {
                    vendor: "Example BIOS Inc".to_owned(),
                    version: "2.4.1".to_owned(),
                    build_date: "03/15/2024".to_owned(),
                },
            },
            boot: BootInfo::default(),
            hostname: "h".to_owned(),
            bmc_mac: None,
        }
    }

    fn call<'a>(
        step: &'a str,
        args: &'a Map<String, Value>,
        inv: &'a Inventory,
        node: &'a Value,
    ) -> StepCall<'a> {
        StepCall {
            kind: StepKind::Clean,
            step,
            node,
            ports: &[],
            args,
            inventory: inv,
            host: &ira_hw::NoHost,
        }
    }

    #[test]
    fn support_follows_the_configured_vendor() {
        let default = ExampleVendorManager::default();
        assert_eq!(
            default.evaluate_hardware_support(&inventory("Example Corp")),
            SupportLevel::MAINLINE
        );
        assert_eq!(
            default.evaluate_hardware_support(&inventory("Other Inc")),
            SupportLevel::NONE
        );
        assert_eq!(
            default.evaluate_hardware_support(&inventory("example corp")),
            SupportLevel::NONE
        );
        let custom = ExampleVendorManager::new("Other Inc");
        assert_eq!(
            custom.evaluate_hardware_support(&inventory("Other Inc")),
            SupportLevel::MAINLINE
        );
        assert_eq!(
            custom.evaluate_hardware_support(&inventory("Example Corp")),
            SupportLevel::NONE
        );
    }

    #[test]
    fn name_and_version() {
        let m = ExampleVendorManager::default();
        assert_eq!(m.name(), "ExampleVendorHardwareManager");
        let v = m.version();
        assert_eq!(
            (v.name.as_str(), v.version.as_str()),
            ("example_vendor_hardware_manager", "1.1")
        );
    }

    #[test]
    fn steps_per_kind() {
        let m = ExampleVendorManager::default();
        let names = |kind| -> Vec<(String, i64)> {
            m.get_steps(kind, &Value::Null, &[])
                .unwrap()
                .into_iter()
                .map(|s| (s.step, s.priority))
                .collect()
        };
        assert_eq!(
            names(StepKind::Clean),
            [
                ("example_firmware_report".to_owned(), 0),
                ("erase_devices".to_owned(), 5)
            ]
        );
        assert_eq!(
            names(StepKind::Service),
            [("example_firmware_report".to_owned(), 0)]
        );
        assert_eq!(
            names(StepKind::Deploy),
            [("example_write_files".to_owned(), 0)]
        );
    }

    #[test]
    fn firmware_report_returns_inventory_fields() {
        let m = ExampleVendorManager::default();
        let inv = inventory("Example Corp");
        let args = Map::new();
        let report = m
            .execute_step(&call(FIRMWARE_REPORT_STEP, &args, &inv, &Value::Null))
            .unwrap();
        assert_eq!(
            report,
            json!({
                "manufacturer": "Example Corp",
                "product_name": "Box 9000 (SKU-1)",
                "firmware": {"vendor": "Example BIOS Inc", "version": "2.4.1",
                             "build_date": "03/15/2024"},
            })
        );
    }

    #[test]
    fn firmware_report_rejects_arguments() {
        let m = ExampleVendorManager::default();
        let inv = inventory("Example Corp");
        let mut args = Map::new();
        args.insert("force".to_owned(), json!(true));
        let err = m
            .execute_step(&call(FIRMWARE_REPORT_STEP, &args, &inv, &Value::Null))
            .unwrap_err();
        match err {
            HwError::InvalidParams(msg) => assert!(msg.contains("force"), "{msg}"),
            other => panic!("expected InvalidParams, got {other:?}"),
        }
    }

    #[test]
    fn other_steps_are_not_mine() {
        let m = ExampleVendorManager::default();
        let inv = inventory("Example Corp");
        let args = Map::new();
        for step in ["erase_devices", "burnin_cpu", "nonexistent"] {
            let err = m
                .execute_step(&call(step, &args, &inv, &Value::Null))
                .unwrap_err();
            assert!(matches!(err, HwError::NotMine), "{step}: {err:?}");
        }
    }
}
