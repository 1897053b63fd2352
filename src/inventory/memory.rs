//! The `memory` object (spec 1.3): `total` from `/proc/meminfo`, `physical_mb` the way
//! lshw computes its `core/memory` size, which is what IPA reports.
//!
//! lshw (`dmi.cc`, `mem.cc`) takes the sum of the SMBIOS type 17 sizes; when that is not
//! larger than the kernel's own total (page count x page size = `MemTotal`), it takes
//! the online hot-pluggable memory blocks if their sum is larger, else the kernel total.
//! lshw also considers the size of `/proc/kcore`, but only when it lies between 1x and 2x
//! the kernel total, which never happens on 64-bit kernels (kcore spans the whole
//! virtual map), so it is left out. The result is truncated to MiB as IPA does.

use std::path::Path;

use ira_hw::Memory;

use super::read::{list_dir_opt, read_bounded, read_opt, under};

const MEMINFO_CAP: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

/// Reads memory totals under `root`; `smbios_bytes` is the type 17 sum, if any.
pub fn read_memory(root: &Path, smbios_bytes: Option<u64>) -> Memory {
    let total = match read_bounded(&under(root, "proc/meminfo"), MEMINFO_CAP) {
        Ok(bytes) => parse_meminfo_total(&String::from_utf8_lossy(&bytes)),
        Err(err) => {
            tracing::warn!(error = %err, "meminfo unreadable");
            None
        }
    };
    // The memory blocks are only needed when SMBIOS does not settle it.
    let hotplug = match (smbios_bytes, total) {
        (Some(dmi), Some(kernel)) if dmi > kernel => None,
        _ => hotplug_bytes(root),
    };
    Memory {
        total,
        physical_mb: physical_mb(smbios_bytes, hotplug, total),
    }
}

/// `MemTotal` of `/proc/meminfo` in bytes (the file says kB, meaning KiB).
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// lshw's choice of the installed memory size, in MiB (truncated); `None` when no
/// source is known at all.
pub fn physical_mb(smbios: Option<u64>, hotplug: Option<u64>, kernel: Option<u64>) -> Option<u64> {
    let kernel_total = kernel.unwrap_or(0);
    let bytes = match smbios {
        Some(dmi) if dmi > kernel_total => dmi,
        _ => match hotplug {
            Some(hp) if hp > kernel_total => hp,
            _ => kernel.or(hotplug).or(smbios)?,
        },
    };
    Some(bytes / MIB)
}

/// Sum of the online memory blocks in `sys/devices/system/memory` (lshw
/// `get_hotplug_size`): `block_size_bytes` is hexadecimal without `0x`.
pub fn hotplug_bytes(root: &Path) -> Option<u64> {
    let base = under(root, "sys/devices/system/memory");
    let block = u64::from_str_radix(&read_opt(&base.join("block_size_bytes"))?, 16).ok()?;
    let online = list_dir_opt(&base)
        .iter()
        .filter(|name| name.starts_with("memory"))
        .filter(|name| read_opt(&base.join(name).join("online")).as_deref() == Some("1"))
        .count();
    let online = u64::try_from(online).ok()?;
    (online > 0).then(|| block.saturating_mul(online))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemTotal:       24683656 kB\nMemFree:        22657592 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_683_656 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn lshw_size_choice() {
        let gib = 1u64 << 30;
        // SMBIOS larger than the kernel total wins.
        assert_eq!(
            physical_mb(Some(256 * gib), Some(300 * gib), Some(250 * gib)),
            Some(262_144)
        );
        // SMBIOS not larger: the larger hotplug sum wins, else the kernel total.
        assert_eq!(
            physical_mb(Some(gib), Some(24 * gib), Some(23 * gib)),
            Some(24_576)
        );
        assert_eq!(physical_mb(None, Some(gib), Some(2 * gib)), Some(2048));
        assert_eq!(physical_mb(None, None, Some(2 * gib + 5)), Some(2048));
        assert_eq!(physical_mb(None, Some(3 * gib), None), Some(3072));
        assert_eq!(physical_mb(None, None, None), None);
    }
}
