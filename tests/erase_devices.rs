//! The full erase steps on loop devices: `erase_devices` through the registry (so
//! `erase_block_device` is dispatched per disk as IPA does), `erase_devices_express`,
//! and `erase_pstore` on a fixture root. Each test names only its own devices in the
//! allow-list; contents are checked on the backing files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use common::blockio::write_at;
use common::cmd::spawn_with_stdin;
use common::fixtures::empty_inventory;
use common::loopdev::LoopDev;
use ira::blockdev::{open_for_write, AllowList};
use ira::erase::express_step::erase_devices_express;
use ira::erase::pstore::erase_pstore;
use ira::erase::{EraseError, EraseScope};
use ira::hardware::{GenericHardwareManager, Registry, StepError};
use ira_hw::{
    AgentHost, EraseCall, HardwareManager, HwError, HwResult, Inventory, ManagerVersion, StepKind,
    SupportLevel,
};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;

/// A pattern with no zero byte, different at every offset of a device.
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + u64::from(seed)) % 251).unwrap() + 1)
        .collect()
}

/// A loop device of [`SIZE`] bytes holding [`pattern`].
fn patterned(seed: u8) -> LoopDev {
    let l = LoopDev::new(SIZE);
    write_at(l.path(), 0, &pattern(SIZE, seed));
    l
}

fn contents(l: &LoopDev) -> Vec<u8> {
    std::fs::read(l.file()).unwrap()
}

fn all_zero(l: &LoopDev) -> bool {
    contents(l).iter().all(|&b| b == 0)
}

fn scope(devs: &[&LoopDev]) -> EraseScope {
    EraseScope {
        sysroot: PathBuf::from("/"),
        allow: AllowList::new(devs.iter().map(|l| l.path_str().to_owned()).collect()),
        guard_special_filesystems: true,
        ..EraseScope::disabled()
    }
}

/// The agent's services as a test sees them: the allow-list door and the status lines.
#[derive(Debug)]
struct TestHost {
    allow: AllowList,
    lines: Mutex<Vec<Option<String>>>,
}

impl TestHost {
    fn new(devs: &[&LoopDev]) -> Self {
        Self {
            allow: scope(devs).allow,
            lines: Mutex::new(Vec::new()),
        }
    }

    fn lines(&self) -> Vec<Option<String>> {
        self.lines.lock().unwrap().clone()
    }
}

impl AgentHost for TestHost {
    fn prepare_image(&self, _: &Value, _: Option<&Value>) -> HwResult<Value> {
        Err(HwError::Failed("no image writer in this test".into()))
    }

    fn with_instance_root(
        &self,
        _: Option<&str>,
        _: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()> {
        Err(HwError::Failed("no instance root in this test".into()))
    }

    fn set_status(&self, message: Option<&str>) {
        self.lines.lock().unwrap().push(message.map(str::to_owned));
    }

    fn open_block_device(&self, device: &str) -> HwResult<std::fs::File> {
        open_for_write(Path::new(device), &self.allow).map_err(|e| HwError::Failed(e.to_string()))
    }
}

fn generic(devs: &[&LoopDev]) -> Box<dyn HardwareManager> {
    Box::new(GenericHardwareManager::new(0).with_erase_scope(scope(devs)))
}

fn run_step(
    managers: Vec<Box<dyn HardwareManager>>,
    inventory: &Inventory,
    host: &TestHost,
    step: &str,
    node: &Value,
) -> Result<Value, StepError> {
    let registry = Registry::new(managers, inventory).unwrap();
    registry.execute_step_with(
        host,
        StepKind::Clean,
        &json!({"step": step, "interface": "deploy", "priority": 10, "args": {}}),
        node,
        &[],
        None,
        inventory,
    )
}

fn erase_devices(devs: &[&LoopDev], node: &Value) -> (Result<Value, StepError>, TestHost) {
    let host = TestHost::new(devs);
    let r = run_step(
        vec![generic(devs)],
        &empty_inventory(),
        &host,
        "erase_devices",
        node,
    );
    (r, host)
}

fn details(err: &StepError) -> String {
    err.to_command_error().details()
}

#[test]
fn two_disks_are_overwritten_zeroed_and_verified() {
    let (a, b) = (patterned(1), patterned(2));
    let (result, host) = erase_devices(&[&a, &b], &json!({}));
    let result = result.unwrap();
    assert!(all_zero(&a) && all_zero(&b));
    for l in [&a, &b] {
        let r = &result[l.path_str()];
        assert_eq!(r["device"], l.path_str());
        assert_eq!(r["method"], "overwrite", "{r}");
        // One random pass and the zero pass (IPA's defaults).
        assert_eq!(r["passes"], 2);
        assert_eq!(r["bytes"], 2 * SIZE);
        assert!(r["verified_samples"].as_u64().unwrap() > 0, "{r}");
        assert!(r.get("skipped").is_none());
        let why = r["fallback"].as_str().unwrap();
        assert!(why.starts_with("ATA security erase not supported"), "{why}");
    }
    assert_eq!(result.as_object().unwrap().len(), 2);
    // The heartbeat status named both disks and was cleared at the end.
    let lines = host.lines();
    assert_eq!(lines.last(), Some(&None));
    let last_line = lines.iter().rev().flatten().next().unwrap();
    assert!(last_line.starts_with("erase_devices: "), "{last_line}");
    assert!(
        last_line.contains(&format!("{} done", a.name())),
        "{last_line}"
    );
    assert!(
        last_line.contains(&format!("{} done", b.name())),
        "{last_line}"
    );
}

#[test]
fn a_plan_without_passes_is_not_an_erase() {
    let a = patterned(3);
    let node = json!({"driver_internal_info": {
        "agent_erase_devices_iterations": 0, "agent_erase_devices_zeroize": false}});
    let (result, _) = erase_devices(&[&a], &node);
    let err = result.unwrap_err();
    assert_eq!(err.to_command_error().ipa_type(), "BlockDeviceEraseError");
    let d = details(&err);
    assert!(
        d.contains(a.path_str()) && d.contains("no erase requested"),
        "{d}"
    );
    assert_eq!(contents(&a), pattern(SIZE, 3));

    // A zero pass alone is an erase.
    let node = json!({"driver_internal_info": {"agent_erase_devices_iterations": 0}});
    let (result, _) = erase_devices(&[&a], &node);
    let r = &result.unwrap()[a.path_str()];
    assert_eq!(
        (r["passes"].as_u64(), r["bytes"].as_u64()),
        (Some(1), Some(SIZE))
    );
    assert!(all_zero(&a));
}

#[test]
fn an_agent_told_to_stop_does_not_call_a_disk_erased() {
    let a = patterned(4);
    let abort = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let manager: Box<dyn HardwareManager> = Box::new(
        GenericHardwareManager::new(0)
            .with_erase_scope(scope(&[&a]))
            .with_abort(abort),
    );
    let host = TestHost::new(&[&a]);
    let err = run_step(
        vec![manager],
        &empty_inventory(),
        &host,
        "erase_devices",
        &json!({}),
    )
    .unwrap_err();
    assert_eq!(err.to_command_error().ipa_type(), "BlockDeviceEraseError");
    let d = details(&err);
    assert!(d.contains(a.path_str()) && d.contains("aborted"), "{d}");
}

/// A manager ahead of the generic one that only watches: every disk passes through it
/// (then "not mine"), and the first ones wait until `limit` are inside at once.
/// (inside, most inside at once, started), and its condition variable.
type Seen = Arc<(Mutex<(usize, usize, usize)>, Condvar)>;

#[derive(Debug)]
struct Watcher {
    limit: usize,
    total: usize,
    seen: Seen,
}

impl HardwareManager for Watcher {
    fn name(&self) -> &'static str {
        "Watcher"
    }

    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: "watcher".into(),
            version: "1".into(),
        }
    }

    fn evaluate_hardware_support(&self, _: &Inventory) -> SupportLevel {
        SupportLevel::MAINLINE
    }

    fn erase_block_device(&self, _call: &EraseCall<'_>) -> HwResult<Value> {
        let (lock, cv) = &*self.seen;
        let mut s = lock.lock().unwrap();
        s.0 += 1;
        s.1 = s.1.max(s.0);
        s.2 += 1;
        cv.notify_all();
        // Only a failing limit makes this wait run out.
        let (mut s, _) = cv
            .wait_timeout_while(s, Duration::from_secs(20), |s| {
                s.1 < self.limit && s.2 < self.total
            })
            .unwrap();
        s.0 -= 1;
        Err(HwError::NotMine)
    }
}

#[test]
fn no_more_disks_than_the_concurrency_are_erased_at_once() {
    let disks: Vec<LoopDev> = (0..3).map(|i| patterned(10 + i)).collect();
    let refs: Vec<&LoopDev> = disks.iter().collect();
    let seen = Arc::new((Mutex::new((0, 0, 0)), Condvar::new()));
    let watcher = Box::new(Watcher {
        limit: 2,
        total: 3,
        seen: Arc::clone(&seen),
    });
    let host = TestHost::new(&refs);
    let node = json!({"driver_internal_info": {"disk_erasure_concurrency": 2}});
    let result = run_step(
        vec![watcher, generic(&refs)],
        &empty_inventory(),
        &host,
        "erase_devices",
        &node,
    )
    .unwrap();
    let (inside, most_inside, started) = *seen.0.lock().unwrap();
    assert_eq!((inside, most_inside, started), (0, 2, 3));
    assert_eq!(result.as_object().unwrap().len(), 3);
    assert!(refs.iter().all(|l| all_zero(l)));
    // Every status line names every disk; never more than two run at once, and at some
    // point two did.
    let lines: Vec<String> = host.lines().into_iter().flatten().collect();
    let mut most = 0;
    for line in &lines {
        for l in &refs {
            assert!(line.contains(&l.name()), "{line}");
        }
        let running = line.split("; ").filter(|p| p.contains('%')).count();
        assert!(running <= 2, "{line}");
        most = most.max(running);
    }
    assert_eq!(most, 2, "{lines:?}");
}

#[test]
fn a_read_only_disk_fails_the_step_unless_skipping_is_allowed() {
    let rw = patterned(20);
    let ro = LoopDev::builder(SIZE).read_only(true).attach();
    let (result, _) = erase_devices(&[&rw, &ro], &json!({}));
    let err = result.unwrap_err();
    assert_eq!(err.to_command_error().ipa_type(), "BlockDeviceEraseError");
    let d = details(&err);
    assert!(
        d.starts_with(&format!(
            "Failed to erase the device(s): \"{}\": the device is flagged read-only",
            ro.path_str()
        )),
        "{d}"
    );
    // The other disk finished first, and the message says so.
    assert!(
        d.contains(&format!("{}: erased by overwrite", rw.path_str())),
        "{d}"
    );
    assert!(all_zero(&rw));

    let rw = patterned(21);
    let node = json!({"driver_internal_info": {"agent_erase_skip_read_only": true}});
    let (result, _) = erase_devices(&[&rw, &ro], &node);
    let result = result.unwrap();
    assert_eq!(result[ro.path_str()]["skipped"], "read-only device");
    assert_eq!(result[ro.path_str()]["method"], "none");
    assert_eq!(result[rw.path_str()]["method"], "overwrite");
    assert!(all_zero(&rw));
}

#[test]
fn a_vmfs_partition_stops_the_step_before_any_disk_is_written() {
    let vmfs = LoopDev::builder(32 * MIB).partscan(true).attach();
    let mut child = spawn_with_stdin(
        Command::new("sfdisk").args(["-q", vmfs.path_str()]),
        b"label: dos\n,8M,fb\n",
    );
    assert!(child.wait().unwrap().success());
    let _ = Command::new("partx").args(["-a", vmfs.path_str()]).output();
    let sys = format!("/sys/block/{0}/{0}p1", vmfs.name());
    assert!(Path::new(&sys).exists(), "{sys} missing");
    let mark = pattern(MIB, 7);
    write_at(vmfs.path(), 20 * MIB, &mark);
    let bystander = patterned(22);

    let (result, _) = erase_devices(&[&bystander, &vmfs], &json!({}));
    let err = result.unwrap_err();
    let d = details(&err);
    assert!(
        d.contains("Protected VMware VMFS Partition (MBR) located on device"),
        "{d}"
    );
    assert_eq!(contents(&bystander), pattern(SIZE, 22));
    let vmfs_bytes = contents(&vmfs);
    assert_eq!(&vmfs_bytes[20 << 20..21 << 20], &mark[..]);
    assert_eq!(vmfs_bytes[510..512], [0x55, 0xaa], "the MBR is intact");
}

#[test]
fn express_erase_discards_a_loop_device() {
    let l = patterned(30);
    let result = erase_devices_express(
        &scope(&[&l]),
        &json!({}),
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap();
    let r = &result[l.path_str()];
    assert_eq!(r["method"], "discard", "{r}");
    assert_eq!(r["bytes"], SIZE);
    assert!(r["verified_samples"].as_u64().unwrap() > 0);
    assert!(all_zero(&l));
}

#[test]
fn express_erase_reports_read_only_devices_as_skipped() {
    let ro = LoopDev::builder(SIZE).read_only(true).attach();
    let result = erase_devices_express(
        &scope(&[&ro]),
        &json!({}),
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(result[ro.path_str()]["skipped"], "read-only device");
}

#[test]
fn pstore_entries_are_deleted() {
    let root = tempfile::tempdir().unwrap();
    let s = EraseScope {
        sysroot: root.path().to_path_buf(),
        allow: AllowList::new(vec!["/dev/none".into()]),
        guard_special_filesystems: true,
        ..EraseScope::disabled()
    };
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    // Nothing mounted: nothing to do.
    std::fs::write(root.path().join("proc/mounts"), "proc /proc proc rw 0 0\n").unwrap();
    assert_eq!(erase_pstore(&s).unwrap(), 0);

    let dir = root.path().join("sys/fs/pstore");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("dmesg-efi-1"), "oops").unwrap();
    std::fs::write(dir.join("sub/x"), "y").unwrap();
    std::fs::write(
        root.path().join("proc/mounts"),
        "proc /proc proc rw 0 0\npstore /sys/fs/pstore pstore rw,nosuid 0 0\n",
    )
    .unwrap();
    assert_eq!(erase_pstore(&s).unwrap(), 2);
    assert!(dir.is_dir());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // A manager without the agent's configuration erases nothing.
    let err = erase_pstore(&EraseScope::default()).unwrap_err();
    assert!(matches!(err, EraseError::Pstore(_)), "{err:?}");
}

#[cfg(feature = "hwm-example")]
#[test]
fn a_vendor_manager_takes_over_its_own_disks() {
    use ira_hwm_example::{ExampleVendorManager, ERASE_METHOD};

    let (mine, other) = (patterned(40), patterned(41));
    let claimed = mine.path_str().to_owned();
    let vendor = ExampleVendorManager::new("Example Corp")
        .claim_erase(Arc::new(move |d: &ira_hw::BlockDevice| d.name == claimed));
    let mut inventory = empty_inventory();
    inventory.system_vendor.manufacturer = "Example Corp".into();
    let host = TestHost::new(&[&mine, &other]);
    let result = run_step(
        vec![generic(&[&mine, &other]), Box::new(vendor)],
        &inventory,
        &host,
        "erase_devices",
        &json!({}),
    )
    .unwrap();
    assert_eq!(result[mine.path_str()]["method"], ERASE_METHOD);
    assert_eq!(
        result[mine.path_str()]["manager"],
        "ExampleVendorHardwareManager"
    );
    assert_eq!(result[mine.path_str()]["verified_bytes"], SIZE);
    assert_eq!(result[other.path_str()]["method"], "overwrite");
    assert!(all_zero(&mine) && all_zero(&other));
}
