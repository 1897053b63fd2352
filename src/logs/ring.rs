//! The agent's own log kept in memory, so that the diagnostics archive can carry it: in
//! a ramdisk without systemd stderr goes to a console nobody stores, and the conductor
//! only keeps what `log.collect_system_logs` returns.
//!
//! [`layer`] formats events exactly as the stderr layer does (without colour codes) and
//! appends each line to a [`LogRing`] of bounded bytes that drops its oldest whole lines.
//! It stores what stderr gets and nothing more, so the redaction done where events are
//! logged (tokens, signed URLs, command bodies: INVARIANTS 4) holds here too.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing_subscriber::fmt::format::{DefaultFields, Format};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;

/// Bytes of log kept by [`LogRing::global`].
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// A thread-safe ring of log lines holding at most `capacity` bytes (newlines included).
/// Clones share the same lines.
#[derive(Clone)]
pub struct LogRing {
    inner: Arc<Mutex<Lines>>,
}

/// What a ring holds and has dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Upper bound of `bytes`.
    pub capacity: usize,
    /// Lines held.
    pub lines: usize,
    /// Bytes held.
    pub bytes: usize,
    /// Older lines dropped to make room.
    pub dropped_lines: u64,
    /// Bytes dropped: the dropped lines plus the cut ends of lines longer than the ring.
    pub dropped_bytes: u64,
}

struct Lines {
    capacity: usize,
    /// The held lines back to back, each ending in `\n`, oldest first.
    bytes: VecDeque<u8>,
    /// The length of each held line, oldest first.
    lens: VecDeque<usize>,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogRing {
    /// An empty ring keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Lines {
                capacity,
                bytes: VecDeque::new(),
                lens: VecDeque::new(),
                dropped_lines: 0,
                dropped_bytes: 0,
            })),
        }
    }

    /// The process's ring ([`DEFAULT_CAPACITY`] bytes): the `ira` binary logs into it and
    /// the diagnostics archive reads it.
    pub fn global() -> &'static LogRing {
        static GLOBAL: OnceLock<LogRing> = OnceLock::new();
        GLOBAL.get_or_init(|| LogRing::new(DEFAULT_CAPACITY))
    }

    /// Appends `text` as lines (a last line without `\n` gets one), dropping the oldest
    /// lines to stay within the capacity; a line longer than the capacity keeps its start.
    pub fn push(&self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let mut lines = self.lock();
        for line in body.split(|&b| b == b'\n') {
            lines.push_line(line);
        }
    }

    /// The newest whole lines fitting in `max_bytes`, oldest first, after a header line
    /// when older lines were dropped (by the ring or by `max_bytes`).
    pub fn contents(&self, max_bytes: usize) -> Vec<u8> {
        let lines = self.lock();
        let mut kept_bytes = 0usize;
        let mut kept_lines = 0usize;
        for &len in lines.lens.iter().rev() {
            if kept_bytes + len > max_bytes {
                break;
            }
            kept_bytes += len;
            kept_lines += 1;
        }
        let skipped_lines = lines.lens.len() - kept_lines;
        let skipped_bytes = lines.bytes.len() - kept_bytes;
        let dropped_lines = lines.dropped_lines + skipped_lines as u64;
        let dropped_bytes = lines.dropped_bytes + skipped_bytes as u64;
        let mut out = Vec::with_capacity(kept_bytes + 128);
        if dropped_bytes > 0 {
            out.extend_from_slice(
                format!(
                    "[ira log: {dropped_lines} older lines dropped, {dropped_bytes} bytes in \
                     all; the newest {kept_bytes} bytes follow]\n"
                )
                .as_bytes(),
            );
        }
        let (a, b) = lines.bytes.as_slices();
        let start = skipped_bytes;
        if start < a.len() {
            out.extend_from_slice(&a[start..]);
            out.extend_from_slice(b);
        } else {
            out.extend_from_slice(&b[start - a.len()..]);
        }
        out
    }

    /// What the ring holds and has dropped.
    pub fn stats(&self) -> RingStats {
        let lines = self.lock();
        RingStats {
            capacity: lines.capacity,
            lines: lines.lens.len(),
            bytes: lines.bytes.len(),
            dropped_lines: lines.dropped_lines,
            dropped_bytes: lines.dropped_bytes,
        }
    }

    /// A writer whose whole output becomes lines of the ring.
    pub fn writer(&self) -> RingWriter<'_> {
        RingWriter {
            ring: self,
            pending: Vec::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        // A panic while holding the lock leaves whole lines behind: the data stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for LogRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogRing").field(&self.stats()).finish()
    }
}

impl Lines {
    /// Stores `line` (without its `\n`) and one `\n`.
    fn push_line(&mut self, line: &[u8]) {
        if self.capacity == 0 {
            self.dropped_lines += 1;
            self.dropped_bytes += line.len() as u64 + 1;
            return;
        }
        let line = if line.len() >= self.capacity {
            let kept = char_floor(line, self.capacity - 1);
            self.dropped_bytes += (line.len() - kept.len()) as u64;
            kept
        } else {
            line
        };
        let len = line.len() + 1;
        while self.bytes.len() + len > self.capacity {
            let Some(old) = self.lens.pop_front() else {
                break;
            };
            self.bytes.drain(..old);
            self.dropped_lines += 1;
            self.dropped_bytes += old as u64;
        }
        self.bytes.extend(line);
        self.bytes.push_back(b'\n');
        self.lens.push_back(len);
    }
}

/// The longest start of `line` of at most `max` bytes that does not split a UTF-8 character.
fn char_floor(line: &[u8], max: usize) -> &[u8] {
    let mut end = max.min(line.len());
    // Continuation bytes are 0b10xxxxxx; back off to the start of the character.
    while end > 0 && end < line.len() && line[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    &line[..end]
}

/// Collects one event's output and appends it to the ring as whole lines, so that lines
/// of events on other threads never interleave with it.
pub struct RingWriter<'a> {
    ring: &'a LogRing,
    pending: Vec<u8>,
}

impl io::Write for RingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter writes each event in one call ending in `\n`: no copy then.
        if self.pending.is_empty() && buf.ends_with(b"\n") {
            self.ring.push(buf);
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RingWriter<'_> {
    fn drop(&mut self) {
        self.ring.push(&self.pending);
    }
}

impl<'a> MakeWriter<'a> for LogRing {
    type Writer = RingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.writer()
    }
}

/// The fmt layer writing into `ring`: the stderr layer's format (time, level, target,
/// fields), without colour codes.
pub fn layer<S>(ring: LogRing) -> tracing_subscriber::fmt::Layer<S, DefaultFields, Format, LogRing>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(ring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn text(ring: &LogRing) -> String {
        String::from_utf8(ring.contents(usize::MAX)).unwrap()
    }

    #[test]
    fn keeps_lines_in_order_and_splits_multi_line_text() {
        let ring = LogRing::new(1024);
        ring.push(b"one\n");
        ring.push(b"two\nthree\n");
        ring.push(b"four");
        assert_eq!(text(&ring), "one\ntwo\nthree\nfour\n");
        let s = ring.stats();
        assert_eq!((s.lines, s.bytes, s.dropped_lines), (4, 19, 0));
    }

    #[test]
    fn stays_within_capacity_dropping_oldest_whole_lines() {
        let ring = LogRing::new(20);
        for i in 0..10 {
            ring.push(format!("line {i}\n").as_bytes()); // 7 bytes each
        }
        let s = ring.stats();
        assert_eq!(s.bytes, 14, "two whole lines fit in 20 bytes");
        assert_eq!((s.lines, s.dropped_lines, s.dropped_bytes), (2, 8, 56));
        let t = text(&ring);
        assert!(t.ends_with("line 8\nline 9\n"), "{t}");
        assert!(
            t.starts_with("[ira log: 8 older lines dropped, 56 bytes in all; the newest 14 "),
            "{t}"
        );
    }

    #[test]
    fn a_line_longer_than_the_ring_keeps_its_start_on_a_char_boundary() {
        let ring = LogRing::new(8);
        ring.push("aaaaaaé tail\n".as_bytes()); // 'é' is bytes 6..8
        let s = ring.stats();
        assert_eq!(s.bytes, 7);
        assert_eq!(s.dropped_bytes, 7, "'é tail' cut");
        assert!(text(&ring).ends_with("aaaaaa\n"));
        ring.push(b"x\n");
        assert_eq!(ring.stats().lines, 1, "the long line went for the new one");
    }

    #[test]
    fn contents_bound_takes_the_newest_whole_lines() {
        let ring = LogRing::new(1024);
        ring.push(b"old line\nmid line\nnew line\n");
        assert_eq!(
            text(&ring),
            "old line\nmid line\nnew line\n",
            "no header when nothing was dropped"
        );
        let t = String::from_utf8(ring.contents(20)).unwrap();
        assert_eq!(
            t,
            "[ira log: 1 older lines dropped, 9 bytes in all; the newest 18 bytes follow]\n\
             mid line\nnew line\n"
        );
        assert_eq!(ring.stats().lines, 3, "reading drops nothing");
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let ring = LogRing::new(0);
        ring.push(b"a\nb\n");
        assert_eq!(ring.stats().dropped_lines, 2);
        assert!(text(&ring).starts_with("[ira log: 2 older lines dropped, 4 bytes"));
    }

    #[test]
    fn writer_turns_partial_writes_into_one_line() {
        let ring = LogRing::new(1024);
        {
            let mut w = ring.writer();
            w.write_all(b"par").unwrap();
            w.write_all(b"tial\nand ").unwrap();
            w.write_all(b"more").unwrap();
            assert_eq!(ring.stats().lines, 0, "held until the event ends");
        }
        assert_eq!(text(&ring), "partial\nand more\n");
    }

    /// Four threads write 2000 lines each into `ring`; returns what it holds, checking that
    /// no line is torn and each thread's lines keep their order. The last line index seen
    /// per thread is returned.
    fn hammer(ring: &LogRing) -> [Option<usize>; 4] {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let mut w = ring.writer();
                        // Two writes per event: a line is whole only if the writer holds it.
                        write!(w, "thread {t} line {i:05} ").unwrap();
                        writeln!(w, "{}", "x".repeat(i % 50)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = text(ring);
        let mut last = [None::<usize>; 4];
        for line in t.lines().filter(|l| !l.starts_with("[ira log:")) {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!((f[0], f[2]), ("thread", "line"), "torn line: {line:?}");
            let (th, i): (usize, usize) = (f[1].parse().unwrap(), f[3].parse().unwrap());
            assert_eq!(f[4].len(), i % 50, "torn line: {line:?}");
            assert!(last[th].is_none_or(|p| p < i), "out of order: {line:?}");
            last[th] = Some(i);
        }
        assert_eq!(ring.stats().lines as u64 + ring.stats().dropped_lines, 8000);
        last
    }

    #[test]
    fn concurrent_writers_keep_every_line_whole_and_in_order() {
        let ring = LogRing::new(1 << 20);
        let last = hammer(&ring);
        assert_eq!(ring.stats().lines, 8000);
        assert_eq!(last, [Some(1999); 4]);
    }

    #[test]
    fn concurrent_writers_stay_within_a_small_ring() {
        let ring = LogRing::new(16 * 1024);
        let last = hammer(&ring);
        let s = ring.stats();
        assert!(s.bytes <= 16 * 1024 && s.bytes > 15 * 1024, "{s:?}");
        assert!(s.dropped_lines > 0, "the ring wrapped: {s:?}");
        assert!(
            last.contains(&Some(1999)),
            "the newest line is kept: {last:?}"
        );
    }

    #[test]
    fn layer_formats_like_stderr_without_colour() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let ring = LogRing::new(4096);
        let subscriber = tracing_subscriber::registry().with(layer(ring.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(device = "/dev/sdz", "erase refused");
        });
        let t = text(&ring);
        assert!(
            t.contains(" WARN ira::logs::ring::tests: erase refused device=\"/dev/sdz\"\n"),
            "{t:?}"
        );
        assert!(!t.contains('\x1b'), "no colour codes: {t:?}");
    }
}
