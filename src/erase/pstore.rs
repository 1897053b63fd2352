//! `erase_pstore` (spec 5.10): the persistent-storage filesystem keeps kernel crash
//! records (oops, panic dmesg) across reboots, from the previous tenant too. The first
//! `/proc/mounts` line `pstore <dir> pstore...` names its mount point; every entry in
//! it is deleted. Nothing mounted: nothing to do.

use std::path::{Path, PathBuf};

use super::{EraseError, EraseScope};

/// The pstore mount point in `mounts` (the text of `/proc/mounts`), as IPA's regex
/// `^pstore (\S+) pstore` finds it.
pub fn pstore_dir(mounts: &str) -> Option<&str> {
    mounts.lines().find_map(|line| {
        let rest = line.strip_prefix("pstore ")?;
        let (dir, after) = rest.split_once(' ')?;
        (!dir.is_empty() && after.starts_with("pstore")).then_some(dir)
    })
}

/// Runs the step: `proc/mounts` and the mount point are read under the scope's sysroot.
/// Returns the number of entries deleted. The disabled scope (a manager built without
/// the agent's configuration) deletes nothing and says so.
pub fn erase_pstore(scope: &EraseScope) -> Result<usize, EraseError> {
    if scope.is_disabled() {
        return Err(EraseError::Pstore(
            "erase steps are disabled in this context (no agent configuration)".to_owned(),
        ));
    }
    let sysroot = scope.sysroot.as_path();
    let mounts_path = sysroot.join("proc/mounts");
    let mounts = std::fs::read_to_string(&mounts_path)
        .map_err(|e| EraseError::Pstore(format!("reading {}: {e}", mounts_path.display())))?;
    let Some(dir) = pstore_dir(&mounts) else {
        tracing::info!("no pstore filesystem mounted: nothing to erase");
        return Ok(0);
    };
    let dir: PathBuf = crate::config::rooted(sysroot, Path::new(dir));
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| EraseError::Pstore(format!("listing {}: {e}", dir.display())))?;
    let mut deleted = 0;
    for entry in entries {
        let entry =
            entry.map_err(|e| EraseError::Pstore(format!("listing {}: {e}", dir.display())))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| EraseError::Pstore(format!("deleting {}: {e}", path.display())))?;
        deleted += 1;
    }
    tracing::info!(dir = %dir.display(), deleted, "pstore erased");
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pstore_mount_is_found() {
        let mounts = "proc /proc proc rw 0 0\n\
                      sysfs /sys sysfs rw 0 0\n\
                      pstore /sys/fs/pstore pstore rw,nosuid 0 0\n\
                      pstore /other pstore rw 0 0\n";
        assert_eq!(pstore_dir(mounts), Some("/sys/fs/pstore"));
        assert_eq!(pstore_dir("proc /proc proc rw 0 0\n"), None);
        // The device field must be pstore, and so must the type.
        assert_eq!(pstore_dir("none /sys/fs/pstore pstore rw 0 0\n"), None);
        assert_eq!(pstore_dir("pstore /mnt ext4 rw 0 0\n"), None);
        assert_eq!(pstore_dir(""), None);
    }
}
