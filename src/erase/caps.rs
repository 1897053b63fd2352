//! What a block device offers for erasing in ranges: discard, secure discard and write
//! zeroes. Discard and write zeroes come from the kernel's queue limits in sysfs
//! (`queue/discard_max_bytes`, `queue/write_zeroes_max_bytes`; 0 means not offered),
//! read under a root so tests use fixture trees. Secure discard has no sysfs file, so
//! it is asked of the device itself (`sys::block::probe_secure_discard`, harmless).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::Serialize;

use crate::sys::block;

/// Longest queue attribute we accept (a decimal u64 and a newline).
const MAX_ATTR_LEN: usize = 64;

/// A capability that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// A sysfs queue attribute is missing or unreadable.
    #[error("reading {path}: {source}")]
    Read {
        /// The attribute's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs queue attribute does not hold a number.
    #[error("{path} holds {value:?}, not a byte count")]
    Parse {
        /// The attribute's path.
        path: PathBuf,
        /// What it held.
        value: String,
    },
    /// The secure-discard probe failed for another reason than "not offered".
    #[error("probing secure discard: {0}")]
    Probe(Errno),
}

/// The range-erase commands a device offers, with the kernel's per-command limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Caps {
    /// Largest discard the kernel sends in one command; 0: no discard.
    pub discard_max_bytes: u64,
    /// Largest write-zeroes command; 0: the device has none (BLKZEROOUT would make the
    /// kernel write zero pages itself).
    pub write_zeroes_max_bytes: u64,
    /// Whether BLKSECDISCARD is accepted.
    pub secure_discard: bool,
}

impl Caps {
    /// The capabilities of kernel block device `name` (`sda`, `nvme0n1p2`) from sysfs
    /// under `root`, and of the open device `dev` for secure discard.
    pub fn probe(root: &Path, name: &str, dev: &File) -> Result<Self, CapsError> {
        let limits = QueueLimits::read(root, name)?;
        let secure_discard = block::probe_secure_discard(dev).map_err(CapsError::Probe)?;
        Ok(Self {
            discard_max_bytes: limits.discard_max_bytes,
            write_zeroes_max_bytes: limits.write_zeroes_max_bytes,
            secure_discard,
        })
    }

    /// True when plain discard is offered.
    pub fn discard(&self) -> bool {
        self.discard_max_bytes > 0
    }

    /// True when the device has a write-zeroes command.
    pub fn write_zeroes(&self) -> bool {
        self.write_zeroes_max_bytes > 0
    }
}

/// The sysfs part of [`Caps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `queue/discard_max_bytes`.
    pub discard_max_bytes: u64,
    /// `queue/write_zeroes_max_bytes`.
    pub write_zeroes_max_bytes: u64,
}

impl QueueLimits {
    /// Reads the limits of `name` under `root`. A partition has no `queue/` of its
    /// own: its disk's limits apply (the partition's sysfs directory sits inside the
    /// disk's).
    pub fn read(root: &Path, name: &str) -> Result<Self, CapsError> {
        let queue = queue_dir(root, name);
        Ok(Self {
            discard_max_bytes: read_u64(&queue.join("discard_max_bytes"))?,
            write_zeroes_max_bytes: read_u64(&queue.join("write_zeroes_max_bytes"))?,
        })
    }
}

fn queue_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join("sys/class/block").join(name);
    let own = dir.join("queue");
    if own.exists() || !dir.join("partition").exists() {
        return own;
    }
    // sys/class/block/<part> links to .../block/<disk>/<part>: resolve the link, then
    // go up one level to the disk.
    match std::fs::canonicalize(&dir) {
        Ok(real) => real.parent().map_or(own.clone(), |disk| disk.join("queue")),
        Err(_) => own,
    }
}

fn read_u64(path: &Path) -> Result<u64, CapsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CapsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim();
    if value.len() > MAX_ATTR_LEN {
        return Err(CapsError::Parse {
            path: path.to_path_buf(),
            value: value.chars().take(MAX_ATTR_LEN).collect(),
        });
    }
    value.parse().map_err(|_| CapsError::Parse {
        path: path.to_path_buf(),
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A sysfs tree with disk `sda` (queue limits given) and its partition `sda1`,
    /// linked from `class/block` as the kernel does.
    fn tree(discard: &str, zeroes: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let disk = "sys/devices/pci0000:00/ata1/block/sda";
        write(
            t.path(),
            &format!("{disk}/queue/discard_max_bytes"),
            discard,
        );
        write(
            t.path(),
            &format!("{disk}/queue/write_zeroes_max_bytes"),
            zeroes,
        );
        write(t.path(), &format!("{disk}/sda1/partition"), "1\n");
        let class = t.path().join("sys/class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink("../../devices/pci0000:00/ata1/block/sda", class.join("sda"))
            .unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/ata1/block/sda/sda1",
            class.join("sda1"),
        )
        .unwrap();
        t
    }

    #[test]
    fn limits_of_a_disk_and_of_its_partition() {
        let t = tree("2199023255040\n", "0\n");
        let want = QueueLimits {
            discard_max_bytes: 2_199_023_255_040,
            write_zeroes_max_bytes: 0,
        };
        assert_eq!(QueueLimits::read(t.path(), "sda").unwrap(), want);
        assert_eq!(QueueLimits::read(t.path(), "sda1").unwrap(), want);
    }

    #[test]
    fn a_missing_or_garbled_attribute_is_an_error_naming_it() {
        let t = tree("lots\n", "0\n");
        let e = QueueLimits::read(t.path(), "sda").unwrap_err();
        assert!(matches!(e, CapsError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("discard_max_bytes"), "{e}");
        let e = QueueLimits::read(t.path(), "sdz").unwrap_err();
        assert!(matches!(e, CapsError::Read { .. }), "{e}");
    }

    #[test]
    fn zero_means_not_offered() {
        let c = Caps::default();
        assert!(!c.discard() && !c.write_zeroes() && !c.secure_discard);
        let c = Caps {
            discard_max_bytes: 1 << 30,
            write_zeroes_max_bytes: 1 << 20,
            secure_discard: false,
        };
        assert!(c.discard() && c.write_zeroes());
    }

    #[test]
    fn probing_a_regular_file_fails() {
        let t = tree("0\n", "0\n");
        let f = tempfile::tempfile().unwrap();
        let e = Caps::probe(t.path(), "sda", &f).unwrap_err();
        assert!(matches!(e, CapsError::Probe(Errno::ENOTTY)), "{e}");
    }
}
