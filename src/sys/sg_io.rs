//! SCSI generic I/O on a block device (`SG_IO`, `<scsi/sg.h>`), used to send ATA
//! commands wrapped in ATA PASS-THROUGH(16) (SAT) to SATA disks behind libata, SAS HBAs
//! and USB bridges. Callers build the CDB (see `erase::ata`); this module moves the
//! bytes, returns the SCSI status, host/driver status and sense data, and decodes the
//! ATA registers a SAT layer returns in the sense data.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;

/// `SG_IO` from `<scsi/sg.h>`: not `_IOWR`-encoded, the bare number.
const SG_IO: u32 = 0x2285;
nix::ioctl_readwrite_bad!(sg_io_ioctl, SG_IO, SgIoHdr);

/// `SG_DXFER_NONE`, `SG_DXFER_TO_DEV`, `SG_DXFER_FROM_DEV`.
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_TO_DEV: libc::c_int = -2;
const SG_DXFER_FROM_DEV: libc::c_int = -3;

/// The kernel's internal "no such ioctl" code; some drivers leak it to user space.
const ENOIOCTLCMD: i32 = 515;

/// Sense buffer size handed to the kernel (SAT's descriptor sense with the ATA Status
/// Return descriptor needs 8 + 14 bytes).
const SENSE_LEN_U8: u8 = 32;
/// [`SENSE_LEN_U8`] as a length.
pub const SENSE_LEN: usize = SENSE_LEN_U8 as usize;

/// `DRIVER_SENSE`: the driver status bit saying the sense buffer is valid, not an error.
const DRIVER_SENSE: u16 = 0x08;

/// `struct sg_io_hdr` from `<scsi/sg.h>`.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SgIoHdr>() == 88);

/// Direction of the data phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    /// No data (the buffer must be empty).
    None,
    /// Device to host.
    In,
    /// Host to device.
    Out,
}

/// Why an `SG_IO` request did not reach the device.
#[derive(Debug, thiserror::Error)]
pub enum SgIoError {
    /// The device does not implement `SG_IO` (loop, virtio-blk, NVMe, dm, a file).
    #[error("the device does not accept SG_IO: {}", std::io::Error::from_raw_os_error(*.0))]
    NotSupported(i32),
    /// The ioctl itself failed (EIO, EPERM, ENOMEM, ...).
    #[error("SG_IO: {}", std::io::Error::from_raw_os_error(*.0))]
    Ioctl(i32),
    /// The request cannot be expressed (data buffer too large, data without direction).
    #[error("SG_IO request not expressible: {0}")]
    Request(&'static str),
}

/// What came back from a completed `SG_IO` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgOutcome {
    /// SCSI status (0 GOOD, 2 CHECK CONDITION, 8 BUSY, ...).
    pub status: u8,
    /// Host adapter status (0 DID_OK; 3 DID_TIME_OUT; ...).
    pub host_status: u16,
    /// Driver status (`DRIVER_SENSE` 0x08 only means the sense buffer is valid).
    pub driver_status: u16,
    /// The sense buffer; only the first `sense_len` bytes are meaningful.
    pub sense: [u8; SENSE_LEN],
    /// Bytes of sense data the kernel wrote.
    pub sense_len: u8,
    /// Bytes of the data buffer that were not transferred.
    pub resid: i32,
    /// How long the command took, in milliseconds.
    pub duration_ms: u32,
}

/// SCSI status CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;

impl SgOutcome {
    /// The valid part of the sense buffer.
    pub fn sense(&self) -> &[u8] {
        &self.sense[..usize::from(self.sense_len).min(SENSE_LEN)]
    }

    /// A host or driver status that says the command did not complete on the device
    /// (timeout, reset, bus error), as a readable reason.
    pub fn transport_failure(&self) -> Option<String> {
        let driver = self.driver_status & !DRIVER_SENSE;
        if self.host_status == 0 && driver == 0 {
            return None;
        }
        Some(format!(
            "host status {:#x} ({}), driver status {:#x}",
            self.host_status,
            host_status_name(self.host_status),
            self.driver_status
        ))
    }

    /// Sense key, ASC and ASCQ of the sense data (fixed or descriptor format).
    pub fn sense_key(&self) -> Option<SenseKey> {
        parse_sense_key(self.sense())
    }

    /// The ATA registers a SAT layer returned in the sense data (CK_COND set, or an
    /// ATA error), from the ATA Status Return descriptor or the fixed-format fields.
    pub fn ata_registers(&self) -> Option<AtaRegisters> {
        parse_ata_registers(self.sense())
    }
}

fn host_status_name(host: u16) -> &'static str {
    match host {
        0x00 => "ok",
        0x01 => "no connect",
        0x02 => "bus busy",
        0x03 => "timed out",
        0x04 => "bad target",
        0x05 => "aborted",
        0x06 => "parity error",
        0x07 => "host error",
        0x08 => "reset",
        0x09 => "bad interrupt",
        0x0a => "passthrough",
        0x0b => "soft error",
        0x0c => "imm retry",
        0x0d => "requeue",
        0x0e => "transport disrupted",
        0x0f => "transport failfast",
        _ => "unknown",
    }
}

/// Sense key and additional sense code of a CHECK CONDITION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseKey {
    /// Sense key (1 RECOVERED ERROR, 5 ILLEGAL REQUEST, 0xB ABORTED COMMAND, ...).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

/// The ATA task-file registers returned by ATA PASS-THROUGH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtaRegisters {
    /// ATA status (bit 0 ERR, bit 5 DF, bit 6 DRDY, bit 7 BSY).
    pub status: u8,
    /// ATA error (bit 2 ABRT).
    pub error: u8,
    /// Device register.
    pub device: u8,
    /// Count (16 bits when EXTEND).
    pub count: u16,
    /// LBA (48 bits when EXTEND).
    pub lba: u64,
}

/// ATA status ERR.
pub const ATA_STATUS_ERR: u8 = 0x01;
/// ATA status DF (device fault).
pub const ATA_STATUS_DF: u8 = 0x20;
/// ATA error ABRT.
pub const ATA_ERROR_ABRT: u8 = 0x04;

/// Sense key and ASC/ASCQ from fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
pub fn parse_sense_key(sense: &[u8]) -> Option<SenseKey> {
    match sense.first()? & 0x7f {
        0x70 | 0x71 if sense.len() >= 14 => Some(SenseKey {
            key: sense[2] & 0x0f,
            asc: sense[12],
            ascq: sense[13],
        }),
        0x72 | 0x73 if sense.len() >= 4 => Some(SenseKey {
            key: sense[1] & 0x0f,
            asc: sense[2],
            ascq: sense[3],
        }),
        _ => None,
    }
}

/// The ATA registers in sense data: the ATA Status Return descriptor (type 0x09) of
/// descriptor sense, or the INFORMATION/COMMAND-SPECIFIC fields of fixed sense that
/// SAT-3 defines for ASC/ASCQ 00/1D (ATA PASS-THROUGH INFORMATION AVAILABLE), which
/// libata sends when the disk's D_SENSE is off.
pub fn parse_ata_registers(sense: &[u8]) -> Option<AtaRegisters> {
    match sense.first()? & 0x7f {
        0x72 | 0x73 => {
            let total = sense.len().min(8 + usize::from(*sense.get(7)?));
            let mut at = 8;
            while at + 2 <= total {
                let kind = sense[at];
                let len = usize::from(sense[at + 1]) + 2;
                if kind == 0x09 && len >= 14 && at + 14 <= total {
                    let d = &sense[at..at + 14];
                    let extend = d[2] & 0x01 != 0;
                    // LBA bytes alternate: (31:24) (7:0) (39:32) (15:8) (47:40) (23:16).
                    let low = u64::from(d[7]) | (u64::from(d[9]) << 8) | (u64::from(d[11]) << 16);
                    let high = (u64::from(d[6]) << 24)
                        | (u64::from(d[8]) << 32)
                        | (u64::from(d[10]) << 40);
                    return Some(AtaRegisters {
                        error: d[3],
                        count: if extend {
                            u16::from_be_bytes([d[4], d[5]])
                        } else {
                            u16::from(d[5])
                        },
                        lba: if extend { low | high } else { low },
                        device: d[12],
                        status: d[13],
                    });
                }
                at += len;
            }
            None
        }
        0x70 | 0x71 if sense.len() >= 14 && sense[12] == 0x00 && sense[13] == 0x1d => {
            Some(AtaRegisters {
                error: sense[3],
                status: sense[4],
                device: sense[5],
                count: u16::from(sense[6]),
                lba: u64::from(sense[9])
                    | (u64::from(sense[10]) << 8)
                    | (u64::from(sense[11]) << 16),
            })
        }
        // An ATA error reported in fixed format without 00/1D still carries the
        // registers (SAT-3 table for "ATA registers in fixed sense"); only trust them
        // when the sense says it is an ATA pass-through result.
        _ => None,
    }
}

/// Sends one 16-byte CDB with `SG_IO` and returns what the device and the kernel said.
/// `data` is transferred in direction `dir` (it must be empty for [`DataDir::None`]).
/// A completed ioctl is `Ok` even when the command failed: look at the outcome.
pub fn ata_pass_through_16(
    dev: &File,
    cdb: &[u8; 16],
    dir: DataDir,
    data: &mut [u8],
    timeout: Duration,
) -> Result<SgOutcome, SgIoError> {
    let dxfer_direction = match dir {
        DataDir::None if !data.is_empty() => {
            return Err(SgIoError::Request("data buffer without a direction"))
        }
        DataDir::None => SG_DXFER_NONE,
        DataDir::In => SG_DXFER_FROM_DEV,
        DataDir::Out => SG_DXFER_TO_DEV,
    };
    let dxfer_len = u32::try_from(data.len()).map_err(|_| SgIoError::Request("data too large"))?;
    // u32::MAX means "no timeout" to the sg driver; never ask for that by accident.
    let timeout_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX - 1)
        .clamp(1, u32::MAX - 1);
    let mut sense = [0u8; SENSE_LEN];
    let mut hdr = SgIoHdr {
        interface_id: libc::c_int::from(b'S'),
        dxfer_direction,
        cmd_len: 16,
        mx_sb_len: SENSE_LEN_U8,
        iovec_count: 0,
        dxfer_len,
        dxferp: if data.is_empty() {
            std::ptr::null_mut()
        } else {
            data.as_mut_ptr().cast()
        },
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: the fd is open for the lifetime of `dev`; `hdr` points at `cdb` (16 bytes,
    // cmd_len 16), `sense` (SENSE_LEN bytes, mx_sb_len) and `data` (dxfer_len bytes,
    // null when empty); all outlive the synchronous call, and the kernel writes at most
    // those lengths into the buffers it is given and the output fields of `hdr`.
    let res = unsafe { sg_io_ioctl(dev.as_raw_fd(), &mut hdr) };
    if res.is_err() {
        let raw = Errno::last_raw();
        return Err(
            if raw == libc::ENOTTY || raw == libc::EINVAL || raw == ENOIOCTLCMD {
                SgIoError::NotSupported(raw)
            } else {
                SgIoError::Ioctl(raw)
            },
        );
    }
    Ok(SgOutcome {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense,
        sense_len: hdr.sb_len_wr.min(SENSE_LEN_U8),
        resid: hdr.resid,
        duration_ms: hdr.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptor sense as libata builds it for CK_COND=1 and success: RECOVERED ERROR,
    /// 00/1D, one ATA Status Return descriptor.
    fn descriptor_sense(error: u8, status: u8, extend: bool) -> Vec<u8> {
        let mut s = vec![0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 14];
        s.extend_from_slice(&[
            0x09,
            0x0c,
            u8::from(extend),
            error,
            0x00,
            0x01,
            0xaa,
            0x11,
            0xbb,
            0x22,
            0xcc,
            0x33,
            0x40,
            status,
        ]);
        s
    }

    #[test]
    fn the_ata_status_return_descriptor_is_decoded() {
        let r = parse_ata_registers(&descriptor_sense(0x04, 0x51, false)).unwrap();
        assert_eq!(r.error, 0x04);
        assert_eq!(r.status, 0x51);
        assert_eq!(r.device, 0x40);
        assert_eq!(r.count, 1);
        assert_eq!(r.lba, 0x33_22_11);
        let r = parse_ata_registers(&descriptor_sense(0, 0x50, true)).unwrap();
        assert_eq!(r.lba, 0xccbb_aa33_2211);
        assert_eq!(r.status, 0x50);
        assert_eq!(
            parse_sense_key(&descriptor_sense(0, 0x50, false)),
            Some(SenseKey {
                key: 1,
                asc: 0,
                ascq: 0x1d
            })
        );
    }

    #[test]
    fn a_descriptor_after_another_one_is_found_and_truncation_is_refused() {
        let mut s = vec![0x72, 0x0b, 0x00, 0x00, 0, 0, 0, 0];
        // An information descriptor (type 0, 12 bytes) first.
        s.extend_from_slice(&[0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.extend_from_slice(&descriptor_sense(0x04, 0x41, false)[8..]);
        s[7] = u8::try_from(s.len() - 8).unwrap();
        assert_eq!(parse_ata_registers(&s).unwrap().status, 0x41);
        let whole = descriptor_sense(0, 0x50, false);
        assert_eq!(parse_ata_registers(&whole[..20]), None);
        let mut short_len = whole.clone();
        short_len[7] = 10;
        assert_eq!(parse_ata_registers(&short_len), None);
    }

    #[test]
    fn fixed_sense_carries_the_registers_only_with_00_1d() {
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        s[2] = 0x0b;
        s[3] = 0x04; // error
        s[4] = 0x51; // status
        s[5] = 0xe0;
        s[6] = 0x02;
        s[7] = 10;
        s[9] = 0x78;
        s[12] = 0x00;
        s[13] = 0x1d;
        let r = parse_ata_registers(&s).unwrap();
        assert_eq!(
            (r.error, r.status, r.device, r.count, r.lba),
            (4, 0x51, 0xe0, 2, 0x78)
        );
        assert_eq!(
            parse_sense_key(&s),
            Some(SenseKey {
                key: 0x0b,
                asc: 0,
                ascq: 0x1d
            })
        );
        s[12] = 0x20; // INVALID COMMAND OPERATION CODE: no registers
        s[13] = 0x00;
        assert_eq!(parse_ata_registers(&s), None);
        assert_eq!(parse_ata_registers(&[]), None);
        assert_eq!(parse_sense_key(&[0x70, 0, 5]), None);
    }

    #[test]
    fn transport_failures_ignore_the_sense_valid_bit() {
        let mut o = SgOutcome {
            status: CHECK_CONDITION,
            host_status: 0,
            driver_status: DRIVER_SENSE,
            sense: [0; SENSE_LEN],
            sense_len: 40,
            resid: 0,
            duration_ms: 1,
        };
        assert_eq!(o.transport_failure(), None);
        assert_eq!(o.sense().len(), SENSE_LEN);
        o.host_status = 3;
        assert!(o.transport_failure().unwrap().contains("timed out"));
    }

    #[test]
    fn a_regular_file_does_not_do_sg_io() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let err = ata_pass_through_16(&f, &[0; 16], DataDir::None, &mut [], Duration::from_secs(1))
            .unwrap_err();
        assert!(
            matches!(err, SgIoError::NotSupported(e) if e == libc::ENOTTY),
            "{err}"
        );
        let err = ata_pass_through_16(&f, &[0; 16], DataDir::None, &mut [0; 4], Duration::ZERO)
            .unwrap_err();
        assert!(matches!(err, SgIoError::Request(_)), "{err}");
    }
}
