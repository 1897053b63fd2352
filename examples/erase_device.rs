//! Erases loop devices with ira's own erase steps, for `bench/erase.sh`.
//!
//! usage: erase_device (erase_devices|express|metadata) /dev/loopN... [--concurrency N]
//!        [--iterations N] [--no-zeroize] [--no-write-zeroes]
//!
//! `erase_devices`, `express` and `metadata` run the clean steps `erase_devices`,
//! `erase_devices_express` and `erase_devices_metadata` through the command registry and
//! the generic hardware manager, as the agent runs them for the conductor: the options
//! go in as `driver_internal_info` (`agent_erase_devices_iterations`,
//! `agent_erase_devices_zeroize`, `disk_erasure_concurrency`), `erase_block_device` is
//! dispatched per disk, and every erase is verified by read-back.
//!
//! `--no-write-zeroes` (with `erase_devices`) writes the zero pass as data instead of
//! asking the device for WRITE ZEROES: a loop device turns WRITE ZEROES into a cheap
//! `fallocate` on its backing file, so without this only the random pass is a real
//! write. It runs the overwrite the generic manager's decision tree ends in
//! (`erase::overwrite::overwrite_verified` with the policy's plan, on the device
//! opened through the allow-list door), one thread per disk up to `--concurrency`,
//! with the device's write-zeroes limit taken as 0.
//!
//! Only `/dev/loopN` devices backed by a regular file are accepted, and the erase scope's
//! allow-list names exactly the devices given. Prints one JSON line: mode, methods,
//! bytes, seconds (the whole step, in process), each overwrite pass with its seconds, and
//! peak RSS (VmHWM).

#[path = "support/report.rs"]
mod report;

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use ira::blockdev::{open_for_write, AllowList};
use ira::erase::caps::Caps;
use ira::erase::overwrite::overwrite_verified;
use ira::erase::policy::ErasePolicy;
use ira::erase::EraseScope;
use ira::hardware::{GenericHardwareManager, Registry};
use ira_hw::{AgentHost, HwError, HwResult, Inventory, StepKind};

const USAGE: &str = "usage: erase_device (erase_devices|express|metadata) /dev/loopN... \
    [--concurrency N] [--iterations N] [--no-zeroize] [--no-write-zeroes]";

fn main() -> ExitCode {
    let passes = Passes::default();
    let fmt = std::env::var_os("RUST_LOG").map(|_| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(tracing_subscriber::EnvFilter::from_default_env())
    });
    let subscriber = tracing_subscriber::registry()
        .with(passes.clone())
        .with(fmt);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    report::finish("erase_device: ", run(&passes))
}

struct Args {
    mode: String,
    devices: Vec<String>,
    concurrency: u64,
    iterations: u64,
    zeroize: bool,
    write_zeroes: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let mode = it.next().ok_or(USAGE)?.clone();
    if !["erase_devices", "express", "metadata"].contains(&mode.as_str()) {
        return Err(USAGE.to_owned());
    }
    let mut a = Args {
        mode,
        devices: Vec::new(),
        concurrency: 1,
        iterations: 1,
        zeroize: true,
        write_zeroes: true,
    };
    while let Some(arg) = it.next() {
        let mut num = || -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| USAGE.to_owned())
        };
        match arg.as_str() {
            "--concurrency" => a.concurrency = num()?,
            "--iterations" => a.iterations = num()?,
            "--no-zeroize" => a.zeroize = false,
            "--no-write-zeroes" => a.write_zeroes = false,
            dev if !dev.starts_with('-') => a.devices.push(dev.to_owned()),
            _ => return Err(USAGE.to_owned()),
        }
    }
    if a.devices.is_empty() || (!a.write_zeroes && a.mode != "erase_devices") {
        return Err(USAGE.to_owned());
    }
    Ok(a)
}

/// The backing file of `dev`, or why `dev` is not a file-backed loop device (the only
/// kind this example erases).
fn loop_backing(dev: &str) -> Result<PathBuf, String> {
    let name = dev
        .strip_prefix("/dev/loop")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("refusing {dev}: not /dev/loopN"))?;
    let meta = std::fs::metadata(dev).map_err(|e| format!("{dev}: {e}"))?;
    if !meta.file_type().is_block_device() {
        return Err(format!("refusing {dev}: not a block device"));
    }
    let attr = format!("/sys/block/loop{name}/loop/backing_file");
    let backing = std::fs::read_to_string(&attr)
        .map_err(|e| format!("refusing {dev}: no backing file ({attr}: {e})"))?;
    let backing = PathBuf::from(backing.trim_end());
    let file = std::fs::metadata(&backing)
        .map_err(|e| format!("refusing {dev}: backing {}: {e}", backing.display()))?;
    if !file.is_file() {
        return Err(format!(
            "refusing {dev}: backing {} is not a regular file",
            backing.display()
        ));
    }
    Ok(backing)
}

fn run(passes: &Passes) -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = parse(&args)?;
    for dev in &a.devices {
        loop_backing(dev)?;
    }
    let allow = AllowList::new(a.devices.clone());
    let scope = EraseScope {
        sysroot: PathBuf::from("/"),
        allow: allow.clone(),
        guard_special_filesystems: true,
        ..EraseScope::disabled()
    };
    let node = json!({"driver_internal_info": {
        "agent_erase_devices_iterations": a.iterations,
        "agent_erase_devices_zeroize": a.zeroize,
        "disk_erasure_concurrency": a.concurrency,
    }});
    let t0 = Instant::now();
    let (result, method) = if a.write_zeroes {
        let step = match a.mode.as_str() {
            "express" => "erase_devices_express",
            "metadata" => "erase_devices_metadata",
            _ => "erase_devices",
        };
        let r = registry_step(&scope, &allow, step, &node)?;
        (r, a.mode.clone())
    } else {
        let r = written_zeros(&a, &allow, &node)?;
        (r, "overwrite, zeros written".to_owned())
    };
    let seconds = t0.elapsed().as_secs_f64();
    let reports: Vec<&Value> = result
        .as_object()
        .map(|m| m.values().collect())
        .unwrap_or_default();
    if reports.len() != a.devices.len() {
        return Err(format!("expected a report per device, got {result}"));
    }
    let methods: Vec<&str> = reports
        .iter()
        .map(|r| {
            // erase_devices_metadata answers {"erased": "metadata"} per device.
            r["method"]
                .as_str()
                .or_else(|| r["erased"].as_str())
                .unwrap_or("?")
        })
        .collect();
    let bytes: u64 = reports.iter().filter_map(|r| r["bytes"].as_u64()).sum();
    let samples: u64 = reports
        .iter()
        .filter_map(|r| r["verified_samples"].as_u64())
        .sum();
    Ok(json!({
        "mode": method,
        "devices": a.devices.len(),
        "methods": methods,
        "bytes": bytes,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "passes": passes.take(),
        "verified_samples": samples,
        "maxrss_kib": report::peak_rss_kib(),
    })
    .to_string())
}

/// The agent's services as this example offers them: the allow-list door, no status.
#[derive(Debug)]
struct BenchHost {
    allow: AllowList,
}

impl AgentHost for BenchHost {
    fn prepare_image(&self, _: &Value, _: Option<&Value>) -> HwResult<Value> {
        Err(HwError::Failed("no image writer in this example".into()))
    }

    fn with_instance_root(
        &self,
        _: Option<&str>,
        _: &mut dyn FnMut(&Path) -> HwResult<()>,
    ) -> HwResult<()> {
        Err(HwError::Failed("no instance root in this example".into()))
    }

    fn set_status(&self, _: Option<&str>) {}

    fn open_block_device(&self, device: &str) -> HwResult<File> {
        open_for_write(Path::new(device), &self.allow).map_err(|e| HwError::Failed(e.to_string()))
    }
}

fn empty_inventory() -> Inventory {
    Inventory {
        interfaces: Vec::new(),
        cpu: ira_hw::Cpu::default(),
        disks: Vec::new(),
        memory: ira_hw::Memory::default(),
        bmc_address: None,
        bmc_v6address: None,
        system_vendor: ira_hw::SystemVendor::default(),
        boot: ira_hw::BootInfo::default(),
        hostname: String::new(),
        bmc_mac: None,
    }
}

/// Clean step `step` through the registry with only the generic manager, scoped to the
/// given devices.
fn registry_step(
    scope: &EraseScope,
    allow: &AllowList,
    step: &str,
    node: &Value,
) -> Result<Value, String> {
    let inventory = empty_inventory();
    let generic = GenericHardwareManager::new(0).with_erase_scope(scope.clone());
    let registry = Registry::new(vec![Box::new(generic)], &inventory).map_err(|e| e.to_string())?;
    let host = BenchHost {
        allow: allow.clone(),
    };
    registry
        .execute_step_with(
            &host,
            StepKind::Clean,
            &json!({"step": step, "interface": "deploy", "priority": 10, "args": {}}),
            node,
            &[],
            None,
            &inventory,
        )
        .map_err(|e| format!("{step} failed: {}", e.to_command_error().details()))
}

/// `--no-write-zeroes`: the overwrite `erase_block_device` ends in, with both passes
/// written, `concurrency` disks at a time.
fn written_zeros(a: &Args, allow: &AllowList, node: &Value) -> Result<Value, String> {
    let policy = ErasePolicy::from_node(node).map_err(|e| e.to_string())?;
    let plan = policy.overwrite_plan();
    let abort = AtomicBool::new(false);
    let queue = Mutex::new(a.devices.iter());
    let out = Mutex::new(serde_json::Map::new());
    let failed = Mutex::new(Vec::new());
    let workers = usize::try_from(a.concurrency.max(1))
        .unwrap_or(1)
        .min(a.devices.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                // The guard is dropped inside: the next worker may take a disk at once.
                let next = || queue.lock().ok().and_then(|mut q| q.next());
                while let Some(dev) = next() {
                    let erased = (|| -> Result<Value, String> {
                        let file =
                            open_for_write(Path::new(dev), allow).map_err(|e| e.to_string())?;
                        let size =
                            ira::sys::block::device_size(&file).map_err(|e| e.to_string())?;
                        let kname = dev.trim_start_matches("/dev/");
                        let mut caps =
                            Caps::probe(Path::new("/"), kname, &file).map_err(|e| e.to_string())?;
                        caps.write_zeroes_max_bytes = 0;
                        let r = overwrite_verified(&file, size, &plan, &caps, &abort, &mut |_| {})
                            .map_err(|e| e.to_string())?;
                        Ok(
                            ira::erase::report::DiskEraseReport::from_overwrite(dev, None, &r)
                                .to_json(),
                        )
                    })();
                    match erased {
                        Ok(v) => {
                            out.lock().expect("no panics").insert(dev.clone(), v);
                        }
                        Err(e) => failed
                            .lock()
                            .expect("no panics")
                            .push(format!("{dev}: {e}")),
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().expect("no panics");
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    Ok(Value::Object(out.into_inner().expect("no panics")))
}

/// The overwrite passes as the agent logs them ("overwrite pass done"): kind and
/// seconds, in the order they finished.
#[derive(Clone, Default)]
struct Passes(Arc<Mutex<Vec<Value>>>);

impl Passes {
    fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.0.lock().expect("no panics"))
    }
}

#[derive(Default)]
struct PassFields {
    message: String,
    kind: String,
    pass: u64,
    seconds: f64,
}

impl Visit for PassFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "kind" => self.kind = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "pass" {
            self.pass = value;
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "seconds" {
            self.seconds = value;
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Passes {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut f = PassFields::default();
        event.record(&mut f);
        if f.message == "overwrite pass done" {
            self.0.lock().expect("no panics").push(json!({
                "pass": f.pass,
                "kind": f.kind,
                "seconds": (f.seconds * 1000.0).round() / 1000.0,
            }));
        }
    }
}
