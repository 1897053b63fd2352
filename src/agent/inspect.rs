//! The inspection phase of the life cycle (protocol spec 4.9): the DHCP wait, the fresh
//! inventory, the collectors and the callback. Failures are logged, never fatal.

use tokio::time::Instant;

use super::{collect_inventory, waits, RunPolicy};
use crate::config::Config;
use crate::hardware::Registry;
use crate::ironic::{inspection, IronicClient};
use crate::logs::ring::LogRing;
use crate::logs::{build_archive, LogLimits};
use ira_hw::Inventory;

/// Runs the inspection callback when configured; returns the node UUID Ironic gave and,
/// when the DHCP wait made the agent read it again, the inventory it sent.
/// Failures are logged, never fatal.
pub(super) async fn inspect(
    client: &IronicClient,
    config: &Config,
    inventory: &Inventory,
    registry: &Registry,
    policy: &RunPolicy,
) -> (Option<String>, Option<Inventory>) {
    let urls = inspection::callback_urls(config);
    if urls.is_empty() {
        return (None, None);
    }
    let phase = Instant::now();
    // IPA's collect_default waits for DHCP, then reads the inventory it sends.
    let mut refreshed = None;
    if !config.inspection_dhcp_wait_timeout.is_zero() {
        waits::wait_for_dhcp(
            config.inspection_dhcp_wait_timeout,
            config.inspection_dhcp_all_interfaces,
            config.bootif.as_deref(),
            policy.dhcp_poll,
            || async {
                collect_inventory(config)
                    .await
                    .map(|i| i.interfaces)
                    .unwrap_or_default()
            },
        )
        .await;
        match collect_inventory(config).await {
            Ok(fresh) => refreshed = Some(super::keep_lldp(fresh, inventory)),
            Err(e) => tracing::warn!(error = %e, "inventory not re-read after the DHCP wait"),
        }
    }
    let inventory = refreshed.as_ref().unwrap_or(inventory);
    let collectors = inspection::collectors(config);
    let mut payload = inspection::payload(inventory, &collectors, &registry.manager_versions());
    {
        let (root, inv, names) = (
            config.root().to_path_buf(),
            inventory.clone(),
            collectors.clone(),
        );
        let optional = tokio::task::spawn_blocking(move || {
            // LLDP capture hook: a capturing `LldpSource` replaces this fallback.
            let lldp = crate::ironic::collectors::InventoryLldp(&inv);
            let ctx = crate::ironic::collectors::Context {
                root: &root,
                inventory: &inv,
                lldp: &lldp,
            };
            let mut extra = serde_json::Value::Object(serde_json::Map::new());
            inspection::add_optional(&mut extra, &names, &ctx);
            extra
        })
        .await;
        match optional {
            Ok(serde_json::Value::Object(extra)) => {
                if let Some(map) = payload.as_object_mut() {
                    map.extend(extra);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "inspection collectors failed"),
        }
    }
    if collectors.iter().any(|c| c == "logs") {
        let root = config.sysroot.clone();
        let inventory_json = serde_json::to_vec_pretty(inventory).unwrap_or_default();
        let built = tokio::task::spawn_blocking(move || {
            build_archive(
                &root,
                &inventory_json,
                LogRing::global(),
                &LogLimits::inspection(),
            )
        })
        .await;
        match built {
            Ok(Ok(archive)) => inspection::add_logs(&mut payload, &archive),
            Ok(Err(e)) => tracing::warn!(error = %e, "inspection logs not collected"),
            Err(e) => tracing::warn!(error = %e, "inspection logs not collected"),
        }
    }
    match inspection::send(client, &urls, &payload, &policy.inspection).await {
        Ok(uuid) => {
            tracing::info!(
                node = uuid.as_deref().unwrap_or("unknown"),
                elapsed_ms = phase.elapsed().as_millis(),
                "inspection data sent"
            );
            (uuid, refreshed)
        }
        Err(e) => {
            tracing::error!(error = %e, elapsed_ms = phase.elapsed().as_millis(), "inspection failed");
            (None, refreshed)
        }
    }
}
