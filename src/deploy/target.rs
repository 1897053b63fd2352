//! The install device: chosen as IPA's `get_os_install_device(permit_refresh=True)` does,
//! from a fresh disk listing (disks may have appeared since the inventory), and opened
//! only through the allow-listed door of [`crate::blockdev::open_for_write`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::agent::AgentState;
use crate::blockdev::install_device::{
    get_os_install_device, list_mode_devices, needs_md_arrays, read_md_arrays, InstallDeviceQuery,
};
use crate::blockdev::{open_for_write, AllowList};
use crate::errors::CommandError;
use crate::inventory::disks::list_disks;

/// The configured device allow-list (empty: every device but the running system's).
pub fn allowlist(state: &AgentState) -> AllowList {
    AllowList::new(state.config.device_allowlist.clone())
}

/// The filesystem root the agent reads sysfs, udev data and `/dev` under.
pub fn sysroot(state: &AgentState) -> &Path {
    let root = state.config.sysroot.as_path();
    if root.as_os_str().is_empty() {
        Path::new("/")
    } else {
        root
    }
}

/// Picks the install device for the cached node; `DeviceNotFound` as IPA words it.
pub fn install_device(state: &AgentState) -> Result<PathBuf, CommandError> {
    let root = sysroot(state);
    let allow = allowlist(state);
    let disks = list_disks(root, &allow)
        .map_err(|e| CommandError::BlockDevice(format!("listing block devices: {e}")))?;
    let disks = state.managers.filter_devices(disks);
    let devices = list_mode_devices(root, &disks);
    let node = state.node();
    let md = match needs_md_arrays(node.as_ref(), &[]) {
        Ok(true) => read_md_arrays(root, true)
            .map_err(|e| CommandError::BlockDevice(format!("listing md arrays: {e}")))?,
        Ok(false) => Vec::new(),
        Err(e) => return Err(CommandError::DeviceNotFound(e.to_string())),
    };
    let query = InstallDeviceQuery {
        node: node.as_ref(),
        devices: &devices,
        md_arrays: &md,
        raid_volumes: &[],
    };
    match get_os_install_device(&query) {
        Ok(name) => {
            tracing::info!(device = %name, "install device chosen");
            Ok(PathBuf::from(name))
        }
        Err(e) if e.is_device_not_found() => Err(CommandError::DeviceNotFound(e.to_string())),
        Err(e) => Err(CommandError::CommandExecution(e.to_string())),
    }
}

/// Opens `device` for writing through the allow-list; a refusal is a `BlockDeviceError`.
pub fn open_target(state: &AgentState, device: &Path) -> Result<File, CommandError> {
    let path = rooted(state, device);
    open_for_write(&path, &allowlist(state)).map_err(|e| {
        CommandError::BlockDevice(format!("refusing to write {}: {e}", device.display()))
    })
}

/// `device` (a `/dev/...` name) under the agent's sysroot, as the process must open it.
pub fn rooted(state: &AgentState, device: &Path) -> PathBuf {
    let root = sysroot(state);
    if root == Path::new("/") {
        device.to_path_buf()
    } else {
        root.join(device.strip_prefix("/").unwrap_or(device))
    }
}
