//! Preserving a partition image's EFI assets (IPA: `_preserve_efi_assets`, spec 9.5
//! step 3): a partition image carries its ESP content under `/boot/efi/EFI` of the root
//! filesystem; it is copied onto the new, empty ESP, with the image's
//! `boot/grub2/grub.cfg` and `grubenv` added to each `EFI/<vendor>/` that lacks them.
//!
//! The source is the image's tree, so the copy follows no symlink (FAT could not hold
//! one anyway), takes only directories and regular files, and is bounded in depth and
//! entries. The ESP is mounted on a private directory, not over the image's
//! `/boot/efi`, so nothing needs staging.

use std::fs;
use std::io;
use std::path::Path;

use crate::deploy::mount::{MountError, MountKind, MountPoint, Mounter, Mounts};

/// Deepest directory level copied.
const MAX_DEPTH: usize = 16;
/// Most entries copied.
const MAX_ENTRIES: usize = 100_000;

/// Why the assets could not be preserved.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Mounting or unmounting the ESP failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Copying failed.
    #[error("copying {path}: {error}")]
    Io {
        /// The path (relative to `EFI/`).
        path: String,
        /// The system error.
        error: io::Error,
    },
    /// The tree is deeper or larger than any real ESP.
    #[error("the image's /boot/efi/EFI is too large or too deep to copy")]
    TooLarge,
}

/// Copies `assets` (the image's `/boot/efi/EFI`) onto the ESP whose device node is
/// `node`, adding GRUB's files from `grub2` (the image's `/boot/grub2`). Both paths
/// must already be resolved inside the image root.
pub fn preserve(
    mounter: &dyn Mounter,
    assets: &Path,
    grub2: Option<&Path>,
    node: &Path,
) -> Result<(), AssetError> {
    let mount_point = MountPoint::new("esp").map_err(|error| AssetError::Io {
        path: String::new(),
        error,
    })?;
    let mut mounts = Mounts::new(mounter);
    mounts.mount(
        node,
        mount_point.path(),
        MountKind::Fs(Some("vfat".to_owned())),
    )?;
    let dest = mount_point.path().join("EFI");
    let copied = copy_tree(assets, &dest).and_then(|()| match grub2 {
        Some(grub2) => add_grub_files(grub2, &dest),
        None => Ok(()),
    });
    let closed = mounts.close();
    drop(mount_point);
    copied?;
    closed?;
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AssetError + '_ {
    move |error| AssetError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Copies directories and regular files from `src` into `dst` (merged), skipping
/// anything else.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), AssetError> {
    let mut seen = 0usize;
    copy_dir(src, dst, 0, &mut seen)
}

fn copy_dir(src: &Path, dst: &Path, depth: usize, seen: &mut usize) -> Result<(), AssetError> {
    if depth > MAX_DEPTH {
        return Err(AssetError::TooLarge);
    }
    match fs::create_dir(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
        Err(e) => return Err(io_err(dst)(e)),
    }
    for entry in fs::read_dir(src).map_err(io_err(src))? {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            return Err(AssetError::TooLarge);
        }
        let entry = entry.map_err(io_err(src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type().map_err(io_err(&from))?; // lstat: links stay links
        if ty.is_dir() {
            copy_dir(&from, &to, depth + 1, seen)?;
        } else if ty.is_file() {
            copy_file(&from, &to)?;
        } else {
            tracing::warn!(path = %from.display(), "skipping a non-regular file in the image's EFI assets");
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), AssetError> {
    // O_NOFOLLOW: the entry was a regular file when listed and must still be one.
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(io_err(from))?;
    let mut dst = fs::File::create(to).map_err(io_err(to))?;
    io::copy(&mut src, &mut dst).map_err(io_err(to))?;
    dst.sync_all().map_err(io_err(to))
}

/// Puts `grub.cfg` and `grubenv` from `grub2` into each `EFI/<vendor>/` lacking them
/// (GRUB built for EFI looks for its config beside itself).
fn add_grub_files(grub2: &Path, efi: &Path) -> Result<(), AssetError> {
    for name in ["grub.cfg", "grubenv"] {
        let src = grub2.join(name);
        let is_file = fs::symlink_metadata(&src).is_ok_and(|m| m.is_file());
        if !is_file {
            continue;
        }
        for entry in fs::read_dir(efi).map_err(io_err(efi))? {
            let entry = entry.map_err(io_err(efi))?;
            if !entry.file_type().map_err(io_err(efi))?.is_dir() {
                continue;
            }
            let dest = entry.path().join(name);
            if dest.exists() {
                continue;
            }
            if let Err(e) = copy_file(&src, &dest) {
                tracing::warn!(error = %e, "could not add {name} next to an EFI loader");
            }
        }
    }
    Ok(())
}
