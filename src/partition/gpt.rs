//! GUID partition tables (UEFI spec, chapter 5): parse the primary or the backup copy,
//! build a new table, add an entry, move the backup to the end of the disk, write both
//! copies. The entry array is kept as raw bytes so a table we did not create is written
//! back byte for byte apart from the fields we change.
//!
//! Parsing treats the disk as hostile: every header field that sizes a read or an
//! offset is bounded before use, so a crafted header cannot make us allocate more than
//! [`MAX_ARRAY_BYTES`] or read outside the disk.

use std::io::{self, Read, Seek, Write};

use uuid::Uuid;

use super::rw::{crc32, read_exact_at, read_vec_at, write_all_at};
use super::Geometry;
use crate::bytes::{le32, le64, put_le32, put_le64};

/// "EFI PART", at the start of both headers.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0, the only one in use.
const REVISION_1_0: u32 = 0x0001_0000;
/// The header fields end here; the rest of the sector is reserved (zero).
const HEADER_LEN: usize = 92;
/// Size of the entry fields we read and write (larger entries keep their tail).
pub const ENTRY_LEN: usize = 128;
/// Entries in a table we create (16 KiB, the minimum the UEFI spec allows).
const DEFAULT_ENTRIES: u32 = 128;
/// Largest entry array we accept from a disk: 8192 entries of 128 bytes. Real tables use
/// 16 KiB; the cap only stops a crafted header from sizing a huge allocation.
pub const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// Partition type GUIDs the agent creates or looks for.
pub mod types {
    use uuid::Uuid;

    /// EFI System Partition (parted's `boot`/`esp` flag on GPT).
    pub const EFI_SYSTEM: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
    /// BIOS boot partition (parted's `bios_grub` flag).
    pub const BIOS_BOOT: Uuid = Uuid::from_u128(0x21686148_6449_6E6F_744E_656564454649);
    /// Linux filesystem data (parted's default, sgdisk's 8300).
    pub const LINUX_FS: Uuid = Uuid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
    /// Linux swap (parted's `linux-swap`).
    pub const LINUX_SWAP: Uuid = Uuid::from_u128(0x0657FD6D_A4AB_43C4_84E5_0933C84B4F4F);
    /// PowerPC PReP boot (parted's `prep` flag).
    pub const PREP_BOOT: Uuid = Uuid::from_u128(0x9E1A2D38_C612_4316_AA26_8B49521E5A8B);
}

/// Why a GPT could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Reading or writing the disk failed.
    #[error("GPT I/O: {0}")]
    Io(#[from] io::Error),
    /// A header carries the signature but is not valid.
    #[error("invalid GPT header at LBA {lba}: {reason}")]
    BadHeader {
        /// Where the header was read.
        lba: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entry array does not match the header's CRC.
    #[error("GPT partition entry array CRC mismatch (header at LBA {lba})")]
    BadArray {
        /// The header that describes the array.
        lba: u64,
    },
    /// A used entry lies outside the usable sectors.
    #[error("partition {number} (sectors {first}-{last}) lies outside the usable sectors {first_usable}-{last_usable}")]
    OutOfRange {
        /// Partition number.
        number: u32,
        /// Its first sector.
        first: u64,
        /// Its last sector.
        last: u64,
        /// First usable sector of the table.
        first_usable: u64,
        /// Last usable sector of the table.
        last_usable: u64,
    },
    /// Two used entries share sectors.
    #[error("partitions {0} and {1} overlap")]
    Overlap(u32, u32),
    /// Every entry of the array is in use.
    #[error("no free entry in the GPT")]
    NoFreeEntry,
    /// The requested space is not free.
    #[error("no free space: {0}")]
    NoSpace(String),
    /// The header layout does not fit the disk.
    #[error("GPT layout does not fit the disk: {0}")]
    Layout(&'static str),
}

/// The fields of a GPT header (either copy); `header_size` is always written as 92.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// Revision, 0x00010000 for 1.0.
    pub revision: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First sector a partition may use.
    pub first_usable_lba: u64,
    /// Last sector a partition may use.
    pub last_usable_lba: u64,
    /// The disk GUID.
    pub disk_guid: Uuid,
    /// LBA of this copy's entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub num_entries: u32,
    /// Size of one entry (128 x 2^n).
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc32: u32,
}

impl GptHeader {
    /// Bytes of the entry array.
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// Sectors the entry array takes.
    pub fn array_sectors(&self, sector_size: u64) -> u64 {
        self.array_bytes().div_ceil(sector_size)
    }

    /// Parses and checks the header in `sector`, read at `lba` of `geometry`.
    fn parse(sector: &[u8], lba: u64, geometry: Geometry) -> Result<Self, GptError> {
        let bad = |reason| GptError::BadHeader { lba, reason };
        if &sector[..8] != SIGNATURE {
            return Err(bad("no signature"));
        }
        let header_size = le32(sector, 12) as usize;
        if !(HEADER_LEN..=sector.len()).contains(&header_size) {
            return Err(bad("header size out of range"));
        }
        let mut copy = sector[..header_size].to_vec();
        copy[16..20].fill(0);
        if crc32(&copy) != le32(sector, 16) {
            return Err(bad("header CRC mismatch"));
        }
        let h = GptHeader {
            revision: le32(sector, 8),
            my_lba: le64(sector, 24),
            alternate_lba: le64(sector, 32),
            first_usable_lba: le64(sector, 40),
            last_usable_lba: le64(sector, 48),
            disk_guid: Uuid::from_bytes_le(sector[56..72].try_into().expect("16 bytes")),
            entries_lba: le64(sector, 72),
            num_entries: le32(sector, 80),
            entry_size: le32(sector, 84),
            entries_crc32: le32(sector, 88),
        };
        if h.revision >> 16 != 1 {
            return Err(bad("unsupported revision"));
        }
        if h.my_lba != lba {
            return Err(bad("header does not point at itself"));
        }
        if u64::from(h.entry_size) < ENTRY_LEN as u64 || !h.entry_size.is_power_of_two() {
            return Err(bad("entry size is not 128 x 2^n"));
        }
        if h.num_entries == 0 || h.array_bytes() > MAX_ARRAY_BYTES {
            return Err(bad("entry count out of range"));
        }
        let array_end = h
            .entries_lba
            .checked_mul(geometry.sector_size())
            .and_then(|start| start.checked_add(h.array_bytes()));
        if h.entries_lba < 2 || array_end.is_none_or(|end| end > geometry.size()) {
            return Err(bad("entry array outside the disk"));
        }
        if h.first_usable_lba > h.last_usable_lba {
            return Err(bad("first usable sector after last usable sector"));
        }
        Ok(h)
    }

    /// One sector holding this header, with its CRC.
    fn to_sector(&self, sector_size: u64) -> Vec<u8> {
        let mut s = vec![0u8; usize::try_from(sector_size).expect("sector size fits usize")];
        s[..8].copy_from_slice(SIGNATURE);
        put_le32(&mut s, 8, self.revision);
        put_le32(
            &mut s,
            12,
            u32::try_from(HEADER_LEN).expect("HEADER_LEN is 92"),
        );
        put_le64(&mut s, 24, self.my_lba);
        put_le64(&mut s, 32, self.alternate_lba);
        put_le64(&mut s, 40, self.first_usable_lba);
        put_le64(&mut s, 48, self.last_usable_lba);
        s[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        put_le64(&mut s, 72, self.entries_lba);
        put_le32(&mut s, 80, self.num_entries);
        put_le32(&mut s, 84, self.entry_size);
        put_le32(&mut s, 88, self.entries_crc32);
        let crc = crc32(&s[..HEADER_LEN]);
        put_le32(&mut s, 16, crc);
        s
    }
}

/// One partition entry (the first 128 bytes of a slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    /// Partition type GUID; nil means the slot is unused.
    pub type_guid: Uuid,
    /// The partition's unique GUID (lsblk's PARTUUID).
    pub unique_guid: Uuid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Name (up to 36 UTF-16 code units).
    pub name: String,
}

impl GptEntry {
    /// Whether the slot holds a partition.
    pub fn is_used(&self) -> bool {
        !self.type_guid.is_nil()
    }

    fn parse(b: &[u8]) -> Self {
        let units: Vec<u16> = b[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        GptEntry {
            type_guid: Uuid::from_bytes_le(b[0..16].try_into().expect("16 bytes")),
            unique_guid: Uuid::from_bytes_le(b[16..32].try_into().expect("16 bytes")),
            first_lba: le64(b, 32),
            last_lba: le64(b, 40),
            attributes: le64(b, 48),
            name: String::from_utf16_lossy(&units),
        }
    }

    fn encode(&self, b: &mut [u8]) {
        b[..ENTRY_LEN].fill(0);
        b[0..16].copy_from_slice(&self.type_guid.to_bytes_le());
        b[16..32].copy_from_slice(&self.unique_guid.to_bytes_le());
        put_le64(b, 32, self.first_lba);
        put_le64(b, 40, self.last_lba);
        put_le64(b, 48, self.attributes);
        for (i, unit) in self.name.encode_utf16().take(36).enumerate() {
            b[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
}

/// A GPT in memory: the primary header's view plus the raw entry array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    header: GptHeader,
    array: Vec<u8>,
    from_backup: bool,
}

impl Gpt {
    /// An empty table of 128 entries spanning `geometry`, like `parted mklabel gpt`.
    pub fn new(geometry: Geometry, disk_guid: Uuid) -> Result<Self, GptError> {
        let ss = geometry.sector_size();
        let array_bytes = u64::from(DEFAULT_ENTRIES) * ENTRY_LEN as u64;
        let array_sectors = array_bytes.div_ceil(ss);
        let sectors = geometry.sectors();
        if sectors < 2 * array_sectors + 4 {
            return Err(GptError::Layout("disk too small for two GPT copies"));
        }
        let header = GptHeader {
            revision: REVISION_1_0,
            my_lba: 1,
            alternate_lba: sectors - 1,
            first_usable_lba: 2 + array_sectors,
            last_usable_lba: sectors - 2 - array_sectors,
            disk_guid,
            entries_lba: 2,
            num_entries: DEFAULT_ENTRIES,
            entry_size: u32::try_from(ENTRY_LEN).expect("ENTRY_LEN is 128"),
            entries_crc32: 0,
        };
        Ok(Gpt {
            header,
            array: vec![0; usize::try_from(array_bytes).expect("16 KiB fits usize")],
            from_backup: false,
        })
    }

    /// Reads the primary table, or the backup at the last sector when the primary is
    /// damaged. `Ok(None)` when neither location carries a GPT signature.
    pub fn read<R: Read + Seek + ?Sized>(
        r: &mut R,
        geometry: Geometry,
    ) -> Result<Option<Self>, GptError> {
        let primary = Self::read_copy(r, geometry, 1);
        let primary_err = match primary {
            Ok(Some(gpt)) => return Ok(Some(gpt)),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let backup = Self::read_copy(r, geometry, geometry.sectors() - 1);
        match (primary_err, backup) {
            (_, Ok(Some(mut gpt))) => {
                tracing::warn!("primary GPT unusable, using the backup copy");
                // Present it as the primary it should have been, so a write repairs it.
                let array_sectors = gpt.header.array_sectors(geometry.sector_size());
                gpt.header.alternate_lba = gpt.header.my_lba;
                gpt.header.my_lba = 1;
                gpt.header.entries_lba = 2;
                if 2 + array_sectors > gpt.header.first_usable_lba {
                    return Err(GptError::Layout(
                        "backup GPT leaves no room for the primary array",
                    ));
                }
                gpt.from_backup = true;
                Ok(Some(gpt))
            }
            (Some(e), _) => Err(e),
            (None, Ok(None)) => Ok(None),
            (None, Err(e)) => Err(e),
        }
    }

    /// Reads one copy whose header sits at `lba`; `Ok(None)` without a signature.
    fn read_copy<R: Read + Seek + ?Sized>(
        r: &mut R,
        geometry: Geometry,
        lba: u64,
    ) -> Result<Option<Self>, GptError> {
        let ss = geometry.sector_size();
        let mut sector = vec![0u8; usize::try_from(ss).expect("sector size fits usize")];
        read_exact_at(r, lba * ss, &mut sector)?;
        if &sector[..8] != SIGNATURE {
            return Ok(None);
        }
        let header = GptHeader::parse(&sector, lba, geometry)?;
        let len = usize::try_from(header.array_bytes()).expect("bounded by MAX_ARRAY_BYTES");
        let array = read_vec_at(r, header.entries_lba * ss, len)?;
        if crc32(&array) != header.entries_crc32 {
            return Err(GptError::BadArray { lba });
        }
        Ok(Some(Gpt {
            header,
            array,
            from_backup: false,
        }))
    }

    /// The primary header's fields.
    pub fn header(&self) -> &GptHeader {
        &self.header
    }

    /// Whether the primary copy was damaged and this table came from the backup.
    pub fn from_backup(&self) -> bool {
        self.from_backup
    }

    /// Number of entry slots.
    pub fn num_entries(&self) -> u32 {
        self.header.num_entries
    }

    /// The entry in slot `number` (1-based), used or not.
    pub fn entry(&self, number: u32) -> Option<GptEntry> {
        let range = self.slot(number)?;
        Some(GptEntry::parse(&self.array[range]))
    }

    /// Used entries with their numbers, in slot order.
    pub fn partitions(&self) -> Vec<(u32, GptEntry)> {
        (1..=self.header.num_entries)
            .filter_map(|n| self.entry(n).map(|e| (n, e)))
            .filter(|(_, e)| e.is_used())
            .collect()
    }

    /// Stores `entry` in slot `number` (1-based).
    pub fn set_entry(&mut self, number: u32, entry: &GptEntry) -> Result<(), GptError> {
        let range = self.slot(number).ok_or(GptError::NoFreeEntry)?;
        entry.encode(&mut self.array[range]);
        Ok(())
    }

    /// The lowest unused slot number (sgdisk's "first free partition number").
    pub fn first_free_number(&self) -> Option<u32> {
        (1..=self.header.num_entries).find(|&n| self.entry(n).is_some_and(|e| !e.is_used()))
    }

    fn slot(&self, number: u32) -> Option<std::ops::Range<usize>> {
        if number == 0 || number > self.header.num_entries {
            return None;
        }
        let size = self.header.entry_size as usize;
        let start = (number as usize - 1) * size;
        Some(start..start + ENTRY_LEN)
    }

    /// Adds a partition of `sectors` sectors ending at the last usable sector, its start
    /// aligned down to `align` sectors, in the first free slot; like
    /// `sgdisk -n 0:-<size>:0` when the free space is at the end. Returns its number.
    pub fn add_at_end(
        &mut self,
        sectors: u64,
        align: u64,
        type_guid: Uuid,
        unique_guid: Uuid,
        name: &str,
    ) -> Result<u32, GptError> {
        let last = self.header.last_usable_lba;
        let first = last
            .checked_sub(sectors)
            .map(|s| s / align.max(1) * align.max(1))
            .filter(|&s| s >= self.header.first_usable_lba)
            .ok_or_else(|| GptError::NoSpace("the disk is smaller than the partition".into()))?;
        if let Some((n, e)) = self
            .partitions()
            .into_iter()
            .find(|(_, e)| e.last_lba >= first && e.first_lba <= last)
        {
            return Err(GptError::NoSpace(format!(
                "partition {n} (sectors {}-{}) occupies sectors {first}-{last} at the end of the disk",
                e.first_lba, e.last_lba
            )));
        }
        let number = self.first_free_number().ok_or(GptError::NoFreeEntry)?;
        let entry = GptEntry {
            type_guid,
            unique_guid,
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.to_owned(),
        };
        self.set_entry(number, &entry)?;
        Ok(number)
    }

    /// Points the table at a backup in the last sector of `geometry` and extends the
    /// usable area to match (`sgdisk -e`). Returns the old backup LBA when it moved.
    pub fn move_backup_to_end(&mut self, geometry: Geometry) -> Result<Option<u64>, GptError> {
        let end = geometry.sectors() - 1;
        if self.header.alternate_lba == end {
            return Ok(None);
        }
        let array_sectors = self.header.array_sectors(geometry.sector_size());
        let last_usable = end
            .checked_sub(array_sectors + 1)
            .filter(|&l| l >= self.header.first_usable_lba)
            .ok_or(GptError::Layout("disk too small for the backup GPT"))?;
        let old = self.header.alternate_lba;
        self.header.alternate_lba = end;
        self.header.last_usable_lba = last_usable;
        self.check(geometry)?;
        Ok(Some(old))
    }

    /// Checks that both copies and every used entry fit the disk without overlap.
    pub fn check(&self, geometry: Geometry) -> Result<(), GptError> {
        let h = &self.header;
        let array_sectors = h.array_sectors(geometry.sector_size());
        if h.alternate_lba >= geometry.sectors() {
            return Err(GptError::Layout("backup header beyond the end of the disk"));
        }
        if h.entries_lba.saturating_add(array_sectors) > h.first_usable_lba {
            return Err(GptError::Layout(
                "primary entry array overlaps the usable area",
            ));
        }
        if h.last_usable_lba.saturating_add(array_sectors) >= h.alternate_lba {
            return Err(GptError::Layout(
                "backup entry array overlaps the usable area",
            ));
        }
        let mut used = self.partitions();
        used.sort_by_key(|(_, e)| e.first_lba);
        for (n, e) in &used {
            if e.first_lba > e.last_lba
                || e.first_lba < h.first_usable_lba
                || e.last_lba > h.last_usable_lba
            {
                return Err(GptError::OutOfRange {
                    number: *n,
                    first: e.first_lba,
                    last: e.last_lba,
                    first_usable: h.first_usable_lba,
                    last_usable: h.last_usable_lba,
                });
            }
        }
        for pair in used.windows(2) {
            if pair[1].1.first_lba <= pair[0].1.last_lba {
                return Err(GptError::Overlap(pair[0].0, pair[1].0));
            }
        }
        Ok(())
    }

    /// Writes the entry arrays and both headers (primary last). Does not touch sector 0;
    /// see [`super::mbr::write_protective`].
    pub fn write<W: Write + Seek + ?Sized>(
        &mut self,
        w: &mut W,
        geometry: Geometry,
    ) -> Result<(), GptError> {
        self.check(geometry)?;
        let ss = geometry.sector_size();
        self.header.entries_crc32 = crc32(&self.array);
        let backup_entries = self.header.alternate_lba - self.header.array_sectors(ss);
        let backup = GptHeader {
            my_lba: self.header.alternate_lba,
            alternate_lba: self.header.my_lba,
            entries_lba: backup_entries,
            ..self.header.clone()
        };
        write_all_at(w, backup_entries * ss, &self.array)?;
        write_all_at(w, backup.my_lba * ss, &backup.to_sector(ss))?;
        write_all_at(w, self.header.entries_lba * ss, &self.array)?;
        write_all_at(w, self.header.my_lba * ss, &self.header.to_sector(ss))?;
        w.flush()?;
        self.from_backup = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn disk(size: u64) -> Cursor<Vec<u8>> {
        Cursor::new(vec![0; usize::try_from(size).unwrap()])
    }

    fn entry(first: u64, last: u64) -> GptEntry {
        GptEntry {
            type_guid: types::LINUX_FS,
            unique_guid: Uuid::new_v4(),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: "primary".into(),
        }
    }

    #[test]
    fn new_table_round_trips_at_both_sector_sizes() {
        for ss in [512u64, 4096] {
            let g = Geometry::new(64 << 20, ss).unwrap();
            let mut d = disk(64 << 20);
            let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
            let spm = g.sectors_per_mib();
            gpt.set_entry(1, &entry(spm, 2 * spm - 1)).unwrap();
            gpt.write(&mut d, g).unwrap();
            let back = Gpt::read(&mut d, g).unwrap().unwrap();
            assert_eq!(back.partitions(), gpt.partitions());
            assert_eq!(
                back.header().first_usable_lba,
                if ss == 512 { 34 } else { 6 }
            );
            assert_eq!(
                back.header().last_usable_lba,
                g.sectors() - if ss == 512 { 34 } else { 6 }
            );
            assert!(!back.from_backup());
        }
    }

    #[test]
    fn damaged_primary_falls_back_to_the_backup() {
        let g = Geometry::new(8 << 20, 512).unwrap();
        let mut d = disk(8 << 20);
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.set_entry(3, &entry(2048, 4095)).unwrap();
        gpt.write(&mut d, g).unwrap();
        d.get_mut()[512 + 40] ^= 0xff; // break the primary header CRC
        let back = Gpt::read(&mut d, g).unwrap().unwrap();
        assert!(back.from_backup());
        assert_eq!(back.partitions(), gpt.partitions());
        assert_eq!(back.header().my_lba, 1);
    }

    #[test]
    fn corrupt_array_and_absent_tables_are_told_apart() {
        let g = Geometry::new(8 << 20, 512).unwrap();
        let mut d = disk(8 << 20);
        assert!(Gpt::read(&mut d, g).unwrap().is_none());
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.write(&mut d, g).unwrap();
        d.get_mut()[1024] ^= 1; // primary array
        let last = usize::try_from(g.sectors() - 33).unwrap() * 512;
        d.get_mut()[last] ^= 1; // backup array
        assert!(matches!(
            Gpt::read(&mut d, g),
            Err(GptError::BadArray { lba: 1 })
        ));
    }

    #[test]
    fn huge_entry_counts_are_refused_before_reading() {
        let g = Geometry::new(8 << 20, 512).unwrap();
        let mut d = disk(8 << 20);
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.header.num_entries = u32::MAX;
        let sector = gpt.header.to_sector(512);
        write_all_at(&mut d, 512, &sector).unwrap();
        let err = Gpt::read(&mut d, g).unwrap_err();
        assert!(
            matches!(
                err,
                GptError::BadHeader {
                    reason: "entry count out of range",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overlapping_and_out_of_range_entries_are_not_written() {
        let g = Geometry::new(8 << 20, 512).unwrap();
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.set_entry(1, &entry(2048, 4095)).unwrap();
        gpt.set_entry(2, &entry(4095, 6000)).unwrap();
        assert!(matches!(
            gpt.write(&mut disk(8 << 20), g),
            Err(GptError::Overlap(1, 2))
        ));
        gpt.set_entry(2, &entry(4096, g.sectors())).unwrap();
        assert!(matches!(
            gpt.write(&mut disk(8 << 20), g),
            Err(GptError::OutOfRange { number: 2, .. })
        ));
    }

    #[test]
    fn add_at_end_aligns_down_like_sgdisk() {
        // sgdisk -n 0:-64MB:0 on a 256 MiB disk put the start at 391168, end 524254.
        let g = Geometry::new(256 << 20, 512).unwrap();
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.set_entry(1, &entry(2048, 22527)).unwrap();
        let n = gpt
            .add_at_end(131072, 2048, types::LINUX_FS, Uuid::new_v4(), "")
            .unwrap();
        assert_eq!(n, 2);
        let e = gpt.entry(2).unwrap();
        assert_eq!((e.first_lba, e.last_lba), (391168, 524254));
        // A partition reaching into the tail blocks it.
        let mut full = Gpt::new(g, Uuid::new_v4()).unwrap();
        full.set_entry(1, &entry(2048, 500000)).unwrap();
        assert!(matches!(
            full.add_at_end(131072, 2048, types::LINUX_FS, Uuid::new_v4(), ""),
            Err(GptError::NoSpace(_))
        ));
    }

    #[test]
    fn names_are_utf16_and_truncated_at_36_units() {
        let mut b = [0u8; 128];
        let e = GptEntry {
            name: "é".repeat(40),
            ..entry(1, 2)
        };
        e.encode(&mut b);
        assert_eq!(GptEntry::parse(&b).name, "é".repeat(36));
    }
}
