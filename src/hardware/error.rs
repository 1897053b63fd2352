//! Errors of the manager registry: [`DispatchError`] for any dispatched call and
//! [`StepError`] for step execution. Each knows the IPA error class it becomes on the
//! wire (`ipa_type`, `code`, `message`, `details`); the API layer only serializes them.

use serde_json::{Map, Value};

use crate::errors::CommandError;
use crate::hw::{HwError, StepKind};

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
        }
    }

    /// IPA error class name (`type` of `command_error`).
    pub fn ipa_type(&self) -> &'static str {
        match self {
            Self::NoManager => "HardwareManagerNotFound",
            Self::MethodNotFound { .. } => "HardwareManagerMethodNotFound",
            Self::Configuration { .. } => "HardwareManagerConfigurationError",
            Self::InvalidParams { .. } => "InvalidCommandParamsError",
            Self::Failed { .. } => "CommandExecutionError",
        }
    }

    /// HTTP-like status code of the IPA class.
    pub fn code(&self) -> u16 {
        match self {
            Self::InvalidParams { .. } => 400,
            _ => 500,
        }
    }

    /// Class-level message of the IPA class.
    pub fn message(&self) -> &'static str {
        match self {
            Self::NoManager => "No valid HardwareManager found",
            Self::MethodNotFound { .. } => "No HardwareManager found to handle method",
            Self::Configuration { .. } => "Hardware manager configuration error",
            Self::InvalidParams { .. } => "Invalid command parameters",
            Self::Failed { .. } => "Command execution failed",
        }
    }

    /// Instance-specific details.
    pub fn details(&self) -> String {
        match self {
            Self::NoManager => "No hardware manager supports this machine".to_owned(),
            Self::MethodNotFound { method } => format!("Could not find method: {method}"),
            Self::Configuration { manager, message }
            | Self::InvalidParams { manager, message }
            | Self::Failed { manager, message } => format!("{manager}: {message}"),
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
        }
    }

    /// True for a version mismatch, which ends the command with status
    /// `CLEAN_VERSION_MISMATCH` instead of `FAILED`.
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self, Self::VersionMismatch { .. })
    }

    /// IPA error class name (`type` of `command_error`).
    pub fn ipa_type(&self) -> &'static str {
        match self {
            Self::VersionMismatch { .. } => "VersionMismatch",
            Self::MethodNotFound { .. } => "HardwareManagerMethodNotFound",
            Self::NoManager => "HardwareManagerNotFound",
            Self::Configuration(_) => "HardwareManagerConfigurationError",
            Self::InvalidParams(_) => "InvalidCommandParamsError",
            Self::Failed { kind, .. } => match kind {
                StepKind::Clean => "CleaningError",
                StepKind::Deploy => "DeploymentError",
                StepKind::Service => "ServicingError",
            },
        }
    }

    /// HTTP-like status code of the IPA class.
    pub fn code(&self) -> u16 {
        match self {
            Self::VersionMismatch { .. } => 409,
            Self::InvalidParams(_) => 400,
            _ => 500,
        }
    }

    /// Class-level message of the IPA class.
    pub fn message(&self) -> &'static str {
        match self {
            Self::VersionMismatch { .. } => {
                "Hardware managers version mismatch, reload agent with correct version"
            }
            Self::MethodNotFound { .. } => "No HardwareManager found to handle method",
            Self::NoManager => "No valid HardwareManager found",
            Self::Configuration(_) => "Hardware manager configuration error",
            Self::InvalidParams(_) => "Invalid command parameters",
            Self::Failed { kind, .. } => match kind {
                StepKind::Clean => "Clean step failed",
                StepKind::Deploy => "Deploy step failed",
                StepKind::Service => "Service step failed",
            },
        }
    }

    /// Instance-specific details.
    pub fn details(&self) -> String {
        match self {
            Self::VersionMismatch { current, ironic } => version_details(current, ironic),
            Self::MethodNotFound { method } => format!("Could not find method: {method}"),
            Self::NoManager => "No hardware manager supports this machine".to_owned(),
            Self::Configuration(message) | Self::InvalidParams(message) => message.clone(),
            Self::Failed {
                kind,
                step,
                message,
            } => format!("Error performing {kind} step {step}: {message}"),
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
        if err.is_version_mismatch() {
            return Self::VersionMismatch {
                details: err.details(),
            };
        }
        Self::Hardware {
            ipa_type: err.ipa_type(),
            code: err.code(),
            message: err.message(),
            details: err.details(),
        }
    }
}

impl From<&DispatchError> for CommandError {
    fn from(err: &DispatchError) -> Self {
        Self::Hardware {
            ipa_type: err.ipa_type(),
            code: err.code(),
            message: err.message(),
            details: err.details(),
        }
    }
}
