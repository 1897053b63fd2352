//! Progress of long work (download and write) in the heartbeat's `agent_status_message`,
//! refreshed while the work runs and cleared when it ends, so the operator sees
//! "write_image: 412 of 1024 MiB written" in the node's `driver_internal_info`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::image::progress::Progress;

/// The agent's status message, sent with the next heartbeats.
pub type StatusCell = Arc<Mutex<Option<String>>>;

/// Publishes `progress` as the status message until dropped.
#[derive(Debug)]
pub struct StatusReporter {
    task: tokio::task::JoinHandle<()>,
    status: StatusCell,
}

impl StatusReporter {
    /// Starts publishing `"<what>: <progress summary>"` every `every`.
    pub fn start(status: StatusCell, what: &str, progress: Arc<Progress>, every: Duration) -> Self {
        let what = what.to_owned();
        let st = Arc::clone(&status);
        set(&st, Some(format!("{what}: starting")));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                set(&st, Some(format!("{what}: {}", progress.summary())));
            }
        });
        Self { task, status }
    }
}

impl Drop for StatusReporter {
    fn drop(&mut self) {
        self.task.abort();
        set(&self.status, None);
    }
}

/// Sets the status message sent with the next heartbeats.
pub fn set(status: &StatusCell, message: Option<String>) {
    *status.lock().expect("status message lock poisoned") = message;
}
