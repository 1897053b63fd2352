//! Running the external tools the tests check results with (sfdisk, losetup, qemu-img),
//! panicking with their output when they fail.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Runs `cmd` with `args`, panics unless it succeeds, and returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` until it succeeds, retrying only while it fails to measure CPU usage.
pub fn run_retrying(cmd: &str, args: &[&str]) {
    // qemu-img times its LUKS key derivation with getrusage; on a busy machine that
    // measurement fails now and then ("Unable to get accurate CPU usage"): try again.
    for _ in 0..10 {
        let out = Command::new(cmd).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return;
        }
        assert!(
            stderr.contains("Unable to get accurate CPU usage"),
            "{cmd} {args:?}: {stderr}"
        );
    }
    panic!("{cmd} {args:?}: CPU usage never measurable");
}

/// The `partitiontable` object of `sfdisk --json` on `path`.
pub fn sfdisk_json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref().to_str().expect("UTF-8 path");
    let out = run("sfdisk", &["--json", path]);
    serde_json::from_str::<Value>(&out).unwrap()["partitiontable"].clone()
}

/// Starts `cmd` with `input` written to its stdin, which is then closed.
pub fn spawn_with_stdin(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// What blkid's low-level probe (`blkid -p`, never its cache) finds in `len` bytes at
/// `offset` of `path` (up to the end when `len` is `None`): KEY=VALUE pairs in blkid's
/// order with its `\ ` escapes undone, none when it finds nothing.
pub fn blkid_probe(path: &Path, offset: u64, len: Option<u64>) -> Vec<(String, String)> {
    let mut cmd = Command::new("blkid");
    cmd.args(["-p", "-o", "export", "-O", &offset.to_string()]);
    if let Some(len) = len {
        cmd.arg("-S").arg(len.to_string());
    }
    // blkid exits 2 when it finds nothing: that is an empty answer, not a failure.
    let out = cmd.arg(path).output().expect("run blkid");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("\\ ", " ")))
        .collect()
}

/// The value of `key` among blkid's pairs.
pub fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
