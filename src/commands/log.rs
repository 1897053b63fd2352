//! The `log` extension: `collect_system_logs` (protocol spec 2.7) answers
//! `{"system_logs": base64(tar.gz)}`, which the conductor stores after a failure. The
//! archive itself is built by [`crate::logs`]; files are read under `config.sysroot`, and
//! `ira.log` in it is the agent's own log as the process's [`LogRing`] holds it.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::commands::registry::{blocking, CommandSpec, Context, Extension, Params};
use crate::errors::CommandError;
use crate::logs::ring::LogRing;
use crate::logs::{build_archive, LogLimits};

/// The `log` extension.
pub fn extension() -> Extension {
    Extension::new("log").command(CommandSpec::sync(
        "collect_system_logs",
        collect_system_logs,
    ))
}

async fn collect_system_logs(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    let root = ctx.state.config.sysroot.clone();
    let inventory = serde_json::to_vec_pretty(&ctx.state.inventory())
        .map_err(|e| CommandError::CommandExecution(format!("serializing the inventory: {e}")))?;
    let archive = blocking(move || {
        build_archive(&root, &inventory, LogRing::global(), &LogLimits::default())
    })
    .await?
    .map_err(|e| CommandError::CommandExecution(format!("building the log archive: {e}")))?;
    tracing::info!(bytes = archive.len(), "system logs collected");
    Ok(json!({ "system_logs": base64::engine::general_purpose::STANDARD.encode(archive) }))
}
