//! The heartbeat loop (spec 4.5, 4.6): first heartbeat at once, then on the schedule of
//! `backoff.rs`; a forced heartbeat (`Session::heartbeat_now`, after each
//! asynchronous command) goes out as soon as the minimum gap allows.
//!
//! Heartbeats never stop on errors; the loop ends only when `stop_serving` turns true.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::backoff::{self, HeartbeatPolicy};
use super::client::{HeartbeatError, IronicClient};
use super::session::Session;
use super::wire::HeartbeatFields;

/// Everything the loop needs; built once after the API server listens.
#[derive(Debug)]
pub struct Heartbeater {
    /// Ironic client.
    pub client: Arc<IronicClient>,
    /// Shared state (token, lookup settings, status message, stop flag).
    pub state: Arc<dyn Session>,
    /// Node to heartbeat for.
    pub node_uuid: String,
    /// `callback_url` sent in every heartbeat.
    pub callback_url: String,
    /// PEM of the auto-TLS certificate, sent as `agent_verify_ca`.
    pub verify_ca: Option<String>,
    /// Schedule.
    pub policy: HeartbeatPolicy,
}

impl Heartbeater {
    /// Sends one heartbeat with the current token and status message.
    pub async fn beat(&self) -> Result<(), HeartbeatError> {
        let token = self
            .state
            .token()
            .read()
            .expect("token lock poisoned")
            .clone();
        let status = self
            .state
            .status_message()
            .lock()
            .expect("status lock poisoned")
            .clone();
        let fields = HeartbeatFields {
            callback_url: &self.callback_url,
            agent_token: token.as_ref().map(|t| t.expose()),
            agent_version: crate::AGENT_VERSION,
            agent_verify_ca: self.verify_ca.as_deref(),
            agent_status_message: status.as_deref(),
        };
        self.client.heartbeat(&self.node_uuid, &fields).await
    }

    /// Runs until `stop_serving` becomes true.
    pub async fn run<R: Rng + Send>(self, mut rng: R) {
        let mut stop = self.state.stop_serving().subscribe();
        let mut last: Option<Instant> = None;
        let mut interval = Duration::ZERO;
        let mut forced = false;
        let mut sent = 0u64;
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            let now = Instant::now();
            let due = last.map_or(now, |t| {
                t + backoff::heartbeat_due(&self.policy, interval, forced)
            });
            if now >= due {
                let was_forced = std::mem::take(&mut forced);
                last = Some(now);
                let started = Instant::now();
                interval = match self.beat().await {
                    Ok(()) => {
                        sent += 1;
                        let timeout = self
                            .state
                            .settings()
                            .lock()
                            .expect("lookup lock poisoned")
                            .heartbeat_timeout;
                        let mut next =
                            backoff::heartbeat_after_success(&self.policy, timeout, &mut rng);
                        if was_forced {
                            next = backoff::interval_after_forced(&self.policy, next);
                        }
                        if sent == 1 {
                            tracing::info!(
                                callback_url = %self.callback_url,
                                elapsed_ms = started.elapsed().as_millis(),
                                "first heartbeat accepted"
                            );
                        }
                        tracing::debug!(next_ms = next.as_millis(), "heartbeat accepted");
                        next
                    }
                    Err(e) => {
                        let next = backoff::heartbeat_after_failure(&self.policy, &mut rng);
                        tracing::warn!(error = %e, retry_in_ms = next.as_millis(), "heartbeat failed");
                        next
                    }
                };
                continue;
            }
            let wake = due.min(now + self.policy.wake_every);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.state.heartbeat_now().notified() => forced = true,
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!("heartbeats stopped");
    }
}
