//! Synchronous hardware work off the async runtime: [`blocking`] runs it on a blocking
//! thread and turns a panic there into a [`TaskFailed`] instead of taking the agent down.

/// A task that panicked or was cancelled (IPA wraps any unexpected exception as
/// `CommandExecutionError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskFailed(pub String);

impl From<TaskFailed> for crate::errors::CommandError {
    fn from(e: TaskFailed) -> Self {
        Self::CommandExecution(e.0)
    }
}

/// Runs synchronous work on a blocking thread.
pub async fn blocking<T, F>(work: F) -> Result<T, TaskFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(join_failure)
}

/// What a task that did not finish normally left, logged once.
pub fn join_failure(err: tokio::task::JoinError) -> TaskFailed {
    let detail = match err.try_into_panic() {
        Ok(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            format!("command panicked: {text}")
        }
        Err(err) => format!("command task ended abnormally: {err}"),
    };
    tracing::error!(%detail, "command task failed");
    TaskFailed(detail)
}
