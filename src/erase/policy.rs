//! The erase options Ironic puts into `node.driver_internal_info` before cleaning (spec
//! 5.7), with IPA's defaults when a key is absent. Ironic sends JSON booleans and
//! integers; strings are accepted as oslo's `bool_from_string` reads them (`"true"`,
//! `"1"`, `"no"`, ...). A value that is neither is refused instead of being read by
//! Python truthiness (where `"false"` would mean true).

use serde_json::Value;

use crate::blockdev::hints::bool_from_value;

use super::overwrite::{OverwritePlan, DEFAULT_BUFFER};

/// `driver_internal_info` key: random overwrite passes.
pub const ITERATIONS: &str = "agent_erase_devices_iterations";
/// Key: a final pass of zeros.
pub const ZEROIZE: &str = "agent_erase_devices_zeroize";
/// Key: overwrite when a secure erase failed.
pub const CONTINUE_SECURE: &str = "agent_continue_if_secure_erase_failed";
/// Deprecated key of the same meaning, read when [`CONTINUE_SECURE`] is absent.
pub const CONTINUE_ATA: &str = "agent_continue_if_ata_erase_failed";
/// Key: NVMe format for NVMe devices.
pub const ENABLE_NVME: &str = "agent_enable_nvme_secure_erase";
/// Key: ATA security erase for other devices.
pub const ENABLE_ATA: &str = "agent_enable_ata_secure_erase";
/// Key: disks erased at once by `erase_devices`.
pub const CONCURRENCY: &str = "disk_erasure_concurrency";
/// Key: skip read-only devices instead of failing.
pub const SKIP_READ_ONLY: &str = "agent_erase_skip_read_only";
/// Key: erase devices holding shared-disk filesystems (5.2 guard off).
pub const WIPE_SPECIAL: &str = "wipe_special_filesystems";

/// A `driver_internal_info` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("driver_internal_info.{key} = {value} is not {expected}")]
pub struct PolicyError {
    /// The key.
    pub key: &'static str,
    /// The value, as JSON.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

/// The erase options of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasePolicy {
    /// Random overwrite passes (default 1).
    pub iterations: u32,
    /// A final zero pass (default true).
    pub zeroize: bool,
    /// Overwrite when a secure erase failed (default false).
    pub continue_if_secure_erase_failed: bool,
    /// NVMe format for NVMe devices (default true).
    pub enable_nvme: bool,
    /// ATA security erase for other devices (default true).
    pub enable_ata: bool,
    /// Disks erased at once (default 1; Ironic sends 4).
    pub concurrency: usize,
    /// Read-only devices are skipped rather than failing the step (default false).
    pub skip_read_only: bool,
    /// Shared-disk filesystems may be erased (default false: the 5.2 guard applies).
    pub wipe_special_filesystems: bool,
}

impl Default for ErasePolicy {
    /// IPA's defaults.
    fn default() -> Self {
        Self {
            iterations: 1,
            zeroize: true,
            continue_if_secure_erase_failed: false,
            enable_nvme: true,
            enable_ata: true,
            concurrency: 1,
            skip_read_only: false,
            wipe_special_filesystems: true,
        }
    }
}

impl ErasePolicy {
    /// The options of `node` (its `driver_internal_info`; absent keys take the defaults).
    pub fn from_node(node: &Value) -> Result<Self, PolicyError> {
        let d = Self::default();
        let continue_default = flag(node, CONTINUE_ATA, d.continue_if_secure_erase_failed)?;
        let iterations = int(node, ITERATIONS, u64::from(d.iterations))?;
        let iterations = u32::try_from(iterations).map_err(|_| PolicyError {
            key: ITERATIONS,
            value: iterations.to_string(),
            expected: "a pass count below 2^32",
        })?;
        let concurrency = int(node, CONCURRENCY, 1)?;
        if concurrency == 0 {
            return Err(PolicyError {
                key: CONCURRENCY,
                value: "0".to_owned(),
                expected: "a positive integer",
            });
        }
        Ok(Self {
            iterations,
            zeroize: flag(node, ZEROIZE, d.zeroize)?,
            continue_if_secure_erase_failed: flag(node, CONTINUE_SECURE, continue_default)?,
            enable_nvme: flag(node, ENABLE_NVME, d.enable_nvme)?,
            enable_ata: flag(node, ENABLE_ATA, d.enable_ata)?,
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            skip_read_only: flag(node, SKIP_READ_ONLY, d.skip_read_only)?,
            wipe_special_filesystems: flag(node, WIPE_SPECIAL, d.wipe_special_filesystems)?,
        })
    }

    /// The overwrite the options ask for.
    pub fn overwrite_plan(&self) -> OverwritePlan {
        OverwritePlan {
            iterations: self.iterations,
            zeroize: self.zeroize,
            buffer_bytes: DEFAULT_BUFFER,
        }
    }
}

fn get<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    node.get("driver_internal_info")
        .and_then(|i| i.get(key))
        .filter(|v| !v.is_null())
}

fn refused(key: &'static str, v: &Value, expected: &'static str) -> PolicyError {
    PolicyError {
        key,
        value: v.to_string(),
        expected,
    }
}

/// Boolean key `key` of `node.driver_internal_info`; `default` when absent or null.
pub fn flag(node: &Value, key: &'static str, default: bool) -> Result<bool, PolicyError> {
    let Some(v) = get(node, key) else {
        return Ok(default);
    };
    match v {
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::Bool(_) | Value::String(_) => {
            bool_from_value(v).ok_or_else(|| refused(key, v, "a boolean"))
        }
        _ => Err(refused(key, v, "a boolean")),
    }
}

/// Non-negative integer key `key`; `default` when absent or null.
fn int(node: &Value, key: &'static str, default: u64) -> Result<u64, PolicyError> {
    let Some(v) = get(node, key) else {
        return Ok(default);
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| refused(key, v, "a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(info: Value) -> Value {
        json!({ "driver_internal_info": info })
    }

    #[test]
    fn absent_keys_take_ipas_defaults() {
        for n in [
            json!({}),
            node(json!({})),
            json!({"driver_internal_info": null}),
        ] {
            let p = ErasePolicy::from_node(&n).unwrap();
            assert_eq!(p, ErasePolicy::default());
            assert_eq!(
                (
                    p.iterations,
                    p.zeroize,
                    p.concurrency,
                    p.enable_nvme,
                    p.enable_ata
                ),
                (1, true, 1, true, true)
            );
            assert!(!p.continue_if_secure_erase_failed && !p.skip_read_only);
            assert!(p.wipe_special_filesystems);
        }
    }

    #[test]
    fn ironic_values_are_read() {
        let p = ErasePolicy::from_node(&node(json!({
            "agent_erase_devices_iterations": 3,
            "agent_erase_devices_zeroize": false,
            "agent_continue_if_secure_erase_failed": true,
            "agent_enable_nvme_secure_erase": false,
            "agent_enable_ata_secure_erase": false,
            "disk_erasure_concurrency": 4,
            "agent_erase_skip_read_only": true,
            "wipe_special_filesystems": false,
        })))
        .unwrap();
        assert_eq!(
            p,
            ErasePolicy {
                iterations: 3,
                zeroize: false,
                continue_if_secure_erase_failed: true,
                enable_nvme: false,
                enable_ata: false,
                concurrency: 4,
                skip_read_only: true,
                wipe_special_filesystems: false,
            }
        );
        assert_eq!(
            p.overwrite_plan(),
            OverwritePlan {
                iterations: 3,
                zeroize: false,
                buffer_bytes: DEFAULT_BUFFER
            }
        );
    }

    #[test]
    fn the_deprecated_ata_key_is_the_fallback_only() {
        let old = |v: Value| node(json!({ "agent_continue_if_ata_erase_failed": v }));
        assert!(
            ErasePolicy::from_node(&old(json!(true)))
                .unwrap()
                .continue_if_secure_erase_failed
        );
        let both = node(json!({
            "agent_continue_if_ata_erase_failed": true,
            "agent_continue_if_secure_erase_failed": false,
        }));
        assert!(
            !ErasePolicy::from_node(&both)
                .unwrap()
                .continue_if_secure_erase_failed
        );
    }

    #[test]
    fn strings_are_read_as_oslo_reads_them() {
        for (s, want) in [
            ("true", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("off", false),
        ] {
            let p = ErasePolicy::from_node(&node(json!({ "agent_erase_devices_zeroize": s })));
            assert_eq!(p.unwrap().zeroize, want, "{s}");
        }
        let p = ErasePolicy::from_node(&node(json!({
            "agent_erase_devices_iterations": "2", "disk_erasure_concurrency": " 8 ",
            "agent_erase_skip_read_only": 1,
        })))
        .unwrap();
        assert_eq!(
            (p.iterations, p.concurrency, p.skip_read_only),
            (2, 8, true)
        );
    }

    #[test]
    fn unreadable_values_are_refused() {
        for info in [
            json!({"agent_erase_devices_zeroize": "maybe"}),
            json!({"agent_enable_ata_secure_erase": []}),
            json!({"agent_erase_devices_iterations": -1}),
            json!({"agent_erase_devices_iterations": 1.5}),
            json!({"agent_erase_devices_iterations": 4_294_967_296u64}),
            json!({"disk_erasure_concurrency": 0}),
            json!({"disk_erasure_concurrency": "many"}),
        ] {
            let err = ErasePolicy::from_node(&node(info.clone())).unwrap_err();
            let key = info.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(err.key, key, "{info}");
            assert!(
                err.to_string().starts_with("driver_internal_info."),
                "{err}"
            );
        }
    }
}
