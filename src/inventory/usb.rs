//! Collector `usb-devices`: the USB devices under `sys/bus/usb/devices`, in the shape of
//! IPA's `get_usb_devices` (`{"product", "vendor", "handle"}`, strings, `""` when unknown).
//!
//! IPA takes these from lshw, whose `handle` for a USB device is `USB:<bus>:<device>`
//! and whose vendor and product are the device's descriptor strings. Hubs (root hubs
//! `usbN` and class 09 devices, which lshw files as buses) and interface entries
//! (`1-1:1.0`) are not devices and are left out.

use std::path::Path;

use serde::Serialize;

use super::read::{list_dir, read_opt, under};
use super::InventoryError;

/// USB device class of hubs.
const CLASS_HUB: &str = "09";

/// One USB device, as IPA reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbDevice {
    /// Product string (`product`), `""` when the device has none.
    pub product: String,
    /// Manufacturer string (`manufacturer`), `""` when the device has none.
    pub vendor: String,
    /// `USB:<busnum>:<devnum>`.
    pub handle: String,
}

/// Lists the USB devices under `root`; no USB bus at all gives an empty list.
pub fn read_usb_devices(root: &Path) -> Result<Vec<UsbDevice>, InventoryError> {
    let dir = under(root, "sys/bus/usb/devices");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in list_dir(&dir)? {
        if name.starts_with("usb") || name.contains(':') {
            continue;
        }
        let dev = dir.join(&name);
        if read_opt(&dev.join("bDeviceClass")).as_deref() == Some(CLASS_HUB) {
            continue;
        }
        let (Some(bus), Some(devnum)) =
            (read_opt(&dev.join("busnum")), read_opt(&dev.join("devnum")))
        else {
            tracing::warn!(device = %name, "USB device without bus or device number; skipped");
            continue;
        };
        out.push(UsbDevice {
            product: read_opt(&dev.join("product")).unwrap_or_default(),
            vendor: read_opt(&dev.join("manufacturer")).unwrap_or_default(),
            handle: format!("USB:{bus}:{devnum}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(root: &Path, name: &str, attrs: &[(&str, &str)]) {
        let d = root.join("sys/bus/usb/devices").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in attrs {
            std::fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
    }

    #[test]
    fn devices_without_hubs_and_interfaces() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert!(read_usb_devices(r).unwrap().is_empty());
        dev(
            r,
            "usb1",
            &[("bDeviceClass", "09"), ("busnum", "1"), ("devnum", "1")],
        );
        dev(
            r,
            "1-1",
            &[
                ("bDeviceClass", "00"),
                ("busnum", "1"),
                ("devnum", "2"),
                ("product", "QEMU USB Tablet"),
                ("manufacturer", "QEMU"),
            ],
        );
        dev(r, "1-1:1.0", &[("bInterfaceClass", "03")]);
        dev(
            r,
            "1-2",
            &[("bDeviceClass", "09"), ("busnum", "1"), ("devnum", "3")],
        );
        dev(
            r,
            "1-2.1",
            &[("bDeviceClass", "00"), ("busnum", "1"), ("devnum", "4")],
        );
        let v = serde_json::to_value(read_usb_devices(r).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"product": "QEMU USB Tablet", "vendor": "QEMU", "handle": "USB:1:2"},
                {"product": "", "vendor": "", "handle": "USB:1:4"}
            ])
        );
    }
}
