//! What the agent offers to steps besides their arguments: the image writer, the
//! instance's root filesystem, the heartbeat status line, the per-device erase
//! dispatch and the device write door. IPA's managers reach the standby extension and
//! `dispatch_to_managers` through globals; here the agent hands itself to each call.

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
