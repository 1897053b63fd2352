//! Virtual media as Ironic attaches it (protocol spec 6.1): the floppy/USB image labelled
//! `ir-vfd-dev` with `parameters.txt`, and the boot ISO (labelled `config-2` when it
//! carries `openstack/latest/network_data.json`, else `VMEDIA_BOOT_ISO`) with the agent
//! configuration and CA under `etc/ironic-python-agent/` and `etc/ironic-python-agent.d/`.
//!
//! Devices are found by filesystem label read from their own bytes
//! ([`crate::partition::fsprobe`], no libblkid) and must look like virtual media as IPA
//! judges it (`utils._check_vmedia_device`): a whole device, either a CD/DVD (`rom`) or a
//! USB disk under 4 GiB. So a deployed instance's `config-2` partition on a local disk is
//! never taken for the BMC's media. Every path (sysfs, `/dev`, `/proc/mounts`, the
//! configuration written) is under a root, `/` in production.
//!
//! Mounting is read-only and undone before returning; a device something already mounted
//! (a config-drive tool) is read where it is.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::deploy::mount::{MountKind, MountOptions, MountPoint, Mounter, Mounts, Unmount};
use crate::inventory::read::{list_dir_opt, read_opt, read_u64, under};
use crate::partition::fsprobe;

/// Label of the floppy/USB image holding `parameters.txt`.
pub const PARAMETERS_LABEL: &str = "ir-vfd-dev";
/// Labels of the boot ISO that may carry configuration (IPA: `copy_config_from_vmedia`).
pub const CONFIG_LABELS: &[&str] = &["config-2", "vmedia_boot_iso"];
/// Label of a config drive.
pub const CONFIG_DRIVE_LABEL: &str = "config-2";
/// The parameters file on the floppy.
pub const PARAMETERS_FILE: &str = "parameters.txt";
/// Directories copied from the boot ISO into the system root, as IPA copies them.
pub const CONFIG_DIRS: &[&str] = &["etc/ironic-python-agent", "etc/ironic-python-agent.d"];
/// USB disks at least this large are real disks, not virtual media (IPA's 4 GiB).
const USB_VMEDIA_MAX: u64 = 4 << 30;
/// SCSI peripheral type of a CD/DVD drive (`TYPE_ROM`).
const SCSI_TYPE_ROM: &str = "5";
/// Largest file read from virtual media (`parameters.txt`, `network_data.json`).
const READ_LIMIT: u64 = 1 << 20;
/// Largest file copied from the configuration directories.
const COPY_LIMIT: u64 = 16 << 20;

/// Why virtual media could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VmediaError {
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] crate::deploy::mount::MountError),
    /// A file could not be read, created or copied.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is larger than allowed.
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VmediaError + '_ {
    move |source| VmediaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One block device seen in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name (`sr0`, `sdb`).
    pub kname: String,
    /// Its node under the root (`<root>/dev/sr0`).
    pub dev: PathBuf,
    /// Filesystem type (`iso9660`, `vfat`).
    pub fstype: &'static str,
    /// Filesystem label.
    pub label: String,
}

/// Every block device under `root` whose filesystem label is one of `labels`
/// (compared case-insensitively, as IPA does), in kernel order.
pub fn devices_with_labels(root: &Path, labels: &[&str]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for kname in list_dir_opt(&under(root, "sys/class/block")) {
        let dev = under(root, &format!("dev/{kname}"));
        let Some(info) = probe(root, &kname, &dev) else {
            continue;
        };
        let Some(label) = info.label else { continue };
        if labels.iter().any(|l| l.eq_ignore_ascii_case(&label)) {
            out.push(Candidate {
                kname,
                dev,
                fstype: info.kind.as_str(),
                label,
            });
        }
    }
    out
}

fn probe(root: &Path, kname: &str, dev: &Path) -> Option<fsprobe::FsInfo> {
    let sectors = read_u64(&under(root, &format!("sys/class/block/{kname}/size"))).ok()?;
    if sectors == 0 {
        return None; // an empty drive (no medium)
    }
    let mut f = File::open(dev).ok()?;
    match fsprobe::probe(&mut f, 0, sectors.saturating_mul(512)) {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(device = %dev.display(), error = %e, "cannot probe");
            None
        }
    }
}

/// Whether `kname` looks like media a BMC attached (IPA: `_check_vmedia_device`): not a
/// partition; a CD/DVD drive, or a USB disk smaller than 4 GiB.
pub fn is_virtual_media(root: &Path, kname: &str) -> bool {
    let sys = under(root, &format!("sys/class/block/{kname}"));
    if sys.join("partition").exists() {
        tracing::info!(device = kname, "not virtual media: a partition");
        return false;
    }
    let rom = kname.starts_with("sr")
        || read_opt(&sys.join("device/type")).as_deref() == Some(SCSI_TYPE_ROM);
    if rom {
        return true;
    }
    // The device's place in the bus hierarchy says whether USB carries it.
    let usb = std::fs::canonicalize(&sys)
        .map(|p| {
            p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
        })
        .unwrap_or(false);
    let size = read_u64(&sys.join("size"))
        .ok()
        .map(|s| s.saturating_mul(512));
    match (usb, size) {
        (true, Some(size)) if size < USB_VMEDIA_MAX => true,
        _ => {
            tracing::info!(device = kname, usb, ?size, "not virtual media");
            false
        }
    }
}

/// The first device labelled with one of `labels` that passes [`is_virtual_media`]
/// (IPA: `_find_vmedia_device_by_labels`).
pub fn find_by_labels(root: &Path, labels: &[&str]) -> Option<Candidate> {
    devices_with_labels(root, labels)
        .into_iter()
        .find(|c| is_virtual_media(root, &c.kname))
}

/// A whole device whose sysfs model says "virtual media" (IPA: `_get_vmedia_device`,
/// the fallback for BMCs that label nothing).
pub fn find_by_model(root: &Path) -> Option<Candidate> {
    list_dir_opt(&under(root, "sys/class/block"))
        .into_iter()
        .filter(|k| {
            read_opt(&under(root, &format!("sys/class/block/{k}/device/model")))
                .is_some_and(|m| m.to_ascii_lowercase().contains("virtual media"))
        })
        .filter(|k| is_virtual_media(root, k))
        .find_map(|kname| {
            let dev = under(root, &format!("dev/{kname}"));
            let info = probe(root, &kname, &dev)?;
            Some(Candidate {
                kname,
                dev,
                fstype: info.kind.as_str(),
                label: info.label.unwrap_or_default(),
            })
        })
}

/// Where `dev` is mounted already, from `proc/mounts` under `root` (whose paths are
/// inside the root too).
pub fn mounted_at(root: &Path, dev: &Path) -> Option<PathBuf> {
    let mounts = read_opt(&under(root, "proc/mounts"))?;
    let dev_real = std::fs::canonicalize(dev).ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (src, target) = (f.next()?, f.next()?);
        if !src.starts_with('/') {
            return None; // proc, tmpfs, ...
        }
        let same = std::fs::canonicalize(under(root, src)).is_ok_and(|s| s == dev_real);
        // /proc/mounts escapes spaces as \040.
        same.then(|| under(root, &target.replace("\\040", " ")))
    })
}

/// Runs `f` on the device's filesystem: where it is mounted already, else mounted
/// read-only on a private directory for the call.
pub fn with_mounted<T>(
    root: &Path,
    mounter: &dyn Mounter,
    dev: &Candidate,
    f: impl FnOnce(&Path) -> Result<T, VmediaError>,
) -> Result<T, VmediaError> {
    if let Some(path) = mounted_at(root, &dev.dev) {
        tracing::debug!(device = %dev.dev.display(), path = %path.display(), "already mounted");
        return f(&path);
    }
    let point = MountPoint::new("vmedia").map_err(io_err(&std::env::temp_dir()))?;
    let mut mounts = Mounts::new(mounter);
    let options = MountOptions {
        flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: None,
    };
    mounts.mount_with(
        &dev.dev,
        point.path(),
        MountKind::Fs(Some(dev.fstype.to_owned())),
        &options,
        Unmount::DetachWhenBusy,
    )?;
    let out = f(point.path());
    mounts.close()?;
    out
}

/// Reads a file of at most `limit` bytes; `Ok(None)` when it does not exist.
fn read_small(path: &Path, limit: u64) -> Result<Option<String>, VmediaError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    if text.len() as u64 > limit {
        return Err(VmediaError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(text))
}

/// The text of `parameters.txt` from the `ir-vfd-dev` device (or a "virtual media"
/// model), `Ok(None)` when there is no such device or file (IPA: `_get_vmedia_params`).
pub fn read_parameters(root: &Path, mounter: &dyn Mounter) -> Result<Option<String>, VmediaError> {
    read_parameters_within(root, mounter, USB_SCAN_WAIT)
}

/// How long a USB stick may take to show its disk: usb-storage waits `delay_use`
/// (1 s by default) before it scans, longer on a slow or emulated machine.
const USB_SCAN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// [`read_parameters`], waiting up to `wait` for the labelled device while a USB
/// mass-storage interface is bound (its disk may not be scanned yet). Without one,
/// nothing is waited for: Ironic's boot ISO alone carries no `parameters.txt`.
pub fn read_parameters_within(
    root: &Path,
    mounter: &dyn Mounter,
    wait: std::time::Duration,
) -> Result<Option<String>, VmediaError> {
    let deadline = std::time::Instant::now() + wait;
    let mut found = find_by_labels(root, &[PARAMETERS_LABEL]);
    while found.is_none() && usb_storage_bound(root) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
        found = find_by_labels(root, &[PARAMETERS_LABEL]);
    }
    let Some(dev) = found.or_else(|| find_by_model(root)) else {
        tracing::info!("no virtual media device with {PARAMETERS_FILE}");
        return Ok(None);
    };
    tracing::info!(device = %dev.dev.display(), "reading {PARAMETERS_FILE} from virtual media");
    with_mounted(root, mounter, &dev, |dir| {
        read_small(&dir.join(PARAMETERS_FILE), READ_LIMIT)
    })
}

/// Whether a USB interface is bound to the usb-storage driver.
pub fn usb_storage_bound(root: &Path) -> bool {
    list_dir_opt(&under(root, "sys/bus/usb/drivers/usb-storage"))
        .iter()
        .any(|name| name.contains(':'))
}

/// Files copied by [`copy_config`], as paths under the root.
pub type Copied = Vec<PathBuf>;

/// Copies the regular files of `etc/ironic-python-agent/` and
/// `etc/ironic-python-agent.d/` from `dir` (a mounted boot ISO) into the same
/// directories under `root` (IPA: `_copy_config_from`).
pub fn copy_config_from(dir: &Path, root: &Path) -> Result<Copied, VmediaError> {
    let mut copied = Vec::new();
    for rel in CONFIG_DIRS {
        let src = dir.join(rel);
        if !src.is_dir() {
            tracing::debug!(path = %src.display(), "not on the virtual media");
            continue;
        }
        let dest = under(root, rel);
        std::fs::create_dir_all(&dest).map_err(io_err(&dest))?;
        for name in list_dir_opt(&src) {
            let from = src.join(&name);
            let meta = std::fs::metadata(&from).map_err(io_err(&from))?;
            if !meta.is_file() {
                tracing::warn!(path = %from.display(), "not a regular file; not copied");
                continue;
            }
            if meta.len() > COPY_LIMIT {
                return Err(VmediaError::TooLarge {
                    path: from,
                    limit: COPY_LIMIT,
                });
            }
            let to = dest.join(&name);
            std::fs::copy(&from, &to).map_err(io_err(&to))?;
            // The ISO's modes (often 0444 or 0555) are not what a config file needs.
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(io_err(&to))?;
            tracing::info!(from = %from.display(), to = %to.display(), "copied configuration from virtual media");
            copied.push(to);
        }
    }
    Ok(copied)
}

/// Copies the agent configuration from the boot ISO into `root`, when there is one
/// (IPA: `copy_config_from_vmedia`; the caller checks `boot_method=vmedia`).
pub fn copy_config(root: &Path, mounter: &dyn Mounter) -> Result<Copied, VmediaError> {
    let Some(dev) = find_by_labels(root, CONFIG_LABELS) else {
        tracing::info!("no virtual media device with configuration");
        return Ok(Vec::new());
    };
    with_mounted(root, mounter, &dev, |dir| copy_config_from(dir, root))
}

/// The text of `openstack/latest/network_data.json` from a `config-2` virtual media
/// device; `Ok(None)` when there is no such device or file.
pub fn read_network_data(
    root: &Path,
    mounter: &dyn Mounter,
) -> Result<Option<String>, VmediaError> {
    let Some(dev) = find_by_labels(root, &[CONFIG_DRIVE_LABEL]) else {
        return Ok(None);
    };
    with_mounted(root, mounter, &dev, |dir| {
        read_small(&dir.join(crate::netconf::NETWORK_DATA_PATH), READ_LIMIT)
    })
}
