//! Counters of a running image write, shared by the pipeline's stages, its log line and
//! the heartbeat status.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shared counters of a running write, read by logs and the heartbeat status.
#[derive(Debug, Default)]
pub struct Progress {
    downloaded: AtomicU64,
    written: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received from the network.
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

    /// Bytes received so far (re-sent bytes included).
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Bytes written so far (the held-back start counts once committed).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The announced download size, if the server sent one.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// One line for logs and status messages.
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        match self.total() {
            Some(t) => format!(
                "{:.0} of {:.0} MiB downloaded, {:.0} MiB written",
                mib(self.downloaded()),
                mib(t),
                mib(self.written())
            ),
            None => format!(
                "{:.0} MiB downloaded, {:.0} MiB written",
                mib(self.downloaded()),
                mib(self.written())
            ),
        }
    }
}
