//! The `disks` list (spec 1.4 fields, section 2 selection) from `sys/block` and the udev
//! database, as IPA gets it from `lsblk` plus udev.
//!
//! Selection, in the order applied (each skipped device is logged at debug level):
//! floppies (`fd*`), RAM disks (`ram*`, `zram*`), loop devices unless the allow-list
//! names them, member paths of a multipath map (the `dm-N` map is listed instead),
//! device-mapper devices other than multipath maps, md devices without a RAID level,
//! SCSI devices whose peripheral type is not 0 (CD/DVD drives have type 5, lsblk `rom`),
//! devices outside the allow-list, devices of size 0, and removable USB media.
//!
//! The last rule departs from IPA on purpose: IPA lists removable media like any disk
//! (spec 2.2), but a USB stick plugged into a server (often the boot medium itself) must
//! never be chosen as an install or erase target, so `removable == 1` devices on the
//! `usb` transport are skipped. Partitions never appear: `sys/block` only lists whole
//! devices.
//!
//! Fail closed: an unreadable `sys/block` or an unreadable size, rotational flag or
//! sector size of a selected device is an error, never a shorter list.

use std::collections::BTreeSet;
use std::path::Path;

use ira_hw::BlockDevice;

use super::allowlist::AllowList;
use super::read::{
    list_dir, list_dir_opt, read_attr, read_opt, read_opt_nonempty, read_prefix, read_u64, under,
};
use super::udev::{read_block_record, unescape_hex, UdevRecord};
use super::InventoryError;

/// `sys/block/<k>/size` is always in 512-byte units, whatever the sector size.
const SECTOR: u64 = 512;
/// SCSI peripheral device type of a direct-access block device (a disk).
const SCSI_TYPE_DISK: &str = "0";

/// Lists the disks under `root` that `allow` permits, in kernel name order.
pub fn list_disks(root: &Path, allow: &AllowList) -> Result<Vec<BlockDevice>, InventoryError> {
    let block = under(root, "sys/block");
    let names = list_dir(&block)?;
    let members = multipath_members(&block, &names);
    let mut disks = Vec::new();
    for name in &names {
        let dir = block.join(name);
        if let Some(reason) = skip_reason(&dir, name, &members, allow) {
            tracing::debug!(device = %name, reason, "not listed");
            continue;
        }
        if let Some(disk) = read_disk(root, &dir, name)? {
            disks.push(disk);
        }
    }
    Ok(disks)
}

/// Why device `name` is not a disk for the listing; `None` when it is one.
fn skip_reason(
    dir: &Path,
    name: &str,
    multipath_members: &BTreeSet<String>,
    allow: &AllowList,
) -> Option<&'static str> {
    let dev_path = Path::new("/dev").join(name);
    if name.starts_with("fd") {
        return Some("floppy");
    }
    if name.starts_with("ram") || name.starts_with("zram") {
        return Some("RAM disk");
    }
    if name.starts_with("loop") && !allow.names(&dev_path) {
        return Some("loop device not named by the allow-list");
    }
    if multipath_members.contains(name) {
        return Some("path of a multipath map");
    }
    if dir.join("dm").is_dir() && !is_multipath_map(dir) {
        return Some("device-mapper device other than a multipath map");
    }
    if dir.join("md").is_dir()
        && !read_opt(&dir.join("md/level")).is_some_and(|level| level.contains("raid"))
    {
        return Some("md device without a RAID level");
    }
    if read_opt(&dir.join("device/type")).is_some_and(|t| t != SCSI_TYPE_DISK) {
        return Some("SCSI device that is not a disk (CD/DVD drive, tape, enclosure)");
    }
    if !allow.permits(&dev_path) {
        return Some("outside the device allow-list");
    }
    None
}

/// Whether a dm device is a multipath map (`dm/uuid` = `mpath-...`, lsblk type `mpath`).
fn is_multipath_map(dir: &Path) -> bool {
    read_opt(&dir.join("dm/uuid")).is_some_and(|uuid| uuid.starts_with("mpath-"))
}

/// Kernel names of the paths below every multipath map (its `slaves/`).
fn multipath_members(block: &Path, names: &[String]) -> BTreeSet<String> {
    names
        .iter()
        .map(|name| block.join(name))
        .filter(|dir| dir.join("dm").is_dir() && is_multipath_map(dir))
        .flat_map(|dir| list_dir_opt(&dir.join("slaves")))
        .collect()
}

/// Reads one selected device; `None` when it turns out to be empty or removable USB.
fn read_disk(root: &Path, dir: &Path, name: &str) -> Result<Option<BlockDevice>, InventoryError> {
    let size = read_u64(&dir.join("size"))?.saturating_mul(SECTOR);
    if size == 0 {
        tracing::debug!(device = %name, "not listed: size 0");
        return Ok(None);
    }
    let rotational = read_attr(&dir.join("queue/rotational"))? == "1";
    let logical_sectors = read_u32(&dir.join("queue/logical_block_size"))?;
    let physical_sectors = read_u32(&dir.join("queue/physical_block_size"))?;
    let hctl = list_dir_opt(&dir.join("device/scsi_device"))
        .into_iter()
        .next();
    let tran = transport(root, dir, name, hctl.as_deref());
    if tran.as_deref() == Some("usb") && read_opt(&dir.join("removable")).as_deref() == Some("1") {
        tracing::debug!(device = %name, "not listed: removable USB medium");
        return Ok(None);
    }
    let udev = read_opt_nonempty(&dir.join("dev"))
        .and_then(|dev| read_block_record(root, &dev))
        .unwrap_or_default();
    let sysfs = |rel: &str| read_opt_nonempty(&dir.join(rel));
    Ok(Some(BlockDevice {
        name: format!("/dev/{name}"),
        model: sysfs("device/model").or_else(|| udev_model(&udev)),
        size,
        rotational,
        wwn: udev
            .first(&["ID_WWN_WITH_EXTENSION", "ID_WWN", "DM_WWN"])
            .or_else(|| {
                sysfs("device/wwid")
                    .or_else(|| sysfs("wwid"))
                    .and_then(|w| wwn_from_wwid(&w))
            }),
        serial: udev
            .first(&[
                "ID_SCSI_SERIAL",
                "ID_SERIAL_SHORT",
                "ID_SERIAL",
                "DM_SERIAL",
            ])
            .or_else(|| sysfs("device/serial"))
            .or_else(|| sysfs("serial"))
            .or_else(|| {
                read_prefix(&dir.join("device/vpd_pg80"), 4096)
                    .ok()
                    .and_then(|page| parse_vpd_serial(&page))
            }),
        vendor: sysfs("device/vendor"),
        wwn_with_extension: udev.first(&["ID_WWN_WITH_EXTENSION", "DM_WWN_WITH_EXTENSION"]),
        wwn_vendor_extension: udev.first(&["ID_WWN_VENDOR_EXTENSION", "DM_WWN_VENDOR_EXTENSION"]),
        hctl,
        by_path: by_path(&udev),
        logical_sectors,
        physical_sectors,
        tran,
    }))
}

/// The WWN udev would report, from the kernel's `wwid` when there is no udev database
/// (our own ramdisk runs no udevd): SCSI `naa.<hex>` is udev's `0x<hex>`; NVMe
/// identifiers (`eui.`, `nvme.`, `uuid.`) are udev's `ID_WWN` as they are; a SCSI
/// `t10.` vendor/model/serial string is no WWN (udev sets none for it).
pub fn wwn_from_wwid(wwid: &str) -> Option<String> {
    let wwid = wwid.trim();
    if let Some(hex) = wwid.strip_prefix("naa.") {
        return Some(format!("0x{}", hex.to_ascii_lowercase()));
    }
    if wwid.starts_with("t10.") || wwid.is_empty() {
        return None;
    }
    Some(wwid.to_owned())
}

/// The unit serial number of a SCSI VPD page 0x80 (`device/vpd_pg80`; libata fills it
/// with the ATA serial): a 4-byte header whose byte 3 is the length, then the serial.
pub fn parse_vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(page[3]);
    let raw = page.get(4..4 + len).unwrap_or(&page[4..]);
    let text = String::from_utf8_lossy(raw);
    let serial = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!serial.is_empty()).then(|| serial.to_owned())
}

fn read_u32(path: &Path) -> Result<u32, InventoryError> {
    let value = read_u64(path)?;
    u32::try_from(value).map_err(|_| InventoryError::Invalid {
        path: path.to_path_buf(),
        reason: format!("{value} does not fit 32 bits"),
    })
}

/// udev's model: `ID_MODEL_ENC` decoded (spaces kept), else `ID_MODEL` (spaces as `_`).
fn udev_model(udev: &UdevRecord) -> Option<String> {
    udev.first(&["ID_MODEL_ENC"])
        .map(|enc| unescape_hex(&enc).trim().to_owned())
        .filter(|m| !m.is_empty())
        .or_else(|| udev.first(&["ID_MODEL"]))
}

/// `/dev/disk/by-path/<ID_PATH>` (the link udev's persistent-storage rules create),
/// else the first `disk/by-path/` link of the record.
fn by_path(udev: &UdevRecord) -> Option<String> {
    if let Some(id_path) = udev.first(&["ID_PATH"]) {
        return Some(format!("/dev/disk/by-path/{id_path}"));
    }
    udev.links
        .iter()
        .find(|l| l.starts_with("disk/by-path/"))
        .map(|l| format!("/dev/{l}"))
}

/// The transport as lsblk derives it from sysfs: for SCSI devices the class of their
/// host adapter (`sys/class/<kind>_host/host<H>`), the device path (`usb`) or the
/// adapter driver (`ahci`/`sata*` = `sata`, other `*ata*` = `ata`); `nvme` for NVMe
/// namespaces; null otherwise (virtio, md, dm, loop), as lsblk reports them.
fn transport(root: &Path, dir: &Path, name: &str, hctl: Option<&str>) -> Option<String> {
    let Some(host) = hctl.and_then(|h| h.split(':').next()) else {
        return name.starts_with("nvme").then(|| "nvme".to_owned());
    };
    let host_class = |class: &str| under(root, &format!("sys/class/{class}/host{host}"));
    let tran = if host_class("spi_host").exists() {
        "spi"
    } else if host_class("fc_host").exists() {
        let symbolic = read_opt(&host_class("fc_host").join("symbolic_name")).unwrap_or_default();
        if symbolic.contains(" over ") {
            "fcoe"
        } else {
            "fc"
        }
    } else if host_class("sas_host").exists() || dir.join("device/sas_device").exists() {
        "sas"
    } else if dir.join("device/ieee1394_id").exists() {
        "sbp"
    } else if host_class("iscsi_host").exists() {
        "iscsi"
    } else if sysfs_path_contains(root, dir, "/usb") {
        "usb"
    } else {
        let proc_name = read_opt(&host_class("scsi_host").join("proc_name"))?;
        if proc_name.starts_with("ahci") || proc_name.starts_with("sata") {
            "sata"
        } else if proc_name.contains("ata") {
            "ata"
        } else {
            return None;
        }
    };
    Some(tran.to_owned())
}

/// Whether the resolved sysfs path of `dir`, taken relative to `root` (a fixture's own
/// location must not count), contains `needle`.
fn sysfs_path_contains(root: &Path, dir: &Path, needle: &str) -> bool {
    let (Ok(real), Ok(real_root)) = (std::fs::canonicalize(dir), std::fs::canonicalize(root))
    else {
        return false;
    };
    real.strip_prefix(&real_root)
        .is_ok_and(|rel| format!("/{}", rel.to_string_lossy()).contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwid_to_wwn_as_udev_reports_it() {
        assert_eq!(
            wwn_from_wwid("naa.5000C500A1B2C3D4\n").as_deref(),
            Some("0x5000c500a1b2c3d4")
        );
        assert_eq!(
            wwn_from_wwid("eui.36344830526023540025384500000001").as_deref(),
            Some("eui.36344830526023540025384500000001")
        );
        assert_eq!(wwn_from_wwid("t10.ATA     QEMU HARDDISK   ira-sata0"), None);
        assert_eq!(wwn_from_wwid(""), None);
    }

    #[test]
    fn vpd_page_80_serial() {
        let mut page = vec![0x00, 0x80, 0x00, 20];
        page.extend_from_slice(b"      ira-sata0     ");
        assert_eq!(parse_vpd_serial(&page).as_deref(), Some("ira-sata0"));
        // Wrong page code, short page, blank serial: nothing.
        assert_eq!(parse_vpd_serial(&[0, 0x83, 0, 2, b'a', b'b']), None);
        assert_eq!(parse_vpd_serial(&[0, 0x80]), None);
        assert_eq!(parse_vpd_serial(&[0, 0x80, 0, 3, b' ', 0, b' ']), None);
        // A length past the end keeps what is there.
        assert_eq!(
            parse_vpd_serial(&[0, 0x80, 0, 9, b'x', b'y']).as_deref(),
            Some("xy")
        );
    }
}
