//! `image.install_bootloader` (hardware spec 9): UEFI boot entries written natively
//! through efivarfs; GRUB in a chroot of the written root only when allowed.

use std::sync::Arc;

use serde_json::Value;

use crate::agent::AgentState;
use crate::api::error::CommandError;
use crate::commands::registry::Params;

/// Runs `install_bootloader` with the conductor's parameters.
pub async fn install_bootloader(
    _state: &Arc<AgentState>,
    _params: &Params,
) -> Result<Value, CommandError> {
    Err(CommandError::CommandExecution(
        "install_bootloader is not supported by this agent yet".to_owned(),
    ))
}
