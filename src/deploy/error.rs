//! Errors of deploy work, typed where they arise; [`DeployError::to_command_error`] is
//! the one place that picks their IPA class.

use crate::errors::CommandError;
use crate::image::ImageError;
use crate::partition::configdrive::ConfigDriveError;
use crate::task::TaskFailed;

/// Why deploy work failed. Displayed as the IPA error it becomes.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.to_command_error())]
pub enum DeployError {
    /// The request cannot be carried out as asked (sizes, filesystems).
    InvalidRequest(String),
    /// Work on the disk (tables, filesystems, partition nodes, identifiers) failed.
    Disk(String),
    /// The config drive could not be decoded or placed.
    ConfigDrive(#[from] ConfigDriveError),
    /// The config drive could not be downloaded.
    ConfigDriveDownload {
        /// The node the config drive is for.
        node_uuid: String,
        /// Its URL, without credentials or query.
        url: String,
        /// Why.
        reason: String,
    },
    /// The image cannot be booted as asked (a BIOS install refused by configuration).
    InvalidImage(String),
    /// No install device matches the node (or its root device hints).
    DeviceNotFound(String),
    /// Block devices could not be listed, or the target refused to open for writing.
    BlockDevice(String),
    /// The image could not be downloaded, verified or written.
    Image {
        /// `image_info.id`.
        image_id: String,
        /// What the image pipeline reported (boxed: it is large).
        error: Box<ImageError>,
    },
    /// Unclassified: download set-up, the device choice, an external tool.
    Execution(String),
    /// Blocking work panicked or was cancelled.
    Task(#[from] TaskFailed),
}

impl DeployError {
    /// The IPA error this becomes in a command result.
    pub fn to_command_error(&self) -> CommandError {
        match self {
            Self::InvalidRequest(m) => CommandError::InvalidCommandParams(m.clone()),
            Self::Disk(m) => CommandError::Deployment(m.clone()),
            Self::ConfigDrive(e) => CommandError::Deployment(e.to_string()),
            Self::ConfigDriveDownload {
                node_uuid,
                url,
                reason,
            } => CommandError::Deployment(format!(
                "Can't download the configdrive content for node {node_uuid} from {url}. Reason: {reason}"
            )),
            Self::InvalidImage(m) => CommandError::InvalidImage(m.clone()),
            Self::DeviceNotFound(m) => CommandError::DeviceNotFound(m.clone()),
            Self::BlockDevice(m) => CommandError::BlockDevice(m.clone()),
            Self::Image { image_id, error } => error.to_command_error(image_id),
            Self::Execution(m) => CommandError::CommandExecution(m.clone()),
            Self::Task(e) => CommandError::from(e.clone()),
        }
    }

    /// A failure of the image pipeline for image `image_id` (kept redacted: the
    /// message goes to the conductor's `last_error` and logs).
    pub fn image(image_id: &crate::image::info::ImageId, error: ImageError) -> Self {
        Self::Image {
            image_id: image_id.to_string(),
            error: Box::new(error),
        }
    }
}

impl From<DeployError> for CommandError {
    fn from(e: DeployError) -> Self {
        e.to_command_error()
    }
}
