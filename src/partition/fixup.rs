//! After an image is written (spec 8.3-8.5): move the backup GPT to the end of a disk
//! larger than the image (IPA's `fix_gpt_partition`, natively instead of `sgdisk -e`),
//! check that a partition table with partitions is there (`_validate_partitioning`), and
//! read the MBR disk signature that becomes a whole-disk image's `root uuid`.

use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use crate::bytes::le64;

use super::gpt::{Gpt, GptError};
use super::rw::{read_exact_at, zero_range};
use super::table::{read_table, PartitionTable};
use super::{mbr, Disk, Geometry};

/// `fix_gpt_partition` failed (IPA's message; `node` is `None` when not known).
#[derive(Debug, thiserror::Error)]
#[error("Failed to fix GPT partition on disk {dev} for node {node}. Error: {source}")]
pub struct FixGptError {
    /// The disk.
    pub dev: PathBuf,
    /// The node UUID, or `None`.
    pub node: String,
    /// The cause.
    #[source]
    pub source: GptError,
}

/// What `fix_gpt_partition` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptFix {
    /// No GPT on the disk.
    NotGpt,
    /// The backup already sat at the end.
    AlreadyAtEnd,
    /// The backup was moved from this LBA to the last sector.
    Moved {
        /// Where the backup header was.
        from_lba: u64,
    },
}

/// Moves the backup GPT header and array to the end of the disk when the image left
/// them earlier, extends the usable area, grows a pure protective MBR to the disk, and
/// zeroes the stale backup header so it cannot be mistaken for a table later.
pub fn fix_gpt_partition<D: Disk + ?Sized>(
    disk: &mut D,
    geometry: Geometry,
    dev: &Path,
    node_uuid: Option<&str>,
) -> Result<GptFix, FixGptError> {
    let wrap = |source: GptError| FixGptError {
        dev: dev.to_path_buf(),
        node: node_uuid.unwrap_or("None").to_owned(),
        source,
    };
    let Some(mut gpt) = Gpt::read(disk, geometry).map_err(wrap)? else {
        return Ok(GptFix::NotGpt);
    };
    if gpt.from_backup() {
        // The primary is damaged; sgdisk -v reports other problems then and IPA does
        // not run `sgdisk -e`. Leave the disk as written.
        return Ok(GptFix::AlreadyAtEnd);
    }
    let Some(from_lba) = gpt.move_backup_to_end(geometry).map_err(wrap)? else {
        return Ok(GptFix::AlreadyAtEnd);
    };
    gpt.write(disk, geometry).map_err(wrap)?;
    mbr::grow_protective(disk, geometry).map_err(|e| wrap(e.into()))?;
    let ss = geometry.sector_size();
    let covered = gpt
        .partitions()
        .iter()
        .any(|(_, e)| (e.first_lba..=e.last_lba).contains(&from_lba));
    if from_lba < geometry.sectors() - 1 && from_lba > gpt.header().first_usable_lba && !covered {
        zero_range(disk, from_lba * ss..(from_lba + 1) * ss).map_err(|e| wrap(e.into()))?;
    }
    disk.flush().map_err(|e| wrap(e.into()))?;
    tracing::info!(dev = %dev.display(), from_lba, "moved the backup GPT to the end of the disk");
    Ok(GptFix::Moved { from_lba })
}

/// The partition table is missing or empty after writing (IPA's messages).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// No readable table.
    #[error(
        "Unable to find a valid partition table on the disk after writing the image. The image \
         may be corrupted or it uses a different sector size than the device. Error: {0}"
    )]
    NoTable(String),
    /// A table without partitions.
    #[error("No partitions found on the device {} after writing the image.", .0.display())]
    NoPartitions(PathBuf),
}

/// Checks that the disk now carries a readable partition table with at least one
/// partition inside the disk; returns the number of partitions.
pub fn validate_partitioning<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
    dev: &Path,
) -> Result<usize, ValidateError> {
    let table = match read_table(r, geometry) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(ValidateError::NoTable(format!(
                "{}: unrecognised disk label",
                dev.display()
            )))
        }
        Err(e) => return Err(ValidateError::NoTable(format!("{}: {e}", dev.display()))),
    };
    let parts = table.partitions(geometry);
    // parted refuses a table with a partition outside the disk.
    if let Some(p) = parts.iter().find(|p| p.end() > geometry.size()) {
        return Err(ValidateError::NoTable(format!(
            "{}: partition {} ends at byte {} beyond the end of the device ({} bytes)",
            dev.display(),
            p.number,
            p.end(),
            geometry.size()
        )));
    }
    if parts.is_empty() {
        return Err(ValidateError::NoPartitions(dev.to_path_buf()));
    }
    let kind = match table {
        PartitionTable::Gpt(_) => "gpt",
        PartitionTable::Mbr(_) => "msdos",
    };
    tracing::debug!(dev = %dev.display(), kind, partitions = parts.len(), "partition table valid");
    Ok(parts.len())
}

/// A whole-disk image's `root uuid`: the MBR disk signature, `0x` + 8 hex digits.
pub fn whole_disk_root_uuid<R: Read + Seek + ?Sized>(r: &mut R) -> io::Result<String> {
    mbr::disk_identifier(r)
}

/// Whether the primary GPT header at LBA 1 says its backup is not in the last sector.
pub fn backup_gpt_misplaced<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
) -> io::Result<bool> {
    let mut h = [0u8; 40];
    read_exact_at(r, geometry.sector_size(), &mut h)?;
    Ok(&h[..8] == super::gpt::SIGNATURE && le64(&h, 32) != geometry.sectors() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::gpt::{types, GptEntry};
    use std::io::Cursor;
    use uuid::Uuid;

    fn small_gpt_image(size: u64) -> Vec<u8> {
        let g = Geometry::new(size, 512).unwrap();
        let mut d = Cursor::new(vec![0u8; usize::try_from(size).unwrap()]);
        mbr::write_protective(&mut d, g).unwrap();
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.set_entry(
            1,
            &GptEntry {
                type_guid: types::LINUX_FS,
                unique_guid: Uuid::new_v4(),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
                name: "root".into(),
            },
        )
        .unwrap();
        gpt.write(&mut d, g).unwrap();
        d.into_inner()
    }

    #[test]
    fn backup_moves_to_the_end_and_the_old_one_is_cleared() {
        let mut img = small_gpt_image(4 << 20);
        img.resize(16 << 20, 0);
        let g = Geometry::new(16 << 20, 512).unwrap();
        let mut d = Cursor::new(img);
        assert!(backup_gpt_misplaced(&mut d, g).unwrap());
        let fix = fix_gpt_partition(&mut d, g, Path::new("/dev/sdz"), None).unwrap();
        let old = (4 << 20) / 512 - 1;
        assert_eq!(fix, GptFix::Moved { from_lba: old });
        assert!(!backup_gpt_misplaced(&mut d, g).unwrap());
        let gpt = Gpt::read(&mut d, g).unwrap().unwrap();
        assert_eq!(gpt.header().last_usable_lba, g.sectors() - 34);
        assert!(d.get_ref()[usize::try_from(old).unwrap() * 512..][..512]
            .iter()
            .all(|&b| b == 0));
        // Breaking the primary now falls back to the moved backup.
        d.get_mut()[512 + 30] ^= 1;
        assert!(Gpt::read(&mut d, g).unwrap().unwrap().from_backup());
        // Second run: nothing to do.
        let mut d2 = Cursor::new(small_gpt_image(4 << 20));
        let g2 = Geometry::new(4 << 20, 512).unwrap();
        assert_eq!(
            fix_gpt_partition(&mut d2, g2, Path::new("/dev/sdz"), None).unwrap(),
            GptFix::AlreadyAtEnd
        );
    }

    #[test]
    fn validation_messages_match_ipa() {
        let g = Geometry::new(4 << 20, 512).unwrap();
        let mut blank = Cursor::new(vec![0u8; 4 << 20]);
        let e = validate_partitioning(&mut blank, g, Path::new("/dev/sda")).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "Unable to find a valid partition table on the disk after writing the image."
            ),
            "{e}"
        );
        let mut empty = Cursor::new(vec![0u8; 4 << 20]);
        mbr::Mbr::new(5).write(&mut empty).unwrap();
        let e = validate_partitioning(&mut empty, g, Path::new("/dev/sda")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "No partitions found on the device /dev/sda after writing the image."
        );
        let mut ok = Cursor::new(small_gpt_image(4 << 20));
        assert_eq!(
            validate_partitioning(&mut ok, g, Path::new("/dev/sda")).unwrap(),
            1
        );
        assert_eq!(whole_disk_root_uuid(&mut ok).unwrap(), "0x00000000");
    }
}
