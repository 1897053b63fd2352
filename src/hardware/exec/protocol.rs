//! Protocol 1 of executable hardware managers, without I/O: the `describe` answer and
//! its validation, the step's stdin document and `IRA_*` environment, and how a run's
//! output becomes a step result or error. The README's "Extending ira" section is the
//! operator's copy of these rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::run::{End, Outcome, Stream};
use ira_hw::{Step, StepCall, StepKind};

/// The protocol version this agent speaks.
pub const PROTOCOL: u64 = 1;
/// A step's time limit when its description names none, in seconds.
pub const DEFAULT_STEP_TIMEOUT: u64 = 3600;
/// The longest time limit a step may ask for, in seconds (one day).
pub const MAX_STEP_TIMEOUT: u64 = 86_400;
/// `IRA_ARG_*` values longer than this are left out (the document on stdin has them).
pub const ARG_VALUE_CAP: usize = 64 << 10;
/// All `IRA_ARG_*` variables together stay below this: execve refuses an environment
/// past a few MiB, and the document on stdin carries every value anyway.
pub const ARG_ENV_CAP: usize = 1 << 20;
/// Longest manager name accepted.
const NAME_CAP: usize = 128;

/// One step as `describe` declares it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeclaredStep {
    /// `clean`, `deploy` or `service`.
    pub kind: StepKind,
    /// The step name.
    pub step: String,
    /// The Ironic interface owning it.
    pub interface: String,
    /// Its priority (0: only on request).
    pub priority: i64,
    /// Whether the conductor reboots the node after it.
    #[serde(default)]
    pub reboot_requested: bool,
    /// Whether an abort may interrupt it; absent from listings when not given.
    #[serde(default)]
    pub abortable: Option<bool>,
    /// Argument descriptions, as IPA lists them.
    #[serde(default)]
    pub argsinfo: Option<Map<String, Value>>,
    /// Time limit in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// The agent chooses the install device and passes its path.
    #[serde(default)]
    pub install_device: bool,
    /// The agent mounts the instance's root filesystem for the run and passes its path.
    #[serde(default)]
    pub instance_root: bool,
    /// After success the agent does what it does after its own whole-disk write.
    #[serde(default)]
    pub writes_image: bool,
}

fn default_timeout() -> u64 {
    DEFAULT_STEP_TIMEOUT
}

impl DeclaredStep {
    /// The descriptor `get_<kind>_steps` lists.
    pub fn descriptor(&self) -> Step {
        Step {
            step: self.step.clone(),
            interface: self.interface.clone(),
            priority: self.priority,
            reboot_requested: self.reboot_requested,
            abortable: self.abortable,
            argsinfo: self.argsinfo.clone(),
        }
    }
}

/// What `describe` printed, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Description {
    /// Always [`PROTOCOL`] once validated.
    pub protocol: u64,
    /// `HARDWARE_MANAGER_NAME` and the name its steps are grouped under.
    pub name: String,
    /// `HARDWARE_MANAGER_VERSION`.
    pub version: String,
    /// Support level on this machine; 0 drops the manager.
    pub support: u32,
    /// Its steps.
    #[serde(default)]
    pub steps: Vec<DeclaredStep>,
}

/// Why a `describe` answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    /// Not one JSON object.
    #[error("describe printed invalid JSON: {0}")]
    Json(String),
    /// Another protocol version, or none.
    #[error("describe speaks protocol {found}, this agent speaks protocol {PROTOCOL}")]
    Protocol {
        /// The `protocol` value as printed.
        found: String,
    },
    /// A required key is missing or a value is out of range.
    #[error("describe answer refused: {0}")]
    Invalid(String),
}

/// `describe`'s stdin: `{"protocol": 1, "inventory": {...}}`.
pub fn describe_input(inventory: &Value) -> Value {
    json!({"protocol": PROTOCOL, "inventory": inventory})
}

/// Parses and validates `describe`'s stdout.
pub fn parse_description(text: &str) -> Result<Description, DescribeError> {
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| DescribeError::Json(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(DescribeError::Json("not a JSON object".to_owned()));
    };
    // The version first: a later protocol may change everything else.
    match obj.get("protocol") {
        Some(p) if p.as_u64() == Some(PROTOCOL) => {}
        Some(p) => {
            return Err(DescribeError::Protocol {
                found: p.to_string(),
            })
        }
        None => {
            return Err(DescribeError::Protocol {
                found: "(none)".to_owned(),
            })
        }
    }
    let d: Description =
        serde_json::from_value(value).map_err(|e| DescribeError::Invalid(e.to_string()))?;
    validate(&d)?;
    Ok(d)
}

fn validate(d: &Description) -> Result<(), DescribeError> {
    let bad = |m: String| Err(DescribeError::Invalid(m));
    if d.name.is_empty() || d.name.len() > NAME_CAP || d.name.chars().any(char::is_control) {
        return bad(format!(
            "name must be 1 to {NAME_CAP} characters without control characters"
        ));
    }
    if d.version.is_empty() || d.version.chars().any(char::is_control) {
        return bad("version must be a non-empty string".to_owned());
    }
    let mut seen = BTreeSet::new();
    for s in &d.steps {
        let what = format!("{} step {:?}", s.kind, s.step);
        if s.step.is_empty() || s.interface.is_empty() {
            return bad(format!("{what}: step and interface must be non-empty"));
        }
        if s.priority < 0 {
            return bad(format!("{what}: priority must not be negative"));
        }
        if !(1..=MAX_STEP_TIMEOUT).contains(&s.timeout) {
            return bad(format!(
                "{what}: timeout must be 1 to {MAX_STEP_TIMEOUT} seconds"
            ));
        }
        if s.writes_image && !s.install_device {
            return bad(format!("{what}: writes_image needs install_device"));
        }
        if s.writes_image && s.instance_root {
            return bad(format!(
                "{what}: writes_image and instance_root exclude each other"
            ));
        }
        if !seen.insert((s.kind.as_str(), s.step.as_str())) {
            return bad(format!("{what} is declared twice"));
        }
    }
    Ok(())
}

/// The agent's TLS settings for outgoing connections, handed to a step so that what it
/// downloads is verified as the agent's own downloads are (`ipa-insecure`, `cafile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Skip certificate verification.
    pub insecure: bool,
    /// CA bundle instead of the system's.
    pub cafile: Option<PathBuf>,
}

/// The step's stdin document.
pub fn step_input(
    call: &StepCall<'_>,
    install_device: Option<&str>,
    instance_root: Option<&Path>,
    tls: &TlsSettings,
) -> Value {
    json!({
        "protocol": PROTOCOL,
        "kind": call.kind.as_str(),
        "step": call.step,
        "args": call.args,
        "node": call.node,
        "ports": call.ports,
        "install_device": install_device,
        "instance_root": instance_root.map(|p| p.display().to_string()),
        "tls": {
            "insecure": tls.insecure,
            "cafile": tls.cafile.as_ref().map(|p| p.display().to_string()),
        },
    })
}

/// The step's environment besides `PATH`: `IRA_PROTOCOL`, `IRA_STEP_KIND`, `IRA_STEP`,
/// `IRA_NODE_UUID` (when known), `IRA_INSTALL_DEVICE`, `IRA_INSTANCE_ROOT` (when asked),
/// `IRA_INSECURE=1` and `IRA_CAFILE` (the agent's TLS settings, when set) and the
/// flattened args ([`arg_env`]).
pub fn step_env(
    call: &StepCall<'_>,
    install_device: Option<&str>,
    instance_root: Option<&Path>,
    tls: &TlsSettings,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("IRA_PROTOCOL".to_owned(), PROTOCOL.to_string()),
        ("IRA_STEP_KIND".to_owned(), call.kind.as_str().to_owned()),
        ("IRA_STEP".to_owned(), call.step.to_owned()),
    ];
    if let Some(uuid) = call.node.get("uuid").and_then(Value::as_str) {
        env.push(("IRA_NODE_UUID".to_owned(), uuid.to_owned()));
    }
    if let Some(dev) = install_device {
        env.push(("IRA_INSTALL_DEVICE".to_owned(), dev.to_owned()));
    }
    if let Some(root) = instance_root {
        env.push(("IRA_INSTANCE_ROOT".to_owned(), root.display().to_string()));
    }
    if tls.insecure {
        env.push(("IRA_INSECURE".to_owned(), "1".to_owned()));
    }
    if let Some(cafile) = &tls.cafile {
        env.push(("IRA_CAFILE".to_owned(), cafile.display().to_string()));
    }
    env.extend(arg_env(call.args));
    env.retain(|(_, v)| !v.contains('\0'));
    env
}

/// `IRA_ARG_<PATH>` for every string, number and boolean in `args`: keys and array
/// indexes joined by `_`, uppercased, other characters than ASCII letters and digits as
/// `_` (`image_info.urls[0]` -> `IRA_ARG_IMAGE_INFO_URLS_0`). Values over
/// [`ARG_VALUE_CAP`], values with a NUL byte, and those past [`ARG_ENV_CAP`] in total
/// are left out.
pub fn arg_env(args: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (key, value) in args {
        flatten(
            &format!("IRA_ARG_{}", env_name(key)),
            value,
            &mut out,
            &mut total,
        );
    }
    out
}

fn flatten(name: &str, value: &Value, out: &mut Vec<(String, String)>, total: &mut usize) {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => return,
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{name}_{i}"), item, out, total);
            }
            return;
        }
        Value::Object(map) => {
            for (k, item) in map {
                flatten(&format!("{name}_{}", env_name(k)), item, out, total);
            }
            return;
        }
    };
    let size = name.len() + text.len() + 2;
    if text.len() > ARG_VALUE_CAP || text.contains('\0') || *total + size > ARG_ENV_CAP {
        return;
    }
    *total += size;
    out.push((name.to_owned(), text));
}

fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A step run's end as the step's result, or its error message (the registry prefixes
/// the manager name): `write_image failed (exit 3): <message>`.
pub fn step_result(step: &str, timeout_secs: u64, outcome: &Outcome) -> Result<Value, String> {
    match outcome.end {
        End::Exited(0) => {
            let text = outcome.stdout.trim();
            if text.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(text).map_err(|e| format!("{step} returned invalid JSON: {e}"))
        }
        End::Exited(code) => Err(with_message(
            format!("{step} failed (exit {code})"),
            own_message(outcome),
        )),
        End::Signaled(sig) => Err(with_message(
            format!("{step} failed (killed by signal {sig})"),
            own_message(outcome),
        )),
        End::TimedOut => Err(format!("{step} timed out after {timeout_secs} s")),
        End::OutputTooLarge(Stream::Stdout) => Err(format!(
            "{step} output exceeds {} MiB on stdout",
            super::run::STDOUT_CAP >> 20
        )),
        End::OutputTooLarge(Stream::Stderr) => Err(format!(
            "{step} output exceeds {} MiB on stderr",
            super::run::STDERR_CAP >> 20
        )),
        End::Stopped => Err(format!("{step} stopped: the agent is shutting down")),
    }
}

fn with_message(head: String, message: Option<String>) -> String {
    match message {
        Some(m) => format!("{head}: {m}"),
        None => head,
    }
}

/// The manager's own words on a failure: `{"error": "..."}` on stdout, else the last
/// non-empty stderr line.
pub fn own_message(outcome: &Outcome) -> Option<String> {
    serde_json::from_str::<Value>(outcome.stdout.trim())
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .filter(|m| !m.trim().is_empty())
        .or_else(|| outcome.last_stderr.clone())
}

/// The step result with what `image_written` reported added: into an object result
/// (keys the step set itself win), as the result of a step that printed nothing, else
/// next to the step's value under `result`.
pub fn merge_written(result: Value, written: Value) -> Value {
    let Value::Object(info) = written else {
        return result;
    };
    let mut out = match result {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => Map::from_iter([("result".to_owned(), other)]),
    };
    for (k, v) in info {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_flatten_nested_keys_and_indexes() {
        let args = json!({
            "image_info": {"urls": ["http://a/x.img", "http://b/x.img"], "os_hash_value": "ab12",
                           "size": 1024, "stream": true, "none": null},
            "dashed-key.v2": "x",
        });
        let env = arg_env(args.as_object().unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("IRA_ARG_IMAGE_INFO_URLS_0"), Some("http://a/x.img"));
        assert_eq!(get("IRA_ARG_IMAGE_INFO_URLS_1"), Some("http://b/x.img"));
        assert_eq!(get("IRA_ARG_IMAGE_INFO_OS_HASH_VALUE"), Some("ab12"));
        assert_eq!(get("IRA_ARG_IMAGE_INFO_SIZE"), Some("1024"));
        assert_eq!(get("IRA_ARG_IMAGE_INFO_STREAM"), Some("true"));
        assert_eq!(get("IRA_ARG_DASHED_KEY_V2"), Some("x"));
        assert_eq!(get("IRA_ARG_IMAGE_INFO_NONE"), None);
        assert_eq!(env.len(), 6);
    }

    #[test]
    fn oversized_and_nul_values_are_left_out() {
        let big = "x".repeat(ARG_VALUE_CAP + 1);
        let fits = "y".repeat(ARG_VALUE_CAP);
        let args = json!({"big": big, "fits": fits, "nul": "a\0b"});
        let env = arg_env(args.as_object().unwrap());
        let names: Vec<_> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["IRA_ARG_FITS"]);
        // Many values: the total stays bounded.
        let many: Map<String, Value> = (0..40)
            .map(|i| (format!("k{i}"), Value::String("z".repeat(60 << 10))))
            .collect();
        let env = arg_env(&many);
        let total: usize = env.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        assert!(
            total <= ARG_ENV_CAP && env.len() == 17,
            "{} vars",
            env.len()
        );
    }

    fn described(extra: Value) -> Result<Description, DescribeError> {
        let mut d = json!({"protocol": 1, "name": "m", "version": "1.0", "support": 2,
            "steps": [{"kind": "deploy", "step": "s", "interface": "deploy", "priority": 0}]});
        for (k, v) in extra.as_object().unwrap() {
            d["steps"][0][k] = v.clone();
        }
        parse_description(&d.to_string())
    }

    #[test]
    fn description_defaults_and_limits() {
        let d = described(json!({"future_key": 1})).unwrap();
        let s = &d.steps[0];
        assert_eq!(
            (
                s.timeout,
                s.install_device,
                s.writes_image,
                s.reboot_requested
            ),
            (3600, false, false, false)
        );
        assert_eq!(
            serde_json::to_value(s.descriptor()).unwrap(),
            json!({"step": "s", "interface": "deploy", "priority": 0, "reboot_requested": false})
        );
        for bad in [
            json!({"timeout": 0}),
            json!({"timeout": 86401}),
            json!({"priority": -1}),
            json!({"writes_image": true}),
            json!({"writes_image": true, "install_device": true, "instance_root": true}),
            json!({"kind": "rescue"}),
            json!({"interface": ""}),
        ] {
            assert!(
                matches!(described(bad.clone()), Err(DescribeError::Invalid(_))),
                "{bad} accepted"
            );
        }
        assert!(described(json!({"writes_image": true, "install_device": true})).is_ok());
    }

    #[test]
    fn required_keys_and_protocol() {
        for key in ["name", "version", "support"] {
            let mut d = json!({"protocol": 1, "name": "m", "version": "1", "support": 1});
            d.as_object_mut().unwrap().remove(key);
            let e = parse_description(&d.to_string()).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let e = parse_description(r#"{"protocol": 2, "name": 5}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "describe speaks protocol 2, this agent speaks protocol 1"
        );
        assert!(matches!(
            parse_description(r#"{"name": "m"}"#),
            Err(DescribeError::Protocol { .. })
        ));
        assert!(matches!(
            parse_description("[1]"),
            Err(DescribeError::Json(_))
        ));
        let twice = json!({"protocol": 1, "name": "m", "version": "1", "support": 1, "steps": [
            {"kind": "clean", "step": "s", "interface": "deploy", "priority": 0},
            {"kind": "clean", "step": "s", "interface": "raid", "priority": 1}]});
        assert!(parse_description(&twice.to_string()).is_err());
    }

    fn outcome(end: End, stdout: &str, last_stderr: Option<&str>) -> Outcome {
        Outcome {
            end,
            stdout: stdout.to_owned(),
            last_stderr: last_stderr.map(str::to_owned),
        }
    }

    #[test]
    fn results_and_failures_read_as_the_protocol_says() {
        let ok = |s: &str| step_result("w", 5, &outcome(End::Exited(0), s, None));
        assert_eq!(ok(""), Ok(Value::Null));
        assert_eq!(ok("{\"a\":\n 1}\n"), Ok(json!({"a": 1})));
        assert!(ok("done")
            .unwrap_err()
            .starts_with("w returned invalid JSON: "));
        let fail = |o: Outcome| step_result("w", 5, &o).unwrap_err();
        assert_eq!(
            fail(outcome(
                End::Exited(3),
                r#"{"error": "disk full"}"#,
                Some("x")
            )),
            "w failed (exit 3): disk full"
        );
        assert_eq!(
            fail(outcome(End::Exited(1), "junk", Some("last words"))),
            "w failed (exit 1): last words"
        );
        assert_eq!(fail(outcome(End::Exited(2), "", None)), "w failed (exit 2)");
        assert_eq!(
            fail(outcome(End::TimedOut, "", None)),
            "w timed out after 5 s"
        );
        assert_eq!(
            fail(outcome(End::OutputTooLarge(Stream::Stdout), "", None)),
            "w output exceeds 1 MiB on stdout"
        );
    }

    #[test]
    fn written_info_merges_into_the_result() {
        let info = json!({"root uuid": "0x1234abcd"});
        assert_eq!(merge_written(Value::Null, info.clone()), info);
        assert_eq!(
            merge_written(json!({"root uuid": "mine", "x": 1}), info.clone()),
            json!({"root uuid": "mine", "x": 1})
        );
        assert_eq!(
            merge_written(json!("ok"), info),
            json!({"result": "ok", "root uuid": "0x1234abcd"})
        );
    }
}
