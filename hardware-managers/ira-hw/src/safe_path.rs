//! Files and directories strictly inside a root directory (a mounted instance
//! filesystem), for steps that change files in the instance.
//!
//! A tenant's filesystem is hostile: it may hold `etc -> /etc`, `x -> ../../..`, device
//! nodes or FIFOs. Every lookup here goes through `openat2(2)` with `RESOLVE_IN_ROOT`
//! (the root directory acts as `/` for absolute links and `..`, so nothing resolves
//! outside it), `RESOLVE_NO_MAGICLINKS` and `RESOLVE_NO_XDEV`. Paths given by the caller
//! are checked lexically first: `..`, `.` and NUL bytes are refused outright rather than
//! clamped. Only regular files are written; a FIFO or device node in the way is an
//! error, never opened for blocking I/O. Kernels before 5.6 lack `openat2`: the calls
//! then fail (fail closed) instead of falling back to unchecked paths.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Mode of directories created on the way to a file when none is asked for.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// Mode of new files when none is asked for (what `open()` gives under umask 022).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Why an operation inside the root failed.
#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    /// The requested path is not a clean relative path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call on `path` (relative to the root) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path inside the root.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The target exists but is not a regular file (a FIFO, device node, directory...).
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The path inside the root.
        path: String,
    },
}

impl SafePathError {
    fn io(op: &'static str, path: &str, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source: source.into(),
        }
    }

    /// True when the error means "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A relative path inside a root: non-empty normal components only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    parts: Vec<String>,
}

impl RelPath {
    /// Parses `path` (leading `/` allowed, repeated `/` ignored); refuses `..`, `.`,
    /// NUL bytes and an empty path.
    pub fn parse(path: &str) -> Result<Self, SafePathError> {
        let invalid = |reason| SafePathError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut parts = Vec::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match part {
                ".." => return Err(invalid("'..' is not allowed")),
                "." => return Err(invalid("'.' is not allowed")),
                p => parts.push(p.to_owned()),
            }
        }
        if parts.is_empty() {
            return Err(invalid("names no file"));
        }
        Ok(Self { parts })
    }

    /// The components, outermost first.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The path without its last component (`None` for a file directly in the root).
    pub fn parent(&self) -> Option<Self> {
        (self.parts.len() > 1).then(|| Self {
            parts: self.parts[..self.parts.len() - 1].to_vec(),
        })
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.parts.last().expect("a RelPath is never empty")
    }

    /// `a/b/c`, without a leading slash.
    pub fn as_string(&self) -> String {
        self.parts.join("/")
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.parts.join("/"))
    }
}

/// How a file is written by [`RootDir::create_file`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Permission bits set on the file after writing (kept as they are when `None`,
    /// [`DEFAULT_FILE_MODE`] for a new file).
    pub mode: Option<u32>,
    /// Permission bits of the file's directory, applied only when it was created here
    /// (as IPA's `inject_files` does; parents created on the way get the default).
    pub dirmode: Option<u32>,
    /// Owner uid set on the file.
    pub owner: Option<u32>,
    /// Group gid set on the file.
    pub group: Option<u32>,
}

/// An open root directory; every path below resolves inside it.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The resolution every lookup uses.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

impl RootDir {
    /// Opens `root` (a directory on this machine) as the root of later lookups.
    pub fn open(root: &Path) -> Result<Self, SafePathError> {
        let shown = root.display().to_string();
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC);
        let fd = openat2(nix::fcntl::AT_FDCWD, root, how)
            .map_err(|e| SafePathError::io("opening root", &shown, e))?;
        Ok(Self {
            fd,
            path: root.to_path_buf(),
        })
    }

    /// The root's path on this machine (for messages only; never joined with
    /// untrusted names).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_at(&self, rel: &RelPath, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(resolve());
        openat2(self.fd.as_fd(), rel.as_string().as_str(), how)
    }

    /// Opens the directory `rel` (following links inside the root).
    fn open_dir(&self, rel: &RelPath) -> nix::Result<OwnedFd> {
        self.open_at(rel, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
    }

    /// Whether `path` is a directory inside the root (links followed inside it).
    pub fn is_dir(&self, path: &str) -> Result<bool, SafePathError> {
        let rel = RelPath::parse(path)?;
        match self.open_dir(&rel) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(SafePathError::io("looking up", &rel.to_string(), e)),
        }
    }

    /// Creates the directory `rel` and its missing parents; returns whether `rel`
    /// itself was created. New parents get [`DEFAULT_DIR_MODE`], `rel` gets `mode`.
    pub fn create_dir_all(&self, rel: &RelPath, mode: Option<u32>) -> Result<bool, SafePathError> {
        let mut created_last = false;
        let mut parent: Option<OwnedFd> = None;
        for depth in 1..=rel.parts.len() {
            let prefix = RelPath {
                parts: rel.parts[..depth].to_vec(),
            };
            let shown = prefix.to_string();
            let is_last = depth == rel.parts.len();
            created_last = false;
            let fd = match self.open_dir(&prefix) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    let bits = if is_last { mode } else { None }.unwrap_or(DEFAULT_DIR_MODE);
                    let at = parent.as_ref().map_or(self.fd.as_fd(), |p| p.as_fd());
                    // Created by name in the already resolved parent, then looked up
                    // again from the root: a link raced in its place cannot lead out.
                    mkdirat(at, prefix.file_name(), Mode::from_bits_truncate(bits))
                        .map_err(|e| SafePathError::io("creating directory", &shown, e))?;
                    created_last = true;
                    let fd = self
                        .open_dir(&prefix)
                        .map_err(|e| SafePathError::io("opening directory", &shown, e))?;
                    // mkdir applies the umask; the asked-for mode is set exactly.
                    set_mode(&fd, &prefix, bits)?;
                    fd
                }
                Err(e) => return Err(SafePathError::io("opening directory", &shown, e)),
            };
            parent = Some(fd);
        }
        Ok(created_last)
    }

    /// Creates (or truncates) the regular file `path`, creating missing directories,
    /// and returns it open for writing. Apply `opts` with [`RootDir::finish_file`]
    /// once the content is written, or use [`RootDir::write_file`].
    pub fn create_file(&self, path: &str, opts: &FileOptions) -> Result<File, SafePathError> {
        let rel = RelPath::parse(path)?;
        if let Some(dir) = rel.parent() {
            self.create_dir_all(&dir, opts.dirmode)?;
        }
        let shown = rel.to_string();
        // O_NONBLOCK: a FIFO planted at the path must not block the agent; it is
        // refused below anyway. No O_TRUNC yet: only a regular file may be truncated.
        let fd = self
            .open_at(
                &rel,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                DEFAULT_FILE_MODE,
            )
            .map_err(|e| SafePathError::io("opening for writing", &shown, e))?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| SafePathError::io("inspecting", &shown, e))?;
        if !meta.file_type().is_file() {
            return Err(SafePathError::NotRegular { path: shown });
        }
        file.set_len(0)
            .map_err(|e| SafePathError::io("truncating", &shown, e))?;
        Ok(file)
    }

    /// Flushes `file` (from [`RootDir::create_file`]) and sets its mode and owner.
    pub fn finish_file(
        &self,
        path: &str,
        file: File,
        opts: &FileOptions,
    ) -> Result<(), SafePathError> {
        let shown = RelPath::parse(path)?.to_string();
        if opts.owner.is_some() || opts.group.is_some() {
            std::os::unix::fs::fchown(&file, opts.owner, opts.group)
                .map_err(|e| SafePathError::io("changing owner of", &shown, e))?;
        }
        // After chown, which clears set-id bits the mode may ask for.
        if let Some(mode) = opts.mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| SafePathError::io("changing mode of", &shown, e))?;
        }
        file.sync_all()
            .map_err(|e| SafePathError::io("flushing", &shown, e))
    }

    /// Writes `content` to the regular file `path` (created with its directories).
    pub fn write_file(
        &self,
        path: &str,
        content: &[u8],
        opts: &FileOptions,
    ) -> Result<(), SafePathError> {
        let mut file = self.create_file(path, opts)?;
        file.write_all(content)
            .map_err(|e| SafePathError::io("writing", path, e))?;
        self.finish_file(path, file, opts)
    }

    /// Removes the file (or link) `path`; `Ok(false)` when it did not exist.
    pub fn remove_file(&self, path: &str) -> Result<bool, SafePathError> {
        let rel = RelPath::parse(path)?;
        let shown = rel.to_string();
        // The entry itself is removed, never what a link points to.
        let dir = match rel.parent() {
            Some(parent) => match self.open_dir(&parent) {
                Ok(fd) => Some(fd),
                Err(Errno::ENOENT) => return Ok(false),
                Err(e) => return Err(SafePathError::io("opening directory of", &shown, e)),
            },
            None => None,
        };
        let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        match unlinkat(at, rel.file_name(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(SafePathError::io("removing", &shown, e)),
        }
    }

    /// Reads the regular file `path`, at most `limit` bytes (more is an error).
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>, SafePathError> {
        let rel = RelPath::parse(path)?;
        let shown = rel.to_string();
        let fd = self
            .open_at(
                &rel,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                0,
            )
            .map_err(|e| SafePathError::io("opening", &shown, e))?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| SafePathError::io("inspecting", &shown, e))?;
        if !meta.file_type().is_file() {
            return Err(SafePathError::NotRegular { path: shown });
        }
        let mut out = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| SafePathError::io("reading", &shown, e))?;
        if out.len() as u64 > limit {
            return Err(SafePathError::io(
                "reading",
                &shown,
                std::io::Error::other(format!("larger than {limit} bytes")),
            ));
        }
        Ok(out)
    }
}

/// Sets the permission bits of an `O_PATH` directory handle through its own open.
fn set_mode(fd: &OwnedFd, rel: &RelPath, bits: u32) -> Result<(), SafePathError> {
    // fchmod does not work on O_PATH handles; reopen the same directory read-only
    // through /proc-free means: openat2 of "." relative to the handle itself.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let dir = openat2(fd.as_fd(), ".", how)
        .map_err(|e| SafePathError::io("opening directory", &rel.to_string(), e))?;
    File::from(dir)
        .set_permissions(std::fs::Permissions::from_mode(bits & 0o7777))
        .map_err(|e| SafePathError::io("changing mode of", &rel.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ira-hw-safe-path-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rel_path_refuses_dot_dot_and_empty() {
        assert_eq!(
            RelPath::parse("/etc//hosts").unwrap().parts(),
            ["etc", "hosts"]
        );
        for bad in ["", "/", "//", "../x", "etc/../../x", "a/./b", "a\0b"] {
            assert!(
                matches!(RelPath::parse(bad), Err(SafePathError::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_string(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.to_string(), "/a/b/c");
        assert!(RelPath::parse("a").unwrap().parent().is_none());
    }

    #[test]
    fn writes_modes_and_dirmode_inside() {
        let base = tmp("modes");
        let root = RootDir::open(&base).unwrap();
        let opts = FileOptions {
            mode: Some(0o600),
            dirmode: Some(0o700),
            ..FileOptions::default()
        };
        root.write_file("/new/dir/file", b"hello", &opts).unwrap();
        let meta = std::fs::metadata(base.join("new/dir/file")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(base.join("new/dir/file")).unwrap(), b"hello");
        let leaf = std::fs::metadata(base.join("new/dir")).unwrap();
        assert_eq!(leaf.mode() & 0o7777, 0o700);
        let mid = std::fs::metadata(base.join("new")).unwrap();
        assert_eq!(mid.mode() & 0o7777, DEFAULT_DIR_MODE);
        // An existing directory keeps its mode; a shorter rewrite truncates.
        root.write_file("new/dir/file", b"hi", &FileOptions::default())
            .unwrap();
        assert_eq!(std::fs::read(base.join("new/dir/file")).unwrap(), b"hi");
        assert_eq!(
            std::fs::metadata(base.join("new/dir/file")).unwrap().mode() & 0o7777,
            0o600
        );
        assert_eq!(root.read_file("new/dir/file", 2).unwrap(), b"hi");
        assert!(root.read_file("new/dir/file", 1).is_err());
        assert!(root.remove_file("new/dir/file").unwrap());
        assert!(!root.remove_file("new/dir/file").unwrap());
        assert!(!base.join("new/dir/file").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let outside = tmp("outside");
        let base = tmp("root");
        std::fs::create_dir(base.join("real")).unwrap();
        // Absolute and climbing links, as a hostile image would carry them.
        symlink(&outside, base.join("abs")).unwrap();
        symlink("../../../../../../..", base.join("up")).unwrap();
        symlink(outside.join("victim"), base.join("leaf")).unwrap();
        std::fs::write(outside.join("victim"), b"original").unwrap();
        let root = RootDir::open(&base).unwrap();
        let o = FileOptions::default();
        for path in ["abs/x", "up/x", "up/up/x", "leaf"] {
            // Each write either fails or lands inside the root, never outside it.
            let _ = root.write_file(path, b"pwned", &o);
        }
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
        assert!(!outside.join("x").exists());
        // "up" resolves to the root itself, so up/x is the root's x.
        assert_eq!(std::fs::read(base.join("x")).unwrap(), b"pwned");
        // The absolute link "abs" points at a path that, inside the root, does not
        // exist: nothing is created through a dangling link's parent.
        assert!(!root.is_dir("abs").unwrap());
        // Removing the leaf link removes the link, not its target.
        assert!(root.remove_file("leaf").unwrap());
        assert!(outside.join("victim").exists());
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let base = tmp("fifo");
        nix::unistd::mkfifo(&base.join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        let root = RootDir::open(&base).unwrap();
        let err = root
            .write_file("pipe", b"x", &FileOptions::default())
            .unwrap_err();
        // Without a reader, opening a FIFO non-blocking for writing fails (ENXIO);
        // either way it is refused and never blocks.
        assert!(
            matches!(
                err,
                SafePathError::Io { .. } | SafePathError::NotRegular { .. }
            ),
            "{err:?}"
        );
        std::fs::create_dir(base.join("d")).unwrap();
        assert!(matches!(
            root.write_file("d", b"x", &FileOptions::default()),
            Err(SafePathError::Io { .. } | SafePathError::NotRegular { .. })
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
