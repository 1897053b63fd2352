//! Positional I/O on a device being erased: `O_DIRECT` switched on for the duration (so
//! what is written and read back is the device's, not the page cache's) and restored
//! afterwards, the range ioctls with their offsets in errors, and [`EraseIoError`], the
//! error of every erase data path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Alignment every offset and length handed to the range ioctls must have.
pub const SECTOR: u64 = 512;

/// Why an erase data path failed.
#[derive(Debug, thiserror::Error)]
pub enum EraseIoError {
    /// A write failed.
    #[error("writing {len} bytes at offset {offset}: {source}")]
    Write {
        /// Byte offset on the device.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A read failed.
    #[error("reading {len} bytes at offset {offset}: {source}")]
    Read {
        /// Byte offset on the device.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A range ioctl failed.
    #[error("{op} of {len} bytes at offset {offset}: {errno}")]
    Ioctl {
        /// `BLKDISCARD`, `BLKSECDISCARD` or `BLKZEROOUT`.
        op: &'static str,
        /// Byte offset on the device.
        offset: u64,
        /// Bytes in the range.
        len: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// Flushing the device (fsync, which also flushes its write cache) failed.
    #[error("flushing the device: {0}")]
    Sync(#[source] io::Error),
    /// Reading or changing the descriptor's flags failed.
    #[error("changing the descriptor flags: {0}")]
    Flags(Errno),
    /// The random generator could not be seeded.
    #[error("seeding the random generator from the kernel: {0}")]
    Seed(String),
    /// A range is not aligned to 512 bytes, or lies past the device.
    #[error("range of {len} bytes at offset {offset} is not 512-byte aligned or ends past {size}")]
    Range {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Device size.
        size: u64,
    },
    /// The abort flag was raised; the device is partly erased.
    #[error("aborted in pass {pass} after {done} of {total} bytes")]
    Aborted {
        /// 1-based pass number.
        pass: u32,
        /// Bytes of that pass written.
        done: u64,
        /// Bytes the pass would have written.
        total: u64,
    },
    /// The generator thread stopped without saying why (it panicked).
    #[error("the random data generator stopped")]
    Generator,
}

fn os(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A device handle with `O_DIRECT` on where the file accepts it; the descriptor's
/// flags as they were are put back on drop.
pub struct Direct<'a> {
    file: &'a File,
    before: OFlag,
    direct: bool,
}

impl<'a> Direct<'a> {
    /// Switches `file` to `O_DIRECT` (a file that refuses it, such as one on a
    /// filesystem without direct I/O, stays buffered: every pass ends with an fsync).
    pub fn new(file: &'a File) -> Result<Self, EraseIoError> {
        let before =
            OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).map_err(EraseIoError::Flags)?);
        let mut this = Self {
            file,
            before,
            direct: before.contains(OFlag::O_DIRECT),
        };
        if !this.direct {
            match this.set(true) {
                Ok(()) => this.direct = true,
                Err(e) => tracing::debug!(error = %e, "O_DIRECT refused; buffered I/O"),
            }
        }
        Ok(this)
    }

    fn set(&self, on: bool) -> Result<(), Errno> {
        let mut flags = self.before;
        flags.set(OFlag::O_DIRECT, on);
        fcntl(self.file, FcntlArg::F_SETFL(flags)).map(drop)
    }

    /// The handle.
    pub fn file(&self) -> &File {
        self.file
    }

    /// True while I/O bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Drops to buffered I/O (the tail of a file whose length is not a multiple of the
    /// block size cannot be written directly).
    fn go_buffered(&mut self) -> Result<(), EraseIoError> {
        if self.direct {
            self.set(false).map_err(EraseIoError::Flags)?;
            self.direct = false;
            tracing::debug!("O_DIRECT transfer refused; continuing buffered");
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`.
    pub fn write_all_at(&mut self, data: &[u8], offset: u64) -> Result<(), EraseIoError> {
        match self.file.write_all_at(data, offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.go_buffered()?;
                self.file.write_all_at(data, offset)
            }
            other => other,
        }
        .map_err(|source| EraseIoError::Write {
            offset,
            len: data.len(),
            source,
        })
    }

    /// Fills `buf` from `offset`.
    pub fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), EraseIoError> {
        match self.file.read_exact_at(buf, offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.go_buffered()?;
                self.file.read_exact_at(buf, offset)
            }
            other => other,
        }
        .map_err(|source| EraseIoError::Read {
            offset,
            len: buf.len(),
            source,
        })
    }

    /// fsync: the data and the device's write cache reach the medium.
    pub fn sync(&self) -> Result<(), EraseIoError> {
        self.file.sync_all().map_err(EraseIoError::Sync)
    }
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        if self.direct != self.before.contains(OFlag::O_DIRECT) {
            if let Err(e) = fcntl(self.file, FcntlArg::F_SETFL(self.before)) {
                tracing::warn!(error = %os(e), "restoring the descriptor flags");
            }
        }
    }
}

/// A range ioctl of `sys::block`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    /// BLKSECDISCARD.
    SecureDiscard,
    /// BLKDISCARD.
    Discard,
    /// BLKZEROOUT.
    ZeroOut,
}

impl RangeOp {
    /// The ioctl's name, as errors show it.
    pub fn ioctl_name(self) -> &'static str {
        match self {
            Self::SecureDiscard => "BLKSECDISCARD",
            Self::Discard => "BLKDISCARD",
            Self::ZeroOut => "BLKZEROOUT",
        }
    }
}

/// Runs range ioctls; the device's in production, a stand-in in unit tests.
pub trait RangeOps {
    /// Runs `op` over `len` bytes at `offset`.
    fn run(&self, op: RangeOp, dev: &File, offset: u64, len: u64) -> Result<(), Errno>;
}

/// The kernel's range ioctls.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelOps;

impl RangeOps for KernelOps {
    fn run(&self, op: RangeOp, dev: &File, offset: u64, len: u64) -> Result<(), Errno> {
        use crate::sys::block;
        match op {
            RangeOp::SecureDiscard => block::secure_discard(dev, offset, len),
            RangeOp::Discard => block::discard(dev, offset, len),
            RangeOp::ZeroOut => block::zero_out(dev, offset, len),
        }
    }
}

/// Applies `op` to `size` bytes from 0 in ranges of at most `chunk` bytes (rounded down
/// to 512, at least 512), calling `between(done)` after each (progress, the abort
/// check: its error stops the loop) and stopping with [`EraseIoError::Ioctl`] at the
/// first failed range.
pub fn range_in_chunks(
    ops: &dyn RangeOps,
    op: RangeOp,
    dev: &File,
    size: u64,
    chunk: u64,
    mut between: impl FnMut(u64) -> Result<(), EraseIoError>,
) -> Result<(), EraseIoError> {
    if size % SECTOR != 0 {
        return Err(EraseIoError::Range {
            offset: 0,
            len: size,
            size,
        });
    }
    let chunk = (chunk / SECTOR).max(1) * SECTOR;
    let mut done = 0;
    while done < size {
        let len = chunk.min(size - done);
        ops.run(op, dev, done, len)
            .map_err(|errno| EraseIoError::Ioctl {
                op: op.ioctl_name(),
                offset: done,
                len,
                errno,
            })?;
        done += len;
        between(done)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn direct_is_switched_on_and_restored() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192 + 100).unwrap();
        let flags = |f: &File| OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap());
        {
            let mut d = Direct::new(&f).unwrap();
            let on = d.is_direct();
            assert_eq!(flags(&f).contains(OFlag::O_DIRECT), on);
            let mut buf = crate::image::aligned::AlignedBuf::new(4096);
            buf.full_mut().fill(7);
            d.write_all_at(buf.full(), 4096).unwrap();
            // An unaligned tail: direct I/O refuses it, the handle goes buffered.
            d.write_all_at(&[9; 100], 8192).unwrap();
            assert!(!d.is_direct());
            let mut back = vec![0; 100];
            d.read_exact_at(&mut back, 8192).unwrap();
            assert_eq!(back, [9; 100]);
        }
        assert!(!flags(&f).contains(OFlag::O_DIRECT));
    }

    struct Recorder(RefCell<Vec<(u64, u64)>>, Option<u64>);
    impl RangeOps for Recorder {
        fn run(&self, _: RangeOp, _: &File, offset: u64, len: u64) -> Result<(), Errno> {
            if self.1 == Some(offset) {
                return Err(Errno::EIO);
            }
            self.0.borrow_mut().push((offset, len));
            Ok(())
        }
    }

    #[test]
    fn ranges_cover_the_device_in_sector_multiples() {
        let f = tempfile::tempfile().unwrap();
        let r = Recorder(RefCell::new(Vec::new()), None);
        let mut seen = Vec::new();
        range_in_chunks(&r, RangeOp::Discard, &f, 10 * 512, 2000, |d| {
            seen.push(d);
            Ok(())
        })
        .unwrap();
        // 2000 rounds down to 1536.
        assert_eq!(
            *r.0.borrow(),
            [(0, 1536), (1536, 1536), (3072, 1536), (4608, 512)]
        );
        assert_eq!(seen, [1536, 3072, 4608, 5120]);
        let e = range_in_chunks(&r, RangeOp::Discard, &f, 1000, 512, |_| Ok(())).unwrap_err();
        assert!(matches!(e, EraseIoError::Range { .. }), "{e}");
    }

    #[test]
    fn a_failed_range_names_the_ioctl_and_offset() {
        let f = tempfile::tempfile().unwrap();
        let r = Recorder(RefCell::new(Vec::new()), Some(1024));
        let e = range_in_chunks(&r, RangeOp::ZeroOut, &f, 4096, 512, |_| Ok(())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BLKZEROOUT of 512 bytes at offset 1024: EIO: I/O error"
        );
    }
}
