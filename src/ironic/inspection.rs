//! Agent-driven inspection (spec 4.9, sequence 10.4): POST the inventory to the
//! inspection callback before lookup, and hand the node UUID Ironic answers to lookup.
//!
//! Collectors: `default` (inventory, root disk, boot interface, configuration) is built
//! here; `logs` adds the base64 tar.gz that `log.collect_system_logs` also returns (the
//! agent builds it, [`add_logs`] puts it in); the optional ones (`pci-devices`,
//! `numa-topology`, `dmi-decode`, `usb-devices`, `lldp`) run in `collectors` through
//! [`add_optional`]. Unknown collectors are skipped with a warning and not listed in
//! `configuration.collectors`. Failure never stops the agent.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::backoff::{self, InspectionPolicy};
use super::client::{ClientError, IronicClient};
use super::wire;
use crate::config::Config;
use ira_hw::{BlockDevice, Inventory, ManagerVersion};

/// Smallest disk IPA's `guess_root_disk` accepts: 4 GiB.
const MIN_ROOT_DISK: u64 = 4 << 30;
/// Collectors used when `inspection_collectors` is empty.
const DEFAULT_COLLECTORS: &[&str] = &["default", "logs"];
/// Collectors built here or by the agent; the optional ones are in `collectors::OPTIONAL`.
const BUILTIN_COLLECTORS: &[&str] = &["default", "logs"];

/// The inspection callback was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    /// No answer after every attempt.
    #[error("after {attempts} attempts: {source}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: ClientError,
    },
    /// Ironic refused the data (final 4xx, or 5xx/409 after every attempt).
    #[error("HTTP {status}: {text}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Ironic's error text.
        text: String,
    },
}

/// The callback URLs: `inspection_callback_url` (comma-separated), or, when only
/// collectors are set, `<api_url>/v1/continue_inspection` for each API URL.
/// mDNS discovery of the legacy inspector is not supported; `mdns` is dropped with a
/// warning.
pub fn callback_urls(config: &Config) -> Vec<String> {
    let explicit: Vec<String> = config
        .inspection_callback_url
        .iter()
        .flat_map(|v| v.split(','))
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .filter(|u| {
            let mdns = u.eq_ignore_ascii_case("mdns");
            if mdns {
                tracing::warn!("mDNS discovery of the inspection endpoint is not supported");
            }
            !mdns
        })
        .collect();
    if !explicit.is_empty() || config.inspection_collectors.is_empty() {
        return explicit;
    }
    config
        .api_urls
        .iter()
        .map(|u| format!("{}/v1/continue_inspection", u.trim_end_matches('/')))
        .collect()
}

/// The collectors that will run: the configured ones (IPA's `default,logs` when none),
/// minus those this agent cannot run yet, which are logged.
pub fn collectors(config: &Config) -> Vec<String> {
    let requested: Vec<String> = if config.inspection_collectors.is_empty() {
        DEFAULT_COLLECTORS.iter().map(|c| (*c).to_owned()).collect()
    } else {
        config.inspection_collectors.clone()
    };
    requested
        .into_iter()
        .filter(|c| {
            let ok = BUILTIN_COLLECTORS.contains(&c.as_str())
                || super::collectors::OPTIONAL.contains(&c.as_str());
            if !ok {
                tracing::warn!(collector = %c, "inspection collector not supported, skipped");
            }
            ok
        })
        .collect()
}

/// IPA's `guess_root_disk` without hints: the smallest disk of at least 4 GiB, ties
/// broken by name.
pub fn root_disk(inventory: &Inventory) -> Option<&BlockDevice> {
    inventory
        .disks
        .iter()
        .filter(|d| d.size >= MIN_ROOT_DISK)
        .min_by(|a, b| (a.size, &a.name).cmp(&(b.size, &b.name)))
}

/// The callback body (collector `default`).
pub fn payload(inventory: &Inventory, collectors: &[String], managers: &[ManagerVersion]) -> Value {
    json!({
        "inventory": inventory,
        "root_disk": root_disk(inventory),
        "boot_interface": inventory.boot.pxe_interface,
        "configuration": {
            "collectors": collectors,
            "managers": managers
                .iter()
                .map(|m| json!({"name": m.name, "version": m.version}))
                .collect::<Vec<_>>(),
        },
        "error": null,
    })
}

/// Runs the optional collectors among `collectors` in order, adding their keys to
/// `payload` and their failures to its `error`.
pub fn add_optional(
    payload: &mut Value,
    collectors: &[String],
    ctx: &super::collectors::Context<'_>,
) {
    let Some(map) = payload.as_object_mut() else {
        return;
    };
    let mut failures = Vec::new();
    for name in collectors {
        if BUILTIN_COLLECTORS.contains(&name.as_str()) {
            continue;
        }
        let phase = std::time::Instant::now();
        if super::collectors::run(name, ctx, map, &mut failures) {
            tracing::info!(collector = %name, elapsed_ms = phase.elapsed().as_millis(), "inspection collector ran");
        }
    }
    for f in &failures {
        tracing::error!(failure = %f, "inspection collector failed");
    }
    map.insert("error".into(), super::collectors::error_text(&failures));
}

/// Collector `logs`: the system-log archive (gzip-compressed tar), base64-encoded.
pub fn add_logs(payload: &mut Value, archive: &[u8]) {
    use base64::Engine as _;
    payload["logs"] = Value::String(base64::engine::general_purpose::STANDARD.encode(archive));
}

/// Posts `payload`, retrying connection errors, 5xx and 409 up to `policy.attempts`
/// times; several URLs are tried in order within one attempt. Returns the node UUID
/// from the answer, if it carried one.
pub async fn send(
    client: &IronicClient,
    urls: &[String],
    payload: &Value,
    policy: &InspectionPolicy,
) -> Result<Option<String>, InspectionError> {
    let attempts = policy.attempts.max(1);
    let mut rng = StdRng::from_os_rng();
    let mut last: Option<InspectionError> = None;
    for attempt in 1..=attempts {
        for url in urls {
            match client.post_absolute(url, payload).await {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    let uuid = wire::parse_inspection_answer(&resp.body);
                    if uuid.is_none() {
                        tracing::warn!(url = %url, "inspection answer carries no node UUID");
                    }
                    return Ok(uuid);
                }
                Ok(resp) => {
                    let err = InspectionError::Refused {
                        status: resp.status,
                        text: wire::error_text(&resp.body),
                    };
                    if resp.status != 409 && resp.status < 500 {
                        return Err(err);
                    }
                    last = Some(err);
                    // An HTTP answer means this URL works: retry it, not the others.
                    break;
                }
                Err(e) => {
                    last = Some(InspectionError::Unreachable {
                        attempts: attempt,
                        source: e,
                    })
                }
            }
        }
        if attempt < attempts {
            let wait = backoff::inspection_wait(policy, attempt, &mut rng);
            if let Some(e) = &last {
                tracing::warn!(attempt, error = %e, retry_in_ms = wait.as_millis(), "inspection callback failed");
            }
            tokio::time::sleep(wait).await;
        }
    }
    Err(last.unwrap_or(InspectionError::Refused {
        status: 0,
        text: "no inspection URL".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, size: u64) -> BlockDevice {
        BlockDevice {
            name: name.into(),
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

    #[test]
    fn urls_from_config() {
        let mut c = Config {
            inspection_callback_url: Some("http://a/v1/continue_inspection/, mdns".into()),
            api_urls: vec!["http://api/".into()],
            ..Config::default()
        };
        assert_eq!(callback_urls(&c), ["http://a/v1/continue_inspection"]);
        c.inspection_callback_url = None;
        assert!(callback_urls(&c).is_empty());
        c.inspection_collectors = vec!["default".into()];
        assert_eq!(callback_urls(&c), ["http://api/v1/continue_inspection"]);
    }

    #[test]
    fn collectors_skip_unsupported() {
        let mut c = Config::default();
        assert_eq!(collectors(&c), ["default", "logs"]);
        c.inspection_collectors = vec![
            "default".into(),
            "pci-devices".into(),
            "extra-hardware".into(),
            "lldp".into(),
        ];
        assert_eq!(collectors(&c), ["default", "pci-devices", "lldp"]);
    }

    #[test]
    fn root_disk_is_smallest_big_enough() {
        let gib = 1u64 << 30;
        let mut inv: Inventory = serde_json::from_value(json!({
            "interfaces": [], "cpu": {"model_name": "", "frequency": "", "count": 1,
            "architecture": "x86_64", "flags": [], "socket_count": 1}, "disks": [],
            "memory": {"total": null, "physical_mb": null}, "bmc_address": null,
            "bmc_v6address": null, "system_vendor": {"product_name": "", "serial_number": "",
            "manufacturer": "", "firmware": {"vendor": "", "version": "", "build_date": ""}},
            "boot": {"current_boot_mode": "uefi", "pxe_interface": "52:54:00:00:00:01"},
            "hostname": "h"}))
        .unwrap();
        assert!(root_disk(&inv).is_none());
        inv.disks = vec![
            disk("/dev/sdc", 3 * gib),
            disk("/dev/sdb", 100 * gib),
            disk("/dev/sda", 20 * gib),
            disk("/dev/nvme0n1", 20 * gib),
        ];
        assert_eq!(root_disk(&inv).unwrap().name, "/dev/nvme0n1");
        let p = payload(
            &inv,
            &["default".to_owned()],
            &[ManagerVersion {
                name: "generic_hardware_manager".into(),
                version: "1.2".into(),
            }],
        );
        assert_eq!(p["root_disk"]["name"], "/dev/nvme0n1");
        assert_eq!(p["boot_interface"], "52:54:00:00:00:01");
        assert_eq!(p["error"], Value::Null);
        assert_eq!(
            p["configuration"],
            json!({"collectors": ["default"],
                   "managers": [{"name": "generic_hardware_manager", "version": "1.2"}]})
        );
        assert!(p.get("logs").is_none());
        assert_eq!(p["inventory"]["hostname"], "h");
    }
}
