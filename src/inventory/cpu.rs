//! The `cpu` object (spec 1.2) from `/proc/cpuinfo` and `/sys/devices/system/cpu`.
//!
//! IPA runs `lscpu`; we read what lscpu reads. Unknown values stay `""`/`0`/`[]` as in
//! IPA, so a missing file never fails the inventory.

use std::collections::BTreeSet;
use std::path::Path;

use ira_hw::Cpu;

use super::read::{list_dir_opt, read_opt, read_opt_nonempty, read_prefix, under};

/// Only the first processor section of cpuinfo is used; one section is a few KiB even
/// with every x86 flag, and a 256-CPU cpuinfo would be ~1 MiB we do not need.
const CPUINFO_CAP: u64 = 64 << 10;

/// What the first processor section of `/proc/cpuinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `model name`, `""` when absent.
    pub model_name: String,
    /// `cpu MHz` verbatim (lscpu's `CPU MHz` copies it), if present.
    pub mhz: Option<String>,
    /// `flags` (x86) or `Features` (Arm), split on whitespace.
    pub flags: Vec<String>,
}

/// Reads the CPU summary under `root`.
pub fn read_cpu(root: &Path) -> Cpu {
    let info = match read_prefix(&under(root, "proc/cpuinfo"), CPUINFO_CAP) {
        Ok(bytes) => parse_cpuinfo(&String::from_utf8_lossy(&bytes)),
        Err(err) => {
            tracing::warn!(error = %err, "cpuinfo unreadable");
            CpuInfo::default()
        }
    };
    let max_khz = read_opt(&under(
        root,
        "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
    ))
    .and_then(|s| s.parse::<u64>().ok());
    let frequency = match (max_khz, info.mhz) {
        (Some(khz), _) => khz_to_mhz_string(khz),
        (None, Some(mhz)) => mhz,
        (None, None) => String::new(),
    };
    let count = ["present", "online"]
        .iter()
        .find_map(|f| {
            read_opt_nonempty(&under(root, &format!("sys/devices/system/cpu/{f}")))
                .and_then(|s| parse_cpu_list(&s))
        })
        .unwrap_or(0);
    Cpu {
        model_name: info.model_name,
        frequency,
        count,
        architecture: architecture(root),
        flags: info.flags,
        socket_count: socket_count(root),
    }
}

/// Parses the first processor section of `/proc/cpuinfo`: each line is split at its
/// first `:`, the key trimmed and lower-cased (IPA's rule for lscpu and cpuinfo).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut features = None;
    let mut seen_key = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            // A blank line ends the first section (a leading one ends nothing yet).
            if seen_key {
                break;
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        seen_key = true;
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "model name" if info.model_name.is_empty() => info.model_name = value.to_owned(),
            "cpu mhz" if info.mhz.is_none() && !value.is_empty() => {
                info.mhz = Some(value.to_owned())
            }
            "flags" if info.flags.is_empty() => {
                info.flags = value.split_whitespace().map(str::to_owned).collect()
            }
            "features" if features.is_none() => {
                features = Some(value.split_whitespace().map(str::to_owned).collect())
            }
            _ => {}
        }
    }
    if info.flags.is_empty() {
        info.flags = features.unwrap_or_default();
    }
    info
}

/// Counts the CPUs of a kernel CPU list such as `0-3,8-11` or `0`; `None` if malformed.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let n = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
                hi.checked_sub(lo)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
        count = count.checked_add(n)?;
    }
    Some(count)
}

/// kHz as MHz with four decimals, lscpu's `CPU max MHz` format (`3900000` -> `"3900.0000"`).
pub fn khz_to_mhz_string(khz: u64) -> String {
    // Integer arithmetic: a kHz value has only three decimals in MHz, the fourth is 0.
    format!("{}.{:03}0", khz / 1000, khz % 1000)
}

/// Distinct `physical_package_id` values over `cpu<N>/topology` (lscpu's `Socket(s)`).
fn socket_count(root: &Path) -> u32 {
    let base = under(root, "sys/devices/system/cpu");
    let packages: BTreeSet<String> = list_dir_opt(&base)
        .into_iter()
        .filter(|name| {
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        })
        .filter_map(|cpu| read_opt_nonempty(&base.join(cpu).join("topology/physical_package_id")))
        .collect();
    u32::try_from(packages.len()).unwrap_or(u32::MAX)
}

/// `uname -m`. Under a fixture root, `proc/sys/kernel/arch` (present on recent kernels)
/// is read first so golden files do not depend on the test machine.
fn architecture(root: &Path) -> String {
    if let Some(arch) = read_opt_nonempty(&under(root, "proc/sys/kernel/arch")) {
        return arch;
    }
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "uname failed");
            String::new()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_first_section_only() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.406\n\
                    flags\t\t: fpu vme  de\n\nprocessor\t: 1\nmodel name\t: Other\n";
        let info = parse_cpuinfo(text);
        assert_eq!(info.model_name, "AMD EPYC");
        assert_eq!(info.mhz.as_deref(), Some("2445.406"));
        assert_eq!(info.flags, ["fpu", "vme", "de"]);
    }

    #[test]
    fn cpuinfo_arm_features_fill_flags() {
        let info = parse_cpuinfo("processor : 0\nBogoMIPS : 50.00\nFeatures : fp asimd\n");
        assert_eq!(info.model_name, "");
        assert_eq!(info.flags, ["fp", "asimd"]);
        assert_eq!(info.mhz, None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0,2,4"), Some(3));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn khz_formatting() {
        assert_eq!(khz_to_mhz_string(3_900_000), "3900.0000");
        assert_eq!(khz_to_mhz_string(2_445_406), "2445.4060");
        assert_eq!(khz_to_mhz_string(800), "0.8000");
    }
}
