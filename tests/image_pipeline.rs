//! The image pipeline end to end: a misbehaving HTTP server on 127.0.0.1 feeds
//! `write_raw_image`, which writes to temp files or loop devices opened through the
//! allow-listed write door; every test reads the target back.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::loopdev::LoopDev;
use common::misbehaving_http::{Behaviour, MisbehavingServer};
use ira::blockdev::{open_for_write, AllowList};
use ira::image::checksum::Hasher;
use ira::image::error::ImageError;
use ira::image::format::Compression;
use ira::image::hash_algo::HashAlgo;
use ira::image::info::ImageInfo;
use ira::image::pipeline::{write_image, write_raw_image, Decode, WriteOptions, WriteReport};
use ira::image::progress::Progress;
use ira::image::sink::PositionalSink;
use ira::image::source::{HttpSource, RetryBudget, SourceOptions};
use serde_json::{json, Value};

const MIB: usize = 1 << 20;

/// Half pseudo-random data, half zero runs, like a real disk image.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    common::fixtures::pseudo_random(&mut v, seed);
    v
}

fn hex(algo: HashAlgo, data: &[u8]) -> String {
    let mut h = Hasher::new(algo);
    h.update(data);
    h.finish_hex()
}

fn info(v: Value) -> ImageInfo {
    ImageInfo::from_value(&v, true).expect("valid image_info")
}

fn raw_info(url: &str, data: &[u8]) -> ImageInfo {
    info(json!({"id": "img-1", "urls": [url], "disk_format": "raw",
        "stream_raw_images": true, "os_hash_algo": "sha256",
        "os_hash_value": hex(HashAlgo::Sha256, data)}))
}

fn opts(name: &Path, retries: u32) -> WriteOptions {
    WriteOptions {
        source: SourceOptions {
            timeout: Duration::from_millis(2000),
            retries,
            retry_interval: Duration::from_millis(1),
            tls: None,
        },
        target_name: name.to_path_buf(),
        progress: Arc::new(Progress::new()),
        ..WriteOptions::default()
    }
}

fn open_target(path: &Path) -> File {
    open_for_write(path, &AllowList::new(vec![path.display().to_string()])).expect("write door")
}

fn read_back(path: &Path, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    File::open(path).unwrap().read_exact_at(&mut v, 0).unwrap();
    v
}

fn fill(path: &Path, byte: u8, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
    f.sync_all().unwrap();
}

fn all(v: &[u8], b: u8) -> bool {
    v.iter().all(|&x| x == b)
}

async fn serve(data: &[u8], b: Behaviour) -> MisbehavingServer {
    let s = MisbehavingServer::start(b).await;
    s.add("/disk.img", data.to_vec());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_lands_byte_for_byte_on_a_loop_device() {
    let dev = LoopDev::new(16 * MIB as u64);
    fill(dev.path(), 0xAA, 16 * MIB); // an old install
    let data = image(6 * MIB, 1);
    let srv = serve(&data, Behaviour::default()).await;
    let o = opts(dev.path(), 0);
    let rep = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(dev.path()),
        &o,
    )
    .await
    .expect("write");
    assert_eq!(rep.image_size, data.len() as u64);
    assert_eq!(rep.requests, 1);
    assert!(
        rep.direct_io,
        "a loop device with direct I/O takes O_DIRECT"
    );
    assert_eq!(o.progress.written(), data.len() as u64);
    let back = read_back(dev.path(), 16 * MIB);
    assert_eq!(&back[..data.len()], &data[..]);
    // Past the image: the old bytes, except the last MiB (backup GPT area) zeroed.
    assert!(all(&back[data.len()..15 * MIB], 0xAA));
    assert!(all(&back[15 * MIB..], 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_with_an_odd_size_fits_a_file_exactly() {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let data = image(3 * MIB + 4321, 2);
    let srv = serve(
        &data,
        Behaviour {
            chunked: true,
            ..Behaviour::default()
        },
    )
    .await;
    let rep = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 0),
    )
    .await
    .expect("write");
    assert_eq!(rep.image_size, data.len() as u64);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
}

fn compress(kind: Compression, data: &[u8]) -> Vec<u8> {
    match kind {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::stream::encode_all(data, 1).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_raw_images_are_decompressed_and_verified_over_the_download() {
    let data = image(3 * MIB + 777, 3);
    for kind in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
        let packed = compress(kind, &data);
        let srv = serve(&packed, Behaviour::default()).await;
        let tmp = tempfile::NamedTempFile::new().unwrap();
        // The checksum is of the file as served (what Glance hashed).
        let inf = raw_info(&srv.url("/disk.img"), &packed);
        let rep = write_raw_image(&inf, open_target(tmp.path()), &opts(tmp.path(), 0))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(rep.compression, Some(kind));
        assert_eq!(rep.stream_size, packed.len() as u64);
        assert_eq!(rep.image_size, data.len() as u64);
        assert!(std::fs::read(tmp.path()).unwrap() == data, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_fails_and_leaves_the_start_of_the_disk_zero() {
    let dev = LoopDev::new(8 * MIB as u64);
    fill(dev.path(), 0xAA, 8 * MIB);
    let data = image(4 * MIB, 4);
    let srv = serve(&data, Behaviour::default()).await;
    let mut inf = raw_info(&srv.url("/disk.img"), &data);
    inf.os_hash_value = Some("0".repeat(64));
    let err = write_raw_image(&inf, open_target(dev.path()), &opts(dev.path(), 0))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("image ID: img-1"), "{err}");
    let back = read_back(dev.path(), 8 * MIB);
    assert!(all(&back[..MIB], 0), "the unverified start must be zero");
    assert_eq!(&back[MIB..4 * MIB], &data[MIB..], "the rest was streamed");
    assert!(all(&back[7 * MIB..], 0), "the end of the disk is wiped too");
    assert_eq!(srv.count("/disk.img"), 1, "no retries were allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_is_retried_as_a_whole_stream_like_ipa() {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let data = image(2 * MIB, 5);
    let srv = serve(&data, Behaviour::default()).await;
    let mut inf = raw_info(&srv.url("/disk.img"), &data);
    inf.os_hash_value = Some("f".repeat(64));
    let err = write_raw_image(&inf, open_target(tmp.path()), &opts(tmp.path(), 2))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Checksum { .. }), "{err}");
    assert_eq!(srv.count("/disk.img"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_file_is_matched_by_exact_file_name_and_sent_with_auth() {
    let data = image(2 * MIB + 5, 6);
    let good = hex(HashAlgo::Sha512, &data);
    let srv = serve(&data, Behaviour::default()).await;
    let sums = format!(
        "# SHA512 sums\n{other}  other.img\n{decoy} *disk.img.bak\n{decoy}  diskXimg\n{good} *disk.img\n",
        other = "1".repeat(128),
        decoy = "2".repeat(128),
    );
    srv.add("/SHA512SUMS", sums.into_bytes());
    srv.add("/NOMATCH", format!("{}  disk.img.old\n", good).into_bytes());
    let base = json!({"id": "img-2", "urls": [srv.url("/disk.img") + "?temp_url_sig=SECRET"],
        "disk_format": "raw", "image_server_auth_strategy": "http_basic",
        "image_server_user": "u", "image_server_password": "p"});
    let mut with_sums = base.clone();
    with_sums["checksum"] = json!(srv.url("/SHA512SUMS"));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let rep = write_raw_image(
        &info(with_sums),
        open_target(tmp.path()),
        &opts(tmp.path(), 0),
    )
    .await
    .expect("write");
    assert_eq!(rep.algo, HashAlgo::Sha512);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
    let reqs = srv.requests();
    assert_eq!(
        reqs[0].path, "/SHA512SUMS",
        "the checksum is known before any image byte"
    );
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some("Basic dTpw")),
        "{reqs:?}"
    );

    // No line names the file exactly: refused before the target is touched.
    let mut no_match = base;
    no_match["checksum"] = json!(srv.url("/NOMATCH"));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), b"old contents").unwrap();
    let err = write_raw_image(
        &info(no_match),
        open_target(tmp.path()),
        &opts(tmp.path(), 0),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("does not contain name disk.img"),
        "{err}"
    );
    assert_eq!(std::fs::read(tmp.path()).unwrap(), b"old contents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_is_refused_unless_the_conductor_allows_it() {
    let data = image(MIB + 10, 7);
    let md5 = hex(HashAlgo::Md5, &data);
    let srv = serve(&data, Behaviour::default()).await;
    let v = json!({"id": "img-3", "urls": [srv.url("/disk.img")], "checksum": md5});
    let msg = ImageInfo::from_value(&v, false).unwrap_err().to_string();
    assert!(msg.starts_with("Image checksum is not available"), "{msg}");
    // Named as os_hash_algo, md5 is refused at write time, before any download.
    let named = info(json!({"id": "img-3", "urls": [srv.url("/disk.img")],
        "os_hash_algo": "md5", "os_hash_value": md5}));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let err = write_raw_image(&named, open_target(tmp.path()), &opts(tmp.path(), 3))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::ChecksumUnusable(_)), "{err}");
    assert_eq!(srv.requests().len(), 0);
    let mut o = opts(tmp.path(), 0);
    o.md5_enabled = true;
    let rep = write_raw_image(&info(v), open_target(tmp.path()), &o)
        .await
        .expect("md5 allowed");
    assert_eq!(rep.algo, HashAlgo::Md5);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_download_resumes_with_range() {
    let data = image(8 * MIB, 8);
    let srv = serve(
        &data,
        Behaviour {
            cut_after: vec![3 * MIB as u64 + 100, 2 * MIB as u64],
            etag: Some("v1".into()),
            ..Behaviour::default()
        },
    )
    .await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let rep = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 3),
    )
    .await
    .expect("write");
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
    assert_eq!((rep.requests, rep.resumed, rep.restarted), (3, 2, 0));
    // Only the bytes cut off in flight are fetched twice.
    assert!(
        rep.downloaded <= data.len() as u64 + 2 * MIB as u64,
        "{rep:?}"
    );
    let reqs = srv.requests();
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={}-", 3 * MIB + 100).as_str())
    );
    assert_eq!(reqs[1].if_range.as_deref(), Some("\"v1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_range_reads_from_zero_again_and_drops_what_it_had() {
    let data = image(6 * MIB + 99, 9);
    for b in [
        Behaviour {
            cut_after: vec![3 * MIB as u64],
            ignore_range: true,
            ..Behaviour::default()
        },
        Behaviour {
            cut_after: vec![3 * MIB as u64],
            wrong_content_range: true,
            ..Behaviour::default()
        },
    ] {
        let srv = serve(&data, b).await;
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let rep = write_raw_image(
            &raw_info(&srv.url("/disk.img"), &data),
            open_target(tmp.path()),
            &opts(tmp.path(), 3),
        )
        .await
        .expect("write");
        assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
        assert_eq!(rep.restarted, 1, "{rep:?}");
        assert_eq!(rep.attempts, 1, "downstream stages never restarted");
        assert!(
            rep.downloaded >= data.len() as u64 + 3 * MIB as u64,
            "{rep:?}"
        );
    }
}

/// One write of `data` from a server behaving as `b` onto a temp file.
struct Served {
    res: Result<WriteReport, ImageError>,
    tmp: tempfile::NamedTempFile,
    opts: WriteOptions,
    srv: MisbehavingServer,
    took: Duration,
}

/// Writes `data` served as `b` with `retries` and, if given, that read timeout.
async fn write_served(
    data: &[u8],
    b: Behaviour,
    retries: u32,
    timeout: Option<Duration>,
) -> Served {
    let srv = serve(data, b).await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut o = opts(tmp.path(), retries);
    if let Some(t) = timeout {
        o.source.timeout = t;
    }
    let started = Instant::now();
    let res = write_raw_image(
        &raw_info(&srv.url("/disk.img"), data),
        open_target(tmp.path()),
        &o,
    )
    .await;
    Served {
        res,
        tmp,
        opts: o,
        srv,
        took: started.elapsed(),
    }
}

/// A 1.5 s stall after the first MiB, under a 300 ms read timeout.
async fn write_past_a_stall(data: &[u8], retries: u32) -> Served {
    let stall = Behaviour {
        stall: Some((MIB as u64, Duration::from_millis(1500))),
        ..Behaviour::default()
    };
    write_served(data, stall, retries, Some(Duration::from_millis(300))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_times_out_and_the_download_resumes() {
    let data = image(4 * MIB, 10);
    let Served { res, tmp, took, .. } = write_past_a_stall(&data, 2).await;
    let rep = res.expect("write");
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
    assert_eq!(rep.resumed, 1);
    assert!(
        took < Duration::from_millis(1400),
        "did not wait out the stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_bytes_is_fatal() {
    let dev = LoopDev::new(8 * MIB as u64);
    fill(dev.path(), 0xAA, 8 * MIB);
    let data = image(4 * MIB, 11);
    let srv = serve(
        &data,
        Behaviour {
            cut_after: vec![2 * MIB as u64],
            overlong_206: 5000,
            ..Behaviour::default()
        },
    )
    .await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(dev.path()),
        &opts(dev.path(), 5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::TooManyBytes { .. }), "{err}");
    assert_eq!(srv.count("/disk.img"), 2, "fatal: not retried");
    assert!(all(&read_back(dev.path(), MIB), 0));
    // A first answer without a length (chunked) learns it from the 206's Content-Range.
    let srv = serve(
        &data,
        Behaviour {
            chunked: true,
            cut_after: vec![2 * MIB as u64],
            overlong_206: 5000,
            ..Behaviour::default()
        },
    )
    .await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(dev.path()),
        &opts(dev.path(), 5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::TooManyBytes { .. }), "{err}");
    assert_eq!(srv.count("/disk.img"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_bytes_is_retried_then_fails() {
    let data = image(2 * MIB, 12);
    let srv = serve(
        &data,
        Behaviour {
            short_by: 1000,
            ..Behaviour::default()
        },
    )
    .await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 2),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Truncated { expected, .. } if expected == data.len() as u64),
        "{err}"
    );
    assert_eq!(srv.count("/disk.img"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_fatal_at_once_and_the_signature_stays_secret() {
    let data = image(MIB, 13);
    let srv = serve(
        &data,
        Behaviour {
            always_status: Some(404),
            ..Behaviour::default()
        },
    )
    .await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut o = opts(tmp.path(), 5);
    o.source.retry_interval = Duration::from_secs(5);
    let url = srv.url("/disk.img") + "?temp_url_sig=SECRET&temp_url_expires=1";
    let started = Instant::now();
    let err = write_raw_image(&raw_info(&url, &data), open_target(tmp.path()), &o)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Http { status: 404, .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retry sleeps"
    );
    assert_eq!(srv.requests().len(), 1);
    let text = format!("{err} {err:?} {:?}", err.to_command_error("img-1"));
    assert!(
        !text.contains("SECRET") && text.contains("/disk.img?***"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_success() {
    let data = image(2 * MIB + 1, 14);
    let srv = serve(
        &data,
        Behaviour {
            statuses: vec![500, 503],
            ..Behaviour::default()
        },
    )
    .await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let rep = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 3),
    )
    .await
    .expect("write");
    assert_eq!(rep.requests, 3);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
    // With a smaller budget the same server fails.
    let srv = serve(
        &data,
        Behaviour {
            statuses: vec![500, 503],
            ..Behaviour::default()
        },
    )
    .await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::Http { status: 503, .. }), "{err}");
}

/// A tmpfs of a given size, unmounted on drop (a filesystem that really runs full).
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn new(bytes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs (needs root)");
        Self(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_at_once_without_retries() {
    let data = image(4 * MIB, 15);
    // A filesystem that runs out of space mid-stream: ENOSPC is local and fatal.
    let fs = SmallFs::new(2 * MIB);
    let path = fs.0.path().join("target.img");
    std::fs::write(&path, b"").unwrap();
    let srv = serve(
        &data,
        Behaviour {
            chunked: true,
            ..Behaviour::default()
        },
    )
    .await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(&path),
        &opts(&path, 5),
    )
    .await
    .unwrap_err();
    match &err {
        ImageError::Write { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}")
        }
        other => panic!("expected a write error, got {other}"),
    }
    assert!(!err.is_transient());
    assert_eq!(srv.count("/disk.img"), 1, "a local error is never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_larger_than_the_device_is_refused_without_retries() {
    let data = image(4 * MIB, 15);
    let dev = LoopDev::new(2 * MIB as u64 + 8192);
    fill(dev.path(), 0xAA, 2 * MIB + 8192);
    // Unknown length (chunked): stopped when the stream passes the device's size.
    let srv = serve(
        &data,
        Behaviour {
            chunked: true,
            ..Behaviour::default()
        },
    )
    .await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(dev.path()),
        &opts(dev.path(), 5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { limit, .. } if limit == 2 * MIB as u64 + 8192),
        "{err}"
    );
    assert_eq!(srv.count("/disk.img"), 1);
    assert!(all(&read_back(dev.path(), MIB), 0));
    // Announced length: refused at the first chunk.
    let srv = serve(&data, Behaviour::default()).await;
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(dev.path()),
        &opts(dev.path(), 5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert_eq!(srv.count("/disk.img"), 1);
    assert!(all(&read_back(dev.path(), MIB), 0));
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_stops_at_the_bound_in_bounded_memory() {
    // 64 frames of 16 MiB of zeros: 1 GiB of output from a few KiB.
    let frame = zstd::stream::encode_all(&vec![0u8; 16 * MIB][..], 1).unwrap();
    let bomb: Vec<u8> = frame.repeat(64);
    assert!(bomb.len() < 256 << 10);
    let srv = serve(&bomb, Behaviour::default()).await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut o = opts(tmp.path(), 3);
    o.max_size = Some(48 * MIB as u64);
    let err = write_raw_image(
        &raw_info(&srv.url("/disk.img"), &bomb),
        open_target(tmp.path()),
        &o,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { limit, .. } if limit == 48 * MIB as u64),
        "{err}"
    );
    assert_eq!(srv.count("/disk.img"), 1, "not retried");
    assert!(std::fs::metadata(tmp.path()).unwrap().len() <= 48 * MIB as u64);
    // A buffering decoder would have held the gigabyte; the pipeline holds a few MiB.
    assert!(peak_rss() < 400 << 20, "peak RSS {} MiB", peak_rss() >> 20);
}

/// A format reader stand-in: 4 KiB blocks written in reverse order, to prove positional
/// writes (and the hold-back) work for decoders that do not write sequentially.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_decoder_writes_guest_offsets_through_the_hold_back() {
    let data = image(3 * MIB, 16);
    let srv = serve(&data, Behaviour::default()).await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let reverse = Decode::Custom(Arc::new(|r, sink| {
        let mut all = Vec::new();
        r.read_to_end(&mut all)
            .map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        let blocks = all.len() / 4096;
        for i in (0..blocks).rev() {
            sink.write_at(&all[i * 4096..(i + 1) * 4096], (i * 4096) as u64)?;
        }
        Ok(())
    }));
    let rep = write_image(
        &raw_info(&srv.url("/disk.img"), &data),
        open_target(tmp.path()),
        &opts(tmp.path(), 0),
        reverse,
    )
    .await
    .expect("write");
    assert_eq!(rep.image_size, data.len() as u64);
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_from_image_info_carry_the_request() {
    let data = image(MIB + 3, 17);
    let proxy = serve(&data, Behaviour::default()).await;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let url = "http://images.example.invalid/disk.img";
    let mut inf = raw_info(url, &data);
    inf.proxies = Some([("http".to_owned(), proxy.url(""))].into_iter().collect());
    inf.image_request_authorization = Some("QmVhcmVyIHRva2Vu".into()); // "Bearer token"
    write_raw_image(&inf, open_target(tmp.path()), &opts(tmp.path(), 0))
        .await
        .expect("write through the proxy");
    let reqs = proxy.requests();
    assert_eq!(reqs[0].target, url, "absolute-form request to the proxy");
    assert_eq!(reqs[0].authorization.as_deref(), Some("Bearer token"));
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
}

/// The qcow2 reader plugged in behind the format gate: a qcow2 with compressed clusters,
/// streamed over HTTP, verified, and written as its raw guest disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qcow2_image_streams_through_the_gate_and_the_qcow2_reader() {
    use ira::image::{format, qcow2};
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let text: Vec<u8> = b"qcow2 stream test; "
        .iter()
        .copied()
        .cycle()
        .take(MIB)
        .collect();
    let mut data = image(3 * MIB, 18);
    data[MIB..2 * MIB].copy_from_slice(&text);
    std::fs::write(&raw, &data).unwrap();
    let q = dir.path().join("img.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .expect("qemu-img")
        .success();
    assert!(ok);
    let packed = std::fs::read(&q).unwrap();
    let srv = serve(&packed, Behaviour::default()).await;
    let mut inf = raw_info(&srv.url("/disk.img"), &packed);
    inf.disk_format = Some("qcow2".into());
    let declared = inf.disk_format.clone();
    let decode = Decode::Custom(Arc::new(move |r, sink| {
        let head = r
            .fill_buf()
            .map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        let head = &head[..head.len().min(format::SNIFF_LEN)];
        let permitted = vec!["raw".to_owned(), "qcow2".to_owned()];
        let found = format::gate(
            &format::detect(head),
            declared.as_deref(),
            &permitted,
            false,
        )
        .map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        assert_eq!(found, format::Format::Qcow2);
        qcow2::stream(r, sink, qcow2::Limits::default())
            .map(|_| ())
            .map_err(|e| ImageError::InvalidImage(e.to_string()))
    }));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let rep = write_image(&inf, open_target(tmp.path()), &opts(tmp.path(), 0), decode)
        .await
        .expect("write");
    assert_eq!(rep.stream_size, packed.len() as u64);
    assert_eq!(rep.image_size, data.len() as u64);
    assert!(
        std::fs::read(tmp.path()).unwrap() == data,
        "guest disk differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_head_returns_the_first_bytes_and_the_announced_length() {
    let data = image(8 * MIB, 21);
    let budget = RetryBudget::new(2, Duration::from_millis(1));
    // A first answer cut before the head is complete is retried like a download.
    let srv = serve(
        &data,
        Behaviour {
            cut_after: vec![1000],
            ..Behaviour::default()
        },
    )
    .await;
    let inf = raw_info(&srv.url("/disk.img"), &data);
    let src = HttpSource::new(&inf, &opts(Path::new("t"), 2).source).unwrap();
    let head = src.read_head(64 << 10, &budget).await.expect("head");
    assert_eq!(head.bytes, &data[..64 << 10]);
    assert_eq!(head.total, Some(data.len() as u64));
    // Chunked: no length announced; an image shorter than asked comes back whole.
    let short = image(5000, 22);
    let srv = serve(
        &short,
        Behaviour {
            chunked: true,
            ..Behaviour::default()
        },
    )
    .await;
    let inf = raw_info(&srv.url("/disk.img"), &short);
    let src = HttpSource::new(&inf, &opts(Path::new("t"), 0).source).unwrap();
    let head = src.read_head(64 << 10, &budget).await.expect("head");
    assert_eq!(head.bytes, short);
    assert_eq!(head.total, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_etag_with_the_same_bytes_restarts_from_zero_and_succeeds() {
    let data = image(6 * MIB + 77, 23);
    let republished = Behaviour {
        cut_after: vec![3 * MIB as u64],
        etag: Some("backend-a".into()),
        etag_later: Some("backend-b".into()),
        ..Behaviour::default()
    };
    let Served { res, tmp, srv, .. } = write_served(&data, republished, 3, None).await;
    let rep = res.expect("a re-published image with the same bytes is written");
    assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
    assert_eq!(rep.attempts, 2, "one restart from byte 0: {rep:?}");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[1].if_range.as_deref(), Some("\"backend-a\""));
    assert_eq!(reqs[2].range, None, "the restart reads from byte 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_timeout_mid_body_is_reported_as_a_timeout() {
    let data = image(4 * MIB, 24);
    let err = write_past_a_stall(&data, 0).await.res.unwrap_err();
    assert!(matches!(err, ImageError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("timed out after 0.3 s reading the body"),
        "{text}"
    );
    assert!(text.contains(&format!("of {} bytes", data.len())), "{text}");
    assert!(!text.contains("body ended"), "{text}");
    match err.to_command_error("img-1") {
        ira::errors::CommandError::ImageDownloadTimeout(d) => assert!(
            d.starts_with("Download of image img-1 failed: Timed out reading next chunk"),
            "{d}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_the_attempt_and_its_own_bytes_never_more_than_the_total() {
    // Retried checksum mismatches: each attempt counts from zero.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let data = image(2 * MIB, 25);
    let srv = serve(&data, Behaviour::default()).await;
    let mut inf = raw_info(&srv.url("/disk.img"), &data);
    inf.os_hash_value = Some("f".repeat(64));
    let o = opts(tmp.path(), 2);
    let err = write_raw_image(&inf, open_target(tmp.path()), &o)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Checksum { .. }), "{err}");
    assert_eq!(srv.count("/disk.img"), 3);
    assert_eq!(o.progress.downloaded(), data.len() as u64);
    let line = o.progress.summary();
    assert!(
        line.starts_with("attempt 3 of 3: 2 of 2 MiB downloaded"),
        "{line}"
    );
    // A refused Range sends the start again within one attempt: counted once.
    let data = image(4 * MIB, 26);
    let refused = Behaviour {
        cut_after: vec![3 * MIB as u64],
        ignore_range: true,
        ..Behaviour::default()
    };
    let Served { res, opts: o, .. } = write_served(&data, refused, 2, None).await;
    let rep = res.expect("write");
    assert_eq!(rep.restarted, 1);
    assert!(rep.downloaded > data.len() as u64, "{rep:?}");
    assert_eq!(o.progress.downloaded(), data.len() as u64);
    assert_eq!(o.progress.summary(), "4 of 4 MiB downloaded, 4 MiB written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_transfer_is_decoded_and_the_image_hashed() {
    let data = image(5 * MIB + 123, 27);
    for (enc, cut) in [
        ("gzip", vec![]),
        ("deflate", vec![]),
        // Dropped mid-body: a compressed transfer reads from byte 0 again, no Range.
        ("gzip", vec![MIB as u64]),
    ] {
        let compressing = Behaviour {
            content_encoding: Some(enc),
            cut_after: cut.clone(),
            ..Behaviour::default()
        };
        let Served {
            res,
            tmp,
            opts: o,
            srv,
            ..
        } = write_served(&data, compressing, 2, None).await;
        let rep = res.unwrap_or_else(|e| panic!("{enc} {cut:?}: {e}"));
        assert_eq!(std::fs::read(tmp.path()).unwrap(), data, "{enc}");
        assert_eq!(rep.image_size, data.len() as u64);
        assert_eq!(
            rep.stream_size,
            data.len() as u64,
            "hashed the decoded image"
        );
        assert_eq!(
            rep.compression, None,
            "not taken for a compressed image file"
        );
        let reqs = srv.requests();
        assert!(
            reqs.iter()
                .all(|r| r.accept_encoding.as_deref() == Some("identity")),
            "{reqs:?}"
        );
        if cut.is_empty() {
            assert_eq!(reqs.len(), 1);
        } else {
            assert_eq!(
                (reqs.len(), rep.restarted, rep.attempts),
                (2, 1, 1),
                "{rep:?}"
            );
            assert_eq!(reqs[1].range, None);
            assert_eq!(o.progress.downloaded(), data.len() as u64);
        }
    }
}
