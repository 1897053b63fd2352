//! IPA's `efi_utils.manage_uefi` done natively (spec 9.3): find the ESP of the install
//! device, mount it, look for boot loaders, and write a `Boot####` entry for each
//! straight into efivarfs, first in `BootOrder`, replacing entries with the same label.
//!
//! Everything the function touches comes in through [`UefiEnv`]: the root `/dev` names
//! resolve under, the variable store, and the mounter, so tests run it on a loop device
//! with a plain directory as efivarfs.

use std::path::Path;

use super::efivarfs::{EfiVarError, EfiVars};
use super::esp::{DiskView, EspError, Located};
use super::load_option::{HardDrive, LoadOption};
use super::loaders::{boot_targets, find_loaders, BootTarget, LoaderError};
use crate::config::rooted;
use crate::deploy::error::DeployError;
use crate::deploy::mount::{MountError, MountKind, MountPoint, Mounter, Mounts};

/// What `manage_uefi` works with.
#[derive(Clone, Copy)]
pub struct UefiEnv<'a> {
    /// Root under which `/dev/...` names are opened (`/` in production).
    pub dev_root: &'a Path,
    /// The UEFI variable store.
    pub efivars: &'a EfiVars,
    /// Mounts the ESP.
    pub mounter: &'a dyn Mounter,
}

impl std::fmt::Debug for UefiEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UefiEnv")
            .field("dev_root", &self.dev_root)
            .field("efivars", &self.efivars)
            .finish_non_exhaustive()
    }
}

/// Why UEFI boot could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum UefiError {
    /// No ESP flagged on the disk and no (usable) ESP UUID given.
    #[error(
        "No EFI partition could be detected on device {0} and EFI partition UUID has not \
         been recorded during deployment (which is often the case for whole disk images). \
         Are you using a UEFI-compatible image?"
    )]
    NoEsp(String),
    /// No partition carries the given ESP UUID.
    #[error(transparent)]
    UuidNotFound(EspError),
    /// Reading the disk, mounting, walking the ESP or writing variables failed.
    #[error("Could not configure UEFI boot on device {dev}: {reason}")]
    Configure {
        /// The install device.
        dev: String,
        /// What failed.
        reason: String,
    },
    /// The ESP stayed mounted (IPA's wording).
    #[error("Umounting efi system partition failed. Attempted 3 times. Error: {0}")]
    Umount(MountError),
}

impl From<UefiError> for DeployError {
    fn from(e: UefiError) -> Self {
        match e {
            UefiError::NoEsp(_) | UefiError::UuidNotFound(_) => {
                DeployError::DeviceNotFound(e.to_string())
            }
            UefiError::Configure { .. } | UefiError::Umount(_) => {
                DeployError::Execution(e.to_string())
            }
        }
    }
}

/// Sets up UEFI boot entries for the loaders on `device`'s ESP; `Ok(false)` when the
/// ESP holds no loader (IPA: "Empty EFI partition"), so nothing was done.
pub fn manage_uefi(
    env: &UefiEnv<'_>,
    device: &Path,
    efi_system_part_uuid: Option<&str>,
) -> Result<bool, UefiError> {
    let dev = device.display().to_string();
    let configure = |reason: String| UefiError::Configure {
        dev: dev.clone(),
        reason,
    };
    let mut disk = DiskView::open(device, &rooted(env.dev_root, device))
        .map_err(|e| configure(e.to_string()))?;
    let esp = match (disk.flagged_esp(), efi_system_part_uuid) {
        (Some(esp), _) => esp,
        (None, Some(uuid)) => disk.by_uuid(uuid).map_err(|e| match e {
            EspError::NotFound(_) => UefiError::UuidNotFound(e),
            other => configure(other.to_string()),
        })?,
        (None, None) => return Err(UefiError::NoEsp(dev.clone())),
    };
    tracing::info!(device = %dev, partition = esp.number, "EFI system partition found");
    let node = disk
        .ensure_node(&esp, env.dev_root)
        .map_err(|e| configure(e.to_string()))?;

    let mount_point = MountPoint::new("esp").map_err(|e| configure(e.to_string()))?;
    let mut mounts = Mounts::new(env.mounter);
    mounts
        .mount(
            &node,
            mount_point.path(),
            MountKind::Fs(Some("vfat".to_owned())),
        )
        .map_err(|e| configure(e.to_string()))?;

    let result = configure_entries(env.efivars, device, &esp, mount_point.path())
        .map_err(|e| configure(e.to_string()));
    let closed = mounts.close();
    drop(mount_point);
    match (result, closed) {
        (Err(e), closed) => {
            if let Err(u) = closed {
                tracing::error!(error = %u, "the ESP stayed mounted after a failure");
            }
            Err(e)
        }
        (Ok(_), Err(u)) => Err(UefiError::Umount(u)),
        (Ok(done), Ok(())) => {
            nix::unistd::sync();
            Ok(done)
        }
    }
}

/// Why entries could not be written (wrapped into [`UefiError::Configure`]).
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Var(#[from] EfiVarError),
    #[error("setting up an ESP on software RAID device {0} is not supported by this agent")]
    SoftwareRaid(String),
}

fn configure_entries(
    efivars: &EfiVars,
    device: &Path,
    esp: &Located,
    mounted: &Path,
) -> Result<bool, EntryError> {
    let loaders = find_loaders(mounted)?;
    if loaders.is_empty() {
        tracing::warn!(device = %device.display(), "Empty EFI partition detected.");
        return Ok(false);
    }
    if is_md(device) {
        return Err(EntryError::SoftwareRaid(device.display().to_string()));
    }
    let targets = boot_targets(mounted, &loaders, None)?;
    for target in &targets {
        add_entry(efivars, &esp.hard_drive, target)?;
    }
    Ok(true)
}

/// Replaces any entry labelled like `target` with a new first-in-order one.
pub fn add_entry(
    efivars: &EfiVars,
    hd: &HardDrive,
    target: &BootTarget,
) -> Result<u16, EfiVarError> {
    for old in efivars.boot_entries()? {
        if old
            .option
            .as_ref()
            .is_some_and(|o| o.description == target.label)
        {
            tracing::debug!(number = old.number, label = %target.label, "removing old boot entry");
            efivars.delete_boot_entry(old.number)?;
        }
    }
    let option = LoadOption::for_loader(&target.label, *hd, &target.loader);
    let number = efivars.create_boot_entry(&option)?;
    tracing::info!(
        number = format_args!("{number:04X}"),
        label = %target.label,
        loader = %target.loader,
        partition = hd.number,
        "boot entry created"
    );
    Ok(number)
}

/// Whether `device` is a software RAID array (`/dev/md*`).
pub(crate) fn is_md(device: &Path) -> bool {
    device
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("md"))
}
