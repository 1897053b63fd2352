//! Finding a partition of the install device for the bootloader code: the EFI system
//! partition as parted flags it (IPA: `disk_utils.find_efi_partition`), or a partition
//! by UUID (spec 9.6), read with our own table and filesystem readers; and making sure
//! its device node exists before it is mounted (IPA runs `partx -av` for that).
//!
//! parted shows `esp` (and `boot`) on a GPT entry whose type is the ESP GUID, and `esp`
//! on an MBR entry of type 0xEF, so those are what is looked for.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load_option::{HardDrive, PartitionSignature};
use crate::blockdev::nodes::{is_block_device, wait_until};
use crate::config::rooted;
use crate::partition::find::{find_by_uuid, FindError};
use crate::partition::gpt::types;
use crate::partition::table::{read_table, PartitionTable, TableError};
use crate::partition::{partition_path, Geometry, GeometryError};
use crate::sys::block as sys;

/// MBR partition type of an EFI system partition.
const MBR_ESP: u8 = 0xef;
/// How long a new partition node may take to appear in devtmpfs.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// Why no partition could be used.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// The device could not be opened or measured.
    #[error("reading {dev}: {error}")]
    Open {
        /// The disk.
        dev: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The geometry is unusable.
    #[error("reading {dev}: {error}")]
    Geometry {
        /// The disk.
        dev: PathBuf,
        /// The cause.
        error: GeometryError,
    },
    /// The partition table is damaged.
    #[error("reading the partition table of {dev}: {error}")]
    Table {
        /// The disk.
        dev: PathBuf,
        /// The cause.
        error: TableError,
    },
    /// No partition carries the UUID (IPA's `DeviceNotFound` text).
    #[error(transparent)]
    NotFound(FindError),
    /// The partition's device node did not appear.
    #[error("partition {number} of {dev} has no device node {node}: {reason}")]
    NoNode {
        /// The disk.
        dev: PathBuf,
        /// The partition number.
        number: u32,
        /// The node expected.
        node: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A partition located on the install device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Partition number.
    pub number: u32,
    /// `<dev>N` or `<dev>pN`.
    pub path: PathBuf,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// lsblk's PARTUUID.
    pub part_uuid: String,
    /// The hard-drive device path node firmware needs for it.
    pub hard_drive: HardDrive,
}

/// The disk open for reading, with its geometry and table.
#[derive(Debug)]
pub struct DiskView {
    /// The open device.
    pub file: File,
    /// `/dev/...` name (as the conductor knows it).
    pub dev: PathBuf,
    /// Size and sector size.
    pub geometry: Geometry,
    /// The table, if any.
    pub table: Option<PartitionTable>,
}

impl DiskView {
    /// Opens `opened` (the device under the agent's root) and reads its table.
    pub fn open(dev: &Path, opened: &Path) -> Result<Self, EspError> {
        let open_err = |error| EspError::Open {
            dev: dev.to_path_buf(),
            error,
        };
        let mut file = File::open(opened).map_err(open_err)?;
        let geometry = Geometry::of_file(&file).map_err(|error| EspError::Geometry {
            dev: dev.to_path_buf(),
            error,
        })?;
        let table = read_table(&mut file, geometry).map_err(|error| EspError::Table {
            dev: dev.to_path_buf(),
            error,
        })?;
        Ok(Self {
            file,
            dev: dev.to_path_buf(),
            geometry,
            table,
        })
    }

    /// Partition `number` with its device path node, if the table has it.
    pub fn partition(&self, number: u32) -> Option<Located> {
        let table = self.table.as_ref()?;
        let ss = self.geometry.sector_size();
        let info = table
            .partitions(self.geometry)
            .into_iter()
            .find(|p| p.number == number)?;
        let (start_lba, size_lba) = (info.start / ss, info.size / ss);
        let signature = match table {
            PartitionTable::Gpt(gpt) => PartitionSignature::Gpt(gpt.entry(number)?.unique_guid),
            PartitionTable::Mbr(mbr) => PartitionSignature::Mbr(mbr.disk_signature),
        };
        Some(Located {
            number,
            path: partition_path(&self.dev, number),
            start: info.start,
            size: info.size,
            part_uuid: info.part_uuid,
            hard_drive: HardDrive {
                number,
                start_lba,
                size_lba,
                signature,
            },
        })
    }

    /// The first partition flagged `esp` (GPT ESP type, MBR type 0xEF).
    pub fn flagged_esp(&self) -> Option<Located> {
        let number = match self.table.as_ref()? {
            PartitionTable::Gpt(gpt) => gpt
                .partitions()
                .into_iter()
                .find(|(_, e)| e.type_guid == types::EFI_SYSTEM)
                .map(|(n, _)| n),
            PartitionTable::Mbr(mbr) => mbr
                .partitions()
                .into_iter()
                .find(|&(_, kind, _, _)| kind == MBR_ESP)
                .map(|(n, ..)| n),
        }?;
        self.partition(number)
    }

    /// The partition whose filesystem UUID, PARTUUID or label is `uuid` (spec 9.6).
    pub fn by_uuid(&mut self, uuid: &str) -> Result<Located, EspError> {
        let found = find_by_uuid(&mut self.file, self.geometry, &self.dev, uuid)
            .map_err(EspError::NotFound)?;
        self.partition(found.info.number).ok_or_else(|| {
            EspError::NotFound(FindError::NotFound {
                uuid: uuid.to_owned(),
                dev: self.dev.clone(),
            })
        })
    }

    /// Makes sure partition `part` has its device node under `root` and that the
    /// kernel's idea of it (sysfs `start`/`size`) matches the table: a missing
    /// partition is added with BLKPG (what `partx -a` does), a stale one (left from the
    /// table before the image was written, when the re-read failed) is replaced.
    /// Returns the node's path under `root`.
    pub fn ensure_node(&self, part: &Located, root: &Path) -> Result<PathBuf, EspError> {
        let node = rooted(root, &part.path);
        let no_node = |reason: String| EspError::NoNode {
            dev: self.dev.clone(),
            number: part.number,
            node: part.path.clone(),
            reason,
        };
        let name = part.path.file_name().unwrap_or_default();
        let sys = rooted(root, Path::new("/sys/class/block")).join(name);
        let want = (part.start / 512, part.size / 512); // sysfs counts 512-byte units
        match kernel_extent(&sys) {
            Some(have) if have == want && is_block_device(&node) => return Ok(node),
            Some(have) if have != want => {
                tracing::warn!(
                    partition = %part.path.display(),
                    kernel = ?have,
                    table = ?want,
                    "the kernel's partition differs from the table: replacing it"
                );
                match sys::delete_partition(&self.file, part.number) {
                    Ok(()) | Err(nix::errno::Errno::ENXIO) => {}
                    Err(e) => return Err(no_node(format!("BLKPG_DEL_PARTITION: {e}"))),
                }
            }
            _ => {}
        }
        if kernel_extent(&sys) != Some(want) {
            match sys::add_partition(&self.file, part.number, part.start, part.size) {
                // EBUSY: the kernel got it meanwhile (udev, a re-read); checked below.
                Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
                Err(e) => return Err(no_node(format!("BLKPG_ADD_PARTITION: {e}"))),
            }
        }
        if wait_until(NODE_WAIT, || {
            is_block_device(&node) && kernel_extent(&sys) == Some(want)
        }) {
            Ok(node)
        } else {
            Err(no_node(format!("not there after {NODE_WAIT:?}")))
        }
    }
}

/// A partition's (start, size) in 512-byte units as the kernel has it, from sysfs.
fn kernel_extent(sys: &Path) -> Option<(u64, u64)> {
    let read = |f: &str| {
        std::fs::read_to_string(sys.join(f))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    Some((read("start")?, read("size")?))
}
