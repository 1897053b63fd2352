//! Erase steps of the generic manager (spec hardware-and-disks.md 5): `erase_devices`
//! (5.3), `erase_devices_metadata` (5.8), `erase_devices_express` (5.9) and
//! `erase_pstore` (5.10), and the data paths they are built from.
//!
//! - `devices`: the candidate lists of 5.1 (disks and their partitions from sysfs, the
//!   allow-list, the skip list, never the running system's devices): name descending
//!   for the metadata and express steps, disks in listing order for `erase_devices`.
//! - `probe`: the per-device facts the steps decide on (virtual media, RAID member,
//!   read-only, holders) and the special-filesystem guard of 5.2.
//! - `policy`: the `driver_internal_info` erase options (5.7) with IPA's defaults.
//! - `full`: `erase_devices`: checks every disk, then has each erased through the
//!   agent host (IPA's `dispatch_to_managers('erase_block_device')`), up to
//!   `disk_erasure_concurrency` at once, with one heartbeat status line for all.
//! - `block_device`: the generic manager's `erase_block_device` decision tree: skips,
//!   NVMe format or ATA security erase, else overwrite; always verified.
//! - `metadata`: `erase_devices_metadata`: checks every device first, then destroys the
//!   metadata of each, one thread per disk, and reports failures together.
//! - `express_step`: `erase_devices_express`; `pstore`: `erase_pstore`.
//! - `ata`: the ATA security erase of one drive (5.5), native over SG_IO; `nvme`: the
//!   NVMe Format NVM / Sanitize of one namespace (5.4) over the admin passthrough.
//! - `caps`: what a device offers for range erases (discard, secure discard, write
//!   zeroes), from sysfs under a root and one harmless probe.
//! - `overwrite`: IPA's shred (5.6) natively: random passes from a fast generator,
//!   then zeros, with large direct writes; `express`: erase by secure discard, discard
//!   or write zeroes; `verify`: sampled read-back that every erase ends with; `report`:
//!   the per-disk report for step results. `io` and `random` serve them.
//!
//! Where IPA would assume or skip silently we fail closed (INVARIANTS 7): a probe that
//! cannot read a device aborts the step before anything is written, a skipped device is
//! named in the result with its reason, and nothing is reported erased that was not.

pub mod ata;
pub mod block_device;
pub mod caps;
pub mod devices;
pub mod express;
pub mod express_step;
pub mod full;
pub mod io;
pub mod metadata;
pub mod nvme;
pub mod overwrite;
pub mod policy;
pub mod probe;
pub mod pstore;
pub mod random;
pub mod report;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::blockdev::AllowList;
use crate::config::Config;
use ira_hw::HwError;

pub use metadata::erase_devices_metadata;

/// A glob no `/dev` path can match (`*` never matches `/`): the scope of
/// [`EraseScope::disabled`].
const NO_DEVICE: &str = "/nonexistent/no-device";

/// Where erase steps look for devices and which ones they may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseScope {
    /// The filesystem root `sys/`, `proc/` and `/dev` names are read under.
    pub sysroot: PathBuf,
    /// The device allow-list (empty: every device but the running system's).
    pub allow: AllowList,
    /// The agent option `guard_special_filesystems` (spec 5.2).
    pub guard_special_filesystems: bool,
    /// How NVMe namespaces are secure-erased (agent option `nvme_erase_method`).
    pub nvme_mode: nvme::NvmeMode,
}

impl EraseScope {
    /// The scope the agent configuration describes.
    pub fn from_config(config: &Config) -> Self {
        let sysroot = if config.sysroot.as_os_str().is_empty() {
            PathBuf::from("/")
        } else {
            config.sysroot.clone()
        };
        Self {
            sysroot,
            allow: AllowList::new(config.device_allowlist.clone()),
            guard_special_filesystems: config.guard_special_filesystems,
            // The option was checked when the configuration was read.
            nvme_mode: nvme::NvmeMode::from_option(&config.nvme_erase_method)
                .unwrap_or(nvme::NvmeMode::Format),
        }
    }

    /// A scope that permits no device at all (the default, so a manager built
    /// without the agent's configuration can never erase a disk of the machine).
    pub fn disabled() -> Self {
        Self {
            sysroot: PathBuf::from("/"),
            allow: AllowList::new(vec![NO_DEVICE.to_owned()]),
            guard_special_filesystems: true,
            nvme_mode: nvme::NvmeMode::Format,
        }
    }

    /// True for [`EraseScope::disabled`]: no device, and no pstore either.
    pub fn is_disabled(&self) -> bool {
        self.allow == AllowList::new(vec![NO_DEVICE.to_owned()])
    }

    /// `device` (a `/dev/...` name) as this process must open it.
    pub fn rooted(&self, device: &str) -> PathBuf {
        crate::config::rooted(&self.sysroot, Path::new(device))
    }
}

impl Default for EraseScope {
    fn default() -> Self {
        Self::disabled()
    }
}

/// Why an erase step failed.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The device list could not be built (IPA: `BlockDeviceError`).
    #[error("listing block devices: {0}")]
    Listing(String),
    /// `properties.skip_block_devices` cannot be applied.
    #[error("applying skip_block_devices: {0}")]
    SkipList(String),
    /// A probe needed before touching a device failed; nothing was erased.
    #[error("probing {device}: {reason}")]
    Probe {
        /// `/dev/<name>`.
        device: String,
        /// What failed.
        reason: String,
    },
    /// A shared-disk filesystem was found (IPA: `ProtectedDeviceError`); nothing was
    /// erased.
    #[error(
        "Protected {what} located on device {device}. This volume or contents may be a \
         shared block device. Please consult your storage administrator, and restart \
         cleaning after either detaching the volumes, or instructing IPA to not protect \
         contents. See Ironic Python Agent documentation for more information."
    )]
    Protected {
        /// `/dev/<name>`.
        device: String,
        /// What was found, e.g. `VMware VMFS Partition (MBR)`.
        what: &'static str,
    },
    /// A device is held by a device-mapper device (LVM, dm-crypt); nothing was erased.
    #[error("{device} is in use by {holders}: deactivate it before erasing")]
    Held {
        /// `/dev/<name>`.
        device: String,
        /// The holders' kernel names, comma-separated.
        holders: String,
    },
    /// Some devices failed (IPA: `BlockDeviceEraseError`), in processing order.
    #[error("Failed to erase the metadata on the device(s): {}", join_failures(.0))]
    Devices(Vec<(String, String)>),
    /// A `driver_internal_info` erase option cannot be read; nothing was erased.
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
    /// `erase_devices`: some disks failed (IPA: `BlockDeviceEraseError`); the others
    /// finished first.
    #[error(
        "Failed to erase the device(s): {}{}",
        join_failures(.failed),
        others_text(.others)
    )]
    Disks {
        /// Failed disks and why, in listing order.
        failed: Vec<(String, String)>,
        /// The other disks and what became of them.
        others: Vec<(String, String)>,
    },
    /// `erase_devices_express`: some devices failed (IPA: `BlockDeviceEraseError`).
    #[error("Failed to conduct an express erase on the device(s): {}", join_failures(.0))]
    Express(Vec<(String, String)>),
    /// `erase_pstore` could not clear the pstore directory.
    #[error("erasing pstore: {0}")]
    Pstore(String),
}

fn others_text(others: &[(String, String)]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let list: Vec<String> = others
        .iter()
        .map(|(d, what)| format!("{d}: {what}"))
        .collect();
    format!(". Other devices: {}", list.join("; "))
}

fn join_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(dev, err)| format!("\"{dev}\": {err}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<EraseError> for HwError {
    /// Per-device failures carry IPA's class `BlockDeviceEraseError`; the rest fail the
    /// step as a `CleaningError`.
    fn from(e: EraseError) -> Self {
        match e {
            EraseError::Devices(_) | EraseError::Disks { .. } | EraseError::Express(_) => {
                HwError::Service {
                    class: "BlockDeviceEraseError",
                    details: e.to_string(),
                }
            }
            other => HwError::Failed(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_joined_as_ipa_words_them() {
        let e = EraseError::Devices(vec![
            ("/dev/sdb1".into(), "boom".into()),
            ("/dev/sda".into(), "bang".into()),
        ]);
        assert_eq!(
            e.to_string(),
            "Failed to erase the metadata on the device(s): \"/dev/sdb1\": boom; \"/dev/sda\": bang"
        );
    }

    #[test]
    fn every_nvme_erase_method_the_configuration_accepts_names_a_mode() {
        use nvme::{NvmeMode, SanitizeChoice};
        let modes: Vec<_> = crate::config::NVME_ERASE_METHODS
            .iter()
            .map(|name| {
                let config = Config {
                    nvme_erase_method: (*name).to_owned(),
                    ..Config::default()
                };
                EraseScope::from_config(&config).nvme_mode
            })
            .collect();
        assert_eq!(
            modes,
            [
                NvmeMode::Format,
                NvmeMode::Sanitize(SanitizeChoice::BestAvailable),
                NvmeMode::Sanitize(SanitizeChoice::Crypto),
                NvmeMode::Sanitize(SanitizeChoice::Block),
                NvmeMode::Sanitize(SanitizeChoice::Overwrite {
                    passes: 1,
                    pattern: 0
                }),
            ]
        );
        assert_eq!(NvmeMode::from_option("shred"), None);
    }

    #[test]
    fn the_disabled_scope_permits_no_device() {
        let s = EraseScope::default();
        for dev in ["/dev/sda", "/dev/loop0", "/dev/nvme0n1p1", "/dev/md0"] {
            assert!(!s.allow.permits(Path::new(dev)), "{dev}");
        }
        let rooted = EraseScope {
            sysroot: PathBuf::from("/tmp/fixture"),
            ..EraseScope::default()
        };
        assert_eq!(rooted.rooted("/dev/sda"), Path::new("/tmp/fixture/dev/sda"));
        assert_eq!(s.rooted("/dev/sda"), Path::new("/dev/sda"));
    }
}
