//! Decompression chosen by magic bytes, never by headers or file names: gzip (flate2 on
//! zlib-rs), xz (liblzma, C, static) and zstd (libzstd, C, static).
//!
//! [`Decompressor`] reads a compressed `BufRead` and yields the plain bytes, with two
//! guards: the output may not exceed a caller-given bound (a small bomb cannot fill a
//! disk or hang a deploy), and nothing may follow the end of the compressed data
//! (concatenated gzip members, xz streams and zstd frames are one stream; anything else
//! after them is an error, never silently dropped). Memory stays bounded: gzip needs
//! 32 KiB, xz is capped at [`XZ_MEMLIMIT`], zstd refuses windows above libzstd's default
//! limit (128 MiB). Magic detection is the format sniffer's (`format::Compression`);
//! to add a format, add it there and give it a decoder arm in [`Decompressor::new`].

use super::format::Compression;
use std::io::{self, BufRead, Read};

use super::error::ImageError;

/// Memory liblzma may use (xz -9 needs 65 MiB to decompress).
pub const XZ_MEMLIMIT: u64 = 96 << 20;

/// The compression wrapper whose magic opens `head` (at least 6 bytes to recognise
/// xz), as the format sniffer sees it.
pub fn detect(head: &[u8]) -> Option<Compression> {
    Compression::sniff(head)
}

enum Inner<R: BufRead> {
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

/// A bounded decompressing reader over `R`.
pub struct Decompressor<R: BufRead> {
    inner: Inner<R>,
    kind: Compression,
    limit: u64,
    out: u64,
    done: bool,
}

impl<R: BufRead> Decompressor<R> {
    /// A decoder of `kind` over `input`, failing once the output passes `limit` bytes
    /// (`limit_what` names the bound in the error).
    pub fn new(kind: Compression, input: R, limit: u64) -> Result<Self, ImageError> {
        let fail = |reason: String| ImageError::Decompress { kind, reason };
        let inner = match kind {
            Compression::Gzip => Inner::Gzip(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| fail(e.to_string()))?;
                Inner::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Compression::Zstd => Inner::Zstd(
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| fail(e.to_string()))?,
            ),
        };
        Ok(Self {
            inner,
            kind,
            limit,
            out: 0,
            done: false,
        })
    }

    /// Plain bytes produced so far.
    pub fn total_out(&self) -> u64 {
        self.out
    }

    fn input(&mut self) -> &mut R {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Xz(d) => d.get_mut(),
            Inner::Zstd(d) => d.get_mut(),
        }
    }

    /// Reads plain bytes into `buf`; `Ok(0)` only at the verified end of the stream.
    pub fn read_checked(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let kind = self.kind;
        // Ask for one byte more than the bound allows, so passing it is seen.
        let room = self.limit.saturating_sub(self.out).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let res = match &mut self.inner {
            Inner::Gzip(d) => d.read(&mut buf[..want]),
            Inner::Xz(d) => d.read(&mut buf[..want]),
            Inner::Zstd(d) => d.read(&mut buf[..want]),
        };
        let n =
            res.map_err(
                |e| match e.get_ref().and_then(|s| s.downcast_ref::<ImageError>()) {
                    // An error of the stage below (e.g. the download) passed through our reader.
                    Some(_) => upstream(e),
                    None => ImageError::Decompress {
                        kind,
                        reason: e.to_string(),
                    },
                },
            )?;
        self.out += n as u64;
        if self.out > self.limit {
            return Err(ImageError::TooLarge {
                limit: self.limit,
                what: "bound on the decompressed size",
            });
        }
        if n == 0 {
            self.done = true;
            let rest = self
                .input()
                .fill_buf()
                .map_err(|e| ImageError::Decompress {
                    kind,
                    reason: e.to_string(),
                })?;
            if !rest.is_empty() {
                return Err(ImageError::TrailingData { kind });
            }
        }
        Ok(n)
    }
}

/// Unwraps an [`ImageError`] carried inside an `io::Error`.
fn upstream(e: io::Error) -> ImageError {
    match e.into_inner().map(|b| b.downcast::<ImageError>()) {
        Some(Ok(img)) => *img,
        Some(Err(other)) => ImageError::Internal(other.to_string()),
        None => ImageError::Internal("an I/O error without detail".to_owned()),
    }
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_checked(buf).map_err(io::Error::other)
    }
}

/// Turns an `io::Error` from a reader chain back into the [`ImageError`] it carries, or
/// wraps it as `fallback`.
pub fn image_error(e: io::Error, fallback: impl FnOnce(io::Error) -> ImageError) -> ImageError {
    if e.get_ref().is_some_and(|s| s.is::<ImageError>()) {
        upstream(e)
    } else {
        fallback(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn gzip(d: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(d).unwrap();
        e.finish().unwrap()
    }

    fn xz(d: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(d).unwrap();
        e.finish().unwrap()
    }

    fn zstd(d: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(d, 1).unwrap()
    }

    fn decode(kind: Compression, c: &[u8], limit: u64) -> Result<Vec<u8>, ImageError> {
        let mut d = Decompressor::new(kind, c, limit)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        loop {
            let n = d.read_checked(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn round_trips_and_magic() {
        let d = data();
        for (kind, c) in [
            (Compression::Gzip, gzip(&d)),
            (Compression::Xz, xz(&d)),
            (Compression::Zstd, zstd(&d)),
        ] {
            assert_eq!(detect(&c), Some(kind));
            assert_eq!(decode(kind, &c, u64::MAX).unwrap(), d, "{kind:?}");
        }
        assert_eq!(detect(&[0u8; 512]), None);
        assert_eq!(detect(b"\x1f"), None);
    }

    #[test]
    fn concatenated_streams_are_one_stream() {
        let (a, b) = (b"first part ".repeat(1000), b"second".repeat(1000));
        let whole = [a.clone(), b.clone()].concat();
        for (kind, c) in [
            (Compression::Gzip, [gzip(&a), gzip(&b)].concat()),
            (Compression::Xz, [xz(&a), xz(&b)].concat()),
            (Compression::Zstd, [zstd(&a), zstd(&b)].concat()),
        ] {
            assert_eq!(decode(kind, &c, u64::MAX).unwrap(), whole, "{kind:?}");
        }
    }

    #[test]
    fn trailing_garbage_and_truncation_fail() {
        let d = data();
        for (kind, c) in [
            (Compression::Gzip, gzip(&d)),
            (Compression::Xz, xz(&d)),
            (Compression::Zstd, zstd(&d)),
        ] {
            let mut bad = c.clone();
            bad.extend_from_slice(b"garbage after the end");
            assert!(decode(kind, &bad, u64::MAX).is_err(), "{kind:?} trailing");
            let cut = &c[..c.len() - 7];
            assert!(decode(kind, cut, u64::MAX).is_err(), "{kind:?} truncated");
        }
    }

    #[test]
    fn output_bound() {
        let zeros = vec![0u8; 4 << 20];
        for (kind, c) in [
            (Compression::Gzip, gzip(&zeros)),
            (Compression::Xz, xz(&zeros)),
            (Compression::Zstd, zstd(&zeros)),
        ] {
            let e = decode(kind, &c, 1 << 20).unwrap_err();
            assert!(
                matches!(e, ImageError::TooLarge { limit, .. } if limit == 1 << 20),
                "{kind:?}: {e}"
            );
            // Exactly at the bound is fine.
            assert_eq!(decode(kind, &c, 4 << 20).unwrap().len(), 4 << 20);
        }
    }
}
