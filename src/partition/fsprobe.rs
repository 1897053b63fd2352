//! Filesystem signatures, labels and UUIDs, read natively from a byte window of a disk:
//! the few kinds the deploy path asks about (ISO 9660 and vfat for `config-2`, ext2/3/4,
//! XFS, btrfs and swap for `root uuid` and partition lookups). Values are formatted the
//! way blkid/lsblk print them, since the conductor stores and compares those strings.
//!
//! To add a filesystem: write a `probe_<kind>` over the head buffer (extend
//! [`HEAD_LEN`] if its superblock sits further in) and add it to [`probe`].

use std::io::{self, Read, Seek};

use uuid::Uuid;

use super::rw::read_vec_at;
use crate::bytes::{le16, le32};

/// Bytes read from the start of a window: enough for the btrfs superblock at 64 KiB.
const HEAD_LEN: u64 = 0x11000;
/// Largest FAT root directory (or first root cluster) read for the volume label.
const FAT_ROOT_MAX: u64 = 64 << 10;

/// The filesystem kinds recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ISO 9660 (a config drive as Ironic builds it).
    Iso9660,
    /// FAT12/16/32.
    Vfat,
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4.
    Ext4,
    /// XFS.
    Xfs,
    /// btrfs.
    Btrfs,
    /// Linux swap.
    Swap,
}

impl FsKind {
    /// blkid's `TYPE` name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Swap => "swap",
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The filesystem kind.
    pub kind: FsKind,
    /// blkid's `UUID` (lower-case hyphenated, `XXXX-XXXX` for vfat, a date for ISO 9660).
    pub uuid: Option<String>,
    /// blkid's `LABEL`.
    pub label: Option<String>,
}

/// Probes the filesystem in the `len` bytes at `start` of `r`; `Ok(None)` when none of
/// the known signatures is there.
pub fn probe<R: Read + Seek + ?Sized>(
    r: &mut R,
    start: u64,
    len: u64,
) -> io::Result<Option<FsInfo>> {
    let head_len = usize::try_from(len.min(HEAD_LEN)).expect("bounded by HEAD_LEN");
    let head = read_vec_at(r, start, head_len)?;
    let found = probe_xfs(&head)
        .or_else(|| probe_ext(&head))
        .or_else(|| probe_btrfs(&head))
        .or_else(|| probe_iso9660(&head))
        .or_else(|| probe_swap(&head));
    if found.is_some() {
        return Ok(found);
    }
    probe_vfat(r, start, len, &head)
}

/// Text of a fixed-size label field: up to the first NUL, trailing spaces removed;
/// `None` when empty.
fn label_field(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end])
        .trim_end_matches(' ')
        .to_owned();
    (!s.is_empty()).then_some(s)
}

/// A big-endian (RFC 4122 byte order) UUID field; `None` when all zero.
fn uuid_field(b: &[u8]) -> Option<String> {
    let u = Uuid::from_slice(&b[..16]).ok()?;
    (!u.is_nil()).then(|| u.hyphenated().to_string())
}

fn probe_iso9660(h: &[u8]) -> Option<FsInfo> {
    const PVD: usize = 0x8000;
    let d = h.get(PVD..PVD + 2048)?;
    if d[0] != 1 || &d[1..6] != b"CD001" {
        return None;
    }
    // blkid's UUID: the creation date (else modification date) as YYYY-MM-DD-HH-MM-SS-CC.
    let date = |off: usize| {
        let digits = &d[off..off + 16];
        if !digits.iter().all(u8::is_ascii_digit) || digits.iter().all(|&c| c == b'0') {
            return None;
        }
        let s = std::str::from_utf8(digits).ok()?;
        Some(format!(
            "{}-{}-{}-{}-{}-{}-{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14],
            &s[14..16]
        ))
    };
    Some(FsInfo {
        kind: FsKind::Iso9660,
        uuid: date(813).or_else(|| date(830)),
        label: label_field(&d[40..72]),
    })
}

fn probe_ext(h: &[u8]) -> Option<FsInfo> {
    let sb = h.get(1024..2048)?;
    if le16(sb, 0x38) != 0xef53 {
        return None;
    }
    let compat = le32(sb, 0x5c);
    let incompat = le32(sb, 0x60);
    // extents, 64bit, flex_bg, meta_bg+csum... : any of these makes it ext4 for blkid.
    const EXT4_INCOMPAT: u32 = 0x0040 | 0x0080 | 0x0200 | 0x0400 | 0x1000 | 0x8000;
    let kind = if incompat & EXT4_INCOMPAT != 0 {
        FsKind::Ext4
    } else if compat & 0x0004 != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    };
    Some(FsInfo {
        kind,
        uuid: uuid_field(&sb[0x68..0x78]),
        label: label_field(&sb[0x78..0x88]),
    })
}

fn probe_xfs(h: &[u8]) -> Option<FsInfo> {
    let sb = h.get(..512)?;
    if &sb[..4] != b"XFSB" {
        return None;
    }
    Some(FsInfo {
        kind: FsKind::Xfs,
        uuid: uuid_field(&sb[32..48]),
        label: label_field(&sb[108..120]),
    })
}

fn probe_btrfs(h: &[u8]) -> Option<FsInfo> {
    let sb = h.get(0x10000..0x11000)?;
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return None;
    }
    Some(FsInfo {
        kind: FsKind::Btrfs,
        uuid: uuid_field(&sb[0x20..0x30]),
        label: label_field(&sb[0x12b..0x22b]),
    })
}

fn probe_swap(h: &[u8]) -> Option<FsInfo> {
    for page in [4096usize, 8192, 16384, 65536] {
        let Some(magic) = h.get(page - 10..page) else {
            break;
        };
        if magic == b"SWAPSPACE2" {
            return Some(FsInfo {
                kind: FsKind::Swap,
                uuid: uuid_field(&h[1036..1052]),
                label: label_field(&h[1052..1068]),
            });
        }
        if magic == b"SWAP-SPACE" {
            return Some(FsInfo {
                kind: FsKind::Swap,
                uuid: None,
                label: None,
            });
        }
    }
    None
}

fn probe_vfat<R: Read + Seek + ?Sized>(
    r: &mut R,
    start: u64,
    len: u64,
    h: &[u8],
) -> io::Result<Option<FsInfo>> {
    let Some(bs) = h.get(..512) else {
        return Ok(None);
    };
    let bps = u64::from(le16(bs, 11));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(le16(bs, 14));
    let fats = u64::from(bs[16]);
    let media = bs[21];
    let plausible = bs[510..512] == [0x55, 0xaa]
        && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && matches!(fats, 1 | 2)
        && (media == 0xf0 || media >= 0xf8);
    if !plausible {
        return Ok(None);
    }
    let fat16_size = u64::from(le16(bs, 22));
    let is_fat32 = fat16_size == 0;
    let (ext_sig, serial_off, label_off) = if is_fat32 {
        (0x42, 0x43, 0x47)
    } else {
        (0x26, 0x27, 0x2b)
    };
    let (fs_type_off, fs_type) = if is_fat32 {
        (0x52, &b"FAT32"[..])
    } else {
        (0x36, &b"FAT1"[..])
    };
    let has_ext = matches!(bs[ext_sig], 0x28 | 0x29);
    // Without the extended boot signature, insist on the type string to avoid taking
    // random boot code for FAT.
    if !has_ext && !bs[fs_type_off..].starts_with(fs_type) {
        return Ok(None);
    }
    let serial = le32(bs, serial_off);
    let uuid = has_ext.then(|| format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff));
    let boot_label = if has_ext {
        label_field(&bs[label_off..label_off + 11]).filter(|l| l != "NO NAME")
    } else {
        None
    };
    // blkid prefers the volume-label entry of the root directory.
    let root = if is_fat32 {
        let fat_size = u64::from(le32(bs, 36));
        let cluster = u64::from(le32(bs, 0x2c)).max(2);
        let data = (reserved + fats * fat_size) * bps;
        (data + (cluster - 2) * spc * bps, spc * bps)
    } else {
        (
            (reserved + fats * fat16_size) * bps,
            u64::from(le16(bs, 17)) * 32,
        )
    };
    let (root_off, root_len) = (root.0, root.1.min(FAT_ROOT_MAX));
    let dir_label = if root_len > 0 && root_off.checked_add(root_len).is_some_and(|e| e <= len) {
        let dir = read_vec_at(
            r,
            start + root_off,
            usize::try_from(root_len).expect("bounded"),
        )?;
        volume_label_entry(&dir)
    } else {
        None
    };
    Ok(Some(FsInfo {
        kind: FsKind::Vfat,
        uuid,
        label: dir_label.or(boot_label),
    }))
}

/// The volume-label entry of a FAT directory, if any.
fn volume_label_entry(dir: &[u8]) -> Option<String> {
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xe5 => continue,
            _ => {}
        }
        let attr = e[11];
        if attr == 0x0f {
            continue; // long-name entry
        }
        if attr & 0x18 == 0x08 {
            return label_field(&e[..11]).filter(|l| l != "NO NAME");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn iso9660_label_and_date_uuid() {
        let mut img = vec![0u8; 0x9000];
        let d = &mut img[0x8000..0x8800];
        d[0] = 1;
        d[1..6].copy_from_slice(b"CD001");
        d[40..72].copy_from_slice(format!("{:<32}", "config-2").as_bytes());
        d[813..829].copy_from_slice(b"2024010212345600");
        let info = probe(&mut Cursor::new(img), 0, 0x9000).unwrap().unwrap();
        assert_eq!(info.kind, FsKind::Iso9660);
        assert_eq!(info.label.as_deref(), Some("config-2"));
        assert_eq!(info.uuid.as_deref(), Some("2024-01-02-12-34-56-00"));
    }

    #[test]
    fn ext4_fields_at_a_window_offset() {
        let mut img = vec![0u8; 8192];
        let sb = &mut img[4096 + 1024..4096 + 2048];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x60] = 0x40; // extents
        let u = Uuid::new_v4();
        sb[0x68..0x78].copy_from_slice(u.as_bytes());
        sb[0x78..0x80].copy_from_slice(b"rootfs\0\0");
        let info = probe(&mut Cursor::new(img), 4096, 4096).unwrap().unwrap();
        assert_eq!(info.kind, FsKind::Ext4);
        assert_eq!(info.uuid, Some(u.to_string()));
        assert_eq!(info.label.as_deref(), Some("rootfs"));
    }

    #[test]
    fn zeroes_and_short_windows_are_nothing() {
        let mut c = Cursor::new(vec![0u8; 1 << 20]);
        assert!(probe(&mut c, 0, 1 << 20).unwrap().is_none());
        assert!(probe(&mut c, 0, 100).unwrap().is_none());
    }

    #[test]
    fn fat_root_label_wins_over_boot_sector() {
        assert_eq!(volume_label_entry(&[0u8; 64]), None);
        let mut dir = vec![0u8; 96];
        dir[..11].copy_from_slice(b"A       TXT");
        dir[11] = 0x20;
        dir[32..43].copy_from_slice(b"CONFIG-2   ");
        dir[43] = 0x08;
        assert_eq!(volume_label_entry(&dir).as_deref(), Some("CONFIG-2"));
    }
}
