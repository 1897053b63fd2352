//! The instance root on real block devices: a loop device (with partition scanning, like
//! a disk) holding a GPT with three ext4 filesystems made by mkfs.ext4, one of them an
//! instance root with hostile links. Covers choosing and mounting the partition, the
//! allow-list, the generic `inject_files` step and the example vendor's
//! `example_write_files` step run through the registry with the agent's own
//! [`Host`]. Results are read back with debugfs (direct I/O, filesystem unmounted), not
//! with the code under test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::agent;
use common::cmd::run;
use common::loopdev::LoopDev;
use common::misbehaving_http::{Behaviour, MisbehavingServer};
use ira::commands::host::Host;
use ira::config::Config;
use ira::deploy::{PartitionUuids, Written};
use ira::hardware::StepError;
use ira::state::AgentState;
use ira_hw::{AgentHost, HwError, Inventory, StepKind, SystemVendor};

const MIB: u64 = 1 << 20;
const ROOT_UUID: &str = "3f1b6c1e-8a77-4d51-9c3e-1d2a5b6c7d8e";
const NODE_UUID: &str = "0d7c2a10-5e4b-4f3a-9b8c-7a6d5e4f3c2b";

// ---------------------------------------------------------------- tools

/// A fresh scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ira-instance-test-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Host-side files a hostile image points its links at; must never change.
struct Outside {
    dir: Scratch,
}

impl Outside {
    fn new() -> Self {
        let dir = Scratch::new("outside");
        std::fs::write(dir.0.join("victim"), b"original").unwrap();
        Self { dir }
    }

    fn victim(&self) -> PathBuf {
        self.dir.0.join("victim")
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read(self.victim()).unwrap(), b"original");
        let names: Vec<_> = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"], "something was created outside the root");
    }
}

/// A loop device with partition scanning over a sparse file: GPT with `boot` (8 MiB,
/// no etc), `data` (40 MiB, the largest, no etc) and `root` (24 MiB, etc and links).
struct Disk {
    dev: LoopDev,
}

impl Disk {
    fn new(outside: &Outside) -> Self {
        let builder = LoopDev::builder(80 * MIB).partscan(true);
        let file = builder.file().to_str().unwrap().to_owned();
        run(
            "sgdisk",
            &[
                "-n1:2048:+8M",
                "-c1:boot",
                "-n2:0:+40M",
                "-c2:data",
                "-n3:0:+24M",
                "-c3:root",
                &file,
            ],
        );
        let disk = Self {
            dev: builder.attach(),
        };
        // Kernels without a GPT parser leave the nodes to user space (partprobe and
        // partx add them with BLKPG).
        if !(1..=3).all(|n| disk.part(n).exists()) {
            run("partx", &["-a", disk.dev.path_str()]);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while !(1..=3).all(|n| disk.part(n).exists()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stage = Scratch::new("stage");
        let boot = stage.0.join("boot");
        std::fs::create_dir_all(boot.join("grub")).unwrap();
        std::fs::write(boot.join("marker"), b"boot").unwrap();
        let data = stage.0.join("data");
        std::fs::create_dir_all(data.join("srv")).unwrap();
        std::fs::write(data.join("marker"), b"data").unwrap();
        let root = stage.0.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("marker"), b"root").unwrap();
        std::fs::write(root.join("etc/hosts"), b"127.0.0.1 image\n").unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        // The hostile part: absolute and climbing links at files and directories of
        // the machine the agent runs on.
        let victim = outside.victim();
        let sym = |target: &Path, link: &str| {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap()
        };
        sym(&victim, "etc/victim");
        sym(
            &PathBuf::from(format!("../../../../../../..{}", victim.display())),
            "etc/victim-up",
        );
        sym(&outside.dir.0, "etc/outdir");
        sym(Path::new("/"), "escape");
        sym(Path::new("../../../../.."), "etc/up");
        let mkfs = |n: u32, label: &str, dir: &Path, extra: &[&str]| {
            let part = disk.part(n);
            let mut args = vec!["-q", "-F", "-L", label, "-d", dir.to_str().unwrap()];
            args.extend_from_slice(extra);
            args.push(part.to_str().unwrap());
            run("mkfs.ext4", &args);
        };
        mkfs(1, "boot", &boot, &[]);
        mkfs(2, "data", &data, &[]);
        mkfs(3, "root", &root, &["-U", ROOT_UUID]);
        disk
    }

    fn part(&self, n: u32) -> PathBuf {
        self.dev.part(n)
    }

    /// PARTUUID of partition `n`, as blkid reports it.
    fn partuuid(&self, n: u32) -> String {
        run(
            "blkid",
            &[
                "-p",
                "-s",
                "PART_ENTRY_UUID",
                "-o",
                "value",
                self.part(n).to_str().unwrap(),
            ],
        )
        .trim()
        .to_owned()
    }

    /// A file of partition `n` read with debugfs (direct I/O); `None` when absent.
    fn read(&self, n: u32, path: &str) -> Option<Vec<u8>> {
        let part = self.part(n);
        run("blockdev", &["--flushbufs", part.to_str().unwrap()]);
        let out = Command::new("debugfs")
            .args(["-D", "-R", &format!("cat {path}"), part.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not found") {
            return None;
        }
        assert!(out.status.success(), "debugfs: {err}");
        Some(out.stdout)
    }

    /// The inode type of `path` on partition `n` (`regular`, `directory`, `symlink`).
    fn kind(&self, n: u32, path: &str) -> String {
        let out = self.stat(n, path);
        let at = out
            .find("Type:")
            .unwrap_or_else(|| panic!("no type in {out}"));
        out[at + 5..].split_whitespace().next().unwrap().to_owned()
    }

    fn stat(&self, n: u32, path: &str) -> String {
        let part = self.part(n);
        run(
            "debugfs",
            &["-D", "-R", &format!("stat {path}"), part.to_str().unwrap()],
        )
    }

    /// Permission bits of `path` on partition `n` (debugfs `stat`).
    fn mode(&self, n: u32, path: &str) -> u32 {
        let out = self.stat(n, path);
        let at = out
            .find("Mode:")
            .unwrap_or_else(|| panic!("no mode in {out}"));
        let digits: String = out[at + 5..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        u32::from_str_radix(&digits, 8).unwrap() & 0o7777
    }
}

/// Agent state as after `write_image` of a whole-disk image onto `disk`, with the
/// device allow-list `allow`.
/// The test machine, made by a vendor no manager claims.
fn inventory() -> Inventory {
    Inventory {
        system_vendor: SystemVendor {
            manufacturer: "Example Corp".into(),
            ..SystemVendor::default()
        },
        ..common::fixtures::inventory("instance-test", "uefi")
    }
}

fn state(allow: &[&str], disk: &Disk) -> Arc<AgentState> {
    let config = Config {
        sysroot: PathBuf::from("/"),
        ..agent::allowlist_config(allow.iter().map(|s| s.to_string()).collect())
    };
    let state = agent::state(config, inventory());
    state.deploy.record(Written {
        image_id: "img".into(),
        device: disk.dev.path().to_path_buf(),
        uuids: PartitionUuids::WholeDisk {
            root_uuid: "0x1a2b3c4d".into(),
        },
    });
    state
}

fn allow_disk(disk: &Disk) -> String {
    disk.dev.path_str().to_owned()
}

/// Whether anything is mounted on `dir` right now.
fn mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(d))
}

/// The mount options of `dir` from mountinfo.
fn mount_options(dir: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(d))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_default()
        .to_owned()
}

/// Runs a step through the registry and the agent's Host, on a blocking thread as
/// the agent does.
async fn step(state: &Arc<AgentState>, node: Value, step: Value) -> Result<Value, StepError> {
    let host = Host::new(Arc::clone(state), tokio::runtime::Handle::current());
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let inv = st.inventory();
        st.managers
            .execute_step_with(&host, StepKind::Deploy, &step, &node, &[], None, &inv)
    })
    .await
    .unwrap()
}

/// Calls `with_instance_root` through the Host on a blocking thread; `f` gets the
/// mount point and returns a value.
async fn with_root<T: Send + 'static>(
    state: &Arc<AgentState>,
    partition: Option<&str>,
    f: impl Fn(&Path) -> T + Send + 'static,
) -> Result<(T, PathBuf), HwError> {
    let host = Host::new(Arc::clone(state), tokio::runtime::Handle::current());
    let partition = partition.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        host.with_instance_root(partition.as_deref(), &mut |dir| {
            out = Some((f(dir), dir.to_path_buf()));
            Ok(())
        })
        .map(|()| out.expect("closure ran"))
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------- mounting

#[tokio::test(flavor = "multi_thread")]
async fn search_mounts_the_partition_holding_etc_and_always_unmounts() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&[&allow_disk(&disk)], &disk);
    let ((marker, options), dir) = with_root(&st, None, |dir| {
        (
            std::fs::read(dir.join("marker")).unwrap(),
            mount_options(dir),
        )
    })
    .await
    .unwrap();
    // The data partition is larger but has no etc/: the root one is chosen.
    assert_eq!(marker, b"root");
    for opt in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(options.split(',').any(|o| o == opt), "{opt} in {options}");
    }
    assert!(!mounted(&dir), "still mounted");
    assert!(!dir.exists(), "mount point left behind");

    // A failing closure still unmounts, and its error is the step's.
    let host = Host::new(Arc::clone(&st), tokio::runtime::Handle::current());
    let (err, dir) = tokio::task::spawn_blocking(move || {
        let mut seen = PathBuf::new();
        let err = host
            .with_instance_root(None, &mut |dir| {
                seen = dir.to_path_buf();
                Err(HwError::Failed("closure failed".into()))
            })
            .unwrap_err();
        (err, seen)
    })
    .await
    .unwrap();
    assert_eq!(err.to_string(), "closure failed");
    assert!(!mounted(&dir) && !dir.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_partition_nodes_are_added_before_mounting() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    // As after writing an image on a kernel without a GPT parser: no partition nodes.
    run("partx", &["-d", disk.dev.path_str()]);
    assert!((1..=3).all(|n| !disk.part(n).exists()));
    let st = state(&[&allow_disk(&disk)], &disk);
    let (marker, _) = with_root(&st, None, |dir| std::fs::read(dir.join("marker")).unwrap())
        .await
        .unwrap();
    assert_eq!(marker, b"root");
    assert!(disk.part(3).exists());
    let (marker, _) = with_root(&st, Some("boot"), |dir| {
        std::fs::read(dir.join("marker")).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(marker, b"boot");
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_named_by_label_number_uuid_partuuid_or_path() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&[&allow_disk(&disk)], &disk);
    let p1 = disk.part(1).display().to_string();
    let cases = [
        ("boot".to_owned(), "boot"),
        ("2".to_owned(), "data"),
        (ROOT_UUID.to_uppercase(), "root"),
        (disk.partuuid(2), "data"),
        (p1, "boot"),
    ];
    for (spec, want) in cases {
        let (marker, _) = with_root(&st, Some(&spec), |dir| {
            std::fs::read(dir.join("marker")).unwrap()
        })
        .await
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(marker, want.as_bytes(), "{spec}");
    }
    // After a partition image the recorded root is used as is, without a search (here
    // it is the partition without etc/, which a search would skip).
    st.deploy.record(Written {
        image_id: "img".into(),
        device: disk.dev.path().to_path_buf(),
        uuids: PartitionUuids::Partition {
            root_uuid: "not-used-when-the-path-matches".into(),
            efi_system_partition_uuid: None,
            partitions: [("root".to_owned(), disk.part(1).display().to_string())]
                .into_iter()
                .collect(),
        },
    });
    let (marker, _) = with_root(&st, None, |dir| std::fs::read(dir.join("marker")).unwrap())
        .await
        .unwrap();
    assert_eq!(marker, b"boot");
    let err = with_root(&st, Some("no-such-label"), |_| ())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no partition no-such-label"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_outside_the_allow_list_are_neither_read_nor_mounted() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&["/dev/ira-test-no-such-disk"], &disk);
    let err = with_root(&st, None, |_| ()).await.unwrap_err();
    assert!(err.to_string().contains("allow-list"), "{err}");
    let named = disk.part(3).display().to_string();
    let err = with_root(&st, Some(&named), |_| ()).await.unwrap_err();
    assert!(err.to_string().contains("allow-list"), "{err}");
    // The partition alone may be listed instead of its disk.
    let st = state(&[&named], &disk);
    let (marker, _) = with_root(&st, Some(&named), |dir| {
        std::fs::read(dir.join("marker")).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(marker, b"root");
}

// ---------------------------------------------------------------- inject_files

#[tokio::test(flavor = "multi_thread")]
async fn inject_files_writes_modes_deletes_and_fetches_urls() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&[&allow_disk(&disk)], &disk);
    let server = MisbehavingServer::start(Behaviour::default()).await;
    server.add(&format!("/cfg/{NODE_UUID}"), b"per-node config\n".to_vec());
    let node = json!({"uuid": NODE_UUID, "properties": {"inject_files": [
        {"path": "/etc/from-properties", "content": "cHJvcGVydGllcw=="},
    ]}});
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let step_obj = json!({"step": "inject_files", "interface": "deploy", "priority": 0,
    "args": {"files": [
        {"path": "/etc/new/dir/secret", "content": b64("s3cret\n"), "mode": 0o600,
         "dirmode": 0o700},
        {"path": "/etc/hosts", "content": b64("10.0.0.1 injected\n")},
        {"path": "/etc/passwd", "deleted": true},
        {"path": "/etc/never-there", "deleted": true},
        {"path": "/etc/fetched", "content": server.url("/cfg/{node[uuid]}"),
         "mode": 0o640},
        {"path": "/grub/grub.cfg", "partition": "boot", "content": b64("set x=1\n")},
    ]}});
    let result = step(&st, node, step_obj).await.unwrap();
    assert_eq!(result, Value::Null);
    assert_eq!(disk.read(3, "/etc/from-properties").unwrap(), b"properties");
    assert_eq!(disk.read(3, "/etc/new/dir/secret").unwrap(), b"s3cret\n");
    assert_eq!(disk.mode(3, "/etc/new/dir/secret"), 0o600);
    assert_eq!(disk.mode(3, "/etc/new/dir"), 0o700);
    assert_eq!(disk.mode(3, "/etc/new"), 0o755);
    assert_eq!(disk.read(3, "/etc/hosts").unwrap(), b"10.0.0.1 injected\n");
    assert_eq!(disk.read(3, "/etc/passwd"), None);
    assert_eq!(disk.read(3, "/etc/fetched").unwrap(), b"per-node config\n");
    assert_eq!(disk.mode(3, "/etc/fetched"), 0o640);
    assert_eq!(server.count(&format!("/cfg/{NODE_UUID}")), 1);
    assert_eq!(disk.read(1, "/grub/grub.cfg").unwrap(), b"set x=1\n");
    // Nothing went to the partitions not asked for.
    assert_eq!(disk.read(2, "/etc/hosts"), None);
    outside.assert_untouched();
}

#[tokio::test(flavor = "multi_thread")]
async fn inject_files_escapes_fail_and_nothing_outside_changes() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&[&allow_disk(&disk)], &disk);
    let node = json!({"uuid": NODE_UUID, "properties": {}});
    let file = |path: &str| {
        json!({"step": "inject_files", "interface": "deploy", "priority": 0,
               "args": {"files": [{"path": path, "content": "cHduZWQ="}]}})
    };
    // `..` is refused before anything is mounted.
    let err = step(&st, node.clone(), file("/etc/../../../tmp/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::InvalidParams(_)), "{err:?}");
    // Links at host paths (absolute, climbing, at a directory) fail: inside the root
    // they name paths the image does not have.
    for path in ["/etc/victim", "/etc/victim-up", "/etc/outdir/planted"] {
        let err = step(&st, node.clone(), file(path)).await.unwrap_err();
        assert!(
            err.to_string().contains("Failed to process file"),
            "{path}: {err}"
        );
        outside.assert_untouched();
    }
    // A link to "/" or far up is the root itself: the write lands inside it.
    step(&st, node.clone(), file("/escape/etc/via-escape"))
        .await
        .unwrap();
    step(&st, node.clone(), file("/etc/up/etc/via-up"))
        .await
        .unwrap();
    assert_eq!(disk.read(3, "/etc/via-escape").unwrap(), b"pwned");
    assert_eq!(disk.read(3, "/etc/via-up").unwrap(), b"pwned");
    // The links themselves are still links (nothing was replaced by a file).
    for link in [
        "/etc/victim",
        "/etc/victim-up",
        "/etc/outdir",
        "/escape",
        "/etc/up",
    ] {
        assert_eq!(disk.kind(3, link), "symlink", "{link}");
    }
    outside.assert_untouched();
    assert!(!Path::new("/etc/via-escape").exists() && !Path::new("/etc/via-up").exists());
    // A path whose top directory the root lacks fails as IPA's lookup does.
    let err = step(&st, node, file("/nonexistent-top/x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no partition found with path nonexistent-top"),
        "{err}"
    );
}

// ---------------------------------------------------------------- vendor step

#[tokio::test(flavor = "multi_thread")]
async fn vendor_step_writes_files_through_the_host() {
    let outside = Outside::new();
    let disk = Disk::new(&outside);
    let st = state(&[&allow_disk(&disk)], &disk);
    let step_obj = json!({"step": "example_write_files", "interface": "deploy", "priority": 75,
    "args": {"files": [
        {"path": "/etc/vendor/tool.conf", "content": "level=3\n", "mode": 0o600},
        {"path": "/etc/motd", "content": "aGVsbG8K", "encoding": "base64"},
    ]}});
    let result = step(&st, json!({"uuid": NODE_UUID}), step_obj)
        .await
        .unwrap();
    assert_eq!(
        result,
        json!({"written": ["/etc/vendor/tool.conf", "/etc/motd"]})
    );
    assert_eq!(disk.read(3, "/etc/vendor/tool.conf").unwrap(), b"level=3\n");
    assert_eq!(disk.mode(3, "/etc/vendor/tool.conf"), 0o600);
    assert_eq!(disk.read(3, "/etc/motd").unwrap(), b"hello\n");

    let escape = json!({"step": "example_write_files", "interface": "deploy", "priority": 75,
        "args": {"files": [{"path": "/etc/outdir/planted", "content": "x"}]}});
    let err = step(&st, json!({"uuid": NODE_UUID}), escape)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("example_write_files"), "{err}");
    outside.assert_untouched();
}
