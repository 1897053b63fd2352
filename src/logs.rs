//! The diagnostics archive: a size-bounded tar.gz of what helps explain a failure,
//! shared by the `log.collect_system_logs` command and the inspection `logs` collector.
//!
//! The archive holds kernel messages (`dmesg`, from `/dev/kmsg`), a few `/proc` files,
//! the interface addresses (`ip_addr`), the inventory (`inventory.json`), the udev
//! database (`udev_data` listing plus block-device entries under `udev/`), `/var/log`,
//! and `collection_notes` listing what was missing or cut. Files are read under the
//! given root; every file and the whole archive are size-bounded (INVARIANTS 5).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;

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
}

impl LogLimits {
    /// Bounds for the inspection `logs` collector: Ironic refuses inspection bodies over
    /// 16 MiB (`[api]max_json_body_size_inspection`), and base64 adds a third.
    pub fn inspection() -> Self {
        Self {
            total: 8 * 1024 * 1024,
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
        }
    }
}

/// Builds the gzip-compressed tar archive.
pub fn build_archive(
    root: &Path,
    inventory_json: &[u8],
    limits: &LogLimits,
) -> io::Result<Vec<u8>> {
    let mut archive = Archive::new(limits.total);
    archive.add("inventory.json", inventory_json)?;

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
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut file = File::open(path)?;
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
        if data.len() > cap.saturating_mul(2) {
            data.drain(..data.len() - cap);
        }
    }
    if data.len() > cap {
        data.drain(..data.len() - cap);
    }
    Ok(data)
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
        let out = build_archive(dir.path(), b"{\"cpu\":{}}", &LogLimits::default()).unwrap();
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
        let out = build_archive(dir.path(), b"{}", &limits).unwrap();
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
