//! The `standby` extension: the image commands (`prepare_image`, `cache_image`,
//! `get_partition_uuids`; the work is in [`crate::deploy`]) and the power commands
//! (protocol spec 2.9): `sync` (flush filesystems), `power_off` and `run_image` (flush,
//! then power off or reboot).
//!
//! With `--no-power-off` (test set-ups) the power commands only log and succeed, so an
//! agent under test survives the conductor's tear-down.

use nix::sys::reboot::RebootMode;
use serde_json::Value;

use crate::commands::registry::{blocking, param_value, CommandSpec, Context, Extension, Params};
use crate::deploy;
use crate::errors::CommandError;
use crate::state::AgentState;

/// The `standby` extension.
pub fn extension() -> Extension {
    Extension::new("standby")
        .command(
            CommandSpec::asynchronous("prepare_image", prepare_image)
                .with_validator(validate_image_info),
        )
        .command(
            CommandSpec::asynchronous("cache_image", cache_image)
                .with_validator(validate_image_info),
        )
        .command(CommandSpec::sync(
            "get_partition_uuids",
            get_partition_uuids,
        ))
        .command(CommandSpec::sync("sync", sync))
        .command(CommandSpec::asynchronous("power_off", power_off))
        .command(CommandSpec::asynchronous("run_image", run_image))
}

/// `image_info` must be a valid image description before the command starts (400
/// `InvalidCommandParamsError`, as IPA validates synchronously, md5 rules included).
fn validate_image_info(state: &AgentState, params: &Params) -> Result<(), CommandError> {
    let info = params
        .get("image_info")
        .ok_or_else(|| CommandError::InvalidCommandParams("image_info is required".to_owned()))?;
    deploy::prepare::parse_image_info(state, info).map(|_| ())
}

async fn prepare_image(ctx: Context, params: Params) -> Result<Value, CommandError> {
    let info = param_value(&params, "image_info");
    let msg = deploy::prepare::prepare_image(&ctx.state, &info, params.get("configdrive")).await?;
    Ok(Value::String(msg))
}

async fn cache_image(ctx: Context, params: Params) -> Result<Value, CommandError> {
    let info = param_value(&params, "image_info");
    let force = params
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let msg = deploy::prepare::cache_image(&ctx.state, &info, force).await?;
    Ok(Value::String(msg))
}

async fn get_partition_uuids(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    Ok(ctx
        .state
        .deploy
        .written()
        .map(|w| w.uuids.to_json())
        .unwrap_or_else(|| Value::Object(serde_json::Map::new())))
}

async fn sync(_ctx: Context, _params: Params) -> Result<Value, CommandError> {
    blocking(nix::unistd::sync).await?;
    Ok(Value::Null)
}

async fn power_off(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    power(ctx, RebootMode::RB_POWER_OFF).await
}

async fn run_image(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    power(ctx, RebootMode::RB_AUTOBOOT).await
}

async fn power(ctx: Context, mode: RebootMode) -> Result<Value, CommandError> {
    let (what, skipped) = if mode == RebootMode::RB_POWER_OFF {
        ("power off", "not powering off")
    } else {
        ("reboot", "not rebooting")
    };
    if ctx.state.config.no_power_off {
        tracing::info!("{what} requested (--no-power-off): {skipped}");
        return Ok(Value::Null);
    }
    tracing::info!("{what} requested: flushing filesystems");
    let failed = blocking(move || {
        nix::unistd::sync();
        // Only returns on failure.
        nix::sys::reboot::reboot(mode).map(|never| match never {})
    })
    .await?;
    match failed {
        Ok(()) => Ok(Value::Null),
        Err(errno) => Err(CommandError::SystemReboot(format!(
            "{what} failed: {}",
            errno.desc()
        ))),
    }
}
