//! Decoding an HTTP `Content-Encoding` (gzip, deflate) as IPA's HTTP client does.
//!
//! The agent asks for `Accept-Encoding: identity`, but some servers compress anyway; the
//! checksum covers the image, not its transfer encoding, so such a body is decoded before
//! anything downstream sees it. This is unrelated to an image *file* that is compressed
//! (`.gz`, no `Content-Encoding`): that one is hashed as sent and decompressed later.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Encoded bytes fed at once, which bounds the decoded output held per call (deflate
/// expands at most about 1032:1) whatever chunk sizes the server sends.
pub const FEED_LIMIT: usize = 4096;

/// A running decoder for one response body.
#[derive(Debug)]
pub enum ContentDecoder {
    /// `gzip` / `x-gzip` (every member).
    Gzip(MultiGzDecoder<Vec<u8>>),
    /// `deflate` as RFC 9110 defines it (zlib-wrapped).
    Zlib(ZlibDecoder<Vec<u8>>),
    /// `deflate` sent as a bare deflate stream, as some servers do.
    RawDeflate(DeflateDecoder<Vec<u8>>),
    /// `deflate` before its first two bytes tell which of the two it is.
    DeflatePending(Vec<u8>),
}

/// A `Content-Encoding` this agent cannot decode (the value as sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported Content-Encoding {0:?}")]
pub struct Unsupported(pub String);

impl ContentDecoder {
    /// The decoder a `Content-Encoding` header asks for; `None` for identity or none.
    pub fn for_header(value: Option<&str>) -> Result<Option<Self>, Unsupported> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Self::Gzip(MultiGzDecoder::new(Vec::new())))),
            "deflate" => Ok(Some(Self::DeflatePending(Vec::new()))),
            _ => Err(Unsupported(v.to_owned())),
        }
    }

    /// The encoding's name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gzip(_) => "gzip",
            _ => "deflate",
        }
    }

    /// Feeds encoded bytes (at most [`FEED_LIMIT`] keep the output small) and returns
    /// the decoded bytes they completed.
    pub fn feed(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        if let Self::DeflatePending(seen) = self {
            seen.extend_from_slice(input);
            if seen.len() < 2 {
                return Ok(Vec::new());
            }
            let head = std::mem::take(seen);
            // RFC 1950: CM = 8 in the low nibble, and CMF·256 + FLG divisible by 31.
            let zlib =
                head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            *self = if zlib {
                Self::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                Self::RawDeflate(DeflateDecoder::new(Vec::new()))
            };
            return self.feed(&head);
        }
        match self {
            Self::Gzip(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Self::Zlib(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Self::RawDeflate(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Self::DeflatePending(_) => unreachable!("handled above"),
        }
    }

    /// Ends the body: the last decoded bytes, or an error when a gzip stream was cut
    /// short (deflate has no trailer to check; the image checksum still does).
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Self::Gzip(d) => d.finish(),
            Self::Zlib(d) => d.finish(),
            Self::RawDeflate(d) => d.finish(),
            Self::DeflatePending(seen) if seen.is_empty() => Ok(Vec::new()),
            Self::DeflatePending(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "deflate stream of one byte",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;

    fn decode(mut d: ContentDecoder, encoded: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for piece in encoded.chunks(step) {
            out.extend(d.feed(piece)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    fn enc<W: Write>(mut w: W, data: &[u8]) -> W {
        w.write_all(data).unwrap();
        w
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_in_any_pieces() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i * 7 / 3).to_le_bytes()[0])
            .collect();
        let gz = enc(
            flate2::write::GzEncoder::new(Vec::new(), Compression::fast()),
            &data,
        )
        .finish()
        .unwrap();
        let zl = enc(
            flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast()),
            &data,
        )
        .finish()
        .unwrap();
        let raw = enc(
            flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast()),
            &data,
        )
        .finish()
        .unwrap();
        for step in [1, 1000, FEED_LIMIT] {
            let g = ContentDecoder::for_header(Some("gzip")).unwrap().unwrap();
            assert_eq!(decode(g, &gz, step).unwrap(), data);
            let z = ContentDecoder::for_header(Some("Deflate"))
                .unwrap()
                .unwrap();
            assert_eq!(decode(z, &zl, step).unwrap(), data);
            let r = ContentDecoder::for_header(Some("deflate"))
                .unwrap()
                .unwrap();
            assert_eq!(decode(r, &raw, step).unwrap(), data);
        }
        let g = ContentDecoder::for_header(Some("x-gzip")).unwrap().unwrap();
        assert!(decode(g, &gz[..gz.len() - 4], 1000).is_err(), "cut gzip");
    }

    #[test]
    fn identity_and_unknown_encodings() {
        assert!(ContentDecoder::for_header(None).unwrap().is_none());
        assert!(ContentDecoder::for_header(Some(" identity "))
            .unwrap()
            .is_none());
        assert_eq!(
            ContentDecoder::for_header(Some("br")).unwrap_err(),
            Unsupported("br".into())
        );
    }
}
