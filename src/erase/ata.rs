//! ATA security erase (spec hardware-and-disks.md 5.5), native: IDENTIFY DEVICE and the
//! security commands go to the drive as ATA PASS-THROUGH(16) over SG_IO instead of
//! through hdparm and smartctl.
//!
//! The decisions follow IPA's `_ata_erase`: a drive without the security feature set
//! (or a device that is no ATA drive: loop, virtio, NVMe, SAS) is "not supported" and
//! the caller falls back to overwriting; a frozen drive is an error; a locked or
//! password-protected drive is unlocked with the well-known temporary passwords or
//! refused; otherwise the user password `NULL` is set, and SECURITY ERASE PREPARE +
//! ERASE UNIT (enhanced when supported) run. Where IPA would leave a password behind
//! after a failure, we remove it (UNLOCK then DISABLE PASSWORD) and say in the error
//! whether that worked. The erase's timeout comes from the drive's own estimate.
//!
//! - `identify`: decoding IDENTIFY DEVICE data.
//! - `transport`: the [`AtaDevice`] trait, CDBs, password blocks and the SG_IO transport.

mod identify;
mod transport;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use identify::{EraseTime, Identify, IdentifyError, Security};
pub use transport::{
    identify_cdb, password_block, AtaDevice, AtaIoError, Identifier, SecurityCommand, SgAta,
    COMMAND_TIMEOUT,
};

/// The `method` of an enhanced security erase.
pub const METHOD_ENHANCED: &str = "ata_enhanced_security_erase";
/// The `method` of a normal security erase.
pub const METHOD_NORMAL: &str = "ata_security_erase";

/// Erase timeout when the drive gives no estimate, or only "more than" one that is
/// smaller (IPA applies none; enhanced erase of a large disk takes hours).
pub const DEFAULT_ERASE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The temporary user passwords IPA's hdparm calls use: the literal `NULL` (the one
/// set), and all zeros (what some hdparm versions send for `NULL` or "").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempPassword {
    /// The bytes `NULL`, zero-padded.
    Null,
    /// 32 zero bytes.
    Empty,
}

impl TempPassword {
    /// The 32 password bytes.
    pub fn bytes(self) -> [u8; 32] {
        let mut pw = [0u8; 32];
        if self == Self::Null {
            pw[..4].copy_from_slice(b"NULL");
        }
        pw
    }

    fn name(self) -> &'static str {
        match self {
            Self::Null => "\"NULL\"",
            Self::Empty => "empty",
        }
    }
}

/// The password set on a drive that has none (spec 5.5 step 7).
const SET_PASSWORD: TempPassword = TempPassword::Null;
/// Unlock attempts, in IPA's order (spec 5.5 step 5).
const UNLOCK_PASSWORDS: [TempPassword; 2] = [TempPassword::Null, TempPassword::Empty];

/// A completed security erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaErased {
    /// [`METHOD_ENHANCED`] or [`METHOD_NORMAL`].
    pub method: &'static str,
    /// The drive's serial number (IDENTIFY words 10-19).
    pub serial: String,
    /// The drive's model (IDENTIFY words 27-46).
    pub model: String,
    /// Wall-clock seconds of SECURITY ERASE UNIT.
    pub seconds: u64,
}

/// What the ATA erase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtaOutcome {
    /// The drive was erased and has no password afterwards.
    Erased(AtaErased),
    /// Nothing was done: the device is no ATA drive with the security feature set
    /// (spec 5.5: return `False`, the caller overwrites instead).
    NotSupported {
        /// Why, for the log.
        reason: String,
    },
}

/// What became of the temporary password after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// The drive was checked and has no user password.
    NoPassword,
    /// The temporary password was removed (and the drive checked).
    Removed,
    /// The drive keeps a password that is not one of ours; it was left alone.
    ForeignPassword,
    /// The temporary password could not be removed.
    Failed(String),
}

impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoPassword => f.write_str("the drive has no security password set"),
            Self::Removed => f.write_str("the temporary security password was removed"),
            Self::ForeignPassword => f.write_str("the drive keeps its previous security password"),
            Self::Failed(why) => write!(
                f,
                "removing the temporary security password FAILED ({why}); the drive may lock \
                 at the next power cycle (user password \"NULL\" or empty)"
            ),
        }
    }
}

/// Why the ATA security erase failed. Messages name the device and the reason; the
/// conductor shows them in `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum AtaEraseError {
    /// The device could not be opened or probed.
    #[error("opening {device} for ATA security erase: {source}")]
    Open {
        /// The device.
        device: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// IDENTIFY DEVICE failed in a way that is not "no ATA drive".
    #[error("reading the ATA IDENTIFY data of {device}: {source}")]
    Identify {
        /// The device.
        device: PathBuf,
        /// The cause.
        #[source]
        source: AtaIoError,
    },
    /// The IDENTIFY data is corrupt.
    #[error("{device}: {source}")]
    BadIdentify {
        /// The device.
        device: PathBuf,
        /// The cause.
        #[source]
        source: IdentifyError,
    },
    /// The drive is frozen (IPA's message).
    #[error("Block device {} is frozen and cannot be erased", .device.display())]
    Frozen {
        /// The device.
        device: PathBuf,
    },
    /// The drive has a password the temporary ones do not unlock.
    #[error(
        "Block device {} already has a security password set that the temporary passwords \
         do not unlock{}",
        .device.display(),
        if *.count_expired { "; its password attempt counter has expired (a power cycle resets it)" } else { "" }
    )]
    PasswordSet {
        /// The device.
        device: PathBuf,
        /// Security word bit 4 is set.
        count_expired: bool,
    },
    /// A command of the erase failed; `cleanup` says what became of the password.
    #[error("ATA {step} on {} failed: {source}; {cleanup}", .device.display())]
    Command {
        /// The device.
        device: PathBuf,
        /// The failing command.
        step: &'static str,
        /// The cause.
        #[source]
        source: AtaIoError,
        /// What became of the temporary password.
        cleanup: Cleanup,
    },
    /// ERASE UNIT reported success but the drive still has security enabled (IPA:
    /// "unknown error").
    #[error(
        "ATA security erase of {} failed with an unknown error: security is still enabled \
         after SECURITY ERASE UNIT; {cleanup}",
        .device.display()
    )]
    StillEnabled {
        /// The device.
        device: PathBuf,
        /// What became of the temporary password.
        cleanup: Cleanup,
    },
}

/// Runs the ATA security erase on the block device `dev_path` (the caller has applied
/// the allow-list). `progress_note` receives one-line notes for the operator (the erase
/// can take hours). A partition or a device-mapper device that maps part of a disk is
/// "not supported": a security erase always erases the whole drive under it.
pub fn erase_ata(
    dev_path: &Path,
    progress_note: &mut dyn FnMut(&str),
) -> Result<AtaOutcome, AtaEraseError> {
    let open_err = |source| AtaEraseError::Open {
        device: dev_path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_path)
        .map_err(open_err)?;
    if let Some(reason) = not_a_whole_drive(&file).map_err(open_err)? {
        tracing::info!(device = %dev_path.display(), %reason, "ATA security erase not supported");
        return Ok(AtaOutcome::NotSupported { reason });
    }
    erase_with(&mut SgAta::new(file), dev_path, progress_note)
}

/// A reason the ATA erase must not run on `file` though SG_IO would reach a drive:
/// the kernel forwards SG_IO from a partition and from a single-target dm device to the
/// whole disk. Multipath maps are whole disks and are allowed.
fn not_a_whole_drive(file: &File) -> std::io::Result<Option<String>> {
    let meta = file.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(Some("not a block device".to_owned()));
    }
    let rdev = meta.rdev();
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ));
    std::fs::metadata(&sys)?;
    if sys.join("partition").exists() {
        return Ok(Some(
            "a partition: a security erase would erase the whole disk".to_owned(),
        ));
    }
    match std::fs::read_to_string(sys.join("dm/uuid")) {
        Ok(uuid) if uuid.starts_with("mpath-") => Ok(None),
        Ok(_) => Ok(Some(
            "a device-mapper device that is not a multipath map".to_owned(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The erase logic over any [`AtaDevice`]; `device` names it in messages.
pub fn erase_with(
    dev: &mut dyn AtaDevice,
    device: &Path,
    note: &mut dyn FnMut(&str),
) -> Result<AtaOutcome, AtaEraseError> {
    let mut eraser = Eraser { dev, device };
    let id = match eraser.dev.identify() {
        Ok(words) => Identify::parse(&words).map_err(|source| match source {
            IdentifyError::NotAta(_) => None,
            source => Some(AtaEraseError::BadIdentify {
                device: device.to_path_buf(),
                source,
            }),
        }),
        Err(
            e @ (AtaIoError::NotSgIo(_)
            | AtaIoError::NoPassThrough { .. }
            | AtaIoError::Aborted { .. }),
        ) => return Ok(not_supported(device, format!("IDENTIFY DEVICE: {e}"))),
        Err(source) => {
            return Err(AtaEraseError::Identify {
                device: device.to_path_buf(),
                source,
            })
        }
    };
    let id = match id {
        Ok(id) => id,
        Err(None) => return Ok(not_supported(device, "not an ATA device".to_owned())),
        Err(Some(e)) => return Err(e),
    };
    let sec = id.security;
    tracing::info!(device = %device.display(), model = %id.model, serial = %id.serial, ?sec, "ATA security state");
    if !sec.supported {
        return Ok(not_supported(
            device,
            "the drive does not support the ATA security feature set".to_owned(),
        ));
    }
    if sec.frozen {
        return Err(AtaEraseError::Frozen {
            device: device.to_path_buf(),
        });
    }
    let password = if sec.locked || sec.enabled {
        if sec.count_expired {
            return Err(eraser.password_set(true));
        }
        eraser.unlock()?
    } else {
        eraser.set_password()?
    };

    let enhanced = sec.enhanced_supported;
    let (method, estimate) = if enhanced {
        (METHOD_ENHANCED, id.enhanced_erase)
    } else {
        (METHOD_NORMAL, id.normal_erase)
    };
    let timeout = estimate.timeout(DEFAULT_ERASE_TIMEOUT);
    if estimate == EraseTime::NotReported {
        tracing::warn!(device = %device.display(), ?timeout, "the drive reports no erase time; using the default timeout");
    }
    let msg = format!(
        "{method} of {} ({} {}) started: the drive estimates {estimate}, timeout {} min",
        device.display(),
        id.model,
        id.serial,
        timeout.as_secs() / 60
    );
    tracing::info!("{msg}");
    note(&msg);

    let block = password_block(Identifier::User, enhanced, &password.bytes());
    eraser.command(
        SecurityCommand::ErasePrepare,
        &block,
        COMMAND_TIMEOUT,
        password,
    )?;
    let start = Instant::now();
    eraser.command(SecurityCommand::EraseUnit, &block, timeout, password)?;
    let seconds = start.elapsed().as_secs();

    let after = match eraser.dev.identify() {
        Ok(words) => Identify::parse(&words).map_err(|e| AtaIoError::Transport(e.to_string())),
        Err(e) => Err(e),
    };
    match after {
        Ok(after) if !after.security.enabled => {}
        Ok(_) => {
            let cleanup = eraser.cleanup(Some(password));
            return Err(AtaEraseError::StillEnabled {
                device: device.to_path_buf(),
                cleanup,
            });
        }
        Err(source) => {
            let cleanup = eraser.cleanup(Some(password));
            return Err(AtaEraseError::Command {
                device: device.to_path_buf(),
                step: "IDENTIFY DEVICE after the erase",
                source,
                cleanup,
            });
        }
    }
    let msg = format!("{method} of {} finished in {seconds} s", device.display());
    tracing::info!("{msg}");
    note(&msg);
    Ok(AtaOutcome::Erased(AtaErased {
        method,
        serial: id.serial,
        model: id.model,
        seconds,
    }))
}

fn not_supported(device: &Path, reason: String) -> AtaOutcome {
    tracing::info!(device = %device.display(), %reason, "ATA security erase not supported");
    AtaOutcome::NotSupported { reason }
}

/// One erase run: the device and the steps that need to clean up after themselves.
struct Eraser<'a> {
    dev: &'a mut dyn AtaDevice,
    device: &'a Path,
}

impl Eraser<'_> {
    fn password_set(&self, count_expired: bool) -> AtaEraseError {
        AtaEraseError::PasswordSet {
            device: self.device.to_path_buf(),
            count_expired,
        }
    }

    /// Security state now, for decisions (errors become a failed command).
    fn security(&mut self) -> Result<Security, AtaIoError> {
        let words = self.dev.identify()?;
        Identify::parse(&words)
            .map(|id| id.security)
            .map_err(|e| AtaIoError::Transport(e.to_string()))
    }

    /// Spec 5.5 steps 5-6: tries the temporary passwords and returns the one the drive
    /// accepted (it is unlocked then). An abort means a wrong password; anything else
    /// stops, since the drive's state is unknown.
    fn unlock(&mut self) -> Result<TempPassword, AtaEraseError> {
        for pw in UNLOCK_PASSWORDS {
            let block = password_block(Identifier::User, false, &pw.bytes());
            match self
                .dev
                .security_command(SecurityCommand::Unlock, &block, COMMAND_TIMEOUT)
            {
                Ok(()) => {}
                Err(AtaIoError::Aborted { .. }) => {
                    tracing::info!(device = %self.device.display(), password = pw.name(), "unlock refused");
                    continue;
                }
                Err(source) => return Err(self.failed(SecurityCommand::Unlock, source, None)),
            }
            match self.security() {
                Ok(sec) if !sec.locked => {
                    tracing::info!(device = %self.device.display(), password = pw.name(), "unlocked");
                    return Ok(pw);
                }
                Ok(_) => {}
                Err(source) => {
                    let cleanup = self.cleanup(Some(pw));
                    return Err(AtaEraseError::Command {
                        device: self.device.to_path_buf(),
                        step: "IDENTIFY DEVICE after SECURITY UNLOCK",
                        source,
                        cleanup,
                    });
                }
            }
        }
        // Failed attempts count down the drive's counter; say so when it ran out.
        let expired = self.security().is_ok_and(|s| s.count_expired);
        Err(self.password_set(expired))
    }

    fn set_password(&mut self) -> Result<TempPassword, AtaEraseError> {
        let block = password_block(Identifier::User, false, &SET_PASSWORD.bytes());
        self.command(
            SecurityCommand::SetPassword,
            &block,
            COMMAND_TIMEOUT,
            SET_PASSWORD,
        )?;
        Ok(SET_PASSWORD)
    }

    /// Runs `cmd`; on failure removes `password` (which may be set) and reports both.
    fn command(
        &mut self,
        cmd: SecurityCommand,
        block: &[u8; 512],
        timeout: Duration,
        password: TempPassword,
    ) -> Result<(), AtaEraseError> {
        self.dev
            .security_command(cmd, block, timeout)
            .map_err(|source| self.failed(cmd, source, Some(password)))
    }

    fn failed(
        &mut self,
        cmd: SecurityCommand,
        source: AtaIoError,
        password: Option<TempPassword>,
    ) -> AtaEraseError {
        tracing::error!(device = %self.device.display(), step = cmd.name(), error = %source, "ATA security command failed");
        let cleanup = self.cleanup(password);
        AtaEraseError::Command {
            device: self.device.to_path_buf(),
            step: cmd.name(),
            source,
            cleanup,
        }
    }

    /// Leaves no temporary password behind: reads the state, and when a user password
    /// is set and `password` is known, unlocks (if locked) and disables it, then checks.
    fn cleanup(&mut self, password: Option<TempPassword>) -> Cleanup {
        let cleanup = self.try_cleanup(password);
        match &cleanup {
            Cleanup::Failed(why) => {
                tracing::error!(device = %self.device.display(), %why, "removing the temporary ATA password failed");
            }
            c => {
                tracing::info!(device = %self.device.display(), cleanup = %c, "ATA password cleanup")
            }
        }
        cleanup
    }

    fn try_cleanup(&mut self, password: Option<TempPassword>) -> Cleanup {
        let sec = match self.security() {
            Ok(sec) => sec,
            Err(e) => return Cleanup::Failed(format!("reading the security state: {e}")),
        };
        if !sec.enabled {
            return Cleanup::NoPassword;
        }
        let Some(pw) = password else {
            return Cleanup::ForeignPassword;
        };
        let block = password_block(Identifier::User, false, &pw.bytes());
        if sec.locked {
            if let Err(e) =
                self.dev
                    .security_command(SecurityCommand::Unlock, &block, COMMAND_TIMEOUT)
            {
                return Cleanup::Failed(format!("SECURITY UNLOCK: {e}"));
            }
        }
        if let Err(e) =
            self.dev
                .security_command(SecurityCommand::DisablePassword, &block, COMMAND_TIMEOUT)
        {
            return Cleanup::Failed(format!("SECURITY DISABLE PASSWORD: {e}"));
        }
        match self.security() {
            Ok(sec) if !sec.enabled => Cleanup::Removed,
            Ok(_) => Cleanup::Failed("security still enabled after DISABLE PASSWORD".to_owned()),
            Err(e) => Cleanup::Failed(format!("reading the security state: {e}")),
        }
    }
}
