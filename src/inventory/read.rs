//! Size-bounded reads of procfs/sysfs files and small helpers over them.
//!
//! Every inventory reader goes through here, so no file can make the agent allocate more
//! than the cap its caller chose. Required files return [`InventoryError`]; optional
//! attributes return `None` when missing or unreadable (sysfs answers `EINVAL` for some
//! attributes of a down interface, e.g. `carrier` and `speed`).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::InventoryError;

/// Cap for one sysfs attribute: the kernel never emits more than a page, so 64 KiB is
/// generous and still small.
pub const ATTR_CAP: u64 = 64 << 10;

/// Reads the whole file, failing when it is larger than `cap` bytes.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>, InventoryError> {
    let bytes = read_prefix(path, cap.saturating_add(1))?;
    if bytes.len() as u64 > cap {
        return Err(InventoryError::TooLarge {
            path: path.to_path_buf(),
            cap,
        });
    }
    Ok(bytes)
}

/// Reads at most `cap` bytes from the start of the file; a longer file is cut silently.
pub fn read_prefix(path: &Path, cap: u64) -> Result<Vec<u8>, InventoryError> {
    let read_err = |source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut out = Vec::new();
    file.take(cap).read_to_end(&mut out).map_err(read_err)?;
    Ok(out)
}

/// Reads a required attribute as trimmed text.
pub fn read_attr(path: &Path) -> Result<String, InventoryError> {
    let bytes = read_bounded(path, ATTR_CAP)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// Reads a required attribute and parses it as an unsigned integer.
pub fn read_u64(path: &Path) -> Result<u64, InventoryError> {
    let text = read_attr(path)?;
    text.parse().map_err(|_| InventoryError::Invalid {
        path: path.to_path_buf(),
        reason: format!("expected an unsigned integer, found {text:?}"),
    })
}

/// Reads an optional attribute as trimmed text; `None` when missing or unreadable.
pub fn read_opt(path: &Path) -> Option<String> {
    match read_attr(path) {
        Ok(text) => Some(text),
        Err(InventoryError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            None
        }
        Err(err) => {
            tracing::debug!(error = %err, "optional attribute unreadable");
            None
        }
    }
}

/// Like [`read_opt`], but an empty value is `None` too.
pub fn read_opt_nonempty(path: &Path) -> Option<String> {
    read_opt(path).filter(|s| !s.is_empty())
}

/// The last component of a symlink's target, read without following it (so a fixture
/// link may dangle): `device -> ../../../0000:18:00.0` gives `0000:18:00.0`. A target
/// ending in `..` is resolved instead.
pub fn link_basename(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    let name = match target.file_name() {
        Some(name) => name.to_os_string(),
        None => std::fs::canonicalize(path)
            .ok()?
            .file_name()?
            .to_os_string(),
    };
    Some(name.to_string_lossy().into_owned())
}

/// Names of the entries of a directory, sorted in natural order (see [`natural_cmp`]).
pub fn list_dir(path: &Path) -> Result<Vec<String>, InventoryError> {
    let read_err = |source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names)
}

/// Entries of an optional directory; empty when it is missing or unreadable.
pub fn list_dir_opt(path: &Path) -> Vec<String> {
    list_dir(path).unwrap_or_default()
}

/// `root` joined with a path relative to it (`"sys/block"`), never an absolute one.
pub fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// Orders names the way the kernel enumerates them: digit runs compare as numbers, so
/// `nvme2n1` < `nvme10n1` and `md2` < `md127`; everything else byte-wise.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                // Longer digit run (without leading zeros) = larger number.
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_refuses_oversized_file_and_prefix_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_bounded(&path, 9),
            Err(InventoryError::TooLarge { cap: 9, .. })
        ));
        assert_eq!(read_prefix(&path, 4).unwrap(), b"0123");
    }

    #[test]
    fn optional_reads_turn_missing_into_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_opt(&dir.path().join("missing")), None);
        std::fs::write(dir.path().join("empty"), b"  \n").unwrap();
        assert_eq!(read_opt(&dir.path().join("empty")), Some(String::new()));
        assert_eq!(read_opt_nonempty(&dir.path().join("empty")), None);
        std::fs::write(dir.path().join("n"), b"x1\n").unwrap();
        assert!(matches!(
            read_u64(&dir.path().join("n")),
            Err(InventoryError::Invalid { .. })
        ));
    }

    #[test]
    fn natural_order_compares_digit_runs_as_numbers() {
        let mut names = vec!["nvme10n1", "sdb", "nvme2n1", "md127", "md2", "sda", "sda01"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["md2", "md127", "nvme2n1", "nvme10n1", "sda", "sda01", "sdb"]
        );
    }

    #[test]
    fn link_basename_reads_dangling_links() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("device");
        std::os::unix::fs::symlink("../../../0000:18:00.0", &link).unwrap();
        assert_eq!(link_basename(&link).as_deref(), Some("0000:18:00.0"));
        assert_eq!(link_basename(&dir.path().join("none")), None);
    }
}
