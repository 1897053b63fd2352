//! Rescue mode on the ramdisk's own filesystem (protocol spec 2.8, 10.5): the crypt hash
//! of the rescue password goes to `etc/ipa-rescue-config/ipa-rescue-password` and the
//! marker `etc/.rescued` is created, both under the system root. Tooling outside the
//! agent (the ramdisk's init, the DIB element's units) reads them once the agent is gone.
//!
//! Only files are written here; stopping the API is the command's job
//! (`commands::rescue`). The password itself is never logged nor written.

pub mod sha_crypt;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where IPA (and so the ramdisk tooling) keeps the rescue password's hash.
pub const PASSWORD_FILE: &str = "etc/ipa-rescue-config/ipa-rescue-password";
/// Present once a node was rescued: an agent starting later must not serve.
pub const MARKER: &str = "etc/.rescued";

/// Why rescue could not be finalized.
#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    /// `hashed` was true but the text is no `$5$`/`$6$` crypt hash.
    #[error("rescue_password is not a SHA-256 ($5$) or SHA-512 ($6$) crypt hash")]
    NotAHash,
    /// Writing a file under the system root failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The hash to store: `password` as it is when `hashed` (after a shape check), else its
/// SHA-256 crypt hash with a fresh salt.
pub fn password_hash(password: &str, hashed: bool) -> Result<String, RescueError> {
    if hashed {
        if sha_crypt::is_sha_crypt_hash(password) {
            Ok(password.to_owned())
        } else {
            Err(RescueError::NotAHash)
        }
    } else {
        Ok(sha_crypt::hash(password.as_bytes()))
    }
}

/// True when `root` holds the rescue marker.
pub fn rescued(root: &Path) -> bool {
    root.join(MARKER).exists()
}

/// Writes `hash` to the password file (mode 0600, directory created, replaced
/// atomically so a watcher never reads half of it), then the marker.
pub fn write_files(root: &Path, hash: &str) -> Result<(), RescueError> {
    let file = root.join(PASSWORD_FILE);
    let dir = file.parent().expect("PASSWORD_FILE has a directory");
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| RescueError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(fail(dir))?;
    let tmp = dir.join(".ipa-rescue-password.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail(&tmp))?;
    // The umask cannot widen 0600, but a stricter one could narrow it: set it outright.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(fail(&tmp))?;
    f.write_all(hash.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(fail(&tmp))?;
    drop(f);
    fs::rename(&tmp, &file).map_err(fail(&file))?;
    let marker = root.join(MARKER);
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&marker)
        .and_then(|m| m.sync_all())
        .map_err(fail(&marker))?;
    tracing::info!(file = %file.display(), marker = %marker.display(), "rescue password hash and marker written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_is_kept_plain_is_hashed_bad_is_refused() {
        let h = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.";
        assert_eq!(password_hash(h, true).unwrap(), h);
        let made = password_hash("Hello world!", false).unwrap();
        assert!(sha_crypt::verify(b"Hello world!", &made));
        assert!(matches!(
            password_hash("Hello world!", true),
            Err(RescueError::NotAHash)
        ));
    }

    #[test]
    fn files_written_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        assert!(!rescued(root.path()));
        write_files(root.path(), "$5$abc$def").unwrap();
        let file = root.path().join(PASSWORD_FILE);
        assert_eq!(fs::read_to_string(&file).unwrap(), "$5$abc$def\n");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(rescued(root.path()));
        // A second rescue replaces the hash.
        write_files(root.path(), "$5$x$y").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "$5$x$y\n");
        let names: Vec<_> = fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["ipa-rescue-password"], "no temp file left");
    }

    #[test]
    fn write_error_names_the_path() {
        let root = tempfile::tempdir().unwrap();
        // `etc` is a file: the directory cannot be made.
        fs::write(root.path().join("etc"), b"").unwrap();
        let err = write_files(root.path(), "$5$a$b").unwrap_err();
        assert!(err.to_string().contains("ipa-rescue-config"), "{err}");
        assert!(!rescued(root.path()));
    }
}
