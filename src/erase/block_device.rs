//! `erase_block_device` of the generic manager (spec 5.3): erases one whole device and
//! says how, or why it was left alone.
//!
//! Decision tree, in order:
//! 1. a partition is refused (erase_devices erases whole devices);
//! 2. the virtual-media device and RAID members are skipped (a report with the reason,
//!    not IPA's null); a member probe that fails is an error (IPA assumes a member);
//! 3. a read-only device is skipped with `agent_erase_skip_read_only`, else an error;
//! 4. the device is opened through the allow-list door before anything is written (the
//!    secure-erase functions open the path themselves, after this check);
//! 5. secure erase: an NVMe device gets an NVMe Format NVM (crypto erase when offered,
//!    else user-data erase, as IPA) when
//!    `agent_enable_nvme_secure_erase`, any other an ATA security erase when
//!    `agent_enable_ata_secure_erase`; either is verified by samples read before it (no
//!    sampled block may keep its old data). "Not supported" or disabled goes on to the
//!    overwrite; a failure goes on only with `agent_continue_if_secure_erase_failed`,
//!    else it fails the device with the real reason (IPA hides it behind "Could not
//!    find method");
//! 6. overwrite: `agent_erase_devices_iterations` random passes and a zero pass with
//!    `agent_erase_devices_zeroize`, verified. A plan with no pass is refused before
//!    anything is written: writing nothing is not an erase.

use std::fs::File;
use std::sync::atomic::AtomicBool;

use ira_hw::{BlockDevice, EraseProgress};

use crate::blockdev::{open_for_write_at, BlockDevError};

use super::ata::{erase_ata, AtaOutcome};
use super::caps::{Caps, CapsError};
use super::devices::Candidate;
use super::nvme::{erase_nvme, NvmeLimits, NvmeMode};
use super::overwrite::{overwrite_verified, OverwriteError};
use super::policy::ErasePolicy;
use super::report::DiskEraseReport;
use super::verify::{self, Expect};
use super::{probe, EraseScope};

/// Why one device was not erased. Messages do not repeat the device name: the step
/// puts it in front.
#[derive(Debug, thiserror::Error)]
pub enum BlockEraseError {
    /// Not a whole device.
    #[error("is a partition; erase_block_device erases whole devices")]
    Partition,
    /// A probe needed before touching the device failed; nothing was written.
    #[error("{0}; nothing was written")]
    Probe(String),
    /// The kernel flags the device read-only and the conductor did not allow skipping it.
    #[error(
        "the device is flagged read-only and skipping read-only devices is not allowed \
         (driver_internal_info.agent_erase_skip_read_only, [deploy]erase_skip_read_only)"
    )]
    ReadOnly,
    /// The allow-list door refused the device or could not open it.
    #[error(transparent)]
    Door(#[from] BlockDevError),
    /// The secure erase failed and overwriting instead is not enabled.
    #[error(
        "Failed to invoke secure erase, fallback to overwrite is not enabled \
         ([deploy]continue_if_disk_secure_erase_fails): {0}"
    )]
    SecureErase(String),
    /// The overwrite plan has no pass.
    #[error(
        "no erase requested: agent_erase_devices_iterations is 0 and \
         agent_erase_devices_zeroize is false, so an overwrite would write nothing; \
         nothing was written"
    )]
    NoPasses,
    /// The device's range-erase capabilities could not be read.
    #[error("reading the device's capabilities: {0}")]
    Caps(#[from] CapsError),
    /// The overwrite failed.
    #[error("overwrite failed: {0}")]
    Overwrite(#[from] OverwriteError),
}

/// What the secure erase step of the tree came to.
enum Secure {
    /// Erased and verified.
    Done(DiskEraseReport),
    /// Not attempted or not supported: overwrite, noting why.
    Skip(String),
    /// Attempted and failed, with the reason.
    Failed(String),
}

/// Whether kernel name `kname` is an NVMe namespace (IPA: the name starts `/dev/nvme`).
pub fn is_nvme(kname: &str) -> bool {
    kname.starts_with("nvme")
}

/// Erases the whole device `dev` (listed as `device`) as the module documentation
/// says; `progress` hears where it is, `abort` is read between overwrite chunks.
pub fn erase_block_device(
    scope: &EraseScope,
    policy: &ErasePolicy,
    device: &BlockDevice,
    abort: &AtomicBool,
    progress: &(dyn Fn(&EraseProgress) + Sync),
) -> Result<DiskEraseReport, BlockEraseError> {
    let dev = Candidate::whole_device(device);
    let serial = device.serial.as_deref().filter(|s| !s.is_empty());
    if scope
        .sysroot
        .join(format!("sys/class/block/{}/partition", dev.kname))
        .exists()
    {
        return Err(BlockEraseError::Partition);
    }
    if probe::is_virtual_media(scope, &dev) {
        tracing::info!(device = %dev.name, "skipping erasure of virtual media device");
        return Ok(DiskEraseReport::skipped(
            &dev.name,
            serial,
            "virtual media device",
        ));
    }
    let member = probe::is_raid_member(scope, &dev)
        .map_err(|e| BlockEraseError::Probe(format!("checking for a RAID member: {e}")))?;
    if member {
        tracing::info!(device = %dev.name, "skipping erasure of RAID member device");
        return Ok(DiskEraseReport::skipped(
            &dev.name,
            serial,
            "Linux RAID member (erased through its md array)",
        ));
    }
    if probe::is_read_only(scope, &dev) {
        if policy.skip_read_only {
            tracing::info!(device = %dev.name, "skipping erasure of read-only device");
            return Ok(DiskEraseReport::skipped(
                &dev.name,
                serial,
                "read-only device",
            ));
        }
        return Err(BlockEraseError::ReadOnly);
    }
    let file = open_for_write_at(&scope.sysroot, &scope.rooted(&dev.name), &scope.allow)?;
    let fallback = match secure_erase(scope, policy, &dev, serial, &file, progress) {
        Secure::Done(report) => return Ok(report),
        Secure::Skip(why) => why,
        Secure::Failed(why) if policy.continue_if_secure_erase_failed => {
            tracing::warn!(device = %dev.name, reason = %why, "secure erase failed; overwriting instead");
            format!("secure erase failed: {why}")
        }
        Secure::Failed(why) => return Err(BlockEraseError::SecureErase(why)),
    };
    let plan = policy.overwrite_plan();
    if plan.passes() == 0 {
        return Err(BlockEraseError::NoPasses);
    }
    let caps = Caps::probe(&scope.sysroot, &dev.kname, &file)?;
    tracing::info!(device = %dev.name, iterations = plan.iterations, zeroize = plan.zeroize,
        reason = %fallback, "overwriting");
    let r = overwrite_verified(&file, dev.size, &plan, &caps, abort, &mut |p| {
        let fraction = if p.bytes_total == 0 {
            0.0
        } else {
            p.bytes_done as f64 / p.bytes_total as f64
        };
        progress(&EraseProgress {
            fraction,
            detail: format!("pass {}/{}", p.pass, p.passes),
        });
    })?;
    Ok(DiskEraseReport::from_overwrite(&dev.name, serial, &r).with_fallback(Some(fallback)))
}

/// Step 5 of the module documentation.
fn secure_erase(
    scope: &EraseScope,
    policy: &ErasePolicy,
    dev: &Candidate,
    serial: Option<&str>,
    file: &File,
    progress: &(dyn Fn(&EraseProgress) + Sync),
) -> Secure {
    if is_nvme(&dev.kname) {
        if !policy.enable_nvme {
            return Secure::Skip(
                "NVMe secure erase disabled (agent_enable_nvme_secure_erase)".to_owned(),
            );
        }
        let _ = serial;
        return match nvme_secure_erase(scope, dev, file, progress) {
            Ok(report) => Secure::Done(report),
            Err(why) => Secure::Failed(why),
        };
    }
    if !policy.enable_ata {
        return Secure::Skip(
            "ATA secure erase disabled (agent_enable_ata_secure_erase)".to_owned(),
        );
    }
    let before = match verify::take_samples(file, dev.size) {
        Ok(s) => s,
        Err(e) => return Secure::Failed(format!("reading samples before the erase: {e}")),
    };
    progress(&EraseProgress {
        fraction: 0.0,
        detail: "ATA security erase".to_owned(),
    });
    let mut note = |n: &str| {
        tracing::info!(device = %dev.name, note = n, "ATA security erase");
        progress(&EraseProgress {
            fraction: 0.0,
            detail: format!("ATA security erase: {n}"),
        });
    };
    match erase_ata(&scope.rooted(&dev.name), &mut note) {
        Ok(AtaOutcome::Erased(done)) => match verify::check(file, &before, Expect::NotOld) {
            Ok(v) => Secure::Done(DiskEraseReport::from_ata(&dev.name, dev.size, &done, &v)),
            Err(e) => Secure::Failed(format!(
                "{} reported success but the read-back failed: {e}",
                done.method
            )),
        },
        Ok(AtaOutcome::NotSupported { reason }) => {
            Secure::Skip(format!("ATA security erase not supported: {reason}"))
        }
        Err(e) => Secure::Failed(e.to_string()),
    }
}

/// The NVMe erase the scope's `nvme_mode` names: IPA's (5.4, Format NVM with crypto
/// erase when the controller offers it, else user-data erase) or a sanitize; verified by samples read before it (after either, no sampled
/// block may keep its old data). `file` is the device, already through the door.
pub(crate) fn nvme_secure_erase(
    scope: &EraseScope,
    dev: &Candidate,
    file: &File,
    progress: &(dyn Fn(&EraseProgress) + Sync),
) -> Result<DiskEraseReport, String> {
    let before = verify::take_samples(file, dev.size)
        .map_err(|e| format!("reading samples before the NVMe erase: {e}"))?;
    let detail = match scope.nvme_mode {
        NvmeMode::Format => "NVMe format",
        NvmeMode::Sanitize(_) => "NVMe sanitize",
    };
    let mut report = |fraction: f64| {
        progress(&EraseProgress {
            fraction,
            detail: detail.to_owned(),
        });
    };
    report(0.0);
    let done = erase_nvme(
        &scope.rooted(&dev.name),
        scope.nvme_mode,
        &mut report,
        &NvmeLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    let v = verify::check(file, &before, Expect::NotOld).map_err(|e| {
        format!(
            "{} reported success but the read-back failed: {e}",
            done.method
        )
    })?;
    tracing::info!(device = %dev.name, method = %done.method, "NVMe erase done");
    Ok(DiskEraseReport::from_nvme(&dev.name, dev.size, &done, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_names() {
        assert!(is_nvme("nvme0n1"));
        assert!(is_nvme("nvme12n3"));
        assert!(!is_nvme("sda"));
        assert!(!is_nvme("loop0"));
    }

    #[test]
    fn the_empty_plan_is_refused_with_its_keys_named() {
        let msg = BlockEraseError::NoPasses.to_string();
        assert!(msg.contains("agent_erase_devices_iterations is 0"), "{msg}");
        assert!(msg.contains("nothing was written"), "{msg}");
    }
}
