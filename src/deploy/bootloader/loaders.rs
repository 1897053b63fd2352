//! Which boot loaders a mounted ESP offers and what boot entries they become (IPA:
//! `efi_utils._get_efi_bootloaders` and the naming half of `_run_efibootmgr`).
//!
//! The walk is top-down like Python's `os.walk`: a directory's files before its
//! subdirectories, in directory order. A `.efi` file counts when it is executable (FAT
//! mounts make every file so); the first `BOOT*.CSV` found wins alone, because shim's
//! CSV names the real loader and its label. The ESP belongs to the image, so the walk
//! is bounded in depth and entries and never follows symlinks.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Loader file names IPA looks for (compared lower-cased).
pub const LOADER_NAMES: &[&str] = &[
    "bootx64.csv",
    "bootaa64.csv",
    "boot.csv",
    "bootia32.efi",
    "bootx64.efi",
    "bootia64.efi",
    "bootarm.efi",
    "bootaa64.efi",
    "bootriscv32.efi",
    "bootriscv64.efi",
    "bootriscv128.efi",
    "grubaa64.efi",
    "winload.efi",
];

/// Deepest directory level walked below the ESP root.
const MAX_DEPTH: usize = 16;
/// Most directory entries examined in one walk.
const MAX_ENTRIES: usize = 100_000;
/// Largest CSV read (real ones are under 200 bytes).
const MAX_CSV_BYTES: u64 = 64 << 10;

/// Why the ESP could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Walking or reading failed.
    #[error("reading {path}: {error}")]
    Io {
        /// ESP-relative path.
        path: String,
        /// The system error.
        error: io::Error,
    },
    /// The ESP has more entries than the walk examines.
    #[error("the EFI partition has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// A CSV that is not UTF-16 text with at least two fields.
    #[error("{path} is not a valid boot CSV file")]
    BadCsv {
        /// ESP-relative path.
        path: String,
    },
}

/// A boot entry to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTarget {
    /// The loader in EFI form, `\EFI\BOOT\BOOTX64.EFI`.
    pub loader: String,
    /// The entry's description.
    pub label: String,
}

/// ESP-relative paths (with `/`) of the loaders under `root`, in discovery order; a CSV
/// found first is returned alone.
pub fn find_loaders(root: &Path) -> Result<Vec<String>, LoaderError> {
    let mut found = Vec::new();
    let mut seen = 0usize;
    walk(root, "", 0, &mut seen, &mut found)?;
    Ok(found)
}

/// Walks one directory; returns `true` once a CSV has been found (the walk stops).
fn walk(
    root: &Path,
    rel: &str,
    depth: usize,
    seen: &mut usize,
    found: &mut Vec<String>,
) -> Result<bool, LoaderError> {
    let io = |path: &str| {
        let path = path.to_owned();
        move |error| LoaderError::Io { path, error }
    };
    let dir = root.join(rel);
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io(rel))? {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            return Err(LoaderError::TooManyEntries);
        }
        let entry = entry.map_err(io(rel))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = entry.metadata().map_err(io(&child))?; // lstat: symlinks stay links
        if meta.is_dir() {
            subdirs.push(child);
            continue;
        }
        if !meta.is_file() || !LOADER_NAMES.contains(&name.to_lowercase().as_str()) {
            continue;
        }
        let is_csv = name.to_lowercase().ends_with(".csv");
        if is_csv {
            found.clear();
            found.push(child);
            return Ok(true);
        }
        if meta.permissions().mode() & 0o111 != 0 {
            found.push(child);
        }
    }
    if depth < MAX_DEPTH {
        for sub in subdirs {
            if walk(root, &sub, depth + 1, seen, found)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The entries for `loaders` (from [`find_loaders`] on `root`): a CSV gives its loader
/// and label, each `.efi` is labelled `ironic<N>` (N counts every loader from 1), and
/// `suffix` (software RAID) is appended to each label after a space.
pub fn boot_targets(
    root: &Path,
    loaders: &[String],
    suffix: Option<&str>,
) -> Result<Vec<BootTarget>, LoaderError> {
    let mut out = Vec::with_capacity(loaders.len());
    for (i, rel) in loaders.iter().enumerate() {
        let (path, mut label) = if rel.to_lowercase().ends_with(".csv") {
            let (file, label) = read_csv(root, rel)?;
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
            let path = if dir.is_empty() {
                file
            } else {
                format!("{dir}/{file}")
            };
            (path, label)
        } else {
            (rel.clone(), format!("ironic{}", i + 1))
        };
        if let Some(s) = suffix {
            label = format!("{label} {s}");
        }
        out.push(BootTarget {
            loader: format!("\\{}", path.replace('/', "\\")),
            label,
        });
    }
    Ok(out)
}

/// Field 1 (loader file name) and field 2 (label) of a shim boot CSV.
fn read_csv(root: &Path, rel: &str) -> Result<(String, String), LoaderError> {
    let mut bytes = Vec::new();
    fs::File::open(root.join(rel))
        .and_then(|f| f.take(MAX_CSV_BYTES).read_to_end(&mut bytes))
        .map_err(|error| LoaderError::Io {
            path: rel.to_owned(),
            error,
        })?;
    parse_csv(&bytes).ok_or_else(|| LoaderError::BadCsv {
        path: rel.to_owned(),
    })
}

/// Decodes a shim CSV (UTF-16 with an optional byte-order mark, little-endian without
/// one) and returns its first two comma-separated fields.
pub fn parse_csv(bytes: &[u8]) -> Option<(String, String)> {
    let (body, big_endian) = match bytes {
        [0xff, 0xfe, rest @ ..] => (rest, false),
        [0xfe, 0xff, rest @ ..] => (rest, true),
        _ => (bytes, false),
    };
    if body.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .collect();
    let text = String::from_utf16(&units).ok()?;
    let mut fields = text.splitn(4, ',');
    let file = fields.next()?.to_owned();
    let label = fields.next()?.to_owned();
    Some((file, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str, bom: bool) -> Vec<u8> {
        let mut v = if bom { vec![0xff, 0xfe] } else { vec![] };
        v.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        v
    }

    #[test]
    fn csv_fields_with_and_without_bom() {
        let line = "shimx64.efi,Red Hat Enterprise Linux,,This is the boot entry\n";
        let want = Some((
            "shimx64.efi".to_owned(),
            "Red Hat Enterprise Linux".to_owned(),
        ));
        assert_eq!(parse_csv(&utf16(line, true)), want);
        assert_eq!(parse_csv(&utf16(line, false)), want);
        assert_eq!(parse_csv(&utf16("only-one-field", true)), None);
        assert_eq!(parse_csv(&[0x41, 0x00, 0x2c]), None);
    }

    #[test]
    fn csv_wins_alone_and_efi_files_need_the_exec_bit() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("EFI/BOOT");
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join("BOOTX64.EFI"), b"x").unwrap();
        fs::set_permissions(boot.join("BOOTX64.EFI"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(boot.join("grubaa64.efi"), b"x").unwrap();
        fs::set_permissions(boot.join("grubaa64.efi"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(boot.join("fallback.efi"), b"x").unwrap();
        assert_eq!(find_loaders(d.path()).unwrap(), ["EFI/BOOT/BOOTX64.EFI"]);
        let t = boot_targets(d.path(), &find_loaders(d.path()).unwrap(), None).unwrap();
        assert_eq!(
            t,
            [BootTarget {
                loader: "\\EFI\\BOOT\\BOOTX64.EFI".to_owned(),
                label: "ironic1".to_owned()
            }]
        );

        let rh = d.path().join("EFI/redhat");
        fs::create_dir_all(&rh).unwrap();
        fs::write(rh.join("BOOTX64.CSV"), utf16("shimx64.efi,RHEL,,x\n", true)).unwrap();
        let found = find_loaders(d.path()).unwrap();
        assert_eq!(found, ["EFI/redhat/BOOTX64.CSV"]);
        let t = boot_targets(d.path(), &found, Some("(RAID, part0)")).unwrap();
        assert_eq!(t[0].loader, "\\EFI\\redhat\\shimx64.efi");
        assert_eq!(t[0].label, "RHEL (RAID, part0)");
    }
}
