//! The generic `inject_files` deploy/service step (IPA's `inject_files.inject_files`):
//! writes, replaces or deletes files in the instance just written.
//!
//! Files come from `node.properties.inject_files` followed by the step's `files`
//! argument; each is `{path, partition?, content?, deleted?, mode?, dirmode?, owner?,
//! group?}`. `content` is base64 text, or a URL (anything containing `://`) that may
//! name node fields as `{node[uuid]}` or `{ports[0][address]}`; `deleted: true` (or a
//! `content` of `null`) removes the file. Without `partition` the file goes to the
//! instance root, whose directory named by the path's first component must exist (IPA
//! looks for the partition holding it); with one, the path is relative to that
//! partition. Every entry is validated before anything is mounted, paths with `..` are
//! refused, and every write resolves inside the mounted root
//! ([`ira_hw::safe_path`]).

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use ira_hw::safe_path::{FileOptions, RelPath, RootDir, SafePathError};
use ira_hw::{HwError, HwResult, StepCall};

/// Keys an entry may carry (IPA's list).
const KEYS: &[&str] = &[
    "path",
    "partition",
    "content",
    "deleted",
    "mode",
    "dirmode",
    "owner",
    "group",
];
/// Connect and read timeout of a content download.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What to put at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Decoded bytes.
    Inline(Vec<u8>),
    /// Download this URL (node fields already substituted).
    Url(String),
    /// Remove the file.
    Delete,
}

/// One validated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The path as given (inside the partition or root).
    pub path: RelPath,
    /// The partition named, if any.
    pub partition: Option<String>,
    /// What to write.
    pub content: Content,
    /// Mode, owner and directory mode.
    pub options: FileOptions,
}

/// Runs `inject_files` for a step call; `null` result as IPA returns.
pub fn inject_files(call: &StepCall<'_>) -> HwResult<Value> {
    let files = parse_files(call.node, call.ports, call.args)?;
    if files.is_empty() {
        tracing::info!("no files to inject");
        return Ok(Value::Null);
    }
    let verify = call.args.get("verify_ca").cloned().unwrap_or(Value::Null);
    let mut start = 0;
    // Consecutive entries for the same partition share one mount.
    while start < files.len() {
        let partition = files[start].partition.clone();
        let end = files[start..]
            .iter()
            .position(|f| f.partition != partition)
            .map_or(files.len(), |n| start + n);
        let batch = &files[start..end];
        call.host
            .with_instance_root(partition.as_deref(), &mut |dir| {
                let root = RootDir::open(dir).map_err(|e| HwError::Failed(e.to_string()))?;
                for spec in batch {
                    apply(&root, spec, &verify).map_err(|e| {
                        HwError::Failed(format!("Failed to process file {}: {e}", spec.path))
                    })?;
                }
                Ok(())
            })?;
        start = end;
    }
    Ok(Value::Null)
}

/// Validates and merges `node.properties.inject_files` and `args.files`.
pub fn parse_files(
    node: &Value,
    ports: &[Value],
    args: &Map<String, Value>,
) -> HwResult<Vec<FileSpec>> {
    let from_node = node
        .pointer("/properties/inject_files")
        .unwrap_or(&Value::Null);
    let from_args = args.get("files").unwrap_or(&Value::Null);
    let list = |v: &Value, what: &str| -> HwResult<Vec<Value>> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => Ok(a.clone()),
            other => Err(HwError::InvalidParams(format!(
                "{what} must be a list, got {}",
                json_type(other)
            ))),
        }
    };
    let mut entries = list(from_node, "The `inject_files` node property")?;
    entries.extend(list(from_args, "The `files` argument")?);
    let mut failures = Vec::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match parse_one(entry, node, ports) {
            Ok(spec) => out.push(spec),
            Err(why) => failures.push(format!("file {i}: {why}")),
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(HwError::InvalidParams(format!(
            "Validation of files failed: {}",
            failures.join("; ")
        )))
    }
}

fn parse_one(entry: &Value, node: &Value, ports: &[Value]) -> Result<FileSpec, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", json_type(entry)))?;
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("unexpected fields: {}", unknown.join(", ")));
    }
    let raw_path = obj
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or("expected a path")?;
    if raw_path.ends_with('/') {
        return Err(format!("directories not supported for {raw_path}"));
    }
    let path = RelPath::parse(raw_path).map_err(|e| e.to_string())?;
    let partition = match obj.get("partition") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(other) => return Err(format!("invalid partition {other}")),
    };
    if path.parent().is_none() && partition.is_none() {
        return Err(format!("{path} in root directory requires \"partition\""));
    }
    let number = |key: &str| -> Result<Option<u32>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("{key} must be a non-negative number")),
            Some(_) => Err(format!("{key} must be a number")),
        }
    };
    let options = FileOptions {
        mode: number("mode")?,
        dirmode: number("dirmode")?,
        owner: number("owner")?,
        group: number("group")?,
    };
    let deleted = match obj.get("deleted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("deleted must be a boolean".to_owned()),
    };
    let content = match (obj.get("content"), deleted) {
        (Some(Value::String(s)), true) if !s.is_empty() => {
            return Err("content cannot be used with deleted".to_owned())
        }
        (_, true) | (Some(Value::Null), false) => Content::Delete,
        (Some(Value::String(s)), false) if s.contains("://") => {
            Content::Url(format_url(s, node, ports)?)
        }
        (Some(Value::String(s)), false) => Content::Inline(decode_base64(s)?),
        (None, false) => return Err("expected content (or deleted)".to_owned()),
        (Some(other), false) => {
            return Err(format!(
                "content must be a string, got {}",
                json_type(other)
            ))
        }
    };
    Ok(FileSpec {
        path,
        partition,
        content,
        options,
    })
}

/// Decodes base64 text, tolerating line breaks and missing padding.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    engine
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .map_err(|e| format!("content is neither a URL nor valid base64: {e}"))
}

/// Substitutes `{node[key]...}` and `{ports[N][key]...}` fields (the subset of Python's
/// `str.format` IPA's templates use); `{{` and `}}` are literal braces.
pub fn format_url(template: &str, node: &Value, ports: &[Value]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("unmatched '}}' in {template}"));
        }
        let close = tail
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template}"))?;
        out.push_str(&field(&tail[1..close], node, ports)?);
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn field(expr: &str, node: &Value, ports: &[Value]) -> Result<String, String> {
    let bad = || format!("unsupported field {{{expr}}}");
    let name_end = expr.find(['[', '.']).unwrap_or(expr.len());
    let ports_value = Value::Array(ports.to_vec());
    let mut value = match &expr[..name_end] {
        "node" => node,
        "ports" => &ports_value,
        _ => return Err(bad()),
    };
    let mut rest = &expr[name_end..];
    while !rest.is_empty() {
        let (key, next) = if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['[', '.']).unwrap_or(r.len());
            (&r[..end], &r[end..])
        } else {
            return Err(bad());
        };
        value = match value {
            Value::Array(a) => key.parse::<usize>().ok().and_then(|n| a.get(n)),
            Value::Object(o) => o.get(key),
            _ => None,
        }
        .ok_or_else(|| format!("{{{expr}}}: no {key}"))?;
        rest = next;
    }
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "True" } else { "False" }.to_owned()),
        _ => Err(format!("{{{expr}}} is not a scalar")),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Applies one entry inside the mounted `root`.
fn apply(root: &RootDir, spec: &FileSpec, verify: &Value) -> Result<(), String> {
    let path = spec.path.as_string();
    if spec.partition.is_none() {
        // IPA finds the partition holding the path's first directory; here the root
        // was chosen already and must hold it.
        let top = &spec.path.parts()[0];
        if !root.is_dir(top).map_err(|e| e.to_string())? {
            return Err(format!("no partition found with path {top}"));
        }
    }
    match &spec.content {
        Content::Delete => {
            let removed = root.remove_file(&path).map_err(|e| e.to_string())?;
            tracing::info!(path = %spec.path, removed, "inject_files: deleted");
        }
        Content::Inline(bytes) => {
            root.write_file(&path, bytes, &spec.options)
                .map_err(|e| e.to_string())?;
            tracing::info!(path = %spec.path, bytes = bytes.len(), "inject_files: written");
        }
        Content::Url(url) => {
            let file = root
                .create_file(&path, &spec.options)
                .map_err(|e| e.to_string())?;
            let (file, bytes) = download(url, file, verify)?;
            root.finish_file(&path, file, &spec.options)
                .map_err(|e: SafePathError| e.to_string())?;
            tracing::info!(path = %spec.path, bytes, "inject_files: downloaded");
        }
    }
    Ok(())
}

/// Streams `url` into `file` on the agent's runtime; returns the file and byte count.
fn download(
    url: &str,
    mut file: std::fs::File,
    verify: &Value,
) -> Result<(std::fs::File, u64), String> {
    let shown = crate::image::url::RedactedUrl::parse(url)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "<invalid URL>".to_owned());
    let (insecure, cafile) = match verify {
        Value::Bool(false) => (true, None),
        Value::String(path) if !path.is_empty() => (false, Some(std::path::PathBuf::from(path))),
        _ => (false, None),
    };
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no runtime to download content on".to_owned())?;
    let url = url.to_owned();
    let fetched = handle.block_on(async move {
        let tls = crate::tls_client::client_config_with(insecure, cafile.as_deref(), "1.2", true)
            .map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(FETCH_TIMEOUT)
            .read_timeout(FETCH_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| e.without_url().to_string())?;
        let mut resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        let mut total = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            file.write_all(&chunk)
                .map_err(|e| format!("writing: {e}"))?;
            total += chunk.len() as u64;
        }
        Ok((file, total))
    });
    fetched.map_err(|e| format!("fetching {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(files: Value) -> Map<String, Value> {
        json!({ "files": files }).as_object().unwrap().clone()
    }

    #[test]
    fn merges_node_property_first() {
        let node = json!({"uuid": "u1", "properties": {"inject_files": [
            {"path": "/etc/a", "content": "YQ=="}]}});
        let files = parse_files(
            &node,
            &[],
            &args(json!([{"path": "/etc/b", "content": "Yg", "mode": 384},
                         {"path": "/etc/c", "deleted": true},
                         {"path": "/etc/d", "content": null},
                         {"path": "x", "partition": 2, "content": ""}])),
        )
        .unwrap();
        let paths: Vec<String> = files.iter().map(|f| f.path.to_string()).collect();
        assert_eq!(paths, ["/etc/a", "/etc/b", "/etc/c", "/etc/d", "/x"]);
        assert_eq!(files[0].content, Content::Inline(b"a".to_vec()));
        assert_eq!(files[1].content, Content::Inline(b"b".to_vec()));
        assert_eq!(files[1].options.mode, Some(0o600));
        assert_eq!(files[2].content, Content::Delete);
        assert_eq!(files[3].content, Content::Delete);
        assert_eq!(files[4].partition.as_deref(), Some("2"));
        assert_eq!(files[4].content, Content::Inline(Vec::new()));
    }

    #[test]
    fn validation_collects_every_failure() {
        let node = json!({"properties": {}});
        let bad = json!([
            {"path": "/etc/a", "content": "YQ==", "colour": "red"},
            {"content": "YQ=="},
            {"path": "/top", "content": "YQ=="},
            {"path": "/etc/dir/", "content": "YQ=="},
            {"path": "/etc/../../x", "content": "YQ=="},
            {"path": "/etc/a", "content": "YQ==", "deleted": true},
            {"path": "/etc/a", "content": "YQ==", "mode": "0644"},
            {"path": "/etc/a", "content": "%%%"},
            {"path": "/etc/a"},
        ]);
        let err = parse_files(&node, &[], &args(bad)).unwrap_err();
        let HwError::InvalidParams(msg) = err else {
            panic!("expected InvalidParams")
        };
        for needle in [
            "colour",
            "expected a path",
            "requires \"partition\"",
            "directories not supported",
            "'..'",
            "content cannot be used with deleted",
            "mode must be a number",
            "base64",
            "expected content",
        ] {
            assert!(msg.contains(needle), "{needle} missing in {msg}");
        }
        assert_eq!(msg.matches("file ").count(), 9, "{msg}");
        let not_list = parse_files(
            &json!({"properties": {"inject_files": {}}}),
            &[],
            &Map::new(),
        );
        assert!(matches!(not_list, Err(HwError::InvalidParams(m)) if m.contains("must be a list")));
        assert!(parse_files(&node, &[], &Map::new()).unwrap().is_empty());
    }

    #[test]
    fn url_templates_take_node_and_port_fields() {
        let node = json!({"uuid": "n-1", "properties": {"cpu_arch": "x86_64", "n": 3}});
        let ports = [json!({"address": "52:54:00:12:34:56"})];
        assert_eq!(
            format_url(
                "http://h/{node[uuid]}/{node[properties][cpu_arch]}/{ports[0][address]}/{node.properties.n}/{{x}}",
                &node,
                &ports
            )
            .unwrap(),
            "http://h/n-1/x86_64/52:54:00:12:34:56/3/{x}"
        );
        for bad in [
            "http://h/{foo}",
            "http://h/{node[nope]}",
            "http://h/{node",
            "http://h/}",
            "http://h/{node[properties]}",
        ] {
            assert!(format_url(bad, &node, &ports).is_err(), "{bad}");
        }
    }
}
