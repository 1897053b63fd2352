//! Raw `AF_PACKET` sockets that receive one interface's LLDP frames (`packet(7)`): bound
//! to the interface and ethertype 0x88cc, member of the LLDP multicast group
//! 01:80:c2:00:00:0e through `PACKET_ADD_MEMBERSHIP`, so the NIC accepts the frames
//! without the promiscuous mode IPA switches on. The socket is non-blocking; callers wait
//! with `poll` on [`LldpSocket::as_fd`].
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `ETH_P_LLDP`.
pub const ETH_P_LLDP: u16 = 0x88cc;
/// The nearest-bridge LLDP multicast address (IEEE 802.1AB).
pub const LLDP_MULTICAST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

/// A raw socket receiving LLDP frames on one interface.
#[derive(Debug)]
pub struct LldpSocket {
    fd: OwnedFd,
}

impl LldpSocket {
    /// Opens the socket on interface `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        let proto = ETH_P_LLDP.to_be();
        // Protocol 0 receives nothing until `bind` names the interface and ethertype, so
        // no other interface's frame is queued in between.
        // SAFETY: plain syscall with constant arguments; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns and nothing else closes.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: an all-zero sockaddr_ll is a valid value of this plain C struct.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits in u16");
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        let sll_len = socklen::<libc::sockaddr_ll>();
        // SAFETY: `sll` is a valid sockaddr_ll and `sll_len` its size; fd is open.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast::<libc::sockaddr>(),
                sll_len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }

        // SAFETY: an all-zero packet_mreq is a valid value of this plain C struct.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = u16::try_from(libc::PACKET_MR_MULTICAST).expect("fits in u16");
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&LLDP_MULTICAST);
        // SAFETY: `mreq` is a valid packet_mreq and the length passed is its size; the
        // membership ends when the socket closes.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                std::ptr::from_ref(&mreq).cast::<libc::c_void>(),
                socklen::<libc::packet_mreq>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Receives one waiting frame into `buf` (Ethernet header included); `WouldBlock`
    /// when none waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the pointer and length describe `buf`, which the kernel writes at
        // most `buf.len()` bytes into; fd is open.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                0,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsFd for LldpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("struct size fits socklen_t")
}
