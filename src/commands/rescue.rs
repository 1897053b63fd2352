//! The `rescue` extension: `finalize_rescue` (protocol spec 2.8). It stores the rescue
//! password's hash and the marker under the system root ([`crate::rescue`]), answers
//! SUCCEEDED with a null result, then the API and heartbeats stop and the agent process
//! ends, leaving the node to the ramdisk's rescue tooling.
//!
//! The answer still leaves: stopping goes through `AgentState::stop_serving`, whose
//! graceful shutdown finishes the request in flight first.

use serde_json::Value;

use crate::commands::registry::{blocking, CommandSpec, Context, Extension, Params};
use crate::errors::CommandError;
use crate::rescue::{self, RescueError};
use crate::state::AgentState;

/// The `rescue` extension.
pub fn extension() -> Extension {
    Extension::new("rescue")
        .command(CommandSpec::sync("finalize_rescue", finalize_rescue).with_validator(validate))
}

/// `rescue_password` (a string) and `hashed` (a bool, default false).
fn params(params: &Params) -> Result<(&str, bool), CommandError> {
    let password = match params.get("rescue_password") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(CommandError::InvalidCommandParams(
                "rescue_password must be a string".to_owned(),
            ))
        }
        None => {
            return Err(CommandError::InvalidCommandParams(
                "rescue_password is required".to_owned(),
            ))
        }
    };
    let hashed = match params.get("hashed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(CommandError::InvalidCommandParams(
                "hashed must be a boolean".to_owned(),
            ))
        }
    };
    Ok((password, hashed))
}

/// Refuses bad parameters (and a `hashed` password that is no crypt hash) before
/// anything is written: 400 `InvalidCommandParamsError`, the agent keeps serving.
fn validate(_state: &AgentState, p: &Params) -> Result<(), CommandError> {
    let (password, hashed) = params(p)?;
    if hashed {
        rescue::password_hash(password, true).map_err(to_command_error)?;
    }
    Ok(())
}

fn to_command_error(err: RescueError) -> CommandError {
    match err {
        RescueError::NotAHash => CommandError::InvalidCommandParams(err.to_string()),
        RescueError::Write { .. } => CommandError::CommandExecution(err.to_string()),
    }
}

async fn finalize_rescue(ctx: Context, p: Params) -> Result<Value, CommandError> {
    let (password, hashed) = params(&p)?;
    let (password, root) = (password.to_owned(), ctx.state.config.root().to_owned());
    // Hashing runs 5000 rounds of SHA-256: off the async threads with the writes.
    blocking(move || {
        let hash = rescue::password_hash(&password, hashed)?;
        rescue::write_files(&root, &hash)
    })
    .await?
    .map_err(to_command_error)?;
    tracing::warn!("rescue finalized: stopping the API and heartbeats; the agent exits");
    ctx.state
        .exit_when_stopped
        .store(true, std::sync::atomic::Ordering::SeqCst);
    ctx.state.stop_serving.send_replace(true);
    Ok(Value::Null)
}
