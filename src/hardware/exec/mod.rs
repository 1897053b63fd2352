//! Executable hardware managers: any executable in the managers directory (option
//! `hardware_managers_dir`) is a hardware manager speaking protocol 1 (`protocol`) over
//! stdin, stdout and stderr, run by `run` in its own process group with a time limit.
//!
//! [`discover`] runs each one once with `describe` when the registry is built and keeps
//! those that answer well; [`ExecManager`] is one of them in the registry: its `describe`
//! answer gives its name, version, support level and steps, and a step call runs it
//! with `step`. It never gets a writable file descriptor from the agent: an install
//! device is chosen by the agent and passed as a path only after the guarded open
//! succeeded. A failing executable fails its step with its own message, never the agent.
//!
//! This module leaves the dispatch and the step merge to the registry, and the device,
//! instance-root and image-record work to the host ([`ira_hw::AgentHost`]).

pub mod protocol;
pub mod run;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use ira_hw::{
    HardwareManager, HwError, HwResult, Inventory, ManagerVersion, Step, StepCall, StepKind,
    SupportLevel,
};

use protocol::{DeclaredStep, DescribeError, Description, TlsSettings};
use run::{Event, RunError, RunSpec};

/// How long `describe` may take.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how executable managers are found and run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The managers directory.
    pub dir: PathBuf,
    /// Time limit of `describe` ([`DESCRIBE_TIMEOUT`]).
    pub describe_timeout: Duration,
    /// Between SIGTERM and SIGKILL ([`run::KILL_GRACE`]).
    pub kill_grace: Duration,
    /// Raised when the agent stops: running managers are ended.
    pub abort: Arc<AtomicBool>,
    /// The runs in progress, for the agent to wait on when it stops.
    pub running: Arc<run::Running>,
    /// The agent's TLS settings, passed to every step.
    pub tls: TlsSettings,
}

impl ExecOptions {
    /// Options for `dir` with the protocol's limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            describe_timeout: DESCRIBE_TIMEOUT,
            kill_grace: run::KILL_GRACE,
            abort: Arc::default(),
            running: Arc::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// Why an executable was left out.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// `describe` did not exit 0.
    #[error("describe failed ({status}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Failed {
        /// `exit N`, `killed by signal N`, ...
        status: String,
        /// Its own last words.
        message: Option<String>,
    },
    /// Its answer was refused.
    #[error(transparent)]
    Describe(#[from] DescribeError),
    /// Another manager has this name.
    #[error("name {0:?} is taken by another hardware manager")]
    Duplicate(String),
}

/// An executable speaking protocol 1, as the registry sees it.
#[derive(Debug)]
pub struct ExecManager {
    path: PathBuf,
    /// Leaked once per executable at start: the trait hands out `&'static str`.
    name: &'static str,
    version: String,
    support: SupportLevel,
    steps: Vec<DeclaredStep>,
    kill_grace: Duration,
    abort: Arc<AtomicBool>,
    running: Arc<run::Running>,
    tls: TlsSettings,
}

impl ExecManager {
    /// Runs `<path> describe` with the inventory and builds the manager from its answer
    /// (support 0 included; [`discover`] drops those).
    pub fn describe(
        path: &Path,
        options: &ExecOptions,
        inventory: &Inventory,
    ) -> Result<Self, ExecError> {
        let inventory = serde_json::to_value(inventory).expect("the inventory serializes");
        let input = protocol::describe_input(&inventory)
            .to_string()
            .into_bytes();
        let spec = RunSpec {
            program: path,
            verb: "describe",
            env: vec![("IRA_PROTOCOL".to_owned(), protocol::PROTOCOL.to_string())],
            stdin: input,
            timeout: options.describe_timeout,
            kill_grace: options.kill_grace,
            abort: None,
            running: None,
        };
        let outcome = run::run(&spec, &mut |e| log_event(path_name(path), "describe", e))?;
        let status = match outcome.end {
            run::End::Exited(0) => None,
            run::End::Exited(code) => Some(format!("exit {code}")),
            run::End::Signaled(sig) => Some(format!("killed by signal {sig}")),
            run::End::TimedOut => Some(format!(
                "timed out after {} s",
                options.describe_timeout.as_secs_f64()
            )),
            run::End::OutputTooLarge(_) => Some("output too large".to_owned()),
            run::End::Stopped => Some("stopped".to_owned()),
        };
        if let Some(status) = status {
            return Err(ExecError::Failed {
                status,
                message: protocol::own_message(&outcome),
            });
        }
        let d = protocol::parse_description(&outcome.stdout)?;
        Ok(Self::from_description(path, d, options))
    }

    fn from_description(path: &Path, d: Description, options: &ExecOptions) -> Self {
        Self {
            path: path.to_path_buf(),
            name: Box::leak(d.name.into_boxed_str()),
            version: d.version,
            support: SupportLevel(d.support),
            steps: d.steps,
            kill_grace: options.kill_grace,
            abort: options.abort.clone(),
            running: options.running.clone(),
            tls: options.tls.clone(),
        }
    }

    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The steps it declared.
    pub fn declared_steps(&self) -> &[DeclaredStep] {
        &self.steps
    }

    /// Runs one declared step with the device and root already settled.
    fn run_step(
        &self,
        call: &StepCall<'_>,
        decl: &DeclaredStep,
        device: Option<&str>,
        root: Option<&Path>,
    ) -> HwResult<Value> {
        let input = protocol::step_input(call, device, root, &self.tls).to_string();
        let spec = RunSpec {
            program: &self.path,
            verb: "step",
            env: protocol::step_env(call, device, root, &self.tls),
            stdin: input.into_bytes(),
            timeout: Duration::from_secs(decl.timeout),
            kill_grace: self.kill_grace,
            abort: Some(&self.abort),
            running: Some(&self.running),
        };
        let outcome = run::run(&spec, &mut |e| match e {
            Event::Progress(text) => {
                tracing::info!(manager = self.name, step = call.step, progress = %text, "progress");
                call.host.set_status(Some(&text));
            }
            other => log_event(self.name, call.step, other),
        });
        call.host.set_status(None);
        // The registry drops the manager name from a step failure; the operator needs it.
        let outcome =
            outcome.map_err(|e| HwError::Failed(format!("{}: {}: {e}", self.name, call.step)))?;
        tracing::info!(manager = self.name, step = call.step, end = ?outcome.end, "manager exited");
        protocol::step_result(call.step, decl.timeout, &outcome)
            .map_err(|m| HwError::Failed(format!("{}: {m}", self.name)))
    }
}

fn path_name(path: &Path) -> &str {
    path.file_name().and_then(OsStr::to_str).unwrap_or("?")
}

/// Stderr lines into the agent's log.
fn log_event(manager: &str, step: &str, event: Event) {
    match event {
        Event::Stderr(line) => tracing::info!(manager, step, "{line}"),
        Event::StderrDropped => {
            tracing::warn!(manager, step, "stderr: further output dropped")
        }
        Event::Progress(text) => tracing::info!(manager, step, progress = %text, "progress"),
    }
}

impl HardwareManager for ExecManager {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: self.name.to_owned(),
            version: self.version.clone(),
        }
    }

    fn evaluate_hardware_support(&self, _inventory: &Inventory) -> SupportLevel {
        // Decided by `describe`, which saw the inventory.
        self.support
    }

    fn get_steps(&self, kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        Ok(self
            .steps
            .iter()
            .filter(|s| s.kind == kind)
            .map(DeclaredStep::descriptor)
            .collect())
    }

    fn execute_step(&self, call: &StepCall<'_>) -> HwResult<Value> {
        let Some(decl) = self
            .steps
            .iter()
            .find(|s| s.kind == call.kind && s.step == call.step)
        else {
            return Err(HwError::NotMine);
        };
        // Chosen and checked through the guarded open before anything runs; the handle is
        // closed again: the executable gets the path only.
        let device = if decl.install_device {
            let dev = call.host.open_install_device()?;
            tracing::info!(manager = self.name, step = call.step, device = %dev.path,
                "install device checked for the manager");
            Some(dev.path)
        } else {
            None
        };
        let result = if decl.instance_root {
            let mut out = None;
            call.host.with_instance_root(None, &mut |root| {
                out = Some(self.run_step(call, decl, device.as_deref(), Some(root))?);
                Ok(())
            })?;
            out.expect("the closure ran and succeeded")
        } else {
            self.run_step(call, decl, device.as_deref(), None)?
        };
        match (decl.writes_image, device) {
            (true, Some(dev)) => {
                let written = call.host.image_written(&dev)?;
                Ok(protocol::merge_written(result, written))
            }
            _ => Ok(result),
        }
    }
}

/// Whether a directory entry's name is one an operator's tooling leaves behind.
fn ignored_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b".")
        || b.ends_with(b"~")
        || b.ends_with(b".bak")
        || b.windows(6).any(|w| w == b".dpkg-")
        || b.windows(4).any(|w| w == b".rpm")
}

/// The candidate executables of `dir`, in byte order of name: regular files (links
/// followed) with an execute bit, names starting with `.` or ending with `~`, `.bak`,
/// `.dpkg-*` or `.rpm*` left out. A missing directory has none.
pub fn executables(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if ignored_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Describes every executable of `options.dir` and returns those to register: a failed
/// `describe` or a name in `taken` (or of an earlier executable) is logged as an error
/// and left out, support 0 is logged and left out. Never fails: the agent goes on.
pub fn discover(
    options: &ExecOptions,
    inventory: &Inventory,
    taken: &BTreeSet<String>,
) -> Vec<ExecManager> {
    let paths = match executables(&options.dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(dir = %options.dir.display(), error = %e,
                "cannot list the hardware managers directory; no executable managers");
            return Vec::new();
        }
    };
    let mut taken = taken.clone();
    let mut found = Vec::new();
    for path in paths {
        let described = ExecManager::describe(&path, options, inventory).and_then(|m| {
            if taken.contains(m.name) {
                Err(ExecError::Duplicate(m.name.to_owned()))
            } else {
                Ok(m)
            }
        });
        match described {
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e,
                    "executable hardware manager left out");
            }
            Ok(m) if m.support == SupportLevel::NONE => {
                tracing::info!(path = %path.display(), manager = m.name,
                    "executable hardware manager does not support this machine");
            }
            Ok(m) => {
                let steps: Vec<String> = m
                    .steps
                    .iter()
                    .map(|s| format!("{}.{}", s.kind, s.step))
                    .collect();
                tracing::info!(path = %path.display(), manager = m.name, version = %m.version,
                    support = m.support.0, ?steps, "executable hardware manager found");
                taken.insert(m.name.to_owned());
                found.push(m);
            }
        }
    }
    found
}

/// The names managers are known by (`name` and version name), which an executable
/// manager may not take.
pub fn names_of(managers: &[Box<dyn HardwareManager>]) -> BTreeSet<String> {
    managers
        .iter()
        .flat_map(|m| [m.name().to_owned(), m.version().name])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_ignored() {
        for name in [
            ".hidden",
            "m~",
            "m.bak",
            "m.dpkg-new",
            "m.dpkg-old",
            "m.rpmsave",
            "m.rpmnew",
        ] {
            assert!(ignored_name(OsStr::new(name)), "{name}");
        }
        for name in ["installer", "10-raid", "m.sh"] {
            assert!(!ignored_name(OsStr::new(name)), "{name}");
        }
    }
}
