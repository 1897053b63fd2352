//! Extensions and their commands: names, mode, validator and handler.
//!
//! An [`Extension`] is IPA's extension (`standby`, `clean`, ...): a name plus its
//! commands. A [`CommandSpec`] says whether the command is synchronous or asynchronous,
//! how to validate its parameters before anything runs (bad parameters get an immediate
//! 400, IPA's `async_command(name, validator)`), and the handler. Handlers are async
//! functions; hardware work inside them goes through [`blocking`].
//!
//! To add a command: write `async fn name(ctx: Context, params: Params) -> Result<Value,
//! CommandError>` in the extension's file and register it there with
//! `CommandSpec::sync` or `CommandSpec::asynchronous`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::commands::result::Mode;
use crate::errors::CommandError;
use crate::state::AgentState;

/// A command's keyword arguments (the `params` object of the request).
pub type Params = Map<String, Value>;

/// The boxed future a handler returns.
pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, CommandError>> + Send>>;

/// A parameter validator; its error is answered as 400 before the command runs.
pub type Validator = fn(&AgentState, &Params) -> Result<(), CommandError>;

type Handler = Arc<dyn Fn(Context, Params) -> CommandFuture + Send + Sync>;

/// What a running command gets besides its parameters.
#[derive(Debug, Clone)]
pub struct Context {
    /// Shared agent state.
    pub state: Arc<AgentState>,
    /// The command's result id.
    pub id: String,
    /// Bare command name.
    pub name: &'static str,
}

/// One command of an extension.
#[derive(Clone)]
pub struct CommandSpec {
    name: &'static str,
    mode: Mode,
    validator: Option<Validator>,
    handler: Handler,
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    fn new<F, Fut>(name: &'static str, mode: Mode, handler: F) -> Self
    where
        F: Fn(Context, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CommandError>> + Send + 'static,
    {
        Self {
            name,
            mode,
            validator: None,
            handler: Arc::new(move |ctx, params| Box::pin(handler(ctx, params))),
        }
    }

    /// A synchronous command: it runs inside the request and is stored finished.
    pub fn sync<F, Fut>(name: &'static str, handler: F) -> Self
    where
        F: Fn(Context, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CommandError>> + Send + 'static,
    {
        Self::new(name, Mode::Sync, handler)
    }

    /// An asynchronous command: answered RUNNING, finished in the background.
    pub fn asynchronous<F, Fut>(name: &'static str, handler: F) -> Self
    where
        F: Fn(Context, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CommandError>> + Send + 'static,
    {
        Self::new(name, Mode::Async, handler)
    }

    /// Adds a parameter validator, run before the command is accepted.
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    /// Bare command name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Synchronous or asynchronous.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Runs the validator, if any.
    pub fn validate(&self, state: &AgentState, params: &Params) -> Result<(), CommandError> {
        self.validator.map_or(Ok(()), |v| v(state, params))
    }

    /// Starts the handler.
    pub fn start(&self, ctx: Context, params: Params) -> CommandFuture {
        (self.handler)(ctx, params)
    }
}

/// A named group of commands (IPA's extension).
#[derive(Debug, Clone)]
pub struct Extension {
    name: &'static str,
    commands: Vec<CommandSpec>,
}

impl Extension {
    /// An extension without commands yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            commands: Vec::new(),
        }
    }

    /// Adds a command.
    pub fn command(mut self, spec: CommandSpec) -> Self {
        self.commands.push(spec);
        self
    }

    /// The extension name (the part of the command name before the dot).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A command by bare name.
    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.commands.iter().find(|c| c.name == name)
    }
}

/// Runs synchronous hardware work on a blocking thread; a panic there becomes a
/// `CommandExecutionError` instead of taking the agent down.
pub async fn blocking<T, F>(work: F) -> Result<T, CommandError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Ok(crate::task::blocking(work).await?)
}

/// The error recorded for a command whose task panicked or was cancelled.
pub fn join_failure(err: tokio::task::JoinError) -> CommandError {
    crate::task::join_failure(err).into()
}

/// `params[key]` as an object-or-null value (absent = null), for `node`.
pub fn param_value(params: &Params, key: &str) -> Value {
    params.get(key).cloned().unwrap_or(Value::Null)
}

/// `params[key]` as a list (absent, null or not a list = empty), for `ports`.
pub fn param_list(params: &Params, key: &str) -> Vec<Value> {
    match params.get(key) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}
