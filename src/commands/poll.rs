//! The `poll` extension: `get_hardware_info` returns the inventory snapshot.

use serde_json::Value;

use crate::commands::registry::{CommandSpec, Context, Extension, Params};
use crate::errors::CommandError;

/// The `poll` extension.
pub fn extension() -> Extension {
    Extension::new("poll").command(CommandSpec::sync("get_hardware_info", get_hardware_info))
}

async fn get_hardware_info(ctx: Context, _params: Params) -> Result<Value, CommandError> {
    serde_json::to_value(ctx.state.inventory())
        .map_err(|e| CommandError::CommandExecution(format!("serializing the inventory: {e}")))
}
