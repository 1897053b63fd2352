//! Errors of the manager registry: [`DispatchError`] for any dispatched call and
//! [`StepError`] for step execution. Each maps into one [`CommandError`] (whose table in
//! `crate::errors` holds every IPA class); their `ipa_type`, `code`, `message` and
//! `details` are that error's.

use serde_json::{Map, Value};

use crate::errors::CommandError;
use ira_hw::{HwError, StepKind};

/// Why a call dispatched to the managers did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No manager supports this machine. IPA: `HardwareManagerNotFound` (500).
    #[error("No valid HardwareManager found")]
    NoManager,
    /// Every manager declined the call. IPA: `HardwareManagerMethodNotFound` (500).
    #[error("No HardwareManager found to handle method: Could not find method: {method}")]
    MethodNotFound {
        /// The method (or step) name.
        method: String,
    },
    /// A manager is misconfigured; dispatch stopped at it.
    /// IPA: `HardwareManagerConfigurationError` (500).
    #[error("hardware manager {manager}: configuration error: {message}")]
    Configuration {
        /// The manager that reported it.
        manager: &'static str,
        /// Its explanation.
        message: String,
    },
    /// A manager rejected the arguments. IPA: `InvalidCommandParamsError` (400).
    #[error("hardware manager {manager}: invalid parameters: {message}")]
    InvalidParams {
        /// The manager that reported it.
        manager: &'static str,
        /// Its explanation.
        message: String,
    },
    /// A manager handled the call and failed. IPA: `CommandExecutionError` (500), the
    /// class IPA gives unexpected errors of a command.
    #[error("hardware manager {manager}: {message}")]
    Failed {
        /// The manager that reported it.
        manager: &'static str,
        /// Its explanation.
        message: String,
    },
    /// A manager passed on the failure of one of the agent's services, with its class.
    #[error("hardware manager {manager}: {error}")]
    Service {
        /// The manager that reported it.
        manager: &'static str,
        /// The service's error.
        error: CommandError,
    },
}

impl DispatchError {
    /// Classifies what `manager` returned; `None` for [`HwError::NotMine`], which is
    /// not an error but "ask the next manager".
    pub(crate) fn from_manager(manager: &'static str, err: HwError) -> Option<Self> {
        match err {
            HwError::NotMine => None,
            HwError::Configuration(message) => Some(Self::Configuration { manager, message }),
            HwError::InvalidParams(message) => Some(Self::InvalidParams { manager, message }),
            HwError::Failed(message) => Some(Self::Failed { manager, message }),
            HwError::Service { class, details } => Some(Self::Service {
                manager,
                error: CommandError::from_class(class, details),
            }),
        }
    }

    /// The error answered on the wire.
    pub fn to_command_error(&self) -> CommandError {
        match self {
            Self::NoManager => CommandError::HardwareManagerNotFound(
                "No hardware manager supports this machine".to_owned(),
            ),
            Self::MethodNotFound { method } => CommandError::HardwareManagerMethodNotFound {
                method: method.clone(),
            },
            Self::Configuration { manager, message } => {
                CommandError::HardwareManagerConfiguration(format!("{manager}: {message}"))
            }
            Self::InvalidParams { manager, message } => {
                CommandError::InvalidCommandParams(format!("{manager}: {message}"))
            }
            Self::Failed { manager, message } => {
                CommandError::CommandExecution(format!("{manager}: {message}"))
            }
            Self::Service { error, .. } => error.clone(),
        }
    }
}

/// Why `execute_<kind>_step` did not run a step to success.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The conductor listed the steps with other manager versions; the step is not run.
    /// IPA: `VersionMismatch` (409), command status `CLEAN_VERSION_MISMATCH`.
    #[error("hardware managers version mismatch: {}", version_details(.current, .ironic))]
    VersionMismatch {
        /// The agent's current `hardware_manager_version`.
        current: Map<String, Value>,
        /// The `<kind>_version` the conductor sent.
        ironic: Value,
    },
    /// No manager handles the step. IPA: `HardwareManagerMethodNotFound` (500).
    #[error("Could not find method: {method}")]
    MethodNotFound {
        /// The step name.
        method: String,
    },
    /// No manager supports this machine. IPA: `HardwareManagerNotFound` (500).
    #[error("No valid HardwareManager found")]
    NoManager,
    /// The handling manager is misconfigured.
    /// IPA: `HardwareManagerConfigurationError` (500).
    #[error("hardware manager configuration error: {0}")]
    Configuration(String),
    /// The step object or its arguments are invalid. IPA: `InvalidCommandParamsError` (400).
    #[error("invalid step parameters: {0}")]
    InvalidParams(String),
    /// The step ran and failed. IPA: `CleaningError`, `DeploymentError` or
    /// `ServicingError` by `kind` (500).
    #[error("{kind} step {step} failed: {message}")]
    Failed {
        /// The step family.
        kind: StepKind,
        /// The step name.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// The step failed with the error of one of the agent's services, passed on by the
    /// manager with its class (`ImageChecksumError`, `InvalidImage`, ...).
    #[error("{0}")]
    Service(CommandError),
}

impl StepError {
    /// Maps a dispatch failure of step `step` of `kind`.
    pub(crate) fn from_dispatch(kind: StepKind, step: &str, err: DispatchError) -> Self {
        match err {
            DispatchError::NoManager => Self::NoManager,
            DispatchError::MethodNotFound { method } => Self::MethodNotFound { method },
            DispatchError::Configuration { manager, message } => {
                Self::Configuration(format!("{manager}: {message}"))
            }
            DispatchError::InvalidParams { message, .. } => Self::InvalidParams(message),
            DispatchError::Failed { message, .. } => Self::Failed {
                kind,
                step: step.to_owned(),
                message,
            },
            DispatchError::Service { error, .. } => Self::Service(error),
        }
    }

    /// True for a version mismatch, which ends the command with status
    /// `CLEAN_VERSION_MISMATCH` instead of `FAILED`.
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self, Self::VersionMismatch { .. })
    }

    /// The error answered on the wire.
    pub fn to_command_error(&self) -> CommandError {
        match self {
            Self::VersionMismatch { current, ironic } => CommandError::VersionMismatch {
                details: version_details(current, ironic),
            },
            Self::MethodNotFound { method } => CommandError::HardwareManagerMethodNotFound {
                method: method.clone(),
            },
            Self::NoManager => CommandError::HardwareManagerNotFound(
                "No hardware manager supports this machine".to_owned(),
            ),
            Self::Configuration(message) => {
                CommandError::HardwareManagerConfiguration(message.clone())
            }
            Self::InvalidParams(message) => CommandError::InvalidCommandParams(message.clone()),
            Self::Failed {
                kind,
                step,
                message,
            } => {
                let details = format!("Error performing {kind} step {step}: {message}");
                match kind {
                    StepKind::Clean => CommandError::Cleaning(details),
                    StepKind::Deploy => CommandError::Deployment(details),
                    StepKind::Service => CommandError::Servicing(details),
                }
            }
            Self::Service(error) => error.clone(),
        }
    }
}

/// IPA's version-mismatch details; the objects are rendered as compact JSON (IPA prints
/// Python dicts, the conductor only shows the text).
fn version_details(current: &Map<String, Value>, ironic: &Value) -> String {
    format!(
        "Current versions: {}, versions used by ironic: {}",
        Value::Object(current.clone()),
        ironic
    )
}

impl From<&StepError> for CommandError {
    fn from(err: &StepError) -> Self {
        err.to_command_error()
    }
}

impl From<&DispatchError> for CommandError {
    fn from(err: &DispatchError) -> Self {
        err.to_command_error()
    }
}
