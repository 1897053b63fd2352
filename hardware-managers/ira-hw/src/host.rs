//! What the agent offers to steps besides their arguments: the image writer, the
//! instance's root filesystem and the heartbeat status line. IPA's managers reach the
//! standby extension through a global; here the agent hands itself to each call.

use std::path::Path;

use serde_json::Value;

use crate::manager::{HwError, HwResult};

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
