//! The devices an erase step considers (spec 5.1): the disk listing (md arrays and
//! multipath maps included, 2.2) plus each disk's partitions from sysfs, minus
//! partitions outside the allow-list, skip-list hits (with the partitions of a skipped
//! disk) and RAID `keep`/`wipe` arrays, minus every device that shares a disk with the
//! running system. Sorted by name descending, so a disk's partitions come before the
//! disk whose table is about to disappear.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::blockdev::hints::skip::SkipList;
use crate::blockdev::hints::HintDevice;
use crate::blockdev::install_device::read_md_arrays;
use crate::blockdev::{devices_under, system_devices};
use crate::inventory::disks::list_disks;
use crate::inventory::read::{list_dir_opt, read_attr, read_u64, under};
use ira_hw::BlockDevice;

use super::{EraseError, EraseScope};

/// `sys/block/*/size` is in 512-byte units whatever the sector size.
const SECTOR: u64 = 512;

/// One device an erase step may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `/dev/<kname>`.
    pub name: String,
    /// Kernel name.
    pub kname: String,
    /// Kernel name of the whole device it lives on (itself for a disk).
    pub disk: String,
    /// Partition number; `None` for a whole device.
    pub partition: Option<u32>,
    /// Size in bytes.
    pub size: u64,
}

impl Candidate {
    /// The whole device the listing entry `dev` describes.
    pub fn whole_device(dev: &BlockDevice) -> Self {
        let kname = dev.name.trim_start_matches("/dev/").to_owned();
        Self {
            name: dev.name.clone(),
            disk: kname.clone(),
            kname,
            partition: None,
            size: dev.size,
        }
    }

    /// Whether this is a partition of [`Candidate::disk`].
    pub fn is_partition(&self) -> bool {
        self.partition.is_some()
    }
}

/// The candidate devices of `erase_devices_metadata` for `node`, name descending.
pub fn candidates(scope: &EraseScope, node: &Value) -> Result<Vec<Candidate>, EraseError> {
    let mut kept: Vec<Candidate> = collect(scope, node, true, true)?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    kept.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(kept)
}

/// The disks `erase_devices` erases (5.1: no partitions; the skip list drops `keep`
/// arrays only), in listing order, each with its listing entry (what a vendor
/// manager's `erase_block_device` recognises its disks by).
pub fn disks(
    scope: &EraseScope,
    node: &Value,
) -> Result<Vec<(Candidate, BlockDevice)>, EraseError> {
    collect(scope, node, false, false)
}

/// The disks (and their allowed partitions with `with_partitions`) minus the skip list
/// (md arrays to wipe too with `include_wipe`) and the running system's devices.
fn collect(
    scope: &EraseScope,
    node: &Value,
    with_partitions: bool,
    include_wipe: bool,
) -> Result<Vec<(Candidate, BlockDevice)>, EraseError> {
    let root = scope.sysroot.as_path();
    let disks = list_disks(root, &scope.allow).map_err(|e| EraseError::Listing(e.to_string()))?;
    let mut all: Vec<(Candidate, BlockDevice)> = Vec::new();
    for disk in &disks {
        let kname = disk.name.trim_start_matches("/dev/").to_owned();
        all.push((
            Candidate {
                name: disk.name.clone(),
                kname: kname.clone(),
                disk: kname.clone(),
                partition: None,
                size: disk.size,
            },
            disk.clone(),
        ));
        if !with_partitions {
            continue;
        }
        for part in partitions(root, &kname)? {
            if !scope.allow.permits(Path::new(&part.name)) {
                tracing::info!(device = %part.name, "partition outside the device allow-list: not erased");
                continue;
            }
            let dev = BlockDevice {
                name: part.name.clone(),
                size: part.size,
                model: None,
                serial: None,
                wwn: None,
                vendor: None,
                wwn_with_extension: None,
                wwn_vendor_extension: None,
                hctl: None,
                by_path: None,
                tran: None,
                ..disk.clone()
            };
            all.push((part, dev));
        }
    }
    let mut kept = apply_skip_list(root, node, all, include_wipe)?;
    let system = system_devices(root).map_err(|e| EraseError::Listing(e.to_string()))?;
    if !system.is_empty() {
        let mut out = Vec::with_capacity(kept.len());
        for (c, d) in kept {
            let devnum = read_attr(&under(root, &format!("sys/class/block/{}/dev", c.kname)))
                .map_err(|e| EraseError::Listing(e.to_string()))?;
            let stack =
                devices_under(root, &devnum).map_err(|e| EraseError::Listing(e.to_string()))?;
            if let Some(shared) = stack.intersection(&system).next() {
                tracing::warn!(device = %c.name, disk = %shared, "holds the running system: not erased");
                continue;
            }
            out.push((c, d));
        }
        kept = out;
    }
    Ok(kept)
}

/// The partitions of disk `kname` (`sys/block/<kname>/<part>/partition`), any order.
pub fn partitions(root: &Path, kname: &str) -> Result<Vec<Candidate>, EraseError> {
    let dir = under(root, &format!("sys/block/{kname}"));
    let mut out = Vec::new();
    for child in list_dir_opt(&dir) {
        let part_dir = dir.join(&child);
        if !part_dir.join("partition").is_file() {
            continue;
        }
        let listing = |e: crate::inventory::InventoryError| EraseError::Listing(e.to_string());
        let number = read_u64(&part_dir.join("partition")).map_err(listing)?;
        let size = read_u64(&part_dir.join("size"))
            .map_err(listing)?
            .saturating_mul(SECTOR);
        out.push(Candidate {
            name: format!("/dev/{child}"),
            kname: child,
            disk: kname.to_owned(),
            partition: Some(u32::try_from(number).unwrap_or(u32::MAX)),
            size,
        });
    }
    Ok(out)
}

/// Drops skip-list hits, partitions of skipped disks, and md arrays the skip list
/// keeps (or wipes, with `include_wipe`; IPA: `list_block_devices_check_skip_list`).
fn apply_skip_list(
    root: &Path,
    node: &Value,
    all: Vec<(Candidate, BlockDevice)>,
    include_wipe: bool,
) -> Result<Vec<(Candidate, BlockDevice)>, EraseError> {
    let skip = SkipList::from_node(node).map_err(|e| EraseError::SkipList(e.to_string()))?;
    let Some(skip) = skip else {
        return Ok(all);
    };
    let md = if skip.volume_names().is_empty() {
        Vec::new()
    } else {
        read_md_arrays(root, true).map_err(|e| EraseError::Listing(e.to_string()))?
    };
    let hint_devices: Vec<HintDevice> = all
        .iter()
        .map(|(_, d)| HintDevice::scalar(d.clone()))
        .collect();
    let remaining: BTreeSet<String> = skip
        .filter(&hint_devices, &md, include_wipe)
        .map_err(|e| EraseError::SkipList(e.to_string()))?
        .into_iter()
        .map(|d| d.name().to_owned())
        .collect();
    let dropped_disks: BTreeSet<String> = all
        .iter()
        .filter(|(c, _)| !c.is_partition() && !remaining.contains(&c.name))
        .map(|(c, _)| c.kname.clone())
        .collect();
    Ok(all
        .into_iter()
        .filter(|(c, _)| {
            let keep = remaining.contains(&c.name) && !dropped_disks.contains(&c.disk);
            if !keep {
                tracing::info!(device = %c.name, "protected by skip_block_devices: not erased");
            }
            keep
        })
        .collect())
}
