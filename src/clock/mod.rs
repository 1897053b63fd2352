//! Clock synchronisation with `ntp_server` (`ipa-ntp-server`): IPA's `sync_clock`,
//! natively. A machine whose clock is far off refuses valid TLS certificates (not yet
//! valid, or expired), so the agent sets the clock at start, before the first HTTPS
//! request; failures are logged and ignored, as in IPA.
//!
//! `sntp` asks the server; [`ClockSetter`] applies the offset. The real setter calls
//! `clock_settime(CLOCK_REALTIME)`; tests pass a recording one, so no test ever moves the
//! host's clock. Only the software clock is set; IPA also writes the hardware clock
//! before a power action (`hwclock --systohc`), which ira does not do yet.

pub mod sntp;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The NTP port.
pub const NTP_PORT: u16 = 123;
/// How long one synchronisation may take, name resolution excluded.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the clock was not set.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// `ntp_server` is neither an IP address nor a host name.
    #[error("invalid NTP server address: {0:?}")]
    InvalidServer(String),
    /// The name did not resolve.
    #[error("resolving NTP server {name}: {reason}")]
    Resolve {
        /// The name.
        name: String,
        /// The cause.
        reason: String,
    },
    /// The server gave no usable time.
    #[error(transparent)]
    Sntp(#[from] sntp::SntpError),
    /// The clock could not be set.
    #[error("setting the clock: {0}")]
    Set(String),
}

/// Something that can move the system clock.
pub trait ClockSetter: Send + Sync {
    /// Sets the clock to `time`.
    fn set(&self, time: SystemTime) -> Result<(), ClockError>;
}

/// The system's realtime clock (`clock_settime`, needs `CAP_SYS_TIME`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ClockSetter for SystemClock {
    fn set(&self, time: SystemTime) -> Result<(), ClockError> {
        use nix::sys::time::TimeSpec;
        use nix::time::{clock_settime, ClockId};
        let d = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| ClockError::Set("time before 1970".into()))?;
        clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::from_duration(d))
            .map_err(|e| ClockError::Set(e.to_string()))
    }
}

/// IPA's `_validate_ntp_server`: an IP address, or a host name of at most 253
/// characters made of labels of letters, digits and inner hyphens.
pub fn validate_server(server: &str) -> Result<(), ClockError> {
    if server.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !server.is_empty() && server.len() <= 253 && server.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(ClockError::InvalidServer(server.to_owned()))
    }
}

/// The socket address of `server` on port `port`.
pub fn resolve(server: &str, port: u16) -> Result<SocketAddr, ClockError> {
    validate_server(server)?;
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolve_err = |reason: String| ClockError::Resolve {
        name: server.to_owned(),
        reason,
    };
    (server, port)
        .to_socket_addrs()
        .map_err(|e| resolve_err(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_err("no address".into()))
}

/// Asks `addr` for the time and sets `clock` by the offset found. Returns the offset
/// applied, in nanoseconds (positive: the clock moved forward).
pub fn sync_with(
    addr: SocketAddr,
    timeout: Duration,
    clock: &dyn ClockSetter,
) -> Result<i128, ClockError> {
    let offset = sntp::query(addr, timeout)?;
    let now = SystemTime::now();
    let magnitude = Duration::from_nanos(u64::try_from(offset.unsigned_abs()).unwrap_or(u64::MAX));
    let target = if offset >= 0 {
        now.checked_add(magnitude)
    } else {
        now.checked_sub(magnitude)
    }
    .ok_or_else(|| ClockError::Set("offset out of range".into()))?;
    clock.set(target)?;
    Ok(offset)
}

/// Synchronises with `server` (IPA's `sync_clock(ignore_errors=True)`, at start and
/// before a power action): logs the outcome, never fails.
pub fn sync_ignoring_errors(server: Option<&str>, clock: &dyn ClockSetter) {
    let Some(server) = server.filter(|s| !s.is_empty()) else {
        return;
    };
    let started = std::time::Instant::now();
    match resolve(server, NTP_PORT).and_then(|addr| sync_with(addr, SYNC_TIMEOUT, clock)) {
        Ok(offset) => tracing::info!(
            server,
            offset_ms = offset / 1_000_000,
            elapsed_ms = started.elapsed().as_millis(),
            "clock set from NTP server"
        ),
        Err(e) => {
            tracing::error!(server, error = %e, "failed to sync the clock with the NTP server")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::sync::Mutex;

    /// Records the times it is asked to set instead of moving the host's clock.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<SystemTime>>);

    impl ClockSetter for Recorder {
        fn set(&self, time: SystemTime) -> Result<(), ClockError> {
            self.0.lock().unwrap().push(time);
            Ok(())
        }
    }

    /// An SNTP server on 127.0.0.1 whose clock runs `ahead` of ours; answers `answers`
    /// requests, the first `garbage` of them with an answer to somebody else's request.
    fn fake_server(ahead: Duration, garbage: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(n, sntp::PACKET_LEN);
            assert_eq!(buf[0], 0x23, "client, version 4");
            let now = sntp::NtpTime::from_system(SystemTime::now() + ahead);
            let mut reply = [0u8; sntp::PACKET_LEN];
            reply[0] = 0x24;
            reply[1] = 2;
            reply[32..40].copy_from_slice(&now.0.to_be_bytes());
            reply[40..48].copy_from_slice(&now.0.to_be_bytes());
            for _ in 0..garbage {
                reply[24..32].copy_from_slice(&[9; 8]);
                sock.send_to(&reply, from).unwrap();
            }
            reply[24..32].copy_from_slice(&buf[40..48]);
            sock.send_to(&reply, from).unwrap();
        });
        (addr, t)
    }

    #[test]
    fn sets_the_clock_by_the_servers_offset() {
        let (addr, t) = fake_server(Duration::from_secs(3600), 0);
        let rec = Recorder::default();
        let before = SystemTime::now();
        let offset = sync_with(addr, Duration::from_secs(5), &rec).unwrap();
        t.join().unwrap();
        assert!((offset - 3_600_000_000_000).abs() < 50_000_000, "{offset}");
        let set = rec.0.lock().unwrap()[0];
        let ahead = set.duration_since(before).unwrap();
        assert!(
            ahead > Duration::from_secs(3599) && ahead < Duration::from_secs(3601),
            "{ahead:?}"
        );
    }

    #[test]
    fn a_forged_answer_is_refused_and_nothing_is_set() {
        let (addr, t) = fake_server(Duration::ZERO, 1);
        let rec = Recorder::default();
        let err = sync_with(addr, Duration::from_secs(5), &rec).unwrap_err();
        t.join().unwrap();
        assert!(err.to_string().contains("originate timestamp"), "{err}");
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn silence_times_out() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::default();
        let start = std::time::Instant::now();
        let err =
            sync_with(sock.local_addr().unwrap(), Duration::from_millis(200), &rec).unwrap_err();
        assert!(
            matches!(err, ClockError::Sntp(sntp::SntpError::Timeout { .. })),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(rec.0.lock().unwrap().is_empty());
    }

    #[test]
    fn server_names_are_validated_as_ipa_does() {
        for ok in ["192.0.2.1", "2001:db8::1", "ntp.example.org", "pool-1.ntp"] {
            assert!(validate_server(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a.example",
            "a b",
            "ntp;reboot",
            "x..y",
            &"a".repeat(254),
        ] {
            assert!(validate_server(bad).is_err(), "{bad}");
        }
        assert_eq!(
            resolve("192.0.2.1", 123).unwrap(),
            "192.0.2.1:123".parse().unwrap()
        );
    }
}
