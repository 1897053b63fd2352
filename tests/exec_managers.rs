//! Executable hardware managers (protocol 1) with real `/bin/sh` scripts written to a
//! temp directory: describe and its failures, the step merge with the built-in managers,
//! the version check, step results and failures, time and output limits (the process
//! group is checked in /proc afterwards), progress into the status message, the
//! `IRA_*` environment, and the install device: refused outside the allow-list without
//! running the script, and on a loop device with the agent's own host, where the
//! script writes a whole-disk image and `get_partition_uuids` reports it.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::agent;
use common::fixtures::inventory;
use common::loopdev::LoopDev;
use ira::blockdev::{open_for_write, AllowList};
use ira::commands::host::Host;
use ira::hardware::exec::protocol::TlsSettings;
use ira::hardware::exec::run::{self, End, Event, RunSpec, Stream};
use ira::hardware::exec::{discover, ExecError, ExecManager, ExecOptions};
use ira::hardware::{all_managers, BuiltinOptions, Registry, StepError};
use ira_hw::{AgentHost, HardwareManager, HwError, HwResult, Inventory, StepKind, SupportLevel};

const NODE_UUID: &str = "6c1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";

// ---------------------------------------------------------------- tools

/// A managers directory with scripts in it.
struct Managers {
    dir: tempfile::TempDir,
}

impl Managers {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `#!/bin/sh` script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A manager answering `describe` with `desc` and running `step_body` for `step`.
    fn manager(&self, name: &str, desc: &Value, step_body: &str) -> PathBuf {
        self.script(
            name,
            &format!(
                "if [ \"$1\" = describe ]; then\n  cat >/dev/null\n  cat <<'IRA_EOF'\n{desc}\nIRA_EOF\n  exit 0\nfi\n{step_body}"
            ),
        )
    }

    fn options(&self) -> ExecOptions {
        ExecOptions {
            describe_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_millis(500),
            ..ExecOptions::new(self.dir.path())
        }
    }

    /// The registry of the built-in managers plus the executables found here.
    fn registry(&self, inv: &Inventory) -> Registry {
        self.registry_with(inv, self.options())
    }

    fn registry_with(&self, inv: &Inventory, options: ExecOptions) -> Registry {
        let managers = all_managers(&BuiltinOptions::default(), &options, inv);
        Registry::new(managers, inv).unwrap()
    }
}

fn inv() -> Inventory {
    inventory("exec-test", "uefi")
}

fn node() -> Value {
    json!({"uuid": NODE_UUID, "properties": {}, "instance_info": {}})
}

/// A description with one step of `kind` named `step`, merged with `extra` step keys.
fn desc(name: &str, version: &str, support: u32, kind: &str, step: &str, extra: Value) -> Value {
    let mut s = json!({"kind": kind, "step": step, "interface": "deploy", "priority": 0});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"protocol": 1, "name": name, "version": version, "support": support, "steps": [s]})
}

/// A host recording status messages and image records; the install device is a path
/// the test names, opened through the agent's real allow-list door.
#[derive(Debug, Default)]
struct TestHost {
    device: Option<String>,
    allow: Vec<String>,
    root: Option<PathBuf>,
    status: Mutex<Vec<Option<String>>>,
    written: Mutex<Vec<String>>,
}

impl AgentHost for TestHost {
    fn prepare_image(&self, _i: &Value, _c: Option<&Value>) -> HwResult<Value> {
        Err(HwError::Failed("no image writer here".into()))
    }

    fn with_instance_root(
        &self,
        _partition: Option<&str>,
        f: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()> {
        f(self
            .root
            .as_deref()
            .ok_or_else(|| HwError::Failed("no root".into()))?)
    }

    fn set_status(&self, message: Option<&str>) {
        self.status.lock().unwrap().push(message.map(str::to_owned));
    }

    fn install_device(&self) -> HwResult<String> {
        self.device
            .clone()
            .ok_or_else(|| HwError::Failed("no device".into()))
    }

    fn open_block_device(&self, device: &str) -> HwResult<File> {
        open_for_write(Path::new(device), &AllowList::new(self.allow.clone())).map_err(|e| {
            HwError::Service {
                class: "BlockDeviceError",
                details: e.to_string(),
            }
        })
    }

    fn image_written(&self, device: &str) -> HwResult<Value> {
        self.written.lock().unwrap().push(device.to_owned());
        Ok(json!({"root uuid": "0xfeedbeef"}))
    }
}

/// Runs `kind`/`step` with `args` through `reg` and `host`.
fn exec(
    reg: &Registry,
    host: &dyn AgentHost,
    kind: StepKind,
    step: &str,
    args: Value,
    version: Option<&Value>,
) -> Result<Value, StepError> {
    let step = json!({"step": step, "interface": "deploy", "priority": 0, "args": args});
    reg.execute_step_with(
        host,
        kind,
        &step,
        &node(),
        &[json!({"address": "52:54:00:12:34:56"})],
        version,
        &inv(),
    )
}

fn failure(e: &StepError) -> String {
    e.to_command_error().details()
}

/// Processes of group `pgid` that are still alive (zombies do not count).
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        if f[2].parse::<i32>() == Ok(pgid) && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// Asserts that no live process is left in group `pgid`. SIGKILL has been sent when the
/// step returns, but a process on another CPU may still be on its way out: allow it 2 s.
fn assert_group_gone(pgid: i32) {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let left = live_group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "still alive in group {pgid}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- describe

#[test]
fn describe_reads_the_inventory_and_declares_steps() {
    let m = Managers::new();
    let seen = m.path("seen.json");
    let answer = json!({"protocol": 1, "name": "example_installer", "version": "1.0",
        "support": 3, "future": {"ignored": true}, "steps": [
        {"kind": "deploy", "step": "write_image", "interface": "deploy", "priority": 0,
         "install_device": true, "writes_image": true, "timeout": 1800,
         "argsinfo": {"image_info": {"description": "the image", "required": true}}},
        {"kind": "clean", "step": "wipe_firmware", "interface": "deploy", "priority": 7,
         "abortable": true, "reboot_requested": true}]});
    let path = m.script(
        "installer",
        &format!(
            "[ \"$1\" = describe ] || exit 9\ncat > {}\necho '{answer}'",
            seen.display()
        ),
    );
    let mgr = ExecManager::describe(&path, &m.options(), &inv()).unwrap();
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(input["protocol"], 1);
    assert_eq!(input["inventory"], serde_json::to_value(inv()).unwrap());

    assert_eq!(mgr.name(), "example_installer");
    assert_eq!(mgr.version().name, "example_installer");
    assert_eq!(mgr.version().version, "1.0");
    assert_eq!(mgr.evaluate_hardware_support(&inv()), SupportLevel(3));
    let listed = |kind| serde_json::to_value(mgr.get_steps(kind, &node(), &[]).unwrap()).unwrap();
    assert_eq!(
        listed(StepKind::Deploy),
        json!([{"step": "write_image", "interface": "deploy", "priority": 0,
                "reboot_requested": false,
                "argsinfo": {"image_info": {"description": "the image", "required": true}}}])
    );
    assert_eq!(
        listed(StepKind::Clean),
        json!([{"step": "wipe_firmware", "interface": "deploy", "priority": 7,
                "reboot_requested": true, "abortable": true}])
    );
    assert_eq!(listed(StepKind::Service), json!([]));
}

#[test]
fn bad_describes_are_left_out_and_the_rest_registered() {
    let m = Managers::new();
    let good = desc("good", "1", 2, "deploy", "a", json!({}));
    m.manager("10-good", &good, "exit 0");
    m.script("20-badjson", "echo '{\"protocol\": 1, \"name\": '");
    m.script(
        "30-protocol",
        "echo '{\"protocol\": 2, \"name\": \"p\", \"version\": \"1\", \"support\": 2}'",
    );
    m.script("40-exit", "echo 'no firmware tool' >&2; exit 4");
    m.manager(
        "50-dup-builtin",
        &desc("GenericHardwareManager", "1", 3, "deploy", "b", json!({})),
        "",
    );
    m.manager(
        "60-dup-exec",
        &desc("good", "2", 3, "deploy", "c", json!({})),
        "",
    );
    m.manager(
        "70-nosupport",
        &desc("absent", "1", 0, "deploy", "d", json!({})),
        "",
    );
    m.script(
        "80-missing-key",
        "echo '{\"protocol\": 1, \"name\": \"k\", \"support\": 1}'",
    );
    m.manager(
        "90-second",
        &desc("second", "1", 1, "clean", "e", json!({})),
        "",
    );
    // Not managers at all: not executable, leftovers of package tools, hidden.
    std::fs::write(m.path("README"), "not a manager").unwrap();
    m.manager(
        "91-old.bak",
        &desc("bak", "1", 3, "deploy", "f", json!({})),
        "",
    );
    m.manager(
        "92-x.dpkg-new",
        &desc("dpkg", "1", 3, "deploy", "f", json!({})),
        "",
    );
    m.manager(
        ".hidden",
        &desc("hidden", "1", 3, "deploy", "f", json!({})),
        "",
    );

    let taken =
        ira::hardware::exec::names_of(&ira::hardware::builtin_managers(&BuiltinOptions::default()));
    let found = discover(&m.options(), &inv(), &taken);
    let names: Vec<_> = found.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["good", "second"]);

    let err = |name: &str| ExecManager::describe(&m.path(name), &m.options(), &inv()).unwrap_err();
    assert!(matches!(err("20-badjson"), ExecError::Describe(_)));
    assert_eq!(
        err("30-protocol").to_string(),
        "describe speaks protocol 2, this agent speaks protocol 1"
    );
    assert_eq!(
        err("40-exit").to_string(),
        "describe failed (exit 4): no firmware tool"
    );
    assert!(
        err("80-missing-key").to_string().contains("version"),
        "{}",
        err("80-missing-key")
    );

    // A missing directory is no managers, not an error.
    let none = ExecOptions::new(m.path("nonexistent"));
    assert!(discover(&none, &inv(), &taken).is_empty());
}

#[test]
fn a_hanging_describe_is_killed_at_its_limit() {
    let m = Managers::new();
    let pidfile = m.path("pid");
    let path = m.script(
        "slow",
        &format!("echo $$ > {}\nsleep 60 &\nwait", pidfile.display()),
    );
    let opts = ExecOptions {
        describe_timeout: Duration::from_secs(1),
        ..m.options()
    };
    let t = Instant::now();
    let e = ExecManager::describe(&path, &opts, &inv()).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.to_string(), "describe failed (timed out after 1 s)");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_group_gone(read_pid(&pidfile));
    // The agent goes on without it.
    assert!(discover(&opts, &inv(), &Default::default()).is_empty());
}

// ---------------------------------------------------------------- steps through the registry

#[test]
fn an_exec_manager_outranks_the_generic_write_image_and_lists_its_own_steps() {
    let m = Managers::new();
    let d = json!({"protocol": 1, "name": "example_installer", "version": "1.0", "support": 3,
        "steps": [
        {"kind": "deploy", "step": "write_image", "interface": "deploy", "priority": 0,
         "install_device": true, "writes_image": true},
        {"kind": "deploy", "step": "write_ignition", "interface": "deploy", "priority": 75}]});
    m.manager("installer", &d, "exit 0");
    let reg = m.registry(&inv());
    let steps = reg.get_steps(StepKind::Deploy, &node(), &[]).unwrap();
    let mine: Vec<&str> = steps["deploy_steps"]["example_installer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(mine, ["write_image", "write_ignition"]);
    let generic = steps["deploy_steps"]["GenericHardwareManager"]
        .as_array()
        .unwrap();
    assert!(
        generic.iter().all(|s| s["step"] != "write_image"),
        "{generic:?}"
    );
    assert!(generic.iter().any(|s| s["step"] == "inject_files"));
    assert_eq!(
        steps["hardware_manager_version"]["example_installer"],
        json!("1.0")
    );
    assert_eq!(
        steps["hardware_manager_version"]["generic_hardware_manager"],
        json!("1.2")
    );
    // Clean steps: it declared none, the generic ones stay.
    let clean = reg.get_steps(StepKind::Clean, &node(), &[]).unwrap();
    assert!(clean["clean_steps"].get("example_installer").is_none());
    assert!(clean["clean_steps"]["GenericHardwareManager"].is_array());
}

#[test]
fn a_version_mismatch_is_refused_without_running_the_step() {
    let m = Managers::new();
    let marker = m.path("ran");
    m.manager(
        "m",
        &desc("m", "2.0", 2, "deploy", "custom", json!({})),
        &format!("touch {}", marker.display()),
    );
    let reg = m.registry(&inv());
    let mut listed = reg.versions();
    listed.insert("m".into(), json!("1.0"));
    let e = exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "custom",
        json!({}),
        Some(&Value::Object(listed)),
    )
    .unwrap_err();
    assert!(e.is_version_mismatch(), "{e}");
    assert!(!marker.exists());
    // With the versions it lists, the step runs.
    let current = Value::Object(reg.versions());
    exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "custom",
        json!({}),
        Some(&current),
    )
    .unwrap();
    assert!(marker.exists());
}

#[test]
fn the_result_is_json_and_progress_reaches_the_status_message() {
    let m = Managers::new();
    m.manager(
        "m",
        &desc("m", "1", 2, "service", "firmware", json!({})),
        "cat >/dev/null\necho 'PROGRESS downloading firmware'\necho '{\"updated\":'\necho 'PROGRESS flashing 50%'\necho ' [\"bmc\", \"bios\"]}'\necho 'a note' >&2",
    );
    let reg = m.registry(&inv());
    let host = TestHost::default();
    let r = exec(&reg, &host, StepKind::Service, "firmware", json!({}), None).unwrap();
    assert_eq!(r, json!({"updated": ["bmc", "bios"]}));
    assert_eq!(
        *host.status.lock().unwrap(),
        [
            Some("downloading firmware".to_owned()),
            Some("flashing 50%".to_owned()),
            None
        ]
    );
    // Not declared as a clean step: not this manager's, and no one else's either.
    let e = exec(&reg, &host, StepKind::Clean, "firmware", json!({}), None).unwrap_err();
    assert!(matches!(e, StepError::MethodNotFound { .. }), "{e}");
}

#[test]
fn nothing_printed_is_null_and_text_is_an_invalid_result() {
    let m = Managers::new();
    m.manager(
        "m",
        &json!({"protocol": 1, "name": "m", "version": "1", "support": 2, "steps": [
            {"kind": "deploy", "step": "quiet", "interface": "deploy", "priority": 0},
            {"kind": "deploy", "step": "chatty", "interface": "deploy", "priority": 0}]}),
        "[ \"$IRA_STEP\" = chatty ] && echo 'all done'\nexit 0",
    );
    let reg = m.registry(&inv());
    let host = TestHost::default();
    assert_eq!(
        exec(&reg, &host, StepKind::Deploy, "quiet", json!({}), None).unwrap(),
        Value::Null
    );
    let e = exec(&reg, &host, StepKind::Deploy, "chatty", json!({}), None).unwrap_err();
    let msg = failure(&e);
    assert!(
        msg.starts_with("Error performing deploy step chatty: m: chatty returned invalid JSON: "),
        "{msg}"
    );
    assert_eq!(e.to_command_error().ipa_type(), "DeploymentError");
}

#[test]
fn a_failing_step_reports_its_own_message() {
    let m = Managers::new();
    m.manager(
        "m",
        &json!({"protocol": 1, "name": "example_installer", "version": "1", "support": 2, "steps": [
            {"kind": "deploy", "step": "json_error", "interface": "deploy", "priority": 0},
            {"kind": "clean", "step": "stderr_error", "interface": "deploy", "priority": 0}]}),
        "if [ \"$IRA_STEP\" = json_error ]; then echo 'working' >&2; echo '{\"error\": \"image checksum mismatch\"}'; exit 3; fi\n\
         echo 'first' >&2; echo 'disk /dev/sdz not found' >&2; echo '' >&2; exit 1",
    );
    let reg = m.registry(&inv());
    let host = TestHost::default();
    let e = exec(&reg, &host, StepKind::Deploy, "json_error", json!({}), None).unwrap_err();
    assert_eq!(
        failure(&e),
        "Error performing deploy step json_error: example_installer: json_error failed (exit 3): image checksum mismatch"
    );
    let e = exec(
        &reg,
        &host,
        StepKind::Clean,
        "stderr_error",
        json!({}),
        None,
    )
    .unwrap_err();
    assert_eq!(
        failure(&e),
        "Error performing clean step stderr_error: example_installer: stderr_error failed (exit 1): disk /dev/sdz not found"
    );
    assert_eq!(e.to_command_error().ipa_type(), "CleaningError");
}

#[test]
fn a_hanging_step_is_killed_with_its_group_at_the_limit() {
    let m = Managers::new();
    let pidfile = m.path("pid");
    m.manager(
        "m",
        &json!({"protocol": 1, "name": "m", "version": "1", "support": 2, "steps": [
            {"kind": "deploy", "step": "hang", "interface": "deploy", "priority": 0, "timeout": 1},
            {"kind": "deploy", "step": "stubborn", "interface": "deploy", "priority": 0, "timeout": 1}]}),
        &format!(
            "echo $$ > {}\n[ \"$IRA_STEP\" = stubborn ] && trap '' TERM\nsleep 1000 &\nsleep 1000 &\nwait",
            pidfile.display()
        ),
    );
    let reg = m.registry(&inv());
    let host = TestHost::default();

    let t = Instant::now();
    let e = exec(&reg, &host, StepKind::Deploy, "hang", json!({}), None).unwrap_err();
    let took = t.elapsed();
    assert_eq!(
        failure(&e),
        "Error performing deploy step hang: m: hang timed out after 1 s"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_group_gone(read_pid(&pidfile));

    // SIGTERM ignored by all of them: SIGKILL after the grace period (500 ms here).
    let t = Instant::now();
    let e = exec(&reg, &host, StepKind::Deploy, "stubborn", json!({}), None).unwrap_err();
    let took = t.elapsed();
    assert!(
        failure(&e).ends_with("stubborn timed out after 1 s"),
        "{}",
        failure(&e)
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_group_gone(read_pid(&pidfile));
}

#[test]
fn leftovers_of_a_finished_step_are_killed() {
    let m = Managers::new();
    let pidfile = m.path("pid");
    m.manager(
        "m",
        &desc("m", "1", 2, "deploy", "spawner", json!({})),
        &format!(
            "echo $$ > {}\nsleep 1000 >/dev/null 2>&1 &\necho '\"ok\"'",
            pidfile.display()
        ),
    );
    let reg = m.registry(&inv());
    let t = Instant::now();
    let r = exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "spawner",
        json!({}),
        None,
    )
    .unwrap();
    assert_eq!(r, json!("ok"));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_group_gone(read_pid(&pidfile));
}

#[test]
fn a_result_over_one_mib_fails_the_step() {
    let m = Managers::new();
    m.manager(
        "m",
        &desc("m", "1", 2, "deploy", "big", json!({})),
        "head -c 2000000 /dev/zero | tr '\\0' x\nsleep 1000",
    );
    let reg = m.registry(&inv());
    let t = Instant::now();
    let e = exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "big",
        json!({}),
        None,
    )
    .unwrap_err();
    assert_eq!(
        failure(&e),
        "Error performing deploy step big: m: big output exceeds 1 MiB on stdout"
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    // Printed in a hurry and gone with exit 0 before the runner looked: still too much.
    for _ in 0..3 {
        let (outcome, _) = run_script(
            &m,
            "head -c 1100000 /dev/zero | tr '\\0' x\nexit 0",
            Duration::from_secs(10),
        );
        assert_eq!(outcome.end, End::OutputTooLarge(Stream::Stdout));
        assert_eq!(outcome.stdout, "");
    }
}

/// Runs a script directly through the runner, collecting its events.
fn run_script(m: &Managers, body: &str, timeout: Duration) -> (run::Outcome, Vec<Event>) {
    let path = m.script("direct", body);
    let spec = RunSpec {
        program: &path,
        verb: "step",
        env: Vec::new(),
        stdin: b"{}".to_vec(),
        timeout,
        kill_grace: Duration::from_millis(500),
        abort: None,
        running: None,
    };
    let mut events = Vec::new();
    let outcome = run::run(&spec, &mut |e| events.push(e)).unwrap();
    (outcome, events)
}

#[test]
fn a_stderr_flood_is_drained_and_cut_in_the_log() {
    let m = Managers::new();
    // 3 MB of stderr before any result: a runner that stopped reading would hang here.
    let (outcome, events) = run_script(
        &m,
        "line=$(printf '%0999d' 0)\nyes \"$line\" | head -n 3000 >&2\necho 'the end' >&2\necho '{\"ok\": true}'",
        Duration::from_secs(20),
    );
    assert_eq!(outcome.end, End::Exited(0));
    assert_eq!(outcome.stdout.trim(), "{\"ok\": true}");
    assert_eq!(outcome.last_stderr.as_deref(), Some("the end"));
    let logged: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Stderr(l) => Some(l),
            _ => None,
        })
        .collect();
    let bytes: usize = logged.iter().map(|l| l.len() + 1).sum();
    assert!(
        (run::STDERR_LOG_CAP..run::STDERR_LOG_CAP + 1000).contains(&bytes),
        "{bytes}"
    );
    assert!(logged.iter().all(|l| l.len() == 999));
    let dropped = events
        .iter()
        .filter(|e| **e == Event::StderrDropped)
        .count();
    assert_eq!(dropped, 1);
    assert_eq!(events.last(), Some(&Event::StderrDropped));
}

#[test]
fn long_lines_are_cut_and_stderr_past_64_mib_kills_the_run() {
    let m = Managers::new();
    let (outcome, events) = run_script(
        &m,
        "head -c 10000 /dev/zero | tr '\\0' e >&2\necho >&2\nhead -c 10000 /dev/zero | tr '\\0' p | sed 's/^/PROGRESS /'\necho",
        Duration::from_secs(20),
    );
    assert_eq!(outcome.end, End::Exited(0));
    assert_eq!(events.len(), 2, "{}", events.len());
    for e in &events {
        match e {
            Event::Stderr(l) | Event::Progress(l) => assert_eq!(l.len(), run::LINE_CAP),
            other => panic!("{other:?}"),
        }
    }

    let t = Instant::now();
    let (outcome, _) = run_script(
        &m,
        "head -c 70000000 /dev/zero >&2\nsleep 1000",
        Duration::from_secs(30),
    );
    assert_eq!(outcome.end, End::OutputTooLarge(Stream::Stderr));
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_agent_stopping_ends_a_running_step() {
    let m = Managers::new();
    let path = m.script("direct", "sleep 1000");
    let abort = Arc::new(AtomicBool::new(false));
    let running = Arc::new(run::Running::default());
    // The agent's side: raise the flag while the step runs, then wait for it to end.
    let raise = {
        let (abort, running) = (abort.clone(), running.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while running.count() == 0 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(running.count(), 1, "the run is listed while it runs");
            abort.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(running.wait_idle(Duration::from_secs(3)), 0);
        })
    };
    let spec = RunSpec {
        program: &path,
        verb: "step",
        env: Vec::new(),
        stdin: Vec::new(),
        timeout: Duration::from_secs(60),
        kill_grace: Duration::from_millis(500),
        abort: Some(&abort),
        running: Some(&running),
    };
    let t = Instant::now();
    let outcome = run::run(&spec, &mut |_| {}).unwrap();
    raise.join().unwrap();
    assert_eq!(outcome.end, End::Stopped);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(running.count(), 0);
}

#[test]
fn the_step_sees_a_cleared_environment_its_args_and_one_document_on_stdin() {
    let m = Managers::new();
    let out = m.path("env.txt");
    m.manager(
        "m",
        &desc("m", "1", 2, "deploy", "show", json!({})),
        "env > \"$IRA_ARG_OUT\"\ncat > \"$IRA_ARG_OUT.stdin\"\npwd > \"$IRA_ARG_OUT.pwd\"",
    );
    let reg = m.registry(&inv());
    let args = json!({
        "out": out.display().to_string(),
        "image_info": {"urls": ["http://images/a.img", "http://mirror/a.img"],
                       "os_hash_value": "ab12", "stream_raw_images": true, "size": 7},
        "config-drive": {"meta_data": {"uuid": "x"}},
    });
    exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "show",
        args.clone(),
        None,
    )
    .unwrap();
    let env = std::fs::read_to_string(&out).unwrap();
    let has = |line: &str| env.lines().any(|l| l == line);
    for line in [
        "IRA_PROTOCOL=1",
        "IRA_STEP_KIND=deploy",
        "IRA_STEP=show",
        &format!("IRA_NODE_UUID={NODE_UUID}"),
        "IRA_ARG_IMAGE_INFO_URLS_0=http://images/a.img",
        "IRA_ARG_IMAGE_INFO_URLS_1=http://mirror/a.img",
        "IRA_ARG_IMAGE_INFO_OS_HASH_VALUE=ab12",
        "IRA_ARG_IMAGE_INFO_STREAM_RAW_IMAGES=true",
        "IRA_ARG_IMAGE_INFO_SIZE=7",
        "IRA_ARG_CONFIG_DRIVE_META_DATA_UUID=x",
    ] {
        assert!(has(line), "{line} missing from\n{env}");
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=")));
    for absent in [
        "IRA_INSTALL_DEVICE=",
        "IRA_INSTANCE_ROOT=",
        "IRA_INSECURE=",
        "IRA_CAFILE=",
        "CARGO",
        "HOME=",
        "RUST",
    ] {
        assert!(
            !env.lines().any(|l| l.starts_with(absent)),
            "{absent} in\n{env}"
        );
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(m.path("env.txt.stdin")).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"protocol": 1, "kind": "deploy", "step": "show", "args": args, "node": node(),
               "ports": [{"address": "52:54:00:12:34:56"}],
               "install_device": null, "instance_root": null,
               "tls": {"insecure": false, "cafile": null}})
    );
    assert_eq!(
        std::fs::read_to_string(m.path("env.txt.pwd")).unwrap(),
        "/\n"
    );
}

#[test]
fn the_step_gets_the_agents_tls_settings() {
    let m = Managers::new();
    let out = m.path("tls.txt");
    m.manager(
        "m",
        &desc("m", "1", 2, "deploy", "show", json!({})),
        "env > \"$IRA_ARG_OUT\"\ncat > \"$IRA_ARG_OUT.stdin\"",
    );
    let options = ExecOptions {
        tls: TlsSettings {
            insecure: true,
            cafile: Some(PathBuf::from("/etc/ira/ca.pem")),
        },
        ..m.options()
    };
    let reg = m.registry_with(&inv(), options);
    let args = json!({"out": out.display().to_string()});
    exec(
        &reg,
        &TestHost::default(),
        StepKind::Deploy,
        "show",
        args,
        None,
    )
    .unwrap();
    let env = std::fs::read_to_string(&out).unwrap();
    for line in ["IRA_INSECURE=1", "IRA_CAFILE=/etc/ira/ca.pem"] {
        assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(m.path("tls.txt.stdin")).unwrap()).unwrap();
    assert_eq!(
        doc["tls"],
        json!({"insecure": true, "cafile": "/etc/ira/ca.pem"})
    );
}

#[test]
fn the_instance_root_is_passed_when_asked() {
    let m = Managers::new();
    let root = tempfile::tempdir().unwrap();
    m.manager(
        "m",
        &desc("m", "1", 2, "deploy", "configure", json!({"instance_root": true})),
        "mkdir -p \"$IRA_INSTANCE_ROOT/etc\" && echo configured > \"$IRA_INSTANCE_ROOT/etc/motd\"\necho \"{\\\"root\\\": \\\"$IRA_INSTANCE_ROOT\\\"}\"",
    );
    let reg = m.registry(&inv());
    let host = TestHost {
        root: Some(root.path().to_path_buf()),
        ..TestHost::default()
    };
    let r = exec(&reg, &host, StepKind::Deploy, "configure", json!({}), None).unwrap();
    assert_eq!(r, json!({"root": root.path().display().to_string()}));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "configured\n"
    );
}

// ---------------------------------------------------------------- the install device

/// A manager whose `write_image` writes "INSTALLED" to the start of the device it is
/// given and leaves a marker.
fn installer(m: &Managers) -> PathBuf {
    let marker = m.path("ran");
    m.manager(
        "installer",
        &desc("example_installer", "1.0", 3, "deploy", "write_image",
            json!({"install_device": true, "writes_image": true})),
        &format!(
            "touch {}\nprintf INSTALLED | dd of=\"$IRA_INSTALL_DEVICE\" conv=notrunc status=none\necho '{{\"device\": \"'$IRA_INSTALL_DEVICE'\"}}'",
            marker.display()
        ),
    );
    marker
}

#[test]
fn an_install_device_outside_the_allow_list_is_refused_without_running() {
    let m = Managers::new();
    let marker = installer(&m);
    let disk = tempfile::NamedTempFile::new().unwrap();
    let reg = m.registry(&inv());
    let host = TestHost {
        device: Some(disk.path().display().to_string()),
        allow: vec!["/dev/ira-test-none".to_owned()],
        ..TestHost::default()
    };
    let e = exec(
        &reg,
        &host,
        StepKind::Deploy,
        "write_image",
        json!({}),
        None,
    )
    .unwrap_err();
    let ce = e.to_command_error();
    assert_eq!(ce.ipa_type(), "BlockDeviceError", "{e}");
    assert!(
        ce.details().contains("outside the device allow-list"),
        "{}",
        ce.details()
    );
    assert!(!marker.exists(), "the script ran");
    assert!(host.written.lock().unwrap().is_empty());
    assert_eq!(std::fs::read(disk.path()).unwrap(), b"");

    // The same device allowed: passed by path, written, recorded, result merged.
    let host = TestHost {
        allow: vec![disk.path().display().to_string()],
        ..host
    };
    let r = exec(
        &reg,
        &host,
        StepKind::Deploy,
        "write_image",
        json!({}),
        None,
    )
    .unwrap();
    let dev = disk.path().display().to_string();
    assert_eq!(r, json!({"device": dev, "root uuid": "0xfeedbeef"}));
    assert_eq!(*host.written.lock().unwrap(), [dev]);
    assert_eq!(std::fs::read(disk.path()).unwrap(), b"INSTALLED");
}

/// The agent's state with a node whose root device hint names `dev`, allowed `allow`.
fn loop_state(
    dev: &LoopDev,
    allow: &str,
    managers: Vec<Box<dyn HardwareManager>>,
) -> Arc<ira::state::AgentState> {
    let config = agent::allowlist_config(vec![allow.to_owned()]);
    let state = agent::state_with(config, managers, inv());
    *state.node.lock().unwrap() = Some(json!({
        "uuid": NODE_UUID,
        "properties": {"root_device": {"name": dev.path_str()}},
        "instance_info": {},
    }));
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_chooses_opens_and_refuses_the_install_device() {
    let disk = LoopDev::builder(64 << 20).attach();
    let state = loop_state(
        &disk,
        disk.path_str(),
        ira::hardware::builtin_managers(&BuiltinOptions::default()),
    );
    let host = Host::new(state, tokio::runtime::Handle::current());
    let dev = disk.path_str().to_owned();
    let h = host.clone();
    let (chosen, opened) = tokio::task::spawn_blocking(move || {
        let chosen = h.install_device().unwrap();
        let mut opened = h.open_install_device().unwrap();
        use std::io::{Seek, SeekFrom, Write};
        opened.file.seek(SeekFrom::Start(1 << 20)).unwrap();
        opened.file.write_all(b"through the door").unwrap();
        opened.file.sync_all().unwrap();
        (chosen, opened.path)
    })
    .await
    .unwrap();
    assert_eq!(chosen, dev);
    assert_eq!(opened, dev);
    assert_eq!(disk.read(1 << 20, 16), b"through the door");

    // The same node with the device outside the allow-list: no install device at all.
    let state = loop_state(
        &disk,
        "/dev/ira-test-none",
        ira::hardware::builtin_managers(&BuiltinOptions::default()),
    );
    let host = Host::new(state, tokio::runtime::Handle::current());
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            host.install_device().unwrap_err(),
            host.open_install_device().unwrap_err(),
        )
    })
    .await
    .unwrap();
    for e in [a, b] {
        assert!(
            matches!(
                e,
                HwError::Service {
                    class: "DeviceNotFound",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_installer_writes_the_loop_device_and_get_partition_uuids_follows() {
    use common::whole_disk::images::Scratch;
    use common::whole_disk::SIG;
    let disk = common::whole_disk::new_disk(common::whole_disk::DEV_LEN);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(7);
    let m = Managers::new();
    m.manager(
        "installer",
        &desc("example_installer", "1.0", 3, "deploy", "write_image",
            json!({"install_device": true, "writes_image": true})),
        "echo 'PROGRESS writing' \ndd if=\"$IRA_ARG_IMAGE\" of=\"$IRA_INSTALL_DEVICE\" bs=1M conv=fsync status=none || exit 5\necho '{\"written\": true}'",
    );
    let managers = all_managers(&BuiltinOptions::default(), &m.options(), &inv());
    let state = loop_state(&disk, disk.path_str(), managers);
    let host = Host::new(state.clone(), tokio::runtime::Handle::current());
    let st = state.clone();
    let args = json!({"image": scratch.path_str("disk.raw")});
    let r = tokio::task::spawn_blocking(move || {
        let inv = st.inventory();
        let step = json!({"step": "write_image", "args": args});
        st.managers
            .execute_step_with(&host, StepKind::Deploy, &step, &node(), &[], None, &inv)
    })
    .await
    .unwrap()
    .unwrap();
    let root_uuid = format!("0x{SIG:08x}");
    assert_eq!(r, json!({"written": true, "root uuid": root_uuid}));
    let written = state.deploy.written().unwrap();
    assert_eq!(written.device, disk.path());
    assert_eq!(written.uuids.to_json(), json!({"root uuid": root_uuid}));
    assert!(
        !written.holds(&"".into(), disk.path()),
        "a step's write is never a cache hit"
    );
    // The partitions' data is on the device (the first MiB holds the rewritten GPT).
    let mib = 1usize << 20;
    assert_eq!(disk.read(1 << 20, 4 << 20), image[mib..5 * mib]);
    assert!(state.status_message.lock().unwrap().is_none());
}

/// The README's short example manager, as printed there.
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split_once("A complete manager can be this short:")
        .expect("the README shows an example manager")
        .1;
    let block = after.split_once("```sh\n").unwrap().1;
    block.split_once("```").unwrap().0.to_owned()
}

#[test]
fn the_readme_example_manager_works_as_documented() {
    let m = Managers::new();
    let body = readme_example();
    let body = body.strip_prefix("#!/bin/sh\n").expect("a shell script");
    m.script("site-check", body);
    let found = discover(&m.options(), &inv(), &Default::default());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name(), "site_check");
    let disk = LoopDev::builder(64 << 20).attach();
    let reg = m.registry(&inv());
    let host = TestHost {
        device: Some(disk.path_str().to_owned()),
        allow: vec![disk.path_str().to_owned()],
        ..TestHost::default()
    };
    let e = exec(&reg, &host, StepKind::Deploy, "site_check", json!({}), None).unwrap_err();
    assert_eq!(
        failure(&e),
        "Error performing deploy step site_check: site_check: site_check failed (exit 2): install disk under 100 GB"
    );
    assert_eq!(
        *host.status.lock().unwrap(),
        [Some(format!("checking {}", disk.path_str())), None]
    );
}
