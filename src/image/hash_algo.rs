//! The hash algorithms an image checksum may use (INVARIANTS 3: md5 only while enabled).

use std::fmt;

/// A hash algorithm on the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// SHA-256.
    Sha256,
    /// SHA-512 (Glance's default `os_hash_algo`).
    Sha512,
    /// MD5, only while the conductor enables it.
    Md5,
}

impl HashAlgo {
    /// The algorithm named `name` (as in `os_hash_algo`) if it is on the allow-list.
    pub fn from_name(name: &str, md5_enabled: bool) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            "md5" if md5_enabled => Some(Self::Md5),
            _ => None,
        }
    }

    /// The algorithm whose hex digest has `len` characters.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            32 => Some(Self::Md5),
            _ => None,
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
            Self::Md5 => 32,
        }
    }

    /// Lower-case name as IPA and Glance spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Md5 => "md5",
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
