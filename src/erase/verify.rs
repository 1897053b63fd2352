//! Read-back verification of an erase by samples: before erasing, read a modest number
//! of blocks (the first, the last, the rest spread at random over the device); after,
//! read them again and fail if an erase that promised zeros left anything else, or if
//! old data is still where it was. A sample is cheap (64 blocks of 4 KiB by default,
//! direct reads), so every erase can afford it; it proves the method did something
//! everywhere it looked, not that every block was reached (the whole-device read is
//! the tests' job).

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::Serialize;

use super::io::{Direct, EraseIoError};
use super::random::WyRand;
use crate::image::aligned::AlignedBuf;

/// Bytes per sample: a page, which every logical block size divides.
pub const SAMPLE_BLOCK: u64 = 4096;
/// Samples per device by default.
pub const SAMPLE_COUNT: usize = 64;

/// What the erase promised about the sampled blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Every byte reads as zero (zero pass, write zeroes).
    Zeroes,
    /// No block that held data still holds it (random pass, discard). A block that was
    /// all zeros before proves nothing either way and passes.
    NotOld,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A sample could not be read.
    #[error(transparent)]
    Io(#[from] EraseIoError),
    /// A block that should read as zeros does not.
    #[error("data is not zero at offset {offset} ({count} of {samples} samples) after an erase that promised zeros")]
    NotZero {
        /// The first failing sample's byte offset.
        offset: u64,
        /// Failing samples.
        count: usize,
        /// Samples checked.
        samples: usize,
    },
    /// A block still holds what it held before the erase.
    #[error("old data survived at offset {offset} ({count} of {samples} samples)")]
    Survived {
        /// The first failing sample's byte offset.
        offset: u64,
        /// Failing samples.
        count: usize,
        /// Samples checked.
        samples: usize,
    },
}

/// The outcome of a passed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// What was checked.
    pub expect: Expect,
    /// Blocks read back.
    pub samples: usize,
    /// Bytes per block.
    pub block: u64,
    /// Samples that were all zeros before the erase (with [`Expect::NotOld`] they
    /// passed without proving anything).
    pub zero_before: usize,
}

/// Blocks read before an erase.
#[derive(Debug, Clone)]
pub struct Samples {
    block: u64,
    taken: Vec<(u64, Vec<u8>)>,
}

impl Samples {
    /// The sampled offsets, ascending.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.taken.iter().map(|(o, _)| *o)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// True when nothing was sampled (a device smaller than one block).
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// Bytes per sample.
    pub fn block(&self) -> u64 {
        self.block
    }
}

/// Up to `count` distinct offsets of `block`-sized, `block`-aligned blocks inside
/// `size` bytes, ascending: the first block, the last whole block, and one random block
/// in each of `count - 2` equal stretches between them (so they spread over the whole
/// device). Every block when there are no more than `count`; none when `size < block`.
pub fn sample_offsets(size: u64, count: usize, block: u64, seed: u64) -> Vec<u64> {
    assert!(block > 0, "zero block size");
    let blocks = size / block;
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    if count == 0 || blocks == 0 {
        return Vec::new();
    }
    if blocks <= count {
        return (0..blocks).map(|b| b * block).collect();
    }
    let mut out = vec![0];
    if count >= 2 {
        // The interior blocks 1..blocks-1 in `strata` stretches; count < blocks keeps
        // each stretch at least one block long.
        let (interior, strata) = (blocks - 2, count - 2);
        let mut rng = WyRand::new(seed);
        for i in 0..strata {
            let start = stretch_bound(interior, strata, i);
            let end = stretch_bound(interior, strata, i + 1);
            out.push((1 + start + rng.below(end - start)) * block);
        }
        out.push((blocks - 1) * block);
    }
    out
}

/// `interior * i / strata` without overflow.
fn stretch_bound(interior: u64, strata: u64, i: u64) -> u64 {
    let b = u128::from(interior) * u128::from(i) / u128::from(strata);
    u64::try_from(b).expect("i <= strata keeps the bound within interior")
}

/// [`SAMPLE_COUNT`] blocks of [`SAMPLE_BLOCK`] bytes of a `size`-byte device, at
/// offsets chosen afresh each time (a device cannot know them in advance).
pub fn take_samples(dev: &File, size: u64) -> Result<Samples, VerifyError> {
    let offsets = sample_offsets(size, SAMPLE_COUNT, SAMPLE_BLOCK, rand::random());
    snapshot(dev, &offsets, SAMPLE_BLOCK)
}

/// Reads the `block`-byte blocks at `offsets` (direct reads where the device allows).
pub fn snapshot(dev: &File, offsets: &[u64], block: u64) -> Result<Samples, VerifyError> {
    let taken = read_blocks(dev, offsets, block)?
        .into_iter()
        .zip(offsets)
        .map(|(data, &o)| (o, data))
        .collect();
    Ok(Samples { block, taken })
}

/// Sample reads in flight at once. Each read is one small random access, so its time is
/// the device's latency (milliseconds on a busy or spinning disk); with several in
/// flight the device overlaps them, and the reads around an erase stop costing
/// noticeably next to the erase itself.
pub const READS_IN_FLIGHT: usize = 8;

fn read_blocks(dev: &File, offsets: &[u64], block: u64) -> Result<Vec<Vec<u8>>, VerifyError> {
    let len = usize::try_from(block).expect("a sample block fits in memory");
    let mut io = Direct::new(dev)?;
    let Some((&first, rest)) = offsets.split_first() else {
        return Ok(Vec::new());
    };
    // The first read settles direct or buffered (Direct drops to buffered when the
    // device refuses this transfer); the others are the same size and alignment, so
    // they read the same way, through the same open file description.
    let mut buf = AlignedBuf::new(len);
    io.read_exact_at(&mut buf.full_mut()[..len], first)?;
    let mut out = vec![buf.full()[..len].to_vec()];
    if rest.is_empty() {
        return Ok(out);
    }
    let per_reader = rest.len().div_ceil(READS_IN_FLIGHT);
    let read_share = |share: &[u64]| -> Result<Vec<Vec<u8>>, EraseIoError> {
        let mut buf = AlignedBuf::new(len);
        share
            .iter()
            .map(|&offset| {
                dev.read_exact_at(&mut buf.full_mut()[..len], offset)
                    .map_err(|source| EraseIoError::Read {
                        offset,
                        len,
                        source,
                    })?;
                Ok(buf.full()[..len].to_vec())
            })
            .collect()
    };
    let shares: Vec<Result<Vec<Vec<u8>>, EraseIoError>> = std::thread::scope(|s| {
        let readers: Vec<_> = rest
            .chunks(per_reader)
            .map(|share| s.spawn(move || read_share(share)))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for share in shares {
        out.extend(share?);
    }
    drop(io);
    Ok(out)
}

/// Reads the sampled blocks again and checks them against `expect`.
pub fn check(dev: &File, before: &Samples, expect: Expect) -> Result<VerifyReport, VerifyError> {
    let offsets: Vec<u64> = before.offsets().collect();
    let after = read_blocks(dev, &offsets, before.block)?;
    let samples = before.len();
    let mut failed = Vec::new();
    let mut zero_before = 0;
    for ((offset, old), new) in before.taken.iter().zip(&after) {
        let was_zero = is_zero(old);
        zero_before += usize::from(was_zero);
        let bad = match expect {
            Expect::Zeroes => !is_zero(new),
            Expect::NotOld => !was_zero && new == old,
        };
        if bad {
            failed.push(*offset);
        }
    }
    if let Some(&offset) = failed.first() {
        let count = failed.len();
        tracing::warn!(?expect, offset, count, samples, "erase verification failed");
        return Err(match expect {
            Expect::Zeroes => VerifyError::NotZero {
                offset,
                count,
                samples,
            },
            Expect::NotOld => VerifyError::Survived {
                offset,
                count,
                samples,
            },
        });
    }
    tracing::debug!(?expect, samples, zero_before, "erase verified");
    Ok(VerifyReport {
        expect,
        samples,
        block: before.block,
        zero_before,
    })
}

fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn offsets_include_both_ends_are_aligned_distinct_and_in_bounds() {
        for (size, count, block, seed) in [
            (64 << 20, 64, 4096, 1),
            (64 << 20, 64, 4096, 2),
            ((1 << 40) + 512, 64, 4096, 3),
            (10 * 4096 + 100, 5, 4096, 4),
            (66 * 4096, 64, 4096, 5),
            (1 << 30, 2, 512, 6),
        ] {
            let o = sample_offsets(size, count, block, seed);
            assert_eq!(o.len(), count, "{size}");
            assert_eq!(o[0], 0);
            assert_eq!(*o.last().unwrap(), (size / block - 1) * block);
            assert!(o.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
            assert!(o.iter().all(|x| x % block == 0 && x + block <= size));
        }
    }

    #[test]
    fn offsets_spread_over_the_device() {
        let size = 1u64 << 30;
        let o = sample_offsets(size, 66, 4096, 7);
        // One sample in each 64th of the interior: no gap much wider than a stretch.
        let widest = o.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest <= 2 * (size / 64), "{widest}");
        // Another seed, other places.
        assert_ne!(o, sample_offsets(size, 66, 4096, 8));
        assert_eq!(o, sample_offsets(size, 66, 4096, 7));
    }

    #[test]
    fn small_devices_get_every_block_or_none() {
        assert_eq!(sample_offsets(3 * 4096, 64, 4096, 1), [0, 4096, 8192]);
        assert_eq!(sample_offsets(4095, 64, 4096, 1), Vec::<u64>::new());
        assert_eq!(sample_offsets(1 << 20, 0, 4096, 1), Vec::<u64>::new());
        assert_eq!(sample_offsets(1 << 20, 1, 4096, 1), [0]);
    }

    fn file_of(blocks: u64, byte: u8) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&vec![byte; usize::try_from(blocks * 4096).unwrap()], 0)
            .unwrap();
        f
    }

    #[test]
    fn unchanged_data_fails_both_checks_naming_the_offset() {
        let f = file_of(16, 0xa5);
        let s = snapshot(&f, &sample_offsets(16 * 4096, 4, 4096, 1), 4096).unwrap();
        let e = check(&f, &s, Expect::NotOld).unwrap_err();
        assert_eq!(
            e.to_string(),
            "old data survived at offset 0 (4 of 4 samples)"
        );
        let e = check(&f, &s, Expect::Zeroes).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::NotZero {
                    offset: 0,
                    count: 4,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn zeroed_data_passes_and_one_missed_block_fails() {
        let f = file_of(16, 0xa5);
        let s = snapshot(&f, &[0, 4096 * 7, 4096 * 15], 4096).unwrap();
        f.write_all_at(&[0; 16 * 4096], 0).unwrap();
        let r = check(&f, &s, Expect::Zeroes).unwrap();
        assert_eq!((r.samples, r.zero_before, r.block), (3, 0, 4096));
        check(&f, &s, Expect::NotOld).unwrap();
        f.write_all_at(&[0xa5; 4096], 4096 * 7).unwrap();
        let e = check(&f, &s, Expect::NotOld).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Survived {
                    offset: 28672,
                    count: 1,
                    samples: 3
                }
            ),
            "{e}"
        );
        // One stray non-zero byte is enough to fail a zero promise.
        f.write_all_at(&[0; 4096], 4096 * 7).unwrap();
        f.write_all_at(&[1], 4096 * 15 + 4095).unwrap();
        let e = check(&f, &s, Expect::Zeroes).unwrap_err();
        assert!(
            matches!(e, VerifyError::NotZero { offset: 61440, .. }),
            "{e}"
        );
    }

    #[test]
    fn samples_read_in_flight_come_back_in_offset_order() {
        // More samples than readers, not a multiple of them: every share, the first
        // read and an odd last share must land at their own offsets.
        let blocks = 3 * READS_IN_FLIGHT as u64 + 5;
        let f = tempfile::tempfile().unwrap();
        for b in 0..blocks {
            let byte = u8::try_from(b % 251).unwrap() + 1;
            f.write_all_at(&[byte; 4096], b * 4096).unwrap();
        }
        let offsets: Vec<u64> = (0..blocks).rev().step_by(2).map(|b| b * 4096).collect();
        let s = snapshot(&f, &offsets, 4096).unwrap();
        assert_eq!(s.offsets().collect::<Vec<_>>(), offsets);
        for (offset, data) in &s.taken {
            let byte = u8::try_from(offset / 4096 % 251).unwrap() + 1;
            assert!(
                data.len() == 4096 && data.iter().all(|&b| b == byte),
                "{offset}"
            );
        }
        // A read past the end fails, naming its offset, whichever reader had it.
        let e = snapshot(&f, &[0, 4096, blocks * 4096], 4096).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("at offset {}", blocks * 4096)),
            "{e}"
        );
    }

    #[test]
    fn blocks_that_were_zero_pass_not_old_and_are_counted() {
        let f = file_of(4, 0);
        let s = snapshot(&f, &[0, 8192], 4096).unwrap();
        let r = check(&f, &s, Expect::NotOld).unwrap();
        assert_eq!(r.zero_before, 2);
    }
}
