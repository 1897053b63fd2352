//! LLDP for the inventory's `lldp` key (spec 1.5, agent protocol 4.9): one frame per
//! interface, heard on raw sockets (`sys::packet`) on all interfaces at once for at most
//! `lldp_timeout`, reported as IPA reports it: the frame's TLVs as `[type, hex value]`.
//!
//! The frame is kept raw, as IPA keeps it: Ironic's `parse-lldp` hook decodes the
//! chassis id, port id, system name and the 802.1/802.3 TLVs itself.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys::packet::LldpSocket;

/// One interface's TLVs: `(type, lower-case hex of the value)`.
pub type Tlvs = Vec<(u8, String)>;

/// Ethernet header: destination, source, ethertype.
const ETH_HEADER: usize = 14;
/// IPA reads 1600 bytes per frame; a standard frame fits.
const FRAME_BUF: usize = 1600;

/// The TLVs of one received Ethernet frame; empty for a runt shorter than its header.
pub fn parse_frame(frame: &[u8]) -> Tlvs {
    frame.get(ETH_HEADER..).map(parse_tlvs).unwrap_or_default()
}

/// TLVs as IPA's `netutils._parse_tlv` cuts them: a 16-bit header (7 bits type, 9 bits
/// length), the value, until fewer than 2 bytes remain; a value cut short by the frame's
/// end is kept as far as it goes, and the End TLV and padding are reported like others.
pub fn parse_tlvs(mut buf: &[u8]) -> Tlvs {
    let mut out = Vec::new();
    while buf.len() >= 2 {
        let header = u16::from_be_bytes([buf[0], buf[1]]);
        let kind = u8::try_from(header >> 9).expect("7 bits fit in u8");
        let len = usize::from(header & 0x01ff);
        let end = (2 + len).min(buf.len());
        out.push((kind, hex(&buf[2..end])));
        buf = &buf[end..];
    }
    if !buf.is_empty() {
        tracing::warn!(trailing = ?buf, "trailing byte in an LLDP frame");
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Listens on every interface in `names` until each has received one frame or
/// `timeout` passed. Each name maps to its TLVs, `[]` when nothing arrived, or `None`
/// when no socket could be opened on it (the interface vanished, no permission).
pub fn listen(names: &[String], timeout: Duration) -> BTreeMap<String, Option<Tlvs>> {
    let mut out = BTreeMap::new();
    let mut waiting: Vec<(String, LldpSocket)> = Vec::new();
    for name in names {
        match LldpSocket::open(name) {
            Ok(sock) => waiting.push((name.clone(), sock)),
            Err(err) => {
                tracing::warn!(interface = %name, error = %err, "cannot listen for LLDP");
                out.insert(name.clone(), None);
            }
        }
    }
    if !waiting.is_empty() {
        tracing::info!(
            interfaces = ?waiting.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            timeout_s = timeout.as_secs_f64(),
            "waiting for LLDP"
        );
    }
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; FRAME_BUF];
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = waiting
                .iter()
                .map(|(_, s)| PollFd::new(std::os::fd::AsFd::as_fd(s), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    tracing::warn!(error = %errno, "waiting for LLDP failed");
                    break;
                }
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut still = Vec::new();
        for ((name, sock), ready) in waiting.into_iter().zip(ready) {
            if !ready {
                still.push((name, sock));
                continue;
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let tlvs = parse_frame(&buf[..n]);
                    tracing::info!(interface = %name, tlvs = tlvs.len(), "LLDP frame received");
                    out.insert(name, Some(tlvs));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => still.push((name, sock)),
                Err(err) => {
                    // IPA: a socket that fails to read is given up, as if nothing came.
                    tracing::warn!(interface = %name, error = %err, "reading an LLDP frame failed");
                    out.insert(name, Some(Vec::new()));
                }
            }
        }
        waiting = still;
    }
    for (name, _) in waiting {
        tracing::warn!(interface = %name, "no LLDP frame within the timeout");
        out.insert(name, Some(Vec::new()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlvs_are_cut_as_ipa_cuts_them() {
        // Chassis id (type 1, len 7, subtype 4 = MAC), End (type 0, len 0).
        let buf = [
            0x02, 0x07, 0x04, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00, 0x00,
        ];
        assert_eq!(
            parse_tlvs(&buf),
            vec![(1, "04525400123456".to_owned()), (0, String::new())]
        );
        // A value longer than what is left keeps what is there; a lone byte is dropped.
        assert_eq!(
            parse_tlvs(&[0x0a, 0x05, b'a', b'b']),
            vec![(5, "6162".to_owned())]
        );
        assert_eq!(parse_tlvs(&[0x00, 0x00, 0x07]), vec![(0, String::new())]);
        // Type 127 with the 9th length bit set: 256 bytes.
        let mut big = vec![0xff, 0x00];
        big.extend(std::iter::repeat_n(0xab, 256));
        let tlvs = parse_tlvs(&big);
        assert_eq!(tlvs.len(), 1);
        assert_eq!(tlvs[0].0, 127);
        assert_eq!(tlvs[0].1.len(), 512);
    }

    fn hexs(text: &str) -> String {
        hex(text.as_bytes())
    }

    #[test]
    fn recorded_lldpd_frame() {
        let frame = include_bytes!("../../tests/fixtures/lldp/lldpd-veth.bin");
        let tlvs = parse_frame(frame);
        let kinds: Vec<u8> = tlvs.iter().map(|t| t.0).collect();
        assert_eq!(kinds, [1, 2, 3, 5, 6, 7, 8, 4, 127, 127, 0]);
        // Chassis id: subtype 4 (MAC) and the speaker's MAC, the frame's source address.
        assert_eq!(tlvs[0].1, format!("04{}", hex(&frame[6..12])));
        // Port id: subtype 5 (interface name).
        assert_eq!(tlvs[1].1, format!("05{}", hexs("lldp-sw0")));
        assert_eq!(tlvs[2], (3, "0004".to_owned()));
        assert_eq!(tlvs[3], (5, hexs("ira-test-switch")));
        assert!(tlvs[4].1.starts_with(&hexs("Debian GNU/Linux")));
        assert_eq!(tlvs[7], (4, hexs("lldp-sw0")));
        // 802.3 organisationally specific TLVs keep their OUI and subtype in the value.
        assert!(tlvs[8].1.starts_with("00120f"));
        assert_eq!(tlvs[10], (0, String::new()));
    }

    #[test]
    fn recorded_frame_with_mac_port_id() {
        let frame = include_bytes!("../../tests/fixtures/lldp/lldpd-portid-mac.bin");
        let tlvs = parse_frame(frame);
        assert_eq!(tlvs[1], (2, format!("03{}", hex(&frame[6..12]))));
        assert_eq!(tlvs[4], (6, hexs("ira test switch")));
        assert_eq!(tlvs.last(), Some(&(0, String::new())));
        // The JSON IPA sends: a list of [type, "hex"] pairs.
        let json = serde_json::to_value(&tlvs[..2]).unwrap();
        assert_eq!(json[0][0], 1);
        assert_eq!(json[1][1], format!("03{}", hex(&frame[6..12])));
    }

    #[test]
    fn a_runt_frame_has_no_tlvs() {
        assert!(parse_frame(&[0u8; 13]).is_empty());
        assert!(parse_frame(&[0u8; 14]).is_empty());
    }

    #[test]
    fn a_missing_interface_is_none_without_waiting() {
        let start = Instant::now();
        let got = listen(&["ira-no-such0".to_owned()], Duration::from_secs(30));
        assert_eq!(got.get("ira-no-such0"), Some(&None));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
