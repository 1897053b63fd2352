//! The written instance's root filesystem, mounted for steps that change files in it
//! (`inject_files`, vendor deploy steps).
//!
//! Which partition: the one the caller names (a `/dev` path, a partition number of the
//! install device, a filesystem UUID, PARTUUID or label); else, after a partition
//! image, its `root` partition; else, as IPA's `inject_files` looks for a partition
//! holding the path, every ext2/3/4, XFS or btrfs partition of the install device,
//! largest first, until one holds a directory `etc`. Partitions are found by reading
//! the disk itself ([`crate::partition::find`]), not through lsblk.
//!
//! Each candidate must pass the same checks as a write: the device allow-list (the
//! partition or its disk must be listed) and the running-system check of
//! [`crate::blockdev::open_for_write`]. A partition of the table whose device node the
//! kernel did not create is added with BLKPG first (what IPA gets from `partx -a`).
//! It is mounted `nosuid,nodev,noexec` on a fresh
//! directory (no set-id program, device node or binary of the tenant's filesystem can
//! act while the agent holds secrets), the closure runs, and the filesystem is unmounted
//! and the directory removed even when the closure fails or panics. What the closure
//! writes must go through [`ira_hw::safe_path`], which keeps every path inside.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::blockdev::{open_for_write, AllowList};
use crate::deploy::bootloader::esp::DiskView;
use crate::partition::find::{describe, PartitionDetails};
use crate::partition::fsprobe::{self, FsKind};
use crate::partition::Geometry;
use crate::sys::block;
use ira_hw::safe_path::RootDir;
use ira_hw::{HwError, HwResult};

use super::env::DeployEnv;
use super::mount::{MountError, MountKind, MountOptions, MountPoint, Mounts, SysMounter, Unmount};
use super::target::install_device;
use super::PartitionUuids;

/// The directory whose presence marks a root filesystem (IPA looks for the path's
/// first component; for a root that is `etc`).
pub const ROOT_MARKER: &str = "etc";

/// Why the instance root could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum InstanceRootError {
    /// No install device could be chosen.
    #[error("no install device: {0}")]
    NoInstallDevice(String),
    /// Reading a disk or partition failed.
    #[error("reading {path}: {reason}")]
    Read {
        /// The device.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The named partition is not on the install device.
    #[error("no partition {spec} found on device {dev}")]
    NotFound {
        /// The partition as named.
        spec: String,
        /// The disk searched.
        dev: PathBuf,
    },
    /// No partition of the disk holds a root filesystem.
    #[error("no partition of {dev} holds a root filesystem (a directory {ROOT_MARKER}); scanned: {scanned}")]
    NoRoot {
        /// The disk searched.
        dev: PathBuf,
        /// What was looked at.
        scanned: String,
    },
    /// The partition holds no filesystem this agent mounts.
    #[error("{path} holds no mountable filesystem ({found})")]
    NotMountable {
        /// The partition.
        path: PathBuf,
        /// What the probe found.
        found: String,
    },
    /// The device may not be touched (allow-list or running system).
    #[error("refusing to mount {path}: {reason}")]
    Refused {
        /// The partition.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Creating or removing the mount point failed.
    #[error("mount point {path}: {source}")]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// mount(2) or umount(2) failed.
    #[error("{op} {path}: {reason}")]
    Mount {
        /// `mounting` or `unmounting`.
        op: &'static str,
        /// The device or directory.
        path: PathBuf,
        /// The kernel's answer.
        reason: String,
    },
}

impl From<InstanceRootError> for HwError {
    fn from(e: InstanceRootError) -> Self {
        HwError::Failed(e.to_string())
    }
}

/// A partition ready to be mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `/dev` path of the partition.
    pub path: PathBuf,
    /// The disk it belongs to, when known (its allow-list entry covers the partition).
    pub disk: Option<PathBuf>,
    /// Its number in the disk's table, when it was found there.
    pub number: Option<u32>,
    /// The filesystem found on it.
    pub kind: FsKind,
    /// Its size in bytes (largest first when searching).
    pub size: u64,
}

/// Which partitions to try: one named partition, or a search for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Mount exactly this one.
    Exact(Candidate),
    /// Try these in order; the first holding [`ROOT_MARKER`] is the root.
    Search {
        /// The disk searched (for messages).
        disk: PathBuf,
        /// Mountable partitions, largest first.
        candidates: Vec<Candidate>,
    },
}

/// Mounts the instance root (or `partition`), runs `f` on the mount point, unmounts.
pub fn with_instance_root(
    env: &DeployEnv,
    partition: Option<&str>,
    f: &mut dyn FnMut(&Path) -> HwResult<()>,
) -> HwResult<()> {
    match choose(env, partition)? {
        Choice::Exact(c) => {
            check_device(env, &c)?;
            let mounted = Mounted::mount(env, &c)?;
            tracing::info!(partition = %c.path.display(), fs = c.kind.as_str(),
                "instance partition mounted");
            let result = f(mounted.dir());
            mounted.unmount()?;
            result
        }
        Choice::Search { disk, candidates } => {
            let mut scanned = Vec::new();
            for c in &candidates {
                check_device(env, c)?;
                let mounted = Mounted::mount(env, c)?;
                let is_root = RootDir::open(mounted.dir())
                    .and_then(|r| r.is_dir(ROOT_MARKER))
                    .map_err(|e| HwError::Failed(format!("{}: {e}", c.path.display())))?;
                if !is_root {
                    scanned.push(format!("{} ({})", c.path.display(), c.kind.as_str()));
                    mounted.unmount()?;
                    continue;
                }
                tracing::info!(partition = %c.path.display(), fs = c.kind.as_str(),
                    "instance root mounted");
                let result = f(mounted.dir());
                mounted.unmount()?;
                return result;
            }
            Err(InstanceRootError::NoRoot {
                dev: disk,
                scanned: if scanned.is_empty() {
                    "no ext2/3/4, xfs or btrfs partition".to_owned()
                } else {
                    scanned.join(", ")
                },
            }
            .into())
        }
    }
}

/// Decides which partition(s) to mount, reading the install device's table.
pub fn choose(env: &DeployEnv, partition: Option<&str>) -> Result<Choice, InstanceRootError> {
    let written = env.cache.written();
    let disk = match &written {
        Some(w) => w.device.clone(),
        None => {
            install_device(env).map_err(|e| InstanceRootError::NoInstallDevice(e.to_string()))?
        }
    };
    if let Some(spec) = partition.map(str::trim).filter(|s| !s.is_empty()) {
        if spec.starts_with('/') {
            return named_device(env, Path::new(spec)).map(Choice::Exact);
        }
        let parts = read_partitions(env, &disk)?;
        let found = match spec.parse::<u32>() {
            // IPA: a bare number is a partition of the root device.
            Ok(n) => parts.into_iter().find(|p| p.info.number == n),
            Err(_) => parts.into_iter().find(|p| {
                p.fs_uuid().is_some_and(|u| u.eq_ignore_ascii_case(spec))
                    || p.info.part_uuid.eq_ignore_ascii_case(spec)
                    || p.label() == Some(spec)
            }),
        };
        let found = found.ok_or_else(|| InstanceRootError::NotFound {
            spec: spec.to_owned(),
            dev: disk.clone(),
        })?;
        return candidate(found, &disk).map(Choice::Exact);
    }
    let parts = read_partitions(env, &disk)?;
    if let Some(PartitionUuids::Partition {
        root_uuid,
        partitions,
        ..
    }) = written.as_ref().map(|w| &w.uuids)
    {
        let root_path = partitions.get("root").map(PathBuf::from);
        let found = parts.into_iter().find(|p| {
            root_path.as_deref() == Some(p.path.as_path()) || p.block_uuid() == root_uuid
        });
        let found = found.ok_or_else(|| InstanceRootError::NotFound {
            spec: format!("root (uuid {root_uuid})"),
            dev: disk.clone(),
        })?;
        return candidate(found, &disk).map(Choice::Exact);
    }
    let mut candidates: Vec<Candidate> = parts
        .into_iter()
        .filter_map(|p| candidate(p, &disk).ok())
        .collect();
    candidates.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    Ok(Choice::Search { disk, candidates })
}

/// A probed partition of `disk` as a mount candidate, if its filesystem is mountable.
fn candidate(p: PartitionDetails, disk: &Path) -> Result<Candidate, InstanceRootError> {
    let kind = mountable(&p.path, p.fs.as_ref().map(|f| f.kind))?;
    Ok(Candidate {
        path: p.path,
        disk: Some(disk.to_path_buf()),
        number: Some(p.info.number),
        kind,
        size: p.info.size,
    })
}

/// The filesystem kind if this agent mounts it.
fn mountable(path: &Path, kind: Option<FsKind>) -> Result<FsKind, InstanceRootError> {
    match kind {
        Some(k @ (FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs)) => {
            Ok(k)
        }
        other => Err(InstanceRootError::NotMountable {
            path: path.to_path_buf(),
            found: other
                .map_or("no known filesystem", |k| k.as_str())
                .to_owned(),
        }),
    }
}

/// Every partition of `disk` with its filesystem, read from the disk.
fn read_partitions(
    env: &DeployEnv,
    disk: &Path,
) -> Result<Vec<PartitionDetails>, InstanceRootError> {
    let read = |reason: String| InstanceRootError::Read {
        path: disk.to_path_buf(),
        reason,
    };
    let mut file = File::open(env.rooted(disk)).map_err(|e| read(e.to_string()))?;
    let geometry = Geometry::of_file(&file).map_err(|e| read(e.to_string()))?;
    describe(&mut file, geometry, disk).map_err(|e| read(e.to_string()))
}

/// A partition named by its `/dev` path, probed directly.
fn named_device(env: &DeployEnv, path: &Path) -> Result<Candidate, InstanceRootError> {
    let read = |reason: String| InstanceRootError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let disk = parent_disk(env, path);
    // Not even read before the allow-list agrees.
    check_allowed(env, path, disk.as_deref())?;
    let mut file = File::open(env.rooted(path)).map_err(|e| read(e.to_string()))?;
    let size = match block::device_size(&file) {
        Ok(size) => size,
        Err(_) => file.metadata().map_err(|e| read(e.to_string()))?.len(),
    };
    let fs = fsprobe::probe(&mut file, 0, size).map_err(|e| read(e.to_string()))?;
    let kind = mountable(path, fs.map(|f| f.kind))?;
    Ok(Candidate {
        path: path.to_path_buf(),
        disk,
        number: None,
        kind,
        size,
    })
}

/// The disk holding partition `path`, from sysfs (`None` for a whole disk).
fn parent_disk(env: &DeployEnv, path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let sys = env.sysroot().join("sys/class/block").join(name);
    if !sys.join("partition").exists() {
        return None;
    }
    let real = std::fs::canonicalize(&sys).ok()?;
    let disk = real.parent()?.file_name()?;
    Some(Path::new("/dev").join(disk))
}

/// The write-path checks for a partition: allow-list (the partition or its disk) and
/// the running-system check of the one write door.
fn check_device(env: &DeployEnv, c: &Candidate) -> Result<(), InstanceRootError> {
    check_allowed(env, &c.path, c.disk.as_deref())?;
    ensure_node(env, c)?;
    // The allow-list was applied above (with the disk rule); the door adds the
    // running-system and device-kind checks.
    open_for_write(&env.rooted(&c.path), &AllowList::default())
        .map(drop)
        .map_err(|e| InstanceRootError::Refused {
            path: c.path.clone(),
            reason: e.to_string(),
        })
}

/// Makes sure a partition found in the disk's table has a device node that matches the
/// table: a kernel without a parser for the table (or a re-read that found the disk
/// busy) leaves that to user space, as IPA's `partx -a` does.
fn ensure_node(env: &DeployEnv, c: &Candidate) -> Result<(), InstanceRootError> {
    let (Some(disk), Some(number)) = (c.disk.as_deref(), c.number) else {
        return Ok(());
    };
    let failed = |reason: String| InstanceRootError::Read {
        path: c.path.clone(),
        reason,
    };
    let view = DiskView::open(disk, &env.rooted(disk)).map_err(|e| failed(e.to_string()))?;
    let part = view
        .partition(number)
        .ok_or_else(|| InstanceRootError::NotFound {
            spec: number.to_string(),
            dev: disk.to_path_buf(),
        })?;
    let node = view
        .ensure_node(&part, env.sysroot())
        .map_err(|e| failed(e.to_string()))?;
    tracing::debug!(partition = %c.path.display(), node = %node.display(), "partition node ready");
    Ok(())
}

/// The allow-list part of the checks: the partition or its disk must be listed.
fn check_allowed(
    env: &DeployEnv,
    path: &Path,
    disk: Option<&Path>,
) -> Result<(), InstanceRootError> {
    let allow = env.allowlist();
    let listed = |p: &Path| allow.permits(p) || allow.permits(&env.rooted(p));
    if listed(path) || disk.is_some_and(listed) {
        Ok(())
    } else {
        Err(InstanceRootError::Refused {
            path: path.to_path_buf(),
            reason: "neither it nor its disk is in the device allow-list".to_owned(),
        })
    }
}

/// A mounted partition; unmounted (detached if it stays busy) and its directory
/// removed on drop at the latest.
struct Mounted {
    // Declared first: unmounted before the mount point is removed.
    mounts: Mounts<'static>,
    point: MountPoint,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("dir", &self.dir()).finish()
    }
}

/// How a tenant's filesystem is mounted: no set-id program, device node or binary of it
/// can act while the agent holds secrets. One ext driver serves ext2/3/4; XFS refuses a
/// second filesystem with the same UUID (an image written twice on one machine) unless
/// told not to check.
fn instance_mount(kind: FsKind) -> (MountKind, MountOptions) {
    let (fstype, data) = match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ("ext4", None),
        FsKind::Xfs => ("xfs", Some("nouuid".to_owned())),
        other => (other.as_str(), None),
    };
    let options = MountOptions {
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data,
    };
    (MountKind::Fs(Some(fstype.to_owned())), options)
}

impl Mounted {
    fn mount(env: &DeployEnv, c: &Candidate) -> Result<Self, InstanceRootError> {
        let point =
            MountPoint::new("instance").map_err(|source| InstanceRootError::MountPoint {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut mounts = Mounts::new(&SysMounter);
        let (kind, options) = instance_mount(c.kind);
        mounts
            .mount_with(
                &env.rooted(&c.path),
                point.path(),
                kind,
                &options,
                Unmount::DetachWhenBusy,
            )
            .map_err(|e| InstanceRootError::Mount {
                op: "mounting",
                path: c.path.clone(),
                reason: mount_reason(e),
            })?;
        Ok(Self { mounts, point })
    }

    fn dir(&self) -> &Path {
        self.point.path()
    }

    /// Unmounts (retrying while busy, then detaching) and removes the directory.
    fn unmount(self) -> Result<(), InstanceRootError> {
        let Self { mounts, point } = self;
        let dir = point.path().to_path_buf();
        mounts.close().map_err(|e| InstanceRootError::Mount {
            op: "unmounting",
            path: dir,
            reason: mount_reason(e),
        })
    }
}

/// The system error inside a mount failure (the paths are named by the caller).
fn mount_reason(e: MountError) -> String {
    match e {
        MountError::Mount { error, .. } | MountError::Umount { error, .. } => {
            error.raw_os_error().map_or_else(
                || error.to_string(),
                |n| nix::errno::Errno::from_raw(n).to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linux_root_filesystems_are_mountable() {
        let p = Path::new("/dev/x1");
        for k in [
            FsKind::Ext2,
            FsKind::Ext3,
            FsKind::Ext4,
            FsKind::Xfs,
            FsKind::Btrfs,
        ] {
            assert_eq!(mountable(p, Some(k)).unwrap(), k);
        }
        for k in [
            Some(FsKind::Vfat),
            Some(FsKind::Swap),
            Some(FsKind::Iso9660),
            None,
        ] {
            assert!(matches!(
                mountable(p, k),
                Err(InstanceRootError::NotMountable { .. })
            ));
        }
    }

    #[test]
    fn a_tenant_filesystem_is_mounted_nosuid_nodev_noexec() {
        let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let (kind, options) = instance_mount(FsKind::Ext3);
        assert_eq!(kind, MountKind::Fs(Some("ext4".into())));
        assert_eq!(options.flags, safe);
        assert_eq!(options.data, None);
        let (kind, options) = instance_mount(FsKind::Xfs);
        assert_eq!(kind, MountKind::Fs(Some("xfs".into())));
        assert_eq!(options.flags, safe);
        assert_eq!(options.data.as_deref(), Some("nouuid"));
    }
}
