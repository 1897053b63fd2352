//! Hardware inventory read natively from sysfs, procfs, SMBIOS and the udev database,
//! every reader under a root path.
//!
//! This is IPA's `list_hardware_info` without `lshw`, `lsblk`, `lscpu`, `dmidecode` or
//! `ipmitool`: each part has a module that reads a few files under `opts.root` (`/` in
//! production, a fixture tree in tests) with size-bounded reads (`read`) and turns them
//! into the `ira-hw` types with pure `parse_*` functions. Missing optional files give the
//! null/empty values IPA reports for unknown facts; only the disk probe fails the whole
//! inventory, because a disk list that silently misses devices is worse than none.
//!
//! `allowlist` is the device allow-list: the listing hides what it excludes, and
//! the write door of the block-device layer (above this module) refuses to open it.
//!
//! To add a part: a module with `read_<part>(root, ...)` plus pure parsers and unit
//! tests, called from [`collect_with`], and a fixture case under `tests/fixtures/sysfs/`.

pub mod allowlist;
pub mod bmc;
pub mod boot;
pub mod cpu;
pub mod disks;
pub mod dmi;
pub mod dmidecode;
pub mod lldp;
pub mod memory;
pub mod net;
pub mod numa;
pub mod pci;
pub mod read;
pub mod udev;
pub mod usb;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ira_hw::Inventory;

pub use allowlist::{glob_match, AllowList};
pub use net::{AddrSource, FileAddrs, NicProbe, NoProbe, SystemAddrs, SystemNics};

/// What `collect` needs besides the root path.
#[derive(Debug, Clone, Default)]
pub struct InventoryOptions {
    /// Filesystem root: `/` in production (also when left empty), a fixture tree in tests.
    pub root: PathBuf,
    /// Devices outside it are not listed.
    pub allowlist: AllowList,
    /// Raw `BOOTIF` value for `boot.pxe_interface`.
    pub bootif: Option<String>,
    /// Skip BMC detection (lookup said `agent_skip_bmc_detect`).
    pub skip_bmc_detect: bool,
    /// Listen for LLDP this long on every interface (`ipa-collect-lldp`); `None`: don't.
    pub lldp_timeout: Option<Duration>,
}

/// Errors that stop the inventory from being built.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A file that must be readable was not.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file was larger than its read cap.
    #[error("{path} is larger than {cap} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap in bytes.
        cap: u64,
    },
    /// A file held something that could not be parsed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The interface addresses could not be listed.
    #[error("listing interface addresses: {reason}")]
    Addresses {
        /// The cause.
        reason: String,
    },
}

/// Collects the whole inventory, with IP addresses from `getifaddrs` and the NICs'
/// ethtool facts and LLDP from the kernel.
pub fn collect(opts: &InventoryOptions) -> Result<Inventory, InventoryError> {
    collect_probed(opts, &SystemAddrs, &SystemNics)
}

/// Collects the whole inventory, with IP addresses from `addrs` (a file in fixture tests)
/// and no kernel probe of the NICs.
pub fn collect_with(
    opts: &InventoryOptions,
    addrs: &dyn AddrSource,
) -> Result<Inventory, InventoryError> {
    collect_probed(opts, addrs, &NoProbe)
}

/// Collects the whole inventory from `addrs` and `nics`.
pub fn collect_probed(
    opts: &InventoryOptions,
    addrs: &dyn AddrSource,
    nics: &dyn NicProbe,
) -> Result<Inventory, InventoryError> {
    // `InventoryOptions::default()` has an empty root: that means the real system.
    let root = if opts.root.as_os_str().is_empty() {
        Path::new("/")
    } else {
        opts.root.as_path()
    };
    // Disks first: their probe is the one that may fail the inventory.
    let disks = disks::list_disks(root, &opts.allowlist)?;
    let addresses = addrs.addresses().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "interface addresses unknown");
        Vec::new()
    });
    let interfaces = net::list_interfaces(root, &addresses, nics, opts.lldp_timeout)
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "network interfaces unreadable");
            Vec::new()
        });
    let smbios = dmi::read_smbios_table(root);
    let memory = memory::read_memory(root, smbios.as_ref().and_then(|s| s.memory_bytes));
    let system_vendor = smbios
        .or_else(|| dmi::read_dmi_id(root))
        .map(|s| s.system_vendor())
        .unwrap_or_default();
    let bmc = bmc::read_bmc(root, opts.skip_bmc_detect);
    Ok(Inventory {
        interfaces,
        cpu: cpu::read_cpu(root),
        disks,
        memory,
        bmc_address: bmc.address,
        bmc_v6address: bmc.v6address,
        system_vendor,
        boot: boot::read_boot(root, opts.bootif.as_deref()),
        hostname: boot::read_hostname(root),
        bmc_mac: bmc.mac,
    })
}
