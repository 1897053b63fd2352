//! Collector `pci-devices`: every function under `sys/bus/pci/devices`, in the shape of
//! IPA's `collect_pci_devices_info` (hex ids without the `0x` prefix, `bus` = the
//! directory name, `numa_node_id` as the raw text of `numa_node`).
//!
//! A device whose `vendor`, `device` or `class` is missing or not `0x...` is skipped
//! with a warning, as in IPA; an unreadable directory is a collector failure.

use std::path::Path;

use serde::Serialize;

use super::read::{list_dir, read_opt, under};
use super::InventoryError;

/// One PCI function, as IPA reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Vendor id, hex digits without `0x` (`"8086"`).
    pub vendor_id: String,
    /// Device id, hex digits without `0x`.
    pub product_id: String,
    /// Class code, hex digits without `0x` (`"020000"`).
    pub class: String,
    /// Revision, hex digits without `0x`; null when the file is absent.
    pub revision: Option<String>,
    /// PCI address (`0000:00:03.0`).
    pub bus: String,
    /// `numa_node` as read (`"-1"` without NUMA); null when absent.
    pub numa_node_id: Option<String>,
}

/// Lists the PCI functions under `root`.
pub fn read_pci_devices(root: &Path) -> Result<Vec<PciDevice>, InventoryError> {
    let dir = under(root, "sys/bus/pci/devices");
    let mut out = Vec::new();
    for name in list_dir(&dir)? {
        let dev = dir.join(&name);
        if !dev.is_dir() {
            continue;
        }
        let hex = |attr: &str| read_opt(&dev.join(attr)).as_deref().and_then(after_x);
        let (Some(vendor_id), Some(product_id), Some(class)) =
            (hex("vendor"), hex("device"), hex("class"))
        else {
            tracing::warn!(device = %name, "PCI device without readable vendor, device or class; skipped");
            continue;
        };
        out.push(PciDevice {
            vendor_id,
            product_id,
            class,
            revision: hex("revision"),
            bus: name,
            numa_node_id: read_opt(&dev.join("numa_node")),
        });
    }
    Ok(out)
}

/// The text after the first `x` (IPA splits `0x8086` on `x`); `None` without one.
fn after_x(text: &str) -> Option<String> {
    text.split('x').nth(1).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(root: &Path, bus: &str, attrs: &[(&str, &str)]) {
        let dir = root.join("sys/bus/pci/devices").join(bus);
        std::fs::create_dir_all(&dir).unwrap();
        for (k, v) in attrs {
            std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
        }
    }

    #[test]
    fn lists_devices_in_ipa_shape_and_skips_broken_ones() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        device(
            r,
            "0000:00:03.0",
            &[
                ("vendor", "0x1af4"),
                ("device", "0x1000"),
                ("class", "0x020000"),
                ("revision", "0x00"),
                ("numa_node", "-1"),
            ],
        );
        device(
            r,
            "0000:00:01.0",
            &[
                ("vendor", "0x8086"),
                ("device", "0x7000"),
                ("class", "0x060100"),
            ],
        );
        device(
            r,
            "0000:00:02.0",
            &[("vendor", "8086"), ("device", "0x1"), ("class", "0x0")],
        );
        let got = read_pci_devices(r).unwrap();
        let v = serde_json::to_value(&got).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"vendor_id": "8086", "product_id": "7000", "class": "060100",
                 "revision": null, "bus": "0000:00:01.0", "numa_node_id": null},
                {"vendor_id": "1af4", "product_id": "1000", "class": "020000",
                 "revision": "00", "bus": "0000:00:03.0", "numa_node_id": "-1"}
            ])
        );
        assert!(read_pci_devices(&r.join("nothing")).is_err());
    }
}
