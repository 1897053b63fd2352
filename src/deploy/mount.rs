//! Mounting for the deploy path: a [`Mounter`] trait (the kernel's `mount(2)` in
//! production, a recording fake in unit tests) and a [`Mounts`] stack that unmounts
//! everything it mounted, newest first, when it is dropped or closed.
//!
//! Nothing here decides *what* to mount; callers (the bootloader code) pick sources and
//! targets. Unmounting retries a few times because udev or a prober may still hold the
//! filesystem for a moment (IPA: `umount` with `attempts=3`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

/// Unmount attempts before giving up (IPA: 3).
const UMOUNT_ATTEMPTS: u32 = 3;
/// Pause between unmount attempts.
const UMOUNT_DELAY: Duration = Duration::from_millis(200);

/// What kind of mount to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A filesystem of the given type (`vfat`, `ext4`, `sysfs`, `efivarfs`); `None` lets
    /// the kernel try the types it knows, as `mount` without `-t` does for a block device.
    Fs(Option<String>),
    /// A (non-recursive) bind mount of an existing directory.
    Bind,
}

/// Mounts and unmounts; the production implementation is [`SysMounter`].
pub trait Mounter: Send + Sync {
    /// Mounts `source` on `target` (an existing directory).
    fn mount(&self, source: &Path, target: &Path, kind: &MountKind) -> io::Result<()>;
    /// Unmounts whatever is mounted on `target`.
    fn umount(&self, target: &Path) -> io::Result<()>;
}

/// `mount(2)` and `umount2(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysMounter;

/// Filesystem types tried, in order, when none is given (the ones a root or ESP holds).
const GUESS_TYPES: &[&str] = &["ext4", "xfs", "btrfs", "vfat", "ext3", "ext2"];

impl Mounter for SysMounter {
    fn mount(&self, source: &Path, target: &Path, kind: &MountKind) -> io::Result<()> {
        let none: Option<&str> = None;
        match kind {
            MountKind::Bind => nix::mount::mount(
                Some(source),
                target,
                none,
                // Not recursive (`mount -o bind`, as IPA does): submounts such as
                // /dev/pts would keep the bind busy at unmount time.
                MsFlags::MS_BIND,
                none,
            )
            .map_err(io::Error::from),
            MountKind::Fs(Some(fstype)) => nix::mount::mount(
                Some(source),
                target,
                Some(fstype.as_str()),
                MsFlags::empty(),
                none,
            )
            .map_err(io::Error::from),
            MountKind::Fs(None) => {
                let mut last = io::Error::from(io::ErrorKind::InvalidInput);
                for fstype in GUESS_TYPES {
                    match nix::mount::mount(
                        Some(source),
                        target,
                        Some(*fstype),
                        MsFlags::empty(),
                        none,
                    ) {
                        Ok(()) => return Ok(()),
                        // EINVAL: not this filesystem; ENODEV: type not in this kernel.
                        Err(e @ (nix::errno::Errno::EINVAL | nix::errno::Errno::ENODEV)) => {
                            last = e.into();
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(last)
            }
        }
    }

    fn umount(&self, target: &Path) -> io::Result<()> {
        // No lazy detach: it would report success while the filesystem is still busy.
        nix::mount::umount2(target, MntFlags::empty()).map_err(io::Error::from)
    }
}

/// A failed mount or unmount, naming both paths.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `mount` failed.
    #[error("mounting {source_path} on {target}: {error}")]
    Mount {
        /// What was mounted.
        source_path: PathBuf,
        /// Where.
        target: PathBuf,
        /// The system error.
        error: io::Error,
    },
    /// `umount` failed after the retries.
    #[error("unmounting {target} failed {attempts} times: {error}")]
    Umount {
        /// The mount point.
        target: PathBuf,
        /// Attempts made.
        attempts: u32,
        /// The last system error.
        error: io::Error,
    },
}

/// A stack of mounts made through one [`Mounter`]; unmounted newest first by
/// [`Mounts::close`] (reporting failures) or on drop (logging them).
pub struct Mounts<'a> {
    mounter: &'a dyn Mounter,
    stack: Vec<PathBuf>,
}

impl std::fmt::Debug for Mounts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounts")
            .field("stack", &self.stack)
            .finish()
    }
}

impl<'a> Mounts<'a> {
    /// An empty stack.
    pub fn new(mounter: &'a dyn Mounter) -> Self {
        Self {
            mounter,
            stack: Vec::new(),
        }
    }

    /// Mounts `source` on `target` and remembers it.
    pub fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        kind: MountKind,
    ) -> Result<(), MountError> {
        tracing::debug!(source = %source.display(), target = %target.display(), ?kind, "mount");
        self.mounter
            .mount(source, target, &kind)
            .map_err(|error| MountError::Mount {
                source_path: source.to_path_buf(),
                target: target.to_path_buf(),
                error,
            })?;
        self.stack.push(target.to_path_buf());
        Ok(())
    }

    /// Unmounts the newest mount.
    pub fn pop(&mut self) -> Result<(), MountError> {
        match self.stack.pop() {
            Some(target) => umount_retrying(self.mounter, &target),
            None => Ok(()),
        }
    }

    /// Unmounts everything, newest first; the first failure is returned after every
    /// other mount has been tried.
    pub fn close(mut self) -> Result<(), MountError> {
        self.unwind()
    }

    fn unwind(&mut self) -> Result<(), MountError> {
        let mut first = None;
        while let Some(target) = self.stack.pop() {
            if let Err(e) = umount_retrying(self.mounter, &target) {
                tracing::error!(error = %e, "unmount failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Mounts<'_> {
    fn drop(&mut self) {
        let _ = self.unwind();
    }
}

/// A fresh, private (0700) directory to mount on, removed on drop. Removal is
/// `rmdir`, never recursive, so a mount that failed to go away is not emptied.
#[derive(Debug)]
pub struct MountPoint {
    path: PathBuf,
}

impl MountPoint {
    /// Creates `<tmp>/ira-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("ira-{tag}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "mount point left behind");
        }
    }
}

fn umount_retrying(mounter: &dyn Mounter, target: &Path) -> Result<(), MountError> {
    let mut attempt = 1;
    loop {
        match mounter.umount(target) {
            Ok(()) => {
                tracing::debug!(target = %target.display(), "unmounted");
                return Ok(());
            }
            Err(error) if attempt >= UMOUNT_ATTEMPTS => {
                return Err(MountError::Umount {
                    target: target.to_path_buf(),
                    attempts: attempt,
                    error,
                })
            }
            Err(error) => {
                tracing::debug!(target = %target.display(), %error, attempt, "unmount failed, retrying");
                std::thread::sleep(UMOUNT_DELAY);
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
        busy_umounts: Mutex<u32>,
    }

    impl Mounter for Recorder {
        fn mount(&self, source: &Path, target: &Path, _kind: &MountKind) -> io::Result<()> {
            if source == Path::new("/bad") {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("mount {}", target.display()));
            Ok(())
        }
        fn umount(&self, target: &Path) -> io::Result<()> {
            let mut busy = self.busy_umounts.lock().unwrap();
            if *busy > 0 {
                *busy -= 1;
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("umount {}", target.display()));
            Ok(())
        }
    }

    #[test]
    fn unmounts_newest_first_on_drop_and_retries_busy() {
        let r = Recorder::default();
        *r.busy_umounts.lock().unwrap() = 1;
        {
            let mut m = Mounts::new(&r);
            m.mount(Path::new("/dev/x"), Path::new("/a"), MountKind::Fs(None))
                .unwrap();
            m.mount(Path::new("/dev"), Path::new("/a/dev"), MountKind::Bind)
                .unwrap();
            let err = m
                .mount(Path::new("/bad"), Path::new("/a/b"), MountKind::Bind)
                .unwrap_err();
            assert!(err.to_string().contains("/bad"), "{err}");
        }
        assert_eq!(
            *r.log.lock().unwrap(),
            ["mount /a", "mount /a/dev", "umount /a/dev", "umount /a"]
        );
    }

    #[test]
    fn close_reports_an_unmount_that_keeps_failing() {
        let r = Recorder::default();
        *r.busy_umounts.lock().unwrap() = UMOUNT_ATTEMPTS;
        let mut m = Mounts::new(&r);
        m.mount(Path::new("/dev/x"), Path::new("/a"), MountKind::Fs(None))
            .unwrap();
        let err = m.close().unwrap_err();
        assert!(
            matches!(err, MountError::Umount { attempts: 3, .. }),
            "{err}"
        );
    }
}
