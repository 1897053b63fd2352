//! The command result object (protocol spec 1.6): exactly `id`, `command_name`,
//! `command_status`, `command_error` and `command_result`, and how a command's outcome
//! becomes one.

use serde::Serialize;
use serde_json::{json, Value};

use crate::errors::{CommandError, IpaError};

/// Whether a command runs inside the request or in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs inside the HTTP request; stored already finished.
    Sync,
    /// Answers RUNNING at once and finishes in the background.
    Async,
}

/// `command_status` values (IPA: `AgentCommandStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    /// An asynchronous command still executing.
    Running,
    /// Finished without error.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// A step command found other hardware-manager versions than the conductor's.
    /// IPA sends this old spelling for every step family.
    CleanVersionMismatch,
}

/// One entry of the command history, serialized with exactly the five wire keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandResult {
    /// Random UUID4 assigned on acceptance.
    pub id: String,
    /// Bare command name (`execute_clean_step`, not `clean.execute_clean_step`).
    pub command_name: String,
    /// Current status.
    pub command_status: CommandStatus,
    /// Error object, null unless FAILED or a version mismatch.
    pub command_error: Option<IpaError>,
    /// Command-specific result, null while RUNNING and on failure.
    pub command_result: Value,
}

impl CommandResult {
    /// A freshly accepted asynchronous command.
    pub fn running(id: String, command_name: &str) -> Self {
        Self {
            id,
            command_name: command_name.to_owned(),
            command_status: CommandStatus::Running,
            command_error: None,
            command_result: Value::Null,
        }
    }

    /// True while the command has not finished.
    pub fn is_running(&self) -> bool {
        self.command_status == CommandStatus::Running
    }

    /// Records how the command ended. A plain string result is wrapped as IPA does:
    /// `{"result": s}` for synchronous commands, `{"result": "<name>: s"}` for
    /// asynchronous ones.
    pub fn finish(&mut self, mode: Mode, outcome: Result<Value, CommandError>) {
        match outcome {
            Ok(Value::String(text)) => {
                let text = match mode {
                    Mode::Sync => text,
                    Mode::Async => format!("{}: {text}", self.command_name),
                };
                self.succeed(json!({ "result": text }));
            }
            Ok(value) => self.succeed(value),
            Err(err) => {
                self.command_status = if err.is_version_mismatch() {
                    CommandStatus::CleanVersionMismatch
                } else {
                    CommandStatus::Failed
                };
                self.command_error = Some(err.to_ipa());
                self.command_result = Value::Null;
            }
        }
    }

    fn succeed(&mut self, value: Value) {
        self.command_status = CommandStatus::Succeeded;
        self.command_error = None;
        self.command_result = value;
    }

    /// The wire object.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a command result always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> CommandResult {
        CommandResult::running("id-1".into(), "prepare_image")
    }

    #[test]
    fn running_object_has_exactly_five_keys() {
        assert_eq!(
            fresh().to_json(),
            json!({"id": "id-1", "command_name": "prepare_image", "command_status": "RUNNING",
                   "command_error": null, "command_result": null})
        );
    }

    #[test]
    fn strings_are_wrapped_by_mode() {
        let mut sync = fresh();
        sync.finish(Mode::Sync, Ok(json!("done")));
        assert_eq!(sync.command_result, json!({"result": "done"}));
        let mut asynchronous = fresh();
        asynchronous.finish(Mode::Async, Ok(json!("done")));
        assert_eq!(
            asynchronous.command_result,
            json!({"result": "prepare_image: done"})
        );
        assert_eq!(asynchronous.command_status, CommandStatus::Succeeded);
    }

    #[test]
    fn errors_set_status_and_object() {
        let mut failed = fresh();
        failed.finish(Mode::Async, Err(CommandError::CommandExecution("x".into())));
        let obj = failed.to_json();
        assert_eq!(obj["command_status"], "FAILED");
        assert_eq!(obj["command_error"]["type"], "CommandExecutionError");
        assert_eq!(obj["command_result"], Value::Null);

        let mut mismatch = fresh();
        mismatch.finish(
            Mode::Async,
            Err(CommandError::VersionMismatch {
                details: "Current versions: {}".into(),
            }),
        );
        assert_eq!(
            mismatch.to_json()["command_status"],
            "CLEAN_VERSION_MISMATCH"
        );
        assert_eq!(mismatch.to_json()["command_error"]["code"], 409);
    }
}
