//! Runs one manager executable, bounded in time and output: its own process group,
//! stdin written and stdout/stderr read by threads (so no pipe ever blocks the child),
//! `PROGRESS` lines and stderr lines handed to the caller as they come, and at the time
//! limit (or when the agent stops) SIGTERM to the group, SIGKILL after a grace period.
//!
//! Whatever the step leaves running in its group is killed when it exits: nothing of a
//! step outlives it. The exit is seen without reaping the child first (`waitid` with
//! `WNOWAIT`), so the group id cannot have been reused when the group is signalled.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Result text (stdout without `PROGRESS` lines) beyond this fails the run.
pub const STDOUT_CAP: usize = 1 << 20;
/// Stderr beyond this fails the run.
pub const STDERR_CAP: u64 = 64 << 20;
/// Stderr logged per run; the rest is read and dropped.
pub const STDERR_LOG_CAP: usize = 1 << 20;
/// Longest stderr or progress line passed on; the rest of the line is cut.
pub const LINE_CAP: usize = 4 << 10;
/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How often the runner looks at the child and the clock.
const TICK: Duration = Duration::from_millis(20);
/// How long the readers may take after the group is gone: a process that left the
/// group (setsid) may hold the pipes; the run does not wait for it.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
const PROGRESS_PREFIX: &[u8] = b"PROGRESS ";

/// One run: `<program> <verb>` with `env` (plus `PATH`), `stdin`, and its limits.
#[derive(Debug)]
pub struct RunSpec<'a> {
    /// The executable.
    pub program: &'a Path,
    /// `describe` or `step`.
    pub verb: &'a str,
    /// Variables besides `PATH`; nothing else of the agent's environment is passed.
    pub env: Vec<(String, String)>,
    /// Written to stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Time limit from start to exit.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL ([`KILL_GRACE`] in the agent).
    pub kill_grace: Duration,
    /// Raised when the agent stops: the run is ended like a timeout.
    pub abort: Option<&'a AtomicBool>,
    /// Where the run is listed while its process group exists.
    pub running: Option<&'a Running>,
}

/// The process groups of runs in progress, so that the agent, when it stops, can wait
/// until their runners have ended them instead of leaving them orphaned.
#[derive(Debug, Default)]
pub struct Running {
    groups: Mutex<BTreeSet<i32>>,
}

impl Running {
    /// Runs in progress.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.groups.lock().expect("running groups lock poisoned")
    }

    /// Waits until no run is left, up to `limit` (their runners end them once the abort
    /// flag is up), then SIGKILLs the groups still listed. Returns how many were left.
    pub fn wait_idle(&self, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        while self.count() > 0 && Instant::now() < until {
            std::thread::sleep(TICK);
        }
        let left: Vec<i32> = self.lock().iter().copied().collect();
        for pgid in &left {
            signal_group(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
        left.len()
    }
}

/// A run's entry in [`Running`], removed when the group is gone (or the run fails).
struct Listed<'a> {
    running: Option<&'a Running>,
    pgid: i32,
}

impl Listed<'_> {
    fn release(&self) {
        if let Some(r) = self.running {
            r.lock().remove(&self.pgid);
        }
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What the caller hears while the run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `PROGRESS <text>` line's text.
    Progress(String),
    /// A stderr line (cut at [`LINE_CAP`]).
    Stderr(String),
    /// Stderr passed [`STDERR_LOG_CAP`]; nothing more of it is passed on.
    StderrDropped,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal (not by the runner).
    Signaled(i32),
    /// Killed at its time limit.
    TimedOut,
    /// Killed for printing too much.
    OutputTooLarge(Stream),
    /// Killed because the agent stops.
    Stopped,
}

/// The end and output of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// Stdout without `PROGRESS` lines (lossy UTF-8), empty after an overflow.
    pub stdout: String,
    /// The last non-empty stderr line, cut at [`LINE_CAP`].
    pub last_stderr: Option<String>,
}

/// Why a run could not start or be watched.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The executable did not start.
    #[error("cannot run {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the child failed.
    #[error("waiting for {path}: {source}")]
    Wait {
        /// The executable.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Messages from the pipe threads to the runner.
enum Msg {
    Event(Event),
    Overflow(Stream),
    StdoutDone(Vec<u8>),
    StderrDone(Option<String>),
}

/// Runs `spec`, calling `on_event` on the caller's thread for each event.
pub fn run(spec: &RunSpec<'_>, on_event: &mut dyn FnMut(Event)) -> Result<Outcome, RunError> {
    let path = spec.program.to_path_buf();
    let mut cmd = Command::new(spec.program);
    cmd.arg(spec.verb)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = spawn(&mut cmd).map_err(|source| RunError::Spawn {
        path: path.clone(),
        source,
    })?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
    if let Some(r) = spec.running {
        r.lock().insert(pgid.as_raw());
    }
    let listed = Listed {
        running: spec.running,
        pgid: pgid.as_raw(),
    };
    let (tx, rx) = mpsc::sync_channel::<Msg>(256);
    start_pipes(&mut child, spec.stdin.clone(), &tx);
    drop(tx);

    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut killed: Option<End> = None;
    let mut term_at: Option<Instant> = None;
    let mut kill_sent = false;
    let mut exited: Option<(End, Instant)> = None;
    let mut stdout: Option<Vec<u8>> = None;
    let mut last_stderr: Option<Option<String>> = None;
    let mut pipes_open = true;
    loop {
        let msg = if pipes_open {
            rx.recv_timeout(TICK)
        } else {
            std::thread::sleep(TICK);
            Err(RecvTimeoutError::Disconnected)
        };
        match msg {
            Ok(Msg::Event(e)) => on_event(e),
            Ok(Msg::Overflow(stream)) => {
                // Also after a quick exit: the output was too large all the same.
                if killed.is_none() {
                    killed = Some(End::OutputTooLarge(stream));
                    if exited.is_none() {
                        signal_group(pgid, Signal::SIGKILL);
                        kill_sent = true;
                    }
                }
            }
            Ok(Msg::StdoutDone(bytes)) => stdout = Some(bytes),
            Ok(Msg::StderrDone(last)) => last_stderr = Some(last),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => pipes_open = false,
        }
        let now = Instant::now();
        if exited.is_none() {
            if let Some(end) = exit_of(&mut child, pgid, &path, &listed)? {
                exited = Some((end, now));
            }
        }
        match exited {
            Some((_, at)) => {
                if !pipes_open || now >= at + DRAIN_GRACE {
                    break;
                }
            }
            None => {
                if killed.is_none() {
                    let stop = spec.abort.is_some_and(|a| a.load(Ordering::Relaxed));
                    if now >= deadline || stop {
                        killed = Some(if stop { End::Stopped } else { End::TimedOut });
                        signal_group(pgid, Signal::SIGTERM);
                        term_at = Some(now);
                    }
                }
                if let Some(t) = term_at {
                    if !kill_sent && now >= t + spec.kill_grace {
                        signal_group(pgid, Signal::SIGKILL);
                        kill_sent = true;
                    }
                }
            }
        }
    }
    let (end, _) = exited.expect("the loop ends only after the exit");
    let end = killed.unwrap_or(end);
    let stdout = match end {
        End::Exited(_) | End::Signaled(_) => {
            String::from_utf8_lossy(&stdout.unwrap_or_default()).into_owned()
        }
        _ => String::new(),
    };
    Ok(Outcome {
        end,
        stdout,
        last_stderr: last_stderr.flatten(),
    })
}

/// Spawns `cmd`, retrying briefly while the executable is still open for writing
/// somewhere (ETXTBSY: a package tool finishing, or a fork elsewhere in this process
/// that inherited the writer's descriptor for an instant).
fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// When the child has exited: kills what is left of its group (the zombie leader still
/// holds the group id), reaps it and returns how it ended; `None` while it runs.
fn exit_of(
    child: &mut Child,
    pgid: Pid,
    path: &Path,
    listed: &Listed<'_>,
) -> Result<Option<End>, RunError> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pgid), flags) {
        Ok(WaitStatus::StillAlive) => return Ok(None),
        Ok(_) => {}
        Err(e) => {
            return Err(RunError::Wait {
                path: path.to_path_buf(),
                source: e.into(),
            })
        }
    }
    signal_group(pgid, Signal::SIGKILL);
    // Unlisted before the reap frees the group id for reuse.
    listed.release();
    let status = child.wait().map_err(|source| RunError::Wait {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(sig)) => End::Signaled(sig),
        (None, None) => End::Exited(-1),
    }))
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the manager's process group")
        }
    }
}

/// Threads that write stdin and read stdout and stderr; each ends at EOF (or EPIPE).
fn start_pipes(child: &mut Child, input: Vec<u8>, tx: &SyncSender<Msg>) {
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            // A manager that does not read its input is its own business (EPIPE).
            let _ = stdin.write_all(&input);
        });
    }
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || read_stdout(out, &tx));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || read_stderr(err, &tx));
    }
}

/// Splits a byte stream into lines, keeping at most `keep` bytes of each.
#[derive(Debug)]
struct Lines {
    keep: usize,
    line: Vec<u8>,
    len: usize,
}

impl Lines {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            line: Vec::new(),
            len: 0,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], f: &mut impl FnMut(&[u8], usize)) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.push(&chunk[..i]);
            f(trim_cr(&self.line), self.len);
            self.line.clear();
            self.len = 0;
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.keep.saturating_sub(self.line.len()).min(bytes.len());
        self.line.extend_from_slice(&bytes[..room]);
        self.len += bytes.len();
    }

    fn finish(&mut self, f: &mut impl FnMut(&[u8], usize)) {
        if self.len > 0 {
            f(trim_cr(&self.line), self.len);
        }
    }

    /// Bytes of the unfinished line.
    fn pending(&self) -> usize {
        self.len
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(LINE_CAP)]).into_owned()
}

fn read_stdout(mut out: impl Read, tx: &SyncSender<Msg>) {
    let mut lines = Lines::new(STDOUT_CAP + 1);
    let mut result = Vec::new();
    let mut overflow = false;
    let mut buf = vec![0u8; 64 << 10];
    let mut gone = false;
    let on_line = |line: &[u8], _len: usize, result: &mut Vec<u8>, overflow: bool| {
        if overflow {
            return true;
        }
        if let Some(rest) = line.strip_prefix(PROGRESS_PREFIX) {
            return tx.send(Msg::Event(Event::Progress(text(rest)))).is_ok();
        }
        result.extend_from_slice(line);
        result.push(b'\n');
        true
    };
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        lines.feed(&buf[..n], &mut |l, len| {
            gone |= !on_line(l, len, &mut result, overflow);
        });
        if !overflow && result.len() + lines.pending() > STDOUT_CAP {
            overflow = true;
            result = Vec::new();
            gone |= tx.send(Msg::Overflow(Stream::Stdout)).is_err();
        }
        if gone {
            return;
        }
    }
    lines.finish(&mut |l, len| {
        on_line(l, len, &mut result, overflow);
    });
    if !overflow && result.len() > STDOUT_CAP {
        overflow = true;
        let _ = tx.send(Msg::Overflow(Stream::Stdout));
    }
    let _ = tx.send(Msg::StdoutDone(if overflow { Vec::new() } else { result }));
}

fn read_stderr(mut err: impl Read, tx: &SyncSender<Msg>) {
    let mut lines = Lines::new(LINE_CAP);
    let mut last: Option<String> = None;
    let mut logged = 0usize;
    let mut dropped = false;
    let mut total = 0u64;
    let mut overflow = false;
    let mut gone = false;
    let mut buf = vec![0u8; 64 << 10];
    let mut on_line = |line: &[u8], len: usize, gone: &mut bool| {
        let t = text(line);
        if !t.trim().is_empty() {
            last = Some(t.clone());
        }
        if logged < STDERR_LOG_CAP {
            logged += len + 1;
            *gone |= tx.send(Msg::Event(Event::Stderr(t))).is_err();
        } else if !dropped {
            dropped = true;
            *gone |= tx.send(Msg::Event(Event::StderrDropped)).is_err();
        }
    };
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        total += n as u64;
        lines.feed(&buf[..n], &mut |l, len| on_line(l, len, &mut gone));
        if !overflow && total > STDERR_CAP {
            overflow = true;
            gone |= tx.send(Msg::Overflow(Stream::Stderr)).is_err();
        }
        if gone {
            return;
        }
    }
    lines.finish(&mut |l, len| on_line(l, len, &mut gone));
    let _ = tx.send(Msg::StderrDone(last));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], keep: usize) -> Vec<(String, usize)> {
        let mut l = Lines::new(keep);
        let mut out = Vec::new();
        let mut f = |b: &[u8], len: usize| out.push((String::from_utf8_lossy(b).into_owned(), len));
        for c in chunks {
            l.feed(c, &mut f);
        }
        l.finish(&mut f);
        out
    }

    #[test]
    fn lines_span_chunks_and_are_cut_but_counted() {
        assert_eq!(
            split(&[b"ab", b"c\r\nde", b"f\n\nlast"], 10),
            [
                ("abc".to_owned(), 4),
                ("def".to_owned(), 3),
                (String::new(), 0),
                ("last".to_owned(), 4)
            ]
        );
        assert_eq!(split(&[b"0123456789\n"], 4), [("0123".to_owned(), 10)]);
    }
}
