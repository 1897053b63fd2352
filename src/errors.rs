//! IPA's error classes (`errors.py`) and the `command_error` object they become inside a
//! command result (protocol spec 1.7). Every layer picks a variant; the class name, code
//! and class-level message of each IPA error class live here and nowhere else. To add a
//! class: a variant of [`CommandError`] and one row in each `match` of its accessors.

use serde::Serialize;

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
    /// `HardwareManagerConfigurationError` (500): a manager is misconfigured.
    HardwareManagerConfiguration(String),
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
            Self::HardwareManagerConfiguration(_) => "HardwareManagerConfigurationError",
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
            Self::HardwareManagerConfiguration(_) => "Hardware manager configuration error",
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
            Self::VersionMismatch { details } => details.clone(),
            Self::InvalidContent(d)
            | Self::InvalidCommand(d)
            | Self::InvalidCommandParams(d)
            | Self::CommandExecution(d)
            | Self::SystemReboot(d)
            | Self::Cleaning(d)
            | Self::Deployment(d)
            | Self::Servicing(d)
            | Self::HardwareManagerNotFound(d)
            | Self::HardwareManagerConfiguration(d)
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

    /// The error of class `class` (an [`Self::ipa_type`] of a class whose instance is
    /// its details) with `details`, as it travels through a hardware manager; any other
    /// class is a `CommandExecutionError` that names it.
    pub fn from_class(class: &str, details: String) -> Self {
        const BY_DETAILS: [fn(String) -> CommandError; 22] = [
            CommandError::InvalidContent,
            CommandError::InvalidCommand,
            CommandError::InvalidCommandParams,
            CommandError::CommandExecution,
            CommandError::SystemReboot,
            CommandError::Cleaning,
            CommandError::Deployment,
            CommandError::Servicing,
            CommandError::HardwareManagerNotFound,
            CommandError::HardwareManagerConfiguration,
            CommandError::IncompatibleHardwareMethod,
            |details| CommandError::VersionMismatch { details },
            CommandError::ImageDownload,
            CommandError::ImageDownloadTimeout,
            CommandError::ImageChecksum,
            CommandError::ImageWrite,
            CommandError::InvalidImage,
            CommandError::DeviceNotFound,
            CommandError::BlockDeviceErase,
            CommandError::BlockDevice,
            CommandError::SoftwareRaid,
            CommandError::ClockSync,
        ];
        let probe = |make: &fn(String) -> CommandError| make(String::new()).ipa_type() == class;
        match BY_DETAILS.iter().find(|make| probe(make)) {
            Some(make) => make(details),
            None => Self::CommandExecution(format!("{class}: {details}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_class_and_its_details_make_the_same_error_again() {
        for err in [
            CommandError::ImageChecksum("sha256 mismatch".into()),
            CommandError::DeviceNotFound("no disk".into()),
            CommandError::InvalidImage("qcow2 with a backing file".into()),
            CommandError::HardwareManagerConfiguration("m: bad".into()),
        ] {
            let again = CommandError::from_class(err.ipa_type(), err.details());
            assert_eq!(again, err);
            assert_eq!(again.to_ipa(), err.to_ipa());
        }
        let unknown = CommandError::from_class("VendorError", "x".into());
        assert_eq!(
            unknown,
            CommandError::CommandExecution("VendorError: x".into())
        );
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
}
