//! The parts of OpenStack's `network_data.json` that configure interfaces: `links`,
//! `networks` and `services`. Pure parsing; unknown fields are ignored, as cloud-init and
//! glean ignore them.

use serde::Deserialize;

/// Largest `network_data.json` accepted (Ironic writes a few KiB).
pub const MAX_LEN: usize = 1 << 20;

/// Why a `network_data.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is larger than [`MAX_LEN`].
    #[error("network_data.json is {0} bytes, more than the {MAX_LEN} accepted")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("network_data.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// A whole `network_data.json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct NetworkData {
    /// Layer-2 links: physical NICs, bonds, VLANs.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Layer-3 networks, each on one link.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Global services (DNS servers).
    #[serde(default)]
    pub services: Vec<Service>,
}

/// One entry of `links`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Link {
    /// The link's id, referenced by networks, bonds and VLANs.
    pub id: String,
    /// `phy` (also `ethernet`, `vif`, `tap`, ...), `bond` or `vlan`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// MAC address (of the NIC for a physical link; set on a bond).
    #[serde(default)]
    pub ethernet_mac_address: Option<String>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Bond members (link ids).
    #[serde(default)]
    pub bond_links: Vec<String>,
    /// Bond mode (`802.3ad`, `active-backup`, ...).
    #[serde(default)]
    pub bond_mode: Option<String>,
    /// MII monitoring interval in ms (a number or a string of one).
    #[serde(default)]
    pub bond_miimon: Option<serde_json::Value>,
    /// Bond transmit hash policy (`layer2`, `layer3+4`, ...).
    #[serde(default)]
    pub bond_xmit_hash_policy: Option<String>,
    /// The VLAN's parent link id.
    #[serde(default)]
    pub vlan_link: Option<String>,
    /// The VLAN id (a number or a string of one).
    #[serde(default)]
    pub vlan_id: Option<serde_json::Value>,
    /// MAC address for the VLAN interface.
    #[serde(default)]
    pub vlan_mac_address: Option<String>,
}

/// One entry of `networks`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Network {
    /// The network's id.
    #[serde(default)]
    pub id: Option<String>,
    /// `ipv4`, `ipv6`, `ipv4_dhcp`, `ipv6_dhcp`, `ipv6_slaac`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The link id the network is on.
    pub link: String,
    /// The address, optionally with `/prefix`.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// Dotted (or IPv6) netmask, or a prefix length.
    #[serde(default)]
    pub netmask: Option<serde_json::Value>,
    /// Routes through this network.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Per-network services (DNS servers).
    #[serde(default)]
    pub services: Vec<Service>,
}

/// One route of a network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Route {
    /// Destination network address (`0.0.0.0` / `::` for the default route).
    pub network: String,
    /// Destination netmask or prefix length.
    #[serde(default)]
    pub netmask: Option<serde_json::Value>,
    /// Next hop.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// One service.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Service {
    /// `dns` is the one used.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The server's address.
    #[serde(default)]
    pub address: Option<String>,
}

impl NetworkData {
    /// Parses the text of a `network_data.json`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_LEN {
            return Err(ParseError::TooLarge(text.len()));
        }
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_ignores_unknown_fields() {
        let nd = NetworkData::parse(
            r#"{"links":[{"id":"i0","type":"phy","ethernet_mac_address":"52:54:00:aa:bb:cc",
                "vif_id":"x"}],"networks":[],"extra":1}"#,
        )
        .unwrap();
        assert_eq!(nd.links.len(), 1);
        assert_eq!(nd.links[0].kind, "phy");
        assert!(nd.services.is_empty());
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            NetworkData::parse("{\"links\": 5}"),
            Err(ParseError::Json(_))
        ));
        assert!(NetworkData::parse("not json").is_err());
        let big = " ".repeat(MAX_LEN + 1);
        assert!(matches!(
            NetworkData::parse(&big),
            Err(ParseError::TooLarge(_))
        ));
    }
}
