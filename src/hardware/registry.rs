//! The manager registry: selects the managers that support this machine, orders them
//! by support level and dispatches calls as IPA does (spec hardware-and-disks.md 4.2 to
//! 4.5, protocol 2.4). Built once at start-up and shared as `Arc<Registry>`; managers
//! are synchronous, so callers run these methods on a blocking thread.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::{DispatchError, StepError};
use super::generic::GenericHardwareManager;
use super::merge::{deduplicate_steps, Candidate};
use crate::config::Config;
use ira_hw::{
    AgentHost, BlockDevice, EraseCall, EraseProgressFn, HardwareManager, HwError, HwResult,
    Inventory, ManagerVersion, StepCall, StepKind, SupportLevel,
};

/// Vendor string the example vendor manager looks for by default.
pub const DEFAULT_EXAMPLE_VENDOR: &str = "Example Corp";

/// Options of the built-in managers.
#[derive(Debug, Clone)]
pub struct BuiltinOptions {
    /// Priority of the generic `inject_files` step (config `inject_files_priority`).
    pub inject_files_priority: i64,
    /// `system_vendor.manufacturer` the example vendor manager claims (ignored when the
    /// `hwm-example` feature is off).
    pub example_vendor: String,
    /// Devices the generic erase steps may touch (default: none).
    pub erase: crate::erase::EraseScope,
    /// Raised when the agent stops: running erases end between writes.
    pub erase_abort: Arc<AtomicBool>,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        Self {
            inject_files_priority: 0,
            example_vendor: DEFAULT_EXAMPLE_VENDOR.to_owned(),
            erase: crate::erase::EraseScope::disabled(),
            erase_abort: Arc::default(),
        }
    }
}

impl BuiltinOptions {
    /// The options the agent configuration selects.
    pub fn from_config(config: &Config) -> Self {
        Self {
            inject_files_priority: config.inject_files_priority,
            erase: crate::erase::EraseScope::from_config(config),
            ..Self::default()
        }
    }
}

/// A selected manager and its support level on this machine.
#[derive(Debug)]
struct Entry {
    manager: Box<dyn HardwareManager>,
    support: SupportLevel,
}

/// Managers ordered by support level, highest first. The default value is empty: every
/// dispatch then fails with [`DispatchError::NoManager`].
#[derive(Debug, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// Asks every candidate for its support level, drops those at
    /// [`SupportLevel::NONE`] and orders the rest by support, highest first (stable, so
    /// equal levels keep the candidates' order). None left: [`DispatchError::NoManager`].
    pub fn new(
        candidates: Vec<Box<dyn HardwareManager>>,
        inventory: &Inventory,
    ) -> Result<Self, DispatchError> {
        let mut entries: Vec<Entry> = candidates
            .into_iter()
            .filter_map(|manager| {
                let support = manager.evaluate_hardware_support(inventory);
                tracing::debug!(
                    manager = manager.name(),
                    support = support.0,
                    "hardware support"
                );
                (support > SupportLevel::NONE).then_some(Entry { manager, support })
            })
            .collect();
        if entries.is_empty() {
            return Err(DispatchError::NoManager);
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.support));
        for entry in &entries {
            tracing::info!(
                manager = entry.manager.name(),
                support = entry.support.0,
                "hardware manager selected"
            );
        }
        Ok(Self { entries })
    }

    /// The built-in managers (generic plus compiled-in vendors) that support this machine.
    pub fn with_builtin(inventory: &Inventory) -> Self {
        Self::with_options(inventory, &BuiltinOptions::default())
    }

    /// Like [`Registry::with_builtin`], with the given options.
    pub fn with_options(inventory: &Inventory, options: &BuiltinOptions) -> Self {
        Self::new(builtin_managers(options), inventory)
            .expect("the generic manager supports every machine")
    }

    /// Number of active managers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no manager is active.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The active managers with their support levels, in dispatch order.
    pub fn managers(&self) -> impl Iterator<Item = (&dyn HardwareManager, SupportLevel)> {
        self.entries.iter().map(|e| (e.manager.as_ref(), e.support))
    }

    /// Calls `f` on the managers in support order; the first answer that is not
    /// `NotMine` wins, errors included (a configuration error thus stops at once).
    /// All decline: [`DispatchError::MethodNotFound`] naming `method`.
    pub fn dispatch<T>(
        &self,
        method: &str,
        f: impl Fn(&dyn HardwareManager) -> HwResult<T>,
    ) -> Result<T, DispatchError> {
        if self.entries.is_empty() {
            return Err(DispatchError::NoManager);
        }
        for entry in &self.entries {
            let name = entry.manager.name();
            match f(entry.manager.as_ref()) {
                Ok(value) => {
                    tracing::debug!(method, manager = name, "dispatched");
                    return Ok(value);
                }
                Err(err) => {
                    if let Some(err) = DispatchError::from_manager(name, err) {
                        tracing::warn!(method, manager = name, error = %err, "dispatch failed");
                        return Err(err);
                    }
                    tracing::debug!(method, manager = name, "not handled, trying next manager");
                }
            }
        }
        Err(DispatchError::MethodNotFound {
            method: method.to_owned(),
        })
    }

    /// Calls `f` on every manager and collects `{manager name: result}`, skipping those
    /// that answer `NotMine`; any other error aborts. Nothing collected:
    /// [`DispatchError::MethodNotFound`]. Two managers of one name collapse, the later
    /// one winning, as in IPA's dict.
    pub fn dispatch_all<T>(
        &self,
        method: &str,
        f: impl Fn(&dyn HardwareManager) -> HwResult<T>,
    ) -> Result<BTreeMap<String, T>, DispatchError> {
        Ok(self
            .collect_all(method, f)?
            .into_iter()
            .map(|(entry, value)| (entry.manager.name().to_owned(), value))
            .collect())
    }

    /// [`Registry::dispatch_all`] keeping each answer next to its entry, in order.
    fn collect_all<T>(
        &self,
        method: &str,
        f: impl Fn(&dyn HardwareManager) -> HwResult<T>,
    ) -> Result<Vec<(&Entry, T)>, DispatchError> {
        if self.entries.is_empty() {
            return Err(DispatchError::NoManager);
        }
        let mut answers = Vec::new();
        for entry in &self.entries {
            let name = entry.manager.name();
            match f(entry.manager.as_ref()) {
                Ok(value) => answers.push((entry, value)),
                Err(err) => {
                    if let Some(err) = DispatchError::from_manager(name, err) {
                        tracing::warn!(method, manager = name, error = %err, "dispatch failed");
                        return Err(err);
                    }
                }
            }
        }
        if answers.is_empty() {
            return Err(DispatchError::MethodNotFound {
                method: method.to_owned(),
            });
        }
        Ok(answers)
    }

    /// The `get_<kind>_steps` command result:
    /// `{"<kind>_steps": {Manager: [steps]}, "hardware_manager_version": {...}}`, with
    /// one descriptor per step name (spec 4.4).
    pub fn get_steps(
        &self,
        kind: StepKind,
        node: &Value,
        ports: &[Value],
    ) -> Result<Value, DispatchError> {
        let method = format!("get_{kind}_steps");
        let candidates: Vec<Candidate> = self
            .collect_all(&method, |m| m.get_steps(kind, node, ports))?
            .into_iter()
            .map(|(entry, steps)| Candidate {
                manager: entry.manager.name().to_owned(),
                support: entry.support,
                steps,
            })
            .collect();
        let merged = deduplicate_steps(&candidates);
        let steps = serde_json::to_value(merged).expect("step descriptors have string keys");
        let mut result = Map::new();
        result.insert(kind.steps_key().to_owned(), steps);
        result.insert(
            "hardware_manager_version".to_owned(),
            Value::Object(self.versions()),
        );
        Ok(Value::Object(result))
    }

    /// `hardware_manager_version`: `{version name: version}` over the active managers.
    pub fn versions(&self) -> Map<String, Value> {
        self.manager_versions()
            .into_iter()
            .map(|v| (v.name, Value::String(v.version)))
            .collect()
    }

    /// Every active manager's `get_version()`, in dispatch order (the inspection
    /// payload's `configuration.managers`).
    pub fn manager_versions(&self) -> Vec<ManagerVersion> {
        self.entries.iter().map(|e| e.manager.version()).collect()
    }

    /// IPA's `check_versions`: a null or absent `provided` passes (first run); anything
    /// else must equal [`Registry::versions`].
    pub fn check_versions(&self, provided: Option<&Value>) -> Result<(), StepError> {
        let Some(provided) = provided.filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let current = self.versions();
        if provided.as_object() == Some(&current) {
            return Ok(());
        }
        let agent = Value::Object(current.clone());
        tracing::warn!(%agent, ironic = %provided,
            "hardware manager versions differ from the ones the conductor listed");
        Err(StepError::VersionMismatch {
            current,
            ironic: provided.clone(),
        })
    }

    /// Runs `step` (the step object the conductor sent) of `kind`: checks `version`
    /// first, then dispatches by step name through the priority chain with `step.args`.
    /// Returns the raw step result (the caller wraps it as `<kind>_result`).
    pub fn execute_step(
        &self,
        kind: StepKind,
        step: &Value,
        node: &Value,
        ports: &[Value],
        version: Option<&Value>,
        inventory: &Inventory,
    ) -> Result<Value, StepError> {
        self.execute_step_with(&ira_hw::NoHost, kind, step, node, ports, version, inventory)
    }

    /// [`Self::execute_step`] with the agent's services for the step.
    #[allow(clippy::too_many_arguments)]
    pub fn execute_step_with(
        &self,
        host: &dyn AgentHost,
        kind: StepKind,
        step: &Value,
        node: &Value,
        ports: &[Value],
        version: Option<&Value>,
        inventory: &Inventory,
    ) -> Result<Value, StepError> {
        self.check_versions(version)?;
        let name = step.get("step").and_then(Value::as_str).ok_or_else(|| {
            StepError::InvalidParams(format!("Malformed {}, no \"step\" key", kind.step_key()))
        })?;
        let empty = Map::new();
        let args = match step.get("args") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(args)) => args,
            Some(_) => {
                return Err(StepError::InvalidParams(format!(
                    "args of {kind} step {name} must be an object"
                )))
            }
        };
        // Argument values may carry tenant data (config drives, signed URLs): log names only.
        let arg_names: Vec<&str> = args.keys().map(String::as_str).collect();
        tracing::info!(%kind, step = name, args = ?arg_names, "executing step");
        let host = StepHost {
            inner: host,
            registry: self,
        };
        let call = StepCall {
            kind,
            step: name,
            node,
            ports,
            args,
            inventory,
            host: &host,
        };
        let result = self
            .dispatch(name, |m| m.execute_step(&call))
            .map_err(|err| StepError::from_dispatch(kind, name, err))?;
        tracing::info!(%kind, step = name, "step completed");
        Ok(result)
    }

    /// Passes every device through every manager's `filter_device`, in support order;
    /// a manager that hides a device removes it from the listing.
    pub fn filter_devices(&self, devices: Vec<BlockDevice>) -> Vec<BlockDevice> {
        devices
            .into_iter()
            .filter_map(|device| {
                self.entries
                    .iter()
                    .try_fold(device, |d, e| e.manager.filter_device(d))
            })
            .collect()
    }
}

/// The host a step runs with: the caller's services, plus `erase_block_device`
/// dispatched through the registry in support order (IPA's
/// `dispatch_to_managers('erase_block_device', ...)`), so a vendor manager takes over
/// the devices it claims.
#[derive(Debug)]
struct StepHost<'a> {
    inner: &'a dyn AgentHost,
    registry: &'a Registry,
}

impl AgentHost for StepHost<'_> {
    fn prepare_image(&self, image_info: &Value, configdrive: Option<&Value>) -> HwResult<Value> {
        self.inner.prepare_image(image_info, configdrive)
    }

    fn with_instance_root(
        &self,
        partition: Option<&str>,
        f: &mut dyn FnMut(&std::path::Path) -> HwResult<()>,
    ) -> HwResult<()> {
        self.inner.with_instance_root(partition, f)
    }

    fn set_status(&self, message: Option<&str>) {
        self.inner.set_status(message);
    }

    fn erase_block_device(
        &self,
        node: &Value,
        device: &BlockDevice,
        progress: EraseProgressFn<'_>,
    ) -> HwResult<Value> {
        let call = EraseCall {
            node,
            device,
            host: self,
            progress,
        };
        self.registry
            .dispatch("erase_block_device", |m| m.erase_block_device(&call))
            .map_err(|err| match err {
                // The manager's own words; the step names the device and the class.
                DispatchError::Failed { message, .. } => HwError::Failed(message),
                other => {
                    let e = other.to_command_error();
                    HwError::Service {
                        class: e.ipa_type(),
                        details: e.details(),
                    }
                }
            })
    }

    fn open_block_device(&self, device: &str) -> HwResult<std::fs::File> {
        self.inner.open_block_device(device)
    }

    fn install_device(&self) -> HwResult<String> {
        self.inner.install_device()
    }

    fn open_install_device(&self) -> HwResult<ira_hw::InstallDevice> {
        self.inner.open_install_device()
    }

    fn image_written(&self, device: &str) -> HwResult<Value> {
        self.inner.image_written(device)
    }
}

/// The compiled-in managers plus the executable managers of `exec.dir` that describe
/// themselves well (runs each `describe`: blocking, up to its time limit each).
pub fn all_managers(
    options: &BuiltinOptions,
    exec: &super::exec::ExecOptions,
    inventory: &Inventory,
) -> Vec<Box<dyn HardwareManager>> {
    let mut managers = builtin_managers(options);
    let taken = super::exec::names_of(&managers);
    for m in super::exec::discover(exec, inventory, &taken) {
        managers.push(Box::new(m));
    }
    managers
}

/// The compiled-in managers, unordered and not yet evaluated.
pub fn builtin_managers(options: &BuiltinOptions) -> Vec<Box<dyn HardwareManager>> {
    let generic: Box<dyn HardwareManager> = Box::new(
        GenericHardwareManager::new(options.inject_files_priority)
            .with_erase_scope(options.erase.clone())
            .with_abort(options.erase_abort.clone()),
    );
    let vendors = vendor_managers(options);
    std::iter::once(generic).chain(vendors).collect()
}

/// The vendor managers compiled in by cargo features.
fn vendor_managers(options: &BuiltinOptions) -> Vec<Box<dyn HardwareManager>> {
    #[cfg(not(feature = "hwm-example"))]
    let _ = options;
    vec![
        #[cfg(feature = "hwm-example")]
        Box::new(ira_hwm_example::ExampleVendorManager::new(
            options.example_vendor.clone(),
        )),
    ]
}
