//! `destroy_disk_metadata` (spec 5.8) natively: the byte ranges IPA's `wipefs --all`,
//! the two `dd` calls and `sgdisk -Z` clear, computed by a pure function, and an
//! executor that zeroes them.
//!
//! - Start and end: `G` sectors each (33 at 512 bytes, 5 at 4096, as IPA; other sizes
//!   use `1 + ceil(16 KiB / S)`, which gives the same two values: open question 4).
//! - Whatever a GPT header on the disk declares (its arrays and its backup header, which
//!   a whole-disk image smaller than the disk leaves in the middle): `sgdisk -Z`.
//! - The 4 KiB blocks holding the signatures wipefs knows outside those areas: ISO 9660
//!   descriptors (32-40 KiB), swap magic for 8/16/64 KiB pages, btrfs superblocks
//!   (64 KiB, 64 MiB, 256 GiB), LUKS2 secondary headers (16 KiB-4 MiB), md 0.90 and 1.0
//!   superblocks near the end. ZFS labels are not cleared.
//!
//! Data beyond those blocks is untouched. Waiting for the device to be free (`fuser`)
//! is the caller's job.

use std::io::{self, Read, Seek};
use std::ops::Range;

use super::gpt::MAX_ARRAY_BYTES;
use super::rw::{read_exact_at, zero_range};
use super::{Disk, Geometry, MIB};
use crate::bytes::{le32, le64};

/// Signature blocks are cleared in 4 KiB units (every signature sits inside one).
const BLOCK: u64 = 4096;

/// Why the metadata could not be destroyed.
#[derive(Debug, thiserror::Error)]
#[error("destroying disk metadata: {0}")]
pub struct WipeError(#[from] pub io::Error);

/// IPA's `G`: sectors zeroed at each end of the disk.
pub fn gpt_wipe_sectors(sector_size: u64) -> u64 {
    1 + (16u64 << 10).div_ceil(sector_size)
}

/// The ranges to zero on a disk of `geometry`, plus `declared` (a GPT's own
/// structures), clipped to the disk, sorted and merged.
pub fn metadata_ranges(geometry: Geometry, declared: &[Range<u64>]) -> Vec<Range<u64>> {
    let size = geometry.size();
    let edge = gpt_wipe_sectors(geometry.sector_size()) * geometry.sector_size();
    let mut ranges = Vec::with_capacity(24);
    ranges.push(0..edge.min(size));
    if size > edge {
        ranges.push(size - edge..size);
    }
    let block = |at: u64| at..at + BLOCK;
    // ISO 9660 volume descriptors at 32, 34 and 36 KiB.
    ranges.push(0x8000..0xa000);
    // Swap magic in the last 10 bytes of the first page, for 8, 16 and 64 KiB pages.
    for page in [8u64 << 10, 16 << 10, 64 << 10] {
        ranges.push(block(page - BLOCK));
    }
    // btrfs superblock and its mirrors.
    for at in [64u64 << 10, 64 * MIB, 256 << 30] {
        ranges.push(block(at));
    }
    // LUKS2 secondary header candidates.
    for shift in 14..=22u32 {
        ranges.push(block(1u64 << shift));
    }
    // md 0.90: the last 64 KiB-aligned 64 KiB block; md 1.0: 8 KiB before the end,
    // aligned to 4 KiB.
    if size >= 128 << 10 {
        ranges.push(block((size & !0xffff) - 0x10000));
    }
    if size >= 16 << 10 {
        ranges.push(block((size - 8192) & !(BLOCK - 1)));
    }
    ranges.extend(declared.iter().cloned());
    merge(ranges, size)
}

fn merge(mut ranges: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    ranges = ranges
        .into_iter()
        .map(|r| r.start.min(size)..r.end.min(size))
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The structures GPT headers on the disk point at (primary at LBA 1 and backup in
/// the last sector, each checked only for its signature, as `sgdisk -Z` zaps even a
/// damaged table): both entry arrays and the other header.
pub fn declared_gpt_ranges<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
) -> io::Result<Vec<Range<u64>>> {
    let ss = geometry.sector_size();
    let mut out = Vec::new();
    for lba in [1, geometry.sectors() - 1] {
        let mut h = [0u8; 92];
        read_exact_at(r, lba * ss, &mut h)?;
        if &h[..8] != super::gpt::SIGNATURE {
            continue;
        }
        let alternate = le64(&h, 32);
        let entries = le64(&h, 72);
        let array = (u64::from(le32(&h, 80)) * u64::from(le32(&h, 84))).min(MAX_ARRAY_BYTES);
        let array_sectors = array.div_ceil(ss);
        out.push(lba * ss..(lba + 1) * ss);
        if let Some(start) = entries.checked_mul(ss) {
            out.push(start..start.saturating_add(array));
        }
        if let Some(start) = alternate.checked_mul(ss) {
            out.push(start..start.saturating_add(ss));
            // The other copy's array sits just before (backup) or after (primary) it.
            let other = if lba == 1 {
                alternate.saturating_sub(array_sectors)
            } else {
                alternate.saturating_add(1)
            };
            if let Some(o) = other.checked_mul(ss) {
                out.push(o..o.saturating_add(array));
            }
        }
    }
    Ok(out)
}

/// Zeroes the metadata ranges of the disk and returns them.
pub fn destroy_disk_metadata<D: Disk + ?Sized>(
    disk: &mut D,
    geometry: Geometry,
) -> Result<Vec<Range<u64>>, WipeError> {
    let declared = declared_gpt_ranges(disk, geometry)?;
    let ranges = metadata_ranges(geometry, &declared);
    for r in &ranges {
        zero_range(disk, r.clone())?;
    }
    disk.flush()?;
    tracing::info!(ranges = ranges.len(), "disk metadata destroyed");
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_match_ipa_for_both_sector_sizes() {
        assert_eq!(gpt_wipe_sectors(512), 33);
        assert_eq!(gpt_wipe_sectors(4096), 5);
        let g = Geometry::new(1 << 30, 512).unwrap();
        let r = metadata_ranges(g, &[]);
        // 33 sectors merged with the LUKS2 block at 16 KiB, then the ISO descriptors.
        assert_eq!(r[0], 0..20480);
        assert_eq!(r[1], 0x8000..0xa000);
        assert_eq!(r.last().unwrap().end, 1 << 30);
        assert!(r.last().unwrap().start <= (1 << 30) - 33 * 512);
        let g4 = Geometry::new(1 << 30, 4096).unwrap();
        assert!(metadata_ranges(g4, &[])
            .iter()
            .any(|r| r.contains(&(20480 - 1))));
    }

    #[test]
    fn ranges_are_merged_sorted_and_clipped() {
        let g = Geometry::new(1 << 20, 512).unwrap();
        let r = metadata_ranges(g, &[(1 << 19)..(1 << 19) + 10, (2 << 20)..(3 << 20)]);
        assert!(r.windows(2).all(|w| w[0].end < w[1].start));
        assert!(r.iter().all(|x| x.end <= 1 << 20));
        assert!(r.iter().any(|x| x.contains(&(1 << 19))));
    }

    #[test]
    fn total_is_small_on_a_big_disk() {
        let g = Geometry::new(1 << 40, 512).unwrap();
        let total: u64 = metadata_ranges(g, &[])
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert!(total < 1 << 20, "{total}");
    }
}
