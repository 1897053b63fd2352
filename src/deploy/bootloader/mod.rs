//! `image.install_bootloader` (hardware spec 9, protocol spec 2.5): UEFI boot entries
//! written natively through efivarfs; GRUB in a chroot of the written root only when
//! the conductor allows it (`enable_bios_bootloader_install`).
//!
//! - `load_option`: `EFI_LOAD_OPTION` and device path bytes; `efivarfs`: the variable
//!   store as efivarfs shows it.
//! - `esp`: finding the ESP or a partition by UUID with our table readers.
//! - `loaders`: which loaders an ESP offers and their labels; `uefi`: `manage_uefi`.
//! - `grub`: the GRUB chroot path; `efi_assets`: a partition image's ESP content put on
//!   its new ESP.
//!
//! The flow ([`run`]) is IPA's `install_bootloader`: the UEFI path when the ramdisk
//! booted UEFI; success if it configured an entry; nothing more for a whole-disk image
//! without a root UUID (success, as in IPA); else GRUB, refused with `InvalidImage`
//! unless enabled. `ignore_bootloader_failure` turns a failure of either path into a
//! logged error and lets the flow go on, as IPA does; the logs say what was not done.

pub mod efi_assets;
pub mod efivarfs;
pub mod esp;
pub mod grub;
pub mod load_option;
pub mod loaders;
pub mod nvram;
pub mod uefi;

use std::path::{Path, PathBuf};

use crate::deploy::env::DeployEnv;
use crate::deploy::error::DeployError;
use crate::deploy::mount::{MountKind, MountOptions, Mounter, SysMounter};
use crate::deploy::target::install_device;
use crate::task::blocking;

use efivarfs::EfiVars;
use uefi::{manage_uefi, UefiEnv};

/// The message IPA refuses a BIOS bootloader install with.
pub const BIOS_INSTALL_DISABLED: &str = "Install of legacy BIOS bootloaders disabled by \
     CONF.enable_bios_bootloader_install as part of CVE-2026-43003 mitigation.";

/// The command's parameters (spec 9.1) with the failure policy resolved; the `image`
/// extension parses them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The root filesystem's UUID; `None` for `null` or `0x00000000`.
    pub root_uuid: Option<String>,
    /// The ESP's UUID (partition images in UEFI mode).
    pub efi_system_part_uuid: Option<String>,
    /// The PReP partition's UUID (ppc64).
    pub prep_boot_part_uuid: Option<String>,
    /// `bios` or `uefi` (default `bios`).
    pub target_boot_mode: String,
    /// Failures become warnings.
    pub ignore_failure: bool,
}

/// Where and how the command works.
pub struct BootEnv<'a> {
    /// The agent's filesystem root (`sys/firmware/efi`, `/dev` names resolve under it).
    pub sysroot: &'a Path,
    /// The install device.
    pub device: &'a Path,
    /// Mounts filesystems.
    pub mounter: &'a dyn Mounter,
    /// The conductor's `enable_bios_bootloader_install`.
    pub enable_bios_bootloader_install: bool,
}

impl std::fmt::Debug for BootEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootEnv")
            .field("sysroot", &self.sysroot)
            .field("device", &self.device)
            .field(
                "enable_bios_bootloader_install",
                &self.enable_bios_bootloader_install,
            )
            .finish_non_exhaustive()
    }
}

/// Runs `install_bootloader` for `request` (parsed by the command) on the install device.
pub async fn install_bootloader(env: &DeployEnv, request: Request) -> Result<(), DeployError> {
    let env = env.clone();
    blocking(move || -> Result<(), DeployError> {
        let device = install_device(&env)?;
        let boot = BootEnv {
            sysroot: env.sysroot(),
            device: &device,
            mounter: &SysMounter,
            enable_bios_bootloader_install: env.settings.enable_bios_bootloader_install,
        };
        run(&boot, &request)
    })
    .await?
}

/// The command's flow once the install device is known (IPA: `install_bootloader`).
pub fn run(env: &BootEnv<'_>, req: &Request) -> Result<(), DeployError> {
    match efi_boot_setup(env, req) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "Error setting up bootloader");
            if !req.ignore_failure {
                return Err(e);
            }
            tracing::warn!("ignoring the bootloader failure as configured");
        }
    }
    let Some(root_uuid) = req.root_uuid.as_deref() else {
        tracing::info!("no root UUID (whole-disk image): nothing more to do after the UEFI step");
        return Ok(());
    };
    let result = if env.enable_bios_bootloader_install {
        grub::install_grub2(env, root_uuid, req)
    } else {
        Err(DeployError::InvalidImage(BIOS_INSTALL_DISABLED.to_owned()))
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if req.ignore_failure => {
            tracing::error!(error = %e, "Error setting up bootloader");
            tracing::warn!("ignoring the bootloader failure as configured");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The UEFI variable store of the running system, mounting efivarfs if the ramdisk
/// did not; `None` when the ramdisk did not boot UEFI or the variables are unreachable.
pub fn system_efivars(sysroot: &Path, mounter: &dyn Mounter) -> Option<EfiVars> {
    let firmware = sysroot.join("sys/firmware/efi");
    if !firmware.is_dir() {
        return None;
    }
    let efivars = EfiVars::new(firmware.join("efivars"));
    if efivars.is_populated() {
        return Some(efivars);
    }
    // A UEFI system always has variables: an empty directory is an unmounted efivarfs.
    match mounter.mount(
        Path::new("efivarfs"),
        efivars.dir(),
        &MountKind::Fs(Some("efivarfs".to_owned())),
        &MountOptions::default(),
    ) {
        Ok(()) if efivars.is_populated() => Some(efivars),
        Ok(()) => {
            tracing::warn!("efivarfs mounted but empty: UEFI variables are not available");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %efivars.dir().display(), "efivarfs is not available");
            None
        }
    }
}

/// IPA's `_efi_boot_setup`: `Ok(false)` when the ramdisk is not UEFI-booted or cannot
/// reach the variables (IPA: no efibootmgr), else what `manage_uefi` did.
pub(crate) fn efi_boot_setup(env: &BootEnv<'_>, req: &Request) -> Result<bool, DeployError> {
    if !env.sysroot.join("sys/firmware/efi").is_dir() {
        return Ok(false);
    }
    // IPA: `_efi_boot_setup` leaves software RAID to the GRUB path.
    if uefi::is_md(env.device) {
        tracing::warn!(device = %env.device.display(), "UEFI boot setup is not done on software RAID");
        return Ok(false);
    }
    if req.target_boot_mode != "uefi" {
        tracing::warn!(
            target_boot_mode = %req.target_boot_mode,
            "the ramdisk booted in UEFI mode but the target boot mode differs"
        );
    }
    let Some(efivars) = system_efivars(env.sysroot, env.mounter) else {
        tracing::warn!("UEFI variables cannot be written: skipping the UEFI boot setup");
        return Ok(false);
    };
    let uefi_env = UefiEnv {
        dev_root: env.sysroot,
        efivars: &efivars,
        mounter: env.mounter,
    };
    Ok(manage_uefi(
        &uefi_env,
        env.device,
        req.efi_system_part_uuid.as_deref(),
    )?)
}

/// `<sysroot>/<device>`.
fn rooted(env: &BootEnv<'_>, device: &Path) -> PathBuf {
    crate::config::rooted(env.sysroot, device)
}
