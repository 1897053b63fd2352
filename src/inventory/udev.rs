//! The udev database: `run/udev/data/b<major>:<minor>` records of block devices.
//!
//! Text lines; `E:KEY=value` are properties (values raw), `S:link` are symlinks below
//! `/dev`. Other line kinds (`I:`, `W:`, `G:`, `Q:`, `V:`) are ignored. A device udev
//! does not know (no daemon in the ramdisk, no record) simply has no record.

use std::collections::BTreeMap;
use std::path::Path;

use super::read::{read_bounded, under};

/// A record is a few hundred bytes; 256 KiB bounds a corrupt or hostile one.
const RECORD_CAP: u64 = 256 << 10;

/// Properties and links of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevRecord {
    /// `E:` properties.
    pub props: BTreeMap<String, String>,
    /// `S:` links, relative to `/dev` (`disk/by-path/pci-0000:00:17.0-ata-1`).
    pub links: Vec<String>,
}

impl UdevRecord {
    /// The first of `keys` that is set to a non-empty value.
    pub fn first(&self, keys: &[&str]) -> Option<String> {
        keys.iter()
            .filter_map(|k| self.props.get(*k))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

/// Reads the record of block device `major:minor`; `None` when udev has none.
pub fn read_block_record(root: &Path, dev: &str) -> Option<UdevRecord> {
    let path = under(root, &format!("run/udev/data/b{dev}"));
    match read_bounded(&path, RECORD_CAP) {
        Ok(bytes) => Some(parse_udev_record(&String::from_utf8_lossy(&bytes))),
        Err(super::InventoryError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(err) => {
            tracing::debug!(error = %err, "udev record unreadable");
            None
        }
    }
}

/// Parses the text of one udev database record.
pub fn parse_udev_record(text: &str) -> UdevRecord {
    let mut rec = UdevRecord::default();
    for line in text.lines() {
        if let Some(prop) = line.strip_prefix("E:") {
            if let Some((key, value)) = prop.split_once('=') {
                rec.props.insert(key.to_owned(), value.to_owned());
            }
        } else if let Some(link) = line.strip_prefix("S:") {
            rec.links.push(link.to_owned());
        }
    }
    rec
}

/// Decodes udev's `\xHH` escapes (as in `ID_MODEL_ENC`); anything else is kept as is.
pub fn unescape_hex(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_properties_and_links() {
        let text = "S:disk/by-id/wwn-0x55cd\nS:disk/by-path/pci-0000:00:17.0-ata-1\nI:123\n\
                    E:ID_MODEL=INTEL_SSD\nE:ID_SERIAL_SHORT=PHYS\nE:EMPTY=\nE:EQ=a=b\nG:systemd\n";
        let rec = parse_udev_record(text);
        assert_eq!(rec.props["ID_MODEL"], "INTEL_SSD");
        assert_eq!(rec.props["EQ"], "a=b");
        assert_eq!(rec.links.len(), 2);
        assert_eq!(
            rec.first(&["EMPTY", "ID_SERIAL_SHORT"]).as_deref(),
            Some("PHYS")
        );
        assert_eq!(rec.first(&["NOPE"]), None);
    }

    #[test]
    fn unescapes_hex() {
        assert_eq!(unescape_hex(r"INTEL\x20SSD\x20\x20"), "INTEL SSD  ");
        assert_eq!(unescape_hex(r"a\xZZ\x4"), r"a\xZZ\x4");
    }
}
