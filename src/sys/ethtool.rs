//! The ethtool ioctl (`SIOCETHTOOL`, `<linux/ethtool.h>`) for the two facts IPA reports
//! that sysfs lacks: the permanent MAC address (`ETHTOOL_GPERMADDR`) and the link modes
//! the NIC supports (`ETHTOOL_GLINKSETTINGS`), whose fastest is the maximum speed.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// `libc::Ioctl`: the request type differs between glibc (unsigned long) and musl (int).
const SIOCETHTOOL: libc::Ioctl = 0x8946;
const ETHTOOL_GPERMADDR: u32 = 0x20;
const ETHTOOL_GLINKSETTINGS: u32 = 0x4c;
/// `MAX_ADDR_LEN` in the kernel.
const MAX_ADDR_LEN: usize = 32;
/// `struct ethtool_link_settings` without its flexible mask array.
const LINK_SETTINGS_HEADER: usize = 48;
/// `link_mode_masks_nwords` sits at this byte of the header.
const NWORDS_OFFSET: usize = 15;
/// The kernel's masks hold at most 127 words (the count is a signed byte).
const MAX_NWORDS: usize = 127;

/// Mb/s of each `ETHTOOL_LINK_MODE_*_BIT`, 0 for bits that are no speed (autoneg, port
/// types, pause, FEC). Bits past the table (newer kernels) are ignored.
const LINK_MODE_SPEEDS: [u32; 93] = [
    10, 10, 100, 100, 1000, 1000, 0, 0, 0, 0, 0, 0, 10000, 0, 0, 2500, 0, 1000, 10000, 10000, 0,
    20000, 20000, 40000, 40000, 40000, 40000, 56000, 56000, 56000, 56000, 25000, 25000, 25000,
    50000, 50000, 100000, 100000, 100000, 100000, 50000, 1000, 10000, 10000, 10000, 10000, 10000,
    2500, 5000, 0, 0, 0, 50000, 50000, 50000, 50000, 50000, 100000, 100000, 100000, 100000, 100000,
    200000, 200000, 200000, 200000, 200000, 100, 1000, 400000, 400000, 400000, 400000, 400000, 0,
    100000, 100000, 100000, 100000, 100000, 200000, 200000, 200000, 200000, 200000, 400000, 400000,
    400000, 400000, 400000, 100, 100, 10,
];

/// A datagram socket to address ethtool requests to interfaces by name.
#[derive(Debug)]
pub struct Ethtool {
    fd: OwnedFd,
}

impl Ethtool {
    /// Opens the control socket.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Sends one ethtool command whose in/out buffer is `buf` (command word first).
    fn call(&self, name: &str, buf: &mut [u8]) -> io::Result<()> {
        // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
            *d = libc::c_char::from_ne_bytes([*s]);
        }
        ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
        // SAFETY: `ifr` names the interface and points at `buf`, which outlives the call;
        // every command sent here has its length inside `buf` (the header's size or
        // nwords field), so the kernel stays within `buf.len()` bytes.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The permanent hardware address; `None` when the driver keeps none (all zero).
    pub fn permanent_address(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut buf = [0u8; 8 + MAX_ADDR_LEN];
        buf[..4].copy_from_slice(&ETHTOOL_GPERMADDR.to_ne_bytes());
        let max = u32::try_from(MAX_ADDR_LEN).expect("32 fits in u32");
        buf[4..8].copy_from_slice(&max.to_ne_bytes());
        self.call(name, &mut buf)?;
        let size = u32::from_ne_bytes(buf[4..8].try_into().expect("4 bytes"));
        let size = usize::try_from(size).map_or(MAX_ADDR_LEN, |s| s.min(MAX_ADDR_LEN));
        let addr = &buf[8..8 + size];
        Ok(addr.iter().any(|b| *b != 0).then(|| addr.to_vec()))
    }

    /// The fastest supported link mode in Mb/s; `None` when the driver lists none.
    pub fn max_supported_speed(&self, name: &str) -> io::Result<Option<u32>> {
        // First call: the kernel answers how many mask words it uses, as -nwords.
        let mut head = [0u8; LINK_SETTINGS_HEADER];
        head[..4].copy_from_slice(&ETHTOOL_GLINKSETTINGS.to_ne_bytes());
        self.call(name, &mut head)?;
        let reported = i8::from_ne_bytes([head[NWORDS_OFFSET]]);
        let nwords = usize::from(reported.unsigned_abs());
        if reported >= 0 || nwords == 0 || nwords > MAX_NWORDS {
            return Ok(None);
        }
        // Second call with room for the supported, advertising and peer masks.
        let mut buf = vec![0u8; LINK_SETTINGS_HEADER + 3 * 4 * nwords];
        buf[..4].copy_from_slice(&ETHTOOL_GLINKSETTINGS.to_ne_bytes());
        buf[NWORDS_OFFSET] = u8::try_from(nwords).expect("at most 127");
        self.call(name, &mut buf)?;
        let supported = &buf[LINK_SETTINGS_HEADER..LINK_SETTINGS_HEADER + 4 * nwords];
        let words: Vec<u32> = supported
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(max_speed_of_mask(&words))
    }
}

/// The fastest speed among the set bits of a link-mode mask (32-bit words, low first).
pub fn max_speed_of_mask(words: &[u32]) -> Option<u32> {
    LINK_MODE_SPEEDS
        .iter()
        .enumerate()
        .filter(|(bit, _)| {
            words
                .get(bit / 32)
                .is_some_and(|w| w & (1 << (bit % 32)) != 0)
        })
        .map(|(_, speed)| *speed)
        .max()
        .filter(|s| *s > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastest_mode_wins_and_non_speed_bits_count_for_nothing() {
        // 10baseT_Half (0), 1000baseT_Full (5), Autoneg (6), TP (7).
        assert_eq!(max_speed_of_mask(&[0b1110_0001]), Some(1000));
        // 25000baseSR_Full is bit 33: in the second word.
        assert_eq!(max_speed_of_mask(&[1 << 3, 1 << 1]), Some(25000));
        // 100baseFX_Full (91) and 10baseT1L (92) are in the third word.
        assert_eq!(max_speed_of_mask(&[0, 0, 1 << 27]), Some(100));
        assert_eq!(max_speed_of_mask(&[1 << 6 | 1 << 13]), None);
        assert_eq!(max_speed_of_mask(&[]), None);
    }

    #[test]
    fn bad_interface_names_fail() {
        let e = Ethtool::new().unwrap();
        assert!(e.permanent_address("no-such-if0").is_err());
        assert!(e.permanent_address("").is_err());
        assert!(e
            .permanent_address("a-name-far-too-long-for-ifreq")
            .is_err());
    }
}
