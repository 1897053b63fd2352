//! The optional inspection collectors (spec 4.9): each adds one key to the callback
//! body, in IPA's shape, from readers under the system root.
//!
//! | collector | key | reader |
//! |---|---|---|
//! | `pci-devices` | `pci_devices` | `inventory::pci` |
//! | `numa-topology` | `numa_topology` | `inventory::numa` (absent without NUMA nodes) |
//! | `dmi-decode` | `dmi` | `inventory::dmidecode` over the raw SMBIOS table |
//! | `usb-devices` | `usb_devices` | `inventory::usb` |
//! | `lldp` | `lldp_raw` | an [`LldpSource`] |
//!
//! `default` and `logs` are built by `inspection` and the agent. A failure becomes one
//! line of the payload's `error` (IPA's `AccumulatedFailures`), which Ironic's
//! `ramdisk-error` hook turns into a failed inspection, so only what IPA counts as a
//! failure is reported; the rest is a warning. To add a collector: a reader under
//! `inventory`, a line in [`OPTIONAL`] and an arm in [`run`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::inventory::{dmi, dmidecode, numa, pci, usb, InventoryError};
use ira_hw::Inventory;

/// Optional collectors this agent runs, besides `default` and `logs`.
pub const OPTIONAL: &[&str] = &[
    "pci-devices",
    "numa-topology",
    "dmi-decode",
    "usb-devices",
    "lldp",
];

/// Raw LLDP TLVs per interface name: `[type, hex of the value]`, as IPA's
/// `collect_lldp_data` returns them.
pub type LldpRaw = BTreeMap<String, Vec<(u8, String)>>;

/// Where the `lldp` collector gets its frames.
///
/// The hook for LLDP capture: an implementation that listens on the interfaces (for
/// `lldp_timeout`) plugs in here. [`InventoryLldp`] is the fallback when nothing else
/// is wired: it reuses what the inventory already captured (`ipa-collect-lldp`), as
/// IPA's `lldp` collector does when its data is cached.
pub trait LldpSource: Send + Sync {
    /// TLVs received on each of `interfaces`; an interface that heard nothing maps to
    /// an empty list or is absent.
    fn collect_lldp_data(&self, interfaces: &[String]) -> LldpRaw;
}

/// LLDP data already in the inventory's `interfaces[*].lldp`.
#[derive(Debug, Clone, Copy)]
pub struct InventoryLldp<'a>(pub &'a Inventory);

impl LldpSource for InventoryLldp<'_> {
    fn collect_lldp_data(&self, interfaces: &[String]) -> LldpRaw {
        self.0
            .interfaces
            .iter()
            .filter(|i| interfaces.contains(&i.name))
            .filter_map(|i| i.lldp.clone().map(|tlvs| (i.name.clone(), tlvs)))
            .collect()
    }
}

/// What the collectors read from.
pub struct Context<'a> {
    /// System root (`/` in production).
    pub root: &'a Path,
    /// The inventory the `default` collector sent.
    pub inventory: &'a Inventory,
    /// LLDP frames for the `lldp` collector.
    pub lldp: &'a dyn LldpSource,
}

/// Runs collector `name` into `payload`; a failure is pushed to `failures` in IPA's
/// words. Returns false for a name this module does not know.
pub fn run(
    name: &str,
    ctx: &Context<'_>,
    payload: &mut Map<String, Value>,
    failures: &mut Vec<String>,
) -> bool {
    match name {
        "pci-devices" => match pci::read_pci_devices(ctx.root) {
            Ok(devices) => {
                payload.insert("pci_devices".into(), to_value(&devices));
            }
            Err(e) => failures.push(format!("Failed to get list of PCI devices: {e}")),
        },
        "numa-topology" => match numa::read_numa_topology(ctx.root) {
            Ok(Some(topology)) => {
                payload.insert("numa_topology".into(), to_value(&topology));
            }
            Ok(None) => {}
            // IPA only warns: a half-read topology is dropped, not reported.
            Err(e) => tracing::warn!(error = %e, "Failed to get some NUMA information"),
        },
        "dmi-decode" => match dmi::read_raw_table(ctx.root) {
            Ok(table) => {
                payload.insert("dmi".into(), dmidecode::decode(&table));
            }
            // No SMBIOS at all: dmidecode succeeds with nothing to print.
            Err(InventoryError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                payload.insert("dmi".into(), dmidecode::decode(&[]));
            }
            Err(e) => failures.push(format!("failed to read the SMBIOS table: {e}")),
        },
        "usb-devices" => match usb::read_usb_devices(ctx.root) {
            Ok(devices) => {
                payload.insert("usb_devices".into(), to_value(&devices));
            }
            Err(e) => failures.push(format!("collector usb-devices failed: {e}")),
        },
        "lldp" => {
            let names: Vec<String> = ctx
                .inventory
                .interfaces
                .iter()
                .map(|i| i.name.clone())
                .filter(|n| n != "lo")
                .collect();
            payload.insert(
                "lldp_raw".into(),
                to_value(&ctx.lldp.collect_lldp_data(&names)),
            );
        }
        _ => return false,
    }
    true
}

/// IPA's `AccumulatedFailures.get_error`: null without failures.
pub fn error_text(failures: &[String]) -> Value {
    if failures.is_empty() {
        return Value::Null;
    }
    let lines: Vec<String> = failures.iter().map(|f| format!("* {f}")).collect();
    Value::String(format!(
        "The following errors were encountered:\n{}",
        lines.join("\n")
    ))
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("collector data is plain JSON")
}
