//! Partition-image deploys end to end on loop devices: `deploy::partition_image::write`
//! lays out the disk, writes the ESP, swap, config drive and ephemeral filesystem, and
//! streams the root image (raw or qcow2) from a server on 127.0.0.1 into its partition.
//! Results are checked with `sfdisk --json` and `blkid`, and by reading the bytes back.
//!
//! This kernel-independent rig stands in for udev: the test loop devices have no
//! partition scanning, so each partition node `/dev/loopNpK` is a symlink, under the
//! agent's sysroot, to a loop device over the disk at the partition's offset and size.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::cmd::{blkid_probe, run};
use common::fixtures::sha256_hex;
use common::loopdev::LoopDev;
use common::misbehaving_http::{Behaviour, MisbehavingServer};
use ira::config::Config;
use ira::deploy::partition_image;
use ira::deploy::PartitionUuids;
use ira::errors::CommandError;
use ira::hardware::Registry;
use ira::image::ImageInfo;
use ira::partition::configdrive::ConfigDriveImage;
use ira::state::AgentState;
use ira_hw::Inventory;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// [`MIB`] as a buffer length.
const MIB_LEN: usize = 1 << 20;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const SWAP_TYPE: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

fn inventory() -> Inventory {
    serde_json::from_value(json!({
        "interfaces": [],
        "cpu": {"model_name": "QEMU", "frequency": "2400.0000", "count": 2,
                "architecture": "x86_64", "flags": ["fpu"], "socket_count": 1},
        "disks": [],
        "memory": {"total": 4102262784u64, "physical_mb": 4096},
        "bmc_address": "0.0.0.0", "bmc_v6address": "::/0",
        "system_vendor": {"product_name": "Standard PC", "serial_number": "",
                          "manufacturer": "QEMU",
                          "firmware": {"vendor": "EDK II", "version": "1", "build_date": ""}},
        "boot": {"current_boot_mode": "bios", "pxe_interface": ""},
        "hostname": "agent-test"
    }))
    .unwrap()
}

/// A disk, stand-in partition nodes under a sysroot, and an agent allowed to write
/// exactly those devices.
struct Rig {
    // Declared before `disk`: the slices are detached before the disk they lie on.
    parts: Vec<LoopDev>,
    disk: LoopDev,
    _root: tempfile::TempDir,
    state: Arc<AgentState>,
}

impl Rig {
    /// `parts`: (start MiB, size MiB) of partitions 1, 2, ... as the layout should put them.
    fn new(disk_mib: u64, parts: &[(u64, u64)], node: Value) -> Self {
        let disk = LoopDev::new(disk_mib * MIB);
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        std::os::unix::fs::symlink(disk.path(), dev.join(disk.name())).unwrap();
        let mut loops = Vec::new();
        for (i, (start, size)) in parts.iter().enumerate() {
            let p = LoopDev::over(disk.path())
                .offset(start * MIB)
                .size_limit(size * MIB)
                .attach();
            std::os::unix::fs::symlink(p.path(), dev.join(format!("{}p{}", disk.name(), i + 1)))
                .unwrap();
            loops.push(p);
        }
        let mut allow = vec![disk.path().display().to_string()];
        allow.extend(loops.iter().map(|p| p.path_str().to_owned()));
        let config = Config {
            sysroot: root.path().to_path_buf(),
            device_allowlist: allow,
            image_download_connection_timeout: Duration::from_secs(5),
            image_download_connection_retries: 0,
            image_download_connection_retry_interval: Duration::from_millis(1),
            ..Config::default()
        };
        let state = Arc::new(AgentState::new(
            Arc::new(config),
            Arc::new(Registry::default()),
            inventory(),
        ));
        *state.node.lock().unwrap() = Some(node);
        Rig {
            disk,
            parts: loops,
            _root: root,
            state,
        }
    }

    fn dev(&self) -> &Path {
        self.disk.path()
    }

    /// `/dev/loopNpK` as the agent names it.
    fn part_name(&self, n: u32) -> String {
        format!("{}p{n}", self.dev().display())
    }

    /// The stand-in node of partition `n`, with its cache dropped so reads see the disk.
    fn part(&self, n: usize) -> &Path {
        let p = self.parts[n - 1].path();
        flush(p);
        p
    }

    async fn write(
        &self,
        info: &ImageInfo,
        drive: Option<ConfigDriveImage>,
    ) -> Result<PartitionUuids, CommandError> {
        partition_image::write(&self.state.deploy_env(), self.dev(), info, drive)
            .await
            .map_err(CommandError::from)
    }
}

/// Drops a block device's page cache (BLKFLSBUF), so a read sees what other nodes of
/// the same disk wrote.
fn flush(dev: &Path) {
    run("blockdev", &["--flushbufs", dev.to_str().unwrap()]);
}

fn read_at(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    flush(dev);
    common::blockio::read_at(dev, offset, len)
}

fn fill(dev: &Path, offset: u64, byte: u8, len: usize) {
    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.write_all_at(&vec![byte; len], offset).unwrap();
    f.sync_all().unwrap();
}

/// `blkid -p` tags of a device (empty when it finds nothing).
fn blkid(dev: &Path) -> BTreeMap<String, String> {
    flush(dev);
    blkid_probe(dev, 0, None).into_iter().collect()
}

fn sfdisk_json(dev: &Path) -> Value {
    flush(dev);
    common::cmd::sfdisk_json(dev)
}

/// An ext4 filesystem image of `mib` MiB with a file in it.
fn ext4_image(mib: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree/etc");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hostname"), b"instance\n").unwrap();
    let img = dir.path().join("root.img");
    File::create(&img).unwrap().set_len(mib * MIB).unwrap();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "img-rootfs",
            "-d",
            dir.path().join("tree").to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    std::fs::read(img).unwrap()
}

fn qcow2_of(raw: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (r, q) = (dir.path().join("r.img"), dir.path().join("q.qcow2"));
    File::create(&r).unwrap().write_all(raw).unwrap();
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            r.to_str().unwrap(),
            q.to_str().unwrap(),
        ],
    );
    std::fs::read(q).unwrap()
}

async fn serve(path: &str, data: &[u8]) -> MisbehavingServer {
    let s = MisbehavingServer::start(Behaviour::default()).await;
    s.add(path, data.to_vec());
    s
}

/// `image_info` for a partition image at `url`, checked against `digest_of`.
fn image_info(url: &str, format: &str, digest_of: &[u8], extra: Value) -> ImageInfo {
    let mut v = json!({"id": "part-img", "urls": [url], "disk_format": format,
        "container_format": "bare", "stream_raw_images": true,
        "os_hash_algo": "sha256", "os_hash_value": sha256_hex(digest_of),
        "image_type": "partition", "node_uuid": "n1", "root_mb": 16, "swap_mb": 0,
        "ephemeral_mb": 0, "ephemeral_format": null, "preserve_ephemeral": false});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    ImageInfo::from_value(&v, false).unwrap()
}

fn parts(t: &Value) -> Vec<(u64, u64, String)> {
    t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn mib_sectors(start: u64, size: u64) -> (u64, u64) {
    (start * 2048, size * 2048)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_gpt_layout_with_swap_config_drive_and_root() {
    // image_info asks for BIOS and msdos; IPA ignores both and follows the node.
    let node = json!({"properties": {"capabilities": "boot_mode:uefi,disk_label:msdos"}});
    let layout = [(1, 550), (551, 8), (559, 1), (560, 16)];
    let rig = Rig::new(580, &layout, node);
    let image = ext4_image(12);
    let iso = common::fixtures::config_drive_iso(br#"{"uuid": "n1"}"#, None);
    let srv = serve("/root.img", &image).await;
    let info = image_info(
        &srv.url("/root.img"),
        "raw",
        &image,
        json!({"swap_mb": 8, "deploy_boot_mode": "bios", "disk_label": "msdos"}),
    );
    let drive = ConfigDriveImage::from_bytes(iso.clone(), "n1").unwrap();
    let uuids = rig.write(&info, Some(drive)).await.expect("deploy");

    let t = sfdisk_json(rig.dev());
    assert_eq!(t["label"], "gpt");
    let p = parts(&t);
    let want: Vec<_> = layout
        .iter()
        .zip([ESP_TYPE, SWAP_TYPE, LINUX_TYPE, LINUX_TYPE])
        .map(|(&(s, n), ty)| {
            let (s, n) = mib_sectors(s, n);
            (s, n, ty.to_owned())
        })
        .collect();
    assert_eq!(p, want);

    let esp = blkid(rig.part(1));
    assert_eq!(esp["TYPE"], "vfat");
    assert_eq!(esp["LABEL"], "efi-part");
    let swap = blkid(rig.part(2));
    assert_eq!(
        (swap["TYPE"].as_str(), swap["LABEL"].as_str()),
        ("swap", "swap1")
    );
    let cd = blkid(rig.part(3));
    assert_eq!(
        (cd["TYPE"].as_str(), cd["LABEL"].as_str()),
        ("iso9660", "config-2")
    );
    assert_eq!(read_at(rig.part(3), 0, iso.len()), iso);
    let root = blkid(rig.part(4));
    assert_eq!(root["TYPE"], "ext4");
    assert_eq!(
        read_at(rig.dev(), 560 * MIB, image.len()),
        image,
        "the root partition holds the image byte for byte"
    );

    let PartitionUuids::Partition {
        root_uuid,
        efi_system_partition_uuid,
        partitions,
    } = &uuids
    else {
        panic!("{uuids:?}")
    };
    assert_eq!(root_uuid, &root["UUID"], "root uuid is the filesystem UUID");
    assert_eq!(
        efi_system_partition_uuid.as_deref(),
        Some(esp["UUID"].as_str())
    );
    assert_eq!(esp["UUID"].len(), 9, "vfat volume id XXXX-XXXX");
    let expect: BTreeMap<String, String> = [
        ("efi system partition", 1),
        ("swap", 2),
        ("configdrive", 3),
        ("root", 4),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), rig.part_name(n)))
    .collect();
    assert_eq!(partitions, &expect);
    let j = uuids.to_json();
    assert_eq!(j["efi system partition uuid"], esp["UUID"]);
    assert_eq!(j["partitions"]["root"], rig.part_name(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bios_msdos_layout_with_ephemeral_and_a_qcow2_root() {
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let layout = [(1, 8), (9, 16)];
    let rig = Rig::new(32, &layout, node);
    fill(rig.dev(), 0, 0xAA, 32 * MIB_LEN); // an old install
    let image = ext4_image(12);
    let qcow = qcow2_of(&image);
    let srv = serve("/root.qcow2", &qcow).await;
    let info = image_info(
        &srv.url("/root.qcow2"),
        "qcow2",
        &qcow,
        json!({"ephemeral_mb": 8, "ephemeral_format": "ext4"}),
    );
    let uuids = rig.write(&info, None).await.expect("deploy");

    let t = sfdisk_json(rig.dev());
    assert_eq!(t["label"], "dos");
    let p = parts(&t);
    assert_eq!(
        p,
        vec![
            (2048, 8 * 2048, "83".to_owned()),
            (9 * 2048, 16 * 2048, "83".to_owned())
        ]
    );
    let list = t["partitions"].as_array().unwrap();
    assert_eq!(list[1]["bootable"], true, "root carries the boot flag");
    assert!(list[0].get("bootable").is_none());

    let eph = blkid(rig.part(1));
    assert_eq!(
        (eph["TYPE"].as_str(), eph["LABEL"].as_str()),
        ("ext4", "ephemeral0")
    );
    let root = blkid(rig.part(2));
    assert_eq!(root["LABEL"], "img-rootfs");
    assert_eq!(read_at(rig.dev(), 9 * MIB, image.len()), image);
    assert_eq!(uuids.root_uuid(), root["UUID"]);
    assert_eq!(uuids.efi_system_partition_uuid(), None);
    assert!(uuids.to_json()["efi system partition uuid"].is_null());
    let j = uuids.to_json();
    let map = j["partitions"].as_object().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map["ephemeral"], rig.part_name(1));
    assert_eq!(map["root"], rig.part_name(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_small_root_or_missing_mkfs_leave_the_disk_untouched() {
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let rig = Rig::new(64, &[], node);
    fill(rig.dev(), 0, 0xAA, 64 * MIB_LEN);
    let untouched = |rig: &Rig| {
        let head = read_at(rig.dev(), 0, 2 * MIB_LEN);
        let tail = read_at(rig.dev(), 63 * MIB, MIB_LEN);
        head.iter().chain(tail.iter()).all(|&b| b == 0xAA)
    };

    let big = vec![0x5Au8; 24 * MIB_LEN];
    let srv = serve("/big.img", &big).await;
    let info = image_info(&srv.url("/big.img"), "raw", &big, json!({}));
    match rig.write(&info, None).await {
        Err(CommandError::InvalidCommandParams(m)) => assert_eq!(
            m,
            "Root partition is too small for requested image. Image virtual size: 24 MB, \
             Root size: 16 MB"
        ),
        other => panic!("{other:?}"),
    }
    assert!(untouched(&rig));

    // qcow2: the header's virtual size counts, not the (small) file.
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("sparse.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "64M"],
    );
    let qcow = std::fs::read(&q).unwrap();
    assert!(qcow.len() < MIB_LEN);
    srv.add("/sparse.qcow2", qcow.clone());
    let info = image_info(&srv.url("/sparse.qcow2"), "qcow2", &qcow, json!({}));
    match rig.write(&info, None).await {
        Err(CommandError::InvalidCommandParams(m)) => {
            assert!(
                m.ends_with("Image virtual size: 64 MB, Root size: 16 MB"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(untouched(&rig));

    // An ephemeral filesystem nobody can make is refused before anything is written.
    let small = ext4_image(4);
    srv.add("/small.img", small.clone());
    let info = image_info(
        &srv.url("/small.img"),
        "raw",
        &small,
        json!({"ephemeral_mb": 8, "ephemeral_format": "nosuchfs"}),
    );
    match rig.write(&info, None).await {
        Err(CommandError::Deployment(m)) => assert!(m.contains("mkfs.nosuchfs not found"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(untouched(&rig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_leaves_no_bootable_root() {
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let rig = Rig::new(32, &[(1, 16)], node);
    // A previous install's root filesystem where the new root goes.
    let old = ext4_image(8);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(rig.dev())
        .unwrap();
    f.write_all_at(&old, MIB).unwrap();
    f.sync_all().unwrap();
    assert_eq!(blkid(rig.part(1))["TYPE"], "ext4");

    let image = ext4_image(12);
    let srv = serve("/root.img", &image).await;
    let info = image_info(&srv.url("/root.img"), "raw", b"something else", json!({}));
    match rig.write(&info, None).await {
        Err(CommandError::ImageChecksum(m)) => assert!(m.contains("part-img"), "{m}"),
        other => panic!("{other:?}"),
    }
    let head = read_at(rig.dev(), MIB, MIB_LEN);
    assert!(
        head.iter().all(|&b| b == 0),
        "the root partition's first MiB is wiped"
    );
    assert!(
        !blkid(rig.part(1)).contains_key("TYPE"),
        "no filesystem is left on the root partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_stale_partition_nodes_stop_the_deploy() {
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let image = ext4_image(4);
    let srv = serve("/root.img", &image).await;
    let info = image_info(&srv.url("/root.img"), "raw", &image, json!({}));

    // The kernel kept an old partition 1 of another size.
    let rig = Rig::new(32, &[(1, 8)], node.clone());
    match rig.write(&info, None).await {
        Err(CommandError::Deployment(m)) => {
            assert!(m.contains("did not take the new partition table"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        srv.count("/root.img"),
        1,
        "only the size probe reached the server"
    );

    // No node at all (udev never created it).
    let rig = Rig::new(32, &[], node);
    match rig.write(&info, None).await {
        Err(CommandError::Deployment(m)) => {
            assert_eq!(m, format!("Root device '{}' not found", rig.part_name(1)))
        }
        other => panic!("{other:?}"),
    }
}

/// Reads through the disk's page cache as any later reader of the disk would.
fn read_cached(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    common::blockio::read_at(dev, offset, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_reads_of_the_disk_see_the_root_image() {
    // The root starts at 1 MiB, where the metadata wipe zeroed a block through the disk
    // node while the image went through the partition node. (The loop rig shares one
    // cache between the two nodes, so this checks the result, not the agent's drop of the
    // disk's cache, which matters where partitions have caches of their own.)
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let rig = Rig::new(32, &[(1, 16)], node);
    let image = ext4_image(12);
    let srv = serve("/root.img", &image).await;
    let info = image_info(&srv.url("/root.img"), "raw", &image, json!({}));
    rig.write(&info, None).await.expect("deploy");
    assert!(
        read_cached(rig.dev(), MIB, image.len()) == image,
        "the disk's cache shows the image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_ephemeral_keeps_the_table_and_the_ephemeral_filesystem() {
    let node = json!({"instance_info": {"deploy_boot_mode": "bios"}});
    let rig = Rig::new(32, &[(1, 8), (9, 16)], node);
    let first = ext4_image(12);
    let second = ext4_image(12);
    let srv = serve("/first.img", &first).await;
    srv.add("/second.img", second.clone());
    let eph = json!({"ephemeral_mb": 8, "ephemeral_format": "ext4"});
    let info = image_info(&srv.url("/first.img"), "raw", &first, eph);
    rig.write(&info, None).await.expect("first deploy");
    let eph_uuid = blkid(rig.part(1))["UUID"].clone();
    let table = sfdisk_json(rig.dev());

    // A rebuild: no mkfs for the ephemeral partition, so not even its tool is needed.
    let keep = json!({"ephemeral_mb": 8, "ephemeral_format": "nosuchfs",
                      "preserve_ephemeral": true});
    let info = image_info(&srv.url("/second.img"), "raw", &second, keep);
    let uuids = rig.write(&info, None).await.expect("rebuild");
    assert_eq!(blkid(rig.part(1))["UUID"], eph_uuid, "ephemeral kept");
    assert_eq!(sfdisk_json(rig.dev()), table, "table kept");
    assert_eq!(read_at(rig.dev(), 9 * MIB, second.len()), second);
    assert_eq!(uuids.root_uuid(), blkid(rig.part(2))["UUID"]);

    // A rebuild whose layout differs from the disk is refused before writing.
    let other = json!({"ephemeral_mb": 4, "preserve_ephemeral": true});
    let info = image_info(&srv.url("/first.img"), "raw", &first, other);
    match rig.write(&info, None).await {
        Err(CommandError::Deployment(m)) => {
            assert!(
                m.contains("preserve_ephemeral is set but partition 1"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(read_at(rig.dev(), 9 * MIB, second.len()), second);
}
