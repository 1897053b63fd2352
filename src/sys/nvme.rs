//! The NVMe admin passthrough (`<linux/nvme_ioctl.h>`, ioctl type 'N'): one admin command
//! sent to the controller behind a namespace block device (NVME_IOCTL_ADMIN_CMD) and the
//! namespace id of that device (NVME_IOCTL_ID). Callers see safe functions taking a
//! `&File`; the kernel's answer is split into "this is no NVMe device", "the ioctl
//! failed" and "the controller completed the command with an error status".
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;

/// `struct nvme_passthru_cmd` (alias `nvme_admin_cmd`) from `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Debug, Default)]
struct NvmePassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(std::mem::size_of::<NvmePassthruCmd>() == 72);

// <linux/nvme_ioctl.h>: NVME_IOCTL_ID _IO('N', 0x40),
// NVME_IOCTL_ADMIN_CMD _IOWR('N', 0x41, struct nvme_admin_cmd).
nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);
nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, NvmePassthruCmd);

/// One admin command: the submission queue entry fields user space may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminCommand {
    /// Admin opcode (0x06 Identify, 0x02 Get Log Page, 0x80 Format NVM, 0x84 Sanitize).
    pub opcode: u8,
    /// Namespace id the command addresses (0: none).
    pub nsid: u32,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
    /// How long the kernel lets the command run before it aborts it and resets the
    /// controller; sent in milliseconds, at least 1 (0 would mean the kernel's default).
    pub timeout: Duration,
}

impl AdminCommand {
    /// `timeout` in the ioctl's milliseconds, clamped to 1..=u32::MAX.
    fn timeout_ms(&self) -> u32 {
        u32::try_from(self.timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// The status field of a completion queue entry as the kernel returns it (the
/// completion's status halfword without the phase bit): SC in bits 0-7, SCT in 8-10,
/// More in 13, DNR in 14.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmeStatus(pub u16);

impl NvmeStatus {
    /// Status Code Type (0 generic, 1 command specific, 2 media, 3 path).
    pub fn sct(self) -> u8 {
        self.0.to_le_bytes()[1] & 0x7
    }

    /// Status Code within its type.
    pub fn sc(self) -> u8 {
        self.0.to_le_bytes()[0]
    }

    /// Do Not Retry: the same command would fail again.
    pub fn dnr(self) -> bool {
        self.0 & 0x4000 != 0
    }

    /// The name the NVMe base specification gives the status, for the common ones.
    pub fn name(self) -> Option<&'static str> {
        Some(match (self.sct(), self.sc()) {
            (0, 0x01) => "Invalid Command Opcode",
            (0, 0x02) => "Invalid Field in Command",
            (0, 0x04) => "Data Transfer Error",
            (0, 0x06) => "Internal Error",
            (0, 0x07) => "Command Abort Requested",
            (0, 0x0b) => "Invalid Namespace or Format",
            (0, 0x0c) => "Command Sequence Error",
            (0, 0x1c) => "Sanitize Failed",
            (0, 0x1d) => "Sanitize In Progress",
            (0, 0x20) => "Namespace is Write Protected",
            (0, 0x21) => "Command Interrupted",
            (1, 0x0a) => "Invalid Format",
            (2, 0x81) => "Unrecovered Read Error",
            (3, 0x71) => "Command Aborted By Host",
            _ => return None,
        })
    }
}

impl std::fmt::Display for NvmeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SCT 0x{:x} SC 0x{:02x}", self.sct(), self.sc())?;
        if let Some(name) = self.name() {
            write!(f, " ({name})")?;
        }
        if self.dnr() {
            write!(f, " [do not retry]")?;
        }
        Ok(())
    }
}

/// Why an NVMe ioctl did not complete successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NvmeIoError {
    /// The device does not know the NVMe ioctls (ENOTTY, or EINVAL from drivers such as
    /// loop that refuse unknown requests): it is not an NVMe namespace.
    #[error("not an NVMe namespace device (ioctl answered {0})")]
    NotNvme(Errno),
    /// The kernel cancelled the command: its timeout expired or the controller was
    /// reset while it ran.
    #[error("the kernel cancelled the command (timeout of {0:?} expired or controller reset)")]
    Cancelled(Duration),
    /// The ioctl itself failed (EACCES without CAP_SYS_ADMIN, EIO, ...).
    #[error("NVMe ioctl failed: {0}")]
    Ioctl(Errno),
    /// The controller completed the command with an error status.
    #[error("NVMe status {0}")]
    Status(NvmeStatus),
    /// The data buffer is longer than the ioctl can describe.
    #[error("data buffer of {0} bytes is too large for one NVMe command")]
    BufferTooLarge(usize),
}

fn classify(errno: Errno) -> NvmeIoError {
    match errno {
        Errno::ENOTTY | Errno::EINVAL => NvmeIoError::NotNvme(errno),
        other => NvmeIoError::Ioctl(other),
    }
}

/// Sends `cmd` to the controller behind `dev` (a namespace block device or a controller
/// character device), with `data` as the command's data buffer (read or written by the
/// controller as the opcode's direction says). Returns dword 0 of the completion.
pub fn admin(dev: &File, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeIoError> {
    let (addr, data_len) = match data {
        Some(buf) => (
            buf.as_mut_ptr() as u64,
            u32::try_from(buf.len()).map_err(|_| NvmeIoError::BufferTooLarge(buf.len()))?,
        ),
        None => (0, 0),
    };
    let mut raw = NvmePassthruCmd {
        opcode: cmd.opcode,
        nsid: cmd.nsid,
        addr,
        data_len,
        cdw10: cmd.cdw10,
        cdw11: cmd.cdw11,
        cdw12: cmd.cdw12,
        cdw13: cmd.cdw13,
        cdw14: cmd.cdw14,
        cdw15: cmd.cdw15,
        timeout_ms: cmd.timeout_ms(),
        ..NvmePassthruCmd::default()
    };
    // SAFETY: the fd is open for the lifetime of `dev`; `raw` is a correctly sized
    // `nvme_passthru_cmd` the kernel reads and writes (`result`) during the call; its
    // `addr`/`data_len` describe `data`, which is exclusively borrowed across the call,
    // or are 0 when there is no buffer. No metadata buffer is passed.
    let ret = unsafe { nvme_ioctl_admin_cmd(dev.as_raw_fd(), &mut raw) };
    match ret {
        Ok(0) => Ok(raw.result),
        Ok(status) => Err(NvmeIoError::Status(NvmeStatus(
            u16::try_from(status & 0xffff).unwrap_or(u16::MAX),
        ))),
        // The passthrough waits uninterruptibly, so EINTR only comes from a cancelled
        // request (timeout or controller reset).
        Err(Errno::EINTR) => Err(NvmeIoError::Cancelled(cmd.timeout)),
        Err(errno) => Err(classify(errno)),
    }
}

/// The namespace id of the NVMe namespace block device `dev`.
pub fn namespace_id(dev: &File) -> Result<u32, NvmeIoError> {
    // SAFETY: the fd is open for the lifetime of `dev`; NVME_IOCTL_ID takes no argument
    // and returns the namespace id as the call's value.
    let ret = unsafe { nvme_ioctl_id(dev.as_raw_fd()) }.map_err(classify)?;
    u32::try_from(ret).map_err(|_| NvmeIoError::Ioctl(Errno::ERANGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // _IO('N', 0x40) and _IOWR('N', 0x41, 72 bytes) on the generic ioctl layout.
        assert_eq!(nix::request_code_none!(b'N', 0x40), 0x4e40);
        assert_eq!(
            nix::request_code_readwrite!(b'N', 0x41, std::mem::size_of::<NvmePassthruCmd>()),
            0xc048_4e41
        );
    }

    #[test]
    fn status_fields_and_message() {
        let s = NvmeStatus(0x4002);
        assert_eq!((s.sct(), s.sc(), s.dnr()), (0, 2, true));
        assert_eq!(
            s.to_string(),
            "SCT 0x0 SC 0x02 (Invalid Field in Command) [do not retry]"
        );
        let s = NvmeStatus(0x010a);
        assert_eq!((s.sct(), s.sc(), s.dnr()), (1, 0x0a, false));
        assert_eq!(s.to_string(), "SCT 0x1 SC 0x0a (Invalid Format)");
        assert_eq!(NvmeStatus(0x02c5).to_string(), "SCT 0x2 SC 0xc5");
    }

    #[test]
    fn timeout_is_sent_in_clamped_milliseconds() {
        let mut c = AdminCommand {
            timeout: Duration::from_secs(3600),
            ..AdminCommand::default()
        };
        assert_eq!(c.timeout_ms(), 3_600_000);
        c.timeout = Duration::ZERO;
        assert_eq!(c.timeout_ms(), 1);
        c.timeout = Duration::from_secs(u64::MAX / 2);
        assert_eq!(c.timeout_ms(), u32::MAX);
    }

    #[test]
    fn a_regular_file_is_not_nvme() {
        let f = tempfile::tempfile().expect("temp file");
        assert!(matches!(namespace_id(&f), Err(NvmeIoError::NotNvme(_))));
        let mut buf = [0u8; 4096];
        let cmd = AdminCommand {
            opcode: 0x06,
            cdw10: 1,
            timeout: Duration::from_secs(1),
            ..AdminCommand::default()
        };
        assert!(matches!(
            admin(&f, &cmd, Some(&mut buf)),
            Err(NvmeIoError::NotNvme(Errno::ENOTTY))
        ));
        assert!(buf.iter().all(|&b| b == 0));
    }
}
