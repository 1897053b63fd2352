//! BMC keys (spec 1.6): `bmc_address`, `bmc_v6address`, `bmc_mac`.
//!
//! IPA asks `ipmitool lan print` when an IPMI character device exists. We never run
//! ipmitool; the native replacement (IPMI `Get LAN Configuration Parameters` over
//! `/dev/ipmi0` ioctls) is not implemented yet, so every key reports "unknown": null,
//! null and absent, which is also what IPA reports on a machine without a BMC. When a
//! device is present this is logged, so the gap is visible on real servers.

use std::path::{Path, PathBuf};

use super::read::{list_dir_opt, under};

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

/// Detects the BMC under `root`; `skip` is the conductor's `agent_skip_bmc_detect`.
pub fn read_bmc(root: &Path, skip: bool) -> BmcInfo {
    if skip {
        return BmcInfo::default();
    }
    if let Some(dev) = ipmi_device(root) {
        tracing::debug!(device = %dev.display(), "IPMI device present; IPMI LAN query not implemented, BMC addresses reported as null");
    }
    BmcInfo::default()
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
