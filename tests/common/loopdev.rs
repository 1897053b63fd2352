//! `LoopDev`: a loop device over a sparse temp file, attached with `losetup
//! --direct-io=on` and detached on drop, so tests exercise real block devices without
//! touching a disk of this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device owned by one test.
#[derive(Debug)]
pub struct LoopDev {
    dev: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl LoopDev {
    /// Attaches a new loop device over a sparse file of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self::attach(size, false)
    }

    /// Like [`LoopDev::new`], with partition scanning on (`losetup --partscan`).
    pub fn with_partscan(size: u64) -> Self {
        Self::attach(size, true)
    }

    fn attach(size: u64, partscan: bool) -> Self {
        let backing = tempfile::NamedTempFile::new().expect("backing file");
        backing.as_file().set_len(size).expect("size backing file");
        let mut args = vec!["--find", "--show", "--direct-io=on"];
        if partscan {
            args.push("--partscan");
        }
        let out = Command::new("losetup")
            .args(&args)
            .arg(backing.path())
            .output()
            .expect("run losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup failed (needs root and loop support): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Self {
            dev,
            _backing: backing,
        }
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.dev
    }

    /// `loopN`.
    pub fn name(&self) -> String {
        self.dev
            .file_name()
            .expect("device name")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
