//! Partition images (hardware spec 6): the layout, the root image streamed into its
//! partition, swap, ephemeral and config drive, and the identifiers returned.

use std::path::Path;
use std::sync::Arc;

use crate::agent::AgentState;
use crate::api::error::CommandError;
use crate::image::ImageInfo;
use crate::partition::configdrive::ConfigDriveImage;

use super::PartitionUuids;

/// Lays out `device` for the partition image `info` and writes it.
pub async fn write(
    _state: &Arc<AgentState>,
    device: &Path,
    info: &ImageInfo,
    _configdrive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    Err(CommandError::ImageWrite(format!(
        "partition image {} not written to {}: partition images are not supported by this agent yet",
        info.id,
        device.display()
    )))
}
