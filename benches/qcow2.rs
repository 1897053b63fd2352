//! Throughput of the streaming qcow2 reader against `qemu-img convert -O raw` on the same
//! image: a 1 GiB guest (random data, explicit zeros and holes) converted by qemu-img to
//! qcow2 with 64 KiB clusters, plus 256 MiB of compressible text stored as deflate and as
//! zstd clusters. Files live on /dev/shm, so the disk is out of the picture; the page
//! cache is warm. Three runs each, median reported.
//!
//! Run with `cargo bench --bench qcow2` (needs qemu-img; IRA_BENCH_DIR overrides the
//! directory).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ira::image::qcow2::{stream, GuestSink, Limits, Summary};

const MIB: u64 = 1 << 20;
/// [`MIB`] as a buffer length.
const MIB_LEN: usize = 1 << 20;
const RUNS: usize = 3;

struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// 1 GiB: per 16 MiB, 10 MiB random, 3 MiB written zeros, 3 MiB hole.
fn make_mixed(path: &Path) {
    let f = File::create(path).expect("create raw");
    f.set_len(1024 * MIB).expect("size raw");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; 10 * MIB_LEN];
    let zeros = vec![0u8; 3 * MIB_LEN];
    for block in 0..64 {
        let at = block * 16 * MIB;
        rng.fill(&mut buf);
        f.write_all_at(&buf, at).expect("write raw");
        f.write_all_at(&zeros, at + 10 * MIB).expect("write raw");
    }
}

/// 256 MiB of text lines that compress about 5:1.
fn make_text(path: &Path) {
    let f = File::create(path).expect("create raw");
    let mut rng = Rng(42);
    let mut chunk = Vec::with_capacity(4 * MIB_LEN + 100);
    let mut at = 0;
    while at < 256 * MIB {
        chunk.clear();
        while chunk.len() < 4 * MIB_LEN {
            let mut n = [0u8; 8];
            rng.fill(&mut n);
            let v = u64::from_le_bytes(n);
            chunk.extend_from_slice(
                format!(
                    "{:06} log line {} of node {:x}\n",
                    v % 1_000_000,
                    v % 97,
                    v % 4096
                )
                .as_bytes(),
            );
        }
        chunk.truncate(4 * MIB_LEN);
        f.write_all_at(&chunk, at).expect("write raw");
        at += 4 * MIB;
    }
}

fn qemu_img(args: &[&str]) -> bool {
    Command::new("qemu-img")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Discards guest data: the decoder alone.
struct Discard;

impl GuestSink for Discard {
    fn write_at(&mut self, _off: u64, data: &[u8]) -> io::Result<()> {
        std::hint::black_box(data);
        Ok(())
    }
    fn zero(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Writes guest data into a sparse file on tmpfs, as qemu-img does with its output.
struct FileSink(File);

impl GuestSink for FileSink {
    fn write_at(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, off)
    }
    fn zero(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        // A fresh sparse file already reads as zeros.
        Ok(())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(label: &str, virtual_size: u64, file_size: u64, d: Duration) {
    let s = d.as_secs_f64();
    println!(
        "{label:<44} {:>8.1} ms  {:>7.0} MB/s guest  {:>7.0} MB/s image",
        s * 1e3,
        virtual_size as f64 / s / 1e6,
        file_size as f64 / s / 1e6
    );
}

fn ours(img: &Path, out: Option<&Path>) -> (Summary, Duration) {
    if let Some(o) = out {
        // Freeing the previous output's pages is not part of the conversion.
        let _ = std::fs::remove_file(o);
    }
    let start = Instant::now();
    // 1 MiB reads, the size of the pipeline's buffers.
    let src = std::io::BufReader::with_capacity(1 << 20, File::open(img).expect("open qcow2"));
    let summary = match out {
        None => stream(src, &mut Discard, Limits::default()),
        Some(o) => {
            let f = File::create(o).expect("create out");
            let mut sink = FileSink(f);
            let s = stream(src, &mut sink, Limits::default());
            if let Ok(s) = &s {
                sink.0.set_len(s.virtual_size).expect("size out");
            }
            s
        }
    }
    .expect("decode");
    (summary, start.elapsed())
}

fn theirs(img: &Path, out: &Path, cache: &str) -> Option<Duration> {
    let _ = std::fs::remove_file(out);
    let start = Instant::now();
    let ok = qemu_img(&[
        "convert",
        "-O",
        "raw",
        "-t",
        cache,
        img.to_str()?,
        out.to_str()?,
    ]);
    ok.then(|| start.elapsed())
}

fn bench(dir: &Path, label: &str, img: &Path) {
    let file_size = std::fs::metadata(img).expect("stat").len();
    // Warm the page cache and check the result once against qemu-img.
    let (summary, _) = ours(img, Some(&dir.join("ours.raw")));
    let vsize = summary.virtual_size;
    let cache = if theirs(img, &dir.join("theirs.raw"), "none").is_some() {
        "none"
    } else {
        "writeback"
    };
    let same = std::fs::read(dir.join("ours.raw")).expect("read")
        == std::fs::read(dir.join("theirs.raw")).expect("read");
    assert!(same, "{label}: output differs from qemu-img's");
    println!(
        "{label}: virtual {} MiB, image {} MiB, {summary:?}",
        vsize / MIB,
        file_size / MIB
    );

    let null = median((0..RUNS).map(|_| ours(img, None).1).collect());
    report(
        &format!("{label}: ira decode -> discard"),
        vsize,
        file_size,
        null,
    );
    let file = median(
        (0..RUNS)
            .map(|_| ours(img, Some(&dir.join("ours.raw"))).1)
            .collect(),
    );
    report(
        &format!("{label}: ira decode -> tmpfs file"),
        vsize,
        file_size,
        file,
    );
    let q = median(
        (0..RUNS)
            .map(|_| theirs(img, &dir.join("theirs.raw"), cache).expect("qemu-img"))
            .collect(),
    );
    report(
        &format!("{label}: qemu-img convert -t {cache} -> tmpfs"),
        vsize,
        file_size,
        q,
    );
}

fn main() {
    let base = std::env::var_os("IRA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    let d = dir.path();
    let p = |n: &str| d.join(n);

    make_mixed(&p("mixed.raw"));
    let mixed = p("mixed.qcow2");
    let raw = p("mixed.raw");
    assert!(qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().expect("utf-8 path"),
        mixed.to_str().expect("utf-8 path"),
    ]));
    std::fs::remove_file(p("mixed.raw")).expect("rm");
    bench(d, "1 GiB mixed, 64k clusters", &mixed);

    make_text(&p("text.raw"));
    for (name, opts) in [
        ("deflate", "cluster_size=64k"),
        ("zstd", "compression_type=zstd"),
    ] {
        let img = p(&format!("text-{name}.qcow2"));
        let raw = p("text.raw");
        assert!(qemu_img(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            opts,
            raw.to_str().expect("utf-8 path"),
            img.to_str().expect("utf-8 path"),
        ]));
        bench(d, &format!("256 MiB text, {name} clusters"), &img);
    }
}
