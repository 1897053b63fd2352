//! Lookup: find this node in Ironic by its MACs, retrying until `lookup_timeout`
//! (spec 4.2), then apply the answer to the shared state (4.3) with the token rules of
//! 4.4.
//!
//! Every failed attempt (connection error, any HTTP status, unusable body) is logged and
//! retried with the jittered back-off of `backoff.rs`; a 409 adds the conflict pause.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::backoff::{self, LookupPolicy};
use super::client::{ClientError, IronicClient};
use super::session::{LookupSettings, Secret, Session};
use super::wire::{self, LookupAnswer, LookupConfig, WireError};

/// The mask Ironic sends instead of a token that was already handed out.
pub const MASKED_TOKEN: &str = "******";
/// Shortest token IPA accepts from a lookup.
const MIN_TOKEN_LEN: usize = 32;

/// Why one lookup attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// 409: node locked while Ironic generates the token.
    #[error("HTTP 409: {0}")]
    Conflict(String),
    /// Any other non-200 status.
    #[error("HTTP {status}: {text}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Ironic's error text.
        text: String,
    },
    /// 200 with a body that is not a usable answer.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Lookup did not succeed before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no lookup answer after {attempts} attempts in {elapsed:?}; last error: {last}")]
pub struct LookupError {
    /// Attempts made.
    pub attempts: u32,
    /// Time since the first attempt.
    pub elapsed: Duration,
    /// The last attempt's error.
    pub last: String,
}

/// One lookup attempt.
pub async fn lookup_once(
    client: &IronicClient,
    addresses: &[String],
    node_uuid: Option<&str>,
) -> Result<LookupAnswer, AttemptError> {
    let resp = client.lookup_request(addresses, node_uuid).await?;
    match resp.status {
        200 => Ok(wire::parse_lookup(&resp.body)?),
        409 => Err(AttemptError::Conflict(wire::error_text(&resp.body))),
        status => Err(AttemptError::Status {
            status,
            text: wire::error_text(&resp.body),
        }),
    }
}

/// Looks the node up, retrying until `policy.timeout` has passed since the first attempt.
pub async fn lookup<R: Rng + Send + ?Sized>(
    client: &IronicClient,
    addresses: &[String],
    node_uuid: Option<&str>,
    policy: &LookupPolicy,
    rng: &mut R,
) -> Result<LookupAnswer, LookupError> {
    let start = Instant::now();
    let mut attempt = 0u32;
    let mut conflicts = 0u32;
    loop {
        attempt += 1;
        let err = match lookup_once(client, addresses, node_uuid).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let mut wait = backoff::lookup_wait(policy, attempt, rng);
        if matches!(err, AttemptError::Conflict(_)) {
            conflicts += 1;
            wait += backoff::conflict_pause(policy, conflicts);
        } else {
            conflicts = 0;
        }
        let elapsed = start.elapsed();
        if elapsed >= policy.timeout {
            return Err(LookupError {
                attempts: attempt,
                elapsed,
                last: err.to_string(),
            });
        }
        // The last attempt happens at the deadline rather than after it.
        let wait = wait.min(policy.timeout - elapsed);
        tracing::warn!(attempt, error = %err, retry_in_ms = wait.as_millis(), "lookup failed");
        tokio::time::sleep(wait).await;
    }
}

/// What the token field of a lookup answer means for the agent (spec 4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDecision {
    /// Take this token (replaces any earlier one).
    Adopt(String),
    /// Keep what the agent has (null, empty or absent field).
    Keep,
    /// Masked, and the agent has its own token: keep it, with a warning.
    KeepMasked,
    /// Masked and the agent has none: someone else got it; never serve.
    Refuse,
    /// Too short to be a real token: ignored.
    Invalid,
}

/// Applies the table of spec 4.4.
pub fn decide_token(lookup_token: Option<&str>, has_token: bool) -> TokenDecision {
    match lookup_token {
        None | Some("") => TokenDecision::Keep,
        Some(MASKED_TOKEN) if has_token => TokenDecision::KeepMasked,
        Some(MASKED_TOKEN) => TokenDecision::Refuse,
        Some(t) if t.len() >= MIN_TOKEN_LEN => TokenDecision::Adopt(t.to_owned()),
        Some(_) => TokenDecision::Invalid,
    }
}

/// Result of applying a lookup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// Go on: serve and heartbeat.
    Ready,
    /// The token went to another agent: do not serve, do not heartbeat.
    TokenRefused,
}

/// Updates lookup settings with the keys present in `config`; absent keys keep their
/// current value, as in IPA.
pub fn merge_settings(settings: &mut LookupSettings, config: &LookupConfig) {
    if let Some(t) = config.heartbeat_timeout {
        if t.is_finite() && t > 0.0 {
            // Whole seconds are plenty; a fractional timeout rounds up so it never hits 0.
            // t is finite and positive and ceil() is whole; clamped to u64's range, so the
            // cast loses nothing below u64::MAX and saturates there as `as` always did.
            let secs = t.ceil().min(u64::MAX as f64);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let secs = secs as u64;
            settings.heartbeat_timeout = secs;
        }
    }
    if let Some(v) = config.agent_md5_checksum_enable {
        settings.md5_enabled = v;
    }
    if let Some(v) = config.disable_deep_image_inspection {
        settings.disable_deep_image_inspection = v;
    }
    if let Some(v) = &config.permitted_image_formats {
        settings.permitted_image_formats = v.clone();
    }
    if let Some(v) = config.agent_skip_bmc_detect {
        settings.skip_bmc_detect = v;
    }
    if let Some(v) = config.enable_bios_bootloader_install {
        settings.enable_bios_bootloader_install = v;
    }
    if let Some(v) = &config.tls_min_version {
        settings.tls_min_version = Some(v.clone());
    }
}

/// Applies a lookup answer to the state in IPA's order: node, settings, token.
pub fn apply_answer<S: Session + ?Sized>(state: &S, answer: LookupAnswer) -> LookupOutcome {
    if answer.config.heartbeat_timeout.is_none() {
        tracing::warn!("lookup answer has no heartbeat_timeout, keeping the current one");
    }
    *state.node_cell().lock().expect("node lock poisoned") = Some(answer.node);
    merge_settings(
        &mut state.settings().lock().expect("lookup lock poisoned"),
        &answer.config,
    );
    let mut token = state.token().write().expect("token lock poisoned");
    match decide_token(answer.config.agent_token.as_deref(), token.is_some()) {
        TokenDecision::Adopt(t) => {
            *token = Some(Secret::new(t));
            tracing::info!("agent token received from lookup");
        }
        TokenDecision::Keep => {}
        TokenDecision::KeepMasked => tracing::warn!(
            "lookup returned a masked token; keeping the token this agent was started with"
        ),
        TokenDecision::Invalid => {
            tracing::warn!("lookup returned an invalid agent token, ignoring it")
        }
        TokenDecision::Refuse => return LookupOutcome::TokenRefused,
    }
    LookupOutcome::Ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table() {
        let real = "x".repeat(43);
        let short = "x".repeat(31);
        let cases: &[(Option<&str>, bool, TokenDecision)] = &[
            (Some(&real), false, TokenDecision::Adopt(real.clone())),
            (Some(&real), true, TokenDecision::Adopt(real.clone())),
            (
                Some(&"y".repeat(32)),
                false,
                TokenDecision::Adopt("y".repeat(32)),
            ),
            (Some(MASKED_TOKEN), true, TokenDecision::KeepMasked),
            (Some(MASKED_TOKEN), false, TokenDecision::Refuse),
            (Some(&short), false, TokenDecision::Invalid),
            (Some(&short), true, TokenDecision::Invalid),
            (None, false, TokenDecision::Keep),
            (None, true, TokenDecision::Keep),
            (Some(""), false, TokenDecision::Keep),
        ];
        for (lookup, has, want) in cases {
            assert_eq!(&decide_token(*lookup, *has), want, "{lookup:?} {has}");
        }
    }

    #[test]
    fn settings_merge_only_present_keys() {
        let mut s = LookupSettings::default();
        merge_settings(
            &mut s,
            &LookupConfig {
                heartbeat_timeout: Some(30.0),
                agent_md5_checksum_enable: Some(true),
                tls_min_version: Some("1.3".into()),
                permitted_image_formats: Some(vec!["raw".into()]),
                ..LookupConfig::default()
            },
        );
        assert_eq!(s.heartbeat_timeout, 30);
        assert!(s.md5_enabled);
        assert_eq!(s.tls_min_version.as_deref(), Some("1.3"));
        assert_eq!(s.permitted_image_formats, ["raw"]);
        let before = s.clone();
        merge_settings(&mut s, &LookupConfig::default());
        assert_eq!(s, before);
        merge_settings(
            &mut s,
            &LookupConfig {
                heartbeat_timeout: Some(0.5),
                ..LookupConfig::default()
            },
        );
        assert_eq!(s.heartbeat_timeout, 1);
    }
}
