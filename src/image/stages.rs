//! The blocking stages of the pipeline (see `pipeline`): hashing, decoding (raw pass-through,
//! decompression or a custom format reader writing through [`QueueSink`]) and the writer
//! threads in front of the hold-back. Each takes its input channel and owns its output
//! channel, so ending a stage (done or failed) ends the stages around it.

use std::fs::File;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::checksum::Hasher;
use super::decompress::Decompressor;
use super::error::ImageError;
use super::format::Compression;
use super::hash_algo::HashAlgo;
use super::holdback::{HoldBack, HOLD_BACK};
use super::pool::{Buf, BufPool, ChannelReader, Chunk};
use super::progress::Progress;
use super::sink::PositionalSink;

/// A format reader plugged in after decompression: reads the plain image stream and
/// writes guest bytes at their offsets. Called again for each attempt.
pub type DecodeFn =
    Arc<dyn Fn(&mut dyn BufRead, &mut QueueSink) -> Result<(), ImageError> + Send + Sync>;

/// What the stage after hashing (and decompression) does with the stream.
#[derive(Clone)]
pub enum Decode {
    /// Copy the bytes to the same offsets (raw images, IPA's `stream_raw_images`).
    Raw,
    /// Hand the stream to a format reader (the qcow2 decoder behind the format gate).
    Custom(DecodeFn),
}

impl std::fmt::Debug for Decode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Raw => "Raw",
            Self::Custom(_) => "Custom",
        })
    }
}

/// A [`PositionalSink`] for decoder stages: copies writes into pool buffers, merging
/// contiguous ones, and queues them for the writer threads.
pub struct QueueSink {
    tx: mpsc::Sender<Chunk>,
    pool: BufPool,
    cur: Option<Chunk>,
    limit: u64,
    limit_what: &'static str,
    end: u64,
}

impl QueueSink {
    pub(crate) fn new(tx: mpsc::Sender<Chunk>, pool: BufPool, limit: (u64, &'static str)) -> Self {
        Self {
            tx,
            pool,
            cur: None,
            limit: limit.0,
            limit_what: limit.1,
            end: 0,
        }
    }

    fn flush(&mut self) -> Result<(), ImageError> {
        match self.cur.take() {
            Some(c) if !c.buf.is_empty() => {
                self.tx.blocking_send(c).map_err(|_| ImageError::Aborted)
            }
            _ => Ok(()),
        }
    }

    /// Queues `len` zero bytes at `offset` (a range the image marks as zero).
    pub fn write_zeros(&mut self, offset: u64, len: u64) -> Result<(), ImageError> {
        let zeros = [0u8; 64 << 10];
        let mut done = 0;
        while done < len {
            let n = usize::try_from(len - done).map_or(zeros.len(), |left| left.min(zeros.len()));
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// One past the highest byte written.
    pub fn end(&self) -> u64 {
        self.end
    }

    pub(crate) fn finish(mut self) -> Result<u64, ImageError> {
        self.flush()?;
        Ok(self.end)
    }
}

impl PositionalSink for QueueSink {
    fn write_at(&mut self, mut data: &[u8], mut offset: u64) -> Result<(), ImageError> {
        let end = offset + data.len() as u64;
        if end > self.limit {
            return Err(ImageError::TooLarge {
                limit: self.limit,
                what: self.limit_what,
            });
        }
        self.end = self.end.max(end);
        while !data.is_empty() {
            let fits = self
                .cur
                .as_ref()
                .is_some_and(|c| c.offset + c.buf.len() as u64 == offset && !c.buf.is_full());
            if !fits {
                self.flush()?;
                let buf = self.pool.blocking_get();
                self.cur = Some(Chunk { offset, buf });
            }
            let c = self.cur.as_mut().expect("set above");
            let n = c.buf.extend_from_slice(data);
            data = &data[n..];
            offset += n as u64;
            if c.buf.is_full() {
                self.flush()?;
            }
        }
        Ok(())
    }
}

/// The qcow2 reader's sink: guest writes and zero ranges go through the same queue (an
/// unallocated range is written as zeros too, since a disk may hold old data there).
impl super::qcow2::GuestSink for QueueSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        PositionalSink::write_at(self, data, offset).map_err(std::io::Error::other)
    }

    fn zero(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.write_zeros(offset, len).map_err(std::io::Error::other)
    }
}

pub(crate) fn hash_stage(
    algo: HashAlgo,
    mut rx: mpsc::Receiver<Chunk>,
    tx: mpsc::Sender<Chunk>,
) -> Result<String, ImageError> {
    let mut h = Hasher::new(algo);
    while let Some(c) = rx.blocking_recv() {
        h.update(c.buf.as_slice());
        tx.blocking_send(c).map_err(|_| ImageError::Aborted)?;
    }
    Ok(h.finish_hex())
}

pub(crate) struct DecodeCfg {
    pub(crate) decompress: bool,
    pub(crate) limit: (u64, &'static str),
    pub(crate) chunk_size: usize,
    pub(crate) buffers: usize,
    pub(crate) progress: Arc<Progress>,
    pub(crate) decode: Decode,
}

fn too_large(limit: (u64, &'static str)) -> ImageError {
    ImageError::TooLarge {
        limit: limit.0,
        what: limit.1,
    }
}

/// Returns the compression found and the image's size on the target.
pub(crate) fn decode_stage(
    cfg: DecodeCfg,
    mut rx: mpsc::Receiver<Chunk>,
    tx: mpsc::Sender<Chunk>,
) -> Result<(Option<Compression>, u64), ImageError> {
    let Some(first) = rx.blocking_recv() else {
        return Ok((None, 0));
    };
    let kind = if cfg.decompress {
        Compression::sniff(first.buf.as_slice())
    } else {
        None
    };
    if let Some(k) = kind {
        tracing::info!(compression = k.name(), "image is compressed; decompressing");
    }
    match (&cfg.decode, kind) {
        (Decode::Raw, None) => {
            // Refuse before writing anything when the announced size cannot fit.
            if cfg.progress.total().is_some_and(|t| t > cfg.limit.0) {
                return Err(too_large(cfg.limit));
            }
            let mut end = 0;
            let mut next = Some(first);
            while let Some(c) = next.take().or_else(|| rx.blocking_recv()) {
                end = c.offset + c.buf.len() as u64;
                if end > cfg.limit.0 {
                    return Err(too_large(cfg.limit));
                }
                tx.blocking_send(c).map_err(|_| ImageError::Aborted)?;
            }
            Ok((None, end))
        }
        (Decode::Raw, Some(k)) => {
            let mut reader = ChannelReader::new(Some(first), rx);
            let mut dec = Decompressor::new(k, &mut reader, cfg.limit.0)?;
            let mut out = BufPool::new(cfg.buffers, cfg.chunk_size);
            let mut off = 0u64;
            loop {
                let mut buf: Buf = out.blocking_get();
                let mut eof = false;
                while !buf.is_full() {
                    let n = dec
                        .read_checked(buf.spare_mut())
                        .map_err(|e| limit_name(e, cfg.limit))?;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    buf.advance(n);
                }
                let len = buf.len() as u64;
                if len > 0 {
                    tx.blocking_send(Chunk { offset: off, buf })
                        .map_err(|_| ImageError::Aborted)?;
                    off += len;
                }
                if eof {
                    return Ok((Some(k), off));
                }
            }
        }
        (Decode::Custom(f), kind) => {
            let mut reader = ChannelReader::new(Some(first), rx);
            let mut sink = QueueSink::new(tx, BufPool::new(cfg.buffers, cfg.chunk_size), cfg.limit);
            match kind {
                Some(k) => {
                    let dec = Decompressor::new(k, &mut reader, cfg.limit.0)?;
                    let mut dec = std::io::BufReader::with_capacity(256 << 10, dec);
                    f(&mut dec, &mut sink).map_err(|e| limit_name(e, cfg.limit))?;
                }
                None => f(&mut reader, &mut sink)?,
            }
            Ok((kind, sink.finish()?))
        }
    }
}

/// Names the real bound in a decompressor's size error.
fn limit_name(e: ImageError, limit: (u64, &'static str)) -> ImageError {
    match e {
        ImageError::TooLarge { .. } => too_large(limit),
        other => other,
    }
}

pub(crate) fn write_stage(
    hb: &HoldBack<File>,
    rx: mpsc::Receiver<Chunk>,
    writers: usize,
    progress: &Progress,
) -> Result<(), ImageError> {
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| loop {
                let next = rx.lock().expect("writer lock poisoned").blocking_recv();
                let Some(c) = next else { break };
                if failed.load(Ordering::Acquire) {
                    break;
                }
                match hb.write_at(c.buf.as_slice(), c.offset) {
                    Ok(()) => {
                        let end = c.offset + c.buf.len() as u64;
                        progress.add_written(end.saturating_sub(c.offset.max(HOLD_BACK)));
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Release);
                        first_err
                            .lock()
                            .expect("error lock poisoned")
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().expect("error lock poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
