//! `erase_devices_express` (spec 5.9), where we do better than IPA: the same devices,
//! order and checks as `erase_devices_metadata`, then per device
//! 1. an NVMe device with `agent_enable_nvme_secure_erase`: NVMe format; a failure is
//!    logged and falls through, as in IPA;
//! 2. the kernel's range erase ([`super::express::express_erase`]: secure discard,
//!    discard, write zeroes, verified by samples), which IPA does not have;
//! 3. when the device offers none of them, IPA's metadata wipe
//!    (`destroy_disk_metadata`), reported as method `metadata`.
//!
//! Failures are collected and reported together. The result is `{device: report}`,
//! skipped devices included with their reason.

use std::sync::atomic::AtomicBool;

use serde_json::{Map, Value};

use crate::blockdev::open_for_write_at;

use super::block_device::{is_nvme, nvme_secure_erase};
use super::caps::Caps;
use super::devices::Candidate;
use super::express::{express_erase, ExpressError};
use super::metadata::{check_devices, erase_one, sorted_devices};
use super::policy::ErasePolicy;
use super::report::DiskEraseReport;
use super::{EraseError, EraseScope};

/// Runs the step for `node` within `scope`; `abort` is read between erase commands.
pub fn erase_devices_express(
    scope: &EraseScope,
    node: &Value,
    abort: &AtomicBool,
) -> Result<Value, EraseError> {
    let policy = ErasePolicy::from_node(node)?;
    let (devices, skipped) = sorted_devices(scope, node)?;
    let mut out = Map::new();
    for (name, reason) in skipped {
        out.insert(
            name.clone(),
            DiskEraseReport::skipped(&name, None, &reason).to_json(),
        );
    }
    if devices.is_empty() {
        return Ok(Value::Object(out));
    }
    check_devices(scope, node, &devices)?;
    let mut failures = Vec::new();
    for dev in &devices {
        match erase_device(scope, &policy, dev, abort) {
            Ok(report) => {
                out.insert(dev.name.clone(), report.to_json());
            }
            Err(e) => {
                tracing::error!(device = %dev.name, error = %e, "express erase failed");
                failures.push((dev.name.clone(), e));
            }
        }
    }
    if failures.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(EraseError::Express(failures))
    }
}

/// Steps 1 to 3 of the module documentation for one device.
fn erase_device(
    scope: &EraseScope,
    policy: &ErasePolicy,
    dev: &Candidate,
    abort: &AtomicBool,
) -> Result<DiskEraseReport, String> {
    let mut fallback = None;
    let file = open_for_write_at(&scope.sysroot, &scope.rooted(&dev.name), &scope.allow)
        .map_err(|e| e.to_string())?;
    // A format erases the whole namespace: partitions get the range erase.
    if is_nvme(&dev.kname) && !dev.is_partition() && policy.enable_nvme {
        match nvme_secure_erase(scope, dev, &file, &|_| {}) {
            Ok(report) => return Ok(report),
            // IPA logs a failed format and goes on; the report says why.
            Err(why) => {
                tracing::warn!(device = %dev.name, reason = %why, "NVMe format failed; falling through");
                fallback = Some(format!("NVMe format failed: {why}"));
            }
        }
    }
    let caps = Caps::probe(&scope.sysroot, &dev.kname, &file)
        .map_err(|e| format!("reading the device's capabilities: {e}"))?;
    match express_erase(&file, dev.size, &caps, abort) {
        Ok(r) => {
            tracing::info!(device = %dev.name, method = %r.method, "express erase done");
            Ok(DiskEraseReport::from_express(&dev.name, None, &r).with_fallback(fallback))
        }
        Err(ExpressError::Unsupported) => {
            drop(file);
            tracing::info!(device = %dev.name, "no range erase offered; destroying the metadata");
            let started = std::time::Instant::now();
            erase_one(scope, dev)?;
            let report = DiskEraseReport::metadata(&dev.name, started.elapsed().as_secs_f64());
            let why = "the device offers no secure discard, discard or write zeroes";
            Ok(report.with_fallback(Some(match fallback {
                Some(f) => format!("{f}; {why}"),
                None => why.to_owned(),
            })))
        }
        Err(e) => Err(e.to_string()),
    }
}
