//! Partition device nodes: whether the kernel will create them for a disk, and the one
//! bounded wait for device nodes to appear.
//!
//! After a table is written the kernel is asked to re-read it (BLKRRPART). Its answer
//! says whether nodes can follow: EINVAL means the device does no partition scanning (a
//! loop device attached without `LO_FLAGS_PARTSCAN`, a partition, a disk made without
//! partition minors), so no node of the new table appears however long one waits; sysfs
//! names the case in the log. Only when nodes can appear is there a wait (IPA waits for
//! udev after `partprobe` the same way).

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::sys::block::{self, IoctlError};

/// How long partition device nodes may take to appear after a re-read (IPA:
/// `[disk_utils]partition_detection_attempts` = 3, 1 s apart).
pub const NODE_WAIT: Duration = Duration::from_secs(3);
/// How often a wait looks again.
const NODE_POLL: Duration = Duration::from_millis(20);

/// Whether partition device nodes of a disk can appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutlook {
    /// The kernel read the table (or may still, after a busy re-read): worth a wait.
    Expected,
    /// The kernel said it will not create them; the reason, for messages.
    NotCreated(String),
}

/// Flushes `disk`, asks the kernel to re-read its table and decides from the answer
/// whether partition nodes can appear. Logs the outcome once; a failed re-read is never
/// an error (IPA only warns when `partprobe` fails: callers read the disk itself).
pub fn reread(disk: &File, device: &Path, sysroot: &Path) -> NodeOutlook {
    let answer = block::rescan(disk);
    let outlook = outlook(&answer, device, sysroot);
    match (&answer, &outlook) {
        (Ok(()), _) => {}
        (Err(_), NodeOutlook::NotCreated(reason)) => tracing::info!(
            device = %device.display(), %reason,
            "the kernel does not create partition nodes for this device; not waiting for them"
        ),
        (Err(e), NodeOutlook::Expected) => tracing::warn!(
            device = %device.display(), error = %e, "re-reading the partition table failed"
        ),
    }
    outlook
}

/// What a re-read's answer means for the nodes of `device` (`/dev/...`, whose sysfs
/// entry is read under `sysroot`).
pub fn outlook(answer: &Result<(), IoctlError>, device: &Path, sysroot: &Path) -> NodeOutlook {
    match answer {
        Err(IoctlError::Reread(Errno::EINVAL)) => NodeOutlook::NotCreated(format!(
            "BLKRRPART: EINVAL, {}",
            no_scan_reason(device, sysroot)
        )),
        _ => NodeOutlook::Expected,
    }
}

/// Why sysfs says the kernel does not scan `device` for partitions.
fn no_scan_reason(device: &Path, sysroot: &Path) -> &'static str {
    let Some(name) = device.file_name() else {
        return "no partition scanning on this device";
    };
    let sys = sysroot.join("sys/class/block").join(name);
    let attr = |f: &str| std::fs::read_to_string(sys.join(f)).ok();
    if attr("loop/partscan").is_some_and(|v| v.trim() == "0") {
        "a loop device attached without partition scanning"
    } else if sys.join("partition").exists() {
        "a partition holds no partition table of its own"
    } else if attr("ext_range").is_some_and(|v| v.trim() == "1") {
        "the disk has no minor numbers for partitions"
    } else {
        "no partition scanning on this device"
    }
}

/// Whether `path` is a block device now.
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Polls `ready` until it holds or `timeout` has passed; whether it held.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(NODE_POLL);
    }
}

/// Waits up to [`NODE_WAIT`] until each of `paths` is a block device, only when the
/// kernel said nodes can appear; returns the indices of those that are not.
pub fn await_block_devices(paths: &[PathBuf], outlook: &NodeOutlook) -> Vec<usize> {
    let missing = || -> Vec<usize> {
        (0..paths.len())
            .filter(|&i| !is_block_device(&paths[i]))
            .collect()
    };
    if *outlook == NodeOutlook::Expected {
        wait_until(NODE_WAIT, || missing().is_empty());
    }
    missing()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einval_means_no_nodes_and_sysfs_names_the_case() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys/class/block/loop7/loop");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("partscan"), "0\n").unwrap();
        let einval = Err(IoctlError::Reread(Errno::EINVAL));
        let dev = Path::new("/dev/loop7");
        match outlook(&einval, dev, root.path()) {
            NodeOutlook::NotCreated(why) => assert!(why.contains("loop device"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outlook(&einval, Path::new("/dev/vdz"), root.path()),
            NodeOutlook::NotCreated(_)
        ));
        for answer in [Ok(()), Err(IoctlError::Reread(Errno::EBUSY))] {
            assert_eq!(outlook(&answer, dev, root.path()), NodeOutlook::Expected);
        }
    }

    #[test]
    fn no_wait_when_nodes_cannot_appear() {
        let dir = tempfile::tempdir().unwrap();
        let paths = [dir.path().join("p1"), PathBuf::from("/dev/null")];
        let started = Instant::now();
        let missing = await_block_devices(&paths, &NodeOutlook::NotCreated("test".into()));
        assert!(started.elapsed() < Duration::from_millis(500));
        // /dev/null is a character device, not a block device.
        assert_eq!(missing, [0, 1]);
    }

    #[test]
    fn wait_until_gives_up_after_the_timeout() {
        let started = Instant::now();
        let mut calls = 0;
        assert!(!wait_until(Duration::from_millis(100), || {
            calls += 1;
            false
        }));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(calls >= 2);
        assert!(wait_until(Duration::from_secs(5), || true));
    }
}
