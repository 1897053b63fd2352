//! MBR (msdos) partition tables: parse the four primary entries and the logical
//! partitions of an extended one, add a primary entry, write the table back without
//! touching the boot code, and write a GPT's protective MBR.
//!
//! A sector counts as an MBR the way the kernel and parted decide: the 0x55AA signature
//! at byte 510 and a boot indicator of 0x00 or 0x80 in every entry (a bare filesystem's
//! boot code fails that test). The chain of extended boot records is walked with a
//! bound and a loop check, since the disk content is the tenant's.

use std::collections::HashSet;
use std::io::{self, Read, Seek, Write};

use super::rw::{read_exact_at, write_all_at};
use super::Geometry;
use crate::bytes::{le32, put_le32};

/// Byte offset of the 4-byte disk signature (lsblk's PTUUID, IPA's whole-disk `root uuid`).
pub const SIGNATURE_OFFSET: u64 = 440;
/// [`SIGNATURE_OFFSET`] as an index into sector 0.
const SIGNATURE_AT: usize = 440;
const _: () = assert!(SIGNATURE_AT as u64 == SIGNATURE_OFFSET);
/// The partition entries start here.
const TABLE_OFFSET: usize = 446;
/// Logical partitions followed at most (sfdisk stops at 60 in all).
const MAX_LOGICAL: usize = 128;

/// MBR partition type bytes the agent writes or recognises.
pub mod kinds {
    /// Linux native (parted's default).
    pub const LINUX: u8 = 0x83;
    /// Linux swap (parted's `linux-swap`).
    pub const SWAP: u8 = 0x82;
    /// FAT32 with LBA (parted's `fat32`).
    pub const FAT32_LBA: u8 = 0x0c;
    /// PowerPC PReP boot (parted's `prep` flag).
    pub const PREP: u8 = 0x41;
    /// GPT protective entry.
    pub const PROTECTIVE: u8 = 0xee;

    /// DOS, Windows (LBA) and Linux extended partitions.
    pub fn is_extended(kind: u8) -> bool {
        matches!(kind, 0x05 | 0x0f | 0x85)
    }
}

/// Why an MBR operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    /// Reading or writing the disk failed.
    #[error("MBR I/O: {0}")]
    Io(#[from] io::Error),
    /// All four primary slots are taken.
    #[error("all four primary partition slots are in use")]
    NoFreeSlot,
    /// The requested space is taken or out of reach.
    #[error("no free space: {0}")]
    NoSpace(String),
}

/// One of the four primary entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MbrEntry {
    /// Boot indicator: 0x80 bootable, 0x00 not.
    pub status: u8,
    /// Partition type byte.
    pub kind: u8,
    /// First sector.
    pub first_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

impl MbrEntry {
    /// Whether the slot holds a partition.
    pub fn is_used(&self) -> bool {
        self.kind != 0 && self.sectors != 0
    }

    /// Whether the boot flag is set.
    pub fn bootable(&self) -> bool {
        self.status == 0x80
    }

    fn parse(b: &[u8]) -> Self {
        MbrEntry {
            status: b[0],
            kind: b[4],
            first_lba: le32(b, 8),
            sectors: le32(b, 12),
        }
    }

    fn encode(&self, b: &mut [u8]) {
        b[..16].fill(0);
        if !self.is_used() {
            return;
        }
        let last = u64::from(self.first_lba) + u64::from(self.sectors) - 1;
        b[0] = self.status;
        b[1..4].copy_from_slice(&chs(u64::from(self.first_lba)));
        b[4] = self.kind;
        b[5..8].copy_from_slice(&chs(last));
        put_le32(b, 8, self.first_lba);
        put_le32(b, 12, self.sectors);
    }
}

/// CHS address of `lba` in the 255-head, 63-sector geometry every tool uses today,
/// saturated at (1023, 254, 63) past the 8 GB CHS limit.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    // Sector in bits 0-5, cylinder bits 8-9 in bits 6-7 of the second byte, cylinder
    // bits 0-7 in the third: deliberate bit-field packing (head < 255, sector <= 63,
    // cylinder <= 1023 here).
    #[allow(clippy::cast_possible_truncation)]
    [
        head as u8,
        (sector as u8) | (((cylinder >> 2) & 0xc0) as u8),
        cylinder as u8,
    ]
}

/// A logical partition inside an extended one, in absolute sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalPartition {
    /// Partition number (5, 6, ...).
    pub number: u32,
    /// Partition type byte.
    pub kind: u8,
    /// First sector on the disk.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// An MBR partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    /// The 32-bit disk signature at byte 440.
    pub disk_signature: u32,
    /// The four primary slots (numbers 1-4).
    pub primaries: [MbrEntry; 4],
    /// Logical partitions (numbers 5 and up).
    pub logicals: Vec<LogicalPartition>,
}

impl Mbr {
    /// An empty table with the given disk signature.
    pub fn new(disk_signature: u32) -> Self {
        Mbr {
            disk_signature,
            primaries: [MbrEntry::default(); 4],
            logicals: Vec::new(),
        }
    }

    /// Parses the primary table of a first sector; `None` if it is not an MBR.
    pub fn parse_sector0(b: &[u8]) -> Option<Self> {
        if b.len() < 512 || b[510..512] != [0x55, 0xaa] {
            return None;
        }
        let mut primaries = [MbrEntry::default(); 4];
        for (i, p) in primaries.iter_mut().enumerate() {
            let off = TABLE_OFFSET + 16 * i;
            *p = MbrEntry::parse(&b[off..off + 16]);
            if p.status != 0 && p.status != 0x80 {
                return None;
            }
        }
        Some(Mbr {
            disk_signature: le32(b, SIGNATURE_AT),
            primaries,
            logicals: Vec::new(),
        })
    }

    /// Reads the table from the first sector, following extended partitions.
    pub fn read<R: Read + Seek + ?Sized>(
        r: &mut R,
        geometry: Geometry,
    ) -> Result<Option<Self>, MbrError> {
        let mut sector0 = [0u8; 512];
        read_exact_at(r, 0, &mut sector0)?;
        let Some(mut mbr) = Self::parse_sector0(&sector0) else {
            return Ok(None);
        };
        if let Some(ext) = mbr
            .primaries
            .iter()
            .find(|p| p.is_used() && kinds::is_extended(p.kind))
        {
            mbr.logicals = read_logicals(r, geometry, u64::from(ext.first_lba))?;
        }
        Ok(Some(mbr))
    }

    /// Whether this is a GPT's protective (or hybrid) MBR.
    pub fn is_protective(&self) -> bool {
        self.primaries
            .iter()
            .any(|p| p.is_used() && p.kind == kinds::PROTECTIVE)
    }

    /// Number of used primary slots, an extended partition included (what
    /// `partprobe -d -s` lists below 5).
    pub fn primary_count(&self) -> usize {
        self.primaries.iter().filter(|p| p.is_used()).count()
    }

    /// Every partition as (number, type, first sector, sectors), primaries first; the
    /// extended container is listed as the kernel lists it.
    pub fn partitions(&self) -> Vec<(u32, u8, u64, u64)> {
        let primaries = self
            .primaries
            .iter()
            .zip(1u32..)
            .filter(|(p, _)| p.is_used())
            .map(|(p, number)| (number, p.kind, u64::from(p.first_lba), u64::from(p.sectors)));
        let logicals = self
            .logicals
            .iter()
            .map(|l| (l.number, l.kind, l.first_lba, l.sectors));
        primaries.chain(logicals).collect()
    }

    /// Puts a primary partition of `sectors` sectors at `first_lba` into the first free
    /// slot after checking it overlaps nothing and stays addressable. Returns its number.
    pub fn add_primary(
        &mut self,
        first_lba: u64,
        sectors: u64,
        kind: u8,
        geometry: Geometry,
    ) -> Result<u32, MbrError> {
        if sectors == 0 {
            return Err(MbrError::NoSpace("empty partition".to_owned()));
        }
        let last = first_lba.saturating_add(sectors - 1);
        if first_lba == 0 || last >= geometry.sectors() {
            return Err(MbrError::NoSpace(format!(
                "sectors {first_lba}-{last} are outside the disk"
            )));
        }
        let (Ok(first32), Ok(sectors32)) = (u32::try_from(first_lba), u32::try_from(sectors))
        else {
            return Err(MbrError::NoSpace(format!(
                "sectors {first_lba}-{last} are beyond what an MBR can address"
            )));
        };
        if u32::try_from(last).is_err() {
            return Err(MbrError::NoSpace(format!(
                "sectors {first_lba}-{last} are beyond what an MBR can address"
            )));
        }
        for (n, _, start, len) in self.partitions() {
            if start <= last && start + len > first_lba {
                return Err(MbrError::NoSpace(format!(
                    "partition {n} (sectors {start}-{}) occupies sectors {first_lba}-{last}",
                    start + len - 1
                )));
            }
        }
        let slot = self
            .primaries
            .iter()
            .position(|p| !p.is_used())
            .ok_or(MbrError::NoFreeSlot)?;
        self.primaries[slot] = MbrEntry {
            status: 0,
            kind,
            first_lba: first32,
            sectors: sectors32,
        };
        Ok(u32::try_from(slot).expect("one of four slots") + 1)
    }

    /// Writes the disk signature, the four entries and 0x55AA into sector 0, keeping the
    /// boot code (bytes 0-439) as it is. Logical partitions are never rewritten.
    pub fn write<W: Read + Write + Seek + ?Sized>(&self, w: &mut W) -> Result<(), MbrError> {
        let mut sector0 = [0u8; 512];
        read_exact_at(w, 0, &mut sector0)?;
        put_le32(&mut sector0, SIGNATURE_AT, self.disk_signature);
        sector0[444..446].fill(0);
        for (i, p) in self.primaries.iter().enumerate() {
            let off = TABLE_OFFSET + 16 * i;
            p.encode(&mut sector0[off..off + 16]);
        }
        sector0[510] = 0x55;
        sector0[511] = 0xaa;
        write_all_at(w, 0, &sector0)?;
        w.flush()?;
        Ok(())
    }
}

/// Walks the extended boot records starting at `ext_start`.
fn read_logicals<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
    ext_start: u64,
) -> Result<Vec<LogicalPartition>, MbrError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut sector = [0u8; 512];
    while out.len() < MAX_LOGICAL && ebr != 0 && ebr < geometry.sectors() && seen.insert(ebr) {
        read_exact_at(r, ebr * geometry.sector_size(), &mut sector)?;
        if sector[510..512] != [0x55, 0xaa] {
            break;
        }
        let data = MbrEntry::parse(&sector[TABLE_OFFSET..TABLE_OFFSET + 16]);
        let link = MbrEntry::parse(&sector[TABLE_OFFSET + 16..TABLE_OFFSET + 32]);
        if data.is_used() {
            out.push(LogicalPartition {
                number: 5 + u32::try_from(out.len()).expect("at most MAX_LOGICAL entries"),
                kind: data.kind,
                first_lba: ebr + u64::from(data.first_lba),
                sectors: u64::from(data.sectors),
            });
        }
        if !(link.is_used() && kinds::is_extended(link.kind)) {
            break;
        }
        ebr = ext_start + u64::from(link.first_lba);
    }
    Ok(out)
}

/// Writes a fresh protective MBR for a GPT into sector 0 (zeroing the rest of it): one
/// 0xEE entry from LBA 1 covering the disk, capped at 2^32-1 sectors.
pub fn write_protective<W: Write + Seek + ?Sized>(w: &mut W, geometry: Geometry) -> io::Result<()> {
    let mut sector = vec![0u8; usize::try_from(geometry.sector_size()).expect("sector fits usize")];
    protective_entry(geometry).encode(&mut sector[TABLE_OFFSET..TABLE_OFFSET + 16]);
    // UEFI: the protective entry's start CHS is 0x000200 regardless of geometry.
    sector[TABLE_OFFSET + 1..TABLE_OFFSET + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    write_all_at(w, 0, &sector)
}

fn protective_entry(geometry: Geometry) -> MbrEntry {
    MbrEntry {
        status: 0,
        kind: kinds::PROTECTIVE,
        first_lba: 1,
        sectors: u32::try_from(geometry.sectors() - 1).unwrap_or(u32::MAX),
    }
}

/// When sector 0 is a pure protective MBR (one 0xEE entry at LBA 1), makes that entry
/// cover the whole disk, as `sgdisk -e` does. Hybrid MBRs are left alone. Returns
/// whether sector 0 changed.
pub fn grow_protective<W: Read + Write + Seek + ?Sized>(
    w: &mut W,
    geometry: Geometry,
) -> io::Result<bool> {
    let mut sector0 = [0u8; 512];
    read_exact_at(w, 0, &mut sector0)?;
    let Some(mbr) = Mbr::parse_sector0(&sector0) else {
        return Ok(false);
    };
    let used: Vec<(usize, &MbrEntry)> = mbr
        .primaries
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_used())
        .collect();
    let [(slot, entry)] = used[..] else {
        return Ok(false);
    };
    let want = protective_entry(geometry);
    if entry.kind != kinds::PROTECTIVE || entry.first_lba != 1 || entry.sectors == want.sectors {
        return Ok(false);
    }
    let off = TABLE_OFFSET + 16 * slot;
    put_le32(&mut sector0, off + 12, want.sectors);
    sector0[off + 5..off + 8].copy_from_slice(&chs(u64::from(want.sectors)));
    write_all_at(w, 0, &sector0)?;
    Ok(true)
}

/// The disk signature at byte 440 as IPA reports it (`hexdump -e '"0x%08x"'`):
/// `0x` and 8 lower-case hex digits of the little-endian u32.
pub fn disk_identifier<R: Read + Seek + ?Sized>(r: &mut R) -> io::Result<String> {
    let mut b = [0u8; 4];
    read_exact_at(r, SIGNATURE_OFFSET, &mut b)?;
    Ok(format!("0x{:08x}", u32::from_le_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn geometry() -> Geometry {
        Geometry::new(64 << 20, 512).unwrap()
    }

    #[test]
    fn table_round_trips_and_keeps_boot_code() {
        let g = geometry();
        let mut d = Cursor::new(vec![0u8; 64 << 20]);
        d.get_mut()[..440].fill(0xab);
        let mut mbr = Mbr::new(0x1a2b_3c4d);
        assert_eq!(mbr.add_primary(2048, 2048, kinds::LINUX, g).unwrap(), 1);
        assert_eq!(mbr.add_primary(4096, 4096, kinds::SWAP, g).unwrap(), 2);
        mbr.primaries[0].status = 0x80;
        mbr.write(&mut d).unwrap();
        let back = Mbr::read(&mut d, g).unwrap().unwrap();
        assert_eq!(back, mbr);
        assert!(d.get_ref()[..440].iter().all(|&b| b == 0xab));
        assert_eq!(disk_identifier(&mut d).unwrap(), "0x1a2b3c4d");
    }

    #[test]
    fn overlaps_full_tables_and_unaddressable_sectors_are_refused() {
        let g = geometry();
        let mut mbr = Mbr::new(1);
        mbr.add_primary(2048, 2048, kinds::LINUX, g).unwrap();
        assert!(matches!(
            mbr.add_primary(4095, 10, kinds::LINUX, g),
            Err(MbrError::NoSpace(_))
        ));
        for i in 0..3 {
            mbr.add_primary(8192 + i * 100, 100, kinds::LINUX, g)
                .unwrap();
        }
        assert!(matches!(
            mbr.add_primary(20000, 10, kinds::LINUX, g),
            Err(MbrError::NoFreeSlot)
        ));
        let big = Geometry::new(3 << 40, 512).unwrap();
        let mut mbr = Mbr::new(1);
        assert!(matches!(
            mbr.add_primary(1 << 32, 10, kinds::LINUX, big),
            Err(MbrError::NoSpace(_))
        ));
    }

    #[test]
    fn bad_boot_indicators_mean_no_table() {
        let mut s = [0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        assert!(Mbr::parse_sector0(&s).is_some());
        s[TABLE_OFFSET + 16] = 0x12;
        assert!(Mbr::parse_sector0(&s).is_none());
    }

    #[test]
    fn logical_chain_is_followed_and_loops_stop() {
        let g = geometry();
        let mut d = Cursor::new(vec![0u8; 64 << 20]);
        let mut mbr = Mbr::new(7);
        mbr.add_primary(2048, 40960, 0x05, g).unwrap();
        mbr.write(&mut d).unwrap();
        // EBR at 2048: logical at +2048, link to the EBR at ext+10240.
        let ebr = |d: &mut Cursor<Vec<u8>>, at: u64, data: (u32, u32), link: u32| {
            let mut s = [0u8; 512];
            MbrEntry {
                status: 0,
                kind: 0x83,
                first_lba: data.0,
                sectors: data.1,
            }
            .encode(&mut s[TABLE_OFFSET..TABLE_OFFSET + 16]);
            MbrEntry {
                status: 0,
                kind: 0x05,
                first_lba: link,
                sectors: 100,
            }
            .encode(&mut s[TABLE_OFFSET + 16..TABLE_OFFSET + 32]);
            s[510] = 0x55;
            s[511] = 0xaa;
            write_all_at(d, at * 512, &s).unwrap();
        };
        ebr(&mut d, 2048, (2048, 4096), 10240);
        ebr(&mut d, 12288, (2048, 4096), 0); // links back to the first EBR: a loop
        let back = Mbr::read(&mut d, g).unwrap().unwrap();
        assert_eq!(back.logicals.len(), 2);
        assert_eq!(back.logicals[0].first_lba, 4096);
        assert_eq!(
            back.logicals[1],
            LogicalPartition {
                number: 6,
                kind: 0x83,
                first_lba: 14336,
                sectors: 4096
            }
        );
        assert_eq!(back.primary_count(), 1);
    }

    #[test]
    fn chs_saturates_past_the_limit() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(1 << 30), [0xfe, 0xff, 0xff]);
    }
}
