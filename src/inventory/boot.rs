//! `boot` (spec 1.8) and `hostname`.
//!
//! The boot mode is `uefi` when the kernel exposes `sys/firmware/efi` (it only does
//! when started by UEFI), else `bios`. `pxe_interface` is the raw `BOOTIF` value the
//! caller resolved from the kernel command line, passed through unchanged.

use std::path::Path;

use ira_hw::BootInfo;

use super::read::{read_opt_nonempty, under};

/// Boot mode under `root` plus the caller's `BOOTIF` value.
pub fn read_boot(root: &Path, bootif: Option<&str>) -> BootInfo {
    let mode = if under(root, "sys/firmware/efi").is_dir() {
        "uefi"
    } else {
        "bios"
    };
    BootInfo {
        current_boot_mode: mode.to_owned(),
        pxe_interface: bootif.map(str::to_owned),
    }
}

/// The host name: `proc/sys/kernel/hostname` under `root` (the same value the kernel
/// returns to `gethostname`, and fixture trees can carry it), else `gethostname()`.
pub fn read_hostname(root: &Path) -> String {
    if let Some(name) = read_opt_nonempty(&under(root, "proc/sys/kernel/hostname")) {
        return name;
    }
    match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(err) => {
            tracing::warn!(error = %err, "gethostname failed");
            String::new()
        }
    }
}
