//! The partition-image layout (spec 6.2; IPA: `disk_utils.make_partitions` and
//! `DiskPartitioner.commit`): which partitions, in which order, how large, with which
//! types and flags, at which whole-MiB offsets, and the device path each role gets.
//!
//! `plan` is pure: the same request and geometry always give the same layout, so the
//! `preserve_ephemeral` path (IPA's `commit=False`) can recompute the paths without
//! writing. `write` lays the table down on a disk whose metadata was destroyed first.
//! Filesystems are not created here: `swap` and `fat` make swap and the ESP; the
//! ephemeral filesystem (any `ephemeral_format`) is the caller's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use uuid::Uuid;

use super::gpt::{types, Gpt, GptEntry, GptError};
use super::mbr::{self, kinds, Mbr, MbrError};
use super::table::TableKind;
use super::{partition_path, Disk, Geometry, MIB};

/// `[disk_utils]efi_system_partition_size` default, MiB.
pub const DEFAULT_ESP_MIB: u64 = 550;
/// `[disk_utils]bios_boot_partition_size` default, MiB.
pub const DEFAULT_BIOS_BOOT_MIB: u64 = 1;
/// Size of the PowerPC PReP partition, MiB.
pub const PREP_MIB: u64 = 8;
/// The label IPA gives the ephemeral filesystem (`mkfs -L ephemeral0`; made by the caller).
pub const EPHEMERAL_LABEL: &str = "ephemeral0";
/// GPT partition name parted gives `mkpart primary ...`.
const GPT_NAME: &str = "primary";

/// The boot mode the image will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Uefi,
}

/// The job of a partition; [`Role::key`] is its name in `get_partition_uuids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The EFI system partition (UEFI).
    EfiSystem,
    /// The BIOS boot partition (BIOS on GPT).
    BiosBoot,
    /// The PowerPC PReP boot partition.
    Prep,
    /// The ephemeral partition.
    Ephemeral,
    /// Swap.
    Swap,
    /// The config drive.
    ConfigDrive,
    /// The root partition, always last.
    Root,
}

impl Role {
    /// The key IPA uses in the `partitions` map.
    pub fn key(&self) -> &'static str {
        match self {
            Role::EfiSystem => "efi system partition",
            Role::BiosBoot => "BIOS Boot partition",
            Role::Prep => "PReP Boot partition",
            Role::Ephemeral => "ephemeral",
            Role::Swap => "swap",
            Role::ConfigDrive => "configdrive",
            Role::Root => "root",
        }
    }
}

/// The table kind for a partition image (spec 6.1, IPA's
/// `get_partition_table_type_from_specs`): `gpt` for UEFI; else the `disk_label`
/// capability, where anything but `gpt` means `msdos`.
pub fn table_kind_for(boot_mode: BootMode, disk_label: Option<&str>) -> TableKind {
    match (boot_mode, disk_label) {
        (BootMode::Uefi, _) | (BootMode::Bios, Some("gpt")) => TableKind::Gpt,
        _ => TableKind::Msdos,
    }
}

/// What to lay out. Sizes are MiB; zero means "no such partition".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRequest {
    /// Boot mode of the instance.
    pub boot_mode: BootMode,
    /// Table kind (see [`table_kind_for`]).
    pub table: TableKind,
    /// Root partition size.
    pub root_mib: u64,
    /// Swap partition size.
    pub swap_mib: u64,
    /// Ephemeral partition size.
    pub ephemeral_mib: u64,
    /// Config drive partition size (the decompressed ISO, rounded up).
    pub configdrive_mib: u64,
    /// The node is ppc64* (PReP partition instead of BIOS boot).
    pub ppc64: bool,
    /// ESP size.
    pub esp_mib: u64,
    /// BIOS boot partition size.
    pub bios_boot_mib: u64,
}

impl LayoutRequest {
    /// A request with only a root partition and the default ESP/BIOS boot sizes.
    pub fn new(boot_mode: BootMode, table: TableKind, root_mib: u64) -> Self {
        LayoutRequest {
            boot_mode,
            table,
            root_mib,
            swap_mib: 0,
            ephemeral_mib: 0,
            configdrive_mib: 0,
            ppc64: false,
            esp_mib: DEFAULT_ESP_MIB,
            bios_boot_mib: DEFAULT_BIOS_BOOT_MIB,
        }
    }
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The partitions do not fit the disk.
    #[error("the partition layout needs {needed_mib} MiB but the disk offers {usable_mib} MiB")]
    DoesNotFit {
        /// End of the last partition, MiB from the start of the disk.
        needed_mib: u64,
        /// What the table kind can address on this disk, MiB.
        usable_mib: u64,
    },
    /// msdos tables hold four primary partitions and IPA uses no logical ones.
    #[error("the layout needs {0} partitions but an msdos table holds 4 primary partitions")]
    TooManyPartitions(usize),
    /// A partition of zero size was requested where one is required.
    #[error("the root partition size must be at least 1 MiB")]
    NoRoot,
    /// Writing the GPT failed.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// Writing the MBR failed.
    #[error(transparent)]
    Mbr(#[from] MbrError),
    /// Other I/O on the disk failed.
    #[error("partition table I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One partition of a planned layout, in whole MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPartition {
    /// Partition number.
    pub number: u32,
    /// Its role.
    pub role: Role,
    /// First MiB.
    pub start_mib: u64,
    /// End MiB (exclusive): the last sector is the one before this MiB.
    pub end_mib: u64,
    /// GPT type GUID.
    pub gpt_type: Uuid,
    /// MBR type byte.
    pub mbr_type: u8,
    /// MBR boot indicator (parted's `boot` flag on msdos).
    pub bootable: bool,
}

impl PlannedPartition {
    /// First and last sector.
    pub fn sectors(&self, geometry: Geometry) -> (u64, u64) {
        let spm = geometry.sectors_per_mib();
        (self.start_mib * spm, self.end_mib * spm - 1)
    }
}

/// A planned layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Table kind.
    pub table: TableKind,
    /// Partitions in number order.
    pub partitions: Vec<PlannedPartition>,
}

/// A partition as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPartition {
    /// Its role.
    pub role: Role,
    /// Partition number.
    pub number: u32,
    /// Device path (`<dev>N` / `<dev>pN`).
    pub path: PathBuf,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// PARTUUID as lsblk prints it.
    pub part_uuid: String,
}

/// The result of writing a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayout {
    /// Table kind.
    pub table: TableKind,
    /// Partitions in number order.
    pub partitions: Vec<WrittenPartition>,
}

impl WrittenLayout {
    /// The partition with `role`, if the layout has one.
    pub fn get(&self, role: Role) -> Option<&WrittenPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// The `partitions` object of `get_partition_uuids`: role key to device path.
    pub fn partitions_map(&self) -> BTreeMap<&'static str, String> {
        self.partitions
            .iter()
            .map(|p| (p.role.key(), p.path.to_string_lossy().into_owned()))
            .collect()
    }
}

impl Layout {
    /// Plans the layout: partitions in IPA's order, each right after the previous one,
    /// the first at 1 MiB, all whole MiB.
    pub fn plan(req: &LayoutRequest, geometry: Geometry) -> Result<Self, LayoutError> {
        if req.root_mib == 0 {
            return Err(LayoutError::NoRoot);
        }
        let msdos = req.table == TableKind::Msdos;
        let bios = req.boot_mode == BootMode::Bios;
        // (role, size, gpt type, mbr type, boot flag) in IPA's order.
        let mut wanted = Vec::new();
        if !bios {
            wanted.push((
                Role::EfiSystem,
                req.esp_mib,
                types::EFI_SYSTEM,
                kinds::FAT32_LBA,
                true,
            ));
        }
        if bios && !msdos && !req.ppc64 {
            wanted.push((
                Role::BiosBoot,
                req.bios_boot_mib,
                types::BIOS_BOOT,
                kinds::LINUX,
                false,
            ));
        }
        if bios && req.ppc64 {
            wanted.push((Role::Prep, PREP_MIB, types::PREP_BOOT, kinds::PREP, msdos));
        }
        if req.ephemeral_mib > 0 {
            wanted.push((
                Role::Ephemeral,
                req.ephemeral_mib,
                types::LINUX_FS,
                kinds::LINUX,
                false,
            ));
        }
        if req.swap_mib > 0 {
            wanted.push((
                Role::Swap,
                req.swap_mib,
                types::LINUX_SWAP,
                kinds::SWAP,
                false,
            ));
        }
        if req.configdrive_mib > 0 {
            wanted.push((
                Role::ConfigDrive,
                req.configdrive_mib,
                types::LINUX_FS,
                kinds::LINUX,
                false,
            ));
        }
        let root_boot = bios && msdos && !req.ppc64;
        wanted.push((
            Role::Root,
            req.root_mib,
            types::LINUX_FS,
            kinds::LINUX,
            root_boot,
        ));
        if msdos && wanted.len() > 4 {
            return Err(LayoutError::TooManyPartitions(wanted.len()));
        }
        let mut start: u64 = 1;
        let mut partitions = Vec::with_capacity(wanted.len());
        for (number, (role, size, gpt_type, mbr_type, bootable)) in (1u32..).zip(wanted) {
            // Sizes come from the conductor: an absurd one must fail, not overflow.
            let end = start.checked_add(size).ok_or(LayoutError::DoesNotFit {
                needed_mib: u64::MAX,
                usable_mib: geometry.size() / MIB,
            })?;
            partitions.push(PlannedPartition {
                number,
                role,
                start_mib: start,
                end_mib: end,
                gpt_type,
                mbr_type,
                bootable,
            });
            start = end;
        }
        let layout = Layout {
            table: req.table,
            partitions,
        };
        layout.check_fits(geometry)?;
        Ok(layout)
    }

    /// The last sector a partition may use on this disk with this table kind.
    fn last_usable_sector(&self, geometry: Geometry) -> u64 {
        match self.table {
            // Backup header and a 16 KiB array at the end.
            TableKind::Gpt => {
                geometry.sectors() - 2 - (16u64 << 10).div_ceil(geometry.sector_size())
            }
            // MBR fields are 32-bit sector numbers.
            TableKind::Msdos => (geometry.sectors() - 1).min(u64::from(u32::MAX) - 1),
        }
    }

    fn check_fits(&self, geometry: Geometry) -> Result<(), LayoutError> {
        let needed_mib = self.partitions.last().map_or(0, |p| p.end_mib);
        let last_usable = self.last_usable_sector(geometry);
        let fits = needed_mib
            .checked_mul(geometry.sectors_per_mib())
            .is_some_and(|end| end - 1 <= last_usable);
        if fits {
            Ok(())
        } else {
            Err(LayoutError::DoesNotFit {
                needed_mib,
                usable_mib: (last_usable + 1) / geometry.sectors_per_mib(),
            })
        }
    }

    /// The device path of each role, without writing anything.
    pub fn paths(&self, dev: &Path) -> Vec<(Role, PathBuf)> {
        self.partitions
            .iter()
            .map(|p| (p.role, partition_path(dev, p.number)))
            .collect()
    }

    /// Writes the table (like `parted -a optimal -s <dev> -- unit MiB mklabel ... mkpart
    /// ...`) and returns where each role went. The disk's old metadata should have been
    /// destroyed first; signatures of the other table kind are cleared here, as parted
    /// clobbers them.
    pub fn write<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        geometry: Geometry,
        dev: &Path,
    ) -> Result<WrittenLayout, LayoutError> {
        self.check_fits(geometry)?;
        let ss = geometry.sector_size();
        let mut partitions = Vec::with_capacity(self.partitions.len());
        let mut record = |p: &PlannedPartition, part_uuid: String| {
            let (first, last) = p.sectors(geometry);
            partitions.push(WrittenPartition {
                role: p.role,
                number: p.number,
                path: partition_path(dev, p.number),
                start: first * ss,
                size: (last - first + 1) * ss,
                part_uuid,
            });
        };
        match self.table {
            TableKind::Gpt => {
                let mut gpt = Gpt::new(geometry, Uuid::new_v4())?;
                for p in &self.partitions {
                    let (first, last) = p.sectors(geometry);
                    let unique = Uuid::new_v4();
                    gpt.set_entry(
                        p.number,
                        &GptEntry {
                            type_guid: p.gpt_type,
                            unique_guid: unique,
                            first_lba: first,
                            last_lba: last,
                            attributes: 0,
                            name: GPT_NAME.to_owned(),
                        },
                    )?;
                    record(p, unique.hyphenated().to_string());
                }
                mbr::write_protective(disk, geometry)?;
                gpt.write(disk, geometry)?;
            }
            TableKind::Msdos => {
                clear_gpt_headers(disk, geometry)?;
                // parted gives a new msdos label a random, non-zero disk signature.
                let signature = rand::rng().random_range(1..=u32::MAX);
                let mut table = Mbr::new(signature);
                for p in &self.partitions {
                    let (first, last) = p.sectors(geometry);
                    let n = table.add_primary(first, last - first + 1, p.mbr_type, geometry)?;
                    if p.bootable {
                        table.primaries[n as usize - 1].status = 0x80;
                    }
                    record(p, format!("{signature:08x}-{:02x}", p.number));
                }
                table.write(disk)?;
            }
        }
        disk.flush()?;
        Ok(WrittenLayout {
            table: self.table,
            partitions,
        })
    }
}

/// Zeroes GPT headers at LBA 1 and at the last sector when they carry the signature.
fn clear_gpt_headers<D: Disk + ?Sized>(disk: &mut D, geometry: Geometry) -> std::io::Result<()> {
    let ss = geometry.sector_size();
    for lba in [1, geometry.sectors() - 1] {
        let mut sig = [0u8; 8];
        super::rw::read_exact_at(disk, lba * ss, &mut sig)?;
        if &sig == super::gpt::SIGNATURE {
            super::rw::zero_range(disk, lba * ss..(lba + 1) * ss)?;
        }
    }
    Ok(())
}

/// Sizes in MiB as IPA computes them for the config drive: bytes rounded up.
pub fn mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(size_mib: u64) -> Geometry {
        Geometry::new(size_mib << 20, 512).unwrap()
    }

    fn roles(l: &Layout) -> Vec<(Role, u64, u64)> {
        l.partitions
            .iter()
            .map(|p| (p.role, p.start_mib, p.end_mib))
            .collect()
    }

    #[test]
    fn uefi_full_layout_matches_ipa_order() {
        let mut req = LayoutRequest::new(BootMode::Uefi, TableKind::Gpt, 1024);
        req.ephemeral_mib = 100;
        req.swap_mib = 64;
        req.configdrive_mib = 1;
        let l = Layout::plan(&req, g(4096)).unwrap();
        assert_eq!(
            roles(&l),
            vec![
                (Role::EfiSystem, 1, 551),
                (Role::Ephemeral, 551, 651),
                (Role::Swap, 651, 715),
                (Role::ConfigDrive, 715, 716),
                (Role::Root, 716, 1740),
            ]
        );
        assert_eq!(l.partitions[0].gpt_type, types::EFI_SYSTEM);
    }

    #[test]
    fn bios_layouts_get_bios_grub_on_gpt_and_boot_flag_on_msdos() {
        let gpt = Layout::plan(
            &LayoutRequest::new(BootMode::Bios, TableKind::Gpt, 100),
            g(512),
        )
        .unwrap();
        assert_eq!(
            roles(&gpt),
            vec![(Role::BiosBoot, 1, 2), (Role::Root, 2, 102)]
        );
        assert!(!gpt.partitions[1].bootable);
        let dos = Layout::plan(
            &LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 100),
            g(512),
        )
        .unwrap();
        assert_eq!(roles(&dos), vec![(Role::Root, 1, 101)]);
        assert!(dos.partitions[0].bootable);
    }

    #[test]
    fn ppc64_gets_prep_first() {
        let mut req = LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 100);
        req.ppc64 = true;
        let l = Layout::plan(&req, g(512)).unwrap();
        assert_eq!(roles(&l), vec![(Role::Prep, 1, 9), (Role::Root, 9, 109)]);
        assert!(l.partitions[0].bootable && !l.partitions[1].bootable);
        assert_eq!(l.partitions[0].mbr_type, kinds::PREP);
    }

    #[test]
    fn limits_are_enforced() {
        let mut req = LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 100);
        req.ppc64 = true;
        req.swap_mib = 1;
        req.ephemeral_mib = 1;
        req.configdrive_mib = 1;
        assert!(matches!(
            Layout::plan(&req, g(512)),
            Err(LayoutError::TooManyPartitions(5))
        ));
        // GPT needs 33 sectors after the last partition; a root ending at the disk end fails.
        let req = LayoutRequest::new(BootMode::Bios, TableKind::Gpt, 510);
        assert!(matches!(
            Layout::plan(&req, g(512)),
            Err(LayoutError::DoesNotFit {
                needed_mib: 512,
                usable_mib: 511
            })
        ));
        let req = LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 511);
        assert!(Layout::plan(&req, g(512)).is_ok());
        assert!(matches!(
            Layout::plan(
                &LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 0),
                g(512)
            ),
            Err(LayoutError::NoRoot)
        ));
    }

    #[test]
    fn table_kind_follows_the_spec() {
        assert_eq!(
            table_kind_for(BootMode::Uefi, Some("msdos")),
            TableKind::Gpt
        );
        assert_eq!(table_kind_for(BootMode::Bios, Some("gpt")), TableKind::Gpt);
        assert_eq!(
            table_kind_for(BootMode::Bios, Some("GPT")),
            TableKind::Msdos
        );
        assert_eq!(table_kind_for(BootMode::Bios, None), TableKind::Msdos);
    }

    #[test]
    fn paths_use_the_p_separator_after_digits() {
        let l = Layout::plan(
            &LayoutRequest::new(BootMode::Uefi, TableKind::Gpt, 100),
            g(1024),
        )
        .unwrap();
        let paths = l.paths(Path::new("/dev/nvme0n1"));
        assert_eq!(paths[0], (Role::EfiSystem, PathBuf::from("/dev/nvme0n1p1")));
        assert_eq!(paths[1], (Role::Root, PathBuf::from("/dev/nvme0n1p2")));
    }
}
