//! Counters of a running image write, shared by the pipeline's stages, its log line and
//! the heartbeat status.
//!
//! The counters describe the current attempt only: a new attempt (after a checksum
//! mismatch or a changed image) starts them again at zero, and bytes sent again after a
//! refused `Range` count once, so the line never shows more than the image's size.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Shared counters of a running write, read by logs and the heartbeat status.
#[derive(Debug, Default)]
pub struct Progress {
    downloaded: AtomicU64,
    written: AtomicU64,
    total: AtomicU64,
    attempt: AtomicU32,
    attempts: AtomicU32,
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts attempt `n` of at most `of`: the byte counters go back to zero.
    pub fn start_attempt(&self, n: u32, of: u32) {
        self.downloaded.store(0, Ordering::Relaxed);
        self.written.store(0, Ordering::Relaxed);
        self.attempts.store(of, Ordering::Relaxed);
        self.attempt.store(n, Ordering::Relaxed);
    }

    /// Adds bytes of the image stream received in this attempt.
    pub fn add_downloaded(&self, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes written to the target.
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the size the server announced.
    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    /// Bytes of the image stream received in this attempt (each byte once).
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Bytes written in this attempt (the held-back start counts once committed).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The announced download size, if the server sent one.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// The current attempt and the most there can be, once a second attempt started.
    pub fn attempt(&self) -> Option<(u32, u32)> {
        let n = self.attempt.load(Ordering::Relaxed);
        (n > 1).then(|| (n, self.attempts.load(Ordering::Relaxed).max(n)))
    }

    /// One line for logs and status messages.
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let attempt = match self.attempt() {
            Some((n, of)) => format!("attempt {n} of {of}: "),
            None => String::new(),
        };
        match self.total() {
            Some(t) => format!(
                "{attempt}{:.0} of {:.0} MiB downloaded, {:.0} MiB written",
                mib(self.downloaded().min(t)),
                mib(t),
                mib(self.written())
            ),
            None => format!(
                "{attempt}{:.0} MiB downloaded, {:.0} MiB written",
                mib(self.downloaded()),
                mib(self.written())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_attempt_starts_its_own_count() {
        let p = Progress::new();
        p.start_attempt(1, 3);
        p.set_total(1 << 30);
        p.add_downloaded(1 << 30);
        p.add_written(1 << 30);
        assert_eq!(p.summary(), "1024 of 1024 MiB downloaded, 1024 MiB written");
        p.start_attempt(2, 3);
        p.add_downloaded(512 << 20);
        assert_eq!(
            p.summary(),
            "attempt 2 of 3: 512 of 1024 MiB downloaded, 0 MiB written"
        );
    }
}
