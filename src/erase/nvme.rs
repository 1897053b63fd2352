//! NVMe secure erase (spec hardware-and-disks.md 5.4, used by 5.3 and 5.9) through the
//! kernel's admin passthrough instead of `nvme id-ctrl`/`nvme format`.
//!
//! - Format NVM, IPA's choice: needs OACS bit 1; crypto erase (SES 2) when FNA bit 2,
//!   else user-data erase (SES 1); the namespace keeps its current LBA format, metadata
//!   and protection settings.
//! - Sanitize (IPA has none): crypto erase, block erase or overwrite as SANICAP allows,
//!   then the Sanitize Status log page is polled until the operation ends.
//!
//! The logic runs over [`NvmeAdmin`] so tests drive it with recorded identify data; the
//! real transport is [`DeviceAdmin`] over `sys::nvme`.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::bytes::{le16, le32, le64};
use crate::sys::nvme::{self as sys, AdminCommand, NvmeIoError, NvmeStatus};

const OPC_GET_LOG_PAGE: u8 = 0x02;
const OPC_IDENTIFY: u8 = 0x06;
const OPC_FORMAT_NVM: u8 = 0x80;
const OPC_SANITIZE: u8 = 0x84;

const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const CNS_ACTIVE_NSIDS: u32 = 0x02;
const IDENTIFY_LEN: usize = 4096;

const LID_SANITIZE_STATUS: u32 = 0x81;
const SANITIZE_LOG_LEN: usize = 512;
/// The broadcast namespace id, for controller-scoped log pages.
const NSID_ALL: u32 = 0xffff_ffff;

/// OACS bit 1: Format NVM supported.
const OACS_FORMAT: u16 = 1 << 1;
/// FNA bit 2: cryptographic erase supported as part of Format NVM's secure erase.
const FNA_CRYPTO: u8 = 1 << 2;
const SES_USER_DATA: u32 = 1;
const SES_CRYPTO: u32 = 2;

const SANICAP_CRYPTO: u32 = 1 << 0;
const SANICAP_BLOCK: u32 = 1 << 1;
const SANICAP_OVERWRITE: u32 = 1 << 2;
const SANACT_BLOCK: u32 = 2;
const SANACT_OVERWRITE: u32 = 3;
const SANACT_CRYPTO: u32 = 4;

const SSTAT_NEVER: u16 = 0;
const SSTAT_COMPLETED: u16 = 1;
const SSTAT_IN_PROGRESS: u16 = 2;
const SSTAT_FAILED: u16 = 3;
const SSTAT_COMPLETED_NO_DEALLOCATE: u16 = 4;

/// The admin commands the erase logic needs from one NVMe namespace device.
pub trait NvmeAdmin {
    /// Sends one admin command with its data buffer; returns completion dword 0.
    fn admin(&mut self, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeIoError>;
    /// The namespace id of the device.
    fn namespace_id(&mut self) -> Result<u32, NvmeIoError>;
}

/// The kernel transport: an open namespace block device.
#[derive(Debug)]
pub struct DeviceAdmin {
    file: File,
}

impl DeviceAdmin {
    /// The transport over `file`, an open NVMe namespace block device.
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

impl NvmeAdmin for DeviceAdmin {
    fn admin(&mut self, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeIoError> {
        sys::admin(&self.file, cmd, data)
    }

    fn namespace_id(&mut self) -> Result<u32, NvmeIoError> {
        sys::namespace_id(&self.file)
    }
}

/// What kind of erase to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeMode {
    /// Format NVM with secure erase, as IPA does (crypto when supported, else user data).
    Format,
    /// The Sanitize command, which erases every namespace of the controller.
    Sanitize(SanitizeChoice),
}

/// Which sanitize action to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeChoice {
    /// The best the controller supports: crypto erase, else block erase, else one
    /// overwrite pass of zeros.
    BestAvailable,
    /// Crypto erase (SANACT 4).
    Crypto,
    /// Block erase (SANACT 2).
    Block,
    /// Overwrite (SANACT 3) with `passes` (1..=16) passes of the 32-bit `pattern`.
    Overwrite {
        /// Number of passes, 1 to 16.
        passes: u8,
        /// The pattern written.
        pattern: u32,
    },
}

impl NvmeMode {
    /// The mode the agent option `nvme_erase_method` names (see `config::NVME_ERASE_METHODS`);
    /// `None` for any other text.
    pub fn from_option(name: &str) -> Option<Self> {
        Some(match name {
            "format" => Self::Format,
            "sanitize" => Self::Sanitize(SanitizeChoice::BestAvailable),
            "sanitize_crypto" => Self::Sanitize(SanitizeChoice::Crypto),
            "sanitize_block" => Self::Sanitize(SanitizeChoice::Block),
            "sanitize_overwrite" => Self::Sanitize(SanitizeChoice::Overwrite {
                passes: 1,
                pattern: 0,
            }),
            _ => return None,
        })
    }
}

/// Timeouts and the polling interval of an NVMe erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeLimits {
    /// Identify, Get Log Page and the Sanitize command itself (it returns once started).
    pub admin_timeout: Duration,
    /// Format NVM, which runs to its end inside the one command.
    pub format_timeout: Duration,
    /// A whole sanitize operation, from its start to its end.
    pub sanitize_timeout: Duration,
    /// How often the Sanitize Status log page is read.
    pub poll_interval: Duration,
}

impl Default for NvmeLimits {
    fn default() -> Self {
        Self {
            admin_timeout: Duration::from_secs(60),
            format_timeout: Duration::from_secs(3600),
            // An overwrite of a large drive can take many hours; IPA has no limit at all.
            sanitize_timeout: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// How a device was erased, as the per-disk report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeMethod {
    /// Format NVM, SES 2.
    FormatCrypto,
    /// Format NVM, SES 1.
    FormatUserData,
    /// Sanitize, crypto erase.
    SanitizeCrypto,
    /// Sanitize, block erase.
    SanitizeBlock,
    /// Sanitize, overwrite.
    SanitizeOverwrite,
    /// A sanitize found running whose action the controller did not report.
    Sanitize,
}

impl NvmeMethod {
    /// The report's name of the method, e.g. `nvme_format_crypto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FormatCrypto => "nvme_format_crypto",
            Self::FormatUserData => "nvme_format_user_data",
            Self::SanitizeCrypto => "nvme_sanitize_crypto",
            Self::SanitizeBlock => "nvme_sanitize_block",
            Self::SanitizeOverwrite => "nvme_sanitize_overwrite",
            Self::Sanitize => "nvme_sanitize",
        }
    }

    fn from_sanact(sanact: u32) -> Self {
        match sanact {
            SANACT_CRYPTO => Self::SanitizeCrypto,
            SANACT_BLOCK => Self::SanitizeBlock,
            SANACT_OVERWRITE => Self::SanitizeOverwrite,
            _ => Self::Sanitize,
        }
    }
}

impl std::fmt::Display for NvmeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finished NVMe erase, for the per-disk report.
#[derive(Debug, Clone, PartialEq)]
pub struct NvmeErased {
    /// The device as given.
    pub device: String,
    /// What erased it.
    pub method: NvmeMethod,
    /// Controller serial number (Identify Controller SN).
    pub serial: String,
    /// Controller model number (Identify Controller MN).
    pub model: String,
    /// Wall-clock seconds the erase took.
    pub seconds: f64,
    /// A sanitize was already running and was waited for instead of starting one.
    pub waited_for_running_sanitize: bool,
}

/// Why an NVMe erase failed; every message names the device.
#[derive(Debug, thiserror::Error)]
pub enum NvmeEraseError {
    /// The device could not be opened.
    #[error("{device}: cannot open for NVMe erase: {source}")]
    Open {
        /// The device.
        device: String,
        /// The open error.
        source: std::io::Error,
    },
    /// The device does not answer the NVMe ioctls.
    #[error("{device} is not an NVMe namespace device (ioctl answered {errno})")]
    NotNvme {
        /// The device.
        device: String,
        /// ENOTTY or EINVAL.
        errno: Errno,
    },
    /// OACS has no Format NVM bit (IPA: "did not return any supported format modes").
    #[error(
        "{device} does not support Format NVM (OACS 0x{oacs:04x}): the controller did not \
         return any supported format modes"
    )]
    FormatUnsupported {
        /// The device.
        device: String,
        /// Identify Controller OACS.
        oacs: u16,
    },
    /// SANICAP announces no sanitize action.
    #[error("{device} does not support Sanitize (SANICAP 0x{sanicap:08x})")]
    SanitizeUnsupported {
        /// The device.
        device: String,
        /// Identify Controller SANICAP.
        sanicap: u32,
    },
    /// The requested sanitize action is not among SANICAP's.
    #[error("{device} does not support the sanitize action {action} (SANICAP 0x{sanicap:08x})")]
    SanitizeActionUnsupported {
        /// The device.
        device: String,
        /// `crypto erase`, `block erase` or `overwrite`.
        action: &'static str,
        /// Identify Controller SANICAP.
        sanicap: u32,
    },
    /// The request itself is invalid (e.g. an overwrite pass count out of range).
    #[error("{device}: invalid NVMe erase request: {reason}")]
    InvalidRequest {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// The identify data cannot be acted on safely.
    #[error("{device}: unusable identify data: {reason}")]
    BadIdentify {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// Sanitize erases every namespace of the controller, and others than the requested
    /// one are active.
    #[error(
        "{device}: sanitize would also erase namespace(s) {others} of the same controller; \
         refusing (use Format NVM or detach them)"
    )]
    OtherNamespaces {
        /// The device.
        device: String,
        /// The other active namespace ids, comma-separated.
        others: String,
    },
    /// The controller completed a command with an error status.
    #[error("{device}: {command} failed with NVMe status {status}")]
    Status {
        /// The device.
        device: String,
        /// The command, e.g. `Format NVM (SES 2)`.
        command: String,
        /// The completion status.
        status: NvmeStatus,
    },
    /// The ioctl carrying a command failed.
    #[error("{device}: {command} failed: {source}")]
    Io {
        /// The device.
        device: String,
        /// The command.
        command: String,
        /// The transport error.
        source: NvmeIoError,
    },
    /// A command or a sanitize operation did not end in time.
    #[error("{device}: {what} did not finish within {after:?}")]
    Timeout {
        /// The device.
        device: String,
        /// What was waited for.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The controller reports the sanitize operation failed.
    #[error(
        "{device}: sanitize ({method}) failed: the controller reports the operation failed \
         (SSTAT 0x{sstat:04x}); only a new sanitize can recover the drive"
    )]
    SanitizeFailed {
        /// The device.
        device: String,
        /// The action that failed.
        method: NvmeMethod,
        /// The Sanitize Status log page's SSTAT.
        sstat: u16,
    },
}

/// The fields of Identify Controller (CNS 1) the erase needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    /// Serial number, trimmed.
    pub serial: String,
    /// Model number, trimmed.
    pub model: String,
    /// Optional Admin Command Support.
    pub oacs: u16,
    /// Sanitize Capabilities.
    pub sanicap: u32,
    /// Format NVM Attributes.
    pub fna: u8,
}

impl IdentifyController {
    /// Parses the 4096-byte Identify Controller data structure.
    pub fn parse(data: &[u8; IDENTIFY_LEN]) -> Self {
        Self {
            serial: ascii_field(&data[4..24]),
            model: ascii_field(&data[24..64]),
            oacs: le16(data, 256),
            sanicap: le32(data, 328),
            fna: data[524],
        }
    }
}

/// The fields of Identify Namespace (CNS 0) the erase needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Namespace size in logical blocks.
    pub nsze: u64,
    /// Number of LBA formats, zero-based.
    pub nlbaf: u8,
    /// Formatted LBA Size: the current format index and metadata placement.
    pub flbas: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
}

impl IdentifyNamespace {
    /// Parses the 4096-byte Identify Namespace data structure.
    pub fn parse(data: &[u8; IDENTIFY_LEN]) -> Self {
        Self {
            nsze: le64(data, 0),
            nlbaf: data[25],
            flbas: data[26],
            dps: data[29],
        }
    }

    /// The current LBA format index (FLBAS bits 0-3, and bits 5-6 as its upper bits).
    pub fn lba_format(self) -> u8 {
        (self.flbas & 0x0f) | (((self.flbas >> 5) & 0x03) << 4)
    }

    /// Format NVM's CDW10 that keeps this namespace's format, metadata placement and
    /// protection information, with secure erase setting `ses`.
    fn format_cdw10(self, ses: u32) -> u32 {
        let lbaf = u32::from(self.lba_format());
        let mset = u32::from((self.flbas >> 4) & 1);
        let pi = u32::from(self.dps & 0x07);
        let pil = u32::from((self.dps >> 3) & 1);
        (lbaf & 0x0f) | (mset << 4) | (pi << 5) | (pil << 8) | (ses << 9) | ((lbaf >> 4) << 12)
    }
}

/// Printable ASCII, space padded: trimmed, anything else replaced.
fn ascii_field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned()
}

/// The Sanitize Status log page (LID 0x81) fields polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SanitizeStatus {
    /// SPROG: progress of the running operation, in 1/65536.
    sprog: u16,
    /// SSTAT: bits 0-2 the status of the most recent operation.
    sstat: u16,
    /// SCDW10: CDW10 of the Sanitize command that started it.
    scdw10: u32,
}

impl SanitizeStatus {
    fn parse(data: &[u8; SANITIZE_LOG_LEN]) -> Self {
        Self {
            sprog: le16(data, 0),
            sstat: le16(data, 2),
            scdw10: le32(data, 4),
        }
    }

    fn status(self) -> u16 {
        self.sstat & 0x7
    }

    fn fraction(self) -> f64 {
        f64::from(self.sprog) / 65536.0
    }
}

/// One device's session: the transport, its name for messages and the limits.
struct Session<'a> {
    admin: &'a mut dyn NvmeAdmin,
    device: &'a str,
    limits: &'a NvmeLimits,
}

impl Session<'_> {
    fn fail(&self, command: &str, e: NvmeIoError) -> NvmeEraseError {
        let device = self.device.to_owned();
        match e {
            NvmeIoError::NotNvme(errno) => NvmeEraseError::NotNvme { device, errno },
            NvmeIoError::Status(status) => NvmeEraseError::Status {
                device,
                command: command.to_owned(),
                status,
            },
            NvmeIoError::Cancelled(after) => NvmeEraseError::Timeout {
                device,
                what: command.to_owned(),
                after,
            },
            source => NvmeEraseError::Io {
                device,
                command: command.to_owned(),
                source,
            },
        }
    }

    fn send(
        &mut self,
        name: &str,
        cmd: &AdminCommand,
        data: Option<&mut [u8]>,
    ) -> Result<u32, NvmeEraseError> {
        self.admin.admin(cmd, data).map_err(|e| self.fail(name, e))
    }

    fn namespace_id(&mut self) -> Result<u32, NvmeEraseError> {
        self.admin
            .namespace_id()
            .map_err(|e| self.fail("NVME_IOCTL_ID", e))
    }

    fn identify(
        &mut self,
        cns: u32,
        nsid: u32,
        name: &str,
    ) -> Result<Box<[u8; IDENTIFY_LEN]>, NvmeEraseError> {
        let mut buf = Box::new([0u8; IDENTIFY_LEN]);
        let cmd = AdminCommand {
            opcode: OPC_IDENTIFY,
            nsid,
            cdw10: cns,
            timeout: self.limits.admin_timeout,
            ..AdminCommand::default()
        };
        self.send(name, &cmd, Some(&mut buf[..]))?;
        Ok(buf)
    }

    fn identify_controller(&mut self) -> Result<IdentifyController, NvmeEraseError> {
        let data = self.identify(CNS_CONTROLLER, 0, "Identify Controller")?;
        Ok(IdentifyController::parse(&data))
    }

    fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace, NvmeEraseError> {
        let data = self.identify(CNS_NAMESPACE, nsid, "Identify Namespace")?;
        Ok(IdentifyNamespace::parse(&data))
    }

    fn active_namespaces(&mut self) -> Result<Vec<u32>, NvmeEraseError> {
        let data = self.identify(CNS_ACTIVE_NSIDS, 0, "Identify Active Namespace ID list")?;
        Ok(data
            .chunks_exact(4)
            .map(|c| le32(c, 0))
            .take_while(|&id| id != 0)
            .collect())
    }

    fn sanitize_status(&mut self) -> Result<SanitizeStatus, NvmeEraseError> {
        let mut buf = [0u8; SANITIZE_LOG_LEN];
        let dwords = u32::try_from(SANITIZE_LOG_LEN / 4 - 1).expect("small constant");
        let cmd = AdminCommand {
            opcode: OPC_GET_LOG_PAGE,
            nsid: NSID_ALL,
            cdw10: LID_SANITIZE_STATUS | (dwords << 16),
            timeout: self.limits.admin_timeout,
            ..AdminCommand::default()
        };
        self.send("Get Log Page (Sanitize Status)", &cmd, Some(&mut buf))?;
        Ok(SanitizeStatus::parse(&buf))
    }

    /// Polls the Sanitize Status log page until the operation ends, reporting its
    /// progress (`reported`: the SPROG value the caller already passed on). Only a
    /// completed status is success.
    fn wait_for_sanitize(
        &mut self,
        method: NvmeMethod,
        reported: Option<u16>,
        progress: &mut dyn FnMut(f64),
    ) -> Result<(), NvmeEraseError> {
        let start = Instant::now();
        let mut last = reported;
        loop {
            let st = self.sanitize_status()?;
            match st.status() {
                SSTAT_COMPLETED | SSTAT_COMPLETED_NO_DEALLOCATE => {
                    progress(1.0);
                    return Ok(());
                }
                SSTAT_FAILED => {
                    return Err(NvmeEraseError::SanitizeFailed {
                        device: self.device.to_owned(),
                        method,
                        sstat: st.sstat,
                    })
                }
                SSTAT_IN_PROGRESS => {
                    if last != Some(st.sprog) {
                        last = Some(st.sprog);
                        tracing::debug!(
                            device = self.device,
                            progress = st.fraction(),
                            "sanitize running"
                        );
                        progress(st.fraction());
                    }
                }
                // "Never sanitized" or a reserved value right after a successful Sanitize
                // command: not finished, whatever it means; keep polling until the limit.
                other => {
                    let meaning = if other == SSTAT_NEVER {
                        "never sanitized"
                    } else {
                        "a reserved status"
                    };
                    tracing::debug!(
                        device = self.device,
                        sstat = other,
                        meaning,
                        "sanitize not reported running yet"
                    );
                }
            }
            if start.elapsed() >= self.limits.sanitize_timeout {
                return Err(NvmeEraseError::Timeout {
                    device: self.device.to_owned(),
                    what: format!("sanitize ({method})"),
                    after: self.limits.sanitize_timeout,
                });
            }
            std::thread::sleep(self.limits.poll_interval);
        }
    }
}

/// Format NVM with secure erase on the namespace behind `admin` (spec 5.4).
pub fn format_erase(
    admin: &mut dyn NvmeAdmin,
    device: &str,
    progress: &mut dyn FnMut(f64),
    limits: &NvmeLimits,
) -> Result<NvmeErased, NvmeEraseError> {
    let start = Instant::now();
    let mut s = Session {
        admin,
        device,
        limits,
    };
    let nsid = s.namespace_id()?;
    let ctrl = s.identify_controller()?;
    if ctrl.oacs & OACS_FORMAT == 0 {
        return Err(NvmeEraseError::FormatUnsupported {
            device: device.to_owned(),
            oacs: ctrl.oacs,
        });
    }
    let ns = s.identify_namespace(nsid)?;
    if ns.lba_format() > ns.nlbaf {
        return Err(NvmeEraseError::BadIdentify {
            device: device.to_owned(),
            reason: format!(
                "current LBA format {} is beyond the {} formats the namespace lists",
                ns.lba_format(),
                u16::from(ns.nlbaf) + 1
            ),
        });
    }
    let (ses, method) = if ctrl.fna & FNA_CRYPTO != 0 {
        (SES_CRYPTO, NvmeMethod::FormatCrypto)
    } else {
        (SES_USER_DATA, NvmeMethod::FormatUserData)
    };
    let cmd = AdminCommand {
        opcode: OPC_FORMAT_NVM,
        nsid,
        cdw10: ns.format_cdw10(ses),
        timeout: limits.format_timeout,
        ..AdminCommand::default()
    };
    tracing::info!(
        device, nsid, %method, serial = %ctrl.serial, model = %ctrl.model,
        lba_format = ns.lba_format(), "NVMe Format NVM with secure erase"
    );
    progress(0.0);
    s.send(&format!("Format NVM (SES {ses})"), &cmd, None)?;
    progress(1.0);
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(device, %method, seconds, "NVMe format done");
    Ok(NvmeErased {
        device: device.to_owned(),
        method,
        serial: ctrl.serial,
        model: ctrl.model,
        seconds,
        waited_for_running_sanitize: false,
    })
}

/// The Sanitize command's CDW10/CDW11 for `choice` on a controller with `sanicap`.
fn sanitize_action(
    device: &str,
    choice: SanitizeChoice,
    sanicap: u32,
) -> Result<(NvmeMethod, u32, u32), NvmeEraseError> {
    if sanicap & (SANICAP_CRYPTO | SANICAP_BLOCK | SANICAP_OVERWRITE) == 0 {
        return Err(NvmeEraseError::SanitizeUnsupported {
            device: device.to_owned(),
            sanicap,
        });
    }
    let choice = match choice {
        SanitizeChoice::BestAvailable if sanicap & SANICAP_CRYPTO != 0 => SanitizeChoice::Crypto,
        SanitizeChoice::BestAvailable if sanicap & SANICAP_BLOCK != 0 => SanitizeChoice::Block,
        SanitizeChoice::BestAvailable => SanitizeChoice::Overwrite {
            passes: 1,
            pattern: 0,
        },
        explicit => explicit,
    };
    let (bit, action, method, cdw10, cdw11) = match choice {
        SanitizeChoice::Crypto => (
            SANICAP_CRYPTO,
            "crypto erase",
            NvmeMethod::SanitizeCrypto,
            SANACT_CRYPTO,
            0,
        ),
        SanitizeChoice::Block => (
            SANICAP_BLOCK,
            "block erase",
            NvmeMethod::SanitizeBlock,
            SANACT_BLOCK,
            0,
        ),
        SanitizeChoice::Overwrite { passes, pattern } => {
            if !(1..=16).contains(&passes) {
                return Err(NvmeEraseError::InvalidRequest {
                    device: device.to_owned(),
                    reason: format!("overwrite pass count {passes} is not within 1..=16"),
                });
            }
            // OWPASS is 4 bits; 0 means 16 passes.
            let owpass = u32::from(passes) & 0x0f;
            (
                SANICAP_OVERWRITE,
                "overwrite",
                NvmeMethod::SanitizeOverwrite,
                SANACT_OVERWRITE | (owpass << 4),
                pattern,
            )
        }
        SanitizeChoice::BestAvailable => unreachable!("resolved above"),
    };
    if sanicap & bit == 0 {
        return Err(NvmeEraseError::SanitizeActionUnsupported {
            device: device.to_owned(),
            action,
            sanicap,
        });
    }
    Ok((method, cdw10, cdw11))
}

/// Sanitizes the controller behind `admin` and waits for the operation to end. A
/// sanitize already running is waited for instead of starting another. Refused when
/// other namespaces than `device`'s are active, since sanitize erases them all.
pub fn sanitize(
    admin: &mut dyn NvmeAdmin,
    device: &str,
    choice: SanitizeChoice,
    progress: &mut dyn FnMut(f64),
    limits: &NvmeLimits,
) -> Result<NvmeErased, NvmeEraseError> {
    let start = Instant::now();
    let mut s = Session {
        admin,
        device,
        limits,
    };
    let nsid = s.namespace_id()?;
    let ctrl = s.identify_controller()?;
    let (method, cdw10, cdw11) = sanitize_action(device, choice, ctrl.sanicap)?;
    let before = s.sanitize_status()?;
    let (method, waited) = if before.status() == SSTAT_IN_PROGRESS {
        // A sanitize survives resets and reboots; a new command would be refused, and the
        // running one erases everything anyway.
        let running = NvmeMethod::from_sanact(before.scdw10 & 0x7);
        tracing::warn!(
            device, %running, progress = before.fraction(),
            "a sanitize is already running: waiting for it instead of starting one"
        );
        progress(before.fraction());
        s.wait_for_sanitize(running, Some(before.sprog), progress)?;
        (running, true)
    } else {
        let others: Vec<String> = s
            .active_namespaces()?
            .into_iter()
            .filter(|&id| id != nsid)
            .map(|id| id.to_string())
            .collect();
        if !others.is_empty() {
            return Err(NvmeEraseError::OtherNamespaces {
                device: device.to_owned(),
                others: others.join(", "),
            });
        }
        if before.status() == SSTAT_FAILED {
            tracing::warn!(
                device,
                "the last sanitize failed; a new one is the recovery"
            );
        }
        let cmd = AdminCommand {
            opcode: OPC_SANITIZE,
            cdw10,
            cdw11,
            timeout: limits.admin_timeout,
            ..AdminCommand::default()
        };
        tracing::info!(
            device, nsid, %method, serial = %ctrl.serial, model = %ctrl.model,
            "NVMe sanitize"
        );
        progress(0.0);
        s.send(&format!("Sanitize ({method})"), &cmd, None)?;
        // The controller updates the log page when the operation starts, before the
        // command completes, so from here on the page describes this operation.
        s.wait_for_sanitize(method, None, progress)?;
        (method, false)
    };
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(device, %method, seconds, "NVMe sanitize done");
    Ok(NvmeErased {
        device: device.to_owned(),
        method,
        serial: ctrl.serial,
        model: ctrl.model,
        seconds,
        waited_for_running_sanitize: waited,
    })
}

/// Runs `mode` over `admin` for `device` (its name in messages and the report).
pub fn erase_with(
    admin: &mut dyn NvmeAdmin,
    device: &str,
    mode: NvmeMode,
    progress: &mut dyn FnMut(f64),
    limits: &NvmeLimits,
) -> Result<NvmeErased, NvmeEraseError> {
    match mode {
        NvmeMode::Format => format_erase(admin, device, progress, limits),
        NvmeMode::Sanitize(choice) => sanitize(admin, device, choice, progress, limits),
    }
}

/// Opens `dev_path` (an NVMe namespace block device the caller has already checked
/// against the allow-list) read-write and erases it as `mode` says.
pub fn erase_nvme(
    dev_path: &Path,
    mode: NvmeMode,
    progress: &mut dyn FnMut(f64),
    limits: &NvmeLimits,
) -> Result<NvmeErased, NvmeEraseError> {
    let device = dev_path.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_path)
        .map_err(|source| NvmeEraseError::Open {
            device: device.clone(),
            source,
        })?;
    erase_with(&mut DeviceAdmin::new(file), &device, mode, progress, limits)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::bytes::{put_le16, put_le32, put_le64};

    const DEV: &str = "/dev/nvme0n1";
    const NSID: u32 = 1;
    const SERIAL: &str = "S4EWNX0R123456";
    const MODEL: &str = "Samsung SSD 980 PRO 1TB";

    /// Identify Controller data as a drive would return it.
    fn ctrl(oacs: u16, fna: u8, sanicap: u32) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_LEN];
        d[0..2].copy_from_slice(&0x144du16.to_le_bytes());
        d[4..24].copy_from_slice(format!("{SERIAL:<20}").as_bytes());
        d[24..64].copy_from_slice(format!("{MODEL:<40}").as_bytes());
        put_le16(&mut d, 256, oacs);
        put_le32(&mut d, 328, sanicap);
        d[524] = fna;
        d
    }

    /// Identify Namespace data: 2 GiB of 512-byte blocks, format 1 of 2.
    fn ns(nlbaf: u8, flbas: u8, dps: u8) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_LEN];
        put_le64(&mut d, 0, 4 << 20);
        put_le64(&mut d, 8, 4 << 20);
        d[25] = nlbaf;
        d[26] = flbas;
        d[29] = dps;
        d
    }

    fn log(status: u16, sprog: u16, scdw10: u32) -> Vec<u8> {
        let mut d = vec![0u8; SANITIZE_LOG_LEN];
        put_le16(&mut d, 0, sprog);
        // GDE (bit 8) set as drives do; only bits 0-2 are the status.
        put_le16(&mut d, 2, status | 0x100);
        put_le32(&mut d, 4, scdw10);
        d
    }

    /// A scripted controller that records every command it receives.
    struct Fake {
        nsid: Result<u32, NvmeIoError>,
        ctrl: Vec<u8>,
        ns: Vec<u8>,
        active: Vec<u32>,
        /// Successive Sanitize Status pages; the last one repeats.
        logs: VecDeque<Vec<u8>>,
        fail: Option<(u8, NvmeIoError)>,
        sent: Vec<AdminCommand>,
    }

    impl Fake {
        fn new(ctrl: Vec<u8>) -> Self {
            Self {
                nsid: Ok(NSID),
                ctrl,
                ns: ns(1, 0x01, 0),
                active: vec![NSID],
                logs: VecDeque::from([log(SSTAT_NEVER, 0, 0)]),
                fail: None,
                sent: Vec::new(),
            }
        }

        fn logs(mut self, logs: Vec<Vec<u8>>) -> Self {
            self.logs = logs.into();
            self
        }

        /// The destructive commands sent (Format NVM, Sanitize).
        fn destructive(&self) -> Vec<AdminCommand> {
            self.sent
                .iter()
                .filter(|c| matches!(c.opcode, OPC_FORMAT_NVM | OPC_SANITIZE))
                .copied()
                .collect()
        }
    }

    impl NvmeAdmin for Fake {
        fn admin(
            &mut self,
            cmd: &AdminCommand,
            data: Option<&mut [u8]>,
        ) -> Result<u32, NvmeIoError> {
            self.sent.push(*cmd);
            if let Some((op, e)) = self.fail {
                if op == cmd.opcode {
                    return Err(e);
                }
            }
            let reply: Option<Vec<u8>> = match (cmd.opcode, cmd.cdw10) {
                (OPC_IDENTIFY, CNS_CONTROLLER) => Some(self.ctrl.clone()),
                (OPC_IDENTIFY, CNS_NAMESPACE) => {
                    assert_eq!(cmd.nsid, NSID, "Identify Namespace of our namespace");
                    Some(self.ns.clone())
                }
                (OPC_IDENTIFY, CNS_ACTIVE_NSIDS) => {
                    let mut d = vec![0u8; IDENTIFY_LEN];
                    for (i, id) in self.active.iter().enumerate() {
                        put_le32(&mut d, i * 4, *id);
                    }
                    Some(d)
                }
                (OPC_GET_LOG_PAGE, c) => {
                    assert_eq!(c, 0x007f_0081, "Sanitize Status, 128 dwords");
                    assert_eq!(cmd.nsid, NSID_ALL);
                    let page = if self.logs.len() > 1 {
                        self.logs.pop_front()
                    } else {
                        self.logs.front().cloned()
                    };
                    Some(page.expect("a scripted log page"))
                }
                (OPC_FORMAT_NVM | OPC_SANITIZE, _) => None,
                other => panic!("unexpected command {other:x?}"),
            };
            match (reply, data) {
                (Some(r), Some(buf)) => {
                    assert_eq!(buf.len(), r.len(), "buffer size of {:#x}", cmd.opcode);
                    buf.copy_from_slice(&r);
                }
                (None, None) => {}
                (r, d) => panic!(
                    "data mismatch: reply {} buffer {}",
                    r.is_some(),
                    d.is_some()
                ),
            }
            Ok(0)
        }

        fn namespace_id(&mut self) -> Result<u32, NvmeIoError> {
            self.nsid
        }
    }

    fn fast() -> NvmeLimits {
        NvmeLimits {
            admin_timeout: Duration::from_secs(7),
            format_timeout: Duration::from_secs(1234),
            sanitize_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(1),
        }
    }

    fn run(fake: &mut Fake, mode: NvmeMode) -> (Result<NvmeErased, NvmeEraseError>, Vec<f64>) {
        let mut seen = Vec::new();
        let r = erase_with(fake, DEV, mode, &mut |p| seen.push(p), &fast());
        (r, seen)
    }

    #[test]
    fn identify_controller_fields() {
        let c = IdentifyController::parse(&ctrl(0x0017, 0x04, 0x0000_0003).try_into().unwrap());
        assert_eq!(c.serial, SERIAL);
        assert_eq!(c.model, MODEL);
        assert_eq!((c.oacs, c.fna, c.sanicap), (0x17, 0x04, 3));
        let n = IdentifyNamespace::parse(&ns(63, 0x32, 0x09).try_into().unwrap());
        assert_eq!((n.nsze, n.nlbaf, n.flbas, n.dps), (4 << 20, 63, 0x32, 0x09));
        assert_eq!(n.lba_format(), 0x12);
    }

    #[test]
    fn format_uses_crypto_erase_when_supported() {
        let mut f = Fake::new(ctrl(0x0017, 0x04, 0));
        let (r, seen) = run(&mut f, NvmeMode::Format);
        let done = r.expect("format");
        assert_eq!(done.method, NvmeMethod::FormatCrypto);
        assert_eq!(done.method.as_str(), "nvme_format_crypto");
        assert_eq!((done.serial.as_str(), done.model.as_str()), (SERIAL, MODEL));
        assert_eq!(done.device, DEV);
        assert!(!done.waited_for_running_sanitize);
        let d = f.destructive();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].opcode, 0x80);
        assert_eq!(d[0].nsid, NSID);
        // LBAF 1 kept, SES 2.
        assert_eq!(d[0].cdw10, 0x0000_0401);
        assert_eq!(d[0].timeout, Duration::from_secs(1234));
        assert_eq!(seen, [0.0, 1.0]);
    }

    #[test]
    fn format_falls_back_to_user_data_erase() {
        let mut f = Fake::new(ctrl(0x0002, 0x03, 0));
        let (r, _) = run(&mut f, NvmeMode::Format);
        assert_eq!(r.expect("format").method, NvmeMethod::FormatUserData);
        let d = f.destructive();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].opcode, d[0].cdw10), (0x80, 0x0000_0201));
    }

    #[test]
    fn format_keeps_the_namespace_layout() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        // Format 18 (upper bits in FLBAS 5-6), extended metadata, PI type 1 first.
        f.ns = ns(63, 0x32, 0x09);
        run(&mut f, NvmeMode::Format).0.expect("format");
        // LBAF 2 | MSET | PI 1 | PIL | SES 2 | LBAFU 1.
        assert_eq!(
            f.destructive()[0].cdw10,
            0x2 | 0x10 | 0x20 | 0x100 | 0x400 | 0x1000
        );
    }

    #[test]
    fn format_refuses_a_format_index_beyond_the_list() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        f.ns = ns(1, 0x05, 0);
        let e = run(&mut f, NvmeMode::Format).0.unwrap_err();
        assert!(matches!(e, NvmeEraseError::BadIdentify { .. }), "{e}");
        assert!(f.destructive().is_empty());
    }

    #[test]
    fn format_unsupported_sends_nothing_destructive() {
        let mut f = Fake::new(ctrl(0x0005, 0x04, 0x7));
        let e = run(&mut f, NvmeMode::Format).0.unwrap_err();
        assert!(matches!(
            e,
            NvmeEraseError::FormatUnsupported { oacs: 5, .. }
        ));
        let msg = e.to_string();
        assert!(
            msg.contains(DEV) && msg.contains("does not support Format NVM"),
            "{msg}"
        );
        assert!(
            msg.contains("did not return any supported format modes"),
            "{msg}"
        );
        assert!(f.destructive().is_empty());
        // Only Identify Controller was asked.
        assert_eq!(f.sent.len(), 1);
    }

    #[test]
    fn an_nvme_status_is_reported_with_sct_and_sc() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        f.fail = Some((OPC_FORMAT_NVM, NvmeIoError::Status(NvmeStatus(0x410a))));
        let e = run(&mut f, NvmeMode::Format).0.unwrap_err();
        assert!(matches!(e, NvmeEraseError::Status { .. }));
        assert_eq!(
            e.to_string(),
            "/dev/nvme0n1: Format NVM (SES 2) failed with NVMe status SCT 0x1 SC 0x0a \
             (Invalid Format) [do not retry]"
        );
    }

    #[test]
    fn a_cancelled_format_is_a_timeout() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        f.fail = Some((
            OPC_FORMAT_NVM,
            NvmeIoError::Cancelled(Duration::from_secs(1234)),
        ));
        let e = run(&mut f, NvmeMode::Format).0.unwrap_err();
        assert!(matches!(e, NvmeEraseError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not finish within 1234s"), "{e}");
    }

    #[test]
    fn a_device_without_nvme_ioctls_is_not_nvme_and_gets_no_command() {
        for mode in [
            NvmeMode::Format,
            NvmeMode::Sanitize(SanitizeChoice::BestAvailable),
        ] {
            let mut f = Fake::new(ctrl(0x0002, 0x04, 0x7));
            f.nsid = Err(NvmeIoError::NotNvme(Errno::ENOTTY));
            let e = run(&mut f, mode).0.unwrap_err();
            assert!(
                matches!(
                    e,
                    NvmeEraseError::NotNvme {
                        errno: Errno::ENOTTY,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e
                .to_string()
                .starts_with("/dev/nvme0n1 is not an NVMe namespace device"));
            assert!(f.sent.is_empty());
        }
    }

    #[test]
    fn an_ioctl_error_is_not_mistaken_for_a_status() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        f.fail = Some((OPC_IDENTIFY, NvmeIoError::Ioctl(Errno::EACCES)));
        let e = run(&mut f, NvmeMode::Format).0.unwrap_err();
        assert!(matches!(e, NvmeEraseError::Io { .. }), "{e}");
        assert!(e.to_string().contains("Identify Controller failed"), "{e}");
        assert!(f.destructive().is_empty());
    }

    #[test]
    fn sanitize_picks_the_action_the_controller_supports() {
        let owpass16 = SanitizeChoice::Overwrite {
            passes: 16,
            pattern: 0xdead_beef,
        };
        let cases = [
            (
                0x7,
                SanitizeChoice::BestAvailable,
                0x04,
                0,
                NvmeMethod::SanitizeCrypto,
            ),
            (
                0x6,
                SanitizeChoice::BestAvailable,
                0x02,
                0,
                NvmeMethod::SanitizeBlock,
            ),
            (
                0x4,
                SanitizeChoice::BestAvailable,
                0x13,
                0,
                NvmeMethod::SanitizeOverwrite,
            ),
            (
                0x7,
                SanitizeChoice::Block,
                0x02,
                0,
                NvmeMethod::SanitizeBlock,
            ),
            (
                0x1,
                SanitizeChoice::Crypto,
                0x04,
                0,
                NvmeMethod::SanitizeCrypto,
            ),
            (
                0x7,
                owpass16,
                0x03,
                0xdead_beef,
                NvmeMethod::SanitizeOverwrite,
            ),
            (
                0x4,
                SanitizeChoice::Overwrite {
                    passes: 3,
                    pattern: 0x5a5a_5a5a,
                },
                0x33,
                0x5a5a_5a5a,
                NvmeMethod::SanitizeOverwrite,
            ),
        ];
        for (sanicap, choice, cdw10, cdw11, method) in cases {
            let mut f = Fake::new(ctrl(0x0002, 0x04, sanicap)).logs(vec![
                log(SSTAT_NEVER, 0, 0),
                log(SSTAT_IN_PROGRESS, 0, cdw10),
                log(SSTAT_COMPLETED, 0xffff, cdw10),
            ]);
            let (r, _) = run(&mut f, NvmeMode::Sanitize(choice));
            let done = r.unwrap_or_else(|e| panic!("{choice:?}: {e}"));
            assert_eq!(done.method, method, "{choice:?}");
            let d = f.destructive();
            assert_eq!(d.len(), 1, "{choice:?}");
            assert_eq!(
                (d[0].opcode, d[0].nsid, d[0].cdw10, d[0].cdw11),
                (0x84, 0, cdw10, cdw11),
                "{choice:?}"
            );
            assert_eq!(d[0].timeout, Duration::from_secs(7));
        }
    }

    #[test]
    fn sanitize_unsupported_sends_nothing_destructive() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0));
        let e = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::BestAvailable))
            .0
            .unwrap_err();
        assert!(
            matches!(e, NvmeEraseError::SanitizeUnsupported { .. }),
            "{e}"
        );
        assert!(e
            .to_string()
            .contains("/dev/nvme0n1 does not support Sanitize"));
        assert!(f.destructive().is_empty());

        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x2));
        let e = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::Crypto))
            .0
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/nvme0n1 does not support the sanitize action crypto erase (SANICAP 0x00000002)"
        );
        assert!(f.destructive().is_empty());

        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x4));
        let bad = SanitizeChoice::Overwrite {
            passes: 17,
            pattern: 0,
        };
        let e = run(&mut f, NvmeMode::Sanitize(bad)).0.unwrap_err();
        assert!(matches!(e, NvmeEraseError::InvalidRequest { .. }), "{e}");
        assert!(f.destructive().is_empty());
    }

    #[test]
    fn sanitize_refuses_when_other_namespaces_would_be_erased() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x7));
        f.active = vec![1, 2, 5];
        let e = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::BestAvailable))
            .0
            .unwrap_err();
        assert!(e.to_string().contains("namespace(s) 2, 5"), "{e}");
        assert!(f.destructive().is_empty());
    }

    #[test]
    fn a_running_sanitize_is_waited_for_not_restarted() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x7)).logs(vec![
            log(SSTAT_IN_PROGRESS, 0x8000, 0x02),
            log(SSTAT_IN_PROGRESS, 0xc000, 0x02),
            log(SSTAT_COMPLETED, 0xffff, 0x02),
        ]);
        let (r, seen) = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::Crypto));
        let done = r.expect("waited");
        assert!(done.waited_for_running_sanitize);
        // The running operation's action, from SCDW10, not the one asked for.
        assert_eq!(done.method, NvmeMethod::SanitizeBlock);
        assert!(f.destructive().is_empty());
        assert_eq!(seen, [0.5, 0.75, 1.0]);
    }

    #[test]
    fn a_sanitize_failing_midway_is_an_error() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x1)).logs(vec![
            log(SSTAT_NEVER, 0, 0),
            log(SSTAT_IN_PROGRESS, 0x1000, 0x04),
            log(SSTAT_FAILED, 0x1000, 0x04),
        ]);
        let e = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::BestAvailable))
            .0
            .unwrap_err();
        assert!(
            matches!(
                e,
                NvmeEraseError::SanitizeFailed {
                    method: NvmeMethod::SanitizeCrypto,
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("/dev/nvme0n1: sanitize (nvme_sanitize_crypto) failed"),
            "{msg}"
        );
        assert_eq!(f.destructive().len(), 1);
    }

    #[test]
    fn a_failed_earlier_sanitize_is_recovered_by_a_new_one() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x2)).logs(vec![
            log(SSTAT_FAILED, 0, 0x02),
            log(SSTAT_COMPLETED_NO_DEALLOCATE, 0xffff, 0x02),
        ]);
        let (r, _) = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::BestAvailable));
        assert_eq!(r.expect("sanitize").method, NvmeMethod::SanitizeBlock);
        assert_eq!(f.destructive().len(), 1);
    }

    #[test]
    fn a_refused_sanitize_command_is_an_error() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x1));
        f.fail = Some((OPC_SANITIZE, NvmeIoError::Status(NvmeStatus(0x001d))));
        let e = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::Crypto))
            .0
            .unwrap_err();
        assert!(e.to_string().contains("Sanitize In Progress"), "{e}");
    }

    #[test]
    fn sanitize_progress_is_reported_as_it_grows() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x1)).logs(vec![
            log(SSTAT_COMPLETED, 0xffff, 0x04),
            log(SSTAT_IN_PROGRESS, 0x4000, 0x04),
            log(SSTAT_IN_PROGRESS, 0x4000, 0x04),
            log(SSTAT_IN_PROGRESS, 0x8000, 0x04),
            log(SSTAT_IN_PROGRESS, 0xc000, 0x04),
            log(SSTAT_COMPLETED, 0xffff, 0x04),
        ]);
        let (r, seen) = run(&mut f, NvmeMode::Sanitize(SanitizeChoice::BestAvailable));
        r.expect("sanitize");
        assert_eq!(seen, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_sanitize_that_never_ends_times_out() {
        let mut f = Fake::new(ctrl(0x0002, 0x04, 0x1)).logs(vec![
            log(SSTAT_NEVER, 0, 0),
            log(SSTAT_IN_PROGRESS, 0x0100, 0x04),
        ]);
        let limits = NvmeLimits {
            sanitize_timeout: Duration::from_millis(30),
            poll_interval: Duration::from_millis(2),
            ..fast()
        };
        let start = Instant::now();
        let e = erase_with(
            &mut f,
            DEV,
            NvmeMode::Sanitize(SanitizeChoice::Crypto),
            &mut |_| {},
            &limits,
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, NvmeEraseError::Timeout { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "/dev/nvme0n1: sanitize (nvme_sanitize_crypto) did not finish within 30ms"
        );
        let polls = f
            .sent
            .iter()
            .filter(|c| c.opcode == OPC_GET_LOG_PAGE)
            .count();
        assert!(polls >= 3, "{polls} polls");
    }
}
