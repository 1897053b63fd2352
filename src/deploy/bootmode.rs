//! The node's boot mode as IPA derives it (`utils.get_node_boot_mode`, hardware spec
//! 6.1): secure boot forces UEFI; else the first of `instance_info.deploy_boot_mode`,
//! `properties.capabilities.boot_mode`, `driver_internal_info.deploy_boot_mode`, else
//! the ramdisk's own mode.

use serde_json::Value;

use crate::partition::layout::BootMode;

/// Parses a capabilities value: an object, a JSON string, or `k1:v1,k2:v2`.
pub fn capabilities(value: Option<&Value>) -> serde_json::Map<String, Value> {
    match value {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(s) {
                return m;
            }
            s.split(',')
                .filter_map(|kv| kv.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), Value::String(v.trim().to_owned())))
                .collect()
        }
        _ => serde_json::Map::new(),
    }
}

fn parse_mode(v: Option<&Value>) -> Option<BootMode> {
    match v
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("uefi") => Some(BootMode::Uefi),
        Some("bios") => Some(BootMode::Bios),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// The capability `key` from `instance_info.capabilities`, else `properties.capabilities`.
pub fn capability(node: &Value, key: &str) -> Option<Value> {
    let ii = capabilities(node.pointer("/instance_info/capabilities"));
    if let Some(v) = ii.get(key) {
        return Some(v.clone());
    }
    capabilities(node.pointer("/properties/capabilities"))
        .get(key)
        .cloned()
}

/// The boot mode for `node`, falling back to `ramdisk` (the mode the agent booted in).
pub fn node_boot_mode(node: Option<&Value>, ramdisk: BootMode) -> BootMode {
    let Some(node) = node else {
        return ramdisk;
    };
    if truthy(capability(node, "secure_boot").as_ref()) == Some(true) {
        return BootMode::Uefi;
    }
    let props = capabilities(node.pointer("/properties/capabilities"));
    [
        node.pointer("/instance_info/deploy_boot_mode").cloned(),
        props.get("boot_mode").cloned(),
        node.pointer("/driver_internal_info/deploy_boot_mode")
            .cloned(),
    ]
    .iter()
    .find_map(|v| v.as_ref().map(|v| parse_mode(Some(v))))
    .flatten()
    .unwrap_or(ramdisk)
}

/// The mode the ramdisk booted in: UEFI when `sys/firmware/efi` exists under `root`.
pub fn ramdisk_boot_mode(root: &std::path::Path) -> BootMode {
    if root.join("sys/firmware/efi").exists() {
        BootMode::Uefi
    } else {
        BootMode::Bios
    }
}

/// The partition-table label of the capabilities (`disk_label`), if any.
pub fn disk_label(node: Option<&Value>) -> Option<String> {
    node.and_then(|n| capability(n, "disk_label"))
        .and_then(|v| v.as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn precedence_follows_ipa() {
        let n = json!({"instance_info": {"deploy_boot_mode": "bios"},
                       "properties": {"capabilities": "boot_mode:uefi"}});
        assert_eq!(node_boot_mode(Some(&n), BootMode::Uefi), BootMode::Bios);
        let n = json!({"properties": {"capabilities": "boot_mode:uefi,disk_label:gpt"}});
        assert_eq!(node_boot_mode(Some(&n), BootMode::Bios), BootMode::Uefi);
        assert_eq!(disk_label(Some(&n)).as_deref(), Some("gpt"));
        let n = json!({"instance_info": {"capabilities": {"secure_boot": "true"},
                       "deploy_boot_mode": "bios"}});
        assert_eq!(node_boot_mode(Some(&n), BootMode::Bios), BootMode::Uefi);
        let n = json!({"driver_internal_info": {"deploy_boot_mode": "UEFI"}});
        assert_eq!(node_boot_mode(Some(&n), BootMode::Bios), BootMode::Uefi);
        let n = json!({"instance_info": {"deploy_boot_mode": "weird"}});
        assert_eq!(node_boot_mode(Some(&n), BootMode::Bios), BootMode::Bios);
        assert_eq!(node_boot_mode(None, BootMode::Uefi), BootMode::Uefi);
    }

    #[test]
    fn capabilities_forms() {
        assert_eq!(capabilities(Some(&json!("{\"a\": \"b\"}")))["a"], "b");
        assert_eq!(capabilities(Some(&json!("a:b, c:d")))["c"], "d");
        assert!(capabilities(Some(&json!(5))).is_empty());
    }
}
