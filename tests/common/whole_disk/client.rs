//! The agent under test, served on 127.0.0.1, and the conductor's calls to it over a
//! real socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::{NODE_UUID, TOKEN};
use crate::common::agent::{self, Served};
use crate::common::fixtures::inventory;
use crate::common::loopdev::LoopDev;
use ira::api::ServerLimits;
use ira::commands::Commands;
use ira::config::Config;
use ira::ironic::Secret;
use ira::state::AgentState;

/// The agent API on 127.0.0.1 over a real socket.
pub struct Agent {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The state the agent runs over.
    pub state: Arc<AgentState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// A client without proxies.
    pub client: reqwest::Client,
}

/// Starts an agent whose device allow-list is exactly `allow`.
pub async fn start(allow: &[&LoopDev]) -> Agent {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config {
        sysroot: PathBuf::from("/"),
        image_download_connection_timeout: Duration::from_secs(5),
        image_download_connection_retries: 1,
        image_download_connection_retry_interval: Duration::from_millis(10),
        ..agent::allowlist_config(allow.iter().map(|d| d.path_str().to_owned()).collect())
    };
    let state = agent::state(config, inventory("deploy-test", "uefi"));
    *state.token.write().unwrap() = Some(Secret::new(TOKEN));
    let cmds = Commands::new(state.clone());
    let limits = ServerLimits {
        shutdown_grace: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let Served { addr, stop, task } = agent::serve(state.clone(), cmds, None, limits).await;
    Agent {
        base: format!("http://{addr}"),
        state,
        stop,
        task,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

/// The node the conductor sends, with `dev` as its root device hint.
pub fn node(dev: &Path) -> Value {
    json!({
        "uuid": NODE_UUID,
        "properties": {"root_device": {"name": dev.display().to_string()}, "cpu_arch": "x86_64"},
        "instance_info": {},
        "driver_info": {},
        "driver_internal_info": {},
    })
}

/// The `write_image` deploy step with `image_info` and `configdrive` as arguments.
pub fn write_image_step(image_info: Value, configdrive: Value) -> Value {
    json!({"interface": "deploy", "step": "write_image",
           "args": {"image_info": image_info, "configdrive": configdrive}})
}

impl Agent {
    /// POST `/v1/commands/`; returns the status and the body.
    pub async fn run(&self, name: &str, params: Value, wait: bool) -> (u16, Value) {
        let resp = self
            .client
            .post(format!(
                "{}/v1/commands/?wait={wait}&agent_token={TOKEN}",
                self.base
            ))
            .header("Content-Type", "application/json")
            .body(json!({"name": name, "params": params}).to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Runs a command to completion and returns its result object.
    pub async fn finish(&self, name: &str, params: Value) -> Value {
        let (status, r) = self.run(name, params, true).await;
        assert_eq!(status, 200, "{name}: {r}");
        assert_ne!(r["command_status"], "RUNNING", "{r}");
        r
    }

    /// The result of a command started earlier.
    pub async fn command(&self, id: &str) -> Value {
        let resp = self
            .client
            .get(format!(
                "{}/v1/commands/{id}?agent_token={TOKEN}",
                self.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    /// The HTTP status of `GET /v1/status`.
    pub async fn status_code(&self) -> u16 {
        self.client
            .get(format!("{}/v1/status", self.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `deploy.get_deploy_steps` for `node` (caches it, as the conductor's first call
    /// does) and returns the manager versions to send back.
    pub async fn deploy_steps(&self, node: &Value) -> Value {
        let r = self
            .finish(
                "deploy.get_deploy_steps",
                json!({"node": node, "ports": []}),
            )
            .await;
        assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
        let listed = r["command_result"]["deploy_steps"]["GenericHardwareManager"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "write_image")
            .cloned()
            .expect("write_image is listed");
        assert_eq!(listed["priority"], 0);
        assert_eq!(listed["interface"], "deploy");
        r["command_result"]["hardware_manager_version"].clone()
    }

    /// The conductor's `write_image`: list the steps, then execute the step.
    pub async fn write_image(&self, dev: &Path, image_info: Value, configdrive: Value) -> Value {
        let node = node(dev);
        let versions = self.deploy_steps(&node).await;
        let step = write_image_step(image_info, configdrive);
        let r = self
            .finish(
                "deploy.execute_deploy_step",
                json!({"step": step, "node": node, "ports": [], "deploy_version": versions}),
            )
            .await;
        assert_eq!(r["command_name"], "execute_deploy_step");
        if r["command_status"] == "SUCCEEDED" {
            assert_eq!(r["command_result"]["deploy_step"], step, "echoed verbatim");
        }
        r
    }

    /// The result of `standby.get_partition_uuids`, which must succeed.
    pub async fn partition_uuids(&self) -> Value {
        let r = self.finish("standby.get_partition_uuids", json!({})).await;
        assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
        r["command_result"].clone()
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------- checks
