//! `LoopDev`: the one way tests get a block device. A loop device over a sparse temp
//! file (or over a file or device that exists already), set up by [`LoopBuilder`] and
//! detached on drop by its own device path, so tests exercise real block devices
//! without touching a disk of this machine.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a loop device reads and writes.
#[derive(Debug)]
enum Backing {
    /// A sparse temp file the device owns, removed with it.
    Temp(tempfile::NamedTempFile),
    /// A file or device owned elsewhere (for example a slice of another loop device).
    Borrowed(PathBuf),
}

impl Backing {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(f) => f.path(),
            Self::Borrowed(p) => p,
        }
    }
}

/// How to attach a loop device: the `losetup` options, set before [`LoopBuilder::attach`].
#[derive(Debug)]
#[must_use = "a builder attaches nothing until `attach`"]
pub struct LoopBuilder {
    backing: Backing,
    sector_size: Option<u32>,
    partscan: bool,
    direct_io: bool,
    read_only: bool,
    offset: Option<u64>,
    size_limit: Option<u64>,
}

impl LoopBuilder {
    /// The backing file, to prepare (partition, format) before attaching.
    pub fn file(&self) -> &Path {
        self.backing.path()
    }

    /// Logical sector size of the device (`--sector-size`); 512 unless set.
    pub fn sector_size(mut self, bytes: u32) -> Self {
        self.sector_size = Some(bytes);
        self
    }

    /// Whether the kernel scans the partition table (`--partscan`); off unless set.
    pub fn partscan(mut self, on: bool) -> Self {
        self.partscan = on;
        self
    }

    /// Whether the device bypasses the page cache of the backing file (`--direct-io`);
    /// on unless set.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Whether the device refuses writes (`--read-only`); off unless set.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// The device starts `bytes` into the backing file (`--offset`).
    pub fn offset(mut self, bytes: u64) -> Self {
        self.offset = Some(bytes);
        self
    }

    /// The device ends `bytes` after its start (`--sizelimit`).
    pub fn size_limit(mut self, bytes: u64) -> Self {
        self.size_limit = Some(bytes);
        self
    }

    /// Attaches the first free loop device with these options; panics when losetup fails.
    pub fn attach(self) -> LoopDev {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if self.partscan {
            cmd.arg("--partscan");
        }
        if self.direct_io {
            cmd.arg("--direct-io=on");
        }
        if self.read_only {
            cmd.arg("--read-only");
        }
        if let Some(bytes) = self.sector_size {
            cmd.arg("--sector-size").arg(bytes.to_string());
        }
        if let Some(bytes) = self.offset {
            cmd.arg("--offset").arg(bytes.to_string());
        }
        if let Some(bytes) = self.size_limit {
            cmd.arg("--sizelimit").arg(bytes.to_string());
        }
        let out = cmd
            .arg(self.backing.path())
            .output()
            .expect("run losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup {:?} failed (needs root and loop support): {}",
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDev {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            backing: self.backing,
        }
    }
}

/// A loop device owned by one test.
#[derive(Debug)]
pub struct LoopDev {
    dev: PathBuf,
    backing: Backing,
}

impl LoopDev {
    /// Attaches a loop device over a sparse file of `size` bytes, with the builder's
    /// defaults (direct I/O, no partition scanning, 512-byte sectors).
    pub fn new(size: u64) -> Self {
        Self::builder(size).attach()
    }

    /// A builder for a loop device over a new sparse temp file of `size` bytes.
    pub fn builder(size: u64) -> LoopBuilder {
        let backing = tempfile::NamedTempFile::new().expect("backing file");
        backing.as_file().set_len(size).expect("size backing file");
        Self::builder_over(Backing::Temp(backing))
    }

    /// A builder for a loop device over `path`, a file or device that outlives it.
    pub fn over(path: &Path) -> LoopBuilder {
        Self::builder_over(Backing::Borrowed(path.to_path_buf()))
    }

    fn builder_over(backing: Backing) -> LoopBuilder {
        LoopBuilder {
            backing,
            sector_size: None,
            partscan: false,
            direct_io: true,
            read_only: false,
            offset: None,
            size_limit: None,
        }
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.dev
    }

    /// `/dev/loopN` as a string, for command lines and allow-lists.
    pub fn path_str(&self) -> &str {
        self.dev.to_str().expect("UTF-8 device path")
    }

    /// `loopN`.
    pub fn name(&self) -> String {
        self.dev
            .file_name()
            .expect("device name")
            .to_string_lossy()
            .into_owned()
    }

    /// The node of partition `n`, `/dev/loopNpn` (it exists only once the kernel or
    /// user space created it).
    pub fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    /// The backing file (or device), to check what reached it past the loop device.
    pub fn file(&self) -> &Path {
        self.backing.path()
    }

    /// The `len` bytes at `offset` of the device.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(len).expect("length fits in memory")];
        File::open(&self.dev)
            .expect("open loop device")
            .read_exact_at(&mut v, offset)
            .expect("read loop device");
        v
    }

    /// The device's size in bytes, as the kernel reports it.
    pub fn size(&self) -> u64 {
        let out = Command::new("blockdev")
            .arg("--getsize64")
            .arg(&self.dev)
            .output()
            .expect("run blockdev");
        assert!(out.status.success(), "blockdev --getsize64 failed");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("size in bytes")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // A read-only flag set with BLKROSET stays on the loop number after detaching:
        // clear it, or the next test that gets this number could not write.
        let _ = Command::new("blockdev")
            .arg("--setrw")
            .arg(&self.dev)
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
