//! The `image` extension: `install_bootloader` (protocol spec 2.5; the work is in
//! [`crate::deploy::bootloader`]).

use serde_json::Value;

use crate::commands::registry::{CommandSpec, Context, Extension, Params};
use crate::errors::CommandError;

/// The `image` extension.
pub fn extension() -> Extension {
    Extension::new("image").command(CommandSpec::asynchronous(
        "install_bootloader",
        install_bootloader,
    ))
}

async fn install_bootloader(ctx: Context, params: Params) -> Result<Value, CommandError> {
    crate::deploy::bootloader::install_bootloader(&ctx.state, &params).await
}
