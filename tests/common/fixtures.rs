//! Inputs the tests build: hardware descriptions, image bytes, config drives, digests
//! and Ironic client options.

use std::time::Duration;

use ira::ironic::client::ClientOptions;
use ira_hw::{BlockDevice, BootInfo, Cpu, Inventory, Memory, SystemVendor};

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

/// Fills alternate 64 KiB chunks of `buf` with xorshift bytes from `seed`, leaving the
/// others as they are, like a real disk image's mix of data and zero runs.
pub fn pseudo_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for (i, chunk) in buf.chunks_mut(64 << 10).enumerate() {
        if i % 2 == 1 {
            continue;
        }
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x.to_le_bytes()[0];
        }
    }
}

/// An OpenStack config drive ISO (label `config-2`) made by genisoimage, holding
/// `meta_data` and, when given, `user_data`.
pub fn config_drive_iso(meta_data: &[u8], user_data: Option<&[u8]>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let latest = dir.path().join("tree/openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    std::fs::write(latest.join("meta_data.json"), meta_data).unwrap();
    if let Some(user_data) = user_data {
        std::fs::write(latest.join("user_data"), user_data).unwrap();
    }
    let iso = dir.path().join("cd.iso");
    super::cmd::run(
        "genisoimage",
        &[
            "-quiet",
            "-V",
            "config-2",
            "-J",
            "-R",
            "-o",
            iso.to_str().unwrap(),
            dir.path().join("tree").to_str().unwrap(),
        ],
    );
    std::fs::read(iso).unwrap()
}

/// Ironic client options for `urls`: 5 s timeout, TLS 1.2 or later, no CA file.
pub fn client_options(urls: Vec<String>) -> ClientOptions {
    ClientOptions {
        urls,
        request_id: None,
        forced_version: None,
        timeout: Duration::from_secs(5),
        insecure: false,
        cafile: None,
        tls_min_version: "1.2".into(),
        system_roots: false,
    }
}
