//! `enable_vlan_interfaces` (`ipa-enable-vlan-interfaces`), as IPA's
//! `bring_up_vlan_interfaces`: each entry is `<interface>.<vlan>` (the interface by name
//! or MAC address), or an interface name, or `all`; the last two take the VLAN ids from
//! the LLDP data of the interface(s) (802.1 "VLAN Name" TLVs) and so need
//! `ipa-collect-lldp`. The interfaces are created over netlink (`sys::vlan`) and set up;
//! the inventory then lists them by their `<name>.<vlan>` names.

use ira_hw::NetworkInterface;

/// LLDP organisationally specific TLV.
const TLV_ORG_SPECIFIC: u8 = 127;
/// 802.1 OUI followed by subtype 3 (VLAN Name), as hex.
const DOT1_VLAN_NAME: &str = "0080c203";

/// What to create: (parent interface name, VLAN id).
pub fn plan(
    entries: &[String],
    interfaces: &[NetworkInterface],
    collect_lldp: bool,
) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if let Some((iface, vlan)) = entry.split_once('.') {
            let found = interfaces
                .iter()
                .find(|i| i.name == iface || i.mac_address.eq_ignore_ascii_case(iface));
            match (found, vlan.parse::<u16>()) {
                (Some(i), Ok(id)) => out.push((i.name.clone(), id)),
                (None, _) => {
                    tracing::warn!(interface = iface, "provided VLAN interface does not exist")
                }
                (_, Err(_)) => tracing::warn!(entry, "VLAN id is not a number"),
            }
        } else if collect_lldp {
            let chosen: Vec<&NetworkInterface> = if entry == "all" {
                interfaces.iter().collect()
            } else {
                let named: Vec<_> = interfaces.iter().filter(|i| i.name == entry).collect();
                if named.is_empty() {
                    tracing::warn!(interface = entry, "provided interface name was not found");
                }
                named
            };
            for i in chosen {
                for id in lldp_vlans(i) {
                    out.push((i.name.clone(), id));
                }
            }
        } else {
            tracing::warn!(
                entry,
                "VLAN interfaces from LLDP need ipa-collect-lldp; give <interface>.<vlan> instead"
            );
        }
    }
    out.dedup();
    out
}

/// VLAN ids announced on `iface` by 802.1 VLAN Name TLVs.
fn lldp_vlans(iface: &NetworkInterface) -> Vec<u16> {
    let Some(tlvs) = &iface.lldp else {
        tracing::debug!(interface = %iface.name, "no LLDP data for VLANs");
        return Vec::new();
    };
    tlvs.iter()
        .filter(|(kind, value)| {
            *kind == TLV_ORG_SPECIFIC && value.to_ascii_lowercase().starts_with(DOT1_VLAN_NAME)
        })
        .filter_map(|(_, value)| {
            value
                .get(8..12)
                .and_then(|h| u16::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Creates and sets up the planned VLAN interfaces; returns the names brought up.
/// Failures are warnings, as in IPA.
pub fn bring_up(plan: &[(String, u16)], interfaces: &[NetworkInterface]) -> Vec<String> {
    let mut up = Vec::new();
    for (parent, id) in plan {
        let name = format!("{parent}.{id}");
        if interfaces.iter().any(|i| i.name == name) {
            tracing::info!(interface = %name, "VLAN interface has already been added");
            continue;
        }
        match crate::sys::vlan::add_vlan(parent, *id, &name) {
            Ok(()) => {
                tracing::info!(interface = %name, "VLAN interface added");
                up.push(name);
            }
            Err(e) => tracing::warn!(interface = %name, error = %e, "adding VLAN interface failed"),
        }
    }
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, lldp: Option<Vec<(u8, &str)>>) -> NetworkInterface {
        let mut v: NetworkInterface = serde_json::from_value(serde_json::json!({
            "name": name, "mac_address": mac, "ipv4_address": null, "ipv6_address": null,
            "has_carrier": true, "lldp": null, "vendor": null, "product": null,
            "client_id": null, "biosdevname": null, "speed_mbps": null,
            "pci_address": null, "driver": null}))
        .unwrap();
        v.lldp = lldp.map(|t| t.into_iter().map(|(k, s)| (k, s.to_owned())).collect());
        v
    }

    #[test]
    fn entries_by_name_mac_and_lldp() {
        let nics = vec![
            nic(
                "eth0",
                "52:54:00:00:00:01",
                Some(vec![
                    (1, "04525400000001"),
                    (127, "0080c203006407766c616e313030"),
                    (127, "0080c20300c8"),
                    (127, "00120f0405dc"),
                ]),
            ),
            nic("eth1", "52:54:00:00:00:02", None),
        ];
        let e = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            plan(
                &e(&["eth1.10", "52:54:00:00:00:01.20", "eth9.5", "eth1.x"]),
                &nics,
                false
            ),
            [("eth1".to_owned(), 10), ("eth0".to_owned(), 20)]
        );
        assert_eq!(plan(&e(&["all"]), &nics, false), []);
        assert_eq!(
            plan(&e(&["all"]), &nics, true),
            [("eth0".to_owned(), 100), ("eth0".to_owned(), 200)]
        );
        assert_eq!(plan(&e(&["eth1", "eth7"]), &nics, true), []);
    }
}
