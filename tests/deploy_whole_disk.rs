//! The whole-disk deploy path end to end through the agent's real command API on
//! 127.0.0.1: `deploy.execute_deploy_step` `write_image`, `standby.prepare_image`,
//! `standby.cache_image` and `standby.get_partition_uuids`, with images served by a
//! local HTTP server and written onto loop devices (with partition scanning, like a real
//! disk). Every test reads the device back; only allow-listed loop devices are written.
//! Needs root, losetup, sgdisk, sfdisk, blkid, qemu-img and genisoimage (tests/setup.sh).
//! The devices, images, agent client and checks are in `common::whole_disk`.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::blockio::fill;
use common::cmd::{blkid_probe, run, sfdisk_json, tag};
use common::fake_conductor::{FakeConductor, Route};
use common::fixtures::{client_options, hex, sha256_hex};
use common::loopdev::LoopDev;
use common::misbehaving_http::Behaviour;
use common::whole_disk::checks::{
    assert_failed, assert_root_uuid, assert_step_succeeded, assert_whole_disk_written, diff,
    expected_message,
};
use common::whole_disk::client::{node, start, write_image_step};
use common::whole_disk::images::{b64, gzip, Scratch};
use common::whole_disk::{
    gpt_setup, image_info, new_disk, serve, DEV_LEN, IMAGE_LEN, MIB, MIB_LEN, NODE_UUID, SIG, TOKEN,
};
use ira::ironic::backoff::HeartbeatPolicy;
use ira::ironic::client::IronicClient;
use ira::ironic::Heartbeater;
use ira::state::AgentState;

// ---------------------------------------------------------------- (1) raw GPT image

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_gpt_image_via_write_image_step() {
    let (disk, _, image, srv, agent) = gpt_setup(1).await;
    fill(disk.path(), 0xAA, 0, 40 * MIB); // an old install
    assert_eq!(agent.partition_uuids().await, json!({}));

    let info = image_info("img-raw", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    assert_step_succeeded(&r, "img-raw", &disk);
    assert_eq!(srv.count("/disk.img"), 1);
    assert_whole_disk_written(&disk, &image, 0);
    assert_root_uuid(&agent, &disk).await;
    assert!(agent.state.status_message.lock().unwrap().is_none());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_image_as_a_service_step() {
    let (disk, _, image, srv, agent) = gpt_setup(33).await;
    let node = node(disk.path());
    let steps = agent
        .finish(
            "service.get_service_steps",
            json!({"node": node, "ports": []}),
        )
        .await;
    assert!(
        steps["command_result"]["service_steps"]["GenericHardwareManager"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "write_image"),
        "{steps}"
    );
    let versions = steps["command_result"]["hardware_manager_version"].clone();
    let info = image_info("img-service", &srv.url("/disk.img"), &image, json!("raw"));
    let step = write_image_step(info, Value::Null);
    let r = agent
        .finish(
            "service.execute_service_step",
            json!({"step": step, "node": node, "ports": [], "service_version": versions}),
        )
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(r["command_result"]["service_step"], step);
    assert_eq!(
        r["command_result"]["service_result"]["result"],
        format!("prepare_image: {}", expected_message("img-service", &disk))
    );
    assert_whole_disk_written(&disk, &image, 0);
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

/// Every event of every test in this binary, at every level.
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
    .clone()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_and_config_drive_content_never_reach_the_logs() {
    let logs = captured_logs();
    let (disk, scratch, image, srv, agent) = gpt_setup(36).await;
    let iso = scratch.config_drive_iso("#cloud-config\npassword: Tenant-Secret-42\n");
    let drive = b64(&gzip(&iso));
    srv.add("/cd", drive.clone().into_bytes());
    let signed = format!(
        "{}?temp_url_sig=SIGimage0123456789&temp_url_expires=1",
        srv.url("/disk.img")
    );
    let info = image_info("img-logs", &signed, &image, json!("raw"));
    let r = agent.write_image(disk.path(), info, json!(drive)).await;
    assert_step_succeeded(&r, "img-logs", &disk);
    // A config drive URL with a signature too, on a cache hit.
    let cd_url = format!("{}?temp_url_sig=SIGdrive9876543210", srv.url("/cd"));
    let info = image_info("img-logs", &signed, &image, json!("raw"));
    let r = agent.write_image(disk.path(), info, json!(cd_url)).await;
    assert_step_succeeded(&r, "img-logs", &disk);
    assert_config_drive(&disk, &iso);
    agent.stop().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("img-logs"), "the deploy was logged at all");
    assert!(
        text.contains("/disk.img?***"),
        "the URL is logged without its query"
    );
    for secret in [
        "SIGimage0123456789",
        "SIGdrive9876543210",
        &drive[..40],
        TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the logs");
    }
}

// ---------------------------------------------------------------- (2) compressed and qcow2

async fn deploy_encoded(id: &str, served: Vec<u8>, disk_format: Value, image: &[u8]) {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0x5A, 0, 32 * MIB);
    let srv = serve("/disk.img", served.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info(id, &srv.url("/disk.img"), &served, disk_format);
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    assert_step_succeeded(&r, id, &disk);
    assert_eq!(srv.count("/disk.img"), 1);
    assert_whole_disk_written(&disk, image, 0);
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_compressed_raw_image_is_decompressed_onto_the_disk() {
    let scratch = Scratch::new();
    let image = scratch.gpt_image(2);
    let zst = zstd::encode_all(&image[..], 3).unwrap();
    assert!(zst.len() < image.len());
    deploy_encoded("img-zstd", zst, json!("raw"), &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_raw_image_is_decompressed_onto_the_disk() {
    let scratch = Scratch::new();
    let image = scratch.gpt_image(3);
    deploy_encoded("img-gz", gzip(&image), json!("raw"), &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_image_declared_qcow2_is_converted_onto_the_disk() {
    let scratch = Scratch::new();
    let image = scratch.gpt_image(4);
    let qcow = scratch.qcow2(&image);
    assert_eq!(&qcow[..4], b"QFI\xfb");
    deploy_encoded("img-qcow2", qcow, json!("qcow2"), &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_image_without_declared_format_is_detected_and_converted() {
    let scratch = Scratch::new();
    let image = scratch.gpt_image(5);
    let qcow = scratch.qcow2(&image);
    deploy_encoded("img-qcow2-null", qcow, Value::Null, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_gpt_image_without_declared_format_is_detected_and_copied() {
    let scratch = Scratch::new();
    let image = scratch.gpt_image(17);
    deploy_encoded("img-raw-null", image.clone(), Value::Null, &image).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_files_and_sha512_are_honoured() {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(29);
    let srv = serve("/images/disk.img", image.clone(), Behaviour::default()).await;
    let sums = format!(
        "{}  disk.img.bak\n{}  disk.img\n{}  other.img\n",
        sha256_hex(b"decoy"),
        sha256_hex(&image),
        sha256_hex(b"other")
    );
    srv.add("/images/SHA256SUMS", sums.into_bytes());
    let sha512 = hex(ring::digest::digest(&ring::digest::SHA512, &image).as_ref());
    let agent = start(&[&disk]).await;
    let cases = [
        json!({"checksum": srv.url("/images/SHA256SUMS")}),
        json!({"os_hash_algo": "sha256", "os_hash_value": srv.url("/images/SHA256SUMS")}),
        json!({"os_hash_algo": "sha512", "os_hash_value": sha512}),
    ];
    for (n, sum) in cases.into_iter().enumerate() {
        let id = format!("img-sum-{n}");
        let mut info = json!({"id": id, "urls": [srv.url("/images/disk.img")],
            "disk_format": "raw", "stream_raw_images": true, "node_uuid": NODE_UUID});
        info.as_object_mut()
            .unwrap()
            .extend(sum.as_object().unwrap().clone());
        let r = agent.write_image(disk.path(), info, Value::Null).await;
        assert_step_succeeded(&r, &id, &disk);
        assert_whole_disk_written(&disk, &image, 0);
    }
    assert_eq!(srv.count("/images/SHA256SUMS"), 2);
    assert_eq!(srv.count("/images/disk.img"), 3);

    // A checksum file without a line for the image: refused, nothing of it written.
    srv.add(
        "/images/NOSUMS",
        format!("{}  other.img\n", sha256_hex(&image)).into_bytes(),
    );
    let info = json!({"id": "img-nosum", "urls": [srv.url("/images/disk.img")],
        "disk_format": "raw", "stream_raw_images": true,
        "checksum": srv.url("/images/NOSUMS")});
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    assert_failed(&r);
    assert_eq!(srv.count("/images/disk.img"), 3, "the image is not fetched");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_without_streaming_lands_the_same() {
    let (disk, _, image, srv, agent) = gpt_setup(34).await;
    let mut info = image_info("img-nostream", &srv.url("/disk.img"), &image, json!("raw"));
    info["stream_raw_images"] = json!(false);
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    assert_step_succeeded(&r, "img-nostream", &disk);
    assert_whole_disk_written(&disk, &image, 0);
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_tried_in_order_but_a_4xx_is_fatal() {
    let (disk, _, image, srv, agent) = gpt_setup(35).await;
    // A server that cannot be reached (after its retries): the next URL is used.
    let refused = format!("{}/disk.img", common::refused_url());
    let mut info = image_info("img-urls", &srv.url("/disk.img"), &image, json!("raw"));
    info["urls"] = json!([refused, srv.url("/disk.img")]);
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    assert_step_succeeded(&r, "img-urls", &disk);
    assert_eq!(srv.count("/disk.img"), 1);
    assert_whole_disk_written(&disk, &image, 0);

    // IPA: a 4xx answer is fatal (ImageDownloadFatalError), the next URL is not tried.
    let mut info = image_info("img-urls-404", &srv.url("/disk.img"), &image, json!("raw"));
    info["urls"] = json!([srv.url("/gone.img"), srv.url("/disk.img")]);
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    let (_, details) = assert_failed(&r);
    assert!(details.contains("404"), "{details}");
    assert_eq!(srv.count("/gone.img"), 1, "a 4xx is not retried");
    assert_eq!(srv.count("/disk.img"), 1, "the second URL is not tried");
    agent.stop().await;
}

// ---------------------------------------------------------------- (3) checksum mismatch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_fails_and_wipes_the_start_of_the_disk() {
    let (disk, _, image, srv, agent) = gpt_setup(6).await;
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    let mut info = image_info("img-bad", &srv.url("/disk.img"), &image, json!("raw"));
    info["os_hash_value"] = json!(sha256_hex(b"some other image"));

    let r = agent
        .write_image(disk.path(), info.clone(), Value::Null)
        .await;
    let (_, details) = assert_failed(&r);
    // The error class: step_failures_keep_the_ipa_error_class.
    assert!(
        details.contains("checksum") || details.contains("Checksum"),
        "{details}"
    );
    // A mismatch is retried like a download error (retries = 1: two downloads).
    assert_eq!(srv.count("/disk.img"), 2);
    let head = disk.read(0, MIB);
    assert!(
        head != image[..MIB_LEN],
        "the unverified image start is not left"
    );
    assert!(
        head.iter().all(|&b| b == 0),
        "the start of the disk is wiped"
    );
    assert_eq!(agent.partition_uuids().await, json!({}));
    assert_eq!(*agent.state.status_message.lock().unwrap(), None);

    // The standby command itself reports the checksum error type.
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": info}))
        .await;
    let (kind, details) = assert_failed(&r);
    assert_eq!(kind, "ImageChecksumError", "{r}");
    assert_eq!(r["command_error"]["code"], 500);
    assert!(details.to_lowercase().contains("checksum"), "{details}");
    assert!(disk.read(0, MIB).iter().all(|&b| b == 0));
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_after_a_good_one_forgets_the_partition_uuids() {
    let (disk, _, image, srv, agent) = gpt_setup(7).await;
    let good = image_info("img-good", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent.write_image(disk.path(), good, Value::Null).await;
    assert_step_succeeded(&r, "img-good", &disk);
    assert_root_uuid(&agent, &disk).await;

    let mut bad = image_info("img-other", &srv.url("/disk.img"), &image, json!("raw"));
    bad["os_hash_value"] = json!(sha256_hex(b"not it"));
    let r = agent.write_image(disk.path(), bad, Value::Null).await;
    assert_failed(&r);
    assert!(disk.read(0, MIB).iter().all(|&b| b == 0));
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

// ---------------------------------------------------------------- (4) qcow2 backing file

/// Serves a qcow2 overlay whose backing file is a local GPT image and asks for it with
/// `disk_format` qcow2 and null, through the deploy step and `standby.prepare_image`.
/// Returns the device's first 32 MiB and last MiB before and after each attempt.
async fn deploy_backed_qcow2(check: impl Fn(&str, &[u8], &[u8])) {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    fill(disk.path(), 0xBB, DEV_LEN - MIB, MIB);
    let snapshot = |d: &LoopDev| [d.read(0, 32 * MIB), d.read(DEV_LEN - MIB, MIB)].concat();
    let before = snapshot(&disk);
    let scratch = Scratch::new();
    let base = scratch.path_str("base.raw");
    let base_image = scratch.gpt_image(8);
    std::fs::write(&base, &base_image).unwrap();
    let overlay = scratch.path_str("overlay.qcow2");
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "raw", &overlay,
        ],
    );
    let qcow = std::fs::read(&overlay).unwrap();
    let srv = serve("/disk.img", qcow.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    for (n, fmt) in [json!("qcow2"), Value::Null].into_iter().enumerate() {
        let id = format!("img-backed-{n}");
        let info = image_info(&id, &srv.url("/disk.img"), &qcow, fmt.clone());
        let r = agent
            .write_image(disk.path(), info.clone(), Value::Null)
            .await;
        let (_, details) = assert_failed(&r);
        // The error class: step_failures_keep_the_ipa_error_class.
        assert!(details.contains("Security"), "{fmt}: {details}");
        check(&format!("step, {fmt}"), &before, &snapshot(&disk));
        assert_eq!(agent.partition_uuids().await, json!({}));

        let r = agent
            .finish("standby.prepare_image", json!({"image_info": info}))
            .await;
        let (kind, details) = assert_failed(&r);
        assert_eq!(kind, "InvalidImage", "{r}");
        assert!(details.contains("Security"), "{fmt}: {details}");
        check(&format!("prepare_image, {fmt}"), &before, &snapshot(&disk));
        assert_eq!(agent.partition_uuids().await, json!({}));
    }
    // Neither the overlay nor the backing file's content reached the disk.
    let head = disk.read(0, MIB);
    assert_ne!(head[..4], qcow[..4]);
    assert!(disk.read(MIB, 8 * MIB) != base_image[MIB_LEN..9 * MIB_LEN]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_with_a_backing_file_is_refused_and_its_content_never_written() {
    // Between the first and the last MiB nothing changes (those two may be zeroed,
    // see the next test); they never hold anything but the old bytes or zeros.
    deploy_backed_qcow2(|what, before, after| {
        let (head, tail) = (MIB_LEN, before.len() - MIB_LEN);
        assert_eq!(
            diff(&before[head..tail], &after[head..tail]),
            None,
            "{what}: device bytes changed"
        );
        assert!(
            after[..head].iter().all(|&b| b == 0xAA || b == 0),
            "{what}: only the old bytes or zeros at the start"
        );
        assert!(
            after[tail..].iter().all(|&b| b == 0xBB || b == 0),
            "{what}: only the old bytes or zeros at the end"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_with_a_backing_file_leaves_the_device_unchanged() {
    deploy_backed_qcow2(|what, before, after| {
        assert_eq!(diff(before, after), None, "{what}: device bytes changed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_gate_refusals_leave_the_device_unchanged() {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    fill(disk.path(), 0xBB, DEV_LEN - MIB, MIB);
    let snapshot = |d: &LoopDev| [d.read(0, 32 * MIB), d.read(DEV_LEN - MIB, MIB)].concat();
    let before = snapshot(&disk);
    let scratch = Scratch::new();
    let raw = scratch.gpt_image(27);
    let qcow = scratch.qcow2(&raw);
    let srv = serve("/raw.img", raw.clone(), Behaviour::default()).await;
    srv.add("/disk.qcow2", qcow.clone());
    let agent = start(&[&disk]).await;
    let cases = [
        (
            "/raw.img",
            &raw,
            json!("qcow2"),
            "Expected format was qcow2, but image was actually gpt",
        ),
        (
            "/disk.qcow2",
            &qcow,
            json!("vmdk"),
            "Expected format was vmdk, but image was actually qcow2",
        ),
        (
            "/disk.qcow2",
            &qcow,
            Value::Null,
            "Detected image format was qcow2, but only raw, gpt are allowed",
        ),
    ];
    for (n, (path, bytes, fmt, want)) in cases.into_iter().enumerate() {
        if n == 2 {
            agent.state.lookup.lock().unwrap().permitted_image_formats =
                vec!["raw".into(), "gpt".into()];
        }
        let id = format!("img-gate-{n}");
        let info = image_info(&id, &srv.url(path), bytes, fmt);
        let r = agent.write_image(disk.path(), info, Value::Null).await;
        let (_, details) = assert_failed(&r);
        // The error class: step_failures_keep_the_ipa_error_class.
        assert!(details.contains(want), "{want}: {details}");
        assert_eq!(
            diff(&snapshot(&disk), &before),
            None,
            "{want}: device changed"
        );
        assert_eq!(agent.partition_uuids().await, json!({}));
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_with_512_byte_sectors_on_a_4k_device_is_refused_after_the_write() {
    let disk = LoopDev::builder(DEV_LEN)
        .partscan(true)
        .direct_io(false)
        .sector_size(4096)
        .attach();
    let scratch = Scratch::new();
    let image = scratch.gpt_image(28);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-512", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    let (kind, details) = assert_failed(&r);
    assert_eq!(kind, "DeploymentError", "{r}");
    assert!(details.contains("partition"), "{details}");
    // Written as it came (IPA's dd would have done the same) and verified.
    assert!(
        disk.read(0, IMAGE_LEN) == image,
        "the image bytes are on the disk"
    );
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

/// IPA's deploy extension re-raises the agent's own errors from a step unchanged
/// (`except (errors.RESTError, ...): raise`), and `write_image` re-raises what
/// `prepare_image` failed with (`cmd.wait()`), so the conductor's `last_error` names
/// the real class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_failures_keep_the_ipa_error_class() {
    let disk = new_disk(DEV_LEN);
    let other = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(30);
    let base = scratch.path_str("base.raw");
    std::fs::write(&base, &image).unwrap();
    let overlay = scratch.path_str("overlay.qcow2");
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", &base, "-F", "raw", &overlay,
        ],
    );
    let backed = std::fs::read(&overlay).unwrap();
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    srv.add("/backed.qcow2", backed.clone());
    let agent = start(&[&disk]).await;

    let mut bad_sum = image_info("img-sum", &srv.url("/disk.img"), &image, json!("raw"));
    bad_sum["os_hash_value"] = json!(sha256_hex(b"another image"));
    let backed_info = image_info(
        "img-backed",
        &srv.url("/backed.qcow2"),
        &backed,
        json!("qcow2"),
    );
    let good = image_info("img-good", &srv.url("/disk.img"), &image, json!("raw"));
    let cases = [
        (disk.path(), bad_sum, "ImageChecksumError", 500),
        (disk.path(), backed_info, "InvalidImage", 500),
        (other.path(), good, "DeviceNotFound", 404),
    ];
    for (dev, info, want, code) in cases {
        // The step first (it caches the node and its root device hint), then the same
        // image_info as a direct prepare_image.
        let r = agent.write_image(dev, info.clone(), Value::Null).await;
        let direct = agent
            .finish("standby.prepare_image", json!({"image_info": info}))
            .await;
        assert_failed(&r);
        if dev == disk.path() {
            assert_failed(&direct);
        }
        assert_eq!(r["command_error"]["type"], want, "{r}");
        assert_eq!(r["command_error"]["code"], code, "{r}");
        assert_eq!(
            r["command_error"]["message"], direct["command_error"]["message"],
            "{r}"
        );
    }
    agent.stop().await;
}

// ---------------------------------------------------------------- (5) raw means raw

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_bytes_declared_raw_are_written_bit_for_bit() {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(9);
    let qcow = scratch.qcow2(&image);
    let srv = serve("/disk.img", qcow.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-raw-qcow", &srv.url("/disk.img"), &qcow, json!("raw"));
    let r = agent.write_image(disk.path(), info, Value::Null).await;
    // IPA copies it as it is; the copy then has no partition table, which the post-write
    // validation reports.
    let (kind, details) = assert_failed(&r);
    assert_eq!(kind, "DeploymentError", "{r}");
    assert!(details.to_lowercase().contains("partition"), "{details}");
    assert!(
        disk.read(0, qcow.len() as u64) == qcow,
        "the qcow2 bytes are on the disk unconverted"
    );
    agent.stop().await;
}

// ---------------------------------------------------------------- (6) config drive

/// The config drive partition (the last one) on `disk`: (start, size) in bytes.
fn config_drive_partition(disk: &LoopDev, number: usize) -> (u64, u64) {
    let table = sfdisk_json(disk.path_str());
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), number, "{table}");
    let p = &parts[number - 1];
    assert_eq!(
        p["node"].as_str().unwrap(),
        format!("{}p{number}", disk.path_str())
    );
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let last_usable = table["lastlba"].as_u64().unwrap();
    assert_eq!(
        start + size - 1,
        last_usable,
        "ends at the last usable sector"
    );
    assert!(
        size * 512 <= 64 * MIB + MIB && size * 512 >= 64 * MIB - MIB,
        "{p}"
    );
    (start * 512, size * 512)
}

/// Partition 3 holds `iso`, probed by blkid at its offset on the whole disk: this
/// machine's kernel may not create partition nodes on a re-read.
fn assert_config_drive(disk: &LoopDev, iso: &[u8]) {
    let (start, size) = config_drive_partition(disk, 3);
    assert!(size >= iso.len() as u64);
    assert!(
        disk.read(start, iso.len() as u64) == iso,
        "config drive content"
    );
    let probe = blkid_probe(disk.path(), start, None);
    assert_eq!(tag(&probe, "LABEL"), Some("config-2"), "{probe:?}");
    assert_eq!(tag(&probe, "TYPE"), Some("iso9660"), "{probe:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_config_drive_gets_a_partition_in_the_last_64_mib() {
    let (disk, scratch, image, srv, agent) = gpt_setup(10).await;
    let iso = scratch.config_drive_iso("#cloud-config\nhostname: inline\n");
    let info = image_info("img-cd", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso))))
        .await;
    assert_step_succeeded(&r, "img-cd", &disk);
    assert_whole_disk_written(&disk, &image, 1);
    assert_config_drive(&disk, &iso);
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_drive_over_64_mib_fails_before_anything_is_written() {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    let before = disk.read(0, 32 * MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(11);
    let mut iso = scratch.config_drive_iso("big");
    iso.resize(64 * MIB_LEN + 4096, 0);
    let drive = b64(&gzip(&iso));
    assert!(drive.len() < MIB_LEN, "the bomb is small on the wire");
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-cd-big", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent.write_image(disk.path(), info, json!(drive)).await;
    let (kind, details) = assert_failed(&r);
    assert_eq!(kind, "DeploymentError", "{r}");
    assert!(details.contains("64MiB"), "{details}");
    assert_eq!(
        srv.count("/disk.img"),
        0,
        "the image is not even downloaded"
    );
    assert!(disk.read(0, 32 * MIB) == before, "device bytes changed");
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_drive_from_a_url() {
    let (disk, scratch, image, srv, agent) = gpt_setup(12).await;
    let iso = scratch.config_drive_iso("#cloud-config\nhostname: from-url\n");
    srv.add("/configdrive", b64(&gzip(&iso)).into_bytes());
    let info = image_info("img-cd-url", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(srv.url("/configdrive")))
        .await;
    assert_step_succeeded(&r, "img-cd-url", &disk);
    assert_eq!(srv.count("/configdrive"), 1);
    assert_whole_disk_written(&disk, &image, 1);
    assert_config_drive(&disk, &iso);
    assert_root_uuid(&agent, &disk).await;

    // The same image again with a new config drive served as a plain ISO: nothing is
    // downloaded or written again but the config drive, into the same partition.
    let iso2 = scratch.config_drive_iso("#cloud-config\nhostname: second-drive\n");
    assert_ne!(iso, iso2);
    srv.add("/configdrive.iso", iso2.clone());
    let info = image_info("img-cd-url", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(srv.url("/configdrive.iso")))
        .await;
    assert_step_succeeded(&r, "img-cd-url", &disk);
    assert_eq!(
        srv.count("/disk.img"),
        1,
        "the image is not downloaded again"
    );
    assert_eq!(srv.count("/configdrive.iso"), 1);
    assert_config_drive(&disk, &iso2);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_over_an_install_with_a_config_drive_adds_exactly_one_again() {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let first = scratch.gpt_image(20);
    let iso = scratch.config_drive_iso("#cloud-config\nhostname: first\n");
    let srv = serve("/first.img", first.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-first", &srv.url("/first.img"), &first, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso))))
        .await;
    assert_step_succeeded(&r, "img-first", &disk);
    assert_config_drive(&disk, &iso);

    // Another image and drive: the old table (and its backup GPT at the disk end) must
    // not come back; one config drive partition again.
    let second = Scratch::new().gpt_image(21);
    srv.add("/second.img", second.clone());
    let iso2 = Scratch::new().config_drive_iso("#cloud-config\nhostname: second\n");
    let info = image_info("img-second", &srv.url("/second.img"), &second, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso2))))
        .await;
    assert_step_succeeded(&r, "img-second", &disk);
    assert_whole_disk_written(&disk, &second, 1);
    assert_config_drive(&disk, &iso2);
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbr_image_with_a_config_drive_gets_a_primary_partition_at_the_end() {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    let scratch = Scratch::new();
    let image = scratch.mbr_image(22);
    let iso = scratch.config_drive_iso("#cloud-config\nhostname: mbr\n");
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-mbr", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso))))
        .await;
    assert_step_succeeded(&r, "img-mbr", &disk);

    let back = disk.read(0, IMAGE_LEN);
    // Boot code, signature and the image's two entries are kept.
    assert_eq!(diff(&back[..478], &image[..478]), None);
    assert_eq!(back[510..512], [0x55, 0xAA]);
    assert_eq!(diff(&back[512..], &image[512..]), None, "image data");
    let table = sfdisk_json(disk.path_str());
    assert_eq!(table["label"], "dos", "{table}");
    assert_eq!(table["id"], format!("0x{SIG:08x}"));
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{table}");
    let p = &parts[2];
    assert_eq!(p["node"], format!("{}p3", disk.path_str()));
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    assert_eq!(start * 512, DEV_LEN - 64 * MIB, "{p}");
    assert_eq!(size * 512, 64 * MIB, "{p}");
    assert!(
        disk.read(start * 512, iso.len() as u64) == iso,
        "config drive content"
    );
    let probe = blkid_probe(disk.path(), start * 512, None);
    assert_eq!(tag(&probe, "LABEL"), Some("config-2"), "{probe:?}");
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

/// Serves a 24 MiB image for a 16 MiB device (with or without a length) and returns
/// the failed `prepare_image` result and the device's first MiB.
async fn deploy_too_large(chunked: bool) -> (Value, Vec<u8>, Vec<u8>) {
    let disk = new_disk(16 * MIB);
    fill(disk.path(), 0xAA, 0, 16 * MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(23);
    let behaviour = Behaviour {
        chunked,
        ..Behaviour::default()
    };
    let srv = serve("/disk.img", image.clone(), behaviour).await;
    let agent = start(&[&disk]).await;
    agent.deploy_steps(&node(disk.path())).await;
    let info = image_info("img-big", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": info}))
        .await;
    let (kind, _) = assert_failed(&r);
    assert_eq!(kind, "ImageWriteError", "{r}");
    assert_eq!(
        srv.count("/disk.img"),
        1,
        "a local write error is not retried"
    );
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
    (r, disk.read(0, MIB), image[..MIB_LEN].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_announced_larger_than_the_device_fails_and_never_boots() {
    let (r, head, image_head) = deploy_too_large(false).await;
    // Refused on its Content-Length: the start holds the old bytes or zeros, never
    // the image's.
    assert_ne!(head, image_head);
    assert!(
        head.iter().all(|&b| b == 0xAA) || head.iter().all(|&b| b == 0),
        "head {:?}: {r}",
        &head[..16]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_streamed_past_the_device_end_fails_and_wipes_the_start() {
    // No length up front: bytes reach the device until it is full.
    let (r, head, _) = deploy_too_large(true).await;
    assert_eq!(
        diff(&head, &vec![0u8; MIB_LEN]),
        None,
        "the start is wiped: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_config_drives_fail_before_the_image_is_fetched() {
    let (disk, _, image, srv, agent) = gpt_setup(24).await;
    fill(disk.path(), 0xAA, 0, 32 * MIB);
    let before = disk.read(0, 32 * MIB);
    let cases = [
        (
            json!(srv.url("/missing-drive")),
            "Can't download the configdrive",
        ),
        (json!("%%% not base64 %%%"), "not base64 encoded"),
        (json!(b64(b"base64 but not gzip")), "decompressing"),
    ];
    for (n, (drive, want)) in cases.into_iter().enumerate() {
        let id = format!("img-bad-cd-{n}");
        let info = image_info(&id, &srv.url("/disk.img"), &image, json!("raw"));
        let r = agent.write_image(disk.path(), info, drive).await;
        let (kind, details) = assert_failed(&r);
        assert_eq!(kind, "DeploymentError", "{r}");
        assert!(details.contains(want), "{want}: {details}");
    }
    assert_eq!(srv.count("/missing-drive"), 1, "a 404 is not retried");
    assert_eq!(srv.count("/disk.img"), 0);
    assert!(disk.read(0, 32 * MIB) == before, "device bytes changed");
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_drive_inside_image_info_is_used_by_prepare_image() {
    // IPA: `if configdrive is None: configdrive = image_info.pop('configdrive', None)`.
    let (disk, scratch, image, srv, agent) = gpt_setup(25).await;
    let iso = scratch.config_drive_iso("#cloud-config\nhostname: in-image-info\n");
    agent.deploy_steps(&node(disk.path())).await;
    let mut info = image_info("img-cd-info", &srv.url("/disk.img"), &image, json!("raw"));
    info["configdrive"] = json!(b64(&gzip(&iso)));
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": info}))
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_whole_disk_written(&disk, &image, 1);
    assert_config_drive(&disk, &iso);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_drive_partition_in_the_image_is_reused() {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let old_iso = scratch.config_drive_iso("#cloud-config\nhostname: baked-in\n");
    let (image, offsets) = scratch.gpt_image_with_config_drives(31, &old_iso, 1);
    let iso = Scratch::new().config_drive_iso("#cloud-config\nhostname: from-the-conductor\n");
    assert_ne!(iso, old_iso);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-own-cd", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso))))
        .await;
    assert_step_succeeded(&r, "img-own-cd", &disk);
    let table = sfdisk_json(disk.path_str());
    assert_eq!(table["partitions"].as_array().unwrap().len(), 3, "{table}");
    assert!(
        disk.read(offsets[0], iso.len() as u64) == iso,
        "written into the image's partition"
    );
    let probe = blkid_probe(disk.path(), offsets[0], None);
    assert_eq!(tag(&probe, "LABEL"), Some("config-2"), "{probe:?}");
    assert_root_uuid(&agent, &disk).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_config_drive_partitions_in_the_image_are_refused() {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let old_iso = scratch.config_drive_iso("#cloud-config\nhostname: twice\n");
    let (image, offsets) = scratch.gpt_image_with_config_drives(32, &old_iso, 2);
    let iso = Scratch::new().config_drive_iso("#cloud-config\nhostname: new\n");
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    let info = image_info("img-two-cd", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .write_image(disk.path(), info, json!(b64(&gzip(&iso))))
        .await;
    let (_, details) = assert_failed(&r);
    assert!(
        details.contains("More than one partition with label \"config-2\" exists"),
        "{details}"
    );
    for off in offsets {
        assert!(
            disk.read(off, old_iso.len() as u64) == old_iso,
            "left as the image had it"
        );
    }
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

// ---------------------------------------------------------------- (7) cache_image

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_image_then_prepare_image_downloads_once() {
    let (disk, _, image, srv, agent) = gpt_setup(13).await;
    agent.deploy_steps(&node(disk.path())).await;
    let info = image_info("img-cache", &srv.url("/disk.img"), &image, json!("raw"));

    let r = agent
        .finish("standby.cache_image", json!({"image_info": info}))
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    // IPA wraps a string result of an asynchronous command as {"result": "<name>: ..."}.
    assert_eq!(
        r["command_result"],
        json!({"result": format!("cache_image: image (img-cache) cached to device {}", disk.path_str())})
    );
    assert_eq!(srv.count("/disk.img"), 1);
    assert_whole_disk_written(&disk, &image, 0);

    let r = agent
        .finish(
            "standby.prepare_image",
            json!({"image_info": info, "configdrive": null}),
        )
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(
        r["command_result"],
        json!({"result": format!("prepare_image: {}", expected_message("img-cache", &disk))})
    );
    assert_eq!(
        srv.count("/disk.img"),
        1,
        "prepare_image used the cached image"
    );
    assert_whole_disk_written(&disk, &image, 0);
    assert_root_uuid(&agent, &disk).await;

    // cache_image of the cached id does nothing; with force it writes again.
    let r = agent
        .finish("standby.cache_image", json!({"image_info": info}))
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(srv.count("/disk.img"), 1);
    let r = agent
        .finish(
            "standby.cache_image",
            json!({"image_info": info, "force": true}),
        )
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(srv.count("/disk.img"), 2);
    assert_whole_disk_written(&disk, &image, 0);

    // A different id is downloaded.
    let other = image_info("img-cache-2", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": other}))
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(srv.count("/disk.img"), 3);
    agent.stop().await;
}

// ---------------------------------------------------------------- (8) invalid image_info

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_image_info_is_a_400_and_the_agent_keeps_serving() {
    let disk = new_disk(DEV_LEN);
    fill(disk.path(), 0xAA, 0, 8 * MIB);
    let agent = start(&[&disk]).await;
    agent.deploy_steps(&node(disk.path())).await;
    let url = "http://127.0.0.1:9/disk.img";
    let sha = sha256_hex(b"x");
    let bad = [
        json!({"urls": [url], "os_hash_algo": "sha256", "os_hash_value": sha}),
        json!({"id": "a", "os_hash_algo": "sha256", "os_hash_value": sha}),
        json!({"id": "a", "urls": [], "os_hash_algo": "sha256", "os_hash_value": sha}),
        json!({"id": "a", "urls": [url]}),
        json!({"id": "a", "urls": [url], "checksum": ""}),
        json!({"id": "a", "urls": [url], "os_hash_algo": "sha256"}),
        json!("not an object"),
    ];
    for info in bad {
        for name in ["standby.prepare_image", "standby.cache_image"] {
            let (status, body) = agent.run(name, json!({"image_info": info}), true).await;
            assert_eq!(status, 400, "{name} {info}: {body}");
            assert_eq!(body["faultcode"], "Client", "{body}");
            assert!(
                body["faultstring"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid command parameters: "),
                "{body}"
            );
        }
    }
    let (status, _) = agent.run("standby.prepare_image", json!({}), true).await;
    assert_eq!(status, 400);
    // Inside the deploy step the same validation fails the step.
    let r = agent
        .write_image(disk.path(), json!({"id": "a", "urls": [url]}), Value::Null)
        .await;
    let (kind, details) = assert_failed(&r);
    // IPA re-raises the agent's own errors from a step unchanged.
    assert_eq!(kind, "InvalidCommandParamsError", "{r}");
    assert_eq!(r["command_error"]["code"], 400);
    assert!(
        details.contains("Image checksum is not available"),
        "{details}"
    );

    assert_eq!(agent.status_code().await, 200);
    let r = agent.finish("standby.sync", json!({})).await;
    assert_eq!(r["command_status"], "SUCCEEDED");
    assert_eq!(agent.partition_uuids().await, json!({}));
    assert!(disk.read(0, 8 * MIB).iter().all(|&b| b == 0xAA));
    agent.stop().await;
}

/// IPA's validator reads `md5_enabled` (set from the lookup), so an md5-only
/// `image_info` is refused before the command starts while md5 is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_only_image_info_is_a_400_while_md5_is_disabled() {
    let disk = new_disk(DEV_LEN);
    let agent = start(&[&disk]).await;
    agent.deploy_steps(&node(disk.path())).await;
    assert!(!agent.state.lookup.lock().unwrap().md5_enabled);
    let md5_only = json!({"id": "a", "urls": ["http://127.0.0.1:9/disk.img"],
        "checksum": "0123456789abcdef0123456789abcdef"});
    for name in ["standby.prepare_image", "standby.cache_image"] {
        let (status, body) = agent.run(name, json!({"image_info": md5_only}), true).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body["faultstring"]
            .as_str()
            .unwrap()
            .starts_with("Invalid command parameters: Image checksum is not available"));
    }
    // With md5 enabled by the lookup the same image_info passes validation (and
    // fails later, the image server being absent).
    agent.state.lookup.lock().unwrap().md5_enabled = true;
    let (status, body) = agent
        .run(
            "standby.prepare_image",
            json!({"image_info": md5_only}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["command_status"], "FAILED", "{body}");
    assert_ne!(
        body["command_error"]["type"], "InvalidCommandParamsError",
        "{body}"
    );
    agent.stop().await;
}

// ---------------------------------------------------------------- (9) the allow-list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_outside_the_allow_list_is_never_written() {
    let allowed = new_disk(DEV_LEN);
    let other = new_disk(DEV_LEN);
    fill(allowed.path(), 0x11, 0, 8 * MIB);
    fill(other.path(), 0x22, 0, 32 * MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(14);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&allowed]).await;
    let info = image_info("img-deny", &srv.url("/disk.img"), &image, json!("raw"));

    // A hint naming the other device: the step fails, nothing is fetched or written.
    let r = agent
        .write_image(other.path(), info.clone(), Value::Null)
        .await;
    let (_, details) = assert_failed(&r);
    // The error class: step_failures_keep_the_ipa_error_class.
    assert!(details.contains("No suitable device"), "{details}");
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": info}))
        .await;
    let (kind, _) = assert_failed(&r);
    assert_eq!(kind, "DeviceNotFound", "{r}");
    assert_eq!(r["command_error"]["code"], 404);
    assert_eq!(srv.count("/disk.img"), 0);
    assert!(other.read(0, 32 * MIB).iter().all(|&b| b == 0x22));
    assert!(allowed.read(0, 8 * MIB).iter().all(|&b| b == 0x11));
    assert_eq!(agent.partition_uuids().await, json!({}));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hint_chooses_among_allow_listed_devices() {
    let first = new_disk(DEV_LEN);
    let second = new_disk(DEV_LEN);
    fill(first.path(), 0x11, 0, 8 * MIB);
    fill(first.path(), 0x11, DEV_LEN - MIB, MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(26);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&first, &second]).await;
    let info = image_info("img-second", &srv.url("/disk.img"), &image, json!("raw"));
    let r = agent.write_image(second.path(), info, Value::Null).await;
    assert_step_succeeded(&r, "img-second", &second);
    assert_whole_disk_written(&second, &image, 0);
    assert!(first.read(0, 8 * MIB).iter().all(|&b| b == 0x11));
    assert!(first.read(DEV_LEN - MIB, MIB).iter().all(|&b| b == 0x11));
    assert_root_uuid(&agent, &second).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hints_a_large_disk_outside_the_allow_list_is_not_chosen() {
    let small = new_disk(DEV_LEN);
    let large = new_disk(5 << 30); // sparse; the only disk >= 4 GiB
    fill(small.path(), 0x11, 0, 8 * MIB);
    fill(large.path(), 0x22, 0, 8 * MIB);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(15);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&small]).await;
    let info = image_info("img-nohint", &srv.url("/disk.img"), &image, json!("raw"));
    let mut node = node(small.path());
    node["properties"] = json!({"cpu_arch": "x86_64"});
    agent
        .finish(
            "deploy.get_deploy_steps",
            json!({"node": node, "ports": []}),
        )
        .await;
    let r = agent
        .finish("standby.prepare_image", json!({"image_info": info}))
        .await;
    let (kind, _) = assert_failed(&r);
    assert_eq!(kind, "DeviceNotFound", "{r}");
    assert_eq!(srv.count("/disk.img"), 0);
    assert!(large.read(0, 8 * MIB).iter().all(|&b| b == 0x22));
    assert!(small.read(0, 8 * MIB).iter().all(|&b| b == 0x11));
    agent.stop().await;
}

// ---------------------------------------------------------------- (10) progress

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_message_shows_the_write_while_the_server_is_slow() {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(16);
    // The body pauses after 4 MiB for long enough that several heartbeats (every
    // 60..120 ms) go out during the write. The progress line is published when the
    // write starts and refreshed every 2 s after.
    let slow = Behaviour {
        stall: Some((4 * MIB, Duration::from_millis(600))),
        ..Behaviour::default()
    };
    let srv = serve("/disk.img", image.clone(), slow).await;
    let agent = start(&[&disk]).await;
    let conductor = FakeConductor::start().await;
    let heartbeats = start_heartbeats(&conductor, &agent.state).await;
    let node = node(disk.path());
    let versions = agent.deploy_steps(&node).await;
    assert!(agent.state.status_message.lock().unwrap().is_none());
    let info = image_info("img-slow", &srv.url("/disk.img"), &image, json!("raw"));
    let step = write_image_step(info, Value::Null);
    let (status, started) = agent
        .run(
            "deploy.execute_deploy_step",
            json!({"step": step, "node": node, "ports": [], "deploy_version": versions}),
            false,
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let prefix = format!("write_image to {}: ", disk.path_str());

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let msg = agent.state.status_message.lock().unwrap().clone();
        if let Some(m) = msg {
            if seen.last() != Some(&m) {
                seen.push(m);
            }
        }
        let r = agent.command(&id).await;
        if r["command_status"] != "RUNNING" {
            break r;
        }
        assert!(Instant::now() < deadline, "write did not finish: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_step_succeeded(&done, "img-slow", &disk);
    assert!(!seen.is_empty(), "no status message during the write");
    assert!(seen.iter().all(|m| m.starts_with(&prefix)), "{seen:?}");
    assert!(
        seen.iter().any(|m| m.contains("MiB written")),
        "progress shown: {seen:?}"
    );
    assert_eq!(*agent.state.status_message.lock().unwrap(), None);

    // The conductor saw the same lines in the heartbeats, and none once the write ended.
    let before_end = conductor.requests_to(Route::Heartbeat).len();
    let beats = conductor
        .wait_for(Route::Heartbeat, before_end + 2, Duration::from_secs(5))
        .await;
    let sent: Vec<Option<String>> = beats
        .iter()
        .map(|b| {
            b.body.as_ref().unwrap()["agent_status_message"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        sent.iter()
            .flatten()
            .any(|m| m.starts_with(&prefix) && m.contains("MiB written")),
        "{sent:?}"
    );
    assert!(
        sent.iter().flatten().all(|m| m.starts_with(&prefix)),
        "{sent:?}"
    );
    assert_eq!(sent.last(), Some(&None), "{sent:?}");
    agent.state.stop_serving.send_replace(true);
    tokio::time::timeout(Duration::from_secs(2), heartbeats)
        .await
        .unwrap()
        .unwrap();
    assert_whole_disk_written(&disk, &image, 0);
    agent.stop().await;
}

/// Heartbeats from `state` to `conductor` every 60..120 ms.
async fn start_heartbeats(
    conductor: &FakeConductor,
    state: &Arc<AgentState>,
) -> tokio::task::JoinHandle<()> {
    use rand::SeedableRng as _;
    state.lookup.lock().unwrap().heartbeat_timeout = 200;
    let client = IronicClient::new(&client_options(vec![conductor.url()])).unwrap();
    client.api_version().await;
    let beater = Heartbeater {
        client: Arc::new(client),
        state: state.clone(),
        node_uuid: NODE_UUID.into(),
        callback_url: "http://127.0.0.1:9999".into(),
        verify_ca: None,
        policy: HeartbeatPolicy {
            timeout_unit: Duration::from_millis(1),
            error_base: Duration::from_millis(20),
            min_gap: Duration::from_millis(50),
            wake_every: Duration::from_millis(20),
            ..HeartbeatPolicy::default()
        },
    };
    tokio::spawn(beater.run(rand::rngs::StdRng::seed_from_u64(7)))
}
