//! Overwriting a whole device, IPA's shred fallback (spec 5.6: `shred --force [--zero]
//! --iterations N`) done natively: N passes of random data, then, with zeroize, one pass
//! of zeros.
//!
//! A random pass writes large aligned buffers with direct I/O from this thread while a
//! generator thread fills the next ones ([`BUFFERS`] rotate between the two over
//! channels), so the disk, not the generator, sets the pace. The zero pass uses the
//! device's write-zeroes command (BLKZEROOUT) when it has one, else direct writes of a
//! zero buffer. Every pass ends with an fsync, so a pass counts as done only once the
//! device has it. The abort flag is read between chunks.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use rand::TryRngCore;
use serde::Serialize;

use super::caps::Caps;
use super::io::{range_in_chunks, Direct, EraseIoError, KernelOps, RangeOp};
use super::random::WyRand;
use super::verify::{self, Expect, VerifyError, VerifyReport};
use crate::image::aligned::AlignedBuf;

/// Buffers in flight in a random pass: one being written, one filled and waiting, one
/// being filled.
pub const BUFFERS: usize = 3;
/// Default bytes per write (`OverwritePlan::buffer_bytes`). 4 MiB, as `dd bs=4M`: on a
/// loop device over tmpfs (where copying, not a disk, is the cost) `dd` took a median
/// 0.41 s per GiB with 8 MiB writes against 0.33 s with 4 MiB ones, likely as the buffers
/// in rotation fall out of cache between the generator and the kernel's copy; on a disk
/// the two sizes ran alike. It also takes the overwrite's buffers from 24 to 12 MiB.
pub const DEFAULT_BUFFER: usize = 4 << 20;
/// Bytes per BLKZEROOUT call: large enough for the device to stream, small enough for
/// progress and the abort flag to be seen every second or so.
const ZEROOUT_CHUNK: u64 = 1 << 30;

/// What to write: IPA's `agent_erase_devices_iterations` and
/// `agent_erase_devices_zeroize` (spec 5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverwritePlan {
    /// Random passes.
    pub iterations: u32,
    /// A final pass of zeros.
    pub zeroize: bool,
    /// Bytes per write (rounded up to 4 KiB); [`DEFAULT_BUFFER`] by default.
    pub buffer_bytes: usize,
}

impl Default for OverwritePlan {
    /// IPA's defaults: one random pass and a zero pass.
    fn default() -> Self {
        Self {
            iterations: 1,
            zeroize: true,
            buffer_bytes: DEFAULT_BUFFER,
        }
    }
}

impl OverwritePlan {
    /// Passes the plan writes.
    pub fn passes(&self) -> u32 {
        self.iterations + u32::from(self.zeroize)
    }
}

/// Where an overwrite is, given to the progress callback after every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverwriteProgress {
    /// The pass being written, from 1.
    pub pass: u32,
    /// Passes in the plan.
    pub passes: u32,
    /// Bytes written so far, all passes together.
    pub bytes_done: u64,
    /// Bytes all passes write (`size * passes`).
    pub bytes_total: u64,
}

/// How a pass wrote its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// Random data, written.
    Random,
    /// Zeros, written from a zero buffer.
    Zeros,
    /// Zeros, by the device's write-zeroes command.
    WriteZeroes,
}

/// One finished pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassReport {
    /// What was written.
    pub kind: PassKind,
    /// Bytes written (the device size).
    pub bytes: u64,
    /// Wall time including the final fsync.
    pub seconds: f64,
}

/// A finished overwrite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverwriteReport {
    /// Device size in bytes.
    pub size: u64,
    /// Passes written, in order; empty when the plan asked for none.
    pub passes: Vec<PassReport>,
    /// Bytes written, all passes together.
    pub bytes: u64,
    /// Wall time of all passes.
    pub seconds: f64,
    /// Whether the writes bypassed the page cache.
    pub direct_io: bool,
}

impl OverwriteReport {
    /// True when the plan had no pass (iterations 0 without zeroize): nothing was
    /// written, and the caller must not call the device erased.
    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }

    /// True when the last pass left zeros (what verification may then expect).
    pub fn ends_with_zeros(&self) -> bool {
        self.passes
            .last()
            .is_some_and(|p| p.kind != PassKind::Random)
    }
}

/// Why a verified overwrite failed.
#[derive(Debug, thiserror::Error)]
pub enum OverwriteError {
    /// Writing, flushing or reading failed, or abort was asked.
    #[error(transparent)]
    Io(#[from] EraseIoError),
    /// Sampling before the overwrite failed; nothing was written.
    #[error("reading samples before overwriting: {0}")]
    Sample(#[source] VerifyError),
    /// The passes ran but the read-back found what they should have replaced.
    #[error("overwrite did not erase the device: {0}")]
    Verify(#[source] VerifyError),
}

/// An overwrite and the verification that followed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifiedOverwrite {
    /// The passes.
    pub overwrite: OverwriteReport,
    /// The read-back; `None` when the plan wrote nothing.
    pub verify: Option<VerifyReport>,
}

/// [`overwrite`] between a sample of the device and its check: zeros expected when the
/// plan ends with a zero pass, else no sampled block may still hold its old data.
pub fn overwrite_verified(
    dev: &File,
    size: u64,
    plan: &OverwritePlan,
    caps: &Caps,
    abort: &AtomicBool,
    progress: &mut dyn FnMut(OverwriteProgress),
) -> Result<VerifiedOverwrite, OverwriteError> {
    let before = verify::take_samples(dev, size).map_err(OverwriteError::Sample)?;
    let report = overwrite(dev, size, plan, caps, abort, progress)?;
    if report.is_empty() {
        return Ok(VerifiedOverwrite {
            overwrite: report,
            verify: None,
        });
    }
    let expect = if report.ends_with_zeros() {
        Expect::Zeroes
    } else {
        Expect::NotOld
    };
    let verify = match verify::check(dev, &before, expect) {
        Ok(v) => v,
        Err(VerifyError::Io(e)) => return Err(e.into()),
        Err(e) => return Err(OverwriteError::Verify(e)),
    };
    Ok(VerifiedOverwrite {
        overwrite: report,
        verify: Some(verify),
    })
}

/// Overwrites the first `size` bytes of `dev` (opened read-write; switched to
/// `O_DIRECT` for the duration) as `plan` says. With `caps.write_zeroes()` the zero pass
/// is BLKZEROOUT; if the device then refuses it, zeros are written instead. `abort` is
/// read between chunks (then [`EraseIoError::Aborted`]); `progress` is called after
/// every chunk.
pub fn overwrite(
    dev: &File,
    size: u64,
    plan: &OverwritePlan,
    caps: &Caps,
    abort: &AtomicBool,
    progress: &mut dyn FnMut(OverwriteProgress),
) -> Result<OverwriteReport, EraseIoError> {
    let started = Instant::now();
    let mut io = Direct::new(dev)?;
    let passes = plan.passes();
    let mut run = Run {
        size,
        passes,
        pass: 0,
        done_before: 0,
        abort,
        progress,
    };
    let mut reports = Vec::new();
    if passes == 0 {
        tracing::warn!("overwrite plan has no pass (iterations 0, no zeroize): nothing written");
    }
    for _ in 0..plan.iterations {
        run.pass += 1;
        let t = Instant::now();
        random_pass(&mut io, &mut run, plan.buffer_bytes)?;
        reports.push(run.finish(&io, PassKind::Random, t)?);
    }
    if plan.zeroize {
        run.pass += 1;
        let t = Instant::now();
        let kind = zero_pass(&mut io, &mut run, plan.buffer_bytes, caps)?;
        reports.push(run.finish(&io, kind, t)?);
    }
    let report = OverwriteReport {
        size,
        bytes: size * u64::from(passes),
        passes: reports,
        seconds: started.elapsed().as_secs_f64(),
        direct_io: io.is_direct(),
    };
    tracing::info!(size, passes, seconds = report.seconds, "overwrite finished");
    Ok(report)
}

/// The running state shared by the passes.
struct Run<'a> {
    size: u64,
    passes: u32,
    pass: u32,
    /// Bytes of the passes already finished.
    done_before: u64,
    abort: &'a AtomicBool,
    progress: &'a mut dyn FnMut(OverwriteProgress),
}

impl Run<'_> {
    /// Reports `done` bytes of the current pass, then fails if abort was asked.
    fn step(&mut self, done: u64) -> Result<(), EraseIoError> {
        (self.progress)(OverwriteProgress {
            pass: self.pass,
            passes: self.passes,
            bytes_done: self.done_before + done,
            bytes_total: self.size * u64::from(self.passes),
        });
        self.check_abort(done)
    }

    /// Fails when abort was asked and the pass is not complete.
    fn check_abort(&self, done: u64) -> Result<(), EraseIoError> {
        if self.abort.load(Ordering::Relaxed) && done < self.size {
            return Err(EraseIoError::Aborted {
                pass: self.pass,
                done,
                total: self.size,
            });
        }
        Ok(())
    }

    fn finish(
        &mut self,
        io: &Direct<'_>,
        kind: PassKind,
        started: Instant,
    ) -> Result<PassReport, EraseIoError> {
        io.sync()?;
        self.done_before += self.size;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            pass = self.pass,
            passes = self.passes,
            ?kind,
            seconds,
            "overwrite pass done"
        );
        Ok(PassReport {
            kind,
            bytes: self.size,
            seconds,
        })
    }
}

fn random_pass(io: &mut Direct<'_>, run: &mut Run<'_>, buffer: usize) -> Result<(), EraseIoError> {
    let mut seed = [0u8; 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| EraseIoError::Seed(e.to_string()))?;
    let rng = WyRand::new(u64::from_le_bytes(seed));
    let size = run.size;
    let (full_tx, full_rx) = sync_channel::<AlignedBuf>(BUFFERS);
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx
            .send(AlignedBuf::new(buffer))
            .expect("the receiver is alive and the channel has room");
    }
    std::thread::scope(|s| {
        s.spawn(move || generate(rng, size, &free_rx, &full_tx));
        // The writer owns its channel ends: when it returns, error or not, they close
        // and the generator stops.
        write_random(io, run, full_rx, free_tx)
    })
}

/// Fills free buffers and passes them on until `size` bytes are out or the writer
/// hangs up.
fn generate(
    mut rng: WyRand,
    size: u64,
    free: &Receiver<AlignedBuf>,
    full: &SyncSender<AlignedBuf>,
) {
    let mut left = size;
    while left > 0 {
        let Ok(mut buf) = free.recv() else { return };
        let n = usize::try_from(left).map_or(buf.capacity(), |l| l.min(buf.capacity()));
        rng.fill(&mut buf.full_mut()[..n]);
        buf.set_len(n);
        if full.send(buf).is_err() {
            return;
        }
        left -= n as u64;
    }
}

fn write_random(
    io: &mut Direct<'_>,
    run: &mut Run<'_>,
    full: Receiver<AlignedBuf>,
    free: SyncSender<AlignedBuf>,
) -> Result<(), EraseIoError> {
    run.check_abort(0)?;
    let mut done = 0;
    while done < run.size {
        let buf = full.recv().map_err(|_| EraseIoError::Generator)?;
        io.write_all_at(buf.as_slice(), done)?;
        done += buf.len() as u64;
        // The generator may already be done and gone; the buffer is then not needed.
        let _ = free.send(buf);
        run.step(done)?;
    }
    Ok(())
}

fn zero_pass(
    io: &mut Direct<'_>,
    run: &mut Run<'_>,
    buffer: usize,
    caps: &Caps,
) -> Result<PassKind, EraseIoError> {
    run.check_abort(0)?;
    if caps.write_zeroes() {
        let size = run.size;
        match range_in_chunks(
            &KernelOps,
            RangeOp::ZeroOut,
            io.file(),
            size,
            ZEROOUT_CHUNK,
            |d| run.step(d),
        ) {
            Ok(()) => return Ok(PassKind::WriteZeroes),
            // Refused before anything was zeroed (the limits said yes, the device says
            // no): fall back to writing zeros, which covers the whole device again.
            Err(EraseIoError::Ioctl {
                errno: nix::errno::Errno::EOPNOTSUPP,
                offset,
                ..
            }) => {
                tracing::warn!(offset, "BLKZEROOUT not supported after all; writing zeros");
            }
            Err(e) => return Err(e),
        }
    }
    let mut buf = AlignedBuf::new(buffer);
    buf.fill_zero();
    let mut done = 0;
    while done < run.size {
        let n = usize::try_from(run.size - done).map_or(buf.len(), |l| l.min(buf.len()));
        io.write_all_at(&buf.as_slice()[..n], done)?;
        done += n as u64;
        run.step(done)?;
    }
    Ok(PassKind::Zeros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn file_of(len: usize, byte: u8) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&vec![byte; len], 0).unwrap();
        f
    }

    fn read_all(f: &File, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    fn plan(iterations: u32, zeroize: bool) -> OverwritePlan {
        OverwritePlan {
            iterations,
            zeroize,
            buffer_bytes: 64 << 10,
        }
    }

    #[test]
    fn random_then_zero_on_a_file_with_an_odd_tail() {
        // 300 KiB + 123: not a multiple of the buffer nor of a sector.
        let len = (300 << 10) + 123;
        let f = file_of(len, 0x5a);
        let mut seen = Vec::new();
        let r = overwrite(
            &f,
            len as u64,
            &plan(2, true),
            &Caps::default(),
            &AtomicBool::new(false),
            &mut |p| seen.push(p),
        )
        .unwrap();
        assert_eq!(read_all(&f, len), vec![0; len]);
        let kinds: Vec<_> = r.passes.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [PassKind::Random, PassKind::Random, PassKind::Zeros]);
        assert_eq!(r.bytes, 3 * len as u64);
        assert!(r.ends_with_zeros());
        let last = seen.last().unwrap();
        assert_eq!((last.pass, last.passes), (3, 3));
        assert_eq!((last.bytes_done, last.bytes_total), (r.bytes, r.bytes));
        assert!(seen.windows(2).all(|w| w[0].bytes_done < w[1].bytes_done));
        // The file is larger than `size`: nothing past it is touched.
        assert_eq!(f.metadata().unwrap().len(), len as u64);
    }

    #[test]
    fn random_only_leaves_no_old_block_and_not_zeros() {
        let len = 256 << 10;
        let f = file_of(len, 0x5a);
        let r = overwrite(
            &f,
            len as u64,
            &plan(1, false),
            &Caps::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        assert!(!r.ends_with_zeros());
        let data = read_all(&f, len);
        for block in data.chunks(4096) {
            assert_ne!(block, [0x5a; 4096]);
            assert_ne!(block, [0; 4096]);
        }
        // Two passes write different streams (fresh seeds).
        overwrite(
            &f,
            len as u64,
            &plan(1, false),
            &Caps::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        assert_ne!(read_all(&f, len), data);
    }

    #[test]
    fn an_empty_plan_writes_nothing_and_says_so() {
        let f = file_of(8192, 0x5a);
        let r = overwrite(
            &f,
            8192,
            &plan(0, false),
            &Caps::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        assert!(r.is_empty() && !r.ends_with_zeros());
        assert_eq!(r.bytes, 0);
        assert_eq!(read_all(&f, 8192), vec![0x5a; 8192]);
    }

    #[test]
    fn abort_stops_before_writing() {
        let len = 1 << 20;
        let f = file_of(len, 0x5a);
        let abort = AtomicBool::new(true);
        let e = overwrite(
            &f,
            len as u64,
            &plan(1, true),
            &Caps::default(),
            &abort,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(e, EraseIoError::Aborted { pass: 1, done: 0, total } if total == len as u64),
            "{e}"
        );
        assert_eq!(read_all(&f, len), vec![0x5a; len]);
    }

    #[test]
    fn abort_raised_mid_pass_stops_at_the_next_chunk() {
        let len = 1 << 20;
        let f = file_of(len, 0x5a);
        let abort = AtomicBool::new(false);
        let e = overwrite(
            &f,
            len as u64,
            &plan(2, true),
            &Caps::default(),
            &abort,
            &mut |p| {
                if p.bytes_done >= 3 * 65536 {
                    abort.store(true, Ordering::Relaxed);
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                EraseIoError::Aborted {
                    pass: 1,
                    done: 196608,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(read_all(&f, len)[196608..], vec![0x5a; len - 196608]);
    }

    #[test]
    fn write_zeroes_on_a_file_is_a_clear_ioctl_error() {
        let f = file_of(8192, 0x5a);
        let caps = Caps {
            write_zeroes_max_bytes: 1 << 30,
            ..Caps::default()
        };
        let e = overwrite(
            &f,
            8192,
            &plan(0, true),
            &caps,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("BLKZEROOUT of 8192 bytes at offset 0"),
            "{e}"
        );
    }
}
