//! The one place that builds IPA's error JSON, in both of its formats (protocol spec 1.7):
//!
//! * the HTTP fault body `{"faultcode": "Client"|"Server", "faultstring": "..."}` of every
//!   non-2xx answer ([`ApiError::fault`]);
//! * the `command_error` object `{type, code, message, details}` inside a command result
//!   ([`CommandError::to_ipa`]).
//!
//! Commands and the router only pick a variant; the class name, code and class-level
//! message of each IPA error class live here and nowhere else. To add a class: a variant
//! of [`CommandError`] and one row in each `match` of its accessors.

use hyper::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use crate::hardware::{DispatchError, StepError};

/// An error of an agent command, typed by the IPA error class it becomes on the wire.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {}", self.message(), self.details())]
pub enum CommandError {
    /// `InvalidContentError` (400): the request body is not acceptable.
    InvalidContent(String),
    /// `InvalidCommandError` (400): bad command name or unknown command.
    InvalidCommand(String),
    /// `InvalidCommandParamsError` (400): a parameter validator refused the call.
    InvalidCommandParams(String),
    /// `RequestedObjectNotFoundError` (404): `<what> with id <id> not found.`
    RequestedObjectNotFound {
        /// What was looked up, e.g. `Extension`.
        what: &'static str,
        /// The id that was not found.
        id: String,
    },
    /// `AgentIsBusy` (409): the last command is still RUNNING.
    AgentIsBusy {
        /// Bare name of the running command.
        command: String,
    },
    /// `CommandExecutionError` (500): a command failed in an unclassified way.
    CommandExecution(String),
    /// `SystemRebootError` (500): power off or reboot failed.
    SystemReboot(String),
    /// `CleaningError` (500): a clean step failed.
    Cleaning(String),
    /// `DeploymentError` (500): a deploy step failed.
    Deployment(String),
    /// `ServicingError` (500): a service step failed.
    Servicing(String),
    /// `HardwareManagerNotFound` (500): no manager supports this machine.
    HardwareManagerNotFound(String),
    /// `HardwareManagerMethodNotFound` (500): every manager declined the method.
    HardwareManagerMethodNotFound {
        /// The method or step name.
        method: String,
    },
    /// `IncompatibleHardwareMethodError` (500).
    IncompatibleHardwareMethod(String),
    /// `VersionMismatch` (409): the conductor listed steps with other manager versions.
    VersionMismatch {
        /// `Current versions: {...}, versions used by ironic: {...}`.
        details: String,
    },
    /// `ImageDownloadError` (500).
    ImageDownload(String),
    /// `ImageDownloadTimeoutError` (408).
    ImageDownloadTimeout(String),
    /// `ImageChecksumError` (500).
    ImageChecksum(String),
    /// `ImageWriteError` (500).
    ImageWrite(String),
    /// `InvalidImage` (500).
    InvalidImage(String),
    /// `DeviceNotFound` (404).
    DeviceNotFound(String),
    /// `BlockDeviceEraseError` (500).
    BlockDeviceErase(String),
    /// `BlockDeviceError` (500).
    BlockDevice(String),
    /// `SoftwareRAIDError` (500).
    SoftwareRaid(String),
    /// `ClockSyncError` (500).
    ClockSync(String),
    /// An error class reported by a hardware manager as (type, code, message).
    Hardware {
        /// IPA class name.
        ipa_type: &'static str,
        /// HTTP-like code.
        code: u16,
        /// Class-level message.
        message: &'static str,
        /// Instance details.
        details: String,
    },
}

impl CommandError {
    /// IPA error class name (`type` of `command_error`). Never `TypeError`: the conductor
    /// treats that one as an agent bug even on HTTP 200.
    pub fn ipa_type(&self) -> &'static str {
        match self {
            Self::InvalidContent(_) => "InvalidContentError",
            Self::InvalidCommand(_) => "InvalidCommandError",
            Self::InvalidCommandParams(_) => "InvalidCommandParamsError",
            Self::RequestedObjectNotFound { .. } => "RequestedObjectNotFoundError",
            Self::AgentIsBusy { .. } => "AgentIsBusy",
            Self::CommandExecution(_) => "CommandExecutionError",
            Self::SystemReboot(_) => "SystemRebootError",
            Self::Cleaning(_) => "CleaningError",
            Self::Deployment(_) => "DeploymentError",
            Self::Servicing(_) => "ServicingError",
            Self::HardwareManagerNotFound(_) => "HardwareManagerNotFound",
            Self::HardwareManagerMethodNotFound { .. } => "HardwareManagerMethodNotFound",
            Self::IncompatibleHardwareMethod(_) => "IncompatibleHardwareMethodError",
            Self::VersionMismatch { .. } => "VersionMismatch",
            Self::ImageDownload(_) => "ImageDownloadError",
            Self::ImageDownloadTimeout(_) => "ImageDownloadTimeoutError",
            Self::ImageChecksum(_) => "ImageChecksumError",
            Self::ImageWrite(_) => "ImageWriteError",
            Self::InvalidImage(_) => "InvalidImage",
            Self::DeviceNotFound(_) => "DeviceNotFound",
            Self::BlockDeviceErase(_) => "BlockDeviceEraseError",
            Self::BlockDevice(_) => "BlockDeviceError",
            Self::SoftwareRaid(_) => "SoftwareRAIDError",
            Self::ClockSync(_) => "ClockSyncError",
            Self::Hardware { ipa_type, .. } => ipa_type,
        }
    }

    /// HTTP-like status code of the class; also the HTTP status when the error is
    /// answered as a fault.
    pub fn code(&self) -> u16 {
        match self {
            Self::InvalidContent(_) | Self::InvalidCommand(_) | Self::InvalidCommandParams(_) => {
                400
            }
            Self::RequestedObjectNotFound { .. } | Self::DeviceNotFound(_) => 404,
            Self::ImageDownloadTimeout(_) => 408,
            Self::AgentIsBusy { .. } | Self::VersionMismatch { .. } => 409,
            Self::Hardware { code, .. } => *code,
            _ => 500,
        }
    }

    /// Class-level message (IPA: `errors.py`, no trailing period).
    pub fn message(&self) -> &'static str {
        match self {
            Self::InvalidContent(_) => "Invalid request body",
            Self::InvalidCommand(_) => "Invalid command",
            Self::InvalidCommandParams(_) => "Invalid command parameters",
            Self::RequestedObjectNotFound { .. } => "Not found",
            Self::AgentIsBusy { .. } => "Agent is busy",
            Self::CommandExecution(_) => "Command execution failed",
            Self::SystemReboot(_) => "Error rebooting system",
            Self::Cleaning(_) => "Clean step failed",
            Self::Deployment(_) => "Deploy step failed",
            Self::Servicing(_) => "Service step failed",
            Self::HardwareManagerNotFound(_) => "No valid HardwareManager found",
            Self::HardwareManagerMethodNotFound { .. } => {
                "No HardwareManager found to handle method"
            }
            Self::IncompatibleHardwareMethod(_) => {
                "HardwareManager method is not compatible with hardware"
            }
            Self::VersionMismatch { .. } => {
                "Hardware managers version mismatch, reload agent with correct version"
            }
            Self::ImageDownload(_) => "Error downloading image",
            Self::ImageDownloadTimeout(_) => "Image download timeout",
            Self::ImageChecksum(_) => "Error verifying image checksum",
            Self::ImageWrite(_) => "Error writing image to device",
            Self::InvalidImage(_) => "The provided image is not valid for use",
            Self::DeviceNotFound(_) => {
                "Error finding the disk or partition device to deploy the image onto"
            }
            Self::BlockDeviceErase(_) => "Error erasing block device",
            Self::BlockDevice(_) => "Block device caused unknown error",
            Self::SoftwareRaid(_) => "Software RAID caused unknown error",
            Self::ClockSync(_) => "Error syncing system clock",
            Self::Hardware { message, .. } => message,
        }
    }

    /// Instance-specific details.
    pub fn details(&self) -> String {
        match self {
            Self::RequestedObjectNotFound { what, id } => format!("{what} with id {id} not found."),
            Self::AgentIsBusy { command } => format!("executing command {command}"),
            Self::HardwareManagerMethodNotFound { method } => {
                format!("Could not find method: {method}")
            }
            Self::VersionMismatch { details } | Self::Hardware { details, .. } => details.clone(),
            Self::InvalidContent(d)
            | Self::InvalidCommand(d)
            | Self::InvalidCommandParams(d)
            | Self::CommandExecution(d)
            | Self::SystemReboot(d)
            | Self::Cleaning(d)
            | Self::Deployment(d)
            | Self::Servicing(d)
            | Self::HardwareManagerNotFound(d)
            | Self::IncompatibleHardwareMethod(d)
            | Self::ImageDownload(d)
            | Self::ImageDownloadTimeout(d)
            | Self::ImageChecksum(d)
            | Self::ImageWrite(d)
            | Self::InvalidImage(d)
            | Self::DeviceNotFound(d)
            | Self::BlockDeviceErase(d)
            | Self::BlockDevice(d)
            | Self::SoftwareRaid(d)
            | Self::ClockSync(d) => d.clone(),
        }
    }

    /// True for the error that ends a step command with `CLEAN_VERSION_MISMATCH`.
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self, Self::VersionMismatch { .. })
    }

    /// The `command_error` object of a command result.
    pub fn to_ipa(&self) -> IpaError {
        IpaError {
            kind: self.ipa_type().to_owned(),
            code: self.code(),
            message: self.message().to_owned(),
            details: self.details(),
        }
    }
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

/// The serialized `command_error`: exactly `type`, `code`, `message`, `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpaError {
    /// Error class name.
    #[serde(rename = "type")]
    pub kind: String,
    /// HTTP-like status code.
    pub code: u16,
    /// Class-level message.
    pub message: String,
    /// Instance details.
    pub details: String,
}

/// Why a request was not answered with 200.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong `agent_token` (or none held yet).
    #[error("token invalid")]
    Unauthorized,
    /// The body is not acceptable JSON (framework-style 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No route for the path.
    #[error("not found")]
    NotFound,
    /// A route exists but not for this method; carries the allowed methods.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The client did not send its body in time.
    #[error("request timeout")]
    RequestTimeout,
    /// A bug on our side.
    #[error("internal error: {0}")]
    Internal(String),
    /// An agent error (the RESTError family).
    #[error("{0}")]
    Command(#[from] CommandError),
}

impl ApiError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Command(e) => {
                StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// `faultstring`: framework errors read `<code> <reason>: <description>` (Werkzeug's
    /// wording), agent errors `<message>: <details>`.
    pub fn faultstring(&self) -> String {
        let framework = |description: &str| {
            let status = self.status();
            format!(
                "{} {}: {description}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            )
        };
        match self {
            Self::Unauthorized => framework("Token invalid."),
            Self::BadRequest(d) => framework(d),
            Self::NotFound => framework(
                "The requested URL was not found on the server. If you entered the URL \
                 manually please check your spelling and try again.",
            ),
            Self::MethodNotAllowed(_) => {
                framework("The method is not allowed for the requested URL.")
            }
            Self::PayloadTooLarge => {
                framework("The data value transmitted exceeds the capacity limit.")
            }
            Self::RequestTimeout => framework("The request body was not received in time."),
            Self::Internal(_) => framework(
                "The server encountered an internal error and was unable to complete your \
                 request.",
            ),
            Self::Command(e) => e.to_string(),
        }
    }

    /// The fault body: `faultcode` is `Server` for statuses >= 500, else `Client`.
    pub fn fault(&self) -> Value {
        let faultcode = if self.status().is_server_error() {
            "Server"
        } else {
            "Client"
        };
        json!({"faultcode": faultcode, "faultstring": self.faultstring()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::StepKind;

    #[test]
    fn agent_fault_strings_follow_ipa_wording() {
        let cases = [
            (
                ApiError::from(CommandError::AgentIsBusy {
                    command: "execute_clean_step".into(),
                }),
                409,
                "Agent is busy: executing command execute_clean_step",
            ),
            (
                ApiError::from(CommandError::RequestedObjectNotFound {
                    what: "Extension",
                    id: "nope".into(),
                }),
                404,
                "Not found: Extension with id nope not found.",
            ),
            (
                ApiError::from(CommandError::InvalidCommand("Unknown command: frob".into())),
                400,
                "Invalid command: Unknown command: frob",
            ),
            (
                ApiError::Unauthorized,
                401,
                "401 Unauthorized: Token invalid.",
            ),
        ];
        for (err, status, text) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(
                err.fault(),
                json!({"faultcode": "Client", "faultstring": text})
            );
        }
    }

    #[test]
    fn server_errors_have_server_faultcode() {
        let err = ApiError::from(CommandError::CommandExecution("boom".into()));
        assert_eq!(err.fault()["faultcode"], "Server");
        assert_eq!(err.fault()["faultstring"], "Command execution failed: boom");
        assert_eq!(
            ApiError::Internal("x".into()).fault()["faultcode"],
            "Server"
        );
        assert_eq!(ApiError::NotFound.fault()["faultcode"], "Client");
    }

    #[test]
    fn command_error_object_has_exactly_four_keys() {
        let obj =
            serde_json::to_value(CommandError::Cleaning("disk on fire".into()).to_ipa()).unwrap();
        assert_eq!(
            obj,
            json!({"type": "CleaningError", "code": 500,
                   "message": "Clean step failed", "details": "disk on fire"})
        );
    }

    #[test]
    fn step_errors_keep_their_class() {
        let mismatch = StepError::VersionMismatch {
            current: serde_json::Map::new(),
            ironic: json!({"x": "1"}),
        };
        let err = CommandError::from(&mismatch);
        assert!(err.is_version_mismatch());
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message(),
            "Hardware managers version mismatch, reload agent with correct version"
        );
        let failed = StepError::Failed {
            kind: StepKind::Deploy,
            step: "write_image".into(),
            message: "no disk".into(),
        };
        let ipa = CommandError::from(&failed).to_ipa();
        assert_eq!(ipa.kind, "DeploymentError");
        assert_eq!(ipa.message, "Deploy step failed");
        assert_eq!(ipa.code, 500);
    }
}
