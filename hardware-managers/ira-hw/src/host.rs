//! What the agent offers to steps besides their arguments: the image writer, the
//! install device as the agent chooses it and its guarded write handle, what the agent
//! does after a whole-disk write, the instance's root filesystem, the heartbeat status
//! line, the per-device erase dispatch and the device write door. IPA's managers reach
//! the standby extension and `dispatch_to_managers` through globals; here the agent
//! hands itself to each call.
//!
//! A custom installer step (one that replaces `write_image`) uses them in this order:
//! [`AgentHost::open_install_device`] (or [`AgentHost::install_device`] when an external
//! tool writes by path), writes, then [`AgentHost::image_written`], so that
//! `get_partition_uuids` and `install_bootloader` follow as after the agent's own write.

use std::fs::File;
use std::path::Path;

use serde_json::Value;

use crate::inventory::BlockDevice;
use crate::manager::{HwError, HwResult};

/// Where one device's erase is, reported by `erase_block_device` as it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct EraseProgress {
    /// Share of the work done, 0.0 to 1.0.
    pub fraction: f64,
    /// What is running, e.g. `pass 1/2` or `ata security erase`.
    pub detail: String,
}

/// The progress sink of one device's erase.
pub type EraseProgressFn<'a> = &'a (dyn Fn(&EraseProgress) + Sync);

/// The install device opened for writing by [`AgentHost::open_install_device`].
#[derive(Debug)]
pub struct InstallDevice {
    /// The device as `get_os_install_device` names it, e.g. `/dev/vda`.
    pub path: String,
    /// Read-write handle, opened after the allow-list and running-system checks.
    pub file: File,
}

/// The agent services a step may use; passed in [`crate::StepCall::host`].
pub trait AgentHost: Send + Sync + std::fmt::Debug {
    /// Writes an image exactly as `standby.prepare_image` does (install device, download,
    /// verification, config drive) and returns its result string.
    fn prepare_image(&self, image_info: &Value, configdrive: Option<&Value>) -> HwResult<Value>;

    /// Mounts the root filesystem of the instance written to the install device (or the
    /// partition named by `partition`: a device path, filesystem UUID, PARTUUID or
    /// label), runs `f` with the mount point, and unmounts it again, even when `f` fails.
    fn with_instance_root(
        &self,
        partition: Option<&str>,
        f: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()>;

    /// Sets (or, with `None`, clears) the status message sent with the next heartbeats.
    fn set_status(&self, message: Option<&str>);

    /// IPA's `dispatch_to_managers('erase_block_device', node, device)`: erases one
    /// device by the first manager (in support order) that claims it, reporting progress
    /// to `progress`, and returns that manager's report. May run on several threads at
    /// once. The default has no managers to ask.
    fn erase_block_device(
        &self,
        _node: &Value,
        device: &BlockDevice,
        _progress: EraseProgressFn<'_>,
    ) -> HwResult<Value> {
        Err(HwError::Failed(format!(
            "no hardware managers to erase {} in this context",
            device.name
        )))
    }

    /// Opens `device` (`/dev/...`) read-write after the agent's allow-list and
    /// running-system checks: the only way a manager may get a writable device. The
    /// default permits nothing.
    fn open_block_device(&self, device: &str) -> HwResult<File> {
        Err(HwError::Failed(format!(
            "no device access in this context: {device} not opened"
        )))
    }

    /// The install device exactly as `standby.get_os_install_device` chooses it for the
    /// node (its root device hints, the skip list, else the smallest disk of at least
    /// 4 GiB), from a fresh disk listing; e.g. `/dev/vda`. No hint matching:
    /// a `DeviceNotFound` service error. The default has no disks.
    fn install_device(&self) -> HwResult<String> {
        Err(HwError::Failed(
            "no install device in this context".to_owned(),
        ))
    }

    /// [`Self::install_device`] opened read-write through [`Self::open_block_device`]
    /// (allow-list and running-system checks): the guarded handle a custom installer
    /// writes its image through.
    fn open_install_device(&self) -> HwResult<InstallDevice> {
        let path = self.install_device()?;
        let file = self.open_block_device(&path)?;
        Ok(InstallDevice { path, file })
    }

    /// Tells the agent that the step wrote a whole-disk image to `device`, and does what
    /// the agent does after its own whole-disk write: re-reads the partition table,
    /// moves the backup GPT to the disk's end, validates the table as IPA does, waits
    /// for the partition nodes and records the identifiers, so `get_partition_uuids`
    /// and `install_bootloader` follow as after `write_image`. Returns what
    /// `get_partition_uuids` now reports (`{"root uuid": "0x..."}`). The default
    /// records nothing.
    fn image_written(&self, device: &str) -> HwResult<Value> {
        Err(HwError::Failed(format!(
            "no image records in this context: {device} not checked"
        )))
    }
}

/// A host without services: every service fails. For tests and listings.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

impl AgentHost for NoHost {
    fn prepare_image(&self, _image_info: &Value, _configdrive: Option<&Value>) -> HwResult<Value> {
        Err(HwError::Failed(
            "no image writer in this context".to_owned(),
        ))
    }

    fn with_instance_root(
        &self,
        _partition: Option<&str>,
        _f: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()> {
        Err(HwError::Failed(
            "no instance root in this context".to_owned(),
        ))
    }

    fn set_status(&self, _message: Option<&str>) {}
}
