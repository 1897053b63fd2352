//! A one-shot SNTP client (RFC 4330): one UDP request, one checked answer, the clock
//! offset computed from the four timestamps.
//!
//! The answer must come from the address asked, echo our transmit timestamp as its
//! originate timestamp (so a stray or forged packet is refused), be in server mode from
//! a synchronised server (stratum 1-15, leap indicator not "alarm") and carry a
//! non-zero transmit time. Parsing is separate from I/O for the unit tests.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bytes::be32;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Size of an NTP packet without extensions.
pub const PACKET_LEN: usize = 48;
/// Leap indicator 0, version 4, mode 3 (client).
const CLIENT_FIRST_BYTE: u8 = 0b00_100_011;
/// Mode of a server's answer.
const MODE_SERVER: u8 = 4;

/// Why no time was obtained.
#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    /// The socket could not be opened, or sending failed.
    #[error("NTP request to {server}: {source}")]
    Io {
        /// The server asked.
        server: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No valid answer within the timeout.
    #[error("no NTP answer from {server} within {timeout:?}")]
    Timeout {
        /// The server asked.
        server: SocketAddr,
        /// The time waited.
        timeout: Duration,
    },
    /// The answer was refused.
    #[error("NTP answer from {server} refused: {reason}")]
    BadAnswer {
        /// The server asked.
        server: SocketAddr,
        /// What was wrong with it.
        reason: &'static str,
    },
}

/// An NTP timestamp: seconds since 1900 in the high 32 bits, fraction in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP form of a system time.
    pub fn from_system(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xFFFF_FFFF;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Self((secs << 32) | frac)
    }

    /// Nanoseconds since the Unix epoch (era 0, i.e. until 2036, or era 1 after it).
    fn unix_nanos(self) -> i128 {
        let mut secs = i128::from(self.0 >> 32);
        // Timestamps below 1968 are read as NTP era 1 (after February 2036).
        if secs < 0x8000_0000 {
            secs += 1 << 32;
        }
        let frac = i128::from(self.0 & 0xFFFF_FFFF);
        (secs - i128::from(NTP_UNIX_OFFSET)) * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
    }
}

/// A client request carrying `transmit` as its transmit timestamp.
pub fn request(transmit: NtpTime) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = CLIENT_FIRST_BYTE;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

/// The clock offset (server minus local) from an answer to a request sent at `t1`
/// (our clock) and received at `t4`.
pub fn offset_from_answer(answer: &[u8], t1: NtpTime, t4: NtpTime) -> Result<i128, &'static str> {
    if answer.len() < PACKET_LEN {
        return Err("short packet");
    }
    let leap = answer[0] >> 6;
    let version = (answer[0] >> 3) & 0x7;
    let mode = answer[0] & 0x7;
    let stratum = answer[1];
    if mode != MODE_SERVER {
        return Err("not a server answer");
    }
    if !(3..=4).contains(&version) {
        return Err("unsupported NTP version");
    }
    if stratum == 0 || stratum > 15 {
        return Err("server not synchronised (stratum)");
    }
    if leap == 3 {
        return Err("server not synchronised (leap indicator)");
    }
    let ts =
        |at: usize| NtpTime((u64::from(be32(answer, at)) << 32) | u64::from(be32(answer, at + 4)));
    if ts(24) != t1 {
        return Err("originate timestamp does not match the request");
    }
    let (t2, t3) = (ts(32), ts(40));
    if t3.0 == 0 {
        return Err("no transmit timestamp");
    }
    let (t1, t2, t3, t4) = (
        t1.unix_nanos(),
        t2.unix_nanos(),
        t3.unix_nanos(),
        t4.unix_nanos(),
    );
    Ok(((t2 - t1) + (t3 - t4)) / 2)
}

/// Asks `server` once and returns the offset of our clock to its, in nanoseconds;
/// packets from elsewhere or not answering our request are ignored until `timeout`.
pub fn query(server: SocketAddr, timeout: Duration) -> Result<i128, SntpError> {
    let io = |source| SntpError::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let sock = UdpSocket::bind(bind).map_err(io)?;
    let t1 = NtpTime::from_system(SystemTime::now());
    sock.send_to(&request(t1), server).map_err(io)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(SntpError::Timeout { server, timeout });
        }
        sock.set_read_timeout(Some(left)).map_err(io)?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(SntpError::Timeout { server, timeout })
            }
            // An ICMP port unreachable from an earlier datagram: nobody listens there.
            Err(e) => return Err(io(e)),
        };
        let t4 = NtpTime::from_system(SystemTime::now());
        if from != server {
            tracing::debug!(from = %from, "NTP packet from another address ignored");
            continue;
        }
        return offset_from_answer(&buf[..n], t1, t4)
            .map_err(|reason| SntpError::BadAnswer { server, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(first: u8, stratum: u8, orig: NtpTime, recv: NtpTime, xmit: NtpTime) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_LEN];
        p[0] = first;
        p[1] = stratum;
        p[24..32].copy_from_slice(&orig.0.to_be_bytes());
        p[32..40].copy_from_slice(&recv.0.to_be_bytes());
        p[40..48].copy_from_slice(&xmit.0.to_be_bytes());
        p
    }

    #[test]
    fn request_layout() {
        let t = NtpTime(0x0102_0304_0506_0708);
        let r = request(t);
        assert_eq!(r[0], 0x23);
        assert_eq!(&r[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(r[1..40].iter().all(|b| *b == 0));
    }

    #[test]
    fn offset_is_the_mean_of_both_legs() {
        let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t1 = NtpTime::from_system(base);
        let t4 = NtpTime::from_system(base + Duration::from_millis(20));
        // The server is 100 s ahead; each leg takes 10 ms.
        let t2 = NtpTime::from_system(base + Duration::from_millis(100_010));
        let t3 = NtpTime::from_system(base + Duration::from_millis(100_010));
        let off = offset_from_answer(&answer(0x24, 2, t1, t2, t3), t1, t4).unwrap();
        assert!((off - 100_000_000_000).abs() < 1_000, "{off}");
    }

    #[test]
    fn refuses_bad_answers() {
        let t1 = NtpTime::from_system(SystemTime::now());
        let ok = answer(0x24, 2, t1, t1, t1);
        assert!(offset_from_answer(&ok, t1, t1).is_ok());
        let cases: [(Vec<u8>, &str); 6] = [
            (ok[..40].to_vec(), "short packet"),
            (answer(0x23, 2, t1, t1, t1), "not a server answer"),
            (
                answer(0x24, 0, t1, t1, t1),
                "server not synchronised (stratum)",
            ),
            (
                answer(0xE4, 2, t1, t1, t1),
                "server not synchronised (leap indicator)",
            ),
            (
                answer(0x24, 2, NtpTime(t1.0 ^ 1), t1, t1),
                "originate timestamp does not match the request",
            ),
            (answer(0x24, 2, t1, t1, NtpTime(0)), "no transmit timestamp"),
        ];
        for (packet, reason) in cases {
            assert_eq!(offset_from_answer(&packet, t1, t1), Err(reason));
        }
    }

    #[test]
    fn era_rollover_reads_as_2036_and_later() {
        let t = NtpTime(5 << 32);
        assert_eq!(
            t.unix_nanos(),
            ((1i128 << 32) + 5 - 2_208_988_800) * 1_000_000_000
        );
    }
}
