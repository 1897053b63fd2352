//! Schedule maths for lookup retries, heartbeats and the inspection callback.
//!
//! Everything here is a pure function of a policy, an attempt number and an injected
//! random source, so tests pin the RNG with a seed and check exact bounds. The policy
//! structs carry IPA's numbers by default; tests shrink them to milliseconds. The loops
//! that sleep live in `lookup.rs`, `heartbeat.rs` and `inspection.rs`.

use std::time::Duration;

use rand::Rng;

use crate::config::Config;

/// Lookup retry policy (spec 4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct LookupPolicy {
    /// Give up this long after the first attempt (`lookup_timeout`).
    pub timeout: Duration,
    /// Shortest wait between attempts (`lookup_interval`).
    pub interval: Duration,
    /// The exponential ceiling is `unit * 2^(attempt-1)` (IPA: one second).
    pub backoff_unit: Duration,
    /// The ceiling never exceeds this (IPA: 60 s).
    pub backoff_max: Duration,
    /// Extra pauses after successive 409 answers; the last one repeats (IPA: 5, 10, 30).
    pub conflict_pauses: Vec<Duration>,
}

impl Default for LookupPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            interval: Duration::from_secs(1),
            backoff_unit: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            conflict_pauses: [5, 10, 30].map(Duration::from_secs).to_vec(),
        }
    }
}

impl LookupPolicy {
    /// IPA's schedule with the configured timeout and interval.
    pub fn from_config(config: &Config) -> Self {
        Self {
            timeout: config.lookup_timeout,
            interval: config.lookup_interval,
            ..Self::default()
        }
    }
}

/// Uniform duration in `[lo, hi)`; `lo` when the range is empty.
fn uniform<R: Rng + ?Sized>(lo: Duration, hi: Duration, rng: &mut R) -> Duration {
    if hi <= lo {
        return lo;
    }
    lo + (hi - lo).mul_f64(rng.random::<f64>())
}

/// `unit * 2^exp`, saturating.
fn exponential(unit: Duration, exp: u32) -> Duration {
    unit.checked_mul(1u32 << exp.min(31))
        .unwrap_or(Duration::MAX)
}

/// Wait before lookup attempt `attempt + 1` after attempt `attempt` (1-based) failed:
/// full jitter, uniform in `[interval, min(max, unit * 2^(attempt-1))]`, never below
/// `interval`.
///
/// IPA's ceiling equals `interval` on the first retry, so agents that booted together
/// (a rack powered on at once, a conductor restart answering everyone with the same
/// error) would all retry in the same instant. Here the first retries spread over one
/// more interval (at most `backoff_max` more); later ones follow IPA's ceiling.
pub fn lookup_wait<R: Rng + ?Sized>(policy: &LookupPolicy, attempt: u32, rng: &mut R) -> Duration {
    let ceiling =
        exponential(policy.backoff_unit, attempt.saturating_sub(1)).min(policy.backoff_max);
    let spread = policy.interval.min(policy.backoff_max);
    let hi = ceiling.max(policy.interval.saturating_add(spread));
    uniform(policy.interval, hi, rng)
}

/// Extra pause after the `conflicts`-th 409 answer (1-based) in a row: 5, 10, 30, 30...
pub fn conflict_pause(policy: &LookupPolicy, conflicts: u32) -> Duration {
    let idx = usize::try_from(conflicts.saturating_sub(1)).unwrap_or(usize::MAX);
    policy
        .conflict_pauses
        .get(idx)
        .or(policy.conflict_pauses.last())
        .copied()
        .unwrap_or(Duration::ZERO)
}

/// Heartbeat schedule (spec 4.6; IPA's `IronicPythonAgentHeartbeater`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatPolicy {
    /// What one unit of the lookup's `heartbeat_timeout` is (one second in production).
    pub timeout_unit: Duration,
    /// After a success: `heartbeat_timeout * U(lo, hi)` (IPA: 0.3, 0.6).
    pub success_factor: (f64, f64),
    /// After a failure: `error_base * U(lo, hi)` (IPA: 5 s times 1.0..2.0).
    pub error_base: Duration,
    /// Random factor range after a failure.
    pub error_factor: (f64, f64),
    /// A forced heartbeat waits until this much time passed since the previous one.
    pub min_gap: Duration,
    /// After a forced heartbeat, the next one comes at most this late: if the conductor
    /// was busy (node locked) it skipped the forced one and learns of the result here.
    pub after_forced: Duration,
    /// The loop wakes at least this often to check for forced heartbeats and stop.
    pub wake_every: Duration,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        Self {
            timeout_unit: Duration::from_secs(1),
            success_factor: (0.3, 0.6),
            error_base: Duration::from_secs(5),
            error_factor: (1.0, 2.0),
            // IPA waits 5 s; the conductor learns of a finished step only from a
            // heartbeat, so that wait is lost time on every asynchronous step (4.6 s per
            // step in the IPA ramdisk measurements). 1 s is enough for the conductor to
            // release the node lock after the previous heartbeat; `after_forced` covers
            // the case where it did not.
            min_gap: Duration::from_secs(1),
            after_forced: Duration::from_secs(5),
            wake_every: Duration::from_secs(5),
        }
    }
}

/// Interval to the next heartbeat after a successful one.
pub fn heartbeat_after_success<R: Rng + ?Sized>(
    policy: &HeartbeatPolicy,
    heartbeat_timeout: u64,
    rng: &mut R,
) -> Duration {
    let base = policy
        .timeout_unit
        .saturating_mul(u32::try_from(heartbeat_timeout).unwrap_or(u32::MAX));
    let (lo, hi) = policy.success_factor;
    uniform(base.mul_f64(lo), base.mul_f64(hi), rng)
}

/// Interval to the next heartbeat after a failed one (any error, 409 included).
pub fn heartbeat_after_failure<R: Rng + ?Sized>(policy: &HeartbeatPolicy, rng: &mut R) -> Duration {
    let (lo, hi) = policy.error_factor;
    uniform(
        policy.error_base.mul_f64(lo),
        policy.error_base.mul_f64(hi),
        rng,
    )
}

/// The interval after a successful heartbeat that was forced: no later than
/// `after_forced`.
pub fn interval_after_forced(policy: &HeartbeatPolicy, interval: Duration) -> Duration {
    interval.min(policy.after_forced)
}

/// When the next heartbeat is due, counted from the previous one: the planned interval,
/// or sooner (but not before `min_gap`) when a forced heartbeat is pending.
pub fn heartbeat_due(policy: &HeartbeatPolicy, interval: Duration, forced: bool) -> Duration {
    if forced {
        interval.min(policy.min_gap)
    } else {
        interval
    }
}

/// Inspection callback retry policy (spec 4.9; IPA uses tenacity's exponential wait).
#[derive(Debug, Clone, PartialEq)]
pub struct InspectionPolicy {
    /// Attempts in total (IPA: 5).
    pub attempts: u32,
    /// Wait is `multiplier * 2^(attempt-1)` (IPA: 1.5 s) ...
    pub multiplier: Duration,
    /// ... clamped to at least this (IPA: 5 s) ...
    pub min_wait: Duration,
    /// ... and at most this (IPA: 30 s), before the jitter.
    pub max_wait: Duration,
    /// The wait is stretched by a random factor in `[1, 1 + jitter)` (ira: 0.5; IPA
    /// waits the bare exponential, so agents that posted together retry together).
    pub jitter: f64,
}

impl Default for InspectionPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            multiplier: Duration::from_millis(1500),
            min_wait: Duration::from_secs(5),
            max_wait: Duration::from_secs(30),
            jitter: 0.5,
        }
    }
}

/// Wait after failed inspection attempt `attempt` (1-based): tenacity's exponential
/// wait, stretched by the policy's random factor.
pub fn inspection_wait<R: Rng + ?Sized>(
    policy: &InspectionPolicy,
    attempt: u32,
    rng: &mut R,
) -> Duration {
    let base = exponential(policy.multiplier, attempt.saturating_sub(1))
        .max(policy.min_wait)
        .min(policy.max_wait);
    let jitter = if policy.jitter.is_finite() {
        policy.jitter.clamp(0.0, 10.0)
    } else {
        0.0
    };
    uniform(base, base.mul_f64(1.0 + jitter), rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn lookup_wait_grows_then_caps() {
        let p = LookupPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..20 {
            // The first retry spreads over a second interval; then IPA's ceiling.
            let ceiling = Duration::from_secs((1u64 << (attempt - 1)).clamp(2, 60));
            for _ in 0..50 {
                let w = lookup_wait(&p, attempt, &mut rng);
                assert!(w >= p.interval && w <= ceiling, "attempt {attempt}: {w:?}");
            }
        }
        // A large interval is never undercut, and the spread stays within backoff_max.
        let slow = LookupPolicy {
            interval: Duration::from_secs(90),
            ..LookupPolicy::default()
        };
        for attempt in [1, 3, 30] {
            let w = lookup_wait(&slow, attempt, &mut rng);
            assert!(
                w >= Duration::from_secs(90) && w <= Duration::from_secs(150),
                "{w:?}"
            );
        }
        assert!(lookup_wait(&p, u32::MAX, &mut rng) <= Duration::from_secs(60));
        // A zero interval (allowed in config) still spreads nothing below zero.
        let zero = LookupPolicy {
            interval: Duration::ZERO,
            ..LookupPolicy::default()
        };
        assert!(lookup_wait(&zero, 1, &mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn conflict_pauses_repeat_the_last() {
        let p = LookupPolicy::default();
        let got: Vec<u64> = (1..=5).map(|n| conflict_pause(&p, n).as_secs()).collect();
        assert_eq!(got, [5, 10, 30, 30, 30]);
        let none = LookupPolicy {
            conflict_pauses: vec![],
            ..p
        };
        assert_eq!(conflict_pause(&none, 1), Duration::ZERO);
    }

    #[test]
    fn heartbeat_intervals_in_range() {
        let p = HeartbeatPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let ok = heartbeat_after_success(&p, 300, &mut rng);
            assert!(ok >= Duration::from_secs(90) && ok <= Duration::from_secs(180));
            let err = heartbeat_after_failure(&p, &mut rng);
            assert!(err >= Duration::from_secs(5) && err <= Duration::from_secs(10));
        }
    }

    #[test]
    fn forced_heartbeat_respects_min_gap() {
        let p = HeartbeatPolicy::default();
        let long = Duration::from_secs(120);
        assert_eq!(heartbeat_due(&p, long, false), long);
        assert_eq!(heartbeat_due(&p, long, true), Duration::from_secs(1));
        assert_eq!(
            heartbeat_due(&p, Duration::from_millis(500), true),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn after_a_forced_heartbeat_the_next_comes_within_five_seconds() {
        let p = HeartbeatPolicy::default();
        let long = Duration::from_secs(120);
        assert_eq!(interval_after_forced(&p, long), Duration::from_secs(5));
        let short = Duration::from_secs(3);
        assert_eq!(interval_after_forced(&p, short), short);
    }

    #[test]
    fn inspection_waits_like_tenacity_stretched_by_the_jitter() {
        let p = InspectionPolicy::default();
        let bare = [5.0, 5.0, 6.0, 12.0, 24.0, 30.0];
        let mut rng = StdRng::seed_from_u64(3);
        for (attempt, base) in (1..).zip(bare) {
            for _ in 0..50 {
                let w = inspection_wait(&p, attempt, &mut rng).as_secs_f64();
                assert!(w >= base && w <= base * 1.5, "attempt {attempt}: {w}");
            }
        }
        let exact = InspectionPolicy {
            jitter: 0.0,
            ..InspectionPolicy::default()
        };
        let got: Vec<f64> = (1..=6)
            .map(|a| inspection_wait(&exact, a, &mut rng).as_secs_f64())
            .collect();
        assert_eq!(got, bare);
        let silly = InspectionPolicy {
            jitter: f64::NAN,
            ..InspectionPolicy::default()
        };
        assert_eq!(inspection_wait(&silly, 1, &mut rng), Duration::from_secs(5));
    }

    // ---- a fleet of agents against one API: no lockstep ------------------------------
    //
    // 100 simulated agents, each with its own RNG (as each ramdisk seeds its own), run
    // the schedule functions above against an API that is down for a minute. What the
    // conductor sees is the histogram of request instants.

    const AGENTS: u64 = 100;

    /// The busiest bucket of `width` seconds among `times`.
    fn busiest(times: &[f64], width: f64) -> usize {
        let mut counts = std::collections::HashMap::new();
        for t in times {
            // Bucket index of a small positive time; the cast cannot overflow here.
            #[allow(clippy::cast_possible_truncation)]
            let bucket = (t / width).floor() as i64;
            *counts.entry(bucket).or_insert(0usize) += 1;
        }
        counts.values().copied().max().unwrap_or(0)
    }

    fn span(times: &[f64]) -> f64 {
        let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        hi - lo
    }

    #[test]
    fn lookups_of_agents_booted_together_spread_after_an_outage() {
        let p = LookupPolicy::default();
        let down_until = 60.0;
        let mut first_retries = Vec::new();
        let mut comeback = Vec::new();
        for agent in 0..AGENTS {
            let mut rng = StdRng::seed_from_u64(agent);
            // Every agent booted at t = 0 and found the API down.
            let mut t = 0.0;
            let mut attempt = 1;
            loop {
                t += lookup_wait(&p, attempt, &mut rng).as_secs_f64();
                attempt += 1;
                if attempt == 2 {
                    first_retries.push(t);
                }
                if t >= down_until {
                    comeback.push(t);
                    break;
                }
            }
        }
        // The first retries fill [1 s, 2 s]: no 100 ms holds a quarter of the fleet
        // (IPA's schedule puts all 100 at exactly 1 s).
        assert!(first_retries.iter().all(|t| (1.0..=2.0).contains(t)));
        assert!(span(&first_retries) > 0.8, "{first_retries:?}");
        assert!(busiest(&first_retries, 0.1) <= 25, "{first_retries:?}");
        // After the API is back, every agent is in within the 60 s ceiling, and no
        // second brings more than a tenth of the fleet.
        assert!(comeback.iter().all(|t| *t <= down_until + 60.0));
        assert!(busiest(&comeback, 1.0) <= 10, "{comeback:?}");
        assert!(span(&comeback) > 20.0, "{comeback:?}");
    }

    #[test]
    fn heartbeats_of_a_fleet_spread_after_an_outage() {
        let p = HeartbeatPolicy::default();
        let timeout = 30; // [api]ramdisk_heartbeat_timeout of the test conductors
        let (down_from, down_until) = (100.0, 160.0);
        let mut during = Vec::new();
        let mut after = Vec::new();
        let mut first_ok = Vec::new();
        for agent in 0..AGENTS {
            let mut rng = StdRng::seed_from_u64(1000 + agent);
            // Agents looked up at random instants over the first minute.
            let mut t = 60.0 * rng.random::<f64>();
            let mut back = false;
            while t < down_until + 60.0 {
                if (down_from..down_until).contains(&t) {
                    during.push(t);
                    t += heartbeat_after_failure(&p, &mut rng).as_secs_f64();
                } else {
                    if t >= down_until {
                        after.push(t);
                        if !std::mem::replace(&mut back, true) {
                            first_ok.push(t);
                        }
                    }
                    t += heartbeat_after_success(&p, timeout, &mut rng).as_secs_f64();
                }
            }
            assert!(back, "agent {agent} never heartbeat after the outage");
        }
        // While the API is down each agent retries every 5-10 s: about 13-20 a second
        // for the fleet, never a wall.
        assert!(busiest(&during, 1.0) <= 30, "{during:?}");
        // The fleet is back within the longest error wait (10 s) or the longest
        // regular interval that started before the outage; the busiest second holds a
        // fraction of it.
        assert!(
            first_ok.iter().all(|t| *t <= down_until + 18.0),
            "{first_ok:?}"
        );
        assert!(busiest(&first_ok, 1.0) <= 25, "{first_ok:?}");
        assert!(span(&first_ok) > 4.0, "{first_ok:?}");
        assert!(busiest(&after, 1.0) <= 30, "{after:?}");
    }

    #[test]
    fn inspection_retries_of_agents_posting_together_spread() {
        let p = InspectionPolicy::default();
        let mut second = Vec::new();
        let mut fifth = Vec::new();
        for agent in 0..AGENTS {
            let mut rng = StdRng::seed_from_u64(2000 + agent);
            let mut t = 0.0;
            for attempt in 1..5 {
                t += inspection_wait(&p, attempt, &mut rng).as_secs_f64();
                if attempt == 1 {
                    second.push(t);
                }
            }
            fifth.push(t);
        }
        assert!(second.iter().all(|t| (5.0..=7.5).contains(t)));
        assert!(busiest(&second, 0.1) <= 25, "{second:?}");
        assert!(span(&second) > 2.0, "{second:?}");
        assert!(busiest(&fifth, 1.0) <= 25, "{fifth:?}");
    }
}
