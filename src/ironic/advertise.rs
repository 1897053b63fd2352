//! The address the agent advertises in its `callback_url` (spec 4.7).
//!
//! Order: `advertise_host` verbatim; else the IPv4 address of `network_interface`; else
//! the source address the kernel picks to reach each API URL. The route lookup connects
//! a UDP socket (which sends nothing) and reads its local address, so no `ip` binary is
//! needed. IPA's reachability probe (an HTTP GET before the route lookup) is not done:
//! the route question does not need it. Link-local results are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::config::Config;

/// No usable address was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not find an address to advertise after {attempts} attempts: {reason}")]
pub struct AdvertiseError {
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub reason: String,
}

/// Where detection looks when `advertise_host` is not set.
#[derive(Debug, Clone)]
pub struct AdvertiseOptions {
    /// `advertise_host`.
    pub advertise_host: Option<String>,
    /// `network_interface`.
    pub network_interface: Option<String>,
    /// API URLs whose routes are asked.
    pub api_urls: Vec<String>,
    /// `ip_lookup_attempts`.
    pub attempts: u32,
    /// `ip_lookup_sleep`.
    pub sleep: Duration,
}

impl AdvertiseOptions {
    /// Options from the agent configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            advertise_host: config.advertise_host.clone(),
            network_interface: config.network_interface.clone(),
            api_urls: config.api_urls.clone(),
            attempts: config.ip_lookup_attempts,
            sleep: config.ip_lookup_sleep,
        }
    }
}

/// Finds the host to advertise, retrying `attempts` times `sleep` apart.
pub async fn find_advertise_host(opts: &AdvertiseOptions) -> Result<String, AdvertiseError> {
    if let Some(host) = opts.advertise_host.as_deref().filter(|h| !h.is_empty()) {
        return Ok(host.to_owned());
    }
    let attempts = opts.attempts.max(1);
    let mut reason = String::new();
    for attempt in 1..=attempts {
        let found = match &opts.network_interface {
            Some(name) => interface_ipv4(name).map(|ip| ip.to_string()),
            None => routed_source(&opts.api_urls).await.map(|ip| ip.to_string()),
        };
        match found {
            Ok(host) => return Ok(host),
            Err(e) => reason = e,
        }
        if attempt < attempts {
            tracing::debug!(attempt, reason = %reason, "advertise address not found yet");
            tokio::time::sleep(opts.sleep).await;
        }
    }
    Err(AdvertiseError { attempts, reason })
}

/// The first IPv4 address of interface `name`, read live (DHCP may finish late).
fn interface_ipv4(name: &str) -> Result<Ipv4Addr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing addresses: {e}"))?;
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_unspecified())
        .ok_or_else(|| format!("interface {name} has no IPv4 address"))
}

/// Host and port of an `http(s)://` URL; IPv6 brackets removed.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let port = parsed.port_or_known_default()?;
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_owned(), port))
}

/// The kernel's source address towards each API URL's resolved addresses, first usable.
async fn routed_source(urls: &[String]) -> Result<IpAddr, String> {
    if urls.is_empty() {
        return Err("no API URL to route to".into());
    }
    let mut reason = String::new();
    for url in urls {
        let Some((host, port)) = url_host_port(url) else {
            reason = format!("cannot parse API URL {url}");
            continue;
        };
        let resolved = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(r) => r.collect::<Vec<_>>(),
            Err(e) => {
                reason = format!("resolving {host}: {e}");
                continue;
            }
        };
        for target in resolved {
            match source_for(target) {
                Ok(ip) if usable(ip) => return Ok(ip),
                Ok(ip) => reason = format!("route to {target} uses unusable source {ip}"),
                Err(e) => reason = format!("no route to {target}: {e}"),
            }
        }
    }
    Err(reason)
}

/// Source address the kernel would use to reach `target` (route lookup, no packet sent).
pub fn source_for(target: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    Ok(socket.local_addr()?.ip())
}

/// Not unspecified and not link-local (a link-local address is useless off-link).
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// `<proto>://<host>:<port>`, IPv6 hosts in brackets, no trailing slash.
pub fn callback_url(protocol: &str, host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<Ipv6Addr>().is_ok() {
        format!("{protocol}://[{bare}]:{port}")
    } else {
        format!("{protocol}://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls() {
        assert_eq!(
            callback_url("https", "192.0.2.1", 9999),
            "https://192.0.2.1:9999"
        );
        assert_eq!(
            callback_url("http", "2001:db8::1", 9999),
            "http://[2001:db8::1]:9999"
        );
        assert_eq!(
            callback_url("http", "[2001:db8::1]", 1),
            "http://[2001:db8::1]:1"
        );
        assert_eq!(
            callback_url("https", "agent.example", 9999),
            "https://agent.example:9999"
        );
    }

    #[test]
    fn url_parts() {
        assert_eq!(
            url_host_port("http://10.0.0.1:6385"),
            Some(("10.0.0.1".into(), 6385))
        );
        assert_eq!(
            url_host_port("https://[2001:db8::5]/x"),
            Some(("2001:db8::5".into(), 443))
        );
        assert_eq!(url_host_port("http://ironic"), Some(("ironic".into(), 80)));
        assert_eq!(url_host_port("not a url"), None);
    }

    #[test]
    fn link_local_is_skipped() {
        assert!(!usable("169.254.1.1".parse().unwrap()));
        assert!(!usable("fe80::1".parse().unwrap()));
        assert!(!usable("0.0.0.0".parse().unwrap()));
        assert!(usable("10.0.0.1".parse().unwrap()));
        assert!(usable("2001:db8::1".parse().unwrap()));
        assert!(usable("127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn detection_order() {
        let mut opts = AdvertiseOptions {
            advertise_host: Some("198.51.100.7".into()),
            network_interface: None,
            api_urls: vec!["http://127.0.0.1:6385".into()],
            attempts: 2,
            sleep: Duration::from_millis(1),
        };
        assert_eq!(find_advertise_host(&opts).await.unwrap(), "198.51.100.7");
        opts.advertise_host = None;
        assert_eq!(find_advertise_host(&opts).await.unwrap(), "127.0.0.1");
        opts.network_interface = Some("lo".into());
        assert_eq!(find_advertise_host(&opts).await.unwrap(), "127.0.0.1");
        opts.network_interface = Some("ira-no-such-if0".into());
        let err = find_advertise_host(&opts).await.unwrap_err();
        assert_eq!(err.attempts, 2);
        opts.network_interface = None;
        opts.api_urls = vec!["garbage".into()];
        assert!(find_advertise_host(&opts).await.is_err());
    }
}
