//! Partitions with their filesystem facts, and the two lookups the deploy path makes:
//! by UUID (IPA's `get_partition`, spec 9.6) and by label (`config-2`, spec 7.3).
//! Everything is read from the disk itself, so it works before the kernel has created
//! the partition device nodes.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use super::fsprobe::{self, FsInfo};
use super::table::{read_table, PartitionInfo, TableError};
use super::{partition_path, Geometry};

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The partition table could not be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Reading a filesystem header failed.
    #[error("reading a filesystem header: {0}")]
    Io(#[from] std::io::Error),
    /// IPA's `DeviceNotFound` text.
    #[error("No partition with UUID {uuid} found on device {dev}")]
    NotFound {
        /// The UUID asked for.
        uuid: String,
        /// The disk searched.
        dev: PathBuf,
    },
}

/// A partition, its device path and what filesystem (if any) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDetails {
    /// Number, offsets and PARTUUID.
    pub info: PartitionInfo,
    /// `<dev>N` or `<dev>pN`.
    pub path: PathBuf,
    /// The probed filesystem.
    pub fs: Option<FsInfo>,
}

impl PartitionDetails {
    /// The filesystem label, if any.
    pub fn label(&self) -> Option<&str> {
        self.fs.as_ref().and_then(|f| f.label.as_deref())
    }

    /// The filesystem UUID, if any.
    pub fn fs_uuid(&self) -> Option<&str> {
        self.fs.as_ref().and_then(|f| f.uuid.as_deref())
    }

    /// lsblk's choice for a partition's `root uuid`: the filesystem UUID, else the
    /// PARTUUID (IPA: `block_uuid`).
    pub fn block_uuid(&self) -> &str {
        self.fs_uuid().unwrap_or(&self.info.part_uuid)
    }
}

/// Every partition of the disk with its probed filesystem; empty without a table.
pub fn describe<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
    dev: &Path,
) -> Result<Vec<PartitionDetails>, FindError> {
    let Some(table) = read_table(r, geometry)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for info in table.partitions(geometry) {
        // A crafted table may point past the end; probe only what is on the disk.
        let len = info.size.min(geometry.size().saturating_sub(info.start));
        let fs = if len > 0 {
            fsprobe::probe(r, info.start, len)?
        } else {
            None
        };
        out.push(PartitionDetails {
            path: partition_path(dev, info.number),
            info,
            fs,
        });
    }
    Ok(out)
}

/// The first partition whose filesystem UUID, PARTUUID (both case-insensitively) or
/// label (exactly) equals `uuid`, as IPA's `get_partition` matches lsblk's columns.
pub fn find_by_uuid<R: Read + Seek + ?Sized>(
    r: &mut R,
    geometry: Geometry,
    dev: &Path,
    uuid: &str,
) -> Result<PartitionDetails, FindError> {
    describe(r, geometry, dev)?
        .into_iter()
        .find(|p| {
            p.fs_uuid().is_some_and(|u| u.eq_ignore_ascii_case(uuid))
                || p.info.part_uuid.eq_ignore_ascii_case(uuid)
                || p.label() == Some(uuid)
        })
        .ok_or_else(|| FindError::NotFound {
            uuid: uuid.to_owned(),
            dev: dev.to_path_buf(),
        })
}

/// Partitions whose filesystem label equals `label` ignoring case (IPA compares
/// upper-cased, so a vfat `CONFIG-2` matches `config-2`).
pub fn with_label<'a>(parts: &'a [PartitionDetails], label: &str) -> Vec<&'a PartitionDetails> {
    parts
        .iter()
        .filter(|p| {
            p.label()
                .is_some_and(|l| l.to_uppercase() == label.to_uppercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::fsprobe::FsKind;
    use crate::partition::table::PartitionInfo;

    fn part(n: u32, label: Option<&str>, uuid: Option<&str>) -> PartitionDetails {
        PartitionDetails {
            info: PartitionInfo {
                number: n,
                start: 0,
                size: 1,
                part_uuid: format!("0000000{n}-aaaa-bbbb-cccc-dddddddddddd"),
            },
            path: PathBuf::from(format!("/dev/sda{n}")),
            fs: Some(FsInfo {
                kind: FsKind::Vfat,
                uuid: uuid.map(str::to_owned),
                label: label.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn labels_match_ignoring_case() {
        let parts = [
            part(1, Some("CONFIG-2"), None),
            part(2, Some("root"), None),
            part(3, None, None),
        ];
        let found = with_label(&parts, "config-2");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, Path::new("/dev/sda1"));
    }

    #[test]
    fn block_uuid_prefers_the_filesystem_uuid() {
        assert_eq!(part(1, None, Some("ABCD-1234")).block_uuid(), "ABCD-1234");
        assert_eq!(
            part(2, None, None).block_uuid(),
            "00000002-aaaa-bbbb-cccc-dddddddddddd"
        );
    }
}
