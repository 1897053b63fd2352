//! ATA commands over a transport: the [`AtaDevice`] trait the erase logic talks to, the
//! ATA PASS-THROUGH(16) CDBs and password blocks it sends, and [`SgAta`], the real
//! transport over `SG_IO` (`sys::sg_io`). Tests substitute a fake drive.

use std::fs::File;
use std::time::Duration;

use crate::sys::sg_io::{self, DataDir, SgIoError, SgOutcome};

/// Timeout of every command but SECURITY ERASE UNIT (hdparm uses 15 s; spinning up a
/// sleeping disk can take longer).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// ATA command codes (ACS-3).
const IDENTIFY_DEVICE: u8 = 0xec;
/// ATA PASS-THROUGH(16) operation code (SAT).
const ATA_16: u8 = 0x85;

/// SAT protocol field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    NonData = 3,
    PioIn = 4,
    PioOut = 5,
}

/// The ATA security commands (ACS-3 7.43-7.48) the erase uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityCommand {
    /// SECURITY SET PASSWORD (0xF1), PIO data-out.
    SetPassword,
    /// SECURITY UNLOCK (0xF2), PIO data-out.
    Unlock,
    /// SECURITY ERASE PREPARE (0xF3), non-data; must immediately precede ERASE UNIT.
    ErasePrepare,
    /// SECURITY ERASE UNIT (0xF4), PIO data-out.
    EraseUnit,
    /// SECURITY DISABLE PASSWORD (0xF6), PIO data-out.
    DisablePassword,
}

impl SecurityCommand {
    /// The ATA command code.
    pub fn opcode(self) -> u8 {
        match self {
            Self::SetPassword => 0xf1,
            Self::Unlock => 0xf2,
            Self::ErasePrepare => 0xf3,
            Self::EraseUnit => 0xf4,
            Self::DisablePassword => 0xf6,
        }
    }

    /// Whether the command sends the 512-byte password block.
    pub fn has_data(self) -> bool {
        !matches!(self, Self::ErasePrepare)
    }

    /// The command's name in ACS, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::SetPassword => "SECURITY SET PASSWORD",
            Self::Unlock => "SECURITY UNLOCK",
            Self::ErasePrepare => "SECURITY ERASE PREPARE",
            Self::EraseUnit => "SECURITY ERASE UNIT",
            Self::DisablePassword => "SECURITY DISABLE PASSWORD",
        }
    }
}

/// Which password a security command names (word 0 bit 0 of the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifier {
    /// The user password.
    User,
    /// The master password.
    Master,
}

/// The 512-byte data block of the password-carrying security commands: word 0 bit 0
/// the identifier, bit 1 enhanced erase (ERASE UNIT only), words 1-16 the 32-byte
/// password, sent as given (hdparm copies the bytes unswapped).
pub fn password_block(identifier: Identifier, enhanced: bool, password: &[u8; 32]) -> [u8; 512] {
    let mut block = [0u8; 512];
    block[0] = u8::from(identifier == Identifier::Master) | (u8::from(enhanced) << 1);
    block[2..34].copy_from_slice(password);
    block
}

/// The ATA PASS-THROUGH(16) CDB for a 28-bit command with no LBA: `count` 512-byte
/// blocks moved with `protocol` (T_LENGTH = the count field, BYT_BLOK = blocks).
/// `ck_cond` asks the SAT layer for the ATA status registers even on success (it then
/// answers CHECK CONDITION, libata with RECOVERED ERROR 00/1D); without it success is
/// GOOD and only a failed command comes back with the registers.
fn cdb(command: u8, protocol: Protocol, count: u8, ck_cond: bool) -> [u8; 16] {
    const CK_COND: u8 = 0x20;
    const T_DIR_IN: u8 = 0x08;
    const BYT_BLOK: u8 = 0x04;
    const T_LENGTH_COUNT: u8 = 0x02;
    let mut c = [0u8; 16];
    c[0] = ATA_16;
    c[1] = (protocol as u8) << 1;
    c[2] = match protocol {
        Protocol::NonData => 0,
        Protocol::PioIn => T_DIR_IN | BYT_BLOK | T_LENGTH_COUNT,
        Protocol::PioOut => BYT_BLOK | T_LENGTH_COUNT,
    };
    if ck_cond {
        c[2] |= CK_COND;
    }
    c[6] = count;
    c[14] = command;
    c
}

/// The CDB of IDENTIFY DEVICE (PIO data-in, one block). No CK_COND: the data is the
/// answer, and some SAT layers (QEMU's AHCI under libata) return stale registers from
/// the PIO Setup FIS for a data-in command, which reads as an abort of a command that
/// succeeded.
pub fn identify_cdb() -> [u8; 16] {
    cdb(IDENTIFY_DEVICE, Protocol::PioIn, 1, false)
}

/// The CDB of a security command (PIO data-out of one block, or non-data), with
/// CK_COND: the status after SECURITY ERASE UNIT and friends is what proves they ran.
pub fn security_cdb(cmd: SecurityCommand) -> [u8; 16] {
    if cmd.has_data() {
        cdb(cmd.opcode(), Protocol::PioOut, 1, true)
    } else {
        cdb(cmd.opcode(), Protocol::NonData, 0, true)
    }
}

/// Why an ATA command did not complete successfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtaIoError {
    /// The device does not implement SG_IO at all (loop, virtio-blk, NVMe, a file).
    #[error("the device does not accept SG_IO ({})", std::io::Error::from_raw_os_error(*.0))]
    NotSgIo(i32),
    /// A SCSI device that rejects ATA PASS-THROUGH (SAS/SCSI disk, some USB bridges).
    #[error(
        "the device rejects ATA PASS-THROUGH (sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x})"
    )]
    NoPassThrough {
        /// Sense key.
        key: u8,
        /// ASC.
        asc: u8,
        /// ASCQ.
        ascq: u8,
    },
    /// The drive aborted the command (ERR with ABRT): not supported, wrong password or
    /// a state that forbids it.
    #[error("the drive aborted the command (ATA status {status:#04x}, error {error:#04x})")]
    Aborted {
        /// ATA status register.
        status: u8,
        /// ATA error register.
        error: u8,
    },
    /// The drive reported another error or a device fault.
    #[error("the drive reported an error (ATA status {status:#04x}, error {error:#04x})")]
    Device {
        /// ATA status register.
        status: u8,
        /// ATA error register.
        error: u8,
    },
    /// A CHECK CONDITION without ATA registers.
    #[error("SCSI CHECK CONDITION, sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}")]
    Sense {
        /// Sense key.
        key: u8,
        /// ASC.
        asc: u8,
        /// ASCQ.
        ascq: u8,
    },
    /// The command did not complete on the device (timeout, reset, link error, SG_IO
    /// failure, short transfer): its effect is unknown.
    #[error("transport error: {0}")]
    Transport(String),
}

/// A drive that takes ATA IDENTIFY DEVICE and security commands.
pub trait AtaDevice {
    /// IDENTIFY DEVICE: the 256 words.
    fn identify(&mut self) -> Result<[u16; 256], AtaIoError>;
    /// One security command; `password_block` is sent by the data-out commands and
    /// ignored by SECURITY ERASE PREPARE.
    fn security_command(
        &mut self,
        cmd: SecurityCommand,
        password_block: &[u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaIoError>;
}

/// The real transport: ATA PASS-THROUGH(16) over SG_IO on an open block device.
#[derive(Debug)]
pub struct SgAta {
    file: File,
}

impl SgAta {
    /// Wraps an open block device (read-write: the kernel wants write access for
    /// commands that change the medium).
    pub fn new(file: File) -> Self {
        Self { file }
    }

    fn run(
        &self,
        cdb: &[u8; 16],
        dir: DataDir,
        data: &mut [u8],
        timeout: Duration,
    ) -> Result<SgOutcome, AtaIoError> {
        let outcome = sg_io::ata_pass_through_16(&self.file, cdb, dir, data, timeout).map_err(
            |e| match e {
                SgIoError::NotSupported(errno) => AtaIoError::NotSgIo(errno),
                other => AtaIoError::Transport(other.to_string()),
            },
        )?;
        check(&outcome)?;
        if outcome.resid != 0 {
            return Err(AtaIoError::Transport(format!(
                "{} of {} bytes not transferred",
                outcome.resid,
                data.len()
            )));
        }
        Ok(outcome)
    }
}

impl AtaDevice for SgAta {
    fn identify(&mut self) -> Result<[u16; 256], AtaIoError> {
        let mut buf = [0u8; 512];
        self.run(&identify_cdb(), DataDir::In, &mut buf, COMMAND_TIMEOUT)?;
        Ok(super::identify::words_from_bytes(&buf))
    }

    fn security_command(
        &mut self,
        cmd: SecurityCommand,
        password_block: &[u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaIoError> {
        let cdb = security_cdb(cmd);
        if cmd.has_data() {
            let mut block = *password_block;
            self.run(&cdb, DataDir::Out, &mut block, timeout)?;
        } else {
            self.run(&cdb, DataDir::None, &mut [], timeout)?;
        }
        Ok(())
    }
}

/// SCSI status GOOD.
const GOOD: u8 = 0x00;
/// Sense keys.
const NO_SENSE: u8 = 0x00;
const RECOVERED_ERROR: u8 = 0x01;
const ILLEGAL_REQUEST: u8 = 0x05;

/// Classifies a completed pass-through command. With CK_COND a SAT layer answers
/// CHECK CONDITION with the ATA registers even on success (libata: RECOVERED ERROR,
/// 00/1D); the ATA status decides. GOOD is success: the answer to a command sent
/// without CK_COND (IDENTIFY), or from a layer that ignores the bit. A failed command
/// comes back as CHECK CONDITION with the registers either way.
pub fn check(outcome: &SgOutcome) -> Result<(), AtaIoError> {
    if let Some(reason) = outcome.transport_failure() {
        return Err(AtaIoError::Transport(reason));
    }
    match outcome.status {
        GOOD => Ok(()),
        sg_io::CHECK_CONDITION => {
            if let Some(regs) = outcome.ata_registers() {
                return if regs.status & (sg_io::ATA_STATUS_ERR | sg_io::ATA_STATUS_DF) == 0 {
                    Ok(())
                } else if regs.status & sg_io::ATA_STATUS_DF == 0
                    && regs.error & sg_io::ATA_ERROR_ABRT != 0
                {
                    Err(AtaIoError::Aborted {
                        status: regs.status,
                        error: regs.error,
                    })
                } else {
                    Err(AtaIoError::Device {
                        status: regs.status,
                        error: regs.error,
                    })
                };
            }
            match outcome.sense_key() {
                Some(k) if k.key == NO_SENSE || k.key == RECOVERED_ERROR => Ok(()),
                Some(k) if k.key == ILLEGAL_REQUEST => Err(AtaIoError::NoPassThrough {
                    key: k.key,
                    asc: k.asc,
                    ascq: k.ascq,
                }),
                Some(k) => Err(AtaIoError::Sense {
                    key: k.key,
                    asc: k.asc,
                    ascq: k.ascq,
                }),
                None => Err(AtaIoError::Transport(
                    "CHECK CONDITION without usable sense data".to_owned(),
                )),
            }
        }
        other => Err(AtaIoError::Transport(format!("SCSI status {other:#04x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::sg_io::SENSE_LEN;

    #[test]
    fn identify_is_pio_in_of_one_block_without_ck_cond() {
        let c = identify_cdb();
        assert_eq!(
            c,
            [0x85, 0x08, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xec, 0]
        );
        assert_eq!(c[2] & 0x20, 0, "CK_COND must be clear for IDENTIFY");
        assert_eq!(c[2] & 0x08, 0x08, "T_DIR in");
    }

    #[test]
    fn security_commands_are_pio_out_or_non_data() {
        for (cmd, op) in [
            (SecurityCommand::SetPassword, 0xf1),
            (SecurityCommand::Unlock, 0xf2),
            (SecurityCommand::EraseUnit, 0xf4),
            (SecurityCommand::DisablePassword, 0xf6),
        ] {
            assert_eq!(
                security_cdb(cmd),
                [0x85, 0x0a, 0x26, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, op, 0],
                "{cmd:?}"
            );
        }
        assert_eq!(
            security_cdb(SecurityCommand::ErasePrepare),
            [0x85, 0x06, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf3, 0]
        );
    }

    #[test]
    fn the_password_block_layout() {
        let mut pw = [0u8; 32];
        pw[..4].copy_from_slice(b"NULL");
        let b = password_block(Identifier::User, true, &pw);
        assert_eq!(&b[..6], &[0x02, 0, b'N', b'U', b'L', b'L']);
        assert!(b[6..].iter().all(|&x| x == 0));
        let b = password_block(Identifier::Master, false, &[0xff; 32]);
        assert_eq!(b[0], 0x01);
        assert!(b[2..34].iter().all(|&x| x == 0xff));
        assert!(b[34..].iter().all(|&x| x == 0));
    }

    fn outcome(status: u8, sense: &[u8]) -> SgOutcome {
        let mut buf = [0u8; SENSE_LEN];
        buf[..sense.len()].copy_from_slice(sense);
        SgOutcome {
            status,
            host_status: 0,
            driver_status: if sense.is_empty() { 0 } else { 0x08 },
            sense: buf,
            sense_len: u8::try_from(sense.len()).unwrap(),
            resid: 0,
            duration_ms: 3,
        }
    }

    fn ata_sense(key: u8, error: u8, status: u8) -> Vec<u8> {
        let mut s = vec![0x72, key, 0, 0x1d, 0, 0, 0, 14, 0x09, 0x0c, 0, error];
        s.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x40, status]);
        s
    }

    #[test]
    fn outcomes_are_classified_by_the_ata_registers_first() {
        assert_eq!(check(&outcome(GOOD, &[])), Ok(()));
        assert_eq!(check(&outcome(2, &ata_sense(1, 0, 0x50))), Ok(()));
        assert_eq!(
            check(&outcome(2, &ata_sense(0x0b, 0x04, 0x51))),
            Err(AtaIoError::Aborted {
                status: 0x51,
                error: 0x04
            })
        );
        assert_eq!(
            check(&outcome(2, &ata_sense(0x03, 0x40, 0x51))),
            Err(AtaIoError::Device {
                status: 0x51,
                error: 0x40
            })
        );
        // A device fault is never a plain abort.
        assert!(matches!(
            check(&outcome(2, &ata_sense(0x04, 0x04, 0x71))),
            Err(AtaIoError::Device { .. })
        ));
    }

    #[test]
    fn scsi_only_answers_and_transport_failures() {
        // A SAS disk: ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
        let sas = [0x72, 0x05, 0x20, 0x00, 0, 0, 0, 0];
        assert!(matches!(
            check(&outcome(2, &sas)),
            Err(AtaIoError::NoPassThrough { asc: 0x20, .. })
        ));
        let not_ready = [0x72, 0x02, 0x04, 0x00, 0, 0, 0, 0];
        assert!(matches!(
            check(&outcome(2, &not_ready)),
            Err(AtaIoError::Sense { key: 2, .. })
        ));
        assert!(matches!(
            check(&outcome(2, &[])),
            Err(AtaIoError::Transport(_))
        ));
        assert!(matches!(
            check(&outcome(0x08, &[])),
            Err(AtaIoError::Transport(_))
        ));
        let mut timed_out = outcome(GOOD, &[]);
        timed_out.host_status = 0x03;
        assert!(
            matches!(check(&timed_out), Err(AtaIoError::Transport(r)) if r.contains("timed out"))
        );
    }
}
