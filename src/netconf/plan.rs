//! From a parsed [`NetworkData`] and the machine's interfaces (name and MAC) to an
//! ordered list of interface steps. No I/O: the caller reads the interfaces (see
//! [`read_interfaces`]) and applies the plan.
//!
//! Naming follows glean (the tool IPA's DIB ramdisks use for the same file): a physical
//! link is the interface with its MAC, a bond is named after its link id when that is a
//! usable interface name (else `bondN`), a VLAN is `<parent>.<vlan id>`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::model::{Link, Network, NetworkData};
use crate::inventory::read::{list_dir_opt, read_opt, under};

/// Bond modes the kernel's bonding driver accepts by name.
const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
];
/// Bond mode when the link gives none (the kernel's default).
const DEFAULT_BOND_MODE: &str = "balance-rr";
/// Longest interface name (`IFNAMSIZ` minus the NUL).
const IFNAME_MAX: usize = 15;

/// A `network_data.json` that cannot be turned into a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two links share an id.
    #[error("link id {0:?} is defined twice")]
    DuplicateLink(String),
    /// A network, bond or VLAN names a link that is not defined.
    #[error("{user} refers to undefined link {link:?}")]
    UnknownLink {
        /// Who refers to it.
        user: String,
        /// The missing link id.
        link: String,
    },
    /// A value of the wrong form.
    #[error("{what}: invalid {field} {value:?}")]
    Invalid {
        /// The link or network.
        what: String,
        /// The field.
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// Links that depend on each other in a circle.
    #[error("links {0:?} depend on each other in a circle")]
    Circle(Vec<String>),
    /// Nothing in the file matches this machine.
    #[error("no link of network_data.json matches a network interface of this machine")]
    NothingMatches,
}

/// One link to create or set up, in dependency order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStep {
    /// An existing NIC, found by MAC.
    Phy {
        /// Interface name.
        name: String,
        /// Its MAC (lower case).
        mac: String,
        /// MTU to set.
        mtu: Option<u32>,
        /// The bond it joins.
        master: Option<String>,
    },
    /// A bond to create.
    Bond {
        /// Interface name.
        name: String,
        /// Bonding mode.
        mode: String,
        /// MII monitoring interval, ms.
        miimon: Option<u32>,
        /// Transmit hash policy.
        xmit_hash_policy: Option<String>,
        /// MAC to set.
        mac: Option<String>,
        /// MTU to set.
        mtu: Option<u32>,
        /// Member interface names.
        members: Vec<String>,
    },
    /// A VLAN interface to create.
    Vlan {
        /// Interface name.
        name: String,
        /// Parent interface name.
        parent: String,
        /// VLAN id (1-4094).
        vlan_id: u16,
        /// MAC to set.
        mac: Option<String>,
        /// MTU to set.
        mtu: Option<u32>,
    },
}

impl LinkStep {
    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            Self::Phy { name, .. } | Self::Bond { name, .. } | Self::Vlan { name, .. } => name,
        }
    }
}

/// A static address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrStep {
    /// Interface name.
    pub link: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStep {
    /// Interface name.
    pub link: String,
    /// Destination network.
    pub destination: IpAddr,
    /// Destination prefix length (0: the default route).
    pub prefix: u8,
    /// Next hop.
    pub gateway: Option<IpAddr>,
}

/// Everything to configure, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Links in dependency order (members before bonds, parents before VLANs).
    pub links: Vec<LinkStep>,
    /// Static addresses.
    pub addresses: Vec<AddrStep>,
    /// Static routes, the default route(s) included.
    pub routes: Vec<RouteStep>,
    /// DNS servers, first given first, without repeats.
    pub dns: Vec<IpAddr>,
    /// What was left out and why (links of other machines, DHCP networks).
    pub skipped: Vec<String>,
}

/// The machine's interfaces as `(name, MAC)`, read under `root` (`sys/class/net`).
pub fn read_interfaces(root: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list_dir_opt(&under(root, "sys/class/net"))
        .into_iter()
        .filter_map(|name| {
            let mac = read_opt(&under(root, &format!("sys/class/net/{name}/address")))?;
            Some((name, mac.to_ascii_lowercase()))
        })
        .collect();
    out.sort();
    out
}

/// Plans `data` for a machine with `interfaces` (`(name, MAC)`).
pub fn plan(data: &NetworkData, interfaces: &[(String, String)]) -> Result<Plan, PlanError> {
    let mut by_id: HashMap<&str, &Link> = HashMap::new();
    for link in &data.links {
        if by_id.insert(link.id.as_str(), link).is_some() {
            return Err(PlanError::DuplicateLink(link.id.clone()));
        }
    }
    let mut out = Plan::default();
    // Link id -> interface name, for links that exist (or will) on this machine.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut used: BTreeSet<String> = interfaces.iter().map(|(n, _)| n.clone()).collect();
    let mut pending: Vec<&Link> = Vec::new();
    for link in &data.links {
        match link.kind.as_str() {
            "bond" | "vlan" => pending.push(link),
            _ => {
                let Some(mac) = link
                    .ethernet_mac_address
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                else {
                    out.skipped
                        .push(format!("link {}: no ethernet_mac_address", link.id));
                    continue;
                };
                match interfaces.iter().find(|(_, m)| *m == mac) {
                    Some((name, _)) => {
                        names.insert(link.id.clone(), name.clone());
                        out.links.push(LinkStep::Phy {
                            name: name.clone(),
                            mac,
                            mtu: link.mtu,
                            master: None,
                        });
                    }
                    None => out
                        .skipped
                        .push(format!("link {}: no interface has MAC {mac}", link.id)),
                }
            }
        }
    }
    // Bonds and VLANs once what they stand on is known; several rounds for VLANs on bonds.
    let mut bonds = 0usize;
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for link in pending {
            let deps: Vec<&str> = if link.kind == "bond" {
                link.bond_links.iter().map(String::as_str).collect()
            } else {
                link.vlan_link.as_deref().into_iter().collect()
            };
            if let Some(missing) = deps.iter().find(|d| !by_id.contains_key(**d)) {
                return Err(PlanError::UnknownLink {
                    user: format!("link {}", link.id),
                    link: (*missing).to_owned(),
                });
            }
            if deps
                .iter()
                .any(|d| !names.contains_key(*d) && !out.skipped.iter().any(|s| skipped_link(s, d)))
            {
                rest.push(link);
                continue;
            }
            if deps.iter().any(|d| !names.contains_key(*d)) || deps.is_empty() {
                let why = if deps.is_empty() {
                    "no member or parent link"
                } else {
                    "a link it needs is not on this machine"
                };
                out.skipped.push(format!("link {}: {why}", link.id));
                continue;
            }
            let step = if link.kind == "bond" {
                plan_bond(link, &names, &mut used, &mut bonds, &mut out.links)?
            } else {
                plan_vlan(link, &names, &mut used)?
            };
            names.insert(link.id.clone(), step.name().to_owned());
            out.links.push(step);
        }
        if rest.len() == before {
            return Err(PlanError::Circle(
                rest.iter().map(|l| l.id.clone()).collect(),
            ));
        }
        pending = rest;
    }
    if out.links.is_empty() && !data.links.is_empty() {
        return Err(PlanError::NothingMatches);
    }

    for net in &data.networks {
        if !by_id.contains_key(net.link.as_str()) {
            return Err(PlanError::UnknownLink {
                user: format!("network {}", net_name(net)),
                link: net.link.clone(),
            });
        }
        let Some(ifname) = names.get(&net.link) else {
            out.skipped.push(format!(
                "network {}: link {} is not on this machine",
                net_name(net),
                net.link
            ));
            continue;
        };
        match net.kind.as_str() {
            "ipv4" | "ipv6" => plan_static(net, ifname, &mut out)?,
            // The kernel's router-advertisement handling does SLAAC on an up link.
            "ipv6_slaac" => {}
            other => out.skipped.push(format!(
                "network {} ({other} on {ifname}): only static networks are configured, no DHCP is run",
                net_name(net)
            )),
        }
    }
    for svc in &data.services {
        add_dns(svc, "services", &mut out.dns)?;
    }
    Ok(out)
}

/// Whether a skip note is about link `id`.
fn skipped_link(note: &str, id: &str) -> bool {
    note.strip_prefix("link ")
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.starts_with(':'))
}

fn net_name(net: &Network) -> String {
    net.id.clone().unwrap_or_else(|| format!("on {}", net.link))
}

fn plan_bond(
    link: &Link,
    names: &HashMap<String, String>,
    used: &mut BTreeSet<String>,
    bonds: &mut usize,
    steps: &mut [LinkStep],
) -> Result<LinkStep, PlanError> {
    let mode = link
        .bond_mode
        .clone()
        .unwrap_or_else(|| DEFAULT_BOND_MODE.to_owned());
    if !BOND_MODES.contains(&mode.as_str()) {
        return Err(invalid(&link.id, "bond_mode", &mode));
    }
    let miimon = link
        .bond_miimon
        .as_ref()
        .map(|v| number(v).ok_or_else(|| invalid(&link.id, "bond_miimon", &v.to_string())))
        .transpose()?;
    let name = if usable_name(&link.id) && !used.contains(&link.id) {
        link.id.clone()
    } else {
        loop {
            let candidate = format!("bond{bonds}");
            *bonds += 1;
            if !used.contains(&candidate) {
                break candidate;
            }
        }
    };
    used.insert(name.clone());
    let members: Vec<String> = link.bond_links.iter().map(|m| names[m].clone()).collect();
    for member in &members {
        let step = steps
            .iter_mut()
            .find(|s| matches!(s, LinkStep::Phy { name: n, .. } if n == member));
        match step {
            Some(LinkStep::Phy {
                master: slot @ None,
                ..
            }) => *slot = Some(name.clone()),
            Some(LinkStep::Phy {
                master: Some(other),
                ..
            }) => {
                return Err(invalid(
                    &link.id,
                    "bond_links",
                    &format!("{member} is already in {other}"),
                ));
            }
            // Only NICs join a bond (no bonds of VLANs or of bonds).
            _ => {
                return Err(invalid(
                    &link.id,
                    "bond_links",
                    &format!("{member} is not a NIC"),
                ))
            }
        }
    }
    Ok(LinkStep::Bond {
        name,
        mode,
        miimon,
        xmit_hash_policy: link.bond_xmit_hash_policy.clone(),
        mac: link
            .ethernet_mac_address
            .as_deref()
            .map(str::to_ascii_lowercase),
        mtu: link.mtu,
        members,
    })
}

fn plan_vlan(
    link: &Link,
    names: &HashMap<String, String>,
    used: &mut BTreeSet<String>,
) -> Result<LinkStep, PlanError> {
    let raw = link.vlan_id.clone().unwrap_or(Value::Null);
    let vlan_id = number(&raw)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (1..=4094).contains(n))
        .ok_or_else(|| invalid(&link.id, "vlan_id", &raw.to_string()))?;
    let parent = names[link.vlan_link.as_deref().expect("checked by the caller")].clone();
    let mut name = format!("{parent}.{vlan_id}");
    if name.len() > IFNAME_MAX {
        name = format!("vlan{vlan_id}");
    }
    used.insert(name.clone());
    Ok(LinkStep::Vlan {
        name,
        parent,
        vlan_id,
        mac: link
            .vlan_mac_address
            .as_deref()
            .or(link.ethernet_mac_address.as_deref())
            .map(str::to_ascii_lowercase),
        mtu: link.mtu,
    })
}

fn plan_static(net: &Network, ifname: &str, out: &mut Plan) -> Result<(), PlanError> {
    let what = format!("network {}", net_name(net));
    let raw = net.ip_address.as_deref().unwrap_or_default();
    let (addr_text, inline_prefix) = match raw.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (raw, None),
    };
    let address: IpAddr = addr_text
        .parse()
        .map_err(|_| invalid(&what, "ip_address", raw))?;
    let want_v6 = net.kind == "ipv6";
    if address.is_ipv6() != want_v6 {
        return Err(invalid(&what, "ip_address", raw));
    }
    let prefix = match (inline_prefix, &net.netmask) {
        (Some(p), _) => prefix_of(&Value::String(p.to_owned()), address),
        (None, Some(mask)) => prefix_of(mask, address),
        (None, None) => None,
    }
    .ok_or_else(|| invalid(&what, "netmask", &format!("{:?}", net.netmask)))?;
    out.addresses.push(AddrStep {
        link: ifname.to_owned(),
        address,
        prefix,
    });
    for route in &net.routes {
        let destination: IpAddr = route
            .network
            .parse()
            .map_err(|_| invalid(&what, "route network", &route.network))?;
        let prefix = match &route.netmask {
            Some(mask) => prefix_of(mask, destination)
                .ok_or_else(|| invalid(&what, "route netmask", &mask.to_string()))?,
            None if destination.is_unspecified() => 0,
            None => host_prefix(destination),
        };
        let gateway = route
            .gateway
            .as_deref()
            .filter(|g| !g.is_empty())
            .map(|g| {
                g.parse::<IpAddr>()
                    .ok()
                    .filter(|g| g.is_ipv6() == destination.is_ipv6())
                    .ok_or_else(|| invalid(&what, "route gateway", g))
            })
            .transpose()?;
        if destination.is_ipv6() != want_v6 {
            return Err(invalid(&what, "route network", &route.network));
        }
        out.routes.push(RouteStep {
            link: ifname.to_owned(),
            destination,
            prefix,
            gateway,
        });
    }
    for svc in &net.services {
        add_dns(svc, &what, &mut out.dns)?;
    }
    Ok(())
}

fn add_dns(
    svc: &super::model::Service,
    what: &str,
    dns: &mut Vec<IpAddr>,
) -> Result<(), PlanError> {
    if svc.kind != "dns" {
        return Ok(());
    }
    let raw = svc.address.as_deref().unwrap_or_default();
    let addr: IpAddr = raw.parse().map_err(|_| invalid(what, "dns address", raw))?;
    if !dns.contains(&addr) {
        dns.push(addr);
    }
    Ok(())
}

fn invalid(what: &str, field: &'static str, value: &str) -> PlanError {
    let what = if what.starts_with("network ") || what == "services" {
        what.to_owned()
    } else {
        format!("link {what}")
    };
    PlanError::Invalid {
        what,
        field,
        value: value.to_owned(),
    }
}

/// A JSON number or a string holding one.
fn number(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn host_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv6() {
        128
    } else {
        32
    }
}

/// A prefix length from a number, a string of one, or a netmask of `addr`'s family
/// (its bits must be contiguous).
fn prefix_of(mask: &Value, addr: IpAddr) -> Option<u8> {
    if let Some(n) = number(mask) {
        return u8::try_from(n).ok().filter(|n| *n <= host_prefix(addr));
    }
    let text = mask.as_str()?;
    let bits: u128 = match (text.parse::<IpAddr>().ok()?, addr) {
        (IpAddr::V4(m), IpAddr::V4(_)) => u128::from(u32::from(m)) << 96,
        (IpAddr::V6(m), IpAddr::V6(_)) => u128::from(m),
        _ => return None,
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0)
        .then(|| u8::try_from(ones).expect("at most 128"))
        .filter(|n| *n <= host_prefix(addr))
}

/// Whether `name` can be an interface name as given.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC: &str = include_str!("../../tests/fixtures/network_data/static.json");
    const BOND_VLAN: &str = include_str!("../../tests/fixtures/network_data/bond_vlan.json");

    fn ifaces(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, m)| ((*n).to_owned(), (*m).to_owned()))
            .collect()
    }

    fn ipa(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn plan_text(text: &str, list: &[(&str, &str)]) -> Result<Plan, PlanError> {
        plan(&NetworkData::parse(text).unwrap(), &ifaces(list))
    }

    #[test]
    fn static_addresses_routes_dns() {
        let p = plan_text(
            STATIC,
            &[("lo", "00:00:00:00:00:00"), ("ens3", "52:54:00:12:34:56")],
        )
        .unwrap();
        assert_eq!(
            p.links,
            vec![LinkStep::Phy {
                name: "ens3".into(),
                mac: "52:54:00:12:34:56".into(),
                mtu: Some(1500),
                master: None
            }]
        );
        assert_eq!(
            p.addresses,
            vec![
                AddrStep {
                    link: "ens3".into(),
                    address: ipa("10.0.2.15"),
                    prefix: 24
                },
                AddrStep {
                    link: "ens3".into(),
                    address: ipa("fd00:1::15"),
                    prefix: 64
                },
            ]
        );
        assert_eq!(
            p.routes,
            vec![
                RouteStep {
                    link: "ens3".into(),
                    destination: ipa("0.0.0.0"),
                    prefix: 0,
                    gateway: Some(ipa("10.0.2.2"))
                },
                RouteStep {
                    link: "ens3".into(),
                    destination: ipa("192.168.50.0"),
                    prefix: 23,
                    gateway: Some(ipa("10.0.2.1"))
                },
                RouteStep {
                    link: "ens3".into(),
                    destination: ipa("::"),
                    prefix: 0,
                    gateway: Some(ipa("fd00:1::1"))
                },
            ]
        );
        // Per-network first, then global, without the repeat; ntp is not DNS.
        assert_eq!(p.dns, vec![ipa("10.0.2.3"), ipa("2001:4860:4860::8888")]);
        // The absent NIC, its network and the DHCP network are reported, not configured.
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("52:54:00:99:99:99"));
        assert!(p.skipped[1].starts_with("network other"));
        assert!(p.skipped[2].contains("ipv4_dhcp") && p.skipped[2].contains("no DHCP"));
    }

    #[test]
    fn bond_and_vlan() {
        let p = plan_text(
            BOND_VLAN,
            &[("eth1", "52:54:00:aa:00:02"), ("eth0", "52:54:00:aa:00:01")],
        )
        .unwrap();
        let phy = |n: &str, m: &str| LinkStep::Phy {
            name: n.into(),
            mac: m.into(),
            mtu: None,
            master: Some("bond0".into()),
        };
        assert_eq!(
            p.links,
            vec![
                phy("eth0", "52:54:00:aa:00:01"),
                phy("eth1", "52:54:00:aa:00:02"),
                LinkStep::Bond {
                    name: "bond0".into(),
                    mode: "active-backup".into(),
                    miimon: Some(100),
                    xmit_hash_policy: Some("layer3+4".into()),
                    mac: Some("52:54:00:aa:00:01".into()),
                    mtu: Some(9000),
                    members: vec!["eth0".into(), "eth1".into()],
                },
                LinkStep::Vlan {
                    name: "bond0.101".into(),
                    parent: "bond0".into(),
                    vlan_id: 101,
                    mac: Some("52:54:00:aa:00:01".into()),
                    mtu: None,
                },
            ]
        );
        assert_eq!(
            p.addresses,
            vec![
                AddrStep {
                    link: "bond0".into(),
                    address: ipa("192.0.2.10"),
                    prefix: 24
                },
                AddrStep {
                    link: "bond0.101".into(),
                    address: ipa("198.51.100.7"),
                    prefix: 25
                },
                AddrStep {
                    link: "bond0.101".into(),
                    address: ipa("2001:db8:101::7"),
                    prefix: 64
                },
            ]
        );
        assert_eq!(
            p.routes,
            vec![
                RouteStep {
                    link: "bond0.101".into(),
                    destination: ipa("0.0.0.0"),
                    prefix: 0,
                    gateway: Some(ipa("198.51.100.1"))
                },
                RouteStep {
                    link: "bond0.101".into(),
                    destination: ipa("2001:db8:200::"),
                    prefix: 48,
                    gateway: Some(ipa("2001:db8:101::1"))
                },
            ]
        );
        assert_eq!(p.dns, vec![ipa("198.51.100.53")]);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    }

    #[test]
    fn bond_named_apart_from_a_taken_name_and_vlan_before_bond_in_file() {
        let text = r#"{"links":[
            {"id":"v","type":"vlan","vlan_link":"eth0","vlan_id":"7"},
            {"id":"eth0","type":"bond","bond_links":["a"]},
            {"id":"a","type":"phy","ethernet_mac_address":"02:00:00:00:00:01"}],
            "networks":[]}"#;
        let p = plan_text(text, &[("eth0", "02:00:00:00:00:01")]).unwrap();
        let names: Vec<&str> = p.links.iter().map(LinkStep::name).collect();
        assert_eq!(names, ["eth0", "bond0", "bond0.7"]);
        assert!(matches!(&p.links[1], LinkStep::Bond { mode, .. } if mode == "balance-rr"));
    }

    #[test]
    fn a_vlan_on_an_absent_nic_is_skipped() {
        let text = r#"{"links":[
            {"id":"a","type":"phy","ethernet_mac_address":"02:00:00:00:00:01"},
            {"id":"b","type":"phy","ethernet_mac_address":"02:00:00:00:00:02"},
            {"id":"v","type":"vlan","vlan_link":"b","vlan_id":5}],
            "networks":[{"id":"n","type":"ipv4","link":"v","ip_address":"10.1.1.1","netmask":"255.0.0.0"}]}"#;
        let p = plan_text(text, &[("eth0", "02:00:00:00:00:01")]).unwrap();
        assert_eq!(p.links.len(), 1);
        assert!(p.addresses.is_empty());
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
    }

    #[test]
    fn bad_inputs_are_named() {
        let one = &[("eth0", "02:00:00:00:00:01")];
        let phy = r#"{"id":"a","type":"phy","ethernet_mac_address":"02:00:00:00:00:01"}"#;
        let net = |n: &str| format!(r#"{{"links":[{phy}],"networks":[{n}]}}"#);
        let cases: Vec<(String, &str)> = vec![
            (
                net(r#"{"type":"ipv4","link":"zz","ip_address":"10.0.0.1","netmask":"8"}"#),
                "undefined link \"zz\"",
            ),
            (
                net(r#"{"type":"ipv4","link":"a","ip_address":"10.0.0.300","netmask":"8"}"#),
                "ip_address",
            ),
            (
                net(
                    r#"{"type":"ipv4","link":"a","ip_address":"10.0.0.1","netmask":"255.0.255.0"}"#,
                ),
                "netmask",
            ),
            (
                net(r#"{"type":"ipv4","link":"a","ip_address":"10.0.0.1"}"#),
                "netmask",
            ),
            (
                net(r#"{"type":"ipv4","link":"a","ip_address":"10.0.0.1","netmask":"33"}"#),
                "netmask",
            ),
            (
                net(r#"{"type":"ipv6","link":"a","ip_address":"10.0.0.1","netmask":"8"}"#),
                "ip_address",
            ),
            (
                net(
                    r#"{"type":"ipv4","link":"a","ip_address":"10.0.0.1","netmask":8,"routes":[{"network":"0.0.0.0","gateway":"fe80::1"}]}"#,
                ),
                "route gateway",
            ),
            (format!(r#"{{"links":[{phy},{phy}]}}"#), "defined twice"),
            (
                format!(
                    r#"{{"links":[{phy},{{"id":"b","type":"bond","bond_links":["a"],"bond_mode":"fastest"}}]}}"#
                ),
                "bond_mode",
            ),
            (
                format!(
                    r#"{{"links":[{phy},{{"id":"v","type":"vlan","vlan_link":"a","vlan_id":4095}}]}}"#
                ),
                "vlan_id",
            ),
            (
                format!(
                    r#"{{"links":[{phy},{{"id":"v","type":"vlan","vlan_link":"w","vlan_id":5}},{{"id":"w","type":"vlan","vlan_link":"v","vlan_id":6}}]}}"#
                ),
                "circle",
            ),
            (
                format!(
                    r#"{{"links":[{phy},{{"id":"b","type":"bond","bond_links":["a"]}},{{"id":"c","type":"bond","bond_links":["a"]}}]}}"#
                ),
                "already in",
            ),
            (
                r#"{"links":[{"id":"x","type":"phy","ethernet_mac_address":"02:00:00:00:00:09"}]}"#
                    .to_owned(),
                "no link",
            ),
            (
                format!(r#"{{"links":[{phy}],"services":[{{"type":"dns","address":"ns1"}}]}}"#),
                "dns address",
            ),
        ];
        for (text, want) in cases {
            let err = plan_text(&text, one).unwrap_err().to_string();
            assert!(err.contains(want), "{text}\n=> {err}\n(wanted {want:?})");
        }
    }

    #[test]
    fn interfaces_read_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        for (n, m) in [
            ("eth0", "52:54:00:AB:CD:EF\n"),
            ("lo", "00:00:00:00:00:00\n"),
        ] {
            let d = dir.path().join("sys/class/net").join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), m).unwrap();
        }
        assert_eq!(
            read_interfaces(dir.path()),
            ifaces(&[("eth0", "52:54:00:ab:cd:ef"), ("lo", "00:00:00:00:00:00")])
        );
    }
}
