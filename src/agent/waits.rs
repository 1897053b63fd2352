//! Start-up waits IPA makes before the inventory is sent: for a root disk
//! (`disk_wait_attempts` x `disk_wait_delay`, hardware spec 2.7) and for DHCP addresses
//! before the inspection callback (`inspection_dhcp_wait_timeout`, protocol spec 4.9).
//!
//! Neither wait is fatal: when time runs out the agent logs a warning and goes on with
//! what it has, as IPA does.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::blockdev::AllowList;
use ira_hw::NetworkInterface;

/// Smallest disk that counts as a root-disk candidate without hints (IPA's
/// `guess_root_disk`): 4 GiB.
pub const MIN_ROOT_DISK: u64 = 4 << 30;

/// True when `root` shows a disk IPA would pick as root device without hints.
pub fn root_disk_present(root: &Path, allow: &AllowList) -> bool {
    match crate::inventory::disks::list_disks(root, allow) {
        Ok(disks) => disks.iter().any(|d| d.size >= MIN_ROOT_DISK),
        Err(e) => {
            tracing::warn!(error = %e, "listing disks while waiting for the root disk");
            false
        }
    }
}

/// IPA's `wait_for_disks`: up to `attempts` looks for a root-disk candidate, `delay`
/// apart (no sleep after the last). Returns whether one was found; 0 attempts means
/// "do not wait" and returns true.
pub async fn wait_for_disks(
    root: &Path,
    allow: &AllowList,
    attempts: u32,
    delay: Duration,
) -> bool {
    if attempts == 0 {
        return true;
    }
    for attempt in 1..=attempts {
        let (r, a) = (root.to_path_buf(), allow.clone());
        let found = tokio::task::spawn_blocking(move || root_disk_present(&r, &a))
            .await
            .unwrap_or(false);
        if found {
            if attempt > 1 {
                tracing::info!(attempt, "root disk candidate appeared");
            }
            return true;
        }
        tracing::debug!(
            attempt,
            attempts,
            "still waiting for the root device to appear"
        );
        if attempt < attempts {
            tokio::time::sleep(delay).await;
        }
    }
    tracing::warn!(
        waited_ms = (delay * (attempts - 1)).as_millis(),
        "the root device was not detected"
    );
    false
}

/// `BOOTIF` as a plain lower-case MAC: PXELINUX's `01-aa-bb-...` loses its type prefix.
pub fn normalize_mac(bootif: &str) -> String {
    let mac = match bootif.split_once('-') {
        Some((_, rest)) if bootif.contains('-') => rest.replace('-', ":"),
        _ => bootif.to_owned(),
    };
    mac.to_ascii_lowercase()
}

/// IPA's `wait_for_dhcp`: until every interface waited for has an IPv4 address, or
/// `timeout` passed, polling `interfaces` every `poll`. Waits for the PXE interface
/// (`bootif`), or all with `all_interfaces`; without a known PXE interface it does not
/// wait. Returns true when the addresses are there (or waiting is off).
pub async fn wait_for_dhcp<F, Fut>(
    timeout: Duration,
    all_interfaces: bool,
    bootif: Option<&str>,
    poll: Duration,
    mut interfaces: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<NetworkInterface>>,
{
    if timeout.is_zero() {
        return true;
    }
    let pxe = bootif.map(normalize_mac);
    if pxe.is_none() && !all_interfaces {
        tracing::warn!("no PXE boot interface known; not waiting for its IP address");
        return false;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<String> = interfaces()
            .await
            .into_iter()
            .filter(|i| all_interfaces || Some(i.mac_address.to_ascii_lowercase()) == pxe)
            .filter(|i| i.ipv4_address.is_none())
            .map(|i| i.name)
            .collect();
        if missing.is_empty() {
            return true;
        }
        if Instant::now() + poll > deadline {
            tracing::warn!(
                timeout_s = timeout.as_secs_f64(),
                missing = ?missing,
                "not all network interfaces received IP addresses"
            );
            return false;
        }
        tracing::debug!(missing = ?missing, "still waiting for IP addresses");
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn nic(name: &str, mac: &str, v4: Option<&str>) -> NetworkInterface {
        serde_json::from_value(serde_json::json!({
            "name": name, "mac_address": mac, "ipv4_address": v4, "ipv6_address": null,
            "has_carrier": true, "lldp": null, "vendor": null, "product": null,
            "client_id": null, "biosdevname": null, "speed_mbps": null,
            "pci_address": null, "driver": null}))
        .unwrap()
    }

    #[test]
    fn bootif_forms() {
        assert_eq!(normalize_mac("01-52-54-00-AB-CD-EF"), "52:54:00:ab:cd:ef");
        assert_eq!(normalize_mac("52:54:00:AB:CD:EF"), "52:54:00:ab:cd:ef");
    }

    #[tokio::test]
    async fn dhcp_wait_ends_when_the_pxe_nic_has_an_address() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let ok = wait_for_dhcp(
            Duration::from_secs(5),
            false,
            Some("01-52-54-00-00-00-01"),
            Duration::from_millis(5),
            move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    // The PXE NIC gets its lease on the third look; the other never does.
                    let addr = (n >= 2).then_some("192.0.2.10");
                    vec![
                        nic("eth0", "52:54:00:00:00:01", addr),
                        nic("eth1", "52:54:00:00:00:02", None),
                    ]
                }
            },
        )
        .await;
        assert!(ok);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn dhcp_wait_times_out_on_all_interfaces_and_skips_without_bootif() {
        let start = Instant::now();
        let ok = wait_for_dhcp(
            Duration::from_millis(60),
            true,
            None,
            Duration::from_millis(10),
            || async {
                vec![
                    nic("eth0", "52:54:00:00:00:01", Some("192.0.2.10")),
                    nic("eth1", "52:54:00:00:00:02", None),
                ]
            },
        )
        .await;
        assert!(!ok);
        assert!(start.elapsed() >= Duration::from_millis(50));
        let ok = wait_for_dhcp(
            Duration::from_secs(60),
            false,
            None,
            Duration::from_millis(10),
            || async { Vec::new() },
        )
        .await;
        assert!(!ok, "without BOOTIF there is nothing to wait for");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            wait_for_dhcp(
                Duration::ZERO,
                true,
                None,
                Duration::from_millis(1),
                || async { Vec::new() }
            )
            .await
        );
    }

    /// Copies a fixture tree whose disks show up only after `late`.
    fn late_disks_root(late: Duration) -> (tempfile::TempDir, std::thread::JoinHandle<()>) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/nvme-sata");
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .args(["-a", &format!("{}/.", src.display())])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let block = dir.path().join("sys/block");
        let hidden = dir.path().join("sys/block.late");
        std::fs::rename(&block, &hidden).unwrap();
        std::fs::create_dir(&block).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(late);
            // rename(2) replaces the empty directory at once: the disks appear together.
            std::fs::rename(&hidden, &block).unwrap();
        });
        (dir, t)
    }

    #[tokio::test]
    async fn disks_that_appear_late_are_waited_for() {
        let (dir, t) = late_disks_root(Duration::from_millis(150));
        let allow = AllowList::default();
        assert!(!root_disk_present(dir.path(), &allow));
        let start = Instant::now();
        assert!(wait_for_disks(dir.path(), &allow, 20, Duration::from_millis(25)).await);
        assert!(start.elapsed() >= Duration::from_millis(100));
        t.join().unwrap();
        let disks = crate::inventory::disks::list_disks(dir.path(), &allow).unwrap();
        assert_eq!(disks.len(), 2);
    }

    #[tokio::test]
    async fn disk_wait_gives_up_after_its_attempts() {
        let (dir, t) = late_disks_root(Duration::from_millis(400));
        let allow = AllowList::default();
        let start = Instant::now();
        assert!(!wait_for_disks(dir.path(), &allow, 3, Duration::from_millis(20)).await);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_millis(400),
            "{took:?}"
        );
        t.join().unwrap();
        assert!(wait_for_disks(dir.path(), &allow, 0, Duration::from_secs(60)).await);
    }
}
