//! The `example_write_files` deploy step: an in-band step that changes files in the
//! instance just written, as a vendor would drop a tool's configuration into the image.
//!
//! The agent mounts the instance's root filesystem ([`ira_hw::AgentHost::with_instance_root`])
//! and unmounts it afterwards; every file is written through [`ira_hw::safe_path`], so a
//! link in the tenant's image cannot redirect a write outside the mount. Arguments are
//! validated in full before anything is mounted.

use base64::Engine;
use ira_hw::safe_path::{FileOptions, RelPath, RootDir};
use ira_hw::{HwError, HwResult, Step, StepCall};
use serde_json::{json, Map, Value};

/// The step's name.
pub const STEP: &str = "example_write_files";
/// Keys a file entry may carry.
const KEYS: &[&str] = &["path", "content", "encoding", "mode"];
/// Description of the `files` argument.
const FILES_DESCRIPTION: &str = "Files to write into the instance's root filesystem: a \
     list of objects with 'path' (absolute inside the instance), 'content' (text, or \
     base64 with \"encoding\": \"base64\") and optional 'mode' (a number, e.g. 420 for \
     0644).";

/// The step descriptor: interface `deploy`, priority 0 (runs only when requested).
pub fn descriptor() -> Step {
    Step::new(STEP, "deploy", 0).arg("files", FILES_DESCRIPTION, true)
}

/// One validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Where, inside the instance root.
    pub path: RelPath,
    /// The bytes to write.
    pub content: Vec<u8>,
    /// Permission bits, if given.
    pub mode: Option<u32>,
}

/// Validates `args.files`; every problem is reported at once.
pub fn parse_args(args: &Map<String, Value>) -> HwResult<Vec<FileEntry>> {
    let unknown: Vec<&str> = args
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "files")
        .collect();
    if !unknown.is_empty() {
        return Err(HwError::InvalidParams(format!(
            "{STEP}: unexpected arguments: {}",
            unknown.join(", ")
        )));
    }
    let Some(Value::Array(files)) = args.get("files") else {
        return Err(HwError::InvalidParams(format!(
            "{STEP}: 'files' must be a list of file objects"
        )));
    };
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match parse_entry(f) {
            Ok(e) => out.push(e),
            Err(why) => failures.push(format!("file {i}: {why}")),
        }
    }
    if !failures.is_empty() {
        return Err(HwError::InvalidParams(format!(
            "{STEP}: {}",
            failures.join("; ")
        )));
    }
    Ok(out)
}

fn parse_entry(v: &Value) -> Result<FileEntry, String> {
    let obj = v.as_object().ok_or("expected an object")?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unexpected field {k}"));
    }
    let raw = obj
        .get("path")
        .and_then(Value::as_str)
        .ok_or("expected a string 'path'")?;
    if !raw.starts_with('/') {
        return Err(format!("path {raw} must be absolute"));
    }
    let path = RelPath::parse(raw).map_err(|e| e.to_string())?;
    let text = obj
        .get("content")
        .and_then(Value::as_str)
        .ok_or("expected a string 'content'")?;
    let content = match obj.get("encoding").map(|e| e.as_str()) {
        None | Some(Some("plain")) => text.as_bytes().to_vec(),
        Some(Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("content is not valid base64: {e}"))?,
        Some(_) => return Err("encoding must be \"plain\" or \"base64\"".to_owned()),
    };
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => None,
        Some(m) => Some(
            m.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m <= 0o7777)
                .ok_or("mode must be a number from 0 to 4095 (0o7777)")?,
        ),
    };
    Ok(FileEntry {
        path,
        content,
        mode,
    })
}

/// Runs the step: validates, mounts the instance root, writes every file inside it.
pub fn execute(call: &StepCall<'_>) -> HwResult<Value> {
    let files = parse_args(call.args)?;
    let mut written = Vec::new();
    call.host.with_instance_root(None, &mut |dir| {
        let root = RootDir::open(dir).map_err(|e| HwError::Failed(e.to_string()))?;
        written.clear();
        for f in &files {
            let opts = FileOptions {
                mode: f.mode,
                ..FileOptions::default()
            };
            root.write_file(&f.path.as_string(), &f.content, &opts)
                .map_err(|e| HwError::Failed(format!("{STEP}: writing {}: {e}", f.path)))?;
            tracing::info!(step = STEP, path = %f.path, bytes = f.content.len(), "file written");
            written.push(f.path.to_string());
        }
        Ok(())
    })?;
    Ok(json!({ "written": written }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_plain_base64_and_mode() {
        let files = parse_args(&args(json!({"files": [
            {"path": "/etc/vendor/a.conf", "content": "x=1\n"},
            {"path": "/etc/b", "content": "aGk=", "encoding": "base64", "mode": 384},
        ]})))
        .unwrap();
        assert_eq!(files[0].path.as_string(), "etc/vendor/a.conf");
        assert_eq!(files[0].content, b"x=1\n");
        assert_eq!(files[0].mode, None);
        assert_eq!(files[1].content, b"hi");
        assert_eq!(files[1].mode, Some(0o600));
    }

    #[test]
    fn refuses_bad_arguments_all_at_once() {
        for bad in [
            json!({}),
            json!({"files": {}}),
            json!({"files": [], "force": true}),
        ] {
            assert!(matches!(
                parse_args(&args(bad)),
                Err(HwError::InvalidParams(_))
            ));
        }
        let err = parse_args(&args(json!({"files": [
            {"path": "/etc/../../x", "content": "a"},
            {"path": "etc/rel", "content": "a"},
            {"path": "/etc/a", "content": "%%", "encoding": "base64"},
            {"path": "/etc/a", "content": "a", "encoding": "rot13"},
            {"path": "/etc/a", "content": "a", "mode": 65535},
            {"path": "/etc/a", "content": 5},
            {"path": "/etc/a", "content": "a", "owner": 0},
        ]})))
        .unwrap_err();
        let HwError::InvalidParams(msg) = err else {
            panic!("expected InvalidParams")
        };
        for n in 0..7 {
            assert!(msg.contains(&format!("file {n}:")), "{n} in {msg}");
        }
    }

    /// A host whose "instance root" is a directory; counts mounts.
    #[derive(Debug)]
    struct DirHost {
        root: std::path::PathBuf,
        mounts: std::sync::atomic::AtomicUsize,
    }

    impl ira_hw::AgentHost for DirHost {
        fn prepare_image(&self, _: &Value, _: Option<&Value>) -> HwResult<Value> {
            Err(HwError::Failed("unused".into()))
        }
        fn with_instance_root(
            &self,
            partition: Option<&str>,
            f: &mut dyn FnMut(&std::path::Path) -> HwResult<()>,
        ) -> HwResult<()> {
            assert_eq!(partition, None);
            self.mounts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            f(&self.root)
        }
        fn set_status(&self, _: Option<&str>) {}
    }

    fn run(host: &DirHost, args: &Map<String, Value>) -> HwResult<Value> {
        let inventory = ira_hw::Inventory {
            interfaces: Vec::new(),
            cpu: ira_hw::Cpu::default(),
            disks: Vec::new(),
            memory: ira_hw::Memory::default(),
            bmc_address: None,
            bmc_v6address: None,
            system_vendor: ira_hw::SystemVendor::default(),
            boot: ira_hw::BootInfo::default(),
            hostname: "h".to_owned(),
            bmc_mac: None,
        };
        execute(&StepCall {
            kind: ira_hw::StepKind::Deploy,
            step: STEP,
            node: &Value::Null,
            ports: &[],
            args,
            inventory: &inventory,
            host,
        })
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ira-hwm-example-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_inside_the_root_and_links_cannot_lead_out() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let outside = scratch("outside");
        let root = scratch("root");
        std::fs::create_dir(root.join("etc")).unwrap();
        // A hostile image: a directory link pointing at the agent's own files.
        symlink(&outside, root.join("etc/evil")).unwrap();
        let host = DirHost {
            root: root.clone(),
            mounts: Default::default(),
        };
        let out = run(
            &host,
            &args(json!({"files": [
                {"path": "/etc/vendor/tool.conf", "content": "a=1\n", "mode": 384},
                {"path": "/etc/motd", "content": "aGVsbG8=", "encoding": "base64"},
            ]})),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"written": ["/etc/vendor/tool.conf", "/etc/motd"]})
        );
        let conf = root.join("etc/vendor/tool.conf");
        assert_eq!(std::fs::read(&conf).unwrap(), b"a=1\n");
        assert_eq!(
            std::fs::metadata(&conf).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"hello");

        let err = run(
            &host,
            &args(json!({"files": [{"path": "/etc/evil/planted", "content": "x"}]})),
        )
        .unwrap_err();
        assert!(matches!(err, HwError::Failed(_)), "{err:?}");
        assert!(!outside.join("planted").exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        // Bad arguments are refused before anything is mounted.
        let before = host.mounts.load(std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            run(
                &host,
                &args(json!({"files": [{"path": "/../x", "content": "x"}]}))
            ),
            Err(HwError::InvalidParams(_))
        ));
        assert_eq!(
            host.mounts.load(std::sync::atomic::Ordering::SeqCst),
            before
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn descriptor_requires_files() {
        let d = serde_json::to_value(descriptor()).unwrap();
        assert_eq!(d["step"], STEP);
        assert_eq!(d["interface"], "deploy");
        assert_eq!(d["priority"], 0);
        assert_eq!(d["argsinfo"]["files"]["required"], true);
    }
}
