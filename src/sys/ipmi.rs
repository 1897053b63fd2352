//! IPMI requests to the BMC through the kernel's OpenIPMI character device (`/dev/ipmi0`,
//! `<linux/ipmi.h>`): one request at a time on the system interface, sent with
//! `IPMICTL_SEND_COMMAND` and collected with `IPMICTL_RECEIVE_MSG_TRUNC` once `poll` says
//! a message waits, all within a deadline so a hung BMC cannot hang the caller.
//!
//! Callers use the [`IpmiTransport`] trait, so unit tests answer from a fake device.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// `struct ipmi_msg`.
#[repr(C)]
#[derive(Debug)]
struct IpmiMsg {
    netfn: u8,
    cmd: u8,
    data_len: u16,
    data: *mut u8,
}

/// `struct ipmi_req`.
#[repr(C)]
#[derive(Debug)]
struct IpmiReq {
    addr: *mut u8,
    addr_len: u32,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

/// `struct ipmi_recv`.
#[repr(C)]
#[derive(Debug)]
struct IpmiRecv {
    recv_type: i32,
    addr: *mut u8,
    addr_len: u32,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

/// `struct ipmi_system_interface_addr`.
#[repr(C)]
#[derive(Debug)]
struct SystemInterfaceAddr {
    addr_type: i32,
    channel: i16,
    lun: u8,
}

const _: () = assert!(std::mem::size_of::<IpmiMsg>() == 16);
const _: () = assert!(std::mem::size_of::<IpmiReq>() == 40);
const _: () = assert!(std::mem::size_of::<IpmiRecv>() == 48);
const _: () = assert!(std::mem::size_of::<SystemInterfaceAddr>() == 8);

/// `IPMI_SYSTEM_INTERFACE_ADDR_TYPE`: the BMC behind the local system interface.
const SYSTEM_INTERFACE_ADDR_TYPE: i32 = 0x0c;
/// `IPMI_BMC_CHANNEL`.
const BMC_CHANNEL: i16 = 0x0f;
/// `IPMI_RESPONSE_RECV_TYPE`: the answer to a request we sent.
const RESPONSE_RECV_TYPE: i32 = 1;
/// `struct ipmi_addr` is 40 bytes (type, channel, 32 data bytes, padding).
const ADDR_BUF: usize = 40;
/// IPMI messages carry at most a few hundred bytes; `IPMI_MAX_MSG_LENGTH` is 272.
const MAX_MSG: usize = 272;

// <linux/ipmi.h>: IPMICTL_SEND_COMMAND _IOR('i', 13, struct ipmi_req),
// IPMICTL_RECEIVE_MSG_TRUNC _IOWR('i', 11, struct ipmi_recv).
nix::ioctl_read!(ipmictl_send_command, b'i', 13, IpmiReq);
nix::ioctl_readwrite!(ipmictl_receive_msg_trunc, b'i', 11, IpmiRecv);

/// Why an IPMI request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum IpmiError {
    /// The device could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be handed to the kernel, or the answer not collected.
    #[error("IPMI {what} (netfn {netfn:#04x} cmd {cmd:#04x}): {errno}")]
    Ioctl {
        /// Which step failed.
        what: &'static str,
        /// Network function of the request.
        netfn: u8,
        /// Command of the request.
        cmd: u8,
        /// The kernel's answer.
        errno: Errno,
    },
    /// No answer arrived before the deadline.
    #[error("IPMI netfn {netfn:#04x} cmd {cmd:#04x}: no answer within {waited:?}")]
    Timeout {
        /// Network function of the request.
        netfn: u8,
        /// Command of the request.
        cmd: u8,
        /// How long we waited.
        waited: Duration,
    },
    /// The answer had no completion code.
    #[error("IPMI netfn {netfn:#04x} cmd {cmd:#04x}: empty answer")]
    Empty {
        /// Network function of the request.
        netfn: u8,
        /// Command of the request.
        cmd: u8,
    },
}

/// An answer from the BMC: the completion code and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    /// Completion code (0 = success).
    pub completion: u8,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

/// Something that sends one IPMI request to the BMC and waits for its answer.
pub trait IpmiTransport {
    /// Sends `netfn`/`cmd` with `data` and waits at most `timeout` for the answer.
    fn request(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<IpmiResponse, IpmiError>;
}

/// An open OpenIPMI character device.
#[derive(Debug)]
pub struct IpmiDevice {
    file: File,
    next_msgid: libc::c_long,
}

impl IpmiDevice {
    /// Opens the device (read-write, non-blocking: answers are waited for with `poll`).
    pub fn open(path: &Path) -> Result<Self, IpmiError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| IpmiError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            file,
            next_msgid: 1,
        })
    }

    fn send(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<libc::c_long, IpmiError> {
        let err = |errno| IpmiError::Ioctl {
            what: "send",
            netfn,
            cmd,
            errno,
        };
        let mut payload = data.to_vec();
        let data_len = u16::try_from(payload.len()).map_err(|_| err(Errno::EMSGSIZE))?;
        let mut addr = SystemInterfaceAddr {
            addr_type: SYSTEM_INTERFACE_ADDR_TYPE,
            channel: BMC_CHANNEL,
            lun: 0,
        };
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1);
        let mut req = IpmiReq {
            addr: std::ptr::from_mut(&mut addr).cast(),
            addr_len: u32::try_from(std::mem::size_of::<SystemInterfaceAddr>())
                .expect("8 fits in u32"),
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len,
                data: payload.as_mut_ptr(),
            },
        };
        // SAFETY: the fd is open for the life of `self`; `req` points at `addr` and
        // `payload`, which outlive the call, with their true lengths; the kernel copies
        // both in before it returns.
        unsafe { ipmictl_send_command(self.file.as_raw_fd(), &mut req) }.map_err(err)?;
        Ok(msgid)
    }

    /// One waiting message: `Some((msgid, bytes))` for a response, `None` for others.
    fn receive(&mut self, netfn: u8, cmd: u8) -> Result<Option<(libc::c_long, Vec<u8>)>, Errno> {
        let mut addr = [0u8; ADDR_BUF];
        let mut buf = [0u8; MAX_MSG];
        let mut recv = IpmiRecv {
            recv_type: 0,
            addr: addr.as_mut_ptr(),
            addr_len: u32::try_from(addr.len()).expect("40 fits in u32"),
            msgid: 0,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: u16::try_from(buf.len()).expect("272 fits in u16"),
                data: buf.as_mut_ptr(),
            },
        };
        // SAFETY: the fd is open for the life of `self`; `recv` points at `addr` and
        // `buf` with their true lengths, which bound what the kernel writes (the TRUNC
        // variant cuts a longer message instead of failing).
        let res = unsafe { ipmictl_receive_msg_trunc(self.file.as_raw_fd(), &mut recv) };
        match res {
            Ok(_) | Err(Errno::EMSGSIZE) => {}
            Err(e) => return Err(e),
        }
        if recv.recv_type != RESPONSE_RECV_TYPE {
            return Ok(None);
        }
        let len = usize::from(recv.msg.data_len).min(buf.len());
        Ok(Some((recv.msgid, buf[..len].to_vec())))
    }
}

impl IpmiTransport for IpmiDevice {
    fn request(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<IpmiResponse, IpmiError> {
        let start = Instant::now();
        let msgid = self.send(netfn, cmd, data)?;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(IpmiError::Timeout {
                    netfn,
                    cmd,
                    waited: start.elapsed(),
                });
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(errno) => {
                    return Err(IpmiError::Ioctl {
                        what: "poll",
                        netfn,
                        cmd,
                        errno,
                    })
                }
            }
            let got = match self.receive(netfn, cmd) {
                Ok(got) => got,
                Err(Errno::EAGAIN) => continue,
                Err(errno) => {
                    return Err(IpmiError::Ioctl {
                        what: "receive",
                        netfn,
                        cmd,
                        errno,
                    })
                }
            };
            // An answer to an earlier request that timed out, or an event: not ours.
            let Some((_, bytes)) = got.filter(|(id, _)| *id == msgid) else {
                continue;
            };
            let Some((&completion, rest)) = bytes.split_first() else {
                return Err(IpmiError::Empty { netfn, cmd });
            };
            return Ok(IpmiResponse {
                completion,
                data: rest.to_vec(),
            });
        }
    }
}
