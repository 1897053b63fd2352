//! `erase_devices` (spec 5.3): every disk of 5.1 erased by the first hardware manager
//! that claims it, up to `disk_erasure_concurrency` disks at once.
//!
//! Order of work:
//! 1. the disks of 5.1 ([`super::devices::disks`], listing order); none: `{}`;
//! 2. every disk is checked before any is submitted: a device-mapper holder or a
//!    guarded shared-disk filesystem on the disk or one of its partitions (5.2; IPA
//!    looks at the disk entry only, where partition types never show) aborts the step
//!    with nothing written;
//! 3. `host.erase_block_device` per disk (IPA's `dispatch_to_managers`), at most
//!    `disk_erasure_concurrency` at a time, each reporting progress; one status line
//!    for all disks goes to the heartbeat every [`STATUS_EVERY`] and on every change;
//! 4. all disks finish (a failure does not stop the others); the result is
//!    `{device: report}`, skipped devices included with their reason. Any failure
//!    fails the step (`BlockDeviceEraseError`) naming every failed disk and its reason,
//!    and what became of the others.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use ira_hw::{AgentHost, BlockDevice, EraseProgress};

use super::devices::{disks, partitions, Candidate};
use super::metadata::{guard_enabled, refuse_protected};
use super::policy::ErasePolicy;
use super::{probe, EraseError, EraseScope};

/// Least time between two progress-only status lines.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Prefix of the status line.
const STEP: &str = "erase_devices";

/// Runs the step for `node` within `scope`, erasing through `host`.
pub fn erase_devices(
    scope: &EraseScope,
    node: &Value,
    host: &dyn AgentHost,
) -> Result<Value, EraseError> {
    let policy = ErasePolicy::from_node(node).map_err(EraseError::Policy)?;
    let list = disks(scope, node)?;
    if list.is_empty() {
        tracing::info!("no disks to erase");
        return Ok(Value::Object(Map::new()));
    }
    let guard = guard_enabled(scope, node);
    for (disk, _) in &list {
        check_disk(scope, guard, disk)?;
    }
    let workers = policy.concurrency.min(list.len());
    tracing::info!(disks = list.len(), workers, "erasing disks");
    let board = Board::new(&list, host);
    let queue = Mutex::new(list.iter().enumerate());
    let results: Mutex<Vec<Option<Result<Value, String>>>> =
        Mutex::new((0..list.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                let Some((index, (_, device))) = next else {
                    break;
                };
                board.set(index, State::Running(Instant::now(), 0.0, String::new()));
                let progress = |p: &EraseProgress| board.progress(index, p);
                let outcome = host
                    .erase_block_device(node, device, &progress)
                    .map_err(|e| e.to_string());
                board.set(
                    index,
                    match &outcome {
                        Ok(v) if v.get("skipped").is_some_and(|s| !s.is_null()) => State::Skipped,
                        Ok(_) => State::Done,
                        Err(_) => State::Failed,
                    },
                );
                match &outcome {
                    Ok(report) => log_report(&device.name, report),
                    Err(e) => tracing::error!(device = %device.name, error = %e, "erase failed"),
                }
                if let Ok(mut r) = results.lock() {
                    r[index] = Some(outcome);
                }
            });
        }
    });
    host.set_status(None);
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Map::new();
    let mut failed = Vec::new();
    let mut others = Vec::new();
    for ((disk, _), outcome) in list.iter().zip(results) {
        match outcome {
            Some(Ok(report)) => {
                others.push((disk.name.clone(), describe(&report)));
                out.insert(disk.name.clone(), report);
            }
            Some(Err(e)) => failed.push((disk.name.clone(), e)),
            // A worker that died leaves its disk without an answer.
            None => failed.push((disk.name.clone(), "the erase worker failed".to_owned())),
        }
    }
    if failed.is_empty() {
        tracing::info!(disks = out.len(), "erase_devices finished");
        Ok(Value::Object(out))
    } else {
        Err(EraseError::Disks { failed, others })
    }
}

/// Step 2 of the module documentation for one disk.
fn check_disk(scope: &EraseScope, guard: bool, disk: &Candidate) -> Result<(), EraseError> {
    let probe_err = |what: &str, e: std::io::Error| EraseError::Probe {
        device: disk.name.clone(),
        reason: format!("{what}: {e}"),
    };
    // md holders make a RAID member, which erase_block_device skips; dm ones (LVM,
    // dm-crypt) would keep the data reachable while it is overwritten.
    let holders: Vec<String> = probe::holders(scope, disk)
        .map_err(|e| probe_err("reading holders", e))?
        .into_iter()
        .filter(|h| !h.starts_with("md"))
        .collect();
    if !holders.is_empty() {
        return Err(EraseError::Held {
            device: disk.name.clone(),
            holders: holders.join(","),
        });
    }
    if !guard {
        return Ok(());
    }
    let parts = partitions(&scope.sysroot, &disk.kname)?;
    for dev in std::iter::once(disk).chain(&parts) {
        refuse_protected(scope, dev)?;
    }
    Ok(())
}

/// One INFO line per disk with its report, so the agent's log (and the log archive
/// the conductor stores) shows what became of every disk, not only the failures.
fn log_report(device: &str, report: &Value) {
    let text = |key: &str| report.get(key).and_then(Value::as_str).unwrap_or("-");
    let number = |key: &str| report.get(key).and_then(Value::as_u64).unwrap_or(0);
    let seconds = report.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let fallback = report.get("fallback").and_then(Value::as_str);
    match report.get("skipped").and_then(Value::as_str) {
        Some(reason) => tracing::info!(
            device,
            serial = text("serial"),
            skipped = reason,
            "disk erase report"
        ),
        None => tracing::info!(
            device,
            serial = text("serial"),
            method = text("method"),
            bytes = number("bytes"),
            seconds = format_args!("{seconds:.2}"),
            verified_samples = number("verified_samples"),
            fallback,
            "disk erase report"
        ),
    }
}

/// A report in a few words, for the failure message's list of the other disks.
fn describe(report: &Value) -> String {
    if let Some(reason) = report.get("skipped").and_then(Value::as_str) {
        return format!("skipped ({reason})");
    }
    match report.get("method").and_then(Value::as_str) {
        Some(method) => {
            let samples = report
                .get("verified_samples")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            format!("erased by {method}, {samples} samples verified")
        }
        None => "erased".to_owned(),
    }
}

/// Where one disk is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not started.
    Queued,
    /// Running since, share done, detail.
    Running(Instant, f64, String),
    /// Erased.
    Done,
    /// Left alone.
    Skipped,
    /// Failed.
    Failed,
}

/// The status line of all disks at `now`: `erase_devices: sda 45% pass 1/2 ETA 3m; sdb
/// done`.
pub fn status_line(disks: &[(String, State)], now: Instant) -> String {
    let parts: Vec<String> = disks
        .iter()
        .map(|(name, state)| match state {
            State::Queued => format!("{name} queued"),
            State::Done => format!("{name} done"),
            State::Skipped => format!("{name} skipped"),
            State::Failed => format!("{name} failed"),
            State::Running(since, fraction, detail) => {
                let mut s = format!("{name} {:.0}%", (fraction * 100.0).floor());
                if !detail.is_empty() {
                    s.push(' ');
                    s.push_str(detail);
                }
                if *fraction >= 0.01 {
                    let elapsed = now.saturating_duration_since(*since).as_secs_f64();
                    s.push_str(" ETA ");
                    s.push_str(&eta(elapsed / fraction * (1.0 - fraction)));
                }
                s
            }
        })
        .collect();
    format!("{STEP}: {}", parts.join("; "))
}

/// `seconds` as `42s`, `3m` or `2h05m`.
fn eta(seconds: f64) -> String {
    let s = seconds.max(0.0).round();
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", (s / 60.0).round())
    } else {
        let h = (s / 3600.0).floor();
        format!("{h:.0}h{:02.0}m", ((s - h * 3600.0) / 60.0).floor())
    }
}

/// Each disk's kernel name and state, and when the last line was sent.
type BoardState = (Vec<(String, State)>, Option<Instant>);

/// The disks' states and the throttled status line.
struct Board<'a> {
    host: &'a dyn AgentHost,
    inner: Mutex<BoardState>,
}

impl<'a> Board<'a> {
    fn new(list: &[(Candidate, BlockDevice)], host: &'a dyn AgentHost) -> Self {
        let disks = list
            .iter()
            .map(|(c, _)| (c.kname.clone(), State::Queued))
            .collect();
        Self {
            host,
            inner: Mutex::new((disks, None)),
        }
    }

    /// A change of state: always shown.
    fn set(&self, index: usize, state: State) {
        self.update(index, true, |s| *s = state);
    }

    /// Progress: shown when the last line is older than [`STATUS_EVERY`].
    fn progress(&self, index: usize, p: &EraseProgress) {
        self.update(index, false, |s| {
            if let State::Running(_, fraction, detail) = s {
                *fraction = p.fraction.clamp(0.0, 1.0);
                detail.clone_from(&p.detail);
            }
        });
    }

    fn update(&self, index: usize, force: bool, f: impl FnOnce(&mut State)) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (disks, last) = &mut *inner;
        if let Some((_, state)) = disks.get_mut(index) {
            f(state);
        }
        let now = Instant::now();
        if force || last.is_none_or(|t| now.duration_since(t) >= STATUS_EVERY) {
            *last = Some(now);
            let line = status_line(disks, now);
            tracing::info!(status = %line, "erase progress");
            self.host.set_status(Some(&line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_line_summarises_every_disk() {
        let now = Instant::now();
        let started = now - Duration::from_secs(90);
        let disks = vec![
            (
                "sda".to_owned(),
                State::Running(started, 0.45, "pass 1/2".to_owned()),
            ),
            ("sdb".to_owned(), State::Done),
            (
                "sdc".to_owned(),
                State::Running(now, 0.0, "ATA security erase".to_owned()),
            ),
            ("sdd".to_owned(), State::Queued),
            ("sde".to_owned(), State::Skipped),
            ("sdf".to_owned(), State::Failed),
        ];
        assert_eq!(
            status_line(&disks, now),
            "erase_devices: sda 45% pass 1/2 ETA 2m; sdb done; sdc 0% ATA security erase; \
             sdd queued; sde skipped; sdf failed"
        );
    }

    #[test]
    fn eta_units() {
        assert_eq!(eta(0.4), "0s");
        assert_eq!(eta(42.0), "42s");
        assert_eq!(eta(179.0), "3m");
        assert_eq!(eta(2.0 * 3600.0 + 5.0 * 60.0 + 20.0), "2h05m");
        assert_eq!(eta(-3.0), "0s");
    }

    #[test]
    fn reports_are_described_for_the_failure_message() {
        assert_eq!(
            describe(&json!({"method": "overwrite", "verified_samples": 64})),
            "erased by overwrite, 64 samples verified"
        );
        assert_eq!(
            describe(&json!({"method": "none", "skipped": "read-only device"})),
            "skipped (read-only device)"
        );
        assert_eq!(describe(&json!(null)), "erased");
    }
}
