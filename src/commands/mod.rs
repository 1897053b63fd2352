//! Command extensions (IPA's "extensions") and the command history.
//!
//! [`Commands::execute`] applies IPA's rules in IPA's order (protocol spec 1.5, 1.8):
//! name form, busy rule, extension, command, validator, then execution. Every command
//! runs on its own task, so a panic becomes a FAILED result (from the `JoinError`) and
//! the agent keeps serving. Synchronous commands hold the command lock until they are
//! recorded; asynchronous ones are recorded RUNNING, release it, and force a heartbeat
//! when they end.
//!
//! Layout: `registry.rs` (extension and command types), `result.rs` (the result object),
//! `history.rs` (the bounded history), `steps.rs` (shared step commands) and one file
//! per extension. To add an extension: a file with `pub fn extension() -> Extension`,
//! listed in [`builtin`].

pub mod clean;
pub mod deploy;
pub mod history;
pub mod host;
pub mod image;
pub mod log;
pub mod poll;
pub mod registry;
pub mod rescue;
pub mod result;
pub mod service;
pub mod standby;
mod steps;
pub mod system;

use std::sync::Arc;

use serde_json::Value;

use crate::errors::CommandError;
use crate::state::AgentState;

pub use history::History;
pub use registry::{CommandSpec, Context, Extension, Params};
pub use result::{CommandResult, CommandStatus, Mode};

/// The built-in extensions.
pub fn builtin() -> Vec<Extension> {
    vec![
        clean::extension(),
        deploy::extension(),
        image::extension(),
        service::extension(),
        standby::extension(),
        system::extension(),
        rescue::extension(),
        log::extension(),
        poll::extension(),
    ]
}

/// The command registry plus the ordered history of results.
#[derive(Debug)]
pub struct Commands {
    /// Shared agent state.
    pub state: Arc<AgentState>,
    extensions: Vec<Extension>,
    history: Arc<History>,
    // The one lock of the busy rule: held from the busy check until a synchronous
    // command is recorded or an asynchronous one is recorded RUNNING. A tokio lock,
    // since synchronous commands await their work while holding it.
    exec_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Commands {
    /// Builds the registry with every built-in extension.
    pub fn new(state: Arc<AgentState>) -> Arc<Self> {
        Self::with_extensions(state, builtin())
    }

    /// Builds the registry with exactly `extensions` (e.g. [`builtin`] plus more).
    pub fn with_extensions(state: Arc<AgentState>, extensions: Vec<Extension>) -> Arc<Self> {
        Arc::new(Self {
            state,
            extensions,
            history: Arc::new(History::default()),
            exec_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The history (for listing and waiting).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Every result, oldest first, as wire objects.
    pub fn list(&self) -> Vec<Value> {
        self.history.list()
    }

    /// One result by id.
    pub fn get(&self, id: &str) -> Result<CommandResult, CommandError> {
        self.history.get(id).ok_or_else(|| not_found(id))
    }

    /// Waits until result `id` is no longer RUNNING.
    pub async fn wait(&self, id: &str) -> Result<CommandResult, CommandError> {
        self.history.wait(id).await.ok_or_else(|| not_found(id))
    }

    /// Runs `name` (`<extension>.<command>`) with `params`. Errors are the ones answered
    /// as HTTP faults; a command that ran and failed is an `Ok` FAILED result.
    pub async fn execute(&self, name: &str, params: Params) -> Result<CommandResult, CommandError> {
        let (ext_name, cmd_name) = name.split_once('.').ok_or_else(|| {
            CommandError::InvalidCommand(
                "Command name must be of the form <extension>.<name>".to_owned(),
            )
        })?;
        let guard = Arc::clone(&self.exec_lock).lock_owned().await;
        if let Some(command) = self.history.running_last() {
            return Err(CommandError::AgentIsBusy { command });
        }
        let extension = self
            .extensions
            .iter()
            .find(|e| e.name() == ext_name)
            .ok_or_else(|| CommandError::RequestedObjectNotFound {
                what: "Extension",
                id: ext_name.to_owned(),
            })?;
        let spec = extension
            .get(cmd_name)
            .ok_or_else(|| CommandError::InvalidCommand(format!("Unknown command: {cmd_name}")))?;
        spec.validate(&self.state, &params)?;

        let id = uuid::Uuid::new_v4().to_string();
        let ctx = Context {
            state: Arc::clone(&self.state),
            id: id.clone(),
            name: spec.name(),
        };
        // Parameters are never logged: node.instance_info carries tenant data.
        tracing::info!(command = %name, %id, "running command");
        let work = tokio::spawn(spec.start(ctx, params));
        let mut result = CommandResult::running(id, spec.name());
        let history = Arc::clone(&self.history);
        match spec.mode() {
            Mode::Sync => {
                // Recorded by a task of its own so a client that hangs up mid-command
                // cannot leave the command unrecorded or the lock held.
                let recorder = tokio::spawn(async move {
                    let outcome = work
                        .await
                        .unwrap_or_else(|e| Err(registry::join_failure(e)));
                    result.finish(Mode::Sync, outcome);
                    log_end(&result);
                    history.push(result.clone());
                    drop(guard);
                    result
                });
                recorder.await.map_err(registry::join_failure)
            }
            Mode::Async => {
                history.push(result.clone());
                drop(guard);
                let state = Arc::clone(&self.state);
                let id = result.id.clone();
                tokio::spawn(async move {
                    let outcome = work
                        .await
                        .unwrap_or_else(|e| Err(registry::join_failure(e)));
                    history.finish(&id, Mode::Async, outcome);
                    if let Some(done) = history.get(&id) {
                        log_end(&done);
                    }
                    state.request_heartbeat();
                });
                Ok(result)
            }
        }
    }
}

fn not_found(id: &str) -> CommandError {
    CommandError::RequestedObjectNotFound {
        what: "Command Result",
        id: id.to_owned(),
    }
}

fn log_end(result: &CommandResult) {
    match &result.command_error {
        None => tracing::info!(command = %result.command_name, id = %result.id,
            status = ?result.command_status, "command finished"),
        Some(err) => tracing::warn!(command = %result.command_name, id = %result.id,
            status = ?result.command_status, error = %err.details, "command finished"),
    }
}
