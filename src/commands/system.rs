//! The `system` extension: `lockdown` (protocol spec 2.9). It answers SUCCEEDED, then
//! the API and heartbeats stop and the network links go down; the process idles.
//!
//! Stopping goes through `AgentState::stop_serving`: the server shuts down gracefully,
//! which lets the in-flight lockdown response finish before the connection closes.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::commands::registry::{CommandSpec, Context, Extension, Params};
use crate::errors::CommandError;

/// Time given to the lockdown answer to leave before the links go down.
const LINK_DOWN_DELAY: Duration = Duration::from_secs(2);

/// The `system` extension.
pub fn extension() -> Extension {
    Extension::new("system").command(CommandSpec::sync("lockdown", lockdown))
}

async fn lockdown(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    tracing::warn!("lockdown requested: stopping the API and heartbeats");
    ctx.state.stop_serving.send_replace(true);
    if ctx.state.config.no_power_off {
        tracing::info!("lockdown (--no-power-off): network links left up");
    } else {
        tokio::spawn(async {
            tokio::time::sleep(LINK_DOWN_DELAY).await;
            if let Err(err) = tokio::task::spawn_blocking(|| links_down(Path::new("/"))).await {
                tracing::error!(%err, "taking links down failed");
            }
        });
    }
    Ok(Value::Null)
}

/// Takes every interface except loopback down with `ip link set`.
fn links_down(root: &Path) {
    let entries = match std::fs::read_dir(root.join("sys/class/net")) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::error!(%err, "listing network interfaces for lockdown");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let status = std::process::Command::new("ip")
            .args(["link", "set", "dev", &name, "down"])
            .status();
        match status {
            Ok(s) if s.success() => tracing::info!(interface = %name, "link down"),
            Ok(s) => tracing::warn!(interface = %name, %s, "ip link set down failed"),
            Err(err) => tracing::warn!(interface = %name, %err, "running ip failed"),
        }
    }
}
