//! Partition tables and the few structures the deploy path writes around them, done
//! natively on any `Read + Write + Seek` (an image file in tests, a block device in
//! production) with 512- or 4096-byte logical sectors.
//!
//! - `gpt`, `mbr`: parse (bounded, hostile input tolerated) and write the two table kinds;
//!   `table` picks whichever a disk carries, the way parted does.
//! - `fsprobe`: the filesystem signatures, labels and UUIDs we need (ISO 9660, vfat,
//!   ext2/3/4, XFS, btrfs, swap); `find` maps a UUID or label to a partition.
//! - `layout`: the partition-image layout (IPA's `make_partitions`); `swap`: `mkswap`;
//!   `fat`: `mkfs.vfat` for the ESP.
//! - `configdrive`: decode the config drive and place it on a whole-disk image.
//! - `fixup`: after writing, move the backup GPT to the end, validate the table, read the
//!   MBR disk signature. `wipe`: `destroy_disk_metadata` as exact byte ranges.
//!
//! Nothing here opens a device: callers pass a handle obtained through
//! [`crate::blockdev::open_for_write`]. Nothing runs an external tool. Writes go to
//! whole-disk offsets, never through partition device nodes, so they work before the
//! kernel has re-read the table; [`crate::sys::block::rescan`] tells the kernel afterwards.
//! To support another filesystem in label/UUID lookups, add a probe to `fsprobe`.

pub mod configdrive;
pub mod fat;
pub mod find;
pub mod fixup;
pub mod fsprobe;
pub mod gpt;
pub mod layout;
pub mod mbr;
mod rw;
pub mod swap;
pub mod table;
pub mod wipe;

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::sys::block;

/// One mebibyte: parted's and sgdisk's `MiB`/`M` unit, and the layout alignment.
pub const MIB: u64 = 1 << 20;

/// Anything a partition table can be read from and written to.
pub trait Disk: std::io::Read + std::io::Write + std::io::Seek {}
impl<T: std::io::Read + std::io::Write + std::io::Seek + ?Sized> Disk for T {}

/// Why a disk's geometry is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GeometryError {
    /// Sector sizes are powers of two from 512 to 64 KiB.
    #[error("unsupported logical sector size {0}")]
    SectorSize(u64),
    /// The device cannot hold even a partition table.
    #[error("device of {size} bytes is too small for a partition table")]
    TooSmall {
        /// The size in bytes.
        size: u64,
    },
    /// Reading the size or sector size failed.
    #[error("reading the device geometry: {0}")]
    Probe(#[from] block::IoctlError),
    /// `stat` failed.
    #[error("reading the device geometry: {0}")]
    Io(#[from] std::io::Error),
}

/// Size and logical sector size of a disk, or of an image file standing in for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    size: u64,
    sector_size: u64,
}

impl Geometry {
    /// A disk of `size` bytes with `sector_size`-byte logical sectors (the size is
    /// rounded down to whole sectors, as the kernel does).
    pub fn new(size: u64, sector_size: u64) -> Result<Self, GeometryError> {
        if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
            return Err(GeometryError::SectorSize(sector_size));
        }
        let size = size - size % sector_size;
        // A protective MBR, two GPT headers and two arrays need at least this much.
        if size < 8 * sector_size.max(4096) {
            return Err(GeometryError::TooSmall { size });
        }
        Ok(Self { size, sector_size })
    }

    /// The geometry of an open device (BLKGETSIZE64, BLKSSZGET) or image file (its
    /// length, 512-byte sectors).
    pub fn of_file(file: &File) -> Result<Self, GeometryError> {
        let meta = file.metadata()?;
        if meta.file_type().is_block_device() {
            let size = block::device_size(file)?;
            let sector = block::logical_sector_size(file)?;
            Self::new(size, u64::from(sector))
        } else {
            Self::new(meta.len(), 512)
        }
    }

    /// Size in bytes (whole sectors).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical sector size in bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Number of logical sectors.
    pub fn sectors(&self) -> u64 {
        self.size / self.sector_size
    }

    /// Sectors per MiB (the layout's alignment unit).
    pub fn sectors_per_mib(&self) -> u64 {
        MIB / self.sector_size
    }
}

/// The device path of partition `number` of `disk`: `<disk><n>`, or `<disk>p<n>` when the
/// disk name ends in a digit (`/dev/nvme0n1p1`, `/dev/loop0p1`, `/dev/md0p1`).
// IPA: disk_utils.partition_index_to_path
pub fn partition_path(disk: &Path, number: u32) -> PathBuf {
    let mut s = disk.as_os_str().to_owned();
    let ends_in_digit = disk
        .as_os_str()
        .as_encoded_bytes()
        .last()
        .is_some_and(u8::is_ascii_digit);
    if ends_in_digit {
        s.push("p");
    }
    s.push(number.to_string());
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths_follow_the_kernel_naming() {
        assert_eq!(
            partition_path(Path::new("/dev/sda"), 3),
            Path::new("/dev/sda3")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 1),
            Path::new("/dev/nvme0n1p1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop7"), 12),
            Path::new("/dev/loop7p12")
        );
        assert_eq!(
            partition_path(Path::new("/dev/vdb"), 2),
            Path::new("/dev/vdb2")
        );
    }

    #[test]
    fn geometry_rejects_odd_sector_sizes_and_tiny_disks() {
        assert!(matches!(
            Geometry::new(1 << 30, 520),
            Err(GeometryError::SectorSize(520))
        ));
        assert!(matches!(
            Geometry::new(4096, 512),
            Err(GeometryError::TooSmall { .. })
        ));
        let g = Geometry::new((1 << 30) + 100, 4096).unwrap();
        assert_eq!(g.size(), 1 << 30);
        assert_eq!(g.sectors(), (1 << 30) / 4096);
        assert_eq!(g.sectors_per_mib(), 256);
    }
}
