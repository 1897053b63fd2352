//! Express erase by the kernel's range commands, a building block IPA does not have
//! (spec 5.9: IPA's express step is an NVMe format or else a metadata wipe, and it never
//! discards). The orchestrator decides where it fits; this module only erases and
//! proves it.
//!
//! Order tried, each only when the device offers it ([`Caps`]):
//! 1. secure discard (BLKSECDISCARD): the device promises the data is gone;
//! 2. discard (BLKDISCARD): the blocks are unmapped, but what later reads return is up
//!    to the device, and some return the old data;
//! 3. write zeroes (BLKZEROOUT): every block reads as zeros.
//!
//! Samples read before the erase decide whether a method worked: after a discard no
//! sample that held data may still hold it ([`Expect::NotOld`]); after write zeroes every
//! sample must be zero. A method the device refuses (EOPNOTSUPP) passes to the next;
//! a discard that left old data is followed by write zeroes, which the kernel carries out
//! by writing zero pages when the device has no such command (as slow as an overwrite,
//! but the device is half-erased by then and must be finished). A device offering
//! none of the three gets [`ExpressError::Unsupported`] before anything is touched, so
//! the caller can fall back as spec 5.9 says.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use serde::Serialize;

use super::caps::Caps;
use super::io::{range_in_chunks, EraseIoError, KernelOps, RangeOp, RangeOps};
use super::verify::{self, Expect, VerifyError, VerifyReport};

/// Bytes per command when the kernel publishes no limit for it (secure discard): the
/// kernel splits further; this only paces progress and the abort flag.
const DEFAULT_CHUNK: u64 = 1 << 30;

/// A range erase method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpressMethod {
    /// BLKSECDISCARD.
    SecureDiscard,
    /// BLKDISCARD.
    Discard,
    /// BLKZEROOUT.
    WriteZeroes,
}

impl ExpressMethod {
    /// The name reports use (`secure_discard`, `discard`, `write_zeroes`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecureDiscard => "secure_discard",
            Self::Discard => "discard",
            Self::WriteZeroes => "write_zeroes",
        }
    }

    fn op(self) -> RangeOp {
        match self {
            Self::SecureDiscard => RangeOp::SecureDiscard,
            Self::Discard => RangeOp::Discard,
            Self::WriteZeroes => RangeOp::ZeroOut,
        }
    }

    fn expect(self) -> Expect {
        match self {
            Self::SecureDiscard | Self::Discard => Expect::NotOld,
            Self::WriteZeroes => Expect::Zeroes,
        }
    }
}

impl std::fmt::Display for ExpressMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method tried before the one that worked, and why it did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The method.
    pub method: ExpressMethod,
    /// What happened (`not supported by the device`, `old data survived at ...`).
    pub outcome: String,
}

/// A finished express erase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpressReport {
    /// The method that erased the device and passed verification.
    pub method: ExpressMethod,
    /// Methods tried before it.
    pub tried: Vec<Attempt>,
    /// Device size in bytes.
    pub bytes: u64,
    /// Wall time, verification included.
    pub seconds: f64,
    /// The verification that passed.
    pub verify: VerifyReport,
}

/// Why an express erase failed.
#[derive(Debug, thiserror::Error)]
pub enum ExpressError {
    /// The device offers no range erase; nothing was written.
    #[error("the device offers no secure discard, discard or write zeroes")]
    Unsupported,
    /// A command or read failed.
    #[error(transparent)]
    Io(#[from] EraseIoError),
    /// Sampling before the erase failed; nothing was written.
    #[error("reading samples before erasing: {0}")]
    Sample(#[source] VerifyError),
    /// The last method ran but its verification failed: the device is not erased.
    #[error("{method} did not erase the device: {source}")]
    Verify {
        /// The method.
        method: ExpressMethod,
        /// What the read-back found.
        #[source]
        source: VerifyError,
    },
}

/// Erases the first `size` bytes of `dev` (open read-write) by the first range method
/// that works and verifies, in the order of the module documentation.
pub fn express_erase(
    dev: &File,
    size: u64,
    caps: &Caps,
    abort: &AtomicBool,
) -> Result<ExpressReport, ExpressError> {
    express_erase_with(&KernelOps, dev, size, caps, abort)
}

fn express_erase_with(
    ops: &dyn RangeOps,
    dev: &File,
    size: u64,
    caps: &Caps,
    abort: &AtomicBool,
) -> Result<ExpressReport, ExpressError> {
    if !(caps.secure_discard || caps.discard() || caps.write_zeroes()) {
        return Err(ExpressError::Unsupported);
    }
    let started = Instant::now();
    let before = verify::take_samples(dev, size).map_err(ExpressError::Sample)?;
    let mut tried = Vec::new();
    // Set once a method ran: the device is no longer what it was, so it must be
    // finished with write zeroes even where the device has no such command.
    let mut touched = false;
    let discards = [
        (
            caps.secure_discard,
            ExpressMethod::SecureDiscard,
            DEFAULT_CHUNK,
        ),
        (
            caps.discard(),
            ExpressMethod::Discard,
            caps.discard_max_bytes,
        ),
    ];
    for (offered, method, chunk) in discards {
        if !offered || touched {
            continue;
        }
        match run(ops, method, dev, size, chunk, abort) {
            Ok(()) => touched = true,
            Err(EraseIoError::Ioctl {
                errno: Errno::EOPNOTSUPP,
                offset: 0,
                ..
            }) => {
                tracing::info!(%method, "not supported by the device");
                tried.push(Attempt {
                    method,
                    outcome: "not supported by the device".to_owned(),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        match verify::check(dev, &before, method.expect()) {
            Ok(v) => return Ok(report(method, tried, size, started, v)),
            Err(VerifyError::Io(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(%method, error = %e, "discard left data behind; zeroing");
                tried.push(Attempt {
                    method,
                    outcome: e.to_string(),
                });
            }
        }
    }
    if !(caps.write_zeroes() || touched) {
        return Err(ExpressError::Unsupported);
    }
    let method = ExpressMethod::WriteZeroes;
    let chunk = if caps.write_zeroes() {
        caps.write_zeroes_max_bytes.max(DEFAULT_CHUNK)
    } else {
        DEFAULT_CHUNK
    };
    run(ops, method, dev, size, chunk, abort)?;
    match verify::check(dev, &before, method.expect()) {
        Ok(v) => Ok(report(method, tried, size, started, v)),
        Err(VerifyError::Io(e)) => Err(e.into()),
        Err(source) => Err(ExpressError::Verify { method, source }),
    }
}

fn run(
    ops: &dyn RangeOps,
    method: ExpressMethod,
    dev: &File,
    size: u64,
    chunk: u64,
    abort: &AtomicBool,
) -> Result<(), EraseIoError> {
    let t = Instant::now();
    range_in_chunks(ops, method.op(), dev, size, chunk, |done| {
        if abort.load(Ordering::Relaxed) && done < size {
            return Err(EraseIoError::Aborted {
                pass: 1,
                done,
                total: size,
            });
        }
        Ok(())
    })?;
    // The commands complete synchronously; the flush makes a volatile write cache
    // (write zeroes on some devices) keep what it acknowledged.
    dev.sync_all().map_err(EraseIoError::Sync)?;
    tracing::info!(%method, size, seconds = t.elapsed().as_secs_f64(), "range erase done");
    Ok(())
}

fn report(
    method: ExpressMethod,
    tried: Vec<Attempt>,
    size: u64,
    started: Instant,
    verify: VerifyReport,
) -> ExpressReport {
    ExpressReport {
        method,
        tried,
        bytes: size,
        seconds: started.elapsed().as_secs_f64(),
        verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// What the stand-in device does with one command.
    #[derive(Clone, Copy)]
    enum Does {
        Refuse,
        Ignore,
        Zero,
        Fail,
    }

    /// A device whose range commands act on a regular file.
    struct Fake {
        secure: Does,
        discard: Does,
        zero: Does,
    }

    impl RangeOps for Fake {
        fn run(&self, op: RangeOp, dev: &File, offset: u64, len: u64) -> Result<(), Errno> {
            let does = match op {
                RangeOp::SecureDiscard => self.secure,
                RangeOp::Discard => self.discard,
                RangeOp::ZeroOut => self.zero,
            };
            match does {
                Does::Refuse => Err(Errno::EOPNOTSUPP),
                Does::Fail => Err(Errno::EIO),
                Does::Ignore => Ok(()),
                Does::Zero => dev
                    .write_all_at(&vec![0; usize::try_from(len).unwrap()], offset)
                    .map_err(|_| Errno::EIO),
            }
        }
    }

    const LEN: u64 = 1 << 20;

    fn device() -> File {
        let f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all_at(&data, 0).unwrap();
        f
    }

    fn all_zero(f: &File) -> bool {
        let mut v = vec![0; usize::try_from(LEN).unwrap()];
        f.read_exact_at(&mut v, 0).unwrap();
        v.iter().all(|&b| b == 0)
    }

    fn caps(secure: bool, discard: u64, zeroes: u64) -> Caps {
        Caps {
            discard_max_bytes: discard,
            write_zeroes_max_bytes: zeroes,
            secure_discard: secure,
        }
    }

    fn erase(fake: &Fake, f: &File, caps: &Caps) -> Result<ExpressReport, ExpressError> {
        express_erase_with(fake, f, LEN, caps, &AtomicBool::new(false))
    }

    #[test]
    fn secure_discard_first() {
        let f = device();
        let fake = Fake {
            secure: Does::Zero,
            discard: Does::Fail,
            zero: Does::Fail,
        };
        let r = erase(&fake, &f, &caps(true, 1 << 30, 1 << 30)).unwrap();
        assert_eq!(r.method, ExpressMethod::SecureDiscard);
        assert!(r.tried.is_empty());
        assert_eq!((r.verify.expect, r.verify.samples), (Expect::NotOld, 64));
        assert!(all_zero(&f));
    }

    #[test]
    fn a_refused_secure_discard_passes_to_discard() {
        let f = device();
        let fake = Fake {
            secure: Does::Refuse,
            discard: Does::Zero,
            zero: Does::Fail,
        };
        let r = erase(&fake, &f, &caps(true, 64 << 10, 0)).unwrap();
        assert_eq!(r.method, ExpressMethod::Discard);
        assert_eq!(r.tried[0].method, ExpressMethod::SecureDiscard);
        assert_eq!(r.tried[0].outcome, "not supported by the device");
        assert!(all_zero(&f));
    }

    #[test]
    fn a_discard_that_leaves_old_data_is_followed_by_write_zeroes() {
        let f = device();
        let fake = Fake {
            secure: Does::Fail,
            discard: Does::Ignore,
            zero: Does::Zero,
        };
        // No write-zeroes command: the kernel's zero-page fallback still finishes it.
        let r = erase(&fake, &f, &caps(false, 1 << 30, 0)).unwrap();
        assert_eq!(r.method, ExpressMethod::WriteZeroes);
        assert_eq!(r.tried.len(), 1);
        assert!(
            r.tried[0]
                .outcome
                .starts_with("old data survived at offset 0"),
            "{:?}",
            r.tried
        );
        assert_eq!(r.verify.expect, Expect::Zeroes);
        assert!(all_zero(&f));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["method"], "write_zeroes");
        assert_eq!(json["tried"][0]["method"], "discard");
    }

    #[test]
    fn write_zeroes_that_does_not_zero_fails_verification() {
        let f = device();
        let fake = Fake {
            secure: Does::Fail,
            discard: Does::Fail,
            zero: Does::Ignore,
        };
        let e = erase(&fake, &f, &caps(false, 0, 1 << 30)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("write_zeroes did not erase the device: data is not zero at offset 0"),
            "{e}"
        );
    }

    #[test]
    fn nothing_offered_touches_nothing() {
        let f = device();
        let fake = Fake {
            secure: Does::Zero,
            discard: Does::Zero,
            zero: Does::Zero,
        };
        let e = erase(&fake, &f, &caps(false, 0, 0)).unwrap_err();
        assert!(matches!(e, ExpressError::Unsupported), "{e}");
        // Secure discard claimed but refused, nothing else: still unsupported, untouched.
        let fake = Fake {
            secure: Does::Refuse,
            discard: Does::Zero,
            zero: Does::Zero,
        };
        let e = erase(&fake, &f, &caps(true, 0, 0)).unwrap_err();
        assert!(matches!(e, ExpressError::Unsupported), "{e}");
        assert!(!all_zero(&f));
    }

    #[test]
    fn a_failing_command_is_an_error_not_a_fallback() {
        let f = device();
        let fake = Fake {
            secure: Does::Fail,
            discard: Does::Zero,
            zero: Does::Zero,
        };
        let e = erase(&fake, &f, &caps(true, 1 << 30, 1 << 30)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("BLKSECDISCARD of {LEN} bytes at offset 0: EIO: I/O error")
        );
    }

    #[test]
    fn abort_stops_between_ranges() {
        let f = device();
        let fake = Fake {
            secure: Does::Fail,
            discard: Does::Zero,
            zero: Does::Fail,
        };
        let e = express_erase_with(
            &fake,
            &f,
            LEN,
            &caps(false, 64 << 10, 0),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ExpressError::Io(EraseIoError::Aborted { done: 65536, .. })
            ),
            "{e}"
        );
    }
}
