//! The `standby` extension's power commands (protocol spec 2.9): `sync` (flush
//! filesystems), `power_off` and `run_image` (flush, then power off or reboot).
//!
//! With `--no-power-off` (test set-ups) the power commands only log and succeed, so an
//! agent under test survives the conductor's tear-down.

use nix::sys::reboot::RebootMode;
use serde_json::Value;

use crate::api::error::CommandError;
use crate::commands::registry::{blocking, CommandSpec, Context, Extension, Params};

/// The `standby` extension (power commands; image commands are registered elsewhere).
pub fn extension() -> Extension {
    Extension::new("standby")
        .command(CommandSpec::sync("sync", sync))
        .command(CommandSpec::asynchronous("power_off", power_off))
        .command(CommandSpec::asynchronous("run_image", run_image))
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
