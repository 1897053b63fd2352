//! Kernel command line parsing: `/proc/cmdline` text into `key=value` pairs.
//!
//! Pure functions over text; reading the file is `main.rs`'s job, and deciding what a
//! key means is `resolve.rs`'s. The same format serves the virtual-media
//! `parameters.txt` file (protocol spec 6.1), so both go through [`parse_pairs`].
//!
//! Rules (IPA: `utils._read_params_from_file`): split on ASCII whitespace, ignore tokens
//! without `=`, split each token at its first `=` (the value may contain more `=`), and
//! let a later duplicate win. No quote handling, as in IPA.

use std::collections::BTreeMap;

/// Every `key=value` token of `text`, in order, duplicates kept.
pub fn parse_pairs(text: &str) -> Vec<(&str, &str)> {
    text.split_ascii_whitespace()
        .filter_map(|token| token.split_once('='))
        .collect()
}

/// Parsed kernel parameters: the last value of each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelParams {
    params: BTreeMap<String, String>,
}

impl KernelParams {
    /// Parses a kernel command line (or a `parameters.txt` text).
    pub fn parse(text: &str) -> Self {
        let params = parse_pairs(text)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { params }
    }

    /// The value of `key` (exact spelling), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// The raw `BOOTIF` value (PXE MAC, e.g. `01-aa-bb-cc-dd-ee-ff`).
    pub fn bootif(&self) -> Option<&str> {
        self.get("BOOTIF")
    }

    /// The `boot_method` value (`vmedia` enables `parameters.txt`).
    pub fn boot_method(&self) -> Option<&str> {
        self.get("boot_method")
    }

    /// True when booted from virtual media, so `parameters.txt` applies.
    pub fn is_vmedia(&self) -> bool {
        self.boot_method() == Some("vmedia")
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when no `key=value` token was found.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// All keys and their last values, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_table() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("   \n\t ", &[]),
            ("quiet ro", &[]),
            ("a=1", &[("a", "1")]),
            ("a=1 b=2\n", &[("a", "1"), ("b", "2")]),
            ("a=x=y", &[("a", "x=y")]),
            ("a= b", &[("a", "")]),
            ("=v", &[("", "v")]),
            ("a=1\tquiet  a=2", &[("a", "1"), ("a", "2")]),
            (
                "BOOT_IMAGE=/vmlinuz ipa-api-url=http://10.0.0.1:6385 console=ttyS0,115200n8",
                &[
                    ("BOOT_IMAGE", "/vmlinuz"),
                    ("ipa-api-url", "http://10.0.0.1:6385"),
                    ("console", "ttyS0,115200n8"),
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_pairs(text), *want, "input {text:?}");
        }
    }

    #[test]
    fn later_duplicate_wins() {
        let p = KernelParams::parse("ipa-debug=0 x ipa-debug=1");
        assert_eq!(p.get("ipa-debug"), Some("1"));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn bootif_and_boot_method() {
        let p = KernelParams::parse("BOOTIF=01-52-54-00-12-34-56 boot_method=vmedia");
        assert_eq!(p.bootif(), Some("01-52-54-00-12-34-56"));
        assert_eq!(p.boot_method(), Some("vmedia"));
        assert!(p.is_vmedia());
        let p = KernelParams::parse("boot_method=pxe");
        assert!(!p.is_vmedia());
        assert_eq!(p.bootif(), None);
        assert!(KernelParams::parse("quiet").is_empty());
    }
}
