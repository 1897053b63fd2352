//! The install device: chosen as IPA's `get_os_install_device(permit_refresh=True)` does,
//! from a fresh disk listing (disks may have appeared since the inventory), and opened
//! only through the allow-listed door of [`crate::blockdev::open_for_write`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::blockdev::install_device::{
    get_os_install_device, list_mode_devices, needs_md_arrays, read_md_arrays, InstallDeviceQuery,
};
use crate::blockdev::open_for_write;
use crate::inventory::disks::list_disks;

use super::env::DeployEnv;
use super::error::DeployError;

/// Picks the install device for the cached node; `DeviceNotFound` as IPA words it.
pub fn install_device(env: &DeployEnv) -> Result<PathBuf, DeployError> {
    let root = env.sysroot();
    let allow = env.allowlist();
    let disks = list_disks(root, &allow)
        .map_err(|e| DeployError::BlockDevice(format!("listing block devices: {e}")))?;
    let disks = (env.filter_devices)(disks);
    let devices = list_mode_devices(root, &disks);
    let node = env.node.as_ref();
    let md = match needs_md_arrays(node, &[]) {
        Ok(true) => read_md_arrays(root, true)
            .map_err(|e| DeployError::BlockDevice(format!("listing md arrays: {e}")))?,
        Ok(false) => Vec::new(),
        Err(e) => return Err(DeployError::DeviceNotFound(e.to_string())),
    };
    let query = InstallDeviceQuery {
        node,
        devices: &devices,
        md_arrays: &md,
        raid_volumes: &[],
    };
    match get_os_install_device(&query) {
        Ok(name) => {
            tracing::info!(device = %name, "install device chosen");
            Ok(PathBuf::from(name))
        }
        Err(e) if e.is_device_not_found() => Err(DeployError::DeviceNotFound(e.to_string())),
        Err(e) => Err(DeployError::Execution(e.to_string())),
    }
}

/// Opens `device` for writing through the allow-list; a refusal is a `BlockDeviceError`.
pub fn open_target(env: &DeployEnv, device: &Path) -> Result<File, DeployError> {
    let path = env.rooted(device);
    open_for_write(&path, &env.allowlist()).map_err(|e| {
        DeployError::BlockDevice(format!("refusing to write {}: {e}", device.display()))
    })
}
