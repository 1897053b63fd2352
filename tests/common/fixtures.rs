//! Hardware descriptions and digests the tests build their inputs from.

use ira::hw::{BlockDevice, BootInfo, Cpu, Inventory, Memory, SystemVendor};

/// A small x86_64 test machine (2 CPUs, 2 GiB, no NICs or disks) booted in `boot_mode`.
pub fn inventory(hostname: &str, boot_mode: &str) -> Inventory {
    Inventory {
        cpu: Cpu {
            model_name: "Test CPU".into(),
            frequency: "2000.0000".into(),
            count: 2,
            architecture: "x86_64".into(),
            flags: vec!["lm".into()],
            socket_count: 1,
        },
        memory: Memory {
            total: Some(2 << 30),
            physical_mb: Some(2048),
        },
        boot: BootInfo {
            current_boot_mode: boot_mode.into(),
            pxe_interface: None,
        },
        hostname: hostname.into(),
        ..empty_inventory()
    }
}

/// An inventory with every field empty or at its default.
pub fn empty_inventory() -> Inventory {
    Inventory {
        interfaces: Vec::new(),
        cpu: Cpu::default(),
        disks: Vec::new(),
        memory: Memory::default(),
        bmc_address: None,
        bmc_v6address: None,
        system_vendor: SystemVendor::default(),
        boot: BootInfo::default(),
        hostname: String::new(),
        bmc_mac: None,
    }
}

/// A non-rotational disk `name` of `size` bytes with 512-byte sectors and no identifiers.
pub fn block_device(name: &str, size: u64) -> BlockDevice {
    BlockDevice {
        name: name.to_owned(),
        model: None,
        size,
        rotational: false,
        wwn: None,
        serial: None,
        vendor: None,
        wwn_with_extension: None,
        wwn_vendor_extension: None,
        hctl: None,
        by_path: None,
        logical_sectors: 512,
        physical_sectors: 512,
        tran: None,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data` in lower-case hex, computed with ring (independent of the agent's hasher).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}
