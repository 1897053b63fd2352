//! Choosing the install (root) device as IPA's `get_os_install_device` and
//! `guess_root_disk` do, plus the two readers that give it what the inventory does not
//! carry: the list-mode serials/WWNs from udev and the md arrays from sysfs.
//!
//! Order of the choice (spec hardware-and-disks 3.5): hints from
//! `instance_info.root_device`, else `properties.root_device`; candidates = the disk
//! listing (allow-list already applied by the inventory) minus the skip list when a node
//! is known; a RAID volume created in this run with `is_root_volume: true` wins outright,
//! volumes with `false` are removed with their holder disks and members; then without
//! hints the smallest disk of at least 4 GiB (ties by name), with hints the first disk
//! in listing order that matches them all (no size minimum).
//!
//! The choice itself does no I/O ([`get_os_install_device`] takes the listing); asking
//! the conductor again when there are no hints (`permit_refresh`) is the caller's job.

use std::path::Path;

use ira_hw::inventory::BlockDevice;
use serde_json::Value;

use super::hints::{
    device_matches, py, HintDevice, MdArray, RootDeviceHints, SkipList, SkipListError,
};
use crate::inventory::read::{list_dir_opt, read_opt_nonempty, under};
use crate::inventory::udev::{read_block_record, UdevRecord};
use crate::inventory::InventoryError;

/// The smallest disk chosen without hints: 4 GiB (IPA: `guess_root_disk`).
pub const MIN_ROOT_DISK_SIZE: u64 = 4 << 30;

/// A software RAID volume created by this agent run (IPA: `_raid_root_device_mapping`),
/// for logical disks whose `is_root_volume` was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidVolume {
    /// `/dev/mdN`.
    pub name: String,
    /// The logical disk's `is_root_volume`.
    pub is_root_volume: bool,
}

/// Everything the choice depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallDeviceQuery<'a> {
    /// The cached node (`instance_info`, `properties`); `None` before lookup.
    pub node: Option<&'a Value>,
    /// The disk listing in list mode ([`list_mode_devices`]), in listing order.
    pub devices: &'a [HintDevice],
    /// Every md array ([`read_md_arrays`]); only read when the skip list names
    /// volumes or `raid_volumes` is not empty ([`needs_md_arrays`]).
    pub md_arrays: &'a [MdArray],
    /// RAID volumes created in this run, in creation order.
    pub raid_volumes: &'a [RaidVolume],
}

/// No install device (IPA's `DeviceNotFound` texts), or a skip list that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallDeviceError {
    /// No hints and no disk of at least `min` bytes.
    #[error(
        "No suitable device was found for deployment - root device hints were not provided \
         and all found block devices are smaller than {min}B."
    )]
    TooSmall {
        /// The minimum size in bytes.
        min: u64,
    },
    /// The hints are invalid or raised while matching.
    #[error(
        "No devices could be found using the root device hints {hints} because they failed \
         to validate. Error: {error}"
    )]
    InvalidHints {
        /// The hints as Python prints them.
        hints: String,
        /// The validation or matching error.
        error: String,
    },
    /// No candidate matches the hints.
    #[error("No suitable device was found for deployment using these hints {hints}")]
    NoMatch {
        /// The hints as Python prints them.
        hints: String,
    },
    /// The node's skip list could not be applied (IPA lets this escape unclassified).
    #[error("{0}")]
    SkipList(#[from] SkipListError),
}

impl InstallDeviceError {
    /// True for the errors IPA reports as `DeviceNotFound` (404).
    pub fn is_device_not_found(&self) -> bool {
        !matches!(self, Self::SkipList(_))
    }
}

/// The node's root device hints: `instance_info.root_device` when non-empty, else
/// `properties.root_device` (no merge); `None` when neither is set.
pub fn root_device_hints(node: &Value) -> Option<&Value> {
    let pick = |section: &str| {
        node.get(section)
            .and_then(|s| s.get("root_device"))
            .filter(|v| py::truthy(v))
    };
    pick("instance_info").or_else(|| pick("properties"))
}

/// Whether [`get_os_install_device`] needs `md_arrays` for this node: the skip list
/// protects volumes by name, or RAID volumes were created in this run.
pub fn needs_md_arrays(
    node: Option<&Value>,
    raid_volumes: &[RaidVolume],
) -> Result<bool, SkipListError> {
    if !raid_volumes.is_empty() {
        return Ok(true);
    }
    let Some(node) = node else {
        return Ok(false);
    };
    Ok(SkipList::from_node(node)?.is_some_and(|s| !s.volume_names().is_empty()))
}

/// Picks the install device; returns its `/dev/...` name.
pub fn get_os_install_device(q: &InstallDeviceQuery<'_>) -> Result<String, InstallDeviceError> {
    let hints = q.node.and_then(root_device_hints);
    let mut candidates: Vec<&HintDevice> = match q.node.map(SkipList::from_node).transpose()? {
        Some(Some(skip)) => skip.filter(q.devices, q.md_arrays, false)?,
        _ => q.devices.iter().collect(),
    };
    for volume in q.raid_volumes {
        if volume.is_root_volume {
            if let Some(h) = hints {
                tracing::warn!(hints = %py::repr_of(h), device = %volume.name,
                    "both root device hints and a RAID root volume are set; using the RAID root volume");
            }
            return Ok(volume.name.clone());
        }
        let array = q.md_arrays.iter().find(|a| a.name == volume.name);
        let related = |name: &str| {
            array.is_some_and(|a| {
                a.holder_disks.iter().any(|d| d == name) || a.components.iter().any(|c| c == name)
            })
        };
        tracing::debug!(device = %volume.name, "excluding RAID volume that is not the root volume, with its disks");
        candidates.retain(|d| d.name() != volume.name && !related(d.name()));
    }
    let name = match hints {
        None => guess_root_disk(candidates.iter().map(|d| &d.device))?
            .name
            .clone(),
        Some(raw) => first_match(&candidates, raw)?,
    };
    tracing::info!(device = %name, hints = %hints.map(py::repr_of).unwrap_or_else(|| "None".into()), "picked root device");
    Ok(name)
}

/// The first candidate matching hint object `raw` (IPA: `match_root_device_hints`).
fn first_match(candidates: &[&HintDevice], raw: &Value) -> Result<String, InstallDeviceError> {
    let shown = py::repr_of(raw);
    let invalid = |error: String| InstallDeviceError::InvalidHints {
        hints: shown.clone(),
        error,
    };
    let parsed = RootDeviceHints::parse(raw)
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("no hints".to_owned()))?;
    for dev in candidates {
        if device_matches(dev, &parsed).map_err(|e| invalid(e.to_string()))? {
            return Ok(dev.name().to_owned());
        }
    }
    tracing::warn!(hints = %shown, "no device matches the root device hints");
    Err(InstallDeviceError::NoMatch { hints: shown })
}

/// The smallest device of at least [`MIN_ROOT_DISK_SIZE`], ties broken by name (IPA:
/// `guess_root_disk`; also the inspection payload's `root_disk`).
pub fn guess_root_disk<'a, I>(devices: I) -> Result<&'a BlockDevice, InstallDeviceError>
where
    I: IntoIterator<Item = &'a BlockDevice>,
{
    devices
        .into_iter()
        .filter(|d| d.size >= MIN_ROOT_DISK_SIZE)
        .min_by(|a, b| (a.size, &a.name).cmp(&(b.size, &b.name)))
        .ok_or(InstallDeviceError::TooSmall {
            min: MIN_ROOT_DISK_SIZE,
        })
}

/// The udev record of `sys/block/<kname>` under `root`, if udev has one.
fn udev_record(root: &Path, kname: &str) -> Option<UdevRecord> {
    read_opt_nonempty(&under(root, &format!("sys/block/{kname}/dev")))
        .and_then(|dev| read_block_record(root, &dev))
}

/// The inventory's disks in list mode: each disk's serial and WWN followed by udev's
/// `ID_SERIAL_SHORT`, `ID_SERIAL` and `ID_WWN` (or `DM_*` for device-mapper), read
/// under `root`. A disk udev does not know keeps only its own values.
pub fn list_mode_devices(root: &Path, disks: &[BlockDevice]) -> Vec<HintDevice> {
    disks
        .iter()
        .map(|disk| {
            let kname = disk.name.strip_prefix("/dev/").unwrap_or(&disk.name);
            let rec = udev_record(root, kname).unwrap_or_default();
            HintDevice::list_mode(
                disk.clone(),
                rec.first(&["ID_SERIAL_SHORT", "DM_SERIAL_SHORT"]),
                rec.first(&["ID_SERIAL", "DM_SERIAL"]),
                rec.first(&["ID_WWN", "DM_WWN"]),
            )
        })
        .collect()
}

/// Every md array under `root` (`sys/block/md*` with an `md/` directory, broken and
/// empty ones included): members from `slaves/`, holder disks (the disk of each member
/// partition), volume name from udev's `MD_NAME`. With `require_names`, an array udev
/// has no record of is an error, never an unprotected array.
pub fn read_md_arrays(root: &Path, require_names: bool) -> Result<Vec<MdArray>, InventoryError> {
    let block = under(root, "sys/block");
    let names = list_dir_opt(&block);
    let mut arrays = Vec::new();
    for name in names.iter().filter(|n| block.join(n).join("md").is_dir()) {
        let components: Vec<String> = list_dir_opt(&block.join(name).join("slaves"));
        let mut holder_disks: Vec<String> = Vec::new();
        for member in &components {
            let disk = if block.join(member).exists() {
                member.clone()
            } else {
                // A partition lives in its disk's directory: sys/block/<disk>/<part>.
                names
                    .iter()
                    .find(|d| block.join(d).join(member).join("partition").exists())
                    .cloned()
                    .unwrap_or_else(|| member.clone())
            };
            let disk = format!("/dev/{disk}");
            if !holder_disks.contains(&disk) {
                holder_disks.push(disk);
            }
        }
        let record = udev_record(root, name);
        if require_names && record.is_none() {
            return Err(InventoryError::Invalid {
                path: block.join(name),
                reason: "no udev record, so the md volume name is unknown".to_owned(),
            });
        }
        arrays.push(MdArray {
            name: format!("/dev/{name}"),
            volume_name: record
                .and_then(|r| r.first(&["MD_NAME"]))
                .and_then(|n| volume_name(&n)),
            holder_disks,
            components: components.iter().map(|c| format!("/dev/{c}")).collect(),
        });
    }
    Ok(arrays)
}

/// The volume part of an md name (`host:name` or `name`), first word only (IPA:
/// `raid_utils.get_volume_name_of_raid_device`).
fn volume_name(md_name: &str) -> Option<String> {
    let parts: Vec<&str> = md_name.split(':').collect();
    let candidate = match parts.as_slice() {
        [name] | [_, name] => name.trim(),
        _ => return None,
    };
    candidate
        .split(' ')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_like_mdadm() {
        assert_eq!(volume_name("host:root").as_deref(), Some("root"));
        assert_eq!(volume_name("esp").as_deref(), Some("esp"));
        assert_eq!(volume_name("a:b:c"), None);
        assert_eq!(volume_name("h:"), None);
    }
}
