//! The agent's services for steps ([`AgentHost`]): a step runs on a blocking thread, so
//! async services are driven with the runtime handle captured when the step started.
//!
//! A service that fails returns its IPA class with the error ([`HwError::Service`]); a
//! manager that passes it on makes the step command report that class
//! (`ImageChecksumError`, `InvalidImage`, ...), as IPA re-raises a failed
//! `prepare_image` from `write_image`.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::deploy::{instance_root, prepare, target, DeployEnv};
use crate::errors::CommandError;
use crate::state::AgentState;
use ira_hw::{AgentHost, HwError, HwResult};

/// [`AgentHost`] backed by the running agent.
#[derive(Debug, Clone)]
pub struct Host {
    env: DeployEnv,
    runtime: Handle,
}

impl Host {
    /// A host for steps started on `runtime`, with the agent's state as it is now.
    pub fn new(state: Arc<AgentState>, runtime: Handle) -> Self {
        Self {
            env: state.deploy_env(),
            runtime,
        }
    }
}

/// A command error as a step error that keeps its class and text.
pub fn step_error(e: CommandError) -> HwError {
    match e {
        CommandError::InvalidCommandParams(m) => HwError::InvalidParams(m),
        other => HwError::Service {
            class: other.ipa_type(),
            details: other.details(),
        },
    }
}

impl AgentHost for Host {
    fn prepare_image(&self, image_info: &Value, configdrive: Option<&Value>) -> HwResult<Value> {
        let info = super::standby::image_info(image_info, self.env.settings.md5_enabled)
            .map_err(step_error)?;
        let drive =
            super::standby::configdrive_text(image_info, configdrive).map_err(step_error)?;
        let msg = self
            .runtime
            .block_on(prepare::prepare_image(&self.env, &info, drive.as_deref()))
            .map_err(|e| step_error(e.into()))?;
        Ok(json!({ "result": format!("prepare_image: {msg}") }))
    }

    fn with_instance_root(
        &self,
        partition: Option<&str>,
        f: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()> {
        instance_root::with_instance_root(&self.env, partition, f)
    }

    fn set_status(&self, message: Option<&str>) {
        self.env.set_status(message.map(str::to_owned));
    }

    fn open_block_device(&self, device: &str) -> HwResult<std::fs::File> {
        let allow = crate::blockdev::AllowList::new(self.env.config.device_allowlist.clone());
        let path = self.env.rooted(Path::new(device));
        crate::blockdev::open_for_write_at(self.env.sysroot(), &path, &allow).map_err(|e| {
            HwError::Service {
                class: "BlockDeviceError",
                details: e.to_string(),
            }
        })
    }

    fn install_device(&self) -> HwResult<String> {
        target::install_device(&self.env)
            .map(|p| p.display().to_string())
            .map_err(|e| step_error(e.into()))
    }

    fn image_written(&self, device: &str) -> HwResult<Value> {
        prepare::adopt_written_image(&self.env, Path::new(device))
            .map(|uuids| uuids.to_json())
            .map_err(|e| step_error(e.into()))
    }
}
