//! mDNS discovery of the Ironic API (protocol spec 4.8), for `ipa-api-url=mdns` and
//! `ipa-use-mdns`: the conductor (`[conductor]enable_mdns`) announces the service
//! instance `baremetal._openstack._tcp.local.`; the agent asks for its SRV and TXT
//! records and builds the API URL from them.
//!
//! The query goes from an ephemeral port to the mDNS group on every IPv4 address the
//! agent has, so responders answer it by unicast to that port (RFC 6762 6.7, "legacy
//! unicast"): no socket on port 5353, no group membership, nothing left listening.

pub mod wire;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use wire::Record;

/// The mDNS group and port.
pub const MDNS_GROUP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353));
/// The domain OpenStack services announce themselves in.
pub const SERVICE_DOMAIN: &str = "_openstack._tcp.local.";
/// The Ironic API's service type.
pub const BAREMETAL: &str = "baremetal";
/// Options an announcement may set through its `ipa_*` properties (IPA's default
/// `[mdns]allowed_overrides`).
pub const ALLOWED_OVERRIDES: &[&str] = &["inspection_callback_url", "ntp_server"];
/// Queries sent before giving up (IPA's `[mdns]lookup_attempts`).
pub const ATTEMPTS: u32 = 3;
/// How long the first query waits for answers; each further one waits twice as long.
pub const FIRST_WAIT: Duration = Duration::from_millis(250);

/// A discovered endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `<protocol>://<host>:<port><path>`, without a trailing slash.
    pub url: String,
    /// The announcement's `ipa_*` properties, prefix removed (`ntp_server`, ...).
    pub params: BTreeMap<String, String>,
}

/// One lookup.
#[derive(Debug, Clone)]
pub struct Query {
    /// Service type (`baremetal`).
    pub service: String,
    /// Addresses to send from, one socket each (none: one socket on the default route).
    pub sources: Vec<Ipv4Addr>,
    /// Where the queries go ([`MDNS_GROUP`]; a unicast address in tests).
    pub dest: SocketAddr,
    /// Queries sent at most.
    pub attempts: u32,
    /// Wait after the first query; doubled after each.
    pub first_wait: Duration,
}

impl Query {
    /// A lookup of `service` from `sources` with IPA's attempts.
    pub fn new(service: &str, sources: Vec<Ipv4Addr>) -> Self {
        Self {
            service: service.to_owned(),
            sources,
            dest: MDNS_GROUP,
            attempts: ATTEMPTS,
            first_wait: FIRST_WAIT,
        }
    }

    /// The service instance asked for: `<service>._openstack._tcp.local.`.
    pub fn instance(&self) -> String {
        format!("{}.{SERVICE_DOMAIN}", self.service.to_ascii_lowercase())
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// No socket could be opened or none could send.
    #[error("mDNS query for {instance} could not be sent: {source}")]
    Socket {
        /// The instance asked for.
        instance: String,
        /// The last error.
        source: io::Error,
    },
    /// Nobody answered with a usable endpoint.
    #[error("no answer for {instance} after {attempts} mDNS queries ({waited_ms} ms)")]
    NotFound {
        /// The instance asked for.
        instance: String,
        /// Queries sent.
        attempts: u32,
        /// Time spent.
        waited_ms: u128,
    },
}

/// Sends the query up to `attempts` times and returns the first usable endpoint.
/// Blocking: a few seconds at most.
pub fn discover(q: &Query) -> Result<Endpoint, MdnsError> {
    let instance = q.instance();
    let sock_err = |source| MdnsError::Socket {
        instance: instance.clone(),
        source,
    };
    let sources = if q.sources.is_empty() {
        vec![Ipv4Addr::UNSPECIFIED]
    } else {
        q.sources.clone()
    };
    let mut sockets = Vec::new();
    let mut last_err = None;
    for src in sources {
        match open(src) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                tracing::debug!(source = %src, error = %e, "mDNS socket");
                last_err = Some(e);
            }
        }
    }
    if sockets.is_empty() {
        return Err(sock_err(
            last_err.unwrap_or_else(|| io::Error::other("no socket")),
        ));
    }
    let msg = wire::query(&instance);
    let started = Instant::now();
    let mut records = Vec::new();
    let mut wait = q.first_wait;
    let mut buf = vec![0u8; 9000];
    for attempt in 1..=q.attempts.max(1) {
        let mut sent = 0;
        for s in &sockets {
            match s.send_to(&msg, q.dest) {
                Ok(_) => sent += 1,
                Err(e) => last_err = Some(e),
            }
        }
        if sent == 0 {
            return Err(sock_err(
                last_err.unwrap_or_else(|| io::Error::other("send failed")),
            ));
        }
        tracing::debug!(attempt, sockets = sent, %instance, "mDNS query sent");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let mut got = false;
            for s in &sockets {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    got = true;
                    match wire::records(&buf[..n]) {
                        Ok(r) => records.extend(r),
                        Err(e) => tracing::debug!(%from, error = %e, "mDNS answer ignored"),
                    }
                }
            }
            if got {
                if let Some(ep) = endpoint(&instance, &records) {
                    return Ok(ep);
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        wait *= 2;
    }
    Err(MdnsError::NotFound {
        instance,
        attempts: q.attempts.max(1),
        waited_ms: started.elapsed().as_millis(),
    })
}

fn open(src: Ipv4Addr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    if !src.is_unspecified() {
        s.set_multicast_if_v4(&src)?;
    }
    // RFC 6762 11: mDNS packets carry TTL 255; responders may drop others.
    s.set_multicast_ttl_v4(255)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The endpoint `records` describe for `instance`, once the SRV record and (for a
/// `.local.` target) one of its routable addresses are there.
pub fn endpoint(instance: &str, records: &[Record]) -> Option<Endpoint> {
    let instance = instance.to_ascii_lowercase();
    let (port, target) = records.iter().find_map(|r| match r {
        Record::Srv { name, port, target } if *name == instance => Some((*port, target)),
        _ => None,
    })?;
    let props = records
        .iter()
        .find_map(|r| match r {
            Record::Txt { name, props } if *name == instance => Some(props.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let host = if target.ends_with(".local.") {
        let candidates: Vec<IpAddr> = records
            .iter()
            .filter_map(|r| match r {
                Record::Addr { name, addr } if name == target && routable(addr) => Some(*addr),
                _ => None,
            })
            .collect();
        // As IPA: the first address this machine has a route to, else the first.
        let addr = *candidates
            .iter()
            .find(|a| has_route(a, port))
            .or(candidates.first())?;
        match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    } else {
        target.trim_end_matches('.').to_owned()
    };
    let protocol = props
        .get("protocol")
        .cloned()
        .unwrap_or_else(|| if port == 80 { "http" } else { "https" }.to_owned());
    let path = props.get("path").map(String::as_str).unwrap_or("");
    let url = format!("{protocol}://{host}:{port}{path}")
        .trim_end_matches('/')
        .to_owned();
    let params = props
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ipa_")?.to_owned(), v.clone())))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    Some(Endpoint { url, params })
}

/// Whether the kernel has a route to `addr` (connecting a UDP socket sends nothing).
fn has_route(addr: &IpAddr, port: u16) -> bool {
    let local: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(local)
        .and_then(|s| s.connect((*addr, port)))
        .is_ok()
}

fn routable(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::tests::response;
    use super::*;

    const INSTANCE: &str = "baremetal._openstack._tcp.local.";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_url_follows_the_records() {
        let recs = |port, target, txt: &[&str], addrs: &[IpAddr]| {
            wire::records(&response(INSTANCE, port, target, txt, addrs)).unwrap()
        };
        // Ironic's announcement of http://10.77.0.1:6385: its host is an address, so
        // the target is the instance name itself, and the protocol is said.
        let ep = endpoint(
            INSTANCE,
            &recs(
                6385,
                INSTANCE,
                &["protocol=http", "ipa_debug=True"],
                &[ip("10.77.0.1")],
            ),
        )
        .unwrap();
        assert_eq!(ep.url, "http://10.77.0.1:6385");
        assert_eq!(ep.params, BTreeMap::from([("debug".into(), "True".into())]));
        // No protocol: http on port 80, else https; a path; a host name kept as named.
        let ep = endpoint(
            INSTANCE,
            &recs(80, "ironic.example.com.", &["path=/baremetal/"], &[]),
        )
        .unwrap();
        assert_eq!(ep.url, "http://ironic.example.com:80/baremetal");
        let ep = endpoint(INSTANCE, &recs(6385, "ironic.example.com.", &[], &[])).unwrap();
        assert_eq!(ep.url, "https://ironic.example.com:6385");
        // A .local. target: its first routable address (loopback and link-local are
        // not), IPv6 in brackets; none yet: no endpoint.
        let ep = endpoint(
            INSTANCE,
            &recs(
                6385,
                "ironic.local.",
                &["protocol=http"],
                &[
                    ip("127.0.0.1"),
                    ip("169.254.1.1"),
                    ip("fe80::1"),
                    ip("fd00::5"),
                ],
            ),
        )
        .unwrap();
        assert_eq!(ep.url, "http://[fd00::5]:6385");
        assert_eq!(
            endpoint(
                INSTANCE,
                &recs(6385, "ironic.local.", &[], &[ip("127.0.0.1")])
            ),
            None
        );
        // Another instance's records do not count.
        assert_eq!(
            endpoint(
                "other._openstack._tcp.local.",
                &recs(6385, "h.example.", &[], &[])
            ),
            None
        );
    }

    /// A responder on 127.0.0.1 answering each query to its source port, as an mDNS
    /// responder answers a legacy-unicast query; it stays silent for the first `skip`.
    fn responder(answer: Vec<u8>, skip: usize) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut seen = 0;
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                seen += 1;
                assert_eq!(&buf[..n], &wire::query(INSTANCE)[..]);
                if seen > skip {
                    // First something that is not for us, then the answer.
                    sock.send_to(&[1, 2, 3], from).unwrap();
                    sock.send_to(&answer, from).unwrap();
                    break;
                }
            }
            seen
        });
        (addr, h)
    }

    fn query_to(dest: SocketAddr, attempts: u32) -> Query {
        Query {
            dest,
            attempts,
            first_wait: Duration::from_millis(100),
            ..Query::new(BAREMETAL, vec![Ipv4Addr::LOCALHOST])
        }
    }

    #[test]
    fn discovery_asks_again_until_answered() {
        let answer = response(
            INSTANCE,
            6385,
            INSTANCE,
            &["protocol=http"],
            &[ip("10.77.0.1")],
        );
        let (dest, h) = responder(answer, 1);
        let ep = discover(&query_to(dest, 3)).unwrap();
        assert_eq!(ep.url, "http://10.77.0.1:6385");
        assert_eq!(h.join().unwrap(), 2, "answered the second query");
    }

    #[test]
    fn discovery_gives_up_after_its_attempts() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let err = discover(&query_to(silent.local_addr().unwrap(), 2)).unwrap_err();
        assert!(
            matches!(err, MdnsError::NotFound { attempts: 2, .. }),
            "{err}"
        );
        // 100 ms, then 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
        let mut buf = [0u8; 512];
        silent
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(silent.recv_from(&mut buf).is_ok() && silent.recv_from(&mut buf).is_ok());
    }
}
