//! Inspection collectors: the `dmi-decode` output against the real dmidecode on the same
//! SMBIOS table, the sysfs readers on a tree captured from a real machine, and an agent
//! run whose inspection callback carries every optional collector's key.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fake_conductor::{FakeConductor, Reply, Route};
use ira::inventory::{dmidecode, numa, pci};
use serde_json::{json, Map, Value};

const DMIDECODE: &str = "/usr/sbin/dmidecode";
/// `dmidecode --dump-bin` files hold the entry point in their first 32 bytes.
const DUMP_TABLE_OFFSET: usize = 32;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// IPA's reading of one dmidecode block: `Key: value` lines, `Key:` starting a list of
/// the lines below it, the `Handle` line kept whole, the title line dropped.
fn ipa_block(block: &str) -> Map<String, Value> {
    let mut rows = Map::new();
    let mut list_key: Option<String> = None;
    for line in block.lines().map(str::trim) {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_owned(), v.trim());
            if v.is_empty() {
                rows.insert(k.clone(), json!([]));
                list_key = Some(k);
            } else {
                rows.insert(k, json!(v));
                list_key = None;
            }
        } else if line.contains("Handle 0x") {
            rows.insert("Handle".into(), json!(line));
        } else if let Some(k) = &list_key {
            rows[k].as_array_mut().unwrap().push(json!(line));
        }
    }
    rows
}

/// IPA's `parse_dmi` over dmidecode's text.
fn ipa_parse_dmi(text: &str) -> Value {
    let (mut bios, mut cpu, mut arrays, mut devices) = (json!({}), vec![], vec![], vec![]);
    for block in text.split("\n\n").filter(|b| b.starts_with("Handle 0x")) {
        let kind: u32 = block.split(',').nth(1).unwrap().trim()["DMI type".len()..]
            .trim()
            .parse()
            .unwrap();
        match kind {
            0 => bios = Value::Object(ipa_block(block)),
            4 => cpu.push(Value::Object(ipa_block(block))),
            16 => arrays.push(ipa_block(block)),
            17 => devices.push(Value::Object(ipa_block(block))),
            _ => {}
        }
    }
    let mut memory = json!({"devices": []});
    if !arrays.is_empty() {
        let count: u64 = arrays
            .iter()
            .map(|a| {
                a["Number Of Devices"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        let mut first = arrays.remove(0);
        first.insert("Number Of Devices".into(), json!(count));
        first.remove("Handle");
        memory = Value::Object(first);
    }
    if !devices.is_empty() {
        memory["devices"] = Value::Array(devices);
    }
    json!({"bios": bios, "cpu": cpu, "memory": memory})
}

#[test]
fn dmi_decode_matches_what_ipa_gets_from_dmidecode() {
    let dump = fixtures().join("smbios/sample.bin");
    let out = std::process::Command::new(DMIDECODE)
        .arg("--from-dump")
        .arg(&dump)
        .args(["-t", "bios", "-t", "processor", "-t", "memory"])
        .output()
        .expect("dmidecode (tests/setup.sh installs it)");
    assert!(out.status.success());
    let expected = ipa_parse_dmi(&String::from_utf8(out.stdout).unwrap());
    let bytes = std::fs::read(&dump).unwrap();
    let got = dmidecode::decode(&bytes[DUMP_TABLE_OFFSET..]);
    assert_eq!(
        got, expected,
        "\nnative:\n{got:#}\ndmidecode via IPA's parser:\n{expected:#}"
    );
    // The sample is not trivial: two CPUs, four DIMM slots, 18 devices counted.
    assert_eq!(got["cpu"].as_array().unwrap().len(), 2);
    assert_eq!(got["memory"]["devices"].as_array().unwrap().len(), 4);
    assert_eq!(got["memory"]["Number Of Devices"], 18);
    assert_eq!(got["cpu"][0]["Family"], "Xeon");
    assert_eq!(got["memory"]["devices"][0]["Size"], "64 GB");
}

#[test]
fn pci_and_numa_from_a_captured_machine() {
    let root = fixtures().join("collectors/host");
    let devices = serde_json::to_value(pci::read_pci_devices(&root).unwrap()).unwrap();
    let expected = std::fs::read_to_string(root.join("expected-collectors.json")).unwrap();
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(devices, expected["pci_devices"]);
    let topology = serde_json::to_value(numa::read_numa_topology(&root).unwrap()).unwrap();
    assert_eq!(topology, expected["numa_topology"]);
}

/// A root with the captured PCI and NUMA tree, the sample SMBIOS table and one USB
/// device; no disks and no network interfaces.
fn collectors_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!(
            "{}/.",
            fixtures().join("collectors/host").display()
        ))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let r = dir.path();
    std::fs::create_dir_all(r.join("sys/block")).unwrap();
    std::fs::create_dir_all(r.join("sys/firmware/dmi/tables")).unwrap();
    let dump = std::fs::read(fixtures().join("smbios/sample.bin")).unwrap();
    std::fs::write(
        r.join("sys/firmware/dmi/tables/DMI"),
        &dump[DUMP_TABLE_OFFSET..],
    )
    .unwrap();
    let usb = r.join("sys/bus/usb/devices/1-1");
    std::fs::create_dir_all(&usb).unwrap();
    for (k, v) in [
        ("bDeviceClass", "00"),
        ("busnum", "1"),
        ("devnum", "2"),
        ("product", "QEMU USB Tablet"),
        ("manufacturer", "QEMU"),
    ] {
        std::fs::write(usb.join(k), format!("{v}\n")).unwrap();
    }
    dir
}

type AgentTask = tokio::task::JoinHandle<Result<(), ira::agent::AgentError>>;

/// An agent on `root` whose inspection runs `collectors` and posts to `fake`.
fn start_inspection(
    fake: &FakeConductor,
    root: &tempfile::TempDir,
    collectors: &[&str],
) -> (tokio::sync::oneshot::Sender<()>, AgentTask) {
    let mut config = common::test_config(Vec::new());
    config.sysroot = root.path().to_path_buf();
    config.listen_host = Some([127, 0, 0, 1].into());
    config.listen_port = common::free_port();
    config.enable_auto_tls = false;
    config.inspection_callback_url = Some(format!("{}/v1/continue_inspection", fake.url()));
    config.inspection_collectors = collectors.iter().map(|c| c.to_string()).collect();
    let policy = ira::agent::RunPolicy {
        nic_wait: Duration::ZERO,
        dhcp_poll: Duration::from_millis(10),
        ..ira::agent::RunPolicy::from_config(&config)
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ira::agent::run_with(config, policy, async {
        let _ = rx.await;
    }));
    (tx, task)
}

/// Stops the agent and waits for its clean end.
async fn stop(tx: tokio::sync::oneshot::Sender<()>, task: AgentTask) {
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_carries_every_optional_collector() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Inspection,
        Reply::Json(202, json!({"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"})),
    );
    let root = collectors_root();
    let (tx, task) = start_inspection(
        &fake,
        &root,
        &[
            "default",
            "pci-devices",
            "numa-topology",
            "dmi-decode",
            "usb-devices",
            "lldp",
            "extra-hardware",
        ],
    );
    let req = fake
        .wait_for(Route::Inspection, 1, Duration::from_secs(30))
        .await
        .remove(0);
    let body = req.body.unwrap();
    assert_eq!(body["error"], Value::Null);
    assert_eq!(
        body["configuration"]["collectors"],
        json!([
            "default",
            "pci-devices",
            "numa-topology",
            "dmi-decode",
            "usb-devices",
            "lldp"
        ]),
        "extra-hardware is not supported: skipped with a warning"
    );
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("collectors/host/expected-collectors.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["pci_devices"], expected["pci_devices"]);
    assert_eq!(body["numa_topology"], expected["numa_topology"]);
    let dump = std::fs::read(fixtures().join("smbios/sample.bin")).unwrap();
    assert_eq!(body["dmi"], dmidecode::decode(&dump[DUMP_TABLE_OFFSET..]));
    assert_eq!(
        body["usb_devices"],
        json!([{"product": "QEMU USB Tablet", "vendor": "QEMU", "handle": "USB:1:2"}])
    );
    assert_eq!(body["lldp_raw"], json!({}));
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collector_fills_error() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Inspection,
        Reply::Json(202, json!({"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"})),
    );
    let root = collectors_root();
    // No PCI bus directory: IPA reports "Failed to get list of PCI devices".
    std::fs::remove_dir_all(root.path().join("sys/bus/pci")).unwrap();
    let (tx, task) = start_inspection(&fake, &root, &["default", "pci-devices"]);
    let body = fake
        .wait_for(Route::Inspection, 1, Duration::from_secs(30))
        .await
        .remove(0)
        .body
        .unwrap();
    let error = body["error"].as_str().expect("error text");
    assert!(
        error.starts_with(
            "The following errors were encountered:\n* Failed to get list of PCI devices: "
        ),
        "{error}"
    );
    assert!(body.get("pci_devices").is_none());
    stop(tx, task).await;
}
