//! `standby.prepare_image` and `standby.cache_image` (protocol spec 2.1/2.3, hardware
//! spec 8): decode the config drive before anything is written (bad input leaves the
//! disk untouched), pick the install device, write the whole-disk or partition image
//! unless this process already wrote the same image id there, and remember what
//! `get_partition_uuids` reports. The command parses and validates `image_info`.

use std::path::Path;

use crate::image::ImageInfo;
use crate::partition::configdrive::ConfigDriveImage;
use crate::task::blocking;

use super::env::DeployEnv;
use super::error::DeployError;
use super::stream::source_options;
use super::target::install_device;
use super::{PartitionUuids, Written};

/// `standby.prepare_image`: returns IPA's message (`image (<id>) written to device
/// <dev> root_uuid=<uuid>`, plus ` efi_system_partition_uuid=<uuid>` when one was made).
/// `configdrive` is the config drive's text (gzip+base64 content or a URL), if any.
pub async fn prepare_image(
    env: &DeployEnv,
    info: &ImageInfo,
    configdrive: Option<&str>,
) -> Result<String, DeployError> {
    let node_uuid = info.node_uuid.clone().unwrap_or_else(|| "local".to_owned());
    let drive = match configdrive {
        Some(text) => {
            let source = source_options(env)?;
            Some(super::configdrive::fetch(text, &node_uuid, &source).await?)
        }
        None => None,
    };
    let device = chosen_device(env).await?;
    let uuids = match env.cache.written() {
        Some(w) if w.holds(&info.id, &device) && !info.is_partition_image() => {
            tracing::info!(image = %info.id, device = %device.display(),
                "image already written to this device by this agent; not downloading it again");
            refresh_whole_disk(env, &device, &node_uuid, drive).await?
        }
        Some(w) if w.holds(&info.id, &device) => w.uuids,
        _ => {
            env.cache.forget();
            write(env, &device, info, drive).await?
        }
    };
    env.cache.record(Written {
        image_id: info.id.clone(),
        device: device.clone(),
        uuids: uuids.clone(),
    });
    let mut msg = format!(
        "image ({}) written to device {} root_uuid={}",
        info.id,
        device.display(),
        uuids.root_uuid()
    );
    if let Some(esp) = uuids.efi_system_partition_uuid() {
        msg.push_str(&format!(" efi_system_partition_uuid={esp}"));
    }
    tracing::info!("{msg}");
    Ok(msg)
}

/// `standby.cache_image`: writes the image to the install device unless it is already
/// there (or `force`), so a later `prepare_image` of the same id downloads nothing.
pub async fn cache_image(
    env: &DeployEnv,
    info: &ImageInfo,
    force: bool,
) -> Result<String, DeployError> {
    let device = chosen_device(env).await?;
    let cached = env
        .cache
        .written()
        .is_some_and(|w| w.holds(&info.id, &device));
    if force || !cached {
        env.cache.forget();
        let uuids = write(env, &device, info, None).await?;
        env.cache.record(Written {
            image_id: info.id.clone(),
            device: device.clone(),
            uuids,
        });
    } else {
        tracing::info!(image = %info.id, "image already cached on the install device");
    }
    Ok(format!(
        "image ({}) cached to device {}",
        info.id,
        device.display()
    ))
}

/// After a step wrote a whole-disk image to `device` itself (a custom installer): the
/// agent's own post-write work (`whole_disk::finish_external`) and the record
/// `get_partition_uuids` and `install_bootloader` read. Runs on a blocking thread.
pub fn adopt_written_image(env: &DeployEnv, device: &Path) -> Result<PartitionUuids, DeployError> {
    // Until the disk checks out, it holds nothing this agent vouches for.
    env.cache.forget();
    let node_uuid = env
        .node
        .as_ref()
        .and_then(|n| n.get("uuid"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("local");
    let uuids = super::whole_disk::finish_external(env, device, node_uuid)?;
    tracing::info!(device = %device.display(), root_uuid = uuids.root_uuid(),
        "image written by a step recorded");
    env.cache.record(Written {
        image_id: Default::default(),
        device: device.to_path_buf(),
        uuids: uuids.clone(),
    });
    Ok(uuids)
}

async fn chosen_device(env: &DeployEnv) -> Result<std::path::PathBuf, DeployError> {
    let env = env.clone();
    blocking(move || install_device(&env)).await?
}

async fn write(
    env: &DeployEnv,
    device: &Path,
    info: &ImageInfo,
    drive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    if info.is_partition_image() {
        super::partition_image::write(env, device, info, drive).await
    } else {
        super::whole_disk::write(env, device, info, drive).await
    }
}

async fn refresh_whole_disk(
    env: &DeployEnv,
    device: &Path,
    node_uuid: &str,
    drive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, DeployError> {
    let env = env.clone();
    let dev = device.to_path_buf();
    let node = node_uuid.to_owned();
    blocking(move || super::whole_disk::finish_cached(&env, &dev, &node, drive.as_ref())).await?
}
