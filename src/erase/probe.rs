//! What the erase steps need to know about a device before touching it (spec 5.1,
//! 5.2), read natively: sysfs for read-only flags and holders, the device's own bytes
//! for md superblocks and shared-disk filesystems, the parent's partition table for
//! partition types. Devices are only opened read-only here, always as the whole disk
//! (a partition is read at its sysfs offset), so no partition node is needed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use uuid::Uuid;

use crate::bytes::{be32, le32};
use crate::inventory::read::{list_dir_opt, read_opt, read_u64, under};
use crate::partition::table::{read_table, PartitionTable};
use crate::partition::Geometry;

use super::devices::{partitions, Candidate};
use super::EraseScope;

/// The link udev makes for the virtual-media floppy/USB image of agent parameters.
const VIRTUAL_MEDIA_LABEL: &str = "dev/disk/by-label/ir-vfd-dev";
/// md superblock magic (`MD_SB_MAGIC`).
const MD_MAGIC: u32 = 0xa92b_4efc;
/// GFS2 superblock: at 64 KiB, big-endian magic then metadata type 1.
const GFS2_SB_OFFSET: u64 = 64 << 10;
const GFS2_MAGIC: u32 = 0x0116_1970;
const GFS2_METATYPE_SB: u32 = 1;
/// Partition types IPA guards (5.2): GPT type GUIDs and the MBR type byte.
const GUARDED_GPT: [(&str, &str); 2] = [
    ("37affc90-ef7d-4e96-91c3-2d7ae055b174", "IBM GPFS Partition"),
    (
        "aa31e02a-400f-11db-9590-000c2911d1b8",
        "VMware VMFS Partition (GPT)",
    ),
];
const GUARDED_MBR: (u8, &str) = (0xfb, "VMware VMFS Partition (MBR)");
const GFS2_WHAT: &str = "Red Hat Global File System 2";

/// Whether `dev` is the virtual-media device (`/dev/disk/by-label/ir-vfd-dev` points
/// at it).
pub fn is_virtual_media(scope: &EraseScope, dev: &Candidate) -> bool {
    std::fs::read_link(under(&scope.sysroot, VIRTUAL_MEDIA_LABEL))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name == dev.kname)
}

/// Whether the kernel flags `dev` read-only (its own `ro`, else its disk's). An
/// unreadable flag counts as writable, as in IPA: the write then fails loudly.
pub fn is_read_only(scope: &EraseScope, dev: &Candidate) -> bool {
    let root = &scope.sysroot;
    let own = read_opt(&under(root, &format!("sys/class/block/{}/ro", dev.kname)));
    let flag = own.or_else(|| read_opt(&under(root, &format!("sys/block/{}/ro", dev.disk))));
    match flag {
        Some(v) => v == "1",
        None => {
            tracing::warn!(device = %dev.name, "cannot read the read-only flag; assuming writable");
            false
        }
    }
}

/// Kernel names of the devices stacked on `dev` or, for a disk, on any of its
/// partitions (`holders/`): md arrays, device-mapper devices.
pub fn holders(scope: &EraseScope, dev: &Candidate) -> io::Result<Vec<String>> {
    let root = &scope.sysroot;
    let mut names = vec![dev.kname.clone()];
    if !dev.is_partition() {
        names.extend(
            partitions(root, &dev.kname)
                .map_err(|e| io::Error::other(e.to_string()))?
                .into_iter()
                .map(|p| p.kname),
        );
    }
    let mut out = Vec::new();
    for name in names {
        out.extend(list_dir_opt(&under(
            root,
            &format!("sys/class/block/{name}/holders"),
        )));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `dev` is a Linux RAID member: an md array holds it (or one of its
/// partitions), or an md superblock (0.90, 1.0, 1.1, 1.2) sits on it or on one of its
/// partitions. IPA's `lsblk --fs` sees the same signatures and includes children too.
pub fn is_raid_member(scope: &EraseScope, dev: &Candidate) -> io::Result<bool> {
    if holders(scope, dev)?.iter().any(|h| h.starts_with("md")) {
        return Ok(true);
    }
    let mut disk = open_disk(scope, &dev.disk)?;
    for (start, size) in extents(scope, dev)? {
        if has_md_superblock(&mut disk, start, size)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The special-filesystem guard (5.2): `Some(what)` when `dev` is a partition of a
/// guarded type (GPFS, VMFS; GUIDs compared case-insensitively) or carries a GFS2
/// superblock.
pub fn protected(scope: &EraseScope, dev: &Candidate) -> io::Result<Option<&'static str>> {
    let mut disk = open_disk(scope, &dev.disk)?;
    if let Some(number) = dev.partition {
        let geometry = Geometry::of_file(&disk).map_err(io::Error::other)?;
        match read_table(&mut disk, geometry).map_err(io::Error::other)? {
            Some(PartitionTable::Gpt(gpt)) => {
                if let Some(entry) = gpt.entry(number) {
                    if let Some(what) = guarded_gpt_type(&entry.type_guid) {
                        return Ok(Some(what));
                    }
                }
            }
            Some(PartitionTable::Mbr(mbr)) => {
                let kind = mbr
                    .partitions()
                    .into_iter()
                    .find(|(n, ..)| *n == number)
                    .map(|(_, kind, ..)| kind);
                if kind == Some(GUARDED_MBR.0) {
                    return Ok(Some(GUARDED_MBR.1));
                }
            }
            None => {}
        }
    }
    let (start, size) = own_extent(scope, dev)?;
    if size >= GFS2_SB_OFFSET + 8 {
        let mut b = [0u8; 8];
        read_at(&mut disk, start + GFS2_SB_OFFSET, &mut b)?;
        let magic = be32(&b, 0);
        let kind = be32(&b, 4);
        if magic == GFS2_MAGIC && kind == GFS2_METATYPE_SB {
            return Ok(Some(GFS2_WHAT));
        }
    }
    Ok(None)
}

/// The label IPA gives a guarded GPT partition type.
pub fn guarded_gpt_type(type_guid: &Uuid) -> Option<&'static str> {
    let text = type_guid.hyphenated().to_string();
    GUARDED_GPT
        .iter()
        .find(|(guid, _)| guid.eq_ignore_ascii_case(&text))
        .map(|(_, what)| *what)
}

/// Whether an md superblock of any version lies inside `size` bytes at `start`: the
/// magic, the major version the position implies and, for 1.x, the superblock's own
/// record of where it sits (as libblkid checks), so stray magic bytes in old data do
/// not exempt a device from erasure.
pub fn has_md_superblock<R: Read + Seek + ?Sized>(
    r: &mut R,
    start: u64,
    size: u64,
) -> io::Result<bool> {
    // (offset, major version); 1.1 at 0, 1.2 at 4 KiB, 0.90 and 1.0 near the end.
    let mut places = vec![(0u64, 1u32), (4096, 1)];
    if size >= 128 << 10 {
        places.push(((size & !0xffff) - 0x10000, 0));
    }
    if size >= 16 << 10 {
        places.push(((((size >> 9) - 16) & !7) << 9, 1));
    }
    for (off, major) in places {
        if off + 136 > size {
            continue;
        }
        let mut b = [0u8; 136];
        read_at(r, start + off, &mut b)?;
        let le = |at: usize| le32(&b, at);
        let be = |at: usize| be32(&b, at);
        let found = if major == 0 {
            // 0.90 superblocks are in the writer's byte order.
            (le(0) == MD_MAGIC && le(4) == 0) || (be(0) == MD_MAGIC && be(4) == 0)
        } else {
            let super_offset = u64::from(le(128)) | (u64::from(le(132)) << 32);
            le(0) == MD_MAGIC && le(4) == 1 && super_offset == off >> 9
        };
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Byte ranges of `dev` on its disk: itself and, for a disk, each partition.
fn extents(scope: &EraseScope, dev: &Candidate) -> io::Result<Vec<(u64, u64)>> {
    let mut out = vec![own_extent(scope, dev)?];
    if !dev.is_partition() {
        for part in partitions(&scope.sysroot, &dev.kname).map_err(io::Error::other)? {
            out.push(own_extent(scope, &part)?);
        }
    }
    Ok(out)
}

/// Offset (from sysfs `start`, 512-byte units) and size of `dev` on its disk.
fn own_extent(scope: &EraseScope, dev: &Candidate) -> io::Result<(u64, u64)> {
    if !dev.is_partition() {
        return Ok((0, dev.size));
    }
    let start = read_u64(&under(
        &scope.sysroot,
        &format!("sys/block/{}/{}/start", dev.disk, dev.kname),
    ))
    .map_err(io::Error::other)?;
    Ok((start.saturating_mul(512), dev.size))
}

fn open_disk(scope: &EraseScope, kname: &str) -> io::Result<File> {
    let path = scope.rooted(&format!("/dev/{kname}"));
    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read_at<R: Read + Seek + ?Sized>(r: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn md_superblocks_of_every_version_are_found() {
        let size = 1u64 << 20;
        let len = usize::try_from(size).unwrap();
        let end_1_0 = (((size >> 9) - 16) & !7) << 9;
        let end_0_90 = (size & !0xffff) - 0x10000;
        // (offset, major, big-endian, recorded offset in sectors)
        for (off, major, be, recorded) in [
            (0u64, 1u32, false, 0u64),
            (4096, 1, false, 8),
            (end_1_0, 1, false, end_1_0 >> 9),
            (end_0_90, 0, true, 0),
            (end_0_90, 0, false, 0),
        ] {
            let mut img = vec![0u8; len];
            let at = usize::try_from(off).unwrap();
            let (magic, version) = if be {
                (MD_MAGIC.to_be_bytes(), major.to_be_bytes())
            } else {
                (MD_MAGIC.to_le_bytes(), major.to_le_bytes())
            };
            img[at..at + 4].copy_from_slice(&magic);
            img[at + 4..at + 8].copy_from_slice(&version);
            if major == 1 {
                img[at + 128..at + 136].copy_from_slice(&recorded.to_le_bytes());
            }
            assert!(
                has_md_superblock(&mut Cursor::new(img.clone()), 0, size).unwrap(),
                "{off}"
            );
            // The same bytes shifted by a sector are not a superblock.
            if major == 1 {
                img[at + 128..at + 136].copy_from_slice(&(recorded + 1).to_le_bytes());
                assert!(!has_md_superblock(&mut Cursor::new(img), 0, size).unwrap());
            }
        }
        // The magic alone is not enough.
        let mut stray = vec![0u8; len];
        stray[4096..4100].copy_from_slice(&MD_MAGIC.to_le_bytes());
        stray[4100..4104].copy_from_slice(&7u32.to_le_bytes());
        assert!(!has_md_superblock(&mut Cursor::new(stray), 0, size).unwrap());
    }

    #[test]
    fn guarded_types_match_in_any_case() {
        let vmfs = Uuid::parse_str("AA31E02A-400F-11DB-9590-000C2911D1B8").unwrap();
        assert_eq!(guarded_gpt_type(&vmfs), Some("VMware VMFS Partition (GPT)"));
        let linux = Uuid::parse_str("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        assert_eq!(guarded_gpt_type(&linux), None);
    }
}
