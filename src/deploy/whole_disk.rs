//! A whole-disk image onto the install device (hardware spec 8.3-8.5): streamed through
//! the pipeline (verified, first MiB held back), then the kernel re-reads the table, the
//! backup GPT moves to the disk's end, the table is validated, the config drive is
//! placed, and the MBR disk signature becomes `root uuid`.

use std::path::Path;

use crate::blockdev::nodes::{self, await_block_devices, NodeOutlook};
use crate::image::ImageInfo;
use crate::partition::configdrive::ConfigDriveImage;
use crate::partition::fixup::{fix_gpt_partition, validate_partitioning, whole_disk_root_uuid};
use crate::partition::table::read_table;
use crate::partition::{partition_path, Geometry};
use crate::sys::block;
use crate::task::blocking;

use super::env::DeployEnv;
use super::error::DeployError;
use super::stream::stream;
use super::target::open_target;
use super::PartitionUuids;

/// Streams `info` onto `device` and finishes the disk; returns what
/// `get_partition_uuids` will report.
pub async fn write(
    env: &DeployEnv,
    device: &Path,
    info: &ImageInfo,
    configdrive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    let report = stream(env, device, info).await?;
    tracing::info!(image = %info.id, device = %device.display(),
        bytes = report.image_size, seconds = report.elapsed.as_secs_f64(),
        "image written and verified");
    let env = env.clone();
    let dev = device.to_path_buf();
    let node_uuid = info.node_uuid.clone().unwrap_or_else(|| "local".to_owned());
    blocking(move || finish(&env, &dev, &node_uuid, configdrive.as_ref())).await?
}

/// The post-write work for an image this process already wrote (cache hit): config
/// drive and identifiers only.
pub fn finish_cached(
    env: &DeployEnv,
    device: &Path,
    node_uuid: &str,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    finish(env, device, node_uuid, configdrive)
}

/// The post-write work for a whole-disk image a step wrote itself (a custom installer):
/// re-read, backup GPT, validation, partition nodes and the identifiers; no config drive
/// (the installer places its own).
pub fn finish_external(
    env: &DeployEnv,
    device: &Path,
    node_uuid: &str,
) -> Result<PartitionUuids, DeployError> {
    finish(env, device, node_uuid, None)
}

/// The post-write work on the whole disk (runs on a blocking thread).
fn finish(
    env: &DeployEnv,
    device: &Path,
    node_uuid: &str,
    configdrive: Option<&ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    let mut disk = open_target(env, device)?;
    let geometry = Geometry::of_file(&disk)
        .map_err(|e| DeployError::Disk(format!("{}: {e}", device.display())))?;
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
        .map_err(|e| DeployError::Disk(e.to_string()))?;
    if let Some(image) = configdrive {
        super::configdrive::place(&mut disk, device, node_uuid, image)?;
    }
    let outlook = nodes::reread(&disk, device, env.sysroot());
    wait_for_partitions(env, &mut disk, geometry, device, &outlook);
    let root_uuid = whole_disk_root_uuid(&mut disk).map_err(|e| {
        DeployError::Disk(format!(
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
    env: &DeployEnv,
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
        .map(|p| env.rooted(&partition_path(device, p.number)))
        .collect();
    let missing = await_block_devices(&paths, outlook);
    if *outlook != NodeOutlook::Expected {
        return;
    }
    for i in missing {
        tracing::warn!(partition = %paths[i].display(), "partition device node did not appear");
    }
}
