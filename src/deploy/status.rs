//! Progress of long work (download and write) in the heartbeat's `agent_status_message`,
//! refreshed while the work runs and cleared when it ends, so the operator sees
//! "write_image: 412 of 1024 MiB written" in the node's `driver_internal_info`.

use std::sync::Arc;
use std::time::Duration;

use crate::image::pipeline::Progress;
use crate::state::AgentState;

/// Publishes `progress` as the status message until dropped.
#[derive(Debug)]
pub struct StatusReporter {
    task: tokio::task::JoinHandle<()>,
    state: Arc<AgentState>,
}

impl StatusReporter {
    /// Starts publishing `"<what>: <progress summary>"` every `every`.
    pub fn start(
        state: Arc<AgentState>,
        what: &str,
        progress: Arc<Progress>,
        every: Duration,
    ) -> Self {
        let what = what.to_owned();
        let st = Arc::clone(&state);
        set(&st, Some(format!("{what}: starting")));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                set(&st, Some(format!("{what}: {}", progress.summary())));
            }
        });
        Self { task, state }
    }
}

impl Drop for StatusReporter {
    fn drop(&mut self) {
        self.task.abort();
        set(&self.state, None);
    }
}

/// Sets the status message sent with the next heartbeats.
pub fn set(state: &AgentState, message: Option<String>) {
    *state
        .status_message
        .lock()
        .expect("status message lock poisoned") = message;
}
