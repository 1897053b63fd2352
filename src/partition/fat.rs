//! `mkfs -t vfat -n efi-part` natively, for the EFI system partition of a partition
//! image (spec 6.3): a FAT32 filesystem with an empty root directory and a volume label.
//!
//! Layout (Microsoft FAT specification): 32 reserved sectors holding the boot sector
//! (0), FSInfo (1) and their backups (6, 7); two FATs; then the data area whose first
//! cluster (2) is the root directory. Clusters are the largest of 4 KiB down to one
//! sector that still gives FAT32 its minimum of 65525 clusters, so a 550 MiB ESP gets
//! 4 KiB clusters as mkfs.fat gives it. Smaller partitions are refused rather than
//! given FAT12/16, which some firmware reject for an ESP.

use std::io;

use super::rw::{write_all_at, zero_range};
use super::Disk;
use crate::bytes::put_le32;

/// The ESP label IPA uses.
pub const ESP_LABEL: &str = "efi-part";
const RESERVED_SECTORS: u64 = 32;
const NUM_FATS: u64 = 2;
const MIN_CLUSTERS: u64 = 65525;
const MAX_CLUSTERS: u64 = 0x0fff_fff5;
const MEDIA: u8 = 0xf8;

/// Why the filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Too small for FAT32 at this sector size.
    #[error("a FAT32 filesystem needs at least {min} bytes with {sector}-byte sectors, the partition has {size}")]
    TooSmall {
        /// Bytes offered.
        size: u64,
        /// Bytes needed.
        min: u64,
        /// Sector size.
        sector: u64,
    },
    /// Too large for FAT32's 32-bit sector count.
    #[error("partition of {0} bytes is too large for FAT32")]
    TooLarge(u64),
    /// The label does not fit 11 bytes of ASCII.
    #[error("FAT label {0:?} is not up to 11 ASCII characters")]
    BadLabel(String),
    /// Sector sizes FAT supports: 512 to 4096.
    #[error("unsupported sector size {0} for FAT")]
    SectorSize(u64),
    /// Writing failed.
    #[error("writing the FAT filesystem: {0}")]
    Io(#[from] io::Error),
}

/// What was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatVolume {
    /// The volume serial number.
    pub volume_id: u32,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Number of data clusters.
    pub clusters: u64,
}

impl FatVolume {
    /// blkid's `UUID` for it: `XXXX-XXXX` (the ESP's `efi system partition uuid`).
    pub fn uuid(&self) -> String {
        format!(
            "{:04X}-{:04X}",
            self.volume_id >> 16,
            self.volume_id & 0xffff
        )
    }
}

struct Plan {
    sector: u64,
    sectors: u64,
    per_cluster: u64,
    fat_sectors: u64,
    clusters: u64,
}

fn plan(size: u64, sector: u64) -> Result<Plan, FatError> {
    if !matches!(sector, 512 | 1024 | 2048 | 4096) {
        return Err(FatError::SectorSize(sector));
    }
    let sectors = size / sector;
    if sectors > u64::from(u32::MAX) {
        return Err(FatError::TooLarge(size));
    }
    let mut per_cluster = (4096 / sector).max(1);
    loop {
        let avail = sectors.saturating_sub(RESERVED_SECTORS);
        // Size the FAT for every cluster the area could hold (a slight overestimate).
        let fat_sectors = ((avail / per_cluster + 2) * 4).div_ceil(sector);
        let clusters = avail.saturating_sub(NUM_FATS * fat_sectors) / per_cluster;
        if clusters >= MIN_CLUSTERS {
            if clusters > MAX_CLUSTERS {
                return Err(FatError::TooLarge(size));
            }
            return Ok(Plan {
                sector,
                sectors,
                per_cluster,
                fat_sectors,
                clusters,
            });
        }
        if per_cluster == 1 {
            let min = (RESERVED_SECTORS
                + NUM_FATS * ((MIN_CLUSTERS + 2) * 4).div_ceil(sector)
                + MIN_CLUSTERS)
                * sector;
            return Err(FatError::TooSmall { size, min, sector });
        }
        per_cluster /= 2;
    }
}

/// Makes a FAT32 filesystem in the `size` bytes at `start` of `disk` (sector size
/// `sector`), labelled `label`, with serial `volume_id`.
pub fn make_fat32<D: Disk + ?Sized>(
    disk: &mut D,
    start: u64,
    size: u64,
    sector: u64,
    label: &str,
    volume_id: u32,
) -> Result<FatVolume, FatError> {
    if label.len() > 11 || !label.is_ascii() {
        return Err(FatError::BadLabel(label.to_owned()));
    }
    let p = plan(size, sector)?;
    let ss = usize::try_from(p.sector).expect("sector fits usize");
    let mut label11 = [b' '; 11];
    label11[..label.len()].copy_from_slice(label.as_bytes());

    // Clear old signatures in the reserved area and every byte of both FATs.
    let fat_start = start + RESERVED_SECTORS * p.sector;
    let data_start = fat_start + NUM_FATS * p.fat_sectors * p.sector;
    zero_range(disk, start..data_start)?;

    // plan() bounds every field: sector is 512 to 4096, per_cluster at most 8, sectors
    // (so fat_sectors and clusters too) at most u32::MAX; the constants are small.
    let narrow = "plan() keeps FAT fields in range";
    let mut boot = vec![0u8; ss];
    boot[..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
    boot[3..11].copy_from_slice(b"MSWIN4.1");
    boot[11..13].copy_from_slice(&u16::try_from(p.sector).expect(narrow).to_le_bytes());
    boot[13] = u8::try_from(p.per_cluster).expect(narrow);
    boot[14..16].copy_from_slice(&u16::try_from(RESERVED_SECTORS).expect(narrow).to_le_bytes());
    boot[16] = u8::try_from(NUM_FATS).expect(narrow);
    boot[21] = MEDIA;
    boot[24..26].copy_from_slice(&63u16.to_le_bytes());
    boot[26..28].copy_from_slice(&255u16.to_le_bytes());
    put_le32(&mut boot, 28, u32::try_from(start / p.sector).unwrap_or(0));
    put_le32(&mut boot, 32, u32::try_from(p.sectors).expect(narrow));
    put_le32(&mut boot, 36, u32::try_from(p.fat_sectors).expect(narrow));
    put_le32(&mut boot, 44, 2); // root directory cluster
    boot[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    boot[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    boot[64] = 0x80;
    boot[66] = 0x29;
    put_le32(&mut boot, 67, volume_id);
    boot[71..82].copy_from_slice(&label11);
    boot[82..90].copy_from_slice(b"FAT32   ");
    boot[90..92].copy_from_slice(&[0xeb, 0xfe]); // not bootable: spin
    boot[510] = 0x55;
    boot[511] = 0xaa;

    let mut fsinfo = vec![0u8; ss];
    put_le32(&mut fsinfo, 0, 0x4161_5252);
    put_le32(&mut fsinfo, 484, 0x6141_7272);
    // The root directory takes one cluster.
    put_le32(
        &mut fsinfo,
        488,
        u32::try_from(p.clusters - 1).expect(narrow),
    );
    put_le32(&mut fsinfo, 492, 3);
    put_le32(&mut fsinfo, 508, 0xaa55_0000);

    for (sector_no, data) in [(0u64, &boot), (1, &fsinfo), (6, &boot), (7, &fsinfo)] {
        write_all_at(disk, start + sector_no * p.sector, data)?;
    }
    // FAT entries 0 and 1 (media, clean-shutdown bits) and 2 (root directory: end of chain).
    let mut head = [0u8; 12];
    put_le32(&mut head, 0, 0x0fff_ff00 | u32::from(MEDIA));
    put_le32(&mut head, 4, 0x0fff_ffff);
    put_le32(&mut head, 8, 0x0fff_ffff);
    for fat in 0..NUM_FATS {
        write_all_at(disk, fat_start + fat * p.fat_sectors * p.sector, &head)?;
    }
    let cluster_bytes = p.per_cluster * p.sector;
    zero_range(disk, data_start..data_start + cluster_bytes)?;
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(&label11);
    entry[11] = 0x08; // volume label
    write_all_at(disk, data_start, &entry)?;
    disk.flush()?;
    Ok(FatVolume {
        volume_id,
        cluster_size: cluster_bytes,
        clusters: p.clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::fsprobe::{probe, FsKind};
    use std::io::Cursor;

    #[test]
    fn cluster_size_follows_the_partition_size() {
        assert_eq!(plan(550 << 20, 512).unwrap().per_cluster, 8);
        assert_eq!(plan(100 << 20, 512).unwrap().per_cluster, 2);
        assert_eq!(plan(550 << 20, 4096).unwrap().per_cluster, 1);
        assert!(matches!(
            plan(16 << 20, 512),
            Err(FatError::TooSmall { .. })
        ));
        assert!(matches!(
            plan(100 << 20, 4096),
            Err(FatError::TooSmall { .. })
        ));
    }

    #[test]
    fn probe_reads_back_label_and_uuid() {
        let size = 64u64 << 20;
        let mut d = Cursor::new(vec![0xaau8; usize::try_from(size).unwrap() + (1 << 20)]);
        let vol = make_fat32(&mut d, 1 << 20, size, 512, ESP_LABEL, 0x1234_abcd).unwrap();
        assert_eq!(vol.uuid(), "1234-ABCD");
        let info = probe(&mut d, 1 << 20, size).unwrap().unwrap();
        assert_eq!(info.kind, FsKind::Vfat);
        assert_eq!(info.label.as_deref(), Some("efi-part"));
        assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(
            d.get_ref()[(1 << 20) - 1],
            0xaa,
            "nothing before the partition changed"
        );
        assert!(matches!(
            make_fat32(&mut d, 0, size, 512, "a-label-too-long", 1),
            Err(FatError::BadLabel(_))
        ));
    }
}
