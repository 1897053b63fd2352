//! Every mount the agent makes: a [`Mounter`] trait (the kernel's `mount(2)` in
//! production, a recording fake in tests) and a [`Mounts`] stack that unmounts
//! everything it mounted, newest first, when it is dropped or closed.
//!
//! Nothing here decides *what* to mount; callers (the bootloader code, the instance
//! root) pick sources, targets, flags, data and the unmount policy. Unmounting retries
//! because udev or a prober may still hold the filesystem for a moment (IPA: `umount`
//! with `attempts=3`); only a caller that asks for it detaches lazily at the end.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

/// Unmount attempts before giving up (IPA: 3).
const UMOUNT_ATTEMPTS: u32 = 3;
/// Pause between unmount attempts.
const UMOUNT_DELAY: Duration = Duration::from_millis(200);
/// Attempts while busy before a [`Unmount::DetachWhenBusy`] mount is detached.
const DETACH_ATTEMPTS: u32 = 10;
/// Pause between those attempts.
const DETACH_DELAY: Duration = Duration::from_millis(100);

/// Mount flags and filesystem data beyond the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags (`MS_NOSUID | MS_NODEV | MS_NOEXEC` for a tenant's filesystem).
    pub flags: MsFlags,
    /// Filesystem-specific data (`nouuid` for XFS).
    pub data: Option<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            flags: MsFlags::empty(),
            data: None,
        }
    }
}

/// What to do with a mount that stays busy at unmount time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unmount {
    /// Retry, then report the failure: the filesystem stays mounted.
    #[default]
    Strict,
    /// Retry while busy, then detach it lazily (`umount -l`): it goes away once the
    /// last user lets go, and the agent does not keep a tenant's filesystem attached.
    DetachWhenBusy,
}

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
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        kind: &MountKind,
        options: &MountOptions,
    ) -> io::Result<()>;
    /// Unmounts whatever is mounted on `target`; `detach`: lazily (`MNT_DETACH`).
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
}

/// `mount(2)` and `umount2(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysMounter;

/// Filesystem types tried, in order, when none is given (the ones a root or ESP holds).
const GUESS_TYPES: &[&str] = &["ext4", "xfs", "btrfs", "vfat", "ext3", "ext2"];

impl Mounter for SysMounter {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        kind: &MountKind,
        options: &MountOptions,
    ) -> io::Result<()> {
        let none: Option<&str> = None;
        let data = options.data.as_deref();
        let flags = options.flags;
        match kind {
            MountKind::Bind => nix::mount::mount(
                Some(source),
                target,
                none,
                // Not recursive (`mount -o bind`, as IPA does): submounts such as
                // /dev/pts would keep the bind busy at unmount time.
                MsFlags::MS_BIND | flags,
                data,
            )
            .map_err(io::Error::from),
            MountKind::Fs(Some(fstype)) => {
                nix::mount::mount(Some(source), target, Some(fstype.as_str()), flags, data)
                    .map_err(io::Error::from)
            }
            MountKind::Fs(None) => {
                let mut last = io::Error::from(io::ErrorKind::InvalidInput);
                for fstype in GUESS_TYPES {
                    match nix::mount::mount(Some(source), target, Some(*fstype), flags, data) {
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

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        // Lazy detach only when asked: it reports success while the filesystem is busy.
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags).map_err(io::Error::from)
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
    stack: Vec<(PathBuf, Unmount)>,
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

    /// Mounts `source` on `target` with no flags and the strict unmount policy.
    pub fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        kind: MountKind,
    ) -> Result<(), MountError> {
        self.mount_with(
            source,
            target,
            kind,
            &MountOptions::default(),
            Unmount::Strict,
        )
    }

    /// Mounts `source` on `target` with `options` and remembers how to unmount it.
    pub fn mount_with(
        &mut self,
        source: &Path,
        target: &Path,
        kind: MountKind,
        options: &MountOptions,
        policy: Unmount,
    ) -> Result<(), MountError> {
        tracing::debug!(source = %source.display(), target = %target.display(), ?kind,
            ?options, ?policy, "mount");
        self.mounter
            .mount(source, target, &kind, options)
            .map_err(|error| MountError::Mount {
                source_path: source.to_path_buf(),
                target: target.to_path_buf(),
                error,
            })?;
        self.stack.push((target.to_path_buf(), policy));
        Ok(())
    }

    /// Unmounts the newest mount.
    pub fn pop(&mut self) -> Result<(), MountError> {
        match self.stack.pop() {
            Some((target, policy)) => umount_retrying(self.mounter, &target, policy),
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
        while let Some((target, policy)) = self.stack.pop() {
            if let Err(e) = umount_retrying(self.mounter, &target, policy) {
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

fn umount_retrying(
    mounter: &dyn Mounter,
    target: &Path,
    policy: Unmount,
) -> Result<(), MountError> {
    let (attempts, delay) = match policy {
        Unmount::Strict => (UMOUNT_ATTEMPTS, UMOUNT_DELAY),
        Unmount::DetachWhenBusy => (DETACH_ATTEMPTS, DETACH_DELAY),
    };
    let mut attempt = 1;
    loop {
        match mounter.umount(target, false) {
            Ok(()) => {
                tracing::debug!(target = %target.display(), "unmounted");
                return Ok(());
            }
            Err(error)
                if policy == Unmount::DetachWhenBusy
                    && error.raw_os_error() == Some(libc::EBUSY)
                    && attempt >= attempts =>
            {
                tracing::warn!(target = %target.display(), "mount still busy; detaching it");
                return mounter
                    .umount(target, true)
                    .map_err(|error| MountError::Umount {
                        target: target.to_path_buf(),
                        attempts: attempt + 1,
                        error,
                    });
            }
            Err(error)
                if attempt >= attempts
                    || (policy == Unmount::DetachWhenBusy
                        && error.raw_os_error() != Some(libc::EBUSY)) =>
            {
                return Err(MountError::Umount {
                    target: target.to_path_buf(),
                    attempts: attempt,
                    error,
                })
            }
            Err(error) => {
                tracing::debug!(target = %target.display(), %error, attempt, "unmount failed, retrying");
                std::thread::sleep(delay);
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
        fn mount(
            &self,
            source: &Path,
            target: &Path,
            _kind: &MountKind,
            options: &MountOptions,
        ) -> io::Result<()> {
            if source == Path::new("/bad") {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let mut line = format!("mount {}", target.display());
            if !options.flags.is_empty() || options.data.is_some() {
                line += &format!(" {:?} {:?}", options.flags, options.data);
            }
            self.log.lock().unwrap().push(line);
            Ok(())
        }
        fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
            let mut busy = self.busy_umounts.lock().unwrap();
            if detach {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("detach {}", target.display()));
                return Ok(());
            }
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

    #[test]
    fn a_detaching_mount_passes_its_flags_and_detaches_when_busy_to_the_end() {
        let r = Recorder::default();
        *r.busy_umounts.lock().unwrap() = u32::MAX;
        let options = MountOptions {
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: Some("nouuid".into()),
        };
        let mut m = Mounts::new(&r);
        m.mount_with(
            Path::new("/dev/x1"),
            Path::new("/r"),
            MountKind::Fs(Some("xfs".into())),
            &options,
            Unmount::DetachWhenBusy,
        )
        .unwrap();
        m.close().unwrap();
        let log = r.log.lock().unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log[0].contains("MS_NOSUID") && log[0].contains("MS_NODEV"),
            "{log:?}"
        );
        assert!(
            log[0].contains("MS_NOEXEC") && log[0].contains("nouuid"),
            "{log:?}"
        );
        assert_eq!(log[1], "detach /r");
    }

    #[test]
    fn a_strict_mount_is_never_detached() {
        let r = Recorder::default();
        *r.busy_umounts.lock().unwrap() = u32::MAX;
        let mut m = Mounts::new(&r);
        m.mount(Path::new("/dev/x"), Path::new("/a"), MountKind::Fs(None))
            .unwrap();
        assert!(m.close().is_err());
        assert!(!r
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("detach")));
    }
}
