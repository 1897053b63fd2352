//! Checksums: which digest to verify an image against, and computing it.
//!
//! Allow-list (INVARIANTS 3): sha256 and sha512 always, md5 only while the conductor
//! enables it (`agent_md5_checksum_enable`), on every path: `os_hash_algo`, a digest
//! guessed by length, or a digest read from a checksum file.
//!
//! Precedence (protocol spec 2.3, `IPA: standby.ImageDownload.__init__`):
//! 1. `os_hash_algo` (if allowed) with `os_hash_value`, which may itself be a URL;
//! 2. `checksum` as a URL of a checksum file;
//! 3. `checksum` as a hex digest, its algorithm taken from its length (32/64/128).
//!
//! A checksum file is fetched with a size bound ([`CHECKSUM_FILE_LIMIT`]) and parsed by
//! [`parse_checksum_file`]: the line naming the image's file (the last path segment of
//! `urls[0]`) exactly, in GNU (`<hex>  [*]name`) or BSD (`ALGO (name) = <hex>`) form, or
//! a file holding one bare digest. Digests compare case-insensitively.

use super::hash_algo::HashAlgo;
use std::fmt;

use md5::Digest as _;

use super::error::ImageError;
use super::info::ImageInfo;
use super::url::RedactedUrl;

/// Largest checksum file read (real ones are a few KiB; SHA256SUMS of a whole
/// distribution mirror stays under 100 KiB).
pub const CHECKSUM_FILE_LIMIT: u64 = 1 << 20;

/// The digest an image must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The algorithm.
    pub algo: HashAlgo,
    /// The hex digest, lower case.
    pub hex: String,
}

impl Expected {
    /// Checks `hex` against `algo` and the allow-list.
    pub fn new(algo: HashAlgo, hex: &str, md5_enabled: bool) -> Result<Self, ImageError> {
        if algo == HashAlgo::Md5 && !md5_enabled {
            return Err(md5_disabled());
        }
        let hex = hex.trim();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageError::ChecksumUnusable(format!(
                "The checksum {hex:?} is not a {algo} hex digest."
            )));
        }
        Ok(Self {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// Compares a computed digest, ignoring case.
    pub fn matches(&self, actual_hex: &str) -> bool {
        self.hex.eq_ignore_ascii_case(actual_hex)
    }
}

/// Where the expected digest comes from, after precedence, before any download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumSource {
    /// A digest given inline.
    Digest(Expected),
    /// A checksum file to fetch; `algo` is set when `os_hash_algo` named it.
    Url {
        /// The file's URL (kept whole for the request; log only its redacted form).
        url: String,
        /// The algorithm, if named.
        algo: Option<HashAlgo>,
    },
}

fn md5_disabled() -> ImageError {
    ImageError::ChecksumUnusable(
        "MD5 support is disabled, and support will be removed in a 2024 version of Ironic."
            .to_owned(),
    )
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn by_length(hex: &str, md5_enabled: bool) -> Result<Expected, ImageError> {
    let algo = HashAlgo::from_hex_len(hex.trim().len()).ok_or_else(|| {
        ImageError::ChecksumUnusable(
            "Unable to identify checksum algorithm used, and a value is not specified in \
             the os_hash_algo setting."
                .to_owned(),
        )
    })?;
    Expected::new(algo, hex, md5_enabled)
}

/// Applies the precedence of protocol spec 2.3 to `info`.
pub fn select(info: &ImageInfo, md5_enabled: bool) -> Result<ChecksumSource, ImageError> {
    let algo = info.os_hash_algo.as_deref().filter(|a| !a.is_empty());
    let value = info.os_hash_value.as_deref().filter(|v| !v.is_empty());
    if let (Some(name), Some(value)) = (algo, value) {
        if let Some(algo) = HashAlgo::from_name(name, md5_enabled) {
            return Ok(if is_url(value) {
                ChecksumSource::Url {
                    url: value.to_owned(),
                    algo: Some(algo),
                }
            } else {
                ChecksumSource::Digest(Expected::new(algo, value, md5_enabled)?)
            });
        }
        tracing::warn!(
            algo = name,
            "os_hash_algo is not on the allow-list; trying 'checksum'"
        );
    }
    match info.checksum.as_deref().filter(|c| !c.is_empty()) {
        Some(c) if is_url(c) => Ok(ChecksumSource::Url {
            url: c.to_owned(),
            algo: None,
        }),
        Some(c) => Ok(ChecksumSource::Digest(by_length(c, md5_enabled)?)),
        None => Err(ImageError::ChecksumUnusable(format!(
            "Unable to verify image {} with available checksums. Please make sure the \
             specified 'os_hash_algo' (currently {}) is supported by this ramdisk, or \
             provide a md5 checksum via the 'checksum' field",
            info.id,
            algo.unwrap_or("None")
        ))),
    }
}

/// The digest for `info`'s file in the checksum file `body` fetched from `url`.
pub fn expected_from_file(
    info: &ImageInfo,
    url: &str,
    algo: Option<HashAlgo>,
    body: &[u8],
    md5_enabled: bool,
) -> Result<Expected, ImageError> {
    let redacted = RedactedUrl::parse(url)?;
    let text = String::from_utf8_lossy(body);
    let hex = parse_checksum_file(&text, &info.file_name()).map_err(|reason| {
        ImageError::ChecksumFile {
            url: redacted.clone(),
            reason,
        }
    })?;
    tracing::debug!(url = %redacted, "checksum taken from checksum file");
    match algo {
        Some(a) if a.hex_len() != hex.len() => Err(ImageError::ChecksumFile {
            url: redacted,
            reason: format!("its digest has {} hex digits, not a {a} digest", hex.len()),
        }),
        Some(a) => Expected::new(a, &hex, md5_enabled),
        None => by_length(&hex, md5_enabled),
    }
}

fn hex_token(t: &str) -> bool {
    matches!(t.len(), 32 | 64 | 128) && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the digest for `file_name` in a checksum file (`Err` holds the reason).
pub fn parse_checksum_file(text: &str, file_name: &str) -> Result<String, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => return Err("Empty checksum file".to_owned()),
        // A file holding only the digest (IPA: a single line without a space).
        [only] if !only.contains(' ') => {
            return if hex_token(only) {
                Ok((*only).to_owned())
            } else {
                Err("Invalid checksum file (No valid checksum found)".to_owned())
            };
        }
        _ => {}
    }
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let gnu = tokens
            .last()
            .is_some_and(|t| t.strip_prefix('*').unwrap_or(t) == file_name);
        let bsd = tokens.len() > 2
            && tokens[1..tokens.len() - 1]
                .iter()
                .any(|t| t.strip_prefix('(').and_then(|t| t.strip_suffix(')')) == Some(file_name));
        if !(gnu || bsd) {
            continue;
        }
        // The digest opens the line (GNU) or closes it (BSD `= <hex>`).
        let first = tokens.first().filter(|t| tokens.len() > 1 && hex_token(t));
        let last = tokens.last().filter(|t| tokens.len() > 1 && hex_token(t));
        if let Some(hex) = first.or(last) {
            return Ok((*hex).to_owned());
        }
    }
    Err(format!("Checksum file does not contain name {file_name}"))
}

/// The SHA-2 code: ring by default; with the `openssl-sha` feature, OpenSSL's
/// (`SHA256_*`/`SHA512_*` from a vendored static build). Both pick SHA-NI for SHA-256
/// where the CPU has it; without it OpenSSL has AVX2 code where ring has only AVX/SSSE3,
/// and for SHA-512 (no CPU instructions on the x86 servers in use) OpenSSL's AVX2 code is
/// about 1.4x ring's speed. See `bench/README.md` and `examples/hash_speed.rs`.
#[cfg(not(feature = "openssl-sha"))]
mod sha2_impl {
    pub type Sha256 = ring::digest::Context;
    pub type Sha512 = ring::digest::Context;

    pub fn sha256() -> Sha256 {
        ring::digest::Context::new(&ring::digest::SHA256)
    }
    pub fn sha512() -> Sha512 {
        ring::digest::Context::new(&ring::digest::SHA512)
    }
    pub fn finish256(c: Sha256) -> Vec<u8> {
        c.finish().as_ref().to_vec()
    }
    pub fn finish512(c: Sha512) -> Vec<u8> {
        c.finish().as_ref().to_vec()
    }
}

#[cfg(feature = "openssl-sha")]
mod sha2_impl {
    pub type Sha256 = openssl::sha::Sha256;
    pub type Sha512 = openssl::sha::Sha512;

    pub fn sha256() -> Sha256 {
        Sha256::new()
    }
    pub fn sha512() -> Sha512 {
        Sha512::new()
    }
    pub fn finish256(c: Sha256) -> Vec<u8> {
        c.finish().to_vec()
    }
    pub fn finish512(c: Sha512) -> Vec<u8> {
        c.finish().to_vec()
    }
}

use sha2_impl::{finish256, finish512};

/// A running digest over the bytes of an image.
pub enum Hasher {
    /// SHA-256 (SHA-NI when the CPU has it).
    Sha256(sha2_impl::Sha256),
    /// SHA-512.
    Sha512(sha2_impl::Sha512),
    /// MD5 (md-5).
    Md5(md5::Md5),
}

impl Hasher {
    /// A fresh digest for `algo`.
    pub fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Sha256 => Self::Sha256(sha2_impl::sha256()),
            HashAlgo::Sha512 => Self::Sha512(sha2_impl::sha512()),
            HashAlgo::Md5 => Self::Md5(md5::Md5::new()),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(c) => c.update(data),
            Self::Sha512(c) => c.update(data),
            Self::Md5(m) => m.update(data),
        }
    }

    /// The lower-case hex digest.
    pub fn finish_hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Self::Sha256(c) => finish256(c),
            Self::Sha512(c) => finish512(c),
            Self::Md5(m) => m.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Sha256(_) => "sha256",
            Self::Sha512(_) => "sha512",
            Self::Md5(_) => "md5",
        };
        write!(f, "Hasher({name})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(v: serde_json::Value) -> ImageInfo {
        ImageInfo::from_value(&v, true).unwrap()
    }

    const A64: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn known_digests() {
        let mut h = Hasher::new(HashAlgo::Sha256);
        h.update(b"abc");
        assert_eq!(
            h.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new(HashAlgo::Md5);
        h.update(b"abc");
        assert_eq!(h.finish_hex(), "900150983cd24fb0d6963f7d28e17f72");
        let mut h = Hasher::new(HashAlgo::Sha512);
        h.update(b"abc");
        assert!(h.finish_hex().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn precedence() {
        let both = info(json!({"id": "i", "urls": ["http://h/f.img"],
            "os_hash_algo": "sha512", "os_hash_value": "B".repeat(128), "checksum": A64}));
        assert_eq!(
            select(&both, false).unwrap(),
            ChecksumSource::Digest(Expected {
                algo: HashAlgo::Sha512,
                hex: "b".repeat(128)
            })
        );
        // An algorithm off the allow-list falls through to `checksum`.
        let odd = info(json!({"id": "i", "urls": ["http://h/f.img"],
            "os_hash_algo": "sha384", "os_hash_value": "c".repeat(96), "checksum": "http://h/SUMS"}));
        assert_eq!(
            select(&odd, false).unwrap(),
            ChecksumSource::Url {
                url: "http://h/SUMS".into(),
                algo: None
            }
        );
        let legacy = info(json!({"id": "i", "urls": ["http://h/f.img"], "checksum": A64}));
        assert!(matches!(
            select(&legacy, false).unwrap(),
            ChecksumSource::Digest(Expected {
                algo: HashAlgo::Sha256,
                ..
            })
        ));
        let url_value = info(json!({"id": "i", "urls": ["http://h/f.img"],
            "os_hash_algo": "sha256", "os_hash_value": "https://h/SUMS"}));
        assert_eq!(
            select(&url_value, false).unwrap(),
            ChecksumSource::Url {
                url: "https://h/SUMS".into(),
                algo: Some(HashAlgo::Sha256)
            }
        );
    }

    #[test]
    fn md5_only_when_enabled_on_every_path() {
        let legacy = info(json!({"id": "i", "urls": ["http://h/f"], "checksum": "d".repeat(32)}));
        assert!(select(&legacy, false)
            .unwrap_err()
            .to_string()
            .contains("MD5 support is disabled"));
        assert!(select(&legacy, true).is_ok());
        let named = info(json!({"id": "i", "urls": ["http://h/f"],
            "os_hash_algo": "md5", "os_hash_value": "d".repeat(32)}));
        assert!(select(&named, false).is_err());
        assert_eq!(
            select(&named, true).unwrap(),
            ChecksumSource::Digest(Expected {
                algo: HashAlgo::Md5,
                hex: "d".repeat(32)
            })
        );
        assert!(Expected::new(HashAlgo::Md5, &"d".repeat(32), false).is_err());
    }

    #[test]
    fn bad_digests_are_refused() {
        assert!(Expected::new(HashAlgo::Sha256, "xyz", false).is_err());
        assert!(Expected::new(HashAlgo::Sha256, &"g".repeat(64), false).is_err());
        assert!(by_length("abc", false)
            .unwrap_err()
            .to_string()
            .contains("Unable to identify"));
        assert!(Expected::new(HashAlgo::Sha256, &A64.to_uppercase(), false)
            .unwrap()
            .matches(A64));
    }

    #[test]
    fn checksum_files() {
        let sums = format!(
            "# comment\n{b}  other.img\n{a} *disk.img\n{c}  disk.img.bak\n",
            a = A64,
            b = "b".repeat(64),
            c = "c".repeat(64)
        );
        assert_eq!(parse_checksum_file(&sums, "disk.img").unwrap(), A64);
        // Exact names only: a regex-style '.' must not match another character.
        assert!(parse_checksum_file(&sums, "diskXimg").is_err());
        assert_eq!(
            parse_checksum_file(&sums, "disk.img.bak").unwrap(),
            "c".repeat(64)
        );
        let bsd = format!(
            "SHA256 (CentOS.qcow2) = {A64}\nSHA256 (other) = {}\n",
            "e".repeat(64)
        );
        assert_eq!(parse_checksum_file(&bsd, "CentOS.qcow2").unwrap(), A64);
        assert_eq!(
            parse_checksum_file(&format!("  {A64}  \n"), "x").unwrap(),
            A64
        );
        assert_eq!(
            parse_checksum_file("\n \n", "x").unwrap_err(),
            "Empty checksum file"
        );
        assert!(parse_checksum_file("nothex", "x")
            .unwrap_err()
            .contains("No valid checksum"));
        assert_eq!(
            parse_checksum_file(&sums, "missing.img").unwrap_err(),
            "Checksum file does not contain name missing.img"
        );
    }
}
