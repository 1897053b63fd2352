//! The streaming pipeline: HTTP source → hash → (decompress) → (decoder) → hold-back →
//! disk, with network on tokio and every CPU or disk stage on its own blocking thread.
//!
//! ```text
//!  [task]  HttpSource::stream   fills pool buffers from the body (resume, retries)
//!     │ Chunk (bounded channel)
//!  [thread] hash                digest of the bytes exactly as received
//!     │ Chunk
//!  [thread] decode              raw: forward; compressed: Decompressor into a 2nd pool;
//!     │ Chunk                   Decode::Custom: a format reader writing QueueSink
//!  [threads] write ×N           HoldBack (first MiB to memory) → DiskSink (O_DIRECT)
//! ```
//!
//! Memory is fixed: `buffers` aligned buffers of `chunk_size` for the stream (plus as
//! many for decompressed data), the 1 MiB hold-back, and the decoders' bounded state.
//! A format reader (qcow2) has two pools (stream and guest data) and its own spill, so
//! its pools use `reader_buffers` of `reader_chunk_size` instead, which keeps its peak
//! RSS near the raw path's (measured in `bench/stream.sh`).
//! Buffers are recycled, never allocated per chunk; a full channel stops the stage before
//! it, down to the socket (backpressure).
//!
//! An attempt ends when every stage has ended. The first real error in stream order is
//! the cause ([`ImageError::Aborted`] only says a later stage stopped first). With no
//! error the digest is compared, and only a match commits the hold-back and syncs. A
//! transient failure that the source could not absorb itself (a checksum mismatch, a
//! source that changed) starts a new attempt with fresh stages within the same
//! [`RetryBudget`]; the target keeps its zeroed start meanwhile. On a final failure the
//! cause is logged, the start of the target wiped, and only then the error returned.
//! Nothing touches the target before the checksum to verify against is known.

use super::progress::Progress;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::checksum::{self, Expected};
use super::error::ImageError;
use super::format::Compression;
use super::hash_algo::HashAlgo;
use super::holdback::{HoldBack, HOLD_BACK};
use super::info::ImageInfo;
use super::pool::{BufPool, Chunk};
use super::sink::DiskSink;
use super::source::{HttpSource, RetryBudget, SourceOptions, SourceReport};
use super::stages::{decode_stage, hash_stage, write_stage, DecodeCfg};
pub use super::stages::{Decode, DecodeFn, QueueSink};
use super::url::RedactedUrl;

/// How to write an image.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// md5 checksums allowed (lookup `agent_md5_checksum_enable`).
    pub md5_enabled: bool,
    /// Timeouts, retries and TLS of the download.
    pub source: SourceOptions,
    /// Bytes per buffer.
    pub chunk_size: usize,
    /// Buffers in the stream pool (and in the decompressed pool).
    pub buffers: usize,
    /// Bytes per buffer of both pools when a format reader decodes the stream (qcow2).
    pub reader_chunk_size: usize,
    /// Buffers in each of those two pools.
    pub reader_buffers: usize,
    /// Writer threads, i.e. writes in flight.
    pub writers: usize,
    /// Decompress gzip/xz/zstd recognised by magic (IPA writes such images as they are).
    pub decompress: bool,
    /// Try `O_DIRECT` on the target.
    pub direct_io: bool,
    /// Bound on the image size after decompression; a block device also bounds it by its size.
    pub max_size: Option<u64>,
    /// The target's name in messages (its device path).
    pub target_name: PathBuf,
    /// Counters the caller can watch.
    pub progress: Arc<Progress>,
    /// Time between progress log lines.
    pub progress_interval: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            md5_enabled: false,
            source: SourceOptions::default(),
            chunk_size: 1 << 20,
            buffers: 6,
            // qcow2 (bench/stream.sh, 2 GiB, half compressed clusters): 4 x 512 KiB per
            // pool took the same time as 6 x 1 MiB within noise and 14 MiB of peak RSS
            // instead of 22 (the reader's spill took 3 MiB more).
            reader_chunk_size: 512 << 10,
            reader_buffers: 4,
            // Two writes in flight: 1.56x one (sha256) in one bench/stream.sh run on a
            // direct-I/O loop device, equal within noise in two others; no extra memory.
            writers: 2,
            decompress: true,
            direct_io: true,
            max_size: None,
            target_name: PathBuf::from("target"),
            progress: Arc::new(Progress::new()),
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes of image on the target (after decompression/decoding).
    pub image_size: u64,
    /// Length of the downloaded stream.
    pub stream_size: u64,
    /// Bytes received in all attempts and requests.
    pub downloaded: u64,
    /// The compression found, if any.
    pub compression: Option<Compression>,
    /// The algorithm verified.
    pub algo: HashAlgo,
    /// The verified digest (lower-case hex).
    pub digest: String,
    /// HTTP requests for the image (checksum files not counted).
    pub requests: u32,
    /// Resumptions served with a 206.
    pub resumed: u32,
    /// Resumptions that read from byte 0 again.
    pub restarted: u32,
    /// Pipeline attempts (1 unless a mismatch or changed source forced a new one).
    pub attempts: u32,
    /// Whether the data bypassed the page cache to the end.
    pub direct_io: bool,
    /// Wall time from start to the final sync.
    pub elapsed: Duration,
}

/// Streams a raw (possibly gzip/xz/zstd-compressed) image from `info`'s URLs onto
/// `target`, verified against `info`'s checksum; the first MiB is written only after
/// the checksum matched, and success is reported only after a sync.
pub async fn write_raw_image(
    info: &ImageInfo,
    target: File,
    opts: &WriteOptions,
) -> Result<WriteReport, ImageError> {
    write_image(info, target, opts, Decode::Raw).await
}

/// [`write_raw_image`] with any [`Decode`] stage.
pub async fn write_image(
    info: &ImageInfo,
    target: File,
    opts: &WriteOptions,
    decode: Decode,
) -> Result<WriteReport, ImageError> {
    let started = Instant::now();
    let source = Arc::new(HttpSource::new(info, &opts.source)?);
    let budget = Arc::new(RetryBudget::new(
        opts.source.retries,
        opts.source.retry_interval,
    ));
    let expected = resolve_checksum(info, opts.md5_enabled, &source, &budget).await?;
    let url = RedactedUrl::parse(&info.urls[0])?;
    tracing::info!(image = %info.id, %url, target = %opts.target_name.display(),
        algo = %expected.algo, "streaming image");

    let name = opts.target_name.clone();
    let direct = opts.direct_io;
    let hb = blocking(move || {
        let sink = if direct {
            DiskSink::new(target, name)?
        } else {
            DiskSink::buffered(target, name)?
        };
        Ok(Arc::new(HoldBack::new(sink)))
    })
    .await?;

    let logger = {
        let p = opts.progress.clone();
        let every = opts.progress_interval;
        let id = info.id.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(image = %id, "{}", p.summary());
            }
        })
    };
    let result = attempts(info, opts, &decode, &source, &budget, &expected, &hb).await;
    logger.abort();

    match result {
        Ok(mut report) => {
            let hb2 = hb.clone();
            let committed = blocking(move || hb2.commit()).await;
            if let Err(e) = committed {
                return Err(fail(&hb, e).await);
            }
            opts.progress.add_written(report.image_size.min(HOLD_BACK));
            report.direct_io = hb.sink().is_direct();
            report.elapsed = started.elapsed();
            let secs = report.elapsed.as_secs_f64().max(1e-9);
            tracing::info!(image = %info.id, bytes = report.image_size,
                seconds = format!("{secs:.2}"),
                mb_per_s = format!("{:.0}", report.image_size as f64 / secs / 1e6),
                requests = report.requests, "image written and verified");
            Ok(report)
        }
        Err(e) => Err(fail(&hb, e).await),
    }
}

/// Logs the cause, then wipes the target's start, then hands the cause back.
async fn fail(hb: &Arc<HoldBack<File>>, err: ImageError) -> ImageError {
    if hb.touched() {
        tracing::error!(error = %err, target = %hb.sink().path().display(),
            "writing the image failed; wiping the start of the target");
    } else {
        tracing::error!(error = %err, target = %hb.sink().path().display(),
            "the image was refused before any byte reached the target");
    }
    let hb = hb.clone();
    if let Err(w) = blocking(move || hb.wipe()).await {
        tracing::error!(error = %w, "wiping the start of the target failed too");
    }
    err
}

async fn resolve_checksum(
    info: &ImageInfo,
    md5_enabled: bool,
    source: &HttpSource,
    budget: &RetryBudget,
) -> Result<Expected, ImageError> {
    match checksum::select(info, md5_enabled)? {
        checksum::ChecksumSource::Digest(e) => Ok(e),
        checksum::ChecksumSource::Url { url, algo } => {
            let body = source
                .fetch_bounded_with(&url, checksum::CHECKSUM_FILE_LIMIT, budget)
                .await?;
            checksum::expected_from_file(info, &url, algo, &body, md5_enabled)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Internal(format!("pipeline thread: {e}")))?
}

async fn attempts(
    info: &ImageInfo,
    opts: &WriteOptions,
    decode: &Decode,
    source: &Arc<HttpSource>,
    budget: &RetryBudget,
    expected: &Expected,
    hb: &Arc<HoldBack<File>>,
) -> Result<WriteReport, ImageError> {
    let mut attempt = 0;
    let most = opts.source.retries.saturating_add(1);
    loop {
        attempt += 1;
        hb.reset();
        opts.progress.start_attempt(attempt, most);
        let res = run_attempt(info, opts, decode, source, budget, expected, hb).await;
        match res {
            Ok(mut r) => {
                r.attempts = attempt;
                return Ok(r);
            }
            Err(e) if budget.retry(&e).await => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The bound on the image size, and its name for messages.
fn size_limit(opts: &WriteOptions, hb: &HoldBack<File>) -> (u64, &'static str) {
    match (hb.sink().size(), opts.max_size) {
        (Some(dev), Some(max)) if max < dev => (max, "configured maximum image size"),
        (Some(dev), _) => (dev, "size of the target device"),
        (None, Some(max)) => (max, "configured maximum image size"),
        (None, None) => (u64::MAX, "no bound"),
    }
}

async fn run_attempt(
    info: &ImageInfo,
    opts: &WriteOptions,
    decode: &Decode,
    source: &Arc<HttpSource>,
    budget: &RetryBudget,
    expected: &Expected,
    hb: &Arc<HoldBack<File>>,
) -> Result<WriteReport, ImageError> {
    let (depth, chunk_size) = match decode {
        Decode::Raw => (opts.buffers, opts.chunk_size),
        Decode::Custom(_) => (opts.reader_buffers, opts.reader_chunk_size),
    };
    let depth = depth.max(2);
    let (tx_h, rx_h) = mpsc::channel::<Chunk>(depth);
    let (tx_d, rx_d) = mpsc::channel::<Chunk>(depth);
    let (tx_w, rx_w) = mpsc::channel::<Chunk>(depth);
    let mut pool = BufPool::new(depth, chunk_size);

    let algo = expected.algo;
    let hash = tokio::task::spawn_blocking(move || hash_stage(algo, rx_h, tx_d));
    let cfg = DecodeCfg {
        decompress: opts.decompress,
        limit: size_limit(opts, hb),
        chunk_size,
        buffers: depth,
        progress: opts.progress.clone(),
        decode: decode.clone(),
    };
    let dec = tokio::task::spawn_blocking(move || decode_stage(cfg, rx_d, tx_w));
    let (hb_w, progress_w, writers) = (hb.clone(), opts.progress.clone(), opts.writers.max(1));
    let write = tokio::task::spawn_blocking(move || write_stage(&hb_w, rx_w, writers, &progress_w));

    let src = async {
        let r = source
            .stream(&mut pool, &tx_h, budget, &opts.progress)
            .await;
        drop(tx_h);
        r
    };
    let (s, h, d, w) = tokio::join!(src, hash, dec, write);
    let (s, h, d, w) = (s, join(h), join(d), join(w));
    if s.is_err() || h.is_err() || d.is_err() || w.is_err() {
        // The cause is the first real error in stream order.
        return Err(pick_error(s.err(), h.err(), d.err(), w.err()));
    }
    let (src, digest, (compression, image_size)) = (s?, h?, d?);
    w?;
    if !expected.matches(&digest) {
        return Err(ImageError::Checksum {
            location: opts.target_name.display().to_string(),
            id: info.id.to_string(),
            expected: expected.hex.clone(),
            actual: digest,
            algo: expected.algo,
        });
    }
    Ok(report(src, digest, compression, image_size, expected.algo))
}

fn join<T>(r: Result<Result<T, ImageError>, tokio::task::JoinError>) -> Result<T, ImageError> {
    r.map_err(|e| ImageError::Internal(format!("pipeline thread: {e}")))
        .and_then(|r| r)
}

fn pick_error(
    s: Option<ImageError>,
    h: Option<ImageError>,
    d: Option<ImageError>,
    w: Option<ImageError>,
) -> ImageError {
    [s, h, d, w]
        .into_iter()
        .flatten()
        .find(|e| !matches!(e, ImageError::Aborted))
        .unwrap_or(ImageError::Aborted)
}

fn report(
    src: SourceReport,
    digest: String,
    compression: Option<Compression>,
    image_size: u64,
    algo: HashAlgo,
) -> WriteReport {
    WriteReport {
        image_size,
        stream_size: src.bytes,
        downloaded: src.downloaded,
        compression,
        algo,
        digest,
        requests: src.requests,
        resumed: src.resumed,
        restarted: src.restarted,
        attempts: 1,
        direct_io: false,
        elapsed: Duration::ZERO,
    }
}
