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
use crate::image::ImageInfo;
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
    image_info(info, state.lookup_settings().md5_enabled).map(|_| ())
}

/// Parses and validates `image_info` as IPA does (400 `InvalidCommandParamsError`).
pub fn image_info(image_info: &Value, md5_enabled: bool) -> Result<ImageInfo, CommandError> {
    ImageInfo::from_value(image_info, md5_enabled).map_err(|e| match e.to_command_error("") {
        CommandError::InvalidCommandParams(m) => CommandError::InvalidCommandParams(m),
        other => CommandError::InvalidCommandParams(other.to_string()),
    })
}

/// The config drive argument (or, when absent, the copy the conductor also puts in
/// `image_info`): a non-empty string, or nothing.
pub fn configdrive_text(
    image_info: &Value,
    configdrive: Option<&Value>,
) -> Result<Option<String>, CommandError> {
    let configdrive = match configdrive {
        None | Some(Value::Null) => image_info.get("configdrive"),
        given => given,
    };
    match configdrive {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CommandError::InvalidCommandParams(
            "configdrive must be a string (gzip+base64 content or a URL)".to_owned(),
        )),
    }
}

async fn prepare_image(ctx: Context, params: Params) -> Result<Value, CommandError> {
    let raw = param_value(&params, "image_info");
    let env = ctx.state.deploy_env();
    let info = image_info(&raw, env.settings.md5_enabled)?;
    let drive = configdrive_text(&raw, params.get("configdrive"))?;
    let msg = deploy::prepare::prepare_image(&env, &info, drive.as_deref()).await?;
    Ok(Value::String(msg))
}

async fn cache_image(ctx: Context, params: Params) -> Result<Value, CommandError> {
    let raw = param_value(&params, "image_info");
    let force = params
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let env = ctx.state.deploy_env();
    let info = image_info(&raw, env.settings.md5_enabled)?;
    let msg = deploy::prepare::cache_image(&env, &info, force).await?;
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
    // IPA's standby._sync_clock: the instance starts from a clock set just now.
    let ntp = ctx.state.config.ntp_server.clone();
    let failed = blocking(move || {
        crate::clock::sync_ignoring_errors(ntp.as_deref(), &crate::clock::SystemClock);
        tracing::info!("{what} requested: flushing filesystems");
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
