//! A whole-disk image onto the install device (hardware spec 8.3-8.5): streamed through
//! the pipeline (verified, first MiB held back), then the kernel re-reads the table, the
//! backup GPT moves to the disk's end, the table is validated, the config drive is
//! placed, and the MBR disk signature becomes `root uuid`.

use std::path::Path;
use std::sync::Arc;

use crate::agent::AgentState;
use crate::blockdev::nodes::{self, await_block_devices, NodeOutlook};
use crate::commands::registry::blocking;
use crate::errors::CommandError;
use crate::image::pipeline::{self, WriteReport};
use crate::image::ImageInfo;
use crate::partition::configdrive::ConfigDriveImage;
use crate::partition::fixup::{fix_gpt_partition, validate_partitioning, whole_disk_root_uuid};
use crate::partition::table::read_table;
use crate::partition::{partition_path, Geometry};
use crate::sys::block;

use super::prepare::{write_options, Writing};
use super::target::{open_target, rooted, sysroot};
use super::PartitionUuids;

/// Streams `info` onto `device` and finishes the disk; returns what
/// `get_partition_uuids` will report.
pub async fn write(
    state: &Arc<AgentState>,
    device: &Path,
    info: &ImageInfo,
    configdrive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    let report = stream(state, device, info).await?;
    tracing::info!(image = %info.id, device = %device.display(),
        bytes = report.image_size, seconds = report.elapsed.as_secs_f64(),
        "image written and verified");
    let st = Arc::clone(state);
    let dev = device.to_path_buf();
    let node_uuid = info.node_uuid.clone().unwrap_or_else(|| "local".to_owned());
    blocking(move || finish(&st, &dev, &node_uuid, configdrive.as_ref())).await?
}

/// Streams `info` onto `target` (a disk or a partition) with progress in the status line.
pub async fn stream(
    state: &Arc<AgentState>,
    target: &Path,
    info: &ImageInfo,
) -> Result<WriteReport, CommandError> {
    let file = open_target(state, target)?;
    let writing = Writing::start(state, target, "write_image");
    let settings = state.lookup.lock().expect("lookup lock poisoned").clone();
    let opts = write_options(state, target, &writing, &settings)?;
    let decode = super::format_gate::stage_for(info, &settings);
    pipeline::write_image(info, file, &opts, decode)
        .await
        .map_err(|e| e.to_command_error(&info.id))
}

/// The post-write work for an image this process already wrote (cache hit): config
/// drive and identifiers only.
pub fn finish_cached(
    state: &AgentState,
    device: &Path,
    node_uuid: &str,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    finish(state, device, node_uuid, configdrive)
}

/// The post-write work on the whole disk (runs on a blocking thread).
fn finish(
    state: &AgentState,
    device: &Path,
    node_uuid: &str,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    let mut disk = open_target(state, device)?;
    let geometry = Geometry::of_file(&disk)
        .map_err(|e| CommandError::Deployment(format!("{}: {e}", device.display())))?;
    // The re-read that counts is the last one, which also decides the wait below.
    if let Err(e) = block::rescan(&disk) {
        tracing::debug!(device = %device.display(), error = %e, "first re-read of the table failed");
    }
    match fix_gpt_partition(&mut disk, geometry, device, Some(node_uuid)) {
        Ok(fix) => tracing::debug!(?fix, "backup GPT checked"),
        // IPA ignores a failure here too: the table is validated next.
        Err(e) => tracing::warn!(error = %e, "could not move the backup GPT to the disk end"),
    }
    validate_partitioning(&mut disk, geometry, device)
        .map_err(|e| CommandError::Deployment(e.to_string()))?;
    if let Some(image) = configdrive {
        super::configdrive::place(&mut disk, device, node_uuid, image)?;
    }
    let outlook = nodes::reread(&disk, device, sysroot(state));
    wait_for_partitions(state, &mut disk, geometry, device, &outlook);
    let root_uuid = whole_disk_root_uuid(&mut disk).map_err(|e| {
        CommandError::Deployment(format!(
            "reading the disk signature of {}: {e}",
            device.display()
        ))
    })?;
    Ok(PartitionUuids::WholeDisk { root_uuid })
}

/// Waits (bounded) until every partition of the table has its device node, as IPA
/// waits for udev, unless the kernel said it creates none; a missing node is logged,
/// not fatal, for a whole-disk image.
pub fn wait_for_partitions(
    state: &AgentState,
    disk: &mut std::fs::File,
    geometry: Geometry,
    device: &Path,
    outlook: &NodeOutlook,
) {
    let Ok(Some(table)) = read_table(disk, geometry) else {
        return;
    };
    let paths: Vec<_> = table
        .partitions(geometry)
        .iter()
        .map(|p| rooted(state, &partition_path(device, p.number)))
        .collect();
    let missing = await_block_devices(&paths, outlook);
    if *outlook != NodeOutlook::Expected {
        return;
    }
    for i in missing {
        tracing::warn!(partition = %paths[i].display(), "partition device node did not appear");
    }
}
