//! The diagnostics archive: a size-bounded tar.gz of what helps explain a failure,
//! shared by the `log.collect_system_logs` command and the inspection `logs` collector.
//!
//! The archive holds the agent's own log (`ira.log`, from the in-memory [`ring`]), the
//! systemd journal of this boot (`journal`, when the system has `journalctl`), kernel
//! messages (`dmesg`, from `/dev/kmsg`), a few `/proc` files, the interface addresses
//! (`ip_addr`), the inventory (`inventory.json`), the udev database (`udev_data` listing
//! plus block-device entries under `udev/`), `/var/log`, and `collection_notes` listing
//! what was missing or cut. Files (and `journalctl`) are taken under the given root;
//! every member and the whole archive are size-bounded, the journal also in time
//! (INVARIANTS 5).

pub mod ring;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;

use ring::LogRing;

/// `/proc` files copied as they are (relative to the root).
const PROC_FILES: &[&str] = &[
    "proc/cmdline",
    "proc/mounts",
    "proc/meminfo",
    "proc/partitions",
    "proc/mdstat",
    "proc/net/dev",
    "proc/net/route",
    "proc/net/if_inet6",
];

/// Size bounds of one collection.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Largest single member; longer logs keep their tail.
    pub per_file: u64,
    /// Largest `dmesg` member.
    pub dmesg: u64,
    /// All members together, before compression.
    pub total: u64,
    /// Files taken from `/var/log`.
    pub var_log_files: usize,
    /// Directory depth walked below `/var/log`.
    pub var_log_depth: usize,
    /// Entries of the udev database listed.
    pub udev_entries: usize,
    /// Largest `ira.log` member (the newest whole lines of the agent's log).
    pub agent_log: u64,
    /// Largest `journal` member (its newest bytes).
    pub journal: u64,
    /// Journal lines asked of `journalctl` (`--lines`).
    pub journal_lines: u64,
    /// Time `journalctl` may run before it is killed (the conductor waits for the
    /// command; its `[agent]command_timeout` is 60 s by default).
    pub journal_timeout: Duration,
}

impl LogLimits {
    /// Bounds for the inspection `logs` collector: Ironic refuses inspection bodies over
    /// 16 MiB (`[api]max_json_body_size_inspection`), and base64 adds a third.
    pub fn inspection() -> Self {
        Self {
            total: 8 * 1024 * 1024,
            // As IPA's `logs` collector.
            journal_lines: 10_000,
            ..Self::default()
        }
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            per_file: 1024 * 1024,
            dmesg: 4 * 1024 * 1024,
            total: 32 * 1024 * 1024,
            var_log_files: 200,
            var_log_depth: 4,
            udev_entries: 4096,
            agent_log: ring::DEFAULT_CAPACITY as u64,
            journal: 4 * 1024 * 1024,
            journal_lines: 100_000,
            journal_timeout: Duration::from_secs(20),
        }
    }
}

/// Builds the gzip-compressed tar archive; `agent_log` is the agent's own log
/// ([`LogRing::global`] in the agent).
pub fn build_archive(
    root: &Path,
    inventory_json: &[u8],
    agent_log: &LogRing,
    limits: &LogLimits,
) -> io::Result<Vec<u8>> {
    let mut archive = Archive::new(limits.total);
    archive.add("inventory.json", inventory_json)?;
    // First after the inventory, so the budget never starves the one log that says why
    // a step failed.
    let cap = usize::try_from(limits.agent_log).unwrap_or(usize::MAX);
    archive.add("ira.log", &agent_log.contents(cap))?;
    add_journal(&mut archive, root, limits)?;

    let dmesg = read_kmsg(&root.join("dev/kmsg"), limits.dmesg);
    match dmesg {
        Ok(text) => archive.add("dmesg", text.as_bytes())?,
        Err(err) => archive.note(format!("dmesg: {err}")),
    }
    for name in PROC_FILES {
        match read_tail(&root.join(name), limits.per_file) {
            Ok(data) => archive.add(name, &data)?,
            Err(err) => archive.note(format!("{name}: {err}")),
        }
    }
    archive.add("ip_addr", ip_addr().as_bytes())?;
    add_udev(&mut archive, root, limits)?;
    let mut taken = 0;
    add_tree(
        &mut archive,
        root,
        Path::new("var/log"),
        limits,
        0,
        &mut taken,
    )?;
    archive.finish()
}

/// A tar.gz being written in memory, with a byte budget.
struct Archive {
    builder: tar::Builder<GzEncoder<Vec<u8>>>,
    remaining: u64,
    mtime: u64,
    notes: String,
}

impl Archive {
    fn new(budget: u64) -> Self {
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            builder: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default())),
            remaining: budget,
            mtime,
            notes: String::new(),
        }
    }

    fn note(&mut self, line: String) {
        self.notes.push_str(&line);
        self.notes.push('\n');
    }

    /// Adds a member, cut to the remaining budget (keeping the tail).
    fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let budget = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let data = if data.len() > budget {
            self.note(format!(
                "{name}: cut to {budget} bytes (archive size limit)"
            ));
            &data[data.len() - budget..]
        } else {
            data
        };
        if data.is_empty() && budget == 0 {
            return Ok(());
        }
        self.append(name, data)?;
        self.remaining -= data.len() as u64;
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        self.builder.append_data(&mut header, name, data)
    }

    fn finish(mut self) -> io::Result<Vec<u8>> {
        let notes = std::mem::take(&mut self.notes);
        // Outside the budget on purpose: it says what the budget cut.
        self.append("collection_notes", notes.as_bytes())?;
        self.builder.into_inner()?.finish()
    }
}

/// Reads at most the last `cap` bytes of a file (procfs files report size 0, so the
/// whole file is streamed and only the tail is kept).
fn read_tail(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    read_tail_from(File::open(path)?, cap).map(|(data, _)| data)
}

/// Kernel messages from `/dev/kmsg`, read without blocking until the end of the ring
/// buffer, as `[seconds] text` lines, keeping the newest `cap` bytes.
fn read_kmsg(path: &Path, cap: u64) -> io::Result<String> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut out = String::new();
    // One read returns one record; records are at most about 8 KiB.
    let mut record = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                push_kmsg_record(&mut out, &String::from_utf8_lossy(&record[..n]));
                if out.len() > cap.saturating_mul(2) {
                    out = keep_tail(&out, cap);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // The reader fell behind and records were overwritten: keep reading.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(if out.len() > cap {
        keep_tail(&out, cap)
    } else {
        out
    })
}

/// `prio,seq,usec,flags;text` (plus continuation lines) -> `[sec.usec] text`.
fn push_kmsg_record(out: &mut String, record: &str) {
    let (prefix, text) = record.split_once(';').unwrap_or(("", record));
    let usec: u64 = prefix
        .split(',')
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let message = text.lines().next().unwrap_or_default();
    let _ = writeln!(
        out,
        "[{:5}.{:06}] {message}",
        usec / 1_000_000,
        usec % 1_000_000
    );
}

fn keep_tail(text: &str, cap: usize) -> String {
    let mut start = text.len().saturating_sub(cap);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// The running system's interface addresses, one line per address.
fn ip_addr() -> String {
    let mut out = String::new();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let addr = a.address.map(|s| s.to_string()).unwrap_or_default();
                let mask = a.netmask.map(|s| s.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{} flags={:?} addr={addr} netmask={mask}",
                    a.interface_name, a.flags
                );
            }
        }
        Err(err) => {
            let _ = writeln!(out, "getifaddrs failed: {}", err.desc());
        }
    }
    out
}

/// Where `journalctl` may be, relative to the root.
const JOURNALCTL: &[&str] = &["usr/bin/journalctl", "bin/journalctl"];
/// Bytes of `journalctl`'s stderr kept for the notes.
const STDERR_CAP: u64 = 2048;
/// How long a killed program's pipes are waited for.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// `journal`: `journalctl --no-pager -b` as IPA collects it, when the system has it.
fn add_journal(archive: &mut Archive, root: &Path, limits: &LogLimits) -> io::Result<()> {
    let Some(program) = JOURNALCTL
        .iter()
        .map(|rel| root.join(rel))
        .find(|p| is_executable(p))
    else {
        archive.note("journal: no journalctl on this system".to_owned());
        return Ok(());
    };
    let mut args: Vec<OsString> = vec![
        "--no-pager".into(),
        "--full".into(),
        "-b".into(),
        format!("--lines={}", limits.journal_lines).into(),
    ];
    if root != Path::new("/") {
        // The journal files of that system, not of the one running the agent.
        let mut arg = OsString::from("--root=");
        arg.push(root);
        args.push(arg);
    }
    match run_bounded(&program, &args, limits.journal, limits.journal_timeout) {
        Ok(out) => {
            if out.timed_out {
                archive.note(format!(
                    "journal: journalctl killed after {:?}, output so far kept",
                    limits.journal_timeout
                ));
            } else if let Some(status) = out.status.filter(|s| !s.success()) {
                archive.note(format!(
                    "journal: journalctl {status}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            if out.stdout_cut {
                archive.note(format!(
                    "journal: cut to its newest {} bytes",
                    limits.journal
                ));
            }
            if !out.stdout.is_empty() {
                archive.add("journal", &out.stdout)?;
            }
        }
        Err(err) => archive.note(format!("journal: running {}: {err}", program.display())),
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a program run by [`run_bounded`] left.
struct Output {
    /// The newest bytes of its stdout.
    stdout: Vec<u8>,
    /// Older stdout bytes were dropped.
    stdout_cut: bool,
    /// The start of its stderr.
    stderr: Vec<u8>,
    /// Its exit status, `None` when it could not be reaped.
    status: Option<ExitStatus>,
    /// It was killed at the deadline.
    timed_out: bool,
}

/// Runs `program` with no stdin, keeping the last `cap` bytes of its stdout; at
/// `timeout` its process group is killed (a helper it started would hold the pipe open).
fn run_bounded(
    program: &Path,
    args: &[OsString],
    cap: u64,
    timeout: Duration,
) -> io::Result<Output> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .process_group(0)
        .spawn()?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("pipes of the child missing"));
    };
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = out_tx.send(read_tail_from(stdout, cap));
    });
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut head = Vec::new();
        let mut stderr = stderr;
        let got = (&mut stderr).take(STDERR_CAP).read_to_end(&mut head);
        // Drain the rest so the program never blocks on a full pipe.
        let _ = io::copy(&mut stderr, &mut io::sink());
        let _ = err_tx.send(got.map(|_| head));
    });

    // Until the deadline: the end of stdout, then the end of the program.
    let stdout = out_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                timed_out = Instant::now() >= deadline;
                kill_group(&child);
                break child.wait().ok();
            }
        }
    };
    let stdout = match stdout {
        Some(read) => read?,
        None => out_rx
            .recv_timeout(KILL_GRACE)
            .unwrap_or_else(|_| Ok((Vec::new(), false)))?,
    };
    let stderr = err_rx
        .recv_timeout(KILL_GRACE)
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Ok(Output {
        stdout: stdout.0,
        stdout_cut: stdout.1,
        stderr,
        status,
        timed_out,
    })
}

/// Kills the process group led by `child` (it was started with `process_group(0)`).
fn kill_group(child: &std::process::Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    let pgid = nix::unistd::Pid::from_raw(pid);
    if let Err(err) = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL) {
        tracing::warn!(pid, error = %err, "killing a log helper's process group failed");
    }
}

/// The last `cap` bytes of a stream, and whether older bytes were dropped.
fn read_tail_from(mut reader: impl Read, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
        if data.len() > cap.saturating_mul(2) {
            data.drain(..data.len() - cap);
            cut = true;
        }
    }
    if data.len() > cap {
        data.drain(..data.len() - cap);
        cut = true;
    }
    Ok((data, cut))
}

/// `udev_data`: the names in the udev database; `udev/<name>`: block-device entries.
fn add_udev(archive: &mut Archive, root: &Path, limits: &LogLimits) -> io::Result<()> {
    let dir = root.join("run/udev/data");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .take(limits.udev_entries)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(err) => {
            archive.note(format!("run/udev/data: {err}"));
            return Ok(());
        }
    };
    names.sort();
    archive.add("udev_data", (names.join("\n") + "\n").as_bytes())?;
    for name in names.iter().filter(|n| n.starts_with('b')) {
        if let Ok(data) = read_tail(&dir.join(name), limits.per_file) {
            archive.add(&format!("udev/{name}"), &data)?;
        }
    }
    Ok(())
}

/// Regular files below `rel` (symlinks are not followed), depth- and count-bounded.
fn add_tree(
    archive: &mut Archive,
    root: &Path,
    rel: &Path,
    limits: &LogLimits,
    depth: usize,
    taken: &mut usize,
) -> io::Result<()> {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return Ok(());
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if *taken >= limits.var_log_files {
            archive.note(format!("{}: file count limit reached", rel.display()));
            return Ok(());
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let child = rel.join(entry.file_name());
        if kind.is_dir() && depth < limits.var_log_depth {
            add_tree(archive, root, &child, limits, depth + 1, taken)?;
        } else if kind.is_file() {
            match read_tail(&root.join(&child), limits.per_file) {
                Ok(data) => {
                    archive.add(&child.to_string_lossy(), &data)?;
                    *taken += 1;
                }
                Err(err) => archive.note(format!("{}: {err}", child.display())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::collections::BTreeMap;

    fn members(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut tar = tar::Archive::new(GzDecoder::new(archive));
        tar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/net")).unwrap();
        std::fs::write(root.join("proc/cmdline"), "ipa-api-url=http://x\n").unwrap();
        std::fs::write(root.join("proc/mounts"), "proc /proc proc rw 0 0\n").unwrap();
        std::fs::write(root.join("proc/meminfo"), "MemTotal: 1 kB\n").unwrap();
        std::fs::create_dir_all(root.join("run/udev/data")).unwrap();
        std::fs::write(root.join("run/udev/data/b8:0"), "E:ID_SERIAL=disk0\n").unwrap();
        std::fs::write(root.join("run/udev/data/n3"), "E:X=1\n").unwrap();
        std::fs::create_dir_all(root.join("var/log/sub")).unwrap();
        std::fs::write(root.join("var/log/messages"), "hello log\n").unwrap();
        std::fs::write(root.join("var/log/sub/deep.log"), "deep\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("var/log/link")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/kmsg"), "6,1,1500000,-;Linux version 6.1\n").unwrap();
        dir
    }

    #[test]
    fn archive_holds_the_expected_members() {
        let dir = fixture();
        let out = build_archive(
            dir.path(),
            b"{\"cpu\":{}}",
            &ring_with("step failed: disk busy"),
            &LogLimits::default(),
        )
        .unwrap();
        let m = members(&out);
        assert_eq!(m["inventory.json"], b"{\"cpu\":{}}");
        assert_eq!(m["proc/cmdline"], b"ipa-api-url=http://x\n");
        assert!(m.contains_key("proc/mounts") && m.contains_key("proc/meminfo"));
        assert!(m.contains_key("ip_addr"));
        assert_eq!(m["udev_data"], b"b8:0\nn3\n");
        assert_eq!(m["udev/b8:0"], b"E:ID_SERIAL=disk0\n");
        assert!(!m.contains_key("udev/n3"));
        assert_eq!(m["var/log/messages"], b"hello log\n");
        assert_eq!(m["var/log/sub/deep.log"], b"deep\n");
        assert!(!m.contains_key("var/log/link"), "symlinks are not followed");
        assert_eq!(m["dmesg"], b"[    1.500000] Linux version 6.1\n");
        let notes = String::from_utf8(m["collection_notes"].clone()).unwrap();
        assert!(notes.contains("proc/partitions"), "{notes}");
        assert_eq!(m["ira.log"], b"step failed: disk busy\n");
        assert!(!m.contains_key("journal"));
        assert!(notes.contains("journal: no journalctl"), "{notes}");
    }

    fn ring_with(line: &str) -> LogRing {
        let ring = LogRing::new(4096);
        ring.push(line.as_bytes());
        ring
    }

    /// An executable `usr/bin/journalctl` under `root` running `script`.
    fn fake_journalctl(root: &Path, script: &str) {
        let bin = root.join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.join("journalctl");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn notes(m: &BTreeMap<String, Vec<u8>>) -> String {
        String::from_utf8(m["collection_notes"].clone()).unwrap()
    }

    #[test]
    fn a_full_ring_keeps_the_archive_bounded() {
        let dir = fixture();
        let ring = LogRing::new(64 * 1024);
        for i in 0..20_000 {
            ring.push(format!("2026-01-01T00:00:00Z  INFO ira: line {i:06}\n").as_bytes());
        }
        let limits = LogLimits {
            agent_log: 10_000,
            ..LogLimits::default()
        };
        let m = members(&build_archive(dir.path(), b"{}", &ring, &limits).unwrap());
        let log = String::from_utf8(m["ira.log"].clone()).unwrap();
        let mut lines = log.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("[ira log: "), "{header}");
        assert!(log.len() <= 10_000 + header.len() + 1, "{}", log.len());
        assert!(log.ends_with("line 019999\n"));
        assert!(lines.all(|l| l.starts_with("2026-01-01T00:00:00Z  INFO ira: line ")));

        // Without a member bound, the ring's capacity is the bound.
        let m = members(&build_archive(dir.path(), b"{}", &ring, &LogLimits::default()).unwrap());
        let log = &m["ira.log"];
        assert!(log.len() <= 64 * 1024 + 200, "{}", log.len());
        assert!(log.len() > 60 * 1024, "{}", log.len());
    }

    #[test]
    fn the_journal_comes_from_journalctl_under_the_root() {
        let dir = fixture();
        fake_journalctl(
            dir.path(),
            "echo \"journal args: $*\"\necho erase failed: EIO",
        );
        let limits = LogLimits {
            journal_lines: 77,
            ..LogLimits::default()
        };
        let m = members(&build_archive(dir.path(), b"{}", &LogRing::new(64), &limits).unwrap());
        let journal = String::from_utf8(m["journal"].clone()).unwrap();
        assert_eq!(
            journal,
            format!(
                "journal args: --no-pager --full -b --lines=77 --root={}\nerase failed: EIO\n",
                dir.path().display()
            )
        );
        assert!(!notes(&m).contains("journal"), "{}", notes(&m));
    }

    #[test]
    fn a_failing_journalctl_is_noted_and_its_output_bounded() {
        let dir = fixture();
        fake_journalctl(
            dir.path(),
            "head -c 300000 /dev/zero | tr '\\0' j\necho No journal files were found. >&2\nexit 1",
        );
        let limits = LogLimits {
            journal: 1000,
            ..LogLimits::default()
        };
        let m = members(&build_archive(dir.path(), b"{}", &LogRing::new(64), &limits).unwrap());
        assert_eq!(m["journal"], vec![b'j'; 1000]);
        let notes = notes(&m);
        assert!(
            notes.contains("journal: journalctl exit status: 1: No journal files were found."),
            "{notes}"
        );
        assert!(
            notes.contains("journal: cut to its newest 1000 bytes"),
            "{notes}"
        );
    }

    #[test]
    fn a_hanging_journalctl_is_killed_at_the_deadline() {
        let dir = fixture();
        // The child holds stdout open too: only killing the group ends the read.
        fake_journalctl(
            dir.path(),
            "echo before the hang\nsleep 60 &\nsleep 60\necho never",
        );
        let limits = LogLimits {
            journal_timeout: Duration::from_millis(300),
            ..LogLimits::default()
        };
        let start = Instant::now();
        let m = members(&build_archive(dir.path(), b"{}", &LogRing::new(64), &limits).unwrap());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(m["journal"], b"before the hang\n");
        assert!(
            notes(&m).contains("journal: journalctl killed after 300ms"),
            "{}",
            notes(&m)
        );
    }

    #[test]
    fn budget_and_file_caps_hold() {
        let dir = fixture();
        std::fs::write(dir.path().join("var/log/big"), vec![b'x'; 10_000]).unwrap();
        let limits = LogLimits {
            per_file: 1000,
            total: 5000,
            ..LogLimits::default()
        };
        let out = build_archive(dir.path(), b"{}", &LogRing::new(4096), &limits).unwrap();
        let m = members(&out);
        assert_eq!(m["var/log/big"].len(), 1000);
        let total: usize = m
            .iter()
            .filter(|(k, _)| *k != "collection_notes")
            .map(|(_, v)| v.len())
            .sum();
        assert!(total <= 5000, "{total}");
    }

    #[test]
    fn read_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read_tail(&path, 1000).unwrap(), &data[data.len() - 1000..]);
    }
}
