//! Inventory types, serialized exactly as IPA's `list_hardware_info` (spec
//! hardware-and-disks.md section 1): same keys, same order, same null patterns.

use serde::{Deserialize, Serialize};

/// The whole hardware inventory, as sent in the inspection callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Network interfaces (physical NICs, bonds, VLANs).
    pub interfaces: Vec<NetworkInterface>,
    /// CPU summary.
    pub cpu: Cpu,
    /// Block devices selected as disks (section 2 of the spec).
    pub disks: Vec<BlockDevice>,
    /// Memory totals.
    pub memory: Memory,
    /// BMC IPv4 address, `"0.0.0.0"` when a BMC has none, null without a BMC.
    pub bmc_address: Option<String>,
    /// BMC IPv6 address, `"::/0"` when a BMC has none, null without a BMC.
    pub bmc_v6address: Option<String>,
    /// SMBIOS system and firmware identity.
    pub system_vendor: SystemVendor,
    /// Boot mode and PXE interface.
    pub boot: BootInfo,
    /// `gethostname()`.
    pub hostname: String,
    /// BMC MAC address; the key is absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_mac: Option<String>,
}

/// One network interface (spec 1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Kernel interface name.
    pub name: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac_address: String,
    /// First IPv4 address, if any.
    pub ipv4_address: Option<String>,
    /// First IPv6 address, if any (link-local ones carry `%<ifname>`).
    pub ipv6_address: Option<String>,
    /// `carrier` == 1.
    pub has_carrier: bool,
    /// Raw LLDP TLVs `[type, hex]`, null unless LLDP collection is on.
    pub lldp: Option<Vec<(u8, String)>>,
    /// PCI vendor id, e.g. `"0x8086"`.
    pub vendor: Option<String>,
    /// PCI device id, e.g. `"0x1563"`.
    pub product: Option<String>,
    /// DHCP client id (InfiniBand only).
    pub client_id: Option<String>,
    /// biosdevname, null when unknown.
    pub biosdevname: Option<String>,
    /// Link speed in Mbit/s.
    pub speed_mbps: Option<u64>,
    /// PCI address such as `0000:18:00.0`.
    pub pci_address: Option<String>,
    /// Kernel driver name.
    pub driver: Option<String>,
}

/// CPU summary (spec 1.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// Model name, `""` when unknown.
    pub model_name: String,
    /// Maximum frequency in MHz as a string with 4 decimals, `""` when unknown.
    pub frequency: String,
    /// Number of logical CPUs.
    pub count: u32,
    /// `uname -m`.
    pub architecture: String,
    /// CPU flags.
    pub flags: Vec<String>,
    /// Number of sockets.
    pub socket_count: u32,
}

/// Memory totals (spec 1.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal` in bytes.
    pub total: Option<u64>,
    /// Installed RAM in MiB.
    pub physical_mb: Option<u64>,
}

/// A disk as the inventory lists it (spec 1.4), with the internal fields IPA keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// `/dev/<kname>`.
    pub name: String,
    /// Model, null when empty.
    pub model: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Spinning disk.
    pub rotational: bool,
    /// World-wide name.
    pub wwn: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// `device/vendor`, stripped.
    pub vendor: Option<String>,
    /// udev `ID_WWN_WITH_EXTENSION`.
    pub wwn_with_extension: Option<String>,
    /// udev `ID_WWN_VENDOR_EXTENSION`.
    pub wwn_vendor_extension: Option<String>,
    /// SCSI host:channel:target:lun.
    pub hctl: Option<String>,
    /// `/dev/disk/by-path/...` link.
    pub by_path: Option<String>,
    /// Logical sector size in bytes.
    pub logical_sectors: u32,
    /// Physical sector size in bytes.
    pub physical_sectors: u32,
    /// Transport (`sata`, `nvme`, `usb`, ...).
    pub tran: Option<String>,
}

/// SMBIOS identity (spec 1.7); every value is `""` when missing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SystemVendor {
    /// Product name, with ` (<SKU>)` appended when the SKU is set.
    pub product_name: String,
    /// System serial number.
    pub serial_number: String,
    /// System manufacturer.
    pub manufacturer: String,
    /// BIOS/firmware identity.
    pub firmware: Firmware,
}

/// Firmware identity (SMBIOS type 0).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Firmware {
    /// BIOS vendor.
    pub vendor: String,
    /// BIOS version.
    pub version: String,
    /// BIOS release date as stored (`MM/DD/YYYY`).
    pub build_date: String,
}

/// Boot information (spec 1.8).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BootInfo {
    /// `"uefi"` or `"bios"`.
    pub current_boot_mode: String,
    /// Raw `BOOTIF` value, null when absent.
    pub pxe_interface: Option<String>,
}
