//! `erase_devices_metadata` (spec 5.8): every erasable device loses its partition
//! tables and the signatures `wipefs` knows, through
//! [`crate::partition::wipe::destroy_disk_metadata`].
//!
//! Order of work:
//! 1. the device list of 5.1 ([`super::devices::candidates`]), minus the virtual-media
//!    device, RAID members and read-only devices, as IPA skips them;
//! 2. before anything is written, every device is checked: a device-mapper holder
//!    (an active LVM volume or dm-crypt mapping) or a guarded shared-disk filesystem
//!    (5.2, unless disabled) aborts the whole step; IPA checks each device just before
//!    erasing it, so an abort there leaves earlier disks erased;
//! 3. each disk is erased in its own worker (partitions first, name descending, then
//!    the disk, whose partition table the kernel then re-reads), disks in parallel;
//! 4. as with `fuser`, each device must be free once written;
//! 5. failures are collected and reported together, in processing order.
//!
//! The result names every device: `{"/dev/sda": {"erased": "metadata"}, "/dev/sdb":
//! {"skipped": "read-only device"}}` (IPA returns null and skips without a word).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::blockdev::open_for_write_at;
use crate::partition::wipe::destroy_disk_metadata;
use crate::partition::{Geometry, GeometryError};
use crate::sys::block;

use super::devices::{candidates, Candidate};
use super::{policy, probe, EraseError, EraseScope};

/// Disks erased at the same time at most (each worker does a few small writes).
const MAX_WORKERS: usize = 16;
/// How often and how long a written device may stay open elsewhere (IPA:
/// `[disk_partitioner]check_device_interval` and `check_device_max_retries`).
const BUSY_INTERVAL: Duration = Duration::from_secs(1);
const BUSY_ATTEMPTS: u32 = 20;

/// Runs the step for `node` within `scope`; the result names each device erased or
/// skipped (with the reason) when every erasable device lost its metadata.
pub fn erase_devices_metadata(scope: &EraseScope, node: &Value) -> Result<Value, EraseError> {
    let (devices, skipped) = sorted_devices(scope, node)?;
    let mut out = Map::new();
    for (name, reason) in skipped {
        out.insert(name, json!({ "skipped": reason }));
    }
    if devices.is_empty() {
        tracing::info!("no erasable devices");
        return Ok(Value::Object(out));
    }
    check_devices(scope, node, &devices)?;
    let failures = erase_all(scope, &devices);
    if failures.is_empty() {
        tracing::info!(devices = devices.len(), "metadata erased");
        for dev in &devices {
            out.insert(dev.name.clone(), json!({ "erased": "metadata" }));
        }
        Ok(Value::Object(out))
    } else {
        Err(EraseError::Devices(failures))
    }
}

/// IPA's `_list_erasable_devices`: the candidates minus virtual media, RAID members
/// and read-only devices (each skip logged). A member probe that fails aborts.
pub fn erasable_devices(scope: &EraseScope, node: &Value) -> Result<Vec<Candidate>, EraseError> {
    Ok(sorted_devices(scope, node)?.0)
}

/// Devices left out of an erase step, each with the reason.
pub type Skipped = Vec<(String, String)>;

/// [`erasable_devices`] and the devices it leaves out, each with the reason.
pub fn sorted_devices(
    scope: &EraseScope,
    node: &Value,
) -> Result<(Vec<Candidate>, Skipped), EraseError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for dev in candidates(scope, node)? {
        if probe::is_virtual_media(scope, &dev) {
            tracing::info!(device = %dev.name, "skipping erasure of virtual media device");
            skipped.push((dev.name, "virtual media device".to_owned()));
            continue;
        }
        let member = probe::is_raid_member(scope, &dev).map_err(|e| EraseError::Probe {
            device: dev.name.clone(),
            reason: format!("checking for a RAID member: {e}"),
        })?;
        if member {
            tracing::info!(device = %dev.name, "skipping erasure of RAID member device");
            skipped.push((dev.name, "Linux RAID member".to_owned()));
            continue;
        }
        if probe::is_read_only(scope, &dev) {
            tracing::info!(device = %dev.name, "skipping erasure of read-only device");
            skipped.push((dev.name, "read-only device".to_owned()));
            continue;
        }
        out.push(dev);
    }
    Ok((out, skipped))
}

/// Whether the special-filesystem guard applies: the agent option and the node's
/// `driver_internal_info.wipe_special_filesystems` (default true; a value that is no
/// boolean keeps the guard on).
pub fn guard_enabled(scope: &EraseScope, node: &Value) -> bool {
    if !scope.guard_special_filesystems {
        return false;
    }
    match policy::flag(node, policy::WIPE_SPECIAL, true) {
        Ok(wipe) => wipe,
        Err(e) => {
            tracing::warn!(error = %e, "keeping the special-filesystem guard on");
            true
        }
    }
}

/// Step 2 of the module docs.
pub(crate) fn check_devices(
    scope: &EraseScope,
    node: &Value,
    devices: &[Candidate],
) -> Result<(), EraseError> {
    let guard = guard_enabled(scope, node);
    for dev in devices {
        let probe_err = |what: &str, e: std::io::Error| EraseError::Probe {
            device: dev.name.clone(),
            reason: format!("{what}: {e}"),
        };
        let holders = probe::holders(scope, dev).map_err(|e| probe_err("reading holders", e))?;
        if !holders.is_empty() {
            return Err(EraseError::Held {
                device: dev.name.clone(),
                holders: holders.join(","),
            });
        }
        if guard {
            refuse_protected(scope, dev)?;
        }
    }
    Ok(())
}

/// The special-filesystem guard (5.2) for one device: an error naming what it holds.
pub(crate) fn refuse_protected(scope: &EraseScope, dev: &Candidate) -> Result<(), EraseError> {
    match probe::protected(scope, dev) {
        Ok(None) => Ok(()),
        Ok(Some(what)) => Err(EraseError::Protected {
            device: dev.name.clone(),
            what,
        }),
        Err(e) => Err(EraseError::Probe {
            device: dev.name.clone(),
            reason: format!("safety check: {e}"),
        }),
    }
}

/// Steps 3 and 4: one worker per disk (at most [`MAX_WORKERS`] at once); returns the
/// failures in processing order.
fn erase_all(scope: &EraseScope, devices: &[Candidate]) -> Vec<(String, String)> {
    // Groups keep the descending order: a disk's partitions, then the disk.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for dev in devices {
        if !groups.contains_key(dev.disk.as_str()) {
            order.push(&dev.disk);
        }
        groups.entry(&dev.disk).or_default().push(dev);
    }
    let queue = Mutex::new(order.iter().enumerate());
    let results: Mutex<BTreeMap<usize, Vec<(String, String)>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..order.len().min(MAX_WORKERS) {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                let Some((index, disk)) = next else { break };
                let mut failed = Vec::new();
                for dev in &groups[disk] {
                    if let Err(e) = erase_one(scope, dev) {
                        tracing::error!(device = %dev.name, error = %e, "failed to erase the metadata");
                        failed.push((dev.name.clone(), e));
                    }
                }
                if let Ok(mut r) = results.lock() {
                    r.insert(index, failed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    // A worker that died would leave its disks unreported: count them as failed.
    let mut out = Vec::new();
    for (index, disk) in order.iter().enumerate() {
        match results.get(&index) {
            Some(failed) => out.extend(failed.iter().cloned()),
            None => out.extend(
                groups[disk]
                    .iter()
                    .map(|d| (d.name.clone(), "the erase worker failed".to_owned())),
            ),
        }
    }
    out
}

/// Destroys one device's metadata through the write door, then waits for it to be free.
pub(crate) fn erase_one(scope: &EraseScope, dev: &Candidate) -> Result<(), String> {
    let path = scope.rooted(&dev.name);
    let mut file =
        open_for_write_at(&scope.sysroot, &path, &scope.allow).map_err(|e| e.to_string())?;
    match Geometry::of_file(&file) {
        Ok(geometry) => {
            destroy_disk_metadata(&mut file, geometry).map_err(|e| e.to_string())?;
        }
        // Smaller than the areas IPA zeroes: `dd` then zeroes the whole device.
        Err(GeometryError::TooSmall { size }) => zero_all(&mut file, size)?,
        Err(e) => return Err(e.to_string()),
    }
    file.sync_all().map_err(|e| format!("flushing: {e}"))?;
    if !dev.is_partition() {
        // sgdisk -Z makes the kernel drop the old partitions; failing that is a warning
        // there too (the metadata is gone either way).
        if let Err(e) = block::rescan(&file) {
            tracing::warn!(device = %dev.name, error = %e, "the kernel did not re-read the partition table");
        }
    }
    drop(file);
    tracing::info!(device = %dev.name, "metadata destroyed");
    wait_until_free(scope, dev)
}

fn zero_all(file: &mut File, size: u64) -> Result<(), String> {
    let len = usize::try_from(size).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&vec![0u8; len]))
        .map_err(|e| format!("zeroing: {e}"))
}

/// IPA's `fuser` loop: fails when some process still has the device open after
/// [`BUSY_ATTEMPTS`] checks.
fn wait_until_free(scope: &EraseScope, dev: &Candidate) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        let pids = holding_pids(scope, &dev.name);
        if pids.is_empty() {
            return Ok(());
        }
        if attempt >= BUSY_ATTEMPTS {
            return Err(format!(
                "device is still in use by processes {}",
                pids.join(" ")
            ));
        }
        tracing::debug!(device = %dev.name, pids = %pids.join(" "), "device busy, waiting");
        attempt += 1;
        std::thread::sleep(BUSY_INTERVAL);
    }
}

/// PIDs with an open descriptor on `device` (`proc/<pid>/fd/*` links).
fn holding_pids(scope: &EraseScope, device: &str) -> Vec<String> {
    let proc_dir = scope.sysroot.join("proc");
    let Ok(entries) = std::fs::read_dir(&proc_dir) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes come and go; an unreadable fd table is not ours to judge.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == device));
        if holds {
            pids.push(pid);
        }
    }
    pids
}
