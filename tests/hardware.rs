//! Hardware-manager registry: selection and order by support level, dispatch rules,
//! step merging, the generic step tables (spec hardware-and-disks.md 4.6), version
//! checks, step execution errors and the example vendor manager in the full registry.

mod common;

use std::sync::{Arc, Mutex};

use common::fixtures::{block_device, empty_inventory};
use ira::hardware::{
    deduplicate_steps, BuiltinOptions, Candidate, DispatchError, GenericHardwareManager, Registry,
    StepError,
};
use ira_hw::{
    BlockDevice, Firmware, HardwareManager, HwError, HwResult, Inventory, ManagerVersion, Step,
    StepCall, StepKind, SupportLevel, SystemVendor,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------- fixtures

fn inventory(manufacturer: &str) -> Inventory {
    Inventory {
        system_vendor: SystemVendor {
            product_name: "Box 9000".to_owned(),
            serial_number: "SN1".to_owned(),
            manufacturer: manufacturer.to_owned(),
            firmware: Firmware {
                vendor: "Example BIOS Inc".to_owned(),
                version: "2.4.1".to_owned(),
                build_date: "03/15/2024".to_owned(),
            },
        },
        hostname: "node-1".to_owned(),
        ..empty_inventory()
    }
}

/// A machine no compiled-in vendor manager claims.
fn plain() -> Inventory {
    inventory("Other Inc")
}

/// What a fake manager answers to `execute_step`.
#[derive(Debug, Clone)]
enum Answer {
    NotMine,
    Value(Value),
    Configuration,
    Invalid,
    Fail,
    /// Returns what it was called with.
    Echo,
}

type CallLog = Arc<Mutex<Vec<&'static str>>>;

/// A scripted manager that records every `execute_step` call in a shared log.
#[derive(Debug)]
struct Fake {
    name: &'static str,
    support: SupportLevel,
    version: &'static str,
    /// `None`: `get_steps` answers NotMine.
    steps: Option<Vec<Step>>,
    answer: Answer,
    /// Device names this manager hides.
    hides: Vec<&'static str>,
    log: CallLog,
}

impl Fake {
    fn new(name: &'static str, support: u32, log: &CallLog) -> Self {
        Self {
            name,
            support: SupportLevel(support),
            version: "1.0",
            steps: None,
            answer: Answer::NotMine,
            hides: Vec::new(),
            log: Arc::clone(log),
        }
    }
    fn answer(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }
    fn steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = Some(steps);
        self
    }
    fn hides(mut self, name: &'static str) -> Self {
        self.hides.push(name);
        self
    }
    fn boxed(self) -> Box<dyn HardwareManager> {
        Box::new(self)
    }
}

impl HardwareManager for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: self.name.to_lowercase(),
            version: self.version.to_owned(),
        }
    }
    fn evaluate_hardware_support(&self, _inventory: &Inventory) -> SupportLevel {
        self.support
    }
    fn get_steps(&self, _kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        self.steps.clone().ok_or(HwError::NotMine)
    }
    fn execute_step(&self, call: &StepCall<'_>) -> HwResult<Value> {
        self.log.lock().unwrap().push(self.name);
        match &self.answer {
            Answer::NotMine => Err(HwError::NotMine),
            Answer::Value(v) => Ok(v.clone()),
            Answer::Configuration => Err(HwError::Configuration("bad vendor config".into())),
            Answer::Invalid => Err(HwError::InvalidParams("bad argument x".into())),
            Answer::Fail => Err(HwError::Failed("disk on fire".into())),
            Answer::Echo => Ok(json!({
                "kind": call.kind.as_str(),
                "step": call.step,
                "args": call.args,
                "node": call.node,
                "ports": call.ports,
                "manufacturer": call.inventory.system_vendor.manufacturer,
            })),
        }
    }
    fn filter_device(&self, mut device: BlockDevice) -> Option<BlockDevice> {
        if self.hides.contains(&device.name.as_str()) {
            return None;
        }
        // Leave a trace so the test sees which managers a device went through.
        let seen = device.model.take().unwrap_or_default();
        device.model = Some(format!("{seen}{};", self.name));
        Some(device)
    }
}

fn log() -> CallLog {
    Arc::new(Mutex::new(Vec::new()))
}

fn names(registry: &Registry) -> Vec<&'static str> {
    registry.managers().map(|(m, _)| m.name()).collect()
}

fn run(registry: &Registry, step: &str) -> Result<Value, DispatchError> {
    let inv = plain();
    let args = Map::new();
    registry.dispatch(step, |m| {
        m.execute_step(&StepCall {
            kind: StepKind::Clean,
            step,
            node: &Value::Null,
            ports: &[],
            args: &args,
            inventory: &inv,
            host: &ira_hw::NoHost,
        })
    })
}

fn step_obj(name: &str) -> Value {
    json!({"step": name, "interface": "deploy", "priority": 0, "args": {}})
}

fn execute(registry: &Registry, kind: StepKind, step: &Value) -> Result<Value, StepError> {
    registry.execute_step(kind, step, &json!({}), &[], None, &plain())
}

// ---------------------------------------------------------------- selection

#[test]
fn managers_are_ordered_by_support_descending_and_stable() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Generic", 1, &l).boxed(),
            Fake::new("VendorA", 2, &l).boxed(),
            Fake::new("Provider", 3, &l).boxed(),
            Fake::new("VendorB", 2, &l).boxed(),
        ],
        &plain(),
    )
    .unwrap();
    assert_eq!(
        names(&registry),
        ["Provider", "VendorA", "VendorB", "Generic"]
    );
    let levels: Vec<u32> = registry.managers().map(|(_, s)| s.0).collect();
    assert_eq!(levels, [3, 2, 2, 1]);
}

#[test]
fn managers_at_support_none_are_dropped() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Absent", 0, &l).boxed(),
            Fake::new("Generic", 1, &l).boxed(),
        ],
        &plain(),
    )
    .unwrap();
    assert_eq!(names(&registry), ["Generic"]);
    assert_eq!(registry.len(), 1);
}

#[test]
fn no_supporting_manager_is_an_error() {
    let l = log();
    let err = Registry::new(vec![Fake::new("Absent", 0, &l).boxed()], &plain()).unwrap_err();
    assert!(matches!(err, DispatchError::NoManager));
    assert_eq!(err.to_command_error().ipa_type(), "HardwareManagerNotFound");
    assert_eq!(
        err.to_command_error().message(),
        "No valid HardwareManager found"
    );
    assert!(matches!(
        Registry::new(Vec::new(), &plain()),
        Err(DispatchError::NoManager)
    ));
}

#[test]
fn empty_default_registry_refuses_to_dispatch() {
    let registry = Registry::default();
    assert!(registry.is_empty());
    assert!(matches!(run(&registry, "x"), Err(DispatchError::NoManager)));
    assert!(matches!(
        registry.get_steps(StepKind::Clean, &Value::Null, &[]),
        Err(DispatchError::NoManager)
    ));
}

#[test]
fn builtin_registry_on_plain_hardware_is_generic_only() {
    let registry = Registry::with_builtin(&plain());
    assert_eq!(names(&registry), ["GenericHardwareManager"]);
    assert!(!registry.is_empty());
}

// ---------------------------------------------------------------- dispatch

#[test]
fn first_manager_not_declining_wins() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Low", 1, &l)
                .answer(Answer::Value(json!("low")))
                .boxed(),
            Fake::new("High", 3, &l).boxed(),
            Fake::new("Mid", 2, &l)
                .answer(Answer::Value(json!("mid")))
                .boxed(),
        ],
        &plain(),
    )
    .unwrap();
    assert_eq!(run(&registry, "s").unwrap(), json!("mid"));
    // High declined, Mid answered, Low was never asked.
    assert_eq!(*l.lock().unwrap(), ["High", "Mid"]);
}

#[test]
fn configuration_error_aborts_dispatch() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Vendor", 2, &l)
                .answer(Answer::Configuration)
                .boxed(),
            Fake::new("Generic", 1, &l)
                .answer(Answer::Value(json!(1)))
                .boxed(),
        ],
        &plain(),
    )
    .unwrap();
    let err = run(&registry, "s").unwrap_err();
    assert!(
        matches!(&err, DispatchError::Configuration { manager: "Vendor", message } if message == "bad vendor config"),
        "{err:?}"
    );
    assert_eq!(
        err.to_command_error().ipa_type(),
        "HardwareManagerConfigurationError"
    );
    assert_eq!(*l.lock().unwrap(), ["Vendor"]);
}

#[test]
fn failure_of_the_first_handler_is_returned_not_skipped() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Vendor", 2, &l).answer(Answer::Fail).boxed(),
            Fake::new("Generic", 1, &l)
                .answer(Answer::Value(json!(1)))
                .boxed(),
        ],
        &plain(),
    )
    .unwrap();
    let err = run(&registry, "s").unwrap_err();
    assert!(matches!(
        err,
        DispatchError::Failed {
            manager: "Vendor",
            ..
        }
    ));
    assert_eq!(err.to_command_error().ipa_type(), "CommandExecutionError");
    assert_eq!(*l.lock().unwrap(), ["Vendor"]);
}

#[test]
fn all_declining_is_method_not_found_with_ipa_text() {
    let l = log();
    let registry = Registry::new(
        vec![Fake::new("A", 2, &l).boxed(), Fake::new("B", 1, &l).boxed()],
        &plain(),
    )
    .unwrap();
    let err = run(&registry, "frobnicate").unwrap_err();
    assert!(matches!(&err, DispatchError::MethodNotFound { method } if method == "frobnicate"));
    assert_eq!(
        err.to_command_error().ipa_type(),
        "HardwareManagerMethodNotFound"
    );
    assert_eq!(err.to_command_error().code(), 500);
    assert_eq!(
        err.to_command_error().message(),
        "No HardwareManager found to handle method"
    );
    assert_eq!(
        err.to_command_error().details(),
        "Could not find method: frobnicate"
    );
    assert_eq!(*l.lock().unwrap(), ["A", "B"]);
}

#[test]
fn dispatch_all_collects_answers_and_skips_decliners() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("A", 2, &l)
                .answer(Answer::Value(json!("a")))
                .boxed(),
            Fake::new("B", 2, &l).boxed(),
            Fake::new("C", 1, &l)
                .answer(Answer::Value(json!("c")))
                .boxed(),
        ],
        &plain(),
    )
    .unwrap();
    let inv = plain();
    let args = Map::new();
    let all = registry
        .dispatch_all("s", |m| {
            m.execute_step(&StepCall {
                kind: StepKind::Clean,
                step: "s",
                node: &Value::Null,
                ports: &[],
                args: &args,
                inventory: &inv,
                host: &ira_hw::NoHost,
            })
        })
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["A"], json!("a"));
    assert_eq!(all["C"], json!("c"));
    assert_eq!(*l.lock().unwrap(), ["A", "B", "C"]);

    let none = registry.dispatch_all("nothing", |_| -> HwResult<()> { Err(HwError::NotMine) });
    assert!(matches!(none, Err(DispatchError::MethodNotFound { method }) if method == "nothing"));

    let failing = registry.dispatch_all("boom", |m| {
        if m.name() == "B" {
            Err(HwError::Failed("x".into()))
        } else {
            Ok(())
        }
    });
    assert!(matches!(
        failing,
        Err(DispatchError::Failed { manager: "B", .. })
    ));
}

#[test]
fn filter_devices_passes_every_manager_and_drops_hidden() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Low", 1, &l).boxed(),
            Fake::new("High", 2, &l).hides("/dev/sdb").boxed(),
        ],
        &plain(),
    )
    .unwrap();
    let out = registry.filter_devices(vec![
        block_device("/dev/sda", 1 << 30),
        block_device("/dev/sdb", 1 << 30),
        block_device("/dev/sdc", 1 << 30),
    ]);
    let listed: Vec<(&str, &str)> = out
        .iter()
        .map(|d| (d.name.as_str(), d.model.as_deref().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [("/dev/sda", "High;Low;"), ("/dev/sdc", "High;Low;")]
    );
}

// ---------------------------------------------------------------- step merge

fn s(name: &str, priority: i64) -> Step {
    Step::new(name, "deploy", priority)
}

fn cand(manager: &str, support: u32, steps: Vec<Step>) -> Candidate {
    Candidate {
        manager: manager.to_owned(),
        support: SupportLevel(support),
        steps,
    }
}

#[test]
fn dedup_support_beats_priority() {
    let merged = deduplicate_steps(&[
        cand("AAA", 1, vec![s("x", 99)]),
        cand("ZZZ", 2, vec![s("x", 1)]),
    ]);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged["ZZZ"], [s("x", 1)]);
}

#[test]
fn dedup_priority_beats_name() {
    let merged = deduplicate_steps(&[
        cand("AAA", 2, vec![s("x", 1)]),
        cand("ZZZ", 2, vec![s("x", 7)]),
    ]);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged["ZZZ"], [s("x", 7)]);
}

#[test]
fn dedup_name_breaks_remaining_ties() {
    let merged = deduplicate_steps(&[
        cand("Zeta", 2, vec![s("x", 3)]),
        cand("Alpha", 2, vec![s("x", 3).abortable(true)]),
    ]);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged["Alpha"], [s("x", 3).abortable(true)]);
}

#[test]
fn registry_get_steps_merges_and_reports_versions() {
    let l = log();
    let registry = Registry::new(
        vec![
            Fake::new("Base", 1, &l)
                .steps(vec![s("shared", 50), s("base_only", 0)])
                .boxed(),
            Fake::new("Vendor", 2, &l)
                .steps(vec![s("shared", 1), s("vendor_only", 3)])
                .boxed(),
            Fake::new("Quiet", 2, &l).boxed(),
        ],
        &plain(),
    )
    .unwrap();
    let got = registry
        .get_steps(StepKind::Deploy, &json!({}), &[])
        .unwrap();
    let expected = json!({
        "deploy_steps": {
            "Vendor": [
                {"step": "shared", "interface": "deploy", "priority": 1, "reboot_requested": false},
                {"step": "vendor_only", "interface": "deploy", "priority": 3, "reboot_requested": false},
            ],
            "Base": [
                {"step": "base_only", "interface": "deploy", "priority": 0, "reboot_requested": false},
            ],
        },
        "hardware_manager_version": {"base": "1.0", "vendor": "1.0", "quiet": "1.0"},
    });
    assert_eq!(got, expected);
}

fn key(
    support: SupportLevel,
    priority: i64,
    manager: &str,
) -> (SupportLevel, i64, std::cmp::Reverse<String>) {
    (support, priority, std::cmp::Reverse(manager.to_owned()))
}

proptest! {
    /// For every step name the kept descriptor carries the maximal key
    /// (support, priority, reversed manager name) among all offers of that name, each
    /// name is kept exactly once, and the winner is listed under its own manager.
    #[test]
    fn dedup_keeps_the_maximal_key_per_name(
        offers in prop::collection::btree_map(
            0u8..6,
            (1u32..4, prop::collection::vec((0u8..5, 0i64..4), 0..6)),
            0..5,
        ).prop_map(|m| m.into_iter().collect::<Vec<_>>()).prop_shuffle()
    ) {
        let candidates: Vec<Candidate> = offers
            .iter()
            .map(|(m, (support, steps))| cand(
                &format!("M{m}"),
                *support,
                steps.iter().map(|(n, p)| s(&format!("step{n}"), *p)).collect(),
            ))
            .collect();
        let merged = deduplicate_steps(&candidates);

        let mut all_names: Vec<&str> = candidates
            .iter()
            .flat_map(|c| c.steps.iter().map(|st| st.step.as_str()))
            .collect();
        all_names.sort_unstable();
        all_names.dedup();
        let mut kept: Vec<&str> = merged.values().flatten().map(|st| st.step.as_str()).collect();
        kept.sort_unstable();
        prop_assert_eq!(&kept, &all_names);

        for (manager, steps) in &merged {
            let owner = candidates.iter().find(|c| &c.manager == manager).unwrap();
            for won in steps {
                prop_assert!(owner.steps.contains(won));
                let won_key = key(owner.support, won.priority, manager);
                for c in &candidates {
                    for other in c.steps.iter().filter(|o| o.step == won.step) {
                        prop_assert!(won_key >= key(c.support, other.priority, &c.manager));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- generic tables

/// (step, interface, priority, abortable, [(arg, required)]) from spec 4.6.
type Row = (
    &'static str,
    &'static str,
    i64,
    Option<bool>,
    &'static [(&'static str, bool)],
);

const NVRAM_ARGS: &[(&str, bool)] = &[("match_patterns", false)];
const RAID_ARGS: &[(&str, bool)] = &[("delete_existing", false), ("raid_config", true)];
const INJECT_ARGS: &[(&str, bool)] = &[("files", false), ("verify_ca", false)];

const CLEAN: &[Row] = &[
    ("erase_devices", "deploy", 10, Some(true), &[]),
    ("erase_devices_metadata", "deploy", 99, Some(true), &[]),
    ("erase_devices_express", "deploy", 0, Some(true), &[]),
    ("erase_pstore", "deploy", 0, Some(true), &[]),
    ("clean_uefi_nvram", "deploy", 0, Some(true), NVRAM_ARGS),
    ("delete_configuration", "raid", 0, Some(true), &[]),
    ("create_configuration", "raid", 0, Some(true), &[]),
    ("burnin_cpu", "deploy", 0, Some(true), &[]),
    ("burnin_gpu", "deploy", 0, Some(true), &[]),
    ("burnin_disk", "deploy", 0, Some(true), &[]),
    ("burnin_memory", "deploy", 0, Some(true), &[]),
    ("burnin_network", "deploy", 0, Some(true), &[]),
];

/// Priority -1 marks `inject_files`, whose priority is configured.
const DEPLOY: &[Row] = &[
    ("erase_devices_metadata", "deploy", 0, None, &[]),
    ("apply_configuration", "raid", 0, None, RAID_ARGS),
    ("clean_uefi_nvram", "deploy", 0, None, NVRAM_ARGS),
    ("write_image", "deploy", 0, None, &[]),
    ("inject_files", "deploy", -1, None, INJECT_ARGS),
    ("execute_bootc_install", "deploy", 0, None, &[]),
];

const SERVICE: &[Row] = &[
    ("delete_configuration", "raid", 0, Some(true), &[]),
    ("apply_configuration", "raid", 0, None, RAID_ARGS),
    ("create_configuration", "raid", 0, Some(true), &[]),
    ("burnin_cpu", "deploy", 0, Some(true), &[]),
    ("burnin_gpu", "deploy", 0, Some(true), &[]),
    ("burnin_memory", "deploy", 0, Some(true), &[]),
    ("burnin_network", "deploy", 0, Some(true), &[]),
    ("write_image", "deploy", 0, None, &[]),
    ("inject_files", "deploy", -1, None, INJECT_ARGS),
    ("execute_bootc_install", "deploy", 0, None, &[]),
];

fn check_table(kind: StepKind, rows: &[Row], inject_priority: i64) {
    let registry = Registry::with_options(
        &plain(),
        &BuiltinOptions {
            inject_files_priority: inject_priority,
            ..BuiltinOptions::default()
        },
    );
    let result = registry.get_steps(kind, &json!({}), &[]).unwrap();
    let obj = result.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{result}");
    assert_eq!(
        result["hardware_manager_version"],
        json!({"generic_hardware_manager": "1.2"})
    );
    let groups = result[kind.steps_key()].as_object().unwrap();
    assert_eq!(groups.len(), 1);
    let steps = groups["GenericHardwareManager"].as_array().unwrap();
    assert_eq!(steps.len(), rows.len(), "{kind}: {steps:?}");
    for (got, (name, interface, priority, abortable, args)) in steps.iter().zip(rows) {
        let priority = if *priority < 0 {
            inject_priority
        } else {
            *priority
        };
        assert_eq!(got["step"], json!(name), "{kind}");
        assert_eq!(got["interface"], json!(interface), "{kind} {name}");
        assert_eq!(got["priority"], json!(priority), "{kind} {name}");
        assert_eq!(got["reboot_requested"], json!(false), "{kind} {name}");
        assert_eq!(
            got.get("abortable"),
            abortable.map(Value::Bool).as_ref(),
            "{kind} {name}"
        );
        let mut expected_keys = vec!["interface", "priority", "reboot_requested", "step"];
        if abortable.is_some() {
            expected_keys.push("abortable");
        }
        if args.is_empty() {
            assert!(got.get("argsinfo").is_none(), "{kind} {name}");
        } else {
            expected_keys.push("argsinfo");
            let info = got["argsinfo"].as_object().unwrap();
            let got_args: Vec<(&str, bool)> = info
                .iter()
                .map(|(k, v)| {
                    assert!(v["description"].as_str().is_some_and(|d| !d.is_empty()));
                    (k.as_str(), v["required"].as_bool().unwrap())
                })
                .collect();
            assert_eq!(&got_args, args, "{kind} {name}");
        }
        let mut keys: Vec<&str> = got
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        expected_keys.sort_unstable();
        assert_eq!(keys, expected_keys, "{kind} {name}");
    }
}

#[test]
fn generic_clean_steps_match_the_spec() {
    check_table(StepKind::Clean, CLEAN, 0);
}

#[test]
fn generic_deploy_steps_match_the_spec() {
    check_table(StepKind::Deploy, DEPLOY, 0);
    check_table(StepKind::Deploy, DEPLOY, 42);
}

#[test]
fn generic_service_steps_match_the_spec() {
    check_table(StepKind::Service, SERVICE, 0);
    check_table(StepKind::Service, SERVICE, 17);
}

#[test]
fn generic_manager_identity() {
    let generic = GenericHardwareManager::new(0);
    assert_eq!(generic.name(), "GenericHardwareManager");
    assert_eq!(
        generic.version(),
        ManagerVersion {
            name: "generic_hardware_manager".into(),
            version: "1.2".into()
        }
    );
    assert_eq!(
        generic.evaluate_hardware_support(&plain()),
        SupportLevel::GENERIC
    );
    assert_eq!(
        generic.evaluate_hardware_support(&inventory("Example Corp")),
        SupportLevel::GENERIC
    );
}

// ---------------------------------------------------------------- versions and execution

#[test]
fn versions_of_the_generic_registry() {
    let registry = Registry::with_builtin(&plain());
    let mut expected = Map::new();
    expected.insert("generic_hardware_manager".into(), json!("1.2"));
    assert_eq!(registry.versions(), expected);
    assert_eq!(registry.manager_versions().len(), 1);
}

#[test]
fn version_mismatch_is_refused_with_ipa_text() {
    let l = log();
    let registry = Registry::new(
        vec![Fake::new("Echoer", 1, &l).answer(Answer::Echo).boxed()],
        &plain(),
    )
    .unwrap();
    let old = json!({"echoer": "0.9"});
    let err = registry
        .execute_step(
            StepKind::Clean,
            &step_obj("s"),
            &json!({}),
            &[],
            Some(&old),
            &plain(),
        )
        .unwrap_err();
    assert!(err.is_version_mismatch());
    assert_eq!(err.to_command_error().ipa_type(), "VersionMismatch");
    assert_eq!(err.to_command_error().code(), 409);
    assert_eq!(
        err.to_command_error().message(),
        "Hardware managers version mismatch, reload agent with correct version"
    );
    assert_eq!(
        err.to_command_error().details(),
        r#"Current versions: {"echoer":"1.0"}, versions used by ironic: {"echoer":"0.9"}"#
    );
    // The step was not run.
    assert!(l.lock().unwrap().is_empty());

    // Matching and null versions pass.
    let same = json!({"echoer": "1.0"});
    for version in [Some(&same), Some(&Value::Null), None] {
        registry
            .execute_step(
                StepKind::Clean,
                &step_obj("s"),
                &json!({}),
                &[],
                version,
                &plain(),
            )
            .unwrap();
    }
    assert_eq!(l.lock().unwrap().len(), 3);
}

#[test]
fn execute_passes_args_node_ports_and_kind() {
    let l = log();
    let registry = Registry::new(
        vec![Fake::new("Echoer", 1, &l).answer(Answer::Echo).boxed()],
        &plain(),
    )
    .unwrap();
    let step = json!({"step": "burn", "interface": "deploy", "priority": 0,
                      "args": {"duration": 5, "mode": "fast"}});
    let node = json!({"uuid": "n1"});
    let ports = [json!({"address": "aa:bb:cc:dd:ee:ff"})];
    let got = registry
        .execute_step(
            StepKind::Service,
            &step,
            &node,
            &ports,
            None,
            &inventory("X"),
        )
        .unwrap();
    assert_eq!(
        got,
        json!({"kind": "service", "step": "burn", "args": {"duration": 5, "mode": "fast"},
               "node": {"uuid": "n1"}, "ports": [{"address": "aa:bb:cc:dd:ee:ff"}],
               "manufacturer": "X"})
    );
    // Missing and null args both become an empty object.
    for step in [
        json!({"step": "burn"}),
        json!({"step": "burn", "args": null}),
    ] {
        let got = registry
            .execute_step(StepKind::Clean, &step, &node, &[], None, &plain())
            .unwrap();
        assert_eq!(got["args"], json!({}));
    }
}

#[test]
fn malformed_step_objects_are_invalid_params() {
    let registry = Registry::with_builtin(&plain());
    for step in [
        json!({"interface": "deploy"}),
        json!({"step": 5}),
        json!("erase_devices"),
        json!({"step": "erase_devices", "args": [1, 2]}),
    ] {
        let err = execute(&registry, StepKind::Clean, &step).unwrap_err();
        assert!(
            matches!(err, StepError::InvalidParams(_)),
            "{step}: {err:?}"
        );
        assert_eq!(
            err.to_command_error().ipa_type(),
            "InvalidCommandParamsError"
        );
        assert_eq!(err.to_command_error().code(), 400);
        assert_eq!(
            err.to_command_error().message(),
            "Invalid command parameters"
        );
    }
}

#[test]
fn unknown_step_is_method_not_found() {
    let registry = Registry::with_builtin(&plain());
    let err = execute(&registry, StepKind::Deploy, &step_obj("frobnicate")).unwrap_err();
    assert!(matches!(&err, StepError::MethodNotFound { method } if method == "frobnicate"));
    assert_eq!(
        err.to_command_error().ipa_type(),
        "HardwareManagerMethodNotFound"
    );
    assert_eq!(err.to_command_error().code(), 500);
    assert_eq!(
        err.to_command_error().message(),
        "No HardwareManager found to handle method"
    );
    assert_eq!(
        err.to_command_error().details(),
        "Could not find method: frobnicate"
    );
}

#[test]
fn unimplemented_generic_steps_fail_and_never_succeed() {
    let registry = Registry::with_builtin(&plain());
    let expected = [
        (StepKind::Clean, "CleaningError", "Clean step failed"),
        (StepKind::Deploy, "DeploymentError", "Deploy step failed"),
        (StepKind::Service, "ServicingError", "Service step failed"),
    ];
    for (kind, ipa_type, message) in expected {
        let listed = registry.get_steps(kind, &json!({}), &[]).unwrap();
        let steps = listed[kind.steps_key()]["GenericHardwareManager"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!steps.is_empty());
        for step in steps {
            let name = step["step"].as_str().unwrap().to_owned();
            // Implemented steps have their own tests (tests/instance_root.rs, the deploy
            // tests).
            if [
                "write_image",
                "inject_files",
                "erase_devices_metadata",
                "erase_devices",
                "erase_devices_express",
                "erase_pstore",
                "clean_uefi_nvram",
            ]
            .contains(&name.as_str())
            {
                continue;
            }
            let err = execute(&registry, kind, &step).unwrap_err();
            assert!(
                matches!(&err, StepError::Failed { .. }),
                "{kind} {name}: {err:?}"
            );
            assert_eq!(err.to_command_error().ipa_type(), ipa_type);
            assert_eq!(err.to_command_error().code(), 500);
            assert_eq!(err.to_command_error().message(), message);
            assert_eq!(
                err.to_command_error().details(),
                format!("Error performing {kind} step {name}: step {name} is not implemented by this agent yet")
            );
        }
    }
}

#[test]
fn manager_errors_map_to_step_errors() {
    let l = log();
    let cases = [
        (
            Answer::Invalid,
            "InvalidCommandParamsError",
            400u16,
            "bad argument x",
        ),
        (
            Answer::Configuration,
            "HardwareManagerConfigurationError",
            500,
            "Vendor: bad vendor config",
        ),
        (
            Answer::Fail,
            "DeploymentError",
            500,
            "Error performing deploy step s: disk on fire",
        ),
    ];
    for (answer, ipa_type, code, details) in cases {
        let registry = Registry::new(
            vec![
                Fake::new("Vendor", 2, &l).answer(answer).boxed(),
                Fake::new("Generic", 1, &l)
                    .answer(Answer::Value(json!(1)))
                    .boxed(),
            ],
            &plain(),
        )
        .unwrap();
        let err = execute(&registry, StepKind::Deploy, &step_obj("s")).unwrap_err();
        assert_eq!(
            (
                err.to_command_error().ipa_type(),
                err.to_command_error().code()
            ),
            (ipa_type, code)
        );
        assert_eq!(err.to_command_error().details(), details);
    }
}

// ---------------------------------------------------------------- example vendor

#[cfg(feature = "hwm-example")]
mod vendor {
    use super::*;

    fn vendor_registry() -> Registry {
        Registry::with_builtin(&inventory("Example Corp"))
    }

    #[test]
    fn vendor_is_selected_only_on_its_hardware_and_ranks_first() {
        assert_eq!(
            names(&vendor_registry()),
            ["ExampleVendorHardwareManager", "GenericHardwareManager"]
        );
        assert_eq!(
            names(&Registry::with_builtin(&plain())),
            ["GenericHardwareManager"]
        );
        let custom = Registry::with_options(
            &inventory("Other Inc"),
            &BuiltinOptions {
                example_vendor: "Other Inc".into(),
                ..BuiltinOptions::default()
            },
        );
        assert_eq!(custom.len(), 2);
    }

    #[test]
    fn vendor_versions_are_reported() {
        let versions = vendor_registry().versions();
        assert_eq!(
            Value::Object(versions),
            json!({"generic_hardware_manager": "1.2", "example_vendor_hardware_manager": "1.1"})
        );
    }

    #[test]
    fn vendor_outranks_generic_for_erase_devices_despite_lower_priority() {
        let registry = vendor_registry();
        let clean = registry
            .get_steps(StepKind::Clean, &json!({}), &[])
            .unwrap();
        let groups = clean["clean_steps"].as_object().unwrap();
        let vendor = groups["ExampleVendorHardwareManager"].as_array().unwrap();
        let generic = groups["GenericHardwareManager"].as_array().unwrap();
        let vendor_names: Vec<(&str, i64)> = vendor
            .iter()
            .map(|st| {
                (
                    st["step"].as_str().unwrap(),
                    st["priority"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            vendor_names,
            [("example_firmware_report", 0), ("erase_devices", 5)]
        );
        // The generic descriptor (priority 10) lost the clash; the rest is intact.
        assert!(generic.iter().all(|st| st["step"] != "erase_devices"));
        assert_eq!(generic.len(), CLEAN.len() - 1);
        assert_eq!(
            clean["hardware_manager_version"],
            json!({"generic_hardware_manager": "1.2", "example_vendor_hardware_manager": "1.1"})
        );

        let service = registry
            .get_steps(StepKind::Service, &json!({}), &[])
            .unwrap();
        assert_eq!(
            service["service_steps"]["ExampleVendorHardwareManager"][0]["step"],
            "example_firmware_report"
        );
        let deploy = registry
            .get_steps(StepKind::Deploy, &json!({}), &[])
            .unwrap();
        assert_eq!(
            deploy["deploy_steps"]["ExampleVendorHardwareManager"][0]["step"],
            "example_write_files"
        );
    }

    #[test]
    fn vendor_step_runs_through_the_registry() {
        let registry = vendor_registry();
        let current = Value::Object(registry.versions());
        let got = registry
            .execute_step(
                StepKind::Clean,
                &step_obj("example_firmware_report"),
                &json!({}),
                &[],
                Some(&current),
                &inventory("Example Corp"),
            )
            .unwrap();
        assert_eq!(
            got,
            json!({"manufacturer": "Example Corp", "product_name": "Box 9000",
                   "firmware": {"vendor": "Example BIOS Inc", "version": "2.4.1",
                                "build_date": "03/15/2024"}})
        );
        // A generic-only version record no longer matches once the vendor is active.
        let generic_only = json!({"generic_hardware_manager": "1.2"});
        let err = registry
            .execute_step(
                StepKind::Clean,
                &step_obj("example_firmware_report"),
                &json!({}),
                &[],
                Some(&generic_only),
                &inventory("Example Corp"),
            )
            .unwrap_err();
        assert!(err.is_version_mismatch());
    }

    #[test]
    fn vendor_step_arguments_are_checked() {
        let registry = vendor_registry();
        let step = json!({"step": "example_firmware_report", "args": {"verbose": true}});
        let err = registry
            .execute_step(
                StepKind::Service,
                &step,
                &json!({}),
                &[],
                None,
                &inventory("Example Corp"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_command_error().ipa_type(),
            "InvalidCommandParamsError"
        );
        assert!(err.to_command_error().details().contains("verbose"));
    }

    #[test]
    fn shared_step_falls_through_to_generic_execution() {
        // The vendor owns erase_devices' descriptor but not its work: execution goes
        // on to the generic manager, whose default scope permits no device, so there
        // is nothing to erase (tests/erase_devices.rs erases real ones).
        let result = vendor_registry()
            .execute_step(
                StepKind::Clean,
                &step_obj("erase_devices"),
                &json!({}),
                &[],
                None,
                &inventory("Example Corp"),
            )
            .unwrap();
        assert_eq!(result, json!({}));
    }
}

#[cfg(not(feature = "hwm-example"))]
#[test]
fn without_the_feature_example_hardware_gets_generic_only() {
    assert_eq!(
        names(&Registry::with_builtin(&inventory("Example Corp"))),
        ["GenericHardwareManager"]
    );
}
