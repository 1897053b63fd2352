//! Whichever partition table a disk carries, read the way parted reads it: a valid GPT
//! (primary, else backup) wins; otherwise an MBR that is not a GPT's protective MBR.
//! A protective MBR without a readable GPT is no table at all, which is what a GPT
//! written for 512-byte sectors looks like on a 4Kn disk.

use std::io::{Read, Seek};

use super::gpt::{Gpt, GptError};
use super::mbr::{Mbr, MbrError};
use super::Geometry;

/// The two table kinds (`parted mklabel` names: `gpt`, `msdos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// MBR.
    Msdos,
    /// GUID partition table.
    Gpt,
}

impl TableKind {
    /// parted's name for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TableKind::Msdos => "msdos",
            TableKind::Gpt => "gpt",
        }
    }
}

/// Why no usable table was read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The GPT is present but damaged in both copies.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// Reading the MBR failed.
    #[error(transparent)]
    Mbr(#[from] MbrError),
    /// Sector 0 is a protective MBR but no GPT can be read at this sector size.
    #[error("protective MBR without a GPT at {0}-byte sectors")]
    OrphanProtective(u64),
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionTable {
    /// A GUID partition table.
    Gpt(Gpt),
    /// An MBR table.
    Mbr(Mbr),
}

/// One partition, whatever the table kind, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number (1-based; 5+ are MBR logicals).
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// lsblk's PARTUUID: the GPT unique GUID (lower case), or `<disk id>-<nn>` on MBR.
    pub part_uuid: String,
}

impl PartitionInfo {
    /// The end offset (exclusive).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// Reads the partition table; `Ok(None)` when the disk has none.
pub fn read_table<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
) -> Result<Option<PartitionTable>, TableError> {
    let gpt = Gpt::read(r, geometry);
    let mbr = Mbr::read(r, geometry)?;
    match gpt {
        Ok(Some(gpt)) => return Ok(Some(PartitionTable::Gpt(gpt))),
        // A damaged GPT behind a protective MBR is reported as such.
        Err(e) if mbr.as_ref().is_none_or(Mbr::is_protective) => return Err(e.into()),
        Err(e) => tracing::debug!(error = %e, "ignoring a damaged GPT next to a valid MBR"),
        Ok(None) => {}
    }
    match mbr {
        Some(m) if m.is_protective() => Err(TableError::OrphanProtective(geometry.sector_size())),
        Some(m) => Ok(Some(PartitionTable::Mbr(m))),
        None => Ok(None),
    }
}

impl PartitionTable {
    /// GPT or msdos.
    pub fn kind(&self) -> TableKind {
        match self {
            PartitionTable::Gpt(_) => TableKind::Gpt,
            PartitionTable::Mbr(_) => TableKind::Msdos,
        }
    }

    /// Every partition in number order (the MBR extended container included, as the
    /// kernel lists it).
    pub fn partitions(&self, geometry: Geometry) -> Vec<PartitionInfo> {
        let ss = geometry.sector_size();
        match self {
            PartitionTable::Gpt(gpt) => gpt
                .partitions()
                .into_iter()
                .map(|(number, e)| PartitionInfo {
                    number,
                    start: e.first_lba.saturating_mul(ss),
                    size: (e.last_lba.saturating_sub(e.first_lba).saturating_add(1))
                        .saturating_mul(ss),
                    part_uuid: e.unique_guid.hyphenated().to_string(),
                })
                .collect(),
            PartitionTable::Mbr(mbr) => mbr
                .partitions()
                .into_iter()
                .map(|(number, _, first, sectors)| PartitionInfo {
                    number,
                    start: first * ss,
                    size: sectors * ss,
                    part_uuid: format!("{:08x}-{:02x}", mbr.disk_signature, number),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::gpt::{types, GptEntry};
    use crate::partition::mbr::{self, kinds};
    use std::io::Cursor;
    use uuid::Uuid;

    #[test]
    fn gpt_behind_protective_mbr_is_read_and_wrong_sector_size_is_not() {
        let g = Geometry::new(16 << 20, 512).unwrap();
        let mut d = Cursor::new(vec![0u8; 16 << 20]);
        mbr::write_protective(&mut d, g).unwrap();
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        let part = Uuid::new_v4();
        gpt.set_entry(
            1,
            &GptEntry {
                type_guid: types::LINUX_FS,
                unique_guid: part,
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
                name: String::new(),
            },
        )
        .unwrap();
        gpt.write(&mut d, g).unwrap();
        let t = read_table(&mut d, g).unwrap().unwrap();
        assert_eq!(t.kind(), TableKind::Gpt);
        let parts = t.partitions(g);
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].start, parts[0].size), (1 << 20, 1 << 20));
        assert_eq!(parts[0].part_uuid, part.to_string());

        let g4k = Geometry::new(16 << 20, 4096).unwrap();
        assert!(matches!(
            read_table(&mut d, g4k),
            Err(TableError::OrphanProtective(4096))
        ));
    }

    #[test]
    fn mbr_partuuids_are_signature_dash_number() {
        let g = Geometry::new(16 << 20, 512).unwrap();
        let mut d = Cursor::new(vec![0u8; 16 << 20]);
        let mut m = Mbr::new(0xdead_beef);
        m.add_primary(2048, 2048, kinds::LINUX, g).unwrap();
        m.write(&mut d).unwrap();
        let t = read_table(&mut d, g).unwrap().unwrap();
        assert_eq!(t.kind(), TableKind::Msdos);
        assert_eq!(t.partitions(g)[0].part_uuid, "deadbeef-01");
        assert!(read_table(&mut Cursor::new(vec![0u8; 16 << 20]), g)
            .unwrap()
            .is_none());
    }
}
