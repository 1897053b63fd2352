//! The hold-back: nothing unverified is ever bootable (INVARIANTS 2).
//!
//! The first [`HOLD_BACK`] bytes of an image (partition table, boot code) are kept in
//! memory while the rest streams to the target, and written only by [`HoldBack::commit`]
//! after the checksum has been verified. Before any image byte is written,
//! [`HoldBack::invalidate`] zeroes the start of the target (and, on a block device, its
//! last MiB, where a backup GPT of an earlier install would let firmware or `sgdisk`
//! revive the old table), so even a crash mid-stream leaves nothing that boots. On any
//! failure the caller logs the cause first, then calls [`HoldBack::wipe`] (the same
//! zeroing again, plus a sync), then reports: the cause survives a wipe that fails too.
//!
//! On regular files (tests, cache files) only the bytes that exist are zeroed, so a file
//! never grows past the image, and `commit` cuts it to the image's length.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::aligned::AlignedBuf;
use super::error::ImageError;
use super::sink::{DiskSink, PositionalSink};

/// Bytes held back from the start of the image: 1 MiB, the usual alignment of the
/// first partition, so the partition table and boot code are all inside.
pub const HOLD_BACK: u64 = 1 << 20;
/// [`HOLD_BACK`] as a buffer length.
const HEAD_LEN: usize = 1 << 20;
const _: () = assert!(HEAD_LEN as u64 == HOLD_BACK);

/// A [`DiskSink`] whose first MiB is kept in memory until commit.
#[derive(Debug)]
pub struct HoldBack<F> {
    sink: DiskSink<F>,
    head: Mutex<Head>,
    end: AtomicU64,
    written: AtomicU64,
    /// Whether the target's start (and end) were zeroed: done just before the first byte
    /// reaches the target, so an image refused by the format gate leaves it untouched.
    invalidated: Mutex<bool>,
}

#[derive(Debug)]
struct Head {
    buf: AlignedBuf,
    /// Highest end offset written into the head.
    len: usize,
}

impl<F: FileExt + AsFd + Send + Sync> HoldBack<F> {
    /// Wraps `sink`; the target is zeroed lazily, just before the first write reaches it.
    pub fn new(sink: DiskSink<F>) -> Self {
        Self {
            sink,
            head: Mutex::new(Head {
                buf: AlignedBuf::new(HEAD_LEN),
                len: 0,
            }),
            end: AtomicU64::new(0),
            written: AtomicU64::new(0),
            invalidated: Mutex::new(false),
        }
    }

    /// The target.
    pub fn sink(&self) -> &DiskSink<F> {
        &self.sink
    }

    /// One past the highest byte of the image seen so far (held back or written).
    pub fn image_end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Bytes written to the target past the hold-back so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn regions(&self) -> Result<Vec<(u64, u64)>, ImageError> {
        let len = self.sink.current_len()?;
        let mut r = vec![(0, len.min(HOLD_BACK))];
        if self.sink.is_block_device() && len > HOLD_BACK {
            let tail = len.saturating_sub(HOLD_BACK).max(HOLD_BACK);
            r.push((tail, len - tail));
        }
        Ok(r)
    }

    fn zero_regions(&self) -> Result<(), ImageError> {
        let zeros = AlignedBuf::new(HEAD_LEN);
        for (off, len) in self.regions()? {
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(zeros.capacity());
            self.sink.write_at(&zeros.full()[..len], off)?;
        }
        Ok(())
    }

    /// Forgets what a failed attempt put into the hold-back, before a new attempt.
    pub fn reset(&self) {
        let mut head = self.head.lock().expect("head lock poisoned");
        head.buf.full_mut().fill(0);
        head.len = 0;
        self.end.store(0, Ordering::Release);
        self.written.store(0, Ordering::Relaxed);
    }

    /// Zeroes the start (and a block device's last MiB) once, before the first byte of
    /// the image is written; later calls do nothing.
    pub fn invalidate(&self) -> Result<(), ImageError> {
        let mut done = self.invalidated.lock().expect("invalidate lock poisoned");
        if !*done {
            self.zero_regions()?;
            *done = true;
        }
        Ok(())
    }

    /// Whether anything was written to the target yet.
    pub fn touched(&self) -> bool {
        *self.invalidated.lock().expect("invalidate lock poisoned")
    }

    /// Writes `data` at `offset`: the part inside the first MiB goes to memory, the rest
    /// to the target.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        let end = offset + data.len() as u64;
        self.end.fetch_max(end, Ordering::AcqRel);
        let mut rest = data;
        let mut off = offset;
        if off < HOLD_BACK {
            let n = usize::try_from(HOLD_BACK - off)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let start = usize::try_from(off).expect("off is below HOLD_BACK");
            let mut head = self.head.lock().expect("head lock poisoned");
            head.buf.full_mut()[start..start + n].copy_from_slice(&rest[..n]);
            head.len = head.len.max(start + n);
            rest = &rest[n..];
            off += n as u64;
        }
        if !rest.is_empty() {
            self.invalidate()?;
            self.sink.write_at(rest, off)?;
            self.written.fetch_add(rest.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// After verification: writes the held-back start, fits a regular file to the
    /// image's length, and syncs. Only then is the image on the target.
    pub fn commit(&self) -> Result<(), ImageError> {
        self.invalidate()?;
        {
            let head = self.head.lock().expect("head lock poisoned");
            self.sink.write_at(&head.buf.full()[..head.len], 0)?;
        }
        self.sink.truncate(self.image_end())?;
        self.sink.sync()
    }

    /// After a failure (already logged by the caller): zeroes the start again (and a
    /// block device's last MiB) and syncs.
    /// A target never touched (the image was refused before its first write) is left
    /// as it was.
    pub fn wipe(&self) -> Result<(), ImageError> {
        if !self.touched() {
            return Ok(());
        }
        self.zero_regions()?;
        self.sink.sync()
    }
}

impl<F: FileExt + AsFd + Send + Sync> PositionalSink for HoldBack<F> {
    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        HoldBack::write_at(self, data, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn image(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from(i % 253).unwrap() + 1)
            .collect()
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(f.metadata().unwrap().len()).unwrap()];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn start_is_written_only_on_commit() {
        let tmp = tempfile::tempfile().unwrap();
        let hb = HoldBack::new(DiskSink::new(tmp.try_clone().unwrap(), "t").unwrap());
        hb.invalidate().unwrap();
        let img = image(3 << 20);
        for (i, c) in img.chunks(300_000).enumerate() {
            hb.write_at(c, (i * 300_000) as u64).unwrap();
        }
        let before = read_all(&tmp);
        assert!(before[..HEAD_LEN].iter().all(|&b| b == 0));
        assert_eq!(&before[HEAD_LEN..], &img[HEAD_LEN..]);
        hb.commit().unwrap();
        assert_eq!(read_all(&tmp), img);
    }

    #[test]
    fn a_target_never_written_is_not_wiped() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), vec![0xAA; 3 << 20]).unwrap();
        let hb = HoldBack::new(DiskSink::new(tmp.reopen().unwrap(), "t").unwrap());
        // Only held-back bytes so far: nothing reached the target.
        hb.write_at(&image(4096), 0).unwrap();
        assert!(!hb.touched());
        hb.wipe().unwrap();
        let after = std::fs::read(tmp.path()).unwrap();
        assert!(after.iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn wipe_zeroes_the_start_of_an_old_install() {
        let tmp = tempfile::tempfile().unwrap();
        tmp.write_all_at(&[0xAA; 3 << 20], 0).unwrap();
        let hb = HoldBack::new(DiskSink::new(tmp.try_clone().unwrap(), "t").unwrap());
        hb.write_at(&image(2 << 20), 0).unwrap();
        hb.wipe().unwrap();
        let after = read_all(&tmp);
        assert!(after[..HEAD_LEN].iter().all(|&b| b == 0));
        assert_eq!(&after[HEAD_LEN..2 << 20], &image(2 << 20)[HEAD_LEN..]);
    }

    #[test]
    fn small_image_in_a_fresh_file_keeps_its_size() {
        let tmp = tempfile::tempfile().unwrap();
        let hb = HoldBack::new(DiskSink::new(tmp.try_clone().unwrap(), "t").unwrap());
        hb.invalidate().unwrap();
        hb.write_at(b"tiny image", 0).unwrap();
        assert_eq!(
            tmp.metadata().unwrap().len(),
            0,
            "nothing written before commit"
        );
        hb.commit().unwrap();
        assert_eq!(read_all(&tmp), b"tiny image");
    }
}
