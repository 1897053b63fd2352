//! The streaming qcow2 reader against qemu-img: images made by qemu-img/qemu-io from a
//! generated raw file (random, compressible, zero and hole regions) are decoded from a
//! forward-only stream and compared byte for byte with `qemu-img convert -O raw`.
//! Refusals, malformed tables and mutated images must fail cleanly, with bounded memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::cmd::run_retrying;
use ira::image::format::{self, Format, Safety};
use ira::image::qcow2::{stream, GuestSink, Limits, Qcow2Error, Qcow2Stream, Summary};
use proptest::prelude::*;

// ---- allocation accounting (per thread), to show memory stays bounded ----------------

struct Counting;

thread_local! {
    static CUR: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// A size as a counter delta; a Layout's size never exceeds isize::MAX, so no clamping happens.
fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

fn bump(delta: isize) {
    let _ = CUR.try_with(|c| {
        let v = c.get() + delta;
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments and
// only adds bookkeeping on thread-local counters, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            bump(signed(l.size()));
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            bump(signed(l.size()));
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) };
        bump(-signed(l.size()));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            bump(signed(new) - signed(l.size()));
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak bytes it held on this thread.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let start = CUR.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, PEAK.with(Cell::get) - start)
}

// ---- image making ---------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic test data, no dependency.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng(seed | 1).fill(&mut v);
    v
}

/// Text that deflate and zstd shrink well, so qemu-img really stores compressed clusters.
fn compressible(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        let line = format!(
            "line {:08x} of a compressible region {}\n",
            r.next() % 5000,
            r.next() % 7
        );
        v.extend_from_slice(line.as_bytes());
    }
    v.truncate(len);
    v
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
/// [`KIB`] as a buffer length.
const KIB_LEN: usize = 1 << 10;

/// A sparse raw file: random, compressible, explicitly zero and never-written regions,
/// with some at odd sector offsets; `size` need not be a multiple of the cluster size.
fn make_raw(path: &Path, size: u64, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let regions: &[(u64, u64, u8)] = &[
        (0, MIB, b'r'),
        (MIB + 4 * KIB, 300 * KIB, b't'),
        (3 * MIB, 2 * MIB, b'z'),
        (5 * MIB + 1536, 37 * 512, b'r'),
        (6 * MIB, 64 * KIB, b'r'),
        (7 * MIB, 3 * MIB, b't'),
        (12 * MIB + 512, 700 * KIB, b'r'),
    ];
    for (i, &(off, len, kind)) in regions.iter().enumerate() {
        if off + len > size {
            continue;
        }
        let len = usize::try_from(len).unwrap();
        let data = match kind {
            b'r' => random(len, seed + i as u64),
            b't' => compressible(len, seed + i as u64),
            _ => vec![0; len],
        };
        f.write_all_at(&data, off).unwrap();
    }
    let tail = 100 * KIB;
    f.write_all_at(
        &random(usize::try_from(tail).unwrap(), seed ^ 0xdead),
        size - tail,
    )
    .unwrap();
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `qemu-img convert -O raw`: the reference bytes.
fn reference(img: &Path) -> Vec<u8> {
    let out = img.with_extension("ref.raw");
    run_retrying("qemu-img", &["convert", "-O", "raw", p(img), p(&out)]);
    let data = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    data
}

/// Converts the raw source to qcow2 with extra qemu-img arguments.
fn convert(dir: &Path, raw: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.push(p(raw));
    args.push(p(&out));
    run_retrying("qemu-img", &args);
    out
}

// ---- the sink -------------------------------------------------------------------------

/// Collects guest data into memory and records every call, to check that each guest
/// byte is reported exactly once and that writes are whole sectors.
#[derive(Default)]
struct TestSink {
    disk: Vec<u8>,
    calls: Vec<(u64, u64, char)>,
    fail_at: Option<u64>,
}

const POISON: u8 = 0xa5;

impl TestSink {
    fn span(&mut self, off: u64, len: u64) -> &mut [u8] {
        let end = usize::try_from(off + len).unwrap();
        if self.disk.len() < end {
            self.disk.resize(end, POISON);
        }
        &mut self.disk[usize::try_from(off).unwrap()..end]
    }
}

impl GuestSink for TestSink {
    fn write_at(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        if self.fail_at.is_some_and(|f| f < off + data.len() as u64) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.calls.push((off, data.len() as u64, 'w'));
        self.span(off, data.len() as u64).copy_from_slice(data);
        Ok(())
    }
    fn zero(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.calls.push((off, len, 'z'));
        self.span(off, len).fill(0);
        Ok(())
    }
    fn unallocated(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.calls.push((off, len, 'u'));
        self.span(off, len).fill(0);
        Ok(())
    }
}

/// Every guest byte below `size` reported exactly once; writes are whole sectors.
fn check_calls(calls: &[(u64, u64, char)], size: u64) {
    let mut sorted = calls.to_vec();
    sorted.sort();
    let mut at = 0;
    for &(off, len, kind) in &sorted {
        assert_eq!(off, at, "gap or overlap at {at} ({kind} {off}+{len})");
        assert!(len > 0, "empty {kind} call at {off}");
        if kind == 'w' {
            assert_eq!(off % 512, 0, "unaligned write at {off}");
            assert!(
                len % 512 == 0 || off + len == size,
                "partial-sector write {off}+{len}"
            );
        }
        at = off + len;
    }
    assert_eq!(at, size, "guest range not covered to the end");
}

/// Feeds `img` to a fresh reader `chunk` bytes at a time.
fn decode(img: &[u8], chunk: usize, limits: Limits) -> Result<(TestSink, Summary), Qcow2Error> {
    let mut sink = TestSink::default();
    let mut q = Qcow2Stream::new(limits);
    for c in img.chunks(chunk) {
        q.feed(c, &mut sink)?;
    }
    let summary = q.finish(&mut sink)?;
    let size = summary.virtual_size;
    check_calls(&sink.calls, size);
    sink.disk.resize(usize::try_from(size).unwrap(), POISON);
    Ok((sink, summary))
}

fn assert_same(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!("{what}: first difference at guest offset {i:#x}");
    }
}

/// Decodes `img` at several chunk sizes and compares each result with qemu-img's.
fn roundtrip(img: &Path, chunks: &[usize]) -> Summary {
    let want = reference(img);
    let bytes = fs::read(img).unwrap();
    let mut last = None;
    for &chunk in chunks {
        let (sink, summary) = decode(&bytes, chunk, Limits::default())
            .unwrap_or_else(|e| panic!("{} chunk {chunk}: {e}", img.display()));
        assert_same(
            &sink.disk,
            &want,
            &format!("{} chunk {chunk}", img.display()),
        );
        assert_eq!(summary.bytes_read, bytes.len() as u64);
        last = Some(summary);
    }
    last.unwrap()
}

const SIZE: u64 = 13 * MIB + 3 * 512;
const CHUNKS: &[usize] = &[1 << 20, 4097, 65536 + 511];

fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    make_raw(&raw, SIZE, 7);
    raw
}

// ---- round trips ----------------------------------------------------------------------

#[test]
fn v2_default_clusters() {
    let d = tmp();
    let raw = source(d.path());
    let img = convert(d.path(), &raw, "v2.qcow2", &["-o", "compat=0.10"]);
    assert_eq!(&fs::read(&img).unwrap()[4..8], &[0, 0, 0, 2]);
    let s = roundtrip(&img, CHUNKS);
    assert_eq!(s.virtual_size, SIZE);
    assert!(s.unallocated_bytes > 0, "holes stay unallocated: {s:?}");
    assert_same(&fs::read(&raw).unwrap(), &reference(&img), "source");
}

#[test]
fn v3_default_clusters() {
    let d = tmp();
    let raw = source(d.path());
    let img = convert(d.path(), &raw, "v3.qcow2", &["-o", "compat=1.1"]);
    let s = roundtrip(&img, CHUNKS);
    assert!(s.data_bytes > 2 * MIB && s.unallocated_bytes > 0, "{s:?}");
}

#[test]
fn cluster_sizes_512_4k_2m() {
    let d = tmp();
    let raw = source(d.path());
    for cs in ["512", "4k", "2M"] {
        let img = convert(
            d.path(),
            &raw,
            &format!("c{cs}.qcow2"),
            &["-o", &format!("cluster_size={cs}")],
        );
        roundtrip(&img, &[1 << 20, 777]);
    }
}

#[test]
fn compressed_deflate() {
    let d = tmp();
    let raw = source(d.path());
    for cs in ["512", "4k", "64k", "2M"] {
        let img = convert(
            d.path(),
            &raw,
            &format!("z{cs}.qcow2"),
            &["-c", "-o", &format!("cluster_size={cs}")],
        );
        let s = roundtrip(&img, &[1 << 20, 1000]);
        assert!(s.compressed_bytes > MIB, "{cs}: {s:?}");
    }
}

#[test]
fn compressed_zstd() {
    let d = tmp();
    let raw = source(d.path());
    for cs in ["512", "64k"] {
        let img = convert(
            d.path(),
            &raw,
            &format!("zstd{cs}.qcow2"),
            &[
                "-c",
                "-o",
                &format!("compression_type=zstd,cluster_size={cs}"),
            ],
        );
        assert_eq!(
            fs::read(&img).unwrap()[104],
            1,
            "compression type in the header"
        );
        let s = roundtrip(&img, &[1 << 20, 333]);
        assert!(s.compressed_bytes > MIB, "{cs}: {s:?}");
    }
}

#[test]
fn preallocation_metadata() {
    let d = tmp();
    let raw = source(d.path());
    for compat in ["0.10", "1.1"] {
        let img = convert(
            d.path(),
            &raw,
            &format!("pre{compat}.qcow2"),
            &["-o", &format!("preallocation=metadata,compat={compat}")],
        );
        roundtrip(&img, &[1 << 20]);
    }
}

#[test]
fn tiny_chunks_and_single_bytes() {
    let d = tmp();
    let raw = d.path().join("small.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(300 * KIB).unwrap();
    f.write_all_at(&random(70 * KIB_LEN, 3), 0).unwrap();
    f.write_all_at(&compressible(90 * KIB_LEN, 4), 128 * KIB)
        .unwrap();
    let plain = convert(d.path(), &raw, "p.qcow2", &["-o", "cluster_size=4k"]);
    let packed = convert(d.path(), &raw, "c.qcow2", &["-c", "-o", "cluster_size=4k"]);
    roundtrip(&plain, &[1, 7, 512]);
    roundtrip(&packed, &[1, 13]);
}

/// Clusters written out of guest order, overwritten in place, zeroed and discarded.
#[test]
fn rewritten_with_qemu_io() {
    let d = tmp();
    let img = d.path().join("io.qcow2");
    run_retrying("qemu-img", &["create", "-f", "qcow2", p(&img), "32M"]);
    let cmds = [
        "write -P 0x11 20M 3M",
        "write -P 0x22 0 512k",
        "write -P 0x33 9M 64k",
        "write -P 0x44 20M 64k",
        "write -z 21M 256k",
        "write -P 0x55 1M 4k",
        "discard 22M 64k",
        "write -P 0x66 31M 1M",
        "write -P 0x77 100k 8k",
    ];
    let mut args = vec!["-f", "qcow2"];
    for c in &cmds {
        args.extend_from_slice(&["-c", c]);
    }
    args.push(p(&img));
    run_retrying("qemu-io", &args);
    let s = roundtrip(&img, CHUNKS);
    assert!(
        s.zero_bytes >= 256 * KIB,
        "write -z gives zero clusters: {s:?}"
    );
}

/// An internal snapshot makes later writes copy L2 tables to the end of the file, after
/// the data they map: that data must come from the spill.
#[test]
fn tables_after_their_data_come_from_the_spill() {
    let d = tmp();
    let img = d.path().join("snap.qcow2");
    run_retrying(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            p(&img),
            "8M",
        ],
    );
    run_retrying(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x21 0 6M", p(&img)],
    );
    run_retrying("qemu-img", &["snapshot", "-c", "s1", p(&img)]);
    run_retrying(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x42 1M 4k",
            "-c",
            "write -P 0x43 5M 8k",
            p(&img),
        ],
    );
    let s = roundtrip(&img, &[1 << 20, 4099]);
    assert!(s.peak_spill > MIB, "{s:?}");

    let bytes = fs::read(&img).unwrap();
    let small = Limits {
        max_spill: 64 * KIB,
        ..Limits::default()
    };
    match decode(&bytes, 1 << 20, small) {
        Err(Qcow2Error::Behind { .. }) => {}
        other => panic!("expected Behind, got {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn virtual_size_not_a_cluster_multiple_and_empty_image() {
    let d = tmp();
    let raw = d.path().join("odd.raw");
    fs::write(&raw, random(64 * KIB_LEN * 3 + 1536, 11)).unwrap();
    let img = convert(d.path(), &raw, "odd.qcow2", &[]);
    let s = roundtrip(&img, &[5000]);
    assert_eq!(s.virtual_size, 64 * KIB * 3 + 1536);

    let empty = d.path().join("empty.qcow2");
    run_retrying("qemu-img", &["create", "-f", "qcow2", p(&empty), "0"]);
    let s = roundtrip(&empty, &[100]);
    assert_eq!(s.virtual_size, 0);
}

#[test]
fn stream_helper_reads_a_file() {
    let d = tmp();
    let raw = source(d.path());
    let img = convert(d.path(), &raw, "s.qcow2", &["-c"]);
    let mut sink = TestSink::default();
    let s = stream(
        std::io::BufReader::new(File::open(&img).unwrap()),
        &mut sink,
        Limits::default(),
    )
    .unwrap();
    sink.disk
        .resize(usize::try_from(s.virtual_size).unwrap(), POISON);
    assert_same(&sink.disk, &reference(&img), "stream()");
}

// ---- refusals -------------------------------------------------------------------------

fn expect_err(bytes: &[u8], pred: impl Fn(&Qcow2Error) -> bool, what: &str) {
    match decode(bytes, 4096, Limits::default()) {
        Err(e) if pred(&e) => {}
        Err(e) => panic!("{what}: wrong error {e:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

fn inspect(bytes: &[u8]) -> format::Inspection {
    let head = &bytes[..bytes.len().min(format::SNIFF_LEN)];
    format::detect(head).resolve().unwrap()
}

#[test]
fn refuses_backing_file() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    run_retrying("qemu-img", &["create", "-f", "qcow2", p(&base), "1M"]);
    run_retrying(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            p(&base),
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    let bytes = fs::read(&top).unwrap();
    expect_err(
        &bytes,
        |e| matches!(e, Qcow2Error::BackingFile),
        "backing file",
    );
    assert!(matches!(inspect(&bytes).safety, Safety::Unsafe(_)));
}

#[test]
fn refuses_external_data_file() {
    let d = tmp();
    let img = d.path().join("df.qcow2");
    let ext = d.path().join("ext.raw");
    run_retrying(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", p(&ext)),
            p(&img),
            "1M",
        ],
    );
    let bytes = fs::read(&img).unwrap();
    expect_err(&bytes, |e| matches!(e, Qcow2Error::DataFile), "data file");
    assert!(matches!(inspect(&bytes).safety, Safety::Unsafe(_)));
}

#[test]
fn refuses_encryption_and_extended_l2() {
    let d = tmp();
    let enc = d.path().join("enc.qcow2");
    run_retrying(
        "qemu-img",
        &[
            "create",
            "--object",
            "secret,id=s0,data=x",
            "-f",
            "qcow2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
            p(&enc),
            "1M",
        ],
    );
    expect_err(
        &fs::read(&enc).unwrap(),
        |e| matches!(e, Qcow2Error::Encrypted(2)),
        "luks",
    );

    let ext = d.path().join("ext.qcow2");
    run_retrying(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            p(&ext),
            "1M",
        ],
    );
    let bytes = fs::read(&ext).unwrap();
    expect_err(
        &bytes,
        |e| matches!(e, Qcow2Error::ExtendedL2),
        "extended L2",
    );
    // The gate refuses it too: bit 4 is outside what oslo knows.
    assert_eq!(inspect(&bytes).format, Format::Qcow2);
    assert!(matches!(inspect(&bytes).safety, Safety::Unsafe(_)));
}

/// A plain 4 KiB-cluster image with a known layout, for the table-surgery tests.
fn plain_image(d: &Path) -> (Vec<u8>, u64, u64) {
    let raw = d.join("plain.raw");
    fs::write(&raw, random(256 * KIB_LEN, 5)).unwrap();
    let img = convert(d, &raw, "plain.qcow2", &["-o", "cluster_size=4k"]);
    let bytes = fs::read(img).unwrap();
    let be = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let l1 = be(40);
    let l2 = be(usize::try_from(l1).unwrap()) & 0x00ff_ffff_ffff_fe00;
    (bytes, l1, l2)
}

fn put_be64(b: &mut [u8], at: u64, v: u64) {
    let at = usize::try_from(at).unwrap();
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn refuses_truncated_images() {
    let d = tmp();
    let (bytes, l1, l2) = plain_image(d.path());
    for cut in [
        50,
        usize::try_from(l1).unwrap() + 3,
        usize::try_from(l2).unwrap() + 100,
        bytes.len() - 1,
        bytes.len() - 4096,
    ] {
        expect_err(
            &bytes[..cut],
            |e| matches!(e, Qcow2Error::Truncated { .. }),
            &format!("cut at {cut}"),
        );
    }
}

#[test]
fn refuses_bad_tables() {
    let d = tmp();
    let (bytes, l1, l2) = plain_image(d.path());
    let is_header = |e: &Qcow2Error| matches!(e, Qcow2Error::Header(_));

    let mut b = bytes.clone();
    put_be64(&mut b, 40, l1 + 8); // L1 offset unaligned
    expect_err(&b, is_header, "unaligned L1 offset");
    let mut b = bytes.clone();
    put_be64(&mut b, 40, 0); // L1 inside the header cluster
    expect_err(&b, is_header, "L1 in the header");

    let mut b = bytes.clone();
    put_be64(&mut b, l1, l2 + 512); // L1 entry not cluster aligned
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Corrupt { .. }),
        "unaligned L2 offset",
    );

    let mut b = bytes.clone();
    put_be64(&mut b, l1, 1 << 40); // L2 table past the end
    expect_err(
        &b,
        |e| {
            matches!(
                e,
                Qcow2Error::Truncated {
                    what: "L2 table",
                    ..
                }
            )
        },
        "L2 past end",
    );

    let mut b = bytes.clone();
    put_be64(&mut b, l1, l1); // L1 entry pointing at the L1 table itself: a loop
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Behind { .. }),
        "L2 loop onto L1",
    );

    let mut b = bytes.clone();
    let at = usize::try_from(l2).unwrap();
    let first = u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    put_be64(&mut b, l2 + 8, first); // two guest clusters on one host cluster
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Overlap { .. }),
        "shared data cluster",
    );

    let mut b = bytes.clone();
    put_be64(&mut b, l2, 3 * 4096 + 512); // data cluster not cluster aligned
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Corrupt { .. }),
        "unaligned data cluster",
    );

    let mut b = bytes.clone();
    put_be64(&mut b, l2, (1 << 62) | 100); // compressed data inside the header cluster
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Overlap { .. }),
        "compressed in header",
    );

    let mut b = bytes.clone();
    put_be64(&mut b, l2, l1); // data cluster on top of the L1 table, already consumed
    expect_err(&b, |e| matches!(e, Qcow2Error::Behind { .. }), "data on L1");

    let mut b = bytes.clone();
    put_be64(&mut b, 48, l1); // refcount table declared where the L1 table is
    b[56..60].copy_from_slice(&1u32.to_be_bytes());
    expect_err(
        &b,
        |e| {
            matches!(
                e,
                Qcow2Error::Overlap {
                    what: "L1 table",
                    ..
                }
            )
        },
        "L1 in refcount table",
    );
}

#[test]
fn refuses_corrupt_compressed_cluster() {
    let d = tmp();
    let raw = d.path().join("t.raw");
    fs::write(&raw, compressible(128 * KIB_LEN, 9)).unwrap();
    let img = convert(d.path(), &raw, "t.qcow2", &["-c", "-o", "cluster_size=4k"]);
    let mut b = fs::read(img).unwrap();
    let be = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let l1 = usize::try_from(be(&b, 40)).unwrap();
    let l2 = (be(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let e = be(&b, l2);
    assert_ne!(e & (1 << 62), 0, "first cluster is compressed");
    let coff = (e & ((1 << 58) - 1)) as usize; // 62 - (12 - 8) offset bits
    for x in &mut b[coff..coff + 16] {
        *x ^= 0x5a;
    }
    expect_err(
        &b,
        |e| matches!(e, Qcow2Error::Decompress { .. }),
        "garbled deflate",
    );
}

#[test]
fn sink_errors_stop_the_stream() {
    let d = tmp();
    let (bytes, _, _) = plain_image(d.path());
    let mut sink = TestSink {
        fail_at: Some(64 * KIB),
        ..Default::default()
    };
    let mut q = Qcow2Stream::new(Limits::default());
    let err = bytes
        .chunks(8192)
        .map(|c| q.feed(c, &mut sink))
        .find_map(Result::err)
        .expect("the sink fails");
    match err {
        Qcow2Error::Sink { offset, source } => {
            // Writes follow the 8 KiB feed chunks; the failing one crosses 64 KiB.
            assert!(offset < 64 * KIB && offset + 8192 > 64 * KIB, "{offset}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(q.feed(&[0], &mut sink), Err(Qcow2Error::Failed)));
}

#[test]
fn pending_limit_is_enforced() {
    let d = tmp();
    let raw = d.path().join("c.raw");
    fs::write(&raw, compressible(256 * KIB_LEN, 1)).unwrap();
    let img = convert(d.path(), &raw, "c.qcow2", &["-c", "-o", "cluster_size=4k"]);
    let limits = Limits {
        max_pending: 10,
        ..Limits::default()
    };
    match decode(&fs::read(img).unwrap(), 1 << 20, limits) {
        Err(Qcow2Error::PendingLimit { cap: 10 }) => {}
        other => panic!("{:?}", other.map(|r| r.1)),
    }
}

// ---- robustness -----------------------------------------------------------------------

/// Small images to mutate: plain, compressed with small clusters, and zstd.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let d = tmp();
        let raw = d.path().join("m.raw");
        let mut data = random(40 * KIB_LEN, 21);
        data.extend(compressible(60 * KIB_LEN, 22));
        data.resize(160 * KIB_LEN, 0);
        fs::write(&raw, &data).unwrap();
        let variants: [&[&str]; 3] = [
            &["-o", "cluster_size=4k"],
            &["-c", "-o", "cluster_size=512"],
            &["-c", "-o", "cluster_size=1k,compression_type=zstd"],
        ];
        variants
            .iter()
            .enumerate()
            .map(|(i, extra)| {
                fs::read(convert(d.path(), &raw, &format!("m{i}.qcow2"), extra)).unwrap()
            })
            .collect()
    })
}

/// A sink that only checks bounds, so absurd virtual sizes cost nothing.
struct NullSink;

impl GuestSink for NullSink {
    fn write_at(&mut self, _off: u64, data: &[u8]) -> io::Result<()> {
        assert!(data.len() <= 2 << 20);
        Ok(())
    }
    fn zero(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

const FUZZ_LIMITS: Limits = Limits {
    max_spill: 1 << 20,
    max_pending: 1 << 14,
};

/// Runs the reader over `bytes`; any outcome but a panic is fine. Returns peak memory.
fn survive(bytes: &[u8], chunk: usize) -> isize {
    let (_, peak) = peak_alloc(|| {
        let mut q = Qcow2Stream::new(FUZZ_LIMITS);
        for c in bytes.chunks(chunk.max(1)) {
            if q.feed(c, &mut NullSink).is_err() {
                return;
            }
        }
        let _ = q.finish(&mut NullSink);
    });
    peak
}

/// Input size plus the 1 MiB spill, two 2 MiB clusters and bookkeeping.
fn memory_bound(input: usize) -> isize {
    isize::try_from(input + (8 << 20)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_images_fail_cleanly(
        which in 0usize..3,
        muts in prop::collection::vec((0usize..16384, any::<u8>()), 1..12),
        cut in prop::option::of(0usize..200_000),
        chunk in 1usize..70_000,
    ) {
        let mut b = seeds()[which].clone();
        for (at, v) in muts {
            let at = at % b.len();
            b[at] = v;
        }
        if let Some(c) = cut {
            b.truncate(c.min(b.len()));
        }
        let peak = survive(&b, chunk);
        prop_assert!(peak < memory_bound(b.len()), "peak {peak}");
    }

    #[test]
    fn crafted_headers_fail_cleanly(
        version in 2u32..4,
        cluster_bits in 9u32..22,
        size in prop_oneof![any::<u64>(), 0u64..(1 << 40)],
        l1_size in prop_oneof![any::<u32>(), 0u32..64],
        l1_off in prop_oneof![any::<u64>(), (1u64..64).prop_map(|c| c * 512)],
        incompat in prop_oneof![Just(0u64), any::<u64>()],
        tail in prop::collection::vec(any::<u8>(), 0..20_000),
        chunk in 1usize..9000,
    ) {
        let mut h = vec![0u8; 112];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[36..40].copy_from_slice(&l1_size.to_be_bytes());
        h[40..48].copy_from_slice(&l1_off.to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h.extend_from_slice(&tail);
        let peak = survive(&h, chunk);
        prop_assert!(peak < memory_bound(h.len()), "peak {peak}");
    }

    #[test]
    fn random_bytes_fail_cleanly(
        b in prop::collection::vec(any::<u8>(), 0..5000),
        magic in any::<bool>(),
    ) {
        let mut b = b;
        if magic && b.len() >= 4 {
            b[..4].copy_from_slice(b"QFI\xfb");
        }
        survive(&b, 977);
    }
}
