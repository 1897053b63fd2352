//! The one door to a writable handle: [`open_for_write`] checks the allow-list and
//! refuses any device that shares a disk with the running system's root filesystem.
//!
//! "Shares a disk" is computed in sysfs: the root mount's device (from
//! `proc/self/mountinfo`) and the target are each expanded to every device under them
//! (partition -> its disk, dm/md -> its `slaves/`, recursively); any overlap refuses.
//! A root on a RAM filesystem (the agent's own ramdisk) has no device, so nothing is
//! refused for it. Regular files may be opened too (tests, image files), still subject
//! to the allow-list.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::AllowList;

/// `proc/self/mountinfo` is a few KiB; the cap bounds a pathological mount table.
const MOUNTINFO_CAP: u64 = 4 << 20;
/// dm/md stacks are a few levels deep; the bound only stops a corrupt sysfs loop.
const MAX_DEPTH: usize = 16;

/// Why a device was not opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum BlockDevError {
    /// The path matches no glob of a non-empty allow-list.
    #[error("{path} is outside the device allow-list")]
    NotAllowed {
        /// The refused path.
        path: PathBuf,
    },
    /// The device shares a disk with the running system's root filesystem.
    #[error("{path} holds the running system (disk {disk})")]
    HoldsRunningSystem {
        /// The refused path.
        path: PathBuf,
        /// The kernel name of the shared device.
        disk: String,
    },
    /// Neither a block device nor a regular file.
    #[error("{path} is neither a block device nor a regular file")]
    NotADevice {
        /// The refused path.
        path: PathBuf,
    },
    /// A probe needed for the safety checks failed, so the device is refused.
    #[error("probing {path}: {source}")]
    Probe {
        /// What was being read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The checks passed but the open itself failed.
    #[error("opening {path} for writing: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node changed between the checks and the open.
    #[error("{path} changed while it was being opened")]
    Changed {
        /// The device.
        path: PathBuf,
    },
}

/// Opens `path` read-write for writing an image or erasing, after the allow-list and
/// running-system checks; the only way the agent gets a writable device handle.
pub fn open_for_write(path: &Path, allow: &AllowList) -> Result<File, BlockDevError> {
    open_for_write_at(Path::new("/"), path, allow)
}

/// [`open_for_write`] with `proc/` and `sys/` read under `root` (a fixture in tests).
pub fn open_for_write_at(
    root: &Path,
    path: &Path,
    allow: &AllowList,
) -> Result<File, BlockDevError> {
    let probe = |p: &Path| {
        let path = p.to_path_buf();
        move |source| BlockDevError::Probe { path, source }
    };
    let real = std::fs::canonicalize(path).map_err(probe(path))?;
    // A by-path or by-id link is permitted when either it or its target is listed.
    if !(allow.permits(path) || allow.permits(&real)) {
        return Err(BlockDevError::NotAllowed {
            path: path.to_path_buf(),
        });
    }
    let meta = std::fs::metadata(&real).map_err(probe(&real))?;
    let kind = meta.file_type();
    if kind.is_block_device() {
        let dev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        let system = system_devices(root)?;
        let target = devices_under(root, &format!("{major}:{minor}"))?;
        if let Some(disk) = target.intersection(&system).next() {
            return Err(BlockDevError::HoldsRunningSystem {
                path: path.to_path_buf(),
                disk: disk.clone(),
            });
        }
    } else if !kind.is_file() {
        return Err(BlockDevError::NotADevice {
            path: path.to_path_buf(),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&real)
        .map_err(|source| BlockDevError::Open {
            path: real.clone(),
            source,
        })?;
    // The checks ran on a path; make sure the handle is the node that was checked.
    let opened = file.metadata().map_err(probe(&real))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() || opened.rdev() != meta.rdev() {
        return Err(BlockDevError::Changed { path: real });
    }
    tracing::debug!(path = %real.display(), "opened for writing");
    Ok(file)
}

/// Kernel names of every device holding the root filesystem under `root` (empty when
/// `/` is not on a block device). A failed probe is an error: callers refuse then.
pub fn system_devices(root: &Path) -> Result<BTreeSet<String>, BlockDevError> {
    let path = root.join("proc/self/mountinfo");
    let text = read_capped(&path, MOUNTINFO_CAP)?;
    let Some(mount) = parse_root_mount(&text) else {
        return Ok(BTreeSet::new());
    };
    if mount.major != 0 {
        return devices_under(root, &format!("{}:{}", mount.major, mount.minor));
    }
    // Anonymous device numbers (btrfs subvolumes): the mount source names the device.
    if let Some(source) = mount.source.strip_prefix("/dev/") {
        let link = root.join("dev").join(source);
        let node = std::fs::canonicalize(&link).unwrap_or(link);
        if let Some(name) = node.file_name().map(|n| n.to_string_lossy().into_owned()) {
            if root.join("sys/class/block").join(&name).exists() {
                let mut out = BTreeSet::new();
                expand(root, &name, &mut out, 0);
                return Ok(out);
            }
        }
    }
    Ok(BTreeSet::new())
}

/// Every device under block device `major:minor`: itself, its disk when it is a
/// partition, and recursively the `slaves/` of dm and md devices.
pub fn devices_under(root: &Path, devnum: &str) -> Result<BTreeSet<String>, BlockDevError> {
    let link = root.join("sys/dev/block").join(devnum);
    let target = std::fs::read_link(&link).map_err(|source| BlockDevError::Probe {
        path: link.clone(),
        source,
    })?;
    let mut out = BTreeSet::new();
    if let Some(name) = target.file_name() {
        expand(root, &name.to_string_lossy(), &mut out, 0);
    }
    Ok(out)
}

fn expand(root: &Path, name: &str, out: &mut BTreeSet<String>, depth: usize) {
    if depth > MAX_DEPTH || !out.insert(name.to_owned()) {
        return;
    }
    let Ok(dir) = std::fs::canonicalize(root.join("sys/class/block").join(name)) else {
        return;
    };
    if dir.join("partition").exists() {
        if let Some(parent) = dir.parent().and_then(Path::file_name) {
            expand(root, &parent.to_string_lossy(), out, depth + 1);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("slaves")) {
        for entry in entries.flatten() {
            expand(root, &entry.file_name().to_string_lossy(), out, depth + 1);
        }
    }
}

/// The root filesystem's mount as `proc/self/mountinfo` states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    /// Device major number (0 for anonymous devices: tmpfs, overlay, btrfs).
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Mount source (the field after the filesystem type), e.g. `/dev/vda`.
    pub source: String,
}

/// The last mount on `/` (later mounts hide earlier ones), if any.
pub fn parse_root_mount(mountinfo: &str) -> Option<RootMount> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(4) != Some(&"/") {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let sep = fields.iter().position(|f| *f == "-")?;
        Some(RootMount {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            source: fields.get(sep + 2).copied().unwrap_or_default().to_owned(),
        })
    })
}

fn read_capped(path: &Path, cap: u64) -> Result<String, BlockDevError> {
    use std::io::Read;
    let err = |source| BlockDevError::Probe {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    File::open(path)
        .map_err(err)?
        .take(cap)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_mount_is_the_last_one_on_slash() {
        let text = "22 27 0:21 / /proc rw - proc proc rw\n\
                    1 0 0:2 / / rw - rootfs rootfs rw\n\
                    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    28 27 0:25 / /mnt ro - tmpfs x ro\n";
        assert_eq!(
            parse_root_mount(text),
            Some(RootMount {
                major: 254,
                minor: 0,
                source: "/dev/vda".into()
            })
        );
        assert_eq!(
            parse_root_mount("22 27 0:21 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn optional_fields_before_separator() {
        let text = "29 1 8:2 / / rw shared:1 master:2 - btrfs /dev/sda2 rw\n";
        let m = parse_root_mount(text).unwrap();
        assert_eq!((m.major, m.minor, m.source.as_str()), (8, 2, "/dev/sda2"));
    }
}
