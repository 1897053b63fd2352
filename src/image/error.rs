//! `ImageError`: every way writing an image can fail, classified once where it arises.
//!
//! [`ImageError::is_transient`] decides retries: remote 5xx answers, connection failures,
//! timeouts, resets and short bodies may succeed on a new attempt; a checksum mismatch
//! is retried too, as IPA retries the whole stream (hardware spec 8.1). Remote 4xx, bad
//! parameters, malformed images and every local write error (ENOSPC, EIO, EROFS) are
//! fatal and never retried as if the network had failed. [`ImageError::to_command_error`]
//! picks the IPA error class; only `api/error.rs` turns that into JSON.
//! URLs appear only as [`RedactedUrl`] (no query string, no credentials).

use std::io;
use std::path::PathBuf;

use crate::errors::CommandError;

use super::format::Compression;
use super::hash_algo::HashAlgo;
use super::url::{InvalidUrl, RedactedUrl};

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `image_info` failed IPA's validation (message as IPA words it).
    #[error("{0}")]
    InvalidParams(String),
    /// No checksum usable under the allow-list, or one that cannot fit its algorithm.
    #[error("{0}")]
    ChecksumUnusable(String),
    /// A checksum file could not be used.
    #[error("checksum file {url}: {reason}")]
    ChecksumFile {
        /// Where it came from.
        url: RedactedUrl,
        /// What was wrong with it.
        reason: String,
    },
    /// The computed digest differs from the expected one.
    #[error("Image failed to verify against checksum. location: {location}; image ID: {id}; image checksum: {expected}; verification checksum: {actual}")]
    Checksum {
        /// The device or file written.
        location: String,
        /// The image id.
        id: String,
        /// The expected digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
        /// The algorithm.
        algo: HashAlgo,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}")]
    Http {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The status code.
        status: u16,
    },
    /// Connecting, sending or receiving failed (refused, reset, timed out, cut short).
    #[error("GET {url}: {reason}")]
    Network {
        /// The URL, redacted.
        url: RedactedUrl,
        /// What failed, without the URL.
        reason: String,
    },
    /// The server sent more bytes than it announced.
    #[error("GET {url}: the server sent more than the {expected} bytes it announced")]
    TooManyBytes {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The announced size.
        expected: u64,
    },
    /// The body ended before the announced size.
    #[error("GET {url}: the body ended after {received} of {expected} bytes")]
    Truncated {
        /// The URL, redacted.
        url: RedactedUrl,
        /// Bytes received in all.
        received: u64,
        /// The announced size.
        expected: u64,
    },
    /// No byte of the body arrived within the read timeout
    /// (`image_download_connection_timeout`).
    #[error("GET {url}: timed out after {} s reading the body, {}", secs(*.after), share(*.received, *.expected))]
    Timeout {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The read timeout that ran out.
        after: std::time::Duration,
        /// Bytes of the image received so far.
        received: u64,
        /// The announced size, if any.
        expected: Option<u64>,
    },
    /// The server sent a `Content-Encoding` this agent cannot decode.
    #[error("GET {url}: unsupported Content-Encoding {encoding:?}")]
    UnsupportedEncoding {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The encoding as sent.
        encoding: String,
    },
    /// A gzip- or deflate-encoded body could not be decoded (corrupt or cut short).
    #[error("GET {url}: decoding its {encoding} Content-Encoding failed: {reason}")]
    BadEncoding {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The encoding.
        encoding: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The image changed on the server between two requests of one download.
    #[error("GET {url}: the image changed on the server during the download")]
    SourceChanged {
        /// The URL, redacted.
        url: RedactedUrl,
    },
    /// The HTTP client could not be set up (bad proxy URL, bad header, TLS settings).
    #[error("HTTP client: {0}")]
    Client(String),
    /// Writing, syncing or wiping the target failed.
    #[error("writing {dev} at offset {offset}: {source}")]
    Write {
        /// The device or file.
        dev: PathBuf,
        /// Where the failed write started.
        offset: u64,
        /// The cause (ENOSPC, EIO, EROFS...).
        #[source]
        source: io::Error,
    },
    /// The image (after decompression) is larger than the target or the configured bound.
    #[error("the image is larger than {limit} bytes ({what})")]
    TooLarge {
        /// The bound in bytes.
        limit: u64,
        /// Which bound: the target's size or the configured maximum.
        what: &'static str,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("{} decompression failed: {reason}", kind.name())]
    Decompress {
        /// The compression format.
        kind: Compression,
        /// The decoder's message.
        reason: String,
    },
    /// Bytes follow the end of the compressed stream.
    #[error("{} stream is followed by unexpected trailing data", kind.name())]
    TrailingData {
        /// The compression format.
        kind: Compression,
    },
    /// The image failed format inspection or decoding (format gate, qcow2 reader).
    #[error("{0}")]
    InvalidImage(String),
    /// A later pipeline stage stopped first; the real cause is reported by that stage.
    #[error("stopped because another pipeline stage failed")]
    Aborted,
    /// A pipeline thread panicked or could not be joined.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    /// A new network attempt might succeed (5xx, connection failures, timeouts, resets,
    /// short bodies, a changed source, a checksum mismatch); never for local I/O.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500,
            Self::Network { .. }
            | Self::Timeout { .. }
            | Self::BadEncoding { .. }
            | Self::Truncated { .. }
            | Self::SourceChanged { .. }
            | Self::Checksum { .. } => true,
            _ => false,
        }
    }

    /// A local write error, with the OS error when there is one.
    pub fn write(dev: impl Into<PathBuf>, offset: u64, source: io::Error) -> Self {
        Self::Write {
            dev: dev.into(),
            offset,
            source,
        }
    }

    /// The IPA error class and details for a command result (`image_id` for the
    /// `Download of image <id> failed: ...` wording of IPA's download errors).
    pub fn to_command_error(&self, image_id: &str) -> CommandError {
        let download = |msg: String| {
            CommandError::ImageDownload(format!("Download of image {image_id} failed: {msg}"))
        };
        match self {
            Self::InvalidParams(m) => CommandError::InvalidCommandParams(m.clone()),
            // IPA's words for a stalled body (`ImageDownload.__iter__`), then the details.
            Self::Timeout { .. } => CommandError::ImageDownloadTimeout(format!(
                "Download of image {image_id} failed: Timed out reading next chunk from \
                 webserver: {self}"
            )),
            Self::Checksum { .. } => CommandError::ImageChecksum(self.to_string()),
            Self::Write { dev, .. } => CommandError::ImageWrite(format!(
                "Writing image to device {} failed: {self}",
                dev.display()
            )),
            Self::TooLarge { .. } => CommandError::ImageWrite(self.to_string()),
            Self::Decompress { .. } | Self::TrailingData { .. } | Self::InvalidImage(_) => {
                CommandError::InvalidImage(self.to_string())
            }
            Self::Internal(_) | Self::Aborted => CommandError::CommandExecution(self.to_string()),
            _ => download(self.to_string()),
        }
    }
}

impl From<InvalidUrl> for ImageError {
    fn from(e: InvalidUrl) -> Self {
        Self::InvalidParams(e.to_string())
    }
}

/// "N of M bytes received", or "N bytes received" without an announced size.
fn share(received: u64, expected: Option<u64>) -> String {
    match expected {
        Some(e) => format!("{received} of {e} bytes received"),
        None => format!("{received} bytes received"),
    }
}

/// Seconds for messages: whole when whole, else with the fraction.
fn secs(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// Shortens an error chain to one line without URLs (reqwest puts the full URL, query
/// string included, into its messages unless told not to).
pub(crate) fn describe_reqwest(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else if err.is_body() {
        "receiving the body failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> RedactedUrl {
        RedactedUrl::parse("http://h/i.img?sig=secret").unwrap()
    }

    #[test]
    fn classification() {
        let fatal_write = ImageError::write(
            "/dev/sda",
            4096,
            io::Error::from_raw_os_error(nix::libc::ENOSPC),
        );
        assert!(!fatal_write.is_transient());
        assert!(!ImageError::Http {
            url: url(),
            status: 404
        }
        .is_transient());
        assert!(ImageError::Http {
            url: url(),
            status: 503
        }
        .is_transient());
        assert!(ImageError::Network {
            url: url(),
            reason: "reset".into()
        }
        .is_transient());
        assert!(!ImageError::TooManyBytes {
            url: url(),
            expected: 1
        }
        .is_transient());
        assert!(!ImageError::TooLarge {
            limit: 1,
            what: "target"
        }
        .is_transient());
    }

    #[test]
    fn a_body_timeout_says_so_with_or_without_a_length() {
        let e = ImageError::Timeout {
            url: url(),
            after: std::time::Duration::from_secs(60),
            received: 512,
            expected: None,
        };
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "GET http://h/i.img?***: timed out after 60 s reading the body, 512 bytes received"
        );
        assert!(
            matches!(e.to_command_error("img"), CommandError::ImageDownloadTimeout(d)
            if d == format!("Download of image img failed: Timed out reading next chunk from webserver: {e}"))
        );
    }

    #[test]
    fn messages_never_carry_the_query() {
        let e = ImageError::Http {
            url: url(),
            status: 500,
        };
        assert!(!e.to_string().contains("secret"));
        let c = e.to_command_error("img");
        assert!(
            matches!(&c, CommandError::ImageDownload(d) if d.starts_with("Download of image img failed: ") && !d.contains("secret"))
        );
    }
}
