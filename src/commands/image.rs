//! The `image` extension: `install_bootloader` (protocol spec 2.5; the work is in
//! [`crate::deploy::bootloader`]).

use std::sync::Arc;

use serde_json::Value;

use crate::commands::registry::{CommandSpec, Context, Extension, Params};
use crate::deploy::bootloader::{self, Request};
use crate::errors::CommandError;
use crate::state::AgentState;

/// The `image` extension.
pub fn extension() -> Extension {
    Extension::new("image").command(CommandSpec::asynchronous(
        "install_bootloader",
        |ctx: Context, params: Params| async move { install_bootloader(&ctx.state, &params).await },
    ))
}

/// Runs `install_bootloader` with the conductor's parameters.
pub async fn install_bootloader(
    state: &Arc<AgentState>,
    params: &Params,
) -> Result<Value, CommandError> {
    let request = bootloader_request(
        params,
        state.config.ignore_bootloader_failure.unwrap_or(false),
    )?;
    bootloader::install_bootloader(&state.deploy_env(), request).await?;
    Ok(Value::Null)
}

/// Reads the parameters; `ignore_bootloader_failure` null or absent falls back to
/// `default_ignore` (the agent option).
pub fn bootloader_request(params: &Params, default_ignore: bool) -> Result<Request, CommandError> {
    let text = |key: &str| -> Result<Option<String>, CommandError> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CommandError::InvalidCommandParams(format!(
                "{key} must be a string or null, got {other}"
            ))),
        }
    };
    let ignore_failure = match params.get("ignore_bootloader_failure") {
        None | Some(Value::Null) => default_ignore,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(CommandError::InvalidCommandParams(format!(
                "ignore_bootloader_failure must be a boolean or null, got {other}"
            )))
        }
    };
    Ok(Request {
        root_uuid: text("root_uuid")?.filter(|u| u != "0x00000000"),
        efi_system_part_uuid: text("efi_system_part_uuid")?,
        prep_boot_part_uuid: text("prep_boot_part_uuid")?,
        target_boot_mode: text("target_boot_mode")?.unwrap_or_else(|| "bios".to_owned()),
        ignore_failure,
    })
}
