//! BMC keys (spec 1.6): `bmc_address`, `bmc_v6address`, `bmc_mac`.
//!
//! IPA runs `ipmitool lan print <ch>` and `ipmitool lan6 print <ch>` for channels 1..11.
//! We send the same IPMI commands ourselves through the kernel's OpenIPMI device
//! (`sys::ipmi`): Get Channel Info finds the 802.3 LAN channels, then Get LAN
//! Configuration Parameters reads each one's IPv4 address (3), its source (4), its MAC
//! (5) and the IPv6 parameters (0x33 enables, 0x37 status, 0x38 static and 0x3b dynamic
//! addresses). The answers are turned into IPA's values by the pure [`summarize`].
//! No device, a device that cannot be opened, or a BMC that errs or does not answer
//! within [`BMC_DEADLINE`] gives null, null and absent, as IPA reports when ipmitool
//! fails.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys::ipmi::{IpmiDevice, IpmiError, IpmiTransport};

use super::read::{list_dir_opt, under};

/// The whole BMC query ends by then, whatever the BMC does.
pub const BMC_DEADLINE: Duration = Duration::from_secs(15);
/// One request waits at most this long (the kernel retries the interface meanwhile).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const NETFN_APP: u8 = 0x06;
const CMD_GET_CHANNEL_INFO: u8 = 0x42;
const NETFN_TRANSPORT: u8 = 0x0c;
const CMD_GET_LAN_CONFIG: u8 = 0x02;
/// Channel medium type 802.3 LAN (IPMI 2.0 table 6-3), as ipmitool's `is_lan_channel`.
const MEDIUM_802_3_LAN: u8 = 0x04;
const PARAM_IP_ADDRESS: u8 = 3;
const PARAM_IP_SOURCE: u8 = 4;
const PARAM_MAC: u8 = 5;
const PARAM_IPV6_ENABLES: u8 = 0x33;
const PARAM_IPV6_STATUS: u8 = 0x37;
const PARAM_IPV6_STATIC: u8 = 0x38;
const PARAM_IPV6_DYNAMIC: u8 = 0x3b;
/// Address sets read per kind; the status parameter may claim up to 255.
const MAX_IPV6_SETS: u8 = 16;
/// IPv6 address status "active" (IPMI 2.0 table 23-4, parameter 56).
const IPV6_ACTIVE: u8 = 0;

/// What the inventory reports about the BMC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BmcInfo {
    /// IPv4 address (`bmc_address`).
    pub address: Option<String>,
    /// IPv6 address (`bmc_v6address`).
    pub v6address: Option<String>,
    /// MAC address (`bmc_mac`, absent when `None`).
    pub mac: Option<String>,
}

/// One IPv6 address set of a LAN channel (parameter 0x38 or 0x3b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Entry {
    /// Source/type byte: bit 7 enabled (static), bits 3..0 source (1 SLAAC, 2 DHCPv6).
    pub source: u8,
    /// The address.
    pub address: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Address status (0 active).
    pub status: u8,
}

/// What a LAN channel says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanChannel {
    /// Channel number (1..11).
    pub channel: u8,
    /// Parameter 3.
    pub ipv4: Option<Ipv4Addr>,
    /// Parameter 4 (1 static, 2 DHCP).
    pub ip_source: Option<u8>,
    /// Parameter 5.
    pub mac: Option<[u8; 6]>,
    /// Parameter 0x33: 0 IPv4 only, 1 IPv6 only, 2 both; `None` without IPv6 support.
    pub ipv6_enables: Option<u8>,
    /// Parameter 0x38 sets.
    pub ipv6_static: Vec<Ipv6Entry>,
    /// Parameter 0x3b sets.
    pub ipv6_dynamic: Vec<Ipv6Entry>,
}

/// Detects the BMC under `root`; `skip` is the conductor's `agent_skip_bmc_detect`.
pub fn read_bmc(root: &Path, skip: bool) -> BmcInfo {
    if skip {
        return BmcInfo::default();
    }
    let Some(path) = ipmi_device(root) else {
        return BmcInfo::default();
    };
    let mut dev = match IpmiDevice::open(&path) {
        Ok(dev) => dev,
        Err(err) => {
            tracing::warn!(error = %err, "cannot get BMC addresses");
            return BmcInfo::default();
        }
    };
    let start = Instant::now();
    let info = query_bmc(&mut dev, start + BMC_DEADLINE);
    tracing::info!(
        device = %path.display(),
        address = ?info.address,
        v6address = ?info.v6address,
        mac = ?info.mac,
        elapsed_ms = start.elapsed().as_millis(),
        "BMC addresses read over IPMI"
    );
    info
}

/// Queries the LAN channels on `dev` until `deadline` and reports IPA's values.
pub fn query_bmc(dev: &mut dyn IpmiTransport, deadline: Instant) -> BmcInfo {
    match lan_channels(dev, deadline) {
        Ok(channels) => summarize(&channels),
        Err(err) => {
            // IPA: a failing ipmitool is "normal in a virtual environment": null, no error.
            tracing::warn!(error = %err, "cannot get BMC addresses");
            BmcInfo::default()
        }
    }
}

/// Every LAN channel among 1..11 with its parameters; an error when the BMC fails or
/// the deadline passes.
pub fn lan_channels(
    dev: &mut dyn IpmiTransport,
    deadline: Instant,
) -> Result<Vec<LanChannel>, IpmiError> {
    let mut ask = Asker { dev, deadline };
    let mut out = Vec::new();
    // IPA: of channels 0-15 only 1-11 can be assigned to a medium and used.
    for channel in 1..=11u8 {
        let Some(info) = ask.call(NETFN_APP, CMD_GET_CHANNEL_INFO, &[channel])? else {
            continue;
        };
        if info.get(1).map(|m| m & 0x7f) != Some(MEDIUM_802_3_LAN) {
            continue;
        }
        let mut lan = LanChannel {
            channel,
            ..LanChannel::default()
        };
        lan.ipv4 = ask
            .lan_param(channel, PARAM_IP_ADDRESS, 0)?
            .and_then(|d| <[u8; 4]>::try_from(d.get(..4)?).ok())
            .map(Ipv4Addr::from);
        lan.ip_source = ask
            .lan_param(channel, PARAM_IP_SOURCE, 0)?
            .and_then(|d| d.first().map(|s| s & 0x0f));
        lan.mac = ask
            .lan_param(channel, PARAM_MAC, 0)?
            .and_then(|d| <[u8; 6]>::try_from(d.get(..6)?).ok());
        lan.ipv6_enables = ask
            .lan_param(channel, PARAM_IPV6_ENABLES, 0)?
            .and_then(|d| d.first().copied());
        if lan.ipv6_enables.is_some() {
            let counts = ask.lan_param(channel, PARAM_IPV6_STATUS, 0)?;
            let static_max = counts.as_ref().and_then(|c| c.first().copied());
            let dynamic_max = counts.as_ref().and_then(|c| c.get(1).copied());
            for set in 0..static_max.unwrap_or(0).min(MAX_IPV6_SETS) {
                if let Some(e) = ask.lan_param(channel, PARAM_IPV6_STATIC, set)? {
                    lan.ipv6_static.extend(parse_ipv6_entry(&e));
                }
            }
            for set in 0..dynamic_max.unwrap_or(0).min(MAX_IPV6_SETS) {
                if let Some(e) = ask.lan_param(channel, PARAM_IPV6_DYNAMIC, set)? {
                    lan.ipv6_dynamic.extend(parse_ipv6_entry(&e));
                }
            }
        }
        tracing::debug!(?lan, "IPMI LAN channel");
        out.push(lan);
    }
    Ok(out)
}

/// Parameter 0x38/0x3b data: set selector, source/type, 16 address bytes, prefix, status.
pub fn parse_ipv6_entry(data: &[u8]) -> Option<Ipv6Entry> {
    let address: [u8; 16] = data.get(2..18)?.try_into().ok()?;
    Some(Ipv6Entry {
        source: *data.get(1)?,
        address: Ipv6Addr::from(address),
        prefix: *data.get(18)?,
        status: *data.get(19)?,
    })
}

/// IPA's three values from the channels a BMC reported (all of them answered).
pub fn summarize(channels: &[LanChannel]) -> BmcInfo {
    // IPA get_bmc_address: the first address other than 0.0.0.0, else "0.0.0.0".
    let address = channels
        .iter()
        .filter_map(|c| c.ipv4)
        .find(|ip| !ip.is_unspecified())
        .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
    // IPA get_bmc_v6address: channels whose enables say ipv6 or both; a dynamic
    // (SLAAC/DHCPv6) active address first, else an enabled active static one; "::/0".
    let v6address = channels
        .iter()
        .filter(|c| matches!(c.ipv6_enables, Some(1 | 2)))
        .find_map(|c| {
            let usable = |e: &&Ipv6Entry| e.status == IPV6_ACTIVE && !e.address.is_unspecified();
            c.ipv6_dynamic
                .iter()
                .filter(|e| matches!(e.source & 0x0f, 1 | 2))
                .find(usable)
                .or_else(|| {
                    c.ipv6_static
                        .iter()
                        .filter(|e| e.source & 0x80 != 0)
                        .find(usable)
                })
                .map(|e| e.address.to_string())
        })
        .unwrap_or_else(|| "::/0".to_owned());
    // IPA get_bmc_mac: the MAC of the first channel with an IPv4 address, or failing
    // that any IPv6 address that is neither "::..." nor link-local; never all zero.
    let mac = channels
        .iter()
        .filter(|c| {
            c.ipv4.is_some_and(|ip| !ip.is_unspecified())
                || c.ipv6_static.iter().chain(&c.ipv6_dynamic).any(|e| {
                    let text = e.address.to_string();
                    !text.starts_with("::") && !text.starts_with("fe80")
                })
        })
        .find_map(|c| c.mac.filter(|m| m.iter().any(|b| *b != 0)))
        .map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        });
    BmcInfo {
        address: Some(address),
        v6address: Some(v6address),
        mac,
    }
}

/// Sends requests while the overall deadline allows.
struct Asker<'a> {
    dev: &'a mut dyn IpmiTransport,
    deadline: Instant,
}

impl Asker<'_> {
    /// The response data, `None` when the BMC answered with a non-zero completion code
    /// (invalid channel, parameter not supported).
    fn call(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Option<Vec<u8>>, IpmiError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IpmiError::Timeout {
                netfn,
                cmd,
                waited: Duration::ZERO,
            });
        }
        let resp = self
            .dev
            .request(netfn, cmd, data, left.min(REQUEST_TIMEOUT))?;
        if resp.completion != 0 {
            tracing::debug!(
                netfn,
                cmd,
                ?data,
                completion = resp.completion,
                "IPMI error completion"
            );
            return Ok(None);
        }
        Ok(Some(resp.data))
    }

    /// A LAN configuration parameter's data (after the revision byte).
    fn lan_param(&mut self, channel: u8, param: u8, set: u8) -> Result<Option<Vec<u8>>, IpmiError> {
        let data = self.call(
            NETFN_TRANSPORT,
            CMD_GET_LAN_CONFIG,
            &[channel, param, set, 0],
        )?;
        Ok(data.and_then(|d| d.get(1..).map(<[u8]>::to_vec)))
    }
}

/// The first IPMI character device: `dev/ipmi<N>`, `dev/ipmi/<N>` or `dev/ipmidev/<N>`.
pub fn ipmi_device(root: &Path) -> Option<PathBuf> {
    let dev = under(root, "dev");
    let flat = list_dir_opt(&dev).into_iter().find(|n| {
        n.strip_prefix("ipmi")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit()))
    });
    if let Some(name) = flat {
        return Some(dev.join(name));
    }
    ["ipmi", "ipmidev"].iter().find_map(|sub| {
        let dir = dev.join(sub);
        list_dir_opt(&dir).into_iter().next().map(|n| dir.join(n))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sys::ipmi::IpmiResponse;

    /// Answers from a table keyed by (netfn, cmd, request bytes); anything else gets
    /// completion code 0xc1 (invalid command). `hang` makes one request time out.
    #[derive(Default)]
    struct FakeBmc {
        answers: HashMap<(u8, u8, Vec<u8>), Vec<u8>>,
        hang: Option<(u8, u8, Vec<u8>)>,
        asked: Vec<(u8, u8, Vec<u8>)>,
    }

    impl FakeBmc {
        fn lan_channel(&mut self, ch: u8) {
            self.answers.insert(
                (NETFN_APP, CMD_GET_CHANNEL_INFO, vec![ch]),
                vec![0, ch, MEDIUM_802_3_LAN, 0x01, 0x80, 0xf2, 0x1b, 0, 0, 0],
            );
        }
        fn param(&mut self, ch: u8, param: u8, set: u8, data: &[u8]) {
            let mut resp = vec![0, 0x11];
            resp.extend_from_slice(data);
            self.answers.insert(
                (NETFN_TRANSPORT, CMD_GET_LAN_CONFIG, vec![ch, param, set, 0]),
                resp,
            );
        }
    }

    impl IpmiTransport for FakeBmc {
        fn request(
            &mut self,
            netfn: u8,
            cmd: u8,
            data: &[u8],
            timeout: Duration,
        ) -> Result<IpmiResponse, IpmiError> {
            let key = (netfn, cmd, data.to_vec());
            self.asked.push(key.clone());
            if self.hang.as_ref() == Some(&key) {
                return Err(IpmiError::Timeout {
                    netfn,
                    cmd,
                    waited: timeout,
                });
            }
            let bytes = self.answers.get(&key).cloned().unwrap_or(vec![0xc1]);
            Ok(IpmiResponse {
                completion: bytes[0],
                data: bytes[1..].to_vec(),
            })
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    #[test]
    fn ipv4_static_on_channel_1() {
        let mut bmc = FakeBmc::default();
        bmc.lan_channel(1);
        bmc.param(1, PARAM_IP_ADDRESS, 0, &[192, 0, 2, 10]);
        bmc.param(1, PARAM_IP_SOURCE, 0, &[1]);
        bmc.param(1, PARAM_MAC, 0, &MAC);
        let info = query_bmc(&mut bmc, later());
        assert_eq!(info.address.as_deref(), Some("192.0.2.10"));
        assert_eq!(info.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        // No IPv6 parameters: the BMC answered, so IPA's "nothing configured" value.
        assert_eq!(info.v6address.as_deref(), Some("::/0"));
        let channels = lan_channels(&mut bmc, later()).unwrap();
        assert_eq!(channels[0].ip_source, Some(1));
        // All eleven channels were asked for, as ipmitool's loop does.
        let infos = bmc
            .asked
            .iter()
            .filter(|(n, c, _)| (*n, *c) == (NETFN_APP, CMD_GET_CHANNEL_INFO))
            .count();
        assert_eq!(infos, 22);
    }

    #[test]
    fn dhcp_address_on_a_later_channel_skips_unset_ones() {
        let mut bmc = FakeBmc::default();
        // Channel 1 is LAN but unconfigured, channel 2 is not LAN, channel 3 has DHCP.
        bmc.lan_channel(1);
        bmc.param(1, PARAM_IP_ADDRESS, 0, &[0, 0, 0, 0]);
        bmc.param(1, PARAM_MAC, 0, &[0x52, 0x54, 0, 0, 0, 1]);
        bmc.answers.insert(
            (NETFN_APP, CMD_GET_CHANNEL_INFO, vec![2]),
            vec![0, 2, 0x0c, 0x05, 0x80, 0xf2, 0x1b, 0, 0, 0],
        );
        bmc.lan_channel(3);
        bmc.param(3, PARAM_IP_ADDRESS, 0, &[10, 1, 2, 3]);
        bmc.param(3, PARAM_IP_SOURCE, 0, &[2]);
        bmc.param(3, PARAM_MAC, 0, &MAC);
        let channels = lan_channels(&mut bmc, later()).unwrap();
        assert_eq!(
            channels.iter().map(|c| c.channel).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(channels[1].ip_source, Some(2));
        let info = summarize(&channels);
        assert_eq!(info.address.as_deref(), Some("10.1.2.3"));
        // The MAC of the channel that has the address, not of the first channel.
        assert_eq!(info.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    }

    fn v6_entry(set: u8, source: u8, addr: &str, status: u8) -> Vec<u8> {
        let ip: Ipv6Addr = addr.parse().unwrap();
        let mut d = vec![set, source];
        d.extend_from_slice(&ip.octets());
        d.extend_from_slice(&[64, status]);
        d
    }

    #[test]
    fn ipv6_dynamic_before_static_and_mac_from_ipv6_only_channel() {
        let mut bmc = FakeBmc::default();
        bmc.lan_channel(1);
        bmc.param(1, PARAM_IP_ADDRESS, 0, &[0, 0, 0, 0]);
        bmc.param(1, PARAM_MAC, 0, &MAC);
        bmc.param(1, PARAM_IPV6_ENABLES, 0, &[1]);
        bmc.param(1, PARAM_IPV6_STATUS, 0, &[2, 2, 0]);
        bmc.param(
            1,
            PARAM_IPV6_STATIC,
            0,
            &v6_entry(0, 0x80, "2001:db8::5", 0),
        );
        bmc.param(1, PARAM_IPV6_STATIC, 1, &v6_entry(1, 0x00, "::", 1));
        // Dynamic set 0 is link-local from SLAAC but not active; set 1 is DHCPv6 active.
        bmc.param(1, PARAM_IPV6_DYNAMIC, 0, &v6_entry(0, 0x01, "fe80::1", 2));
        bmc.param(
            1,
            PARAM_IPV6_DYNAMIC,
            1,
            &v6_entry(1, 0x02, "2001:db8::99", 0),
        );
        let info = query_bmc(&mut bmc, later());
        assert_eq!(info.address.as_deref(), Some("0.0.0.0"));
        assert_eq!(info.v6address.as_deref(), Some("2001:db8::99"));
        assert_eq!(info.mac.as_deref(), Some("52:54:00:ab:cd:ef"));

        // Without a dynamic address the enabled active static one is reported.
        bmc.param(
            1,
            PARAM_IPV6_DYNAMIC,
            1,
            &v6_entry(1, 0x02, "2001:db8::99", 3),
        );
        let info = query_bmc(&mut bmc, later());
        assert_eq!(info.v6address.as_deref(), Some("2001:db8::5"));

        // IPv4-only addressing: IPv6 addresses are not reported.
        bmc.param(1, PARAM_IPV6_ENABLES, 0, &[0]);
        let info = query_bmc(&mut bmc, later());
        assert_eq!(info.v6address.as_deref(), Some("::/0"));
    }

    #[test]
    fn no_lan_channel_answers_ipa_placeholders_and_no_mac() {
        let mut bmc = FakeBmc::default();
        bmc.answers.insert(
            (NETFN_APP, CMD_GET_CHANNEL_INFO, vec![1]),
            vec![0, 1, 0x0c, 0x05, 0x80, 0xf2, 0x1b, 0, 0, 0],
        );
        let info = query_bmc(&mut bmc, later());
        assert_eq!(
            info,
            BmcInfo {
                address: Some("0.0.0.0".into()),
                v6address: Some("::/0".into()),
                mac: None,
            }
        );
        // Only channel info was asked: no LAN parameter of a non-LAN channel.
        assert!(bmc.asked.iter().all(|(n, _, _)| *n == NETFN_APP));
    }

    #[test]
    fn a_hung_bmc_gives_null_and_stops_asking() {
        let mut bmc = FakeBmc::default();
        bmc.lan_channel(1);
        bmc.param(1, PARAM_IP_ADDRESS, 0, &[192, 0, 2, 10]);
        bmc.hang = Some((
            NETFN_TRANSPORT,
            CMD_GET_LAN_CONFIG,
            vec![1, PARAM_MAC, 0, 0],
        ));
        let info = query_bmc(&mut bmc, later());
        assert_eq!(info, BmcInfo::default());
        assert_eq!(bmc.asked.last().unwrap().2, vec![1, PARAM_MAC, 0, 0]);

        // A deadline already passed sends nothing at all.
        let mut bmc = FakeBmc::default();
        bmc.lan_channel(1);
        assert_eq!(query_bmc(&mut bmc, Instant::now()), BmcInfo::default());
        assert!(bmc.asked.is_empty());
    }

    #[test]
    fn ipv6_entry_needs_twenty_bytes() {
        let d = v6_entry(3, 0x82, "2001:db8::1", 0);
        let e = parse_ipv6_entry(&d).unwrap();
        assert_eq!(e.address, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((e.source, e.prefix, e.status), (0x82, 64, 0));
        assert_eq!(parse_ipv6_entry(&d[..19]), None);
    }

    #[test]
    fn no_device_is_null_without_asking() {
        let dir = std::env::temp_dir().join(format!("ira-bmc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        assert_eq!(read_bmc(&dir, false), BmcInfo::default());
        assert_eq!(ipmi_device(&dir), None);
        std::fs::write(dir.join("dev/ipmi0"), b"").unwrap();
        assert_eq!(ipmi_device(&dir), Some(dir.join("dev/ipmi0")));
        // A plain file is no IPMI device: the request fails and nothing is reported.
        assert_eq!(read_bmc(&dir, false), BmcInfo::default());
        assert_eq!(read_bmc(&dir, true), BmcInfo::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
