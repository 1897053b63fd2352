//! The UEFI variable store as Linux shows it in efivarfs
//! (`/sys/firmware/efi/efivars`, kernel `Documentation/filesystems/efivarfs.rst`): one
//! file per variable named `<Name>-<vendor guid>`, holding a 4-byte little-endian
//! attribute word followed by the data. What efibootmgr does through libefivar is done
//! here directly: list, read, create, delete `Boot####` and rewrite `BootOrder`.
//!
//! efivarfs rules this module follows: a variable is written with one `write(2)` of
//! attributes plus data; files of well-known variables are immutable (`chattr +i`) and
//! the flag is cleared before one is deleted; an existing variable is replaced by
//! deleting and creating it (as libefivar does), never by truncating. A plain directory
//! works as a stand-in, which is how the tests run.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::load_option::{LoadOption, LoadOptionError};
use crate::bytes::le32;
use crate::sys::fs_flags;

/// EFI_GLOBAL_VARIABLE, the vendor GUID of `Boot####` and `BootOrder`.
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS, what boot variables carry.
pub const ATTR_NV_BS_RT: u32 = 0x7;
/// Largest variable read (boot entries are a few hundred bytes; firmware caps far lower).
const MAX_VAR_BYTES: u64 = 64 << 10;

/// A failed variable operation, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum EfiVarError {
    /// Reading, writing or deleting the file failed.
    #[error("EFI variable {name}: {error}")]
    Io {
        /// Variable file name.
        name: String,
        /// The system error.
        error: io::Error,
    },
    /// The file is shorter than the attribute word or too large.
    #[error("EFI variable {0} has an invalid size")]
    BadSize(String),
    /// A `Boot####` variable does not parse.
    #[error("EFI variable {name}: {error}")]
    BadLoadOption {
        /// Variable file name.
        name: String,
        /// Why.
        error: LoadOptionError,
    },
    /// Every boot number is taken.
    #[error("no free Boot#### number")]
    NoFreeNumber,
}

/// One `Boot####` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// `####`.
    pub number: u16,
    /// The decoded option; `None` when another tool stored bytes we cannot parse.
    pub option: Option<LoadOption>,
}

/// The variable store under one directory (efivarfs, or a plain directory in tests).
#[derive(Debug, Clone)]
pub struct EfiVars {
    dir: PathBuf,
}

/// `Boot####` as efibootmgr names it (upper-case hex).
pub fn boot_var_name(number: u16) -> String {
    format!("Boot{number:04X}")
}

impl EfiVars {
    /// The store at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory exists and holds any variable (a mounted efivarfs on a
    /// UEFI machine always does; an empty directory is an unmounted mount point).
    pub fn is_populated(&self) -> bool {
        fs::read_dir(&self.dir).is_ok_and(|mut d| d.next().is_some())
    }

    fn file_name(name: &str) -> String {
        format!("{name}-{GLOBAL_GUID}")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(Self::file_name(name))
    }

    fn io(name: &str) -> impl FnOnce(io::Error) -> EfiVarError + '_ {
        move |error| EfiVarError::Io {
            name: name.to_owned(),
            error,
        }
    }

    /// The attributes and data of global variable `name`, if it exists.
    pub fn read(&self, name: &str) -> Result<Option<(u32, Vec<u8>)>, EfiVarError> {
        let file = match File::open(self.path(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(name)(e)),
        };
        let mut buf = Vec::new();
        file.take(MAX_VAR_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(Self::io(name))?;
        if buf.len() < 4 || buf.len() as u64 > MAX_VAR_BYTES {
            return Err(EfiVarError::BadSize(name.to_owned()));
        }
        let attrs = le32(&buf, 0);
        Ok(Some((attrs, buf.split_off(4))))
    }

    /// Deletes global variable `name` (clearing its immutable flag first); `Ok(false)`
    /// when it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool, EfiVarError> {
        let path = self.path(name);
        match File::open(&path) {
            Ok(f) => {
                fs_flags::clear_immutable(&f).map_err(|e| Self::io(name)(e.into()))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Self::io(name)(e)),
        }
        fs::remove_file(&path).map_err(Self::io(name))?;
        Ok(true)
    }

    /// Sets global variable `name` to `data` with `attrs`, replacing any old value.
    pub fn write(&self, name: &str, attrs: u32, data: &[u8]) -> Result<(), EfiVarError> {
        self.delete(name)?;
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&attrs.to_le_bytes());
        buf.extend_from_slice(data);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.path(name))
            .map_err(Self::io(name))?;
        // efivarfs takes a variable in exactly one write call.
        let n = f.write(&buf).map_err(Self::io(name))?;
        if n != buf.len() {
            return Err(Self::io(name)(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", buf.len()),
            )));
        }
        Ok(())
    }

    /// Every `Boot####` variable, by number.
    pub fn boot_entries(&self) -> Result<Vec<BootEntry>, EfiVarError> {
        let dir = fs::read_dir(&self.dir).map_err(Self::io("Boot####"))?;
        let suffix = format!("-{GLOBAL_GUID}");
        let mut numbers = Vec::new();
        for entry in dir {
            let entry = entry.map_err(Self::io("Boot####"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(var) = name.strip_suffix(&suffix) else {
                continue;
            };
            if let Some(hex) = var.strip_prefix("Boot") {
                if hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    numbers.push(u16::from_str_radix(hex, 16).expect("four hex digits"));
                }
            }
        }
        numbers.sort_unstable();
        let mut out = Vec::with_capacity(numbers.len());
        for number in numbers {
            let name = boot_var_name(number);
            let Some((_, data)) = self.read(&name)? else {
                continue;
            };
            let option = match LoadOption::decode(&data) {
                Ok(o) => Some(o),
                Err(error) => {
                    tracing::warn!(var = %name, %error, "unparsable boot entry left alone");
                    None
                }
            };
            out.push(BootEntry { number, option });
        }
        Ok(out)
    }

    /// `BootOrder`, empty when unset.
    pub fn boot_order(&self) -> Result<Vec<u16>, EfiVarError> {
        Ok(self
            .read("BootOrder")?
            .map(|(_, data)| {
                data.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Replaces `BootOrder`.
    pub fn set_boot_order(&self, order: &[u16]) -> Result<(), EfiVarError> {
        let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.write("BootOrder", ATTR_NV_BS_RT, &data)
    }

    /// Deletes `Boot####` and drops it from `BootOrder` (efibootmgr `-b #### -B`).
    pub fn delete_boot_entry(&self, number: u16) -> Result<(), EfiVarError> {
        self.delete(&boot_var_name(number))?;
        let order = self.boot_order()?;
        if order.contains(&number) {
            let kept: Vec<u16> = order.into_iter().filter(|&n| n != number).collect();
            self.set_boot_order(&kept)?;
        }
        Ok(())
    }

    /// Stores `option` under the lowest free `Boot####` and puts it first in
    /// `BootOrder` (efibootmgr `-c`); returns the number.
    pub fn create_boot_entry(&self, option: &LoadOption) -> Result<u16, EfiVarError> {
        let taken: Vec<u16> = self.boot_entries()?.iter().map(|e| e.number).collect();
        let number = (0..=u16::MAX)
            .find(|n| !taken.contains(n))
            .ok_or(EfiVarError::NoFreeNumber)?;
        let name = boot_var_name(number);
        let data = option
            .encode()
            .map_err(|error| EfiVarError::BadLoadOption {
                name: name.clone(),
                error,
            })?;
        self.write(&name, ATTR_NV_BS_RT, &data)?;
        let mut order = vec![number];
        order.extend(self.boot_order()?.into_iter().filter(|&n| n != number));
        self.set_boot_order(&order)?;
        Ok(number)
    }
}
