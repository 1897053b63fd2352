//! Positional writers: [`PositionalSink`] is what decoding stages write to (a guest
//! offset and bytes), [`DiskSink`] is the end of the line over any `FileExt + AsFd`
//! (a temp file, a loop device, a disk).
//!
//! `DiskSink` turns on `O_DIRECT` (through `fcntl(F_SETFL)`, on the handle the one
//! write door gave us) so image data bypasses the page cache; a target that refuses it
//! (EINVAL, e.g. some filesystems) is written buffered instead. A write whose offset,
//! address or length is not aligned to [`ALIGN`] (the last piece of an image, a
//! 512-byte qcow2 cluster) switches the sink to buffered writes for good, which the
//! kernel keeps coherent with the direct writes before. Either way nothing counts as
//! written until [`DiskSink::sync`] (fsync, which also flushes the device's cache) has
//! succeeded. Every error names the target and the offset; they are local errors and
//! never retried.
//!
//! A whole aligned buffer of zeros (zero runs of a raw image, qcow2 zero and unallocated
//! clusters) becomes `fallocate(FALLOC_FL_ZERO_RANGE)` instead of a write: a block device
//! turns it into WRITE ZEROES (or writes the zeros itself), a file into a zeroed extent,
//! as `qemu-img convert` does. A target that refuses it gets ordinary writes from then on.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};
use nix::unistd::{fsync, ftruncate, lseek, Whence};

use super::aligned::ALIGN;
use super::error::ImageError;

/// A destination for image bytes at given offsets (what a decoder stage writes to).
pub trait PositionalSink: Send {
    /// Writes all of `data` at byte `offset` of the target.
    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), ImageError>;
}

/// A target written with positional writes, `O_DIRECT` where it is accepted.
#[derive(Debug)]
pub struct DiskSink<F> {
    file: F,
    path: PathBuf,
    direct: AtomicBool,
    /// `FALLOC_FL_ZERO_RANGE` still worth trying on this target.
    zero_range: AtomicBool,
    block_device: bool,
    size: Option<u64>,
}

/// Smallest zero run sent as a zero range rather than written (smaller runs cost more in
/// system calls than they save).
pub const ZERO_RANGE_MIN: usize = 64 << 10;

/// Whether every byte of `data` is zero: OR-folds 64-byte blocks (vectorised by the
/// compiler) and stops at the first block that is not zero.
fn is_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    let whole = blocks.all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0);
    whole && blocks.remainder().iter().all(|&b| b == 0)
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl<F: FileExt + AsFd + Send + Sync> DiskSink<F> {
    /// Wraps `file` (named `path` in errors) and tries to switch it to `O_DIRECT`.
    pub fn new(file: F, path: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let sink = Self::buffered(file, path)?;
        match sink.set_direct(true) {
            Ok(()) => sink.direct.store(true, Ordering::Relaxed),
            Err(e) => tracing::debug!(path = %sink.path.display(), error = %e,
                "O_DIRECT refused; writing through the page cache"),
        }
        Ok(sink)
    }

    /// Wraps `file` for buffered writes only.
    pub fn buffered(file: F, path: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let path = path.into();
        let st = fstat(&file).map_err(|e| ImageError::write(&path, 0, errno(e)))?;
        let block_device = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFBLK;
        // A block device's size is where a seek to the end lands (no ioctl needed);
        // positional writes ignore the file position, so moving it is harmless.
        let size = if block_device {
            let end = lseek(&file, 0, Whence::SeekEnd)
                .map_err(|e| ImageError::write(&path, 0, errno(e)))?;
            u64::try_from(end).ok()
        } else {
            None
        };
        Ok(Self {
            file,
            path,
            direct: AtomicBool::new(false),
            zero_range: AtomicBool::new(true),
            block_device,
            size,
        })
    }

    fn set_direct(&self, on: bool) -> io::Result<()> {
        let flags = fcntl(&self.file, FcntlArg::F_GETFL).map_err(errno)?;
        let mut flags = OFlag::from_bits_truncate(flags);
        flags.set(OFlag::O_DIRECT, on);
        fcntl(&self.file, FcntlArg::F_SETFL(flags)).map_err(errno)?;
        Ok(())
    }

    fn go_buffered(&self, why: &str) -> Result<(), ImageError> {
        if self.direct.swap(false, Ordering::AcqRel) {
            tracing::debug!(path = %self.path.display(), why, "switching to buffered writes");
            self.set_direct(false)
                .map_err(|e| ImageError::write(&self.path, 0, e))?;
        }
        Ok(())
    }

    /// The target's path, as used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// True when the target is a block device (not a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The size of a block device; `None` for regular files (they grow).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The current length of a regular file (the size of a block device).
    pub fn current_len(&self) -> Result<u64, ImageError> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let st = fstat(&self.file).map_err(|e| ImageError::write(&self.path, 0, errno(e)))?;
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }

    fn write_plain(&self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| ImageError::write(&self.path, offset, e))
    }

    /// Zeroes `data.len()` bytes at `offset` without sending them, when `data` is an
    /// aligned run of zeros of at least [`ZERO_RANGE_MIN`] and the target allows it.
    fn try_zero_range(&self, data: &[u8], offset: u64) -> Result<bool, ImageError> {
        let len = data.len();
        if len < ZERO_RANGE_MIN
            || len % ALIGN != 0
            || offset % ALIGN as u64 != 0
            || !self.zero_range.load(Ordering::Relaxed)
            || !is_zero(data)
        {
            return Ok(false);
        }
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(false);
        };
        match fallocate(&self.file, FallocateFlags::FALLOC_FL_ZERO_RANGE, off, l) {
            Ok(()) => Ok(true),
            Err(
                e @ (nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::ENODEV),
            ) => {
                tracing::debug!(path = %self.path.display(), error = %e,
                    "zero ranges refused; writing zeros as data");
                self.zero_range.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(ImageError::write(&self.path, offset, errno(e))),
        }
    }

    /// Writes all of `data` at `offset`.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        if data.is_empty() || self.try_zero_range(data, offset)? {
            return Ok(());
        }
        if self.is_direct() {
            let aligned = offset % ALIGN as u64 == 0 && (data.as_ptr() as usize) % ALIGN == 0;
            if !aligned {
                self.go_buffered("unaligned write")?;
                return self.write_plain(data, offset);
            }
            let whole = data.len() / ALIGN * ALIGN;
            if whole > 0 {
                match self.file.write_all_at(&data[..whole], offset) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.go_buffered("O_DIRECT write refused")?;
                        return self.write_plain(data, offset);
                    }
                    Err(e) => return Err(ImageError::write(&self.path, offset, e)),
                }
            }
            if whole == data.len() {
                return Ok(());
            }
            self.go_buffered("unaligned tail")?;
            return self.write_plain(&data[whole..], offset + whole as u64);
        }
        self.write_plain(data, offset)
    }

    /// Cuts a regular file to `len` bytes (no-op for block devices).
    pub fn truncate(&self, len: u64) -> Result<(), ImageError> {
        if self.block_device {
            return Ok(());
        }
        let l = i64::try_from(len).unwrap_or(i64::MAX);
        ftruncate(&self.file, l).map_err(|e| ImageError::write(&self.path, len, errno(e)))
    }

    /// Makes everything written durable (fsync: page cache and device cache).
    pub fn sync(&self) -> Result<(), ImageError> {
        fsync(&self.file).map_err(|e| ImageError::write(&self.path, 0, errno(e)))
    }

    /// The wrapped handle.
    pub fn into_inner(self) -> F {
        self.file
    }
}

impl<F: FileExt + AsFd + Send + Sync> PositionalSink for DiskSink<F> {
    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        DiskSink::write_at(self, data, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::super::aligned::AlignedBuf;
    use super::*;
    use std::fs::File;

    #[test]
    fn zero_runs_overwrite_old_data_whether_or_not_zero_ranges_work() {
        for dir in ["/var/tmp", "/dev/shm"] {
            let Ok(tmp) = tempfile::NamedTempFile::new_in(dir) else {
                continue;
            };
            std::fs::write(tmp.path(), vec![0xAAu8; 4 << 20]).unwrap();
            let sink = DiskSink::new(tmp.reopen().unwrap(), tmp.path()).unwrap();
            let zeros = AlignedBuf::new(1 << 20);
            let mut data = AlignedBuf::new(1 << 20);
            data.full_mut().fill(5);
            data.set_len(1 << 20);
            let mut small = AlignedBuf::new(8192);
            small.set_len(8192);
            sink.write_at(&zeros.full()[..1 << 20], 1 << 20).unwrap();
            sink.write_at(data.as_slice(), 2 << 20).unwrap();
            // Too small for a zero range: written as data.
            sink.write_at(small.as_slice(), 3 << 20).unwrap();
            sink.sync().unwrap();
            let back = std::fs::read(tmp.path()).unwrap();
            assert!(back[..1 << 20].iter().all(|&b| b == 0xAA), "{dir}");
            assert!(back[1 << 20..2 << 20].iter().all(|&b| b == 0), "{dir}");
            assert!(back[2 << 20..3 << 20].iter().all(|&b| b == 5), "{dir}");
            assert!(
                back[3 << 20..(3 << 20) + 8192].iter().all(|&b| b == 0),
                "{dir}"
            );
            assert!(back[(3 << 20) + 8192..].iter().all(|&b| b == 0xAA), "{dir}");
        }
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 200]));
        for i in [0, 63, 64, 150, 199] {
            let mut v = vec![0u8; 200];
            v[i] = 1;
            assert!(!is_zero(&v), "{i}");
        }
    }

    #[test]
    fn writes_land_at_their_offsets_direct_or_not() {
        let tmp = tempfile::tempfile().unwrap();
        let sink = DiskSink::new(tmp.try_clone().unwrap(), "/tmp/t").unwrap();
        assert!(!sink.is_block_device());
        let mut a = AlignedBuf::new(8192);
        a.full_mut().fill(7);
        a.set_len(8192);
        sink.write_at(a.as_slice(), 8192).unwrap();
        // Unaligned pieces are accepted too (buffered from then on).
        sink.write_at(b"abc", 3).unwrap();
        sink.write_at(&[9u8; 100], 16384).unwrap();
        sink.sync().unwrap();
        let mut back = vec![0u8; 16484];
        tmp.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[3..6], b"abc");
        assert!(back[8192..16384].iter().all(|&b| b == 7));
        assert!(back[16384..].iter().all(|&b| b == 9));
        assert_eq!(sink.current_len().unwrap(), 16484);
        sink.truncate(10).unwrap();
        assert_eq!(File::metadata(&tmp).unwrap().len(), 10);
    }

    #[test]
    fn read_only_handle_fails_with_the_offset() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let ro = File::open(tmp.path()).unwrap();
        let sink = DiskSink::buffered(ro, tmp.path()).unwrap();
        let e = sink.write_at(b"x", 42).unwrap_err();
        assert!(matches!(e, ImageError::Write { offset: 42, .. }), "{e}");
        assert!(!e.is_transient());
    }
}
