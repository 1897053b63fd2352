//! The `interfaces` list (spec 1.5) from `sys/class/net`, with IP addresses from an
//! [`AddrSource`] (`getifaddrs` in production, a JSON file in fixture tests) and the facts
//! sysfs lacks from a [`NicProbe`] (ethtool ioctls and LLDP sockets in production,
//! nothing in fixture tests).
//!
//! Candidates are entries with a `device` link (physical NICs), a `bonding` directory
//! (bond masters) or a VLAN-style name `<x>.<digits>`; loopback, bridges, veth and tun
//! are absent. The MAC is the permanent address (`ETHTOOL_GPERMADDR`) when the driver
//! keeps one, else `address`, as IPA's `get_mac_addr`; an interface without a usable MAC
//! (missing, all zero) or with one starting with `fa:` (IPA treats it as locally
//! assigned) is dropped. `speed_mbps` is the fastest supported link mode, IPA's lshw
//! `capacity`, else the current `speed` (null when unknown). `lldp` is null unless LLDP
//! collection was asked for; `biosdevname` and `client_id` are null.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ira_hw::NetworkInterface;

use super::lldp::{self, Tlvs};
use crate::sys::ethtool::Ethtool;

use super::read::{link_basename, list_dir, read_bounded, read_opt, read_opt_nonempty, under};
use super::InventoryError;

/// Addresses files used by fixtures stay tiny; the cap only bounds a broken one.
const ADDRS_FILE_CAP: u64 = 1 << 20;

/// Where interface IP addresses come from.
pub trait AddrSource {
    /// Every (interface name, address) pair, in the order the system lists them.
    fn addresses(&self) -> Result<Vec<(String, IpAddr)>, InventoryError>;
}

/// The running system's addresses via `getifaddrs(3)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemAddrs;

impl AddrSource for SystemAddrs {
    fn addresses(&self) -> Result<Vec<(String, IpAddr)>, InventoryError> {
        let addrs = nix::ifaddrs::getifaddrs().map_err(|errno| InventoryError::Addresses {
            reason: errno.to_string(),
        })?;
        let mut out = Vec::new();
        for ifa in addrs {
            let Some(addr) = ifa.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                out.push((ifa.interface_name, IpAddr::V4(v4.ip())));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out.push((ifa.interface_name, IpAddr::V6(v6.ip())));
            }
        }
        Ok(out)
    }
}

/// Addresses from a JSON file `{"eth0": ["192.0.2.2", "fe80::1"]}` (fixture trees keep
/// it as `.ira-fixture/addrs.json`); the order inside each list is kept.
#[derive(Debug, Clone)]
pub struct FileAddrs {
    path: PathBuf,
}

impl FileAddrs {
    /// Reads addresses from `path` when asked.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl AddrSource for FileAddrs {
    fn addresses(&self) -> Result<Vec<(String, IpAddr)>, InventoryError> {
        let bytes = read_bounded(&self.path, ADDRS_FILE_CAP)?;
        let invalid = |reason: String| InventoryError::Invalid {
            path: self.path.clone(),
            reason,
        };
        let map: BTreeMap<String, Vec<String>> =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut out = Vec::new();
        for (name, list) in map {
            for text in list {
                let ip = text
                    .parse()
                    .map_err(|_| invalid(format!("{text:?} is not an IP address")))?;
                out.push((name.clone(), ip));
            }
        }
        Ok(out)
    }
}

/// What the kernel knows about a NIC beyond sysfs.
pub trait NicProbe {
    /// The permanent MAC address, lower-case; `None` when the driver keeps none.
    fn permanent_mac(&self, name: &str) -> Option<String>;
    /// The fastest link speed the NIC supports, in Mb/s.
    fn max_speed_mbps(&self, name: &str) -> Option<u64>;
    /// One LLDP frame per interface within `timeout` (see [`lldp::listen`]).
    fn lldp(&self, names: &[String], timeout: Duration) -> BTreeMap<String, Option<Tlvs>>;
}

/// The running system's NICs: ethtool ioctls and raw LLDP sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemNics;

impl NicProbe for SystemNics {
    fn permanent_mac(&self, name: &str) -> Option<String> {
        let addr = Ethtool::new()
            .and_then(|e| e.permanent_address(name))
            .map_err(|err| tracing::debug!(interface = %name, error = %err, "no permanent MAC"))
            .ok()??;
        Some(
            addr.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        )
    }

    fn max_speed_mbps(&self, name: &str) -> Option<u64> {
        Ethtool::new()
            .and_then(|e| e.max_supported_speed(name))
            .map_err(|err| tracing::debug!(interface = %name, error = %err, "no link modes"))
            .ok()?
            .map(u64::from)
    }

    fn lldp(&self, names: &[String], timeout: Duration) -> BTreeMap<String, Option<Tlvs>> {
        lldp::listen(names, timeout)
    }
}

/// No kernel probes: fixture trees describe interfaces that are not this machine's.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl NicProbe for NoProbe {
    fn permanent_mac(&self, _name: &str) -> Option<String> {
        None
    }
    fn max_speed_mbps(&self, _name: &str) -> Option<u64> {
        None
    }
    fn lldp(&self, _names: &[String], _timeout: Duration) -> BTreeMap<String, Option<Tlvs>> {
        BTreeMap::new()
    }
}

/// Lists the network interfaces under `root`, with `addrs` for their IP addresses,
/// `probe` for permanent MACs, maximum speeds and, when `lldp_timeout` is set, LLDP.
pub fn list_interfaces(
    root: &Path,
    addrs: &[(String, IpAddr)],
    probe: &dyn NicProbe,
    lldp_timeout: Option<Duration>,
) -> Result<Vec<NetworkInterface>, InventoryError> {
    let base = under(root, "sys/class/net");
    let mut out = Vec::new();
    for name in list_dir(&base)? {
        let dir = base.join(&name);
        let has_device = std::fs::symlink_metadata(dir.join("device")).is_ok();
        if !(has_device || dir.join("bonding").is_dir() || is_vlan_name(&name)) {
            continue;
        }
        // IPA get_mac_addr: the permanent address when non-zero, else the current one.
        let mac = probe
            .permanent_mac(&name)
            .and_then(|a| normalize_mac(&a))
            .or_else(|| read_opt(&dir.join("address")).and_then(|a| normalize_mac(&a)));
        let Some(mac) = mac else {
            tracing::debug!(interface = %name, "skipped: no usable MAC address");
            continue;
        };
        if mac.starts_with("fa:") {
            tracing::warn!(interface = %name, mac = %mac, "skipped: locally assigned MAC (fa:)");
            continue;
        }
        out.push(NetworkInterface {
            ipv4_address: first_address(addrs, &name, true),
            ipv6_address: first_address(addrs, &name, false),
            has_carrier: read_opt(&dir.join("carrier")).as_deref() == Some("1"),
            lldp: None,
            vendor: read_opt_nonempty(&dir.join("device/vendor")),
            product: read_opt_nonempty(&dir.join("device/device")),
            client_id: None,
            biosdevname: None,
            // IPA: lshw's `capacity` (fastest supported mode), else `size` (current).
            speed_mbps: probe
                .max_speed_mbps(&name)
                .or_else(|| read_opt(&dir.join("speed")).and_then(|s| parse_speed(&s))),
            pci_address: link_basename(&dir.join("device")),
            driver: link_basename(&dir.join("device/driver")),
            mac_address: mac,
            name,
        });
    }
    if let Some(timeout) = lldp_timeout {
        attach_lldp(&mut out, probe, timeout);
    }
    Ok(out)
}

/// Listens for LLDP on all `interfaces` at once and stores what each heard in `lldp`.
pub fn attach_lldp(interfaces: &mut [NetworkInterface], probe: &dyn NicProbe, timeout: Duration) {
    let names: Vec<String> = interfaces.iter().map(|i| i.name.clone()).collect();
    let mut heard = probe.lldp(&names, timeout);
    for iface in interfaces {
        iface.lldp = heard.remove(&iface.name).flatten();
    }
}

/// `<x>.<digits>`: the kernel's default VLAN interface naming.
pub fn is_vlan_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(base, id)| {
        !base.is_empty() && !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit())
    })
}

/// Lower-cases a MAC; `None` when empty or all zero.
pub fn normalize_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase();
    let all_zero = mac.chars().all(|c| c == '0' || c == ':');
    (!mac.is_empty() && !all_zero).then_some(mac)
}

/// `speed` in Mbit/s; the kernel writes `-1` (or fails to read) when unknown.
pub fn parse_speed(text: &str) -> Option<u64> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
}

/// The first IPv4 (or IPv6) address of `name`; link-local IPv6 gets `%<name>` as
/// psutil (IPA's source) prints it.
fn first_address(addrs: &[(String, IpAddr)], name: &str, v4: bool) -> Option<String> {
    addrs
        .iter()
        .filter(|(n, _)| n == name)
        .find_map(|(_, ip)| match ip {
            IpAddr::V4(a) if v4 => Some(a.to_string()),
            IpAddr::V6(a) if !v4 && is_link_local(a) => Some(format!("{a}%{name}")),
            IpAddr::V6(a) if !v4 => Some(a.to_string()),
            _ => None,
        })
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_names() {
        assert!(is_vlan_name("eth0.100"));
        assert!(is_vlan_name("bond0.7"));
        assert!(!is_vlan_name("eth0."));
        assert!(!is_vlan_name(".100"));
        assert!(!is_vlan_name("eth0"));
        assert!(!is_vlan_name("br.x1"));
    }

    #[test]
    fn macs_and_speeds() {
        assert_eq!(
            normalize_mac("3C:FD:FE:12:34:56\n").as_deref(),
            Some("3c:fd:fe:12:34:56")
        );
        assert_eq!(normalize_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac(""), None);
        assert_eq!(parse_speed("10000\n"), Some(10000));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("0"), None);
        assert_eq!(parse_speed("x"), None);
    }

    #[test]
    fn first_addresses_per_family() {
        let addrs = vec![
            ("eth1".to_owned(), "198.51.100.1".parse().unwrap()),
            ("eth0".to_owned(), "fe80::1".parse().unwrap()),
            ("eth0".to_owned(), "192.0.2.2".parse().unwrap()),
            ("eth0".to_owned(), "192.0.2.3".parse().unwrap()),
            ("eth0".to_owned(), "2001:db8::2".parse().unwrap()),
        ];
        assert_eq!(
            first_address(&addrs, "eth0", true).as_deref(),
            Some("192.0.2.2")
        );
        assert_eq!(
            first_address(&addrs, "eth0", false).as_deref(),
            Some("fe80::1%eth0")
        );
        assert_eq!(first_address(&addrs, "eth2", true), None);
    }
}
