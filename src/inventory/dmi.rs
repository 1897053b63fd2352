//! SMBIOS: the raw table `sys/firmware/dmi/tables/DMI` (types 0, 1 and 17), with
//! `sys/class/dmi/id/*` as the fallback when the table is absent.
//!
//! Gives `system_vendor` (spec 1.7) and the installed-memory sum used by `memory`
//! (spec 1.3). IPA gets both from `lshw`, which parses the same table; the rules it
//! applies (SKU suffix, type 17 size encoding) are reproduced here.

use std::path::Path;

use crate::bytes::{try_le16, try_le32};
use ira_hw::{Firmware, SystemVendor};

use super::read::{read_bounded, read_opt, under};

/// SMBIOS 3 tables may in theory reach 4 GiB; real ones are a few KiB to tens of KiB.
const DMI_TABLE_CAP: u64 = 1 << 20;

/// SMBIOS structure types used here.
const TYPE_BIOS: u8 = 0;
const TYPE_SYSTEM: u8 = 1;
const TYPE_MEMORY_DEVICE: u8 = 17;
const TYPE_END: u8 = 127;

/// The facts the inventory takes from SMBIOS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smbios {
    /// Type 0 Vendor.
    pub bios_vendor: String,
    /// Type 0 BIOS Version.
    pub bios_version: String,
    /// Type 0 BIOS Release Date, as stored.
    pub bios_date: String,
    /// Type 1 Manufacturer.
    pub manufacturer: String,
    /// Type 1 Product Name.
    pub product: String,
    /// Type 1 Serial Number.
    pub serial: String,
    /// Type 1 SKU Number (SMBIOS 2.4+).
    pub sku: String,
    /// Sum of the sizes of all type 17 Memory Devices in bytes; `None` without any
    /// type 17 structure of known size.
    pub memory_bytes: Option<u64>,
}

impl Smbios {
    /// `system_vendor` as lshw/IPA report it: SKU appended as ` (<SKU>)` when set.
    pub fn system_vendor(&self) -> SystemVendor {
        let product_name = if self.sku.is_empty() {
            self.product.clone()
        } else {
            format!("{} ({})", self.product, self.sku)
        };
        SystemVendor {
            product_name,
            serial_number: self.serial.clone(),
            manufacturer: self.manufacturer.clone(),
            firmware: Firmware {
                vendor: self.bios_vendor.clone(),
                version: self.bios_version.clone(),
                build_date: self.bios_date.clone(),
            },
        }
    }
}

/// Reads the raw SMBIOS table under `root`; `None` when absent or unusable.
pub fn read_smbios_table(root: &Path) -> Option<Smbios> {
    match read_raw_table(root) {
        Ok(table) => Some(parse_smbios(&table)),
        Err(super::InventoryError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "SMBIOS table unusable, using sys/class/dmi/id");
            None
        }
    }
}

/// The raw SMBIOS structure table under `root`, size-bounded.
pub fn read_raw_table(root: &Path) -> Result<Vec<u8>, super::InventoryError> {
    read_bounded(&under(root, "sys/firmware/dmi/tables/DMI"), DMI_TABLE_CAP)
}

/// Reads the kernel's decoded copy in `sys/class/dmi/id`; `None` when the directory is
/// absent (no SMBIOS at all, e.g. a microVM). Memory sizes are not exposed there.
pub fn read_dmi_id(root: &Path) -> Option<Smbios> {
    let dir = under(root, "sys/class/dmi/id");
    if !dir.is_dir() {
        return None;
    }
    let get = |name: &str| read_opt(&dir.join(name)).unwrap_or_default();
    Some(Smbios {
        bios_vendor: get("bios_vendor"),
        bios_version: get("bios_version"),
        bios_date: get("bios_date"),
        manufacturer: get("sys_vendor"),
        product: get("product_name"),
        serial: get("product_serial"),
        sku: get("product_sku"),
        memory_bytes: None,
    })
}

/// One SMBIOS structure: its header fields, formatted area and string set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    /// Structure type.
    pub kind: u8,
    /// Structure handle.
    pub handle: u16,
    /// The formatted area, header included (offsets as in the specification).
    pub formatted: &'a [u8],
    /// The strings, in order (string number N is `strings[N - 1]`), trimmed.
    pub strings: Vec<String>,
}

impl Structure<'_> {
    /// The string whose number is the byte at `offset`; `""` for none (see [`string_at`]).
    pub fn string(&self, offset: usize) -> String {
        string_at(self.formatted, offset, &self.strings)
    }
}

/// Splits a raw SMBIOS table into its structures, up to the end-of-table structure.
/// Malformed or truncated input ends the walk at the last complete structure.
pub fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 4 <= table.len() {
        let kind = table[off];
        let len = usize::from(table[off + 1]);
        let Some(formatted) = table.get(off..off + len).filter(|_| len >= 4) else {
            break;
        };
        let (strings, next) = string_set(table, off + len);
        if next.is_none() {
            break;
        }
        out.push(Structure {
            kind,
            handle: try_le16(formatted, 2).unwrap_or_default(),
            formatted,
            strings,
        });
        if kind == TYPE_END {
            break;
        }
        off = next.unwrap_or(table.len());
    }
    out
}

/// Parses a raw SMBIOS structure table. Malformed or truncated input ends the walk at
/// the last complete structure; it never panics.
pub fn parse_smbios(table: &[u8]) -> Smbios {
    let mut out = Smbios::default();
    let (mut seen_bios, mut seen_system) = (false, false);
    let mut memory: Option<u64> = None;
    for s in structures(table) {
        match s.kind {
            TYPE_BIOS if !seen_bios => {
                seen_bios = true;
                out.bios_vendor = s.string(0x04);
                out.bios_version = s.string(0x05);
                out.bios_date = s.string(0x08);
            }
            TYPE_SYSTEM if !seen_system => {
                seen_system = true;
                out.manufacturer = s.string(0x04);
                out.product = s.string(0x05);
                out.serial = s.string(0x07);
                out.sku = s.string(0x19);
            }
            TYPE_MEMORY_DEVICE => {
                if let Some(bytes) = memory_device_bytes(s.formatted) {
                    memory = Some(memory.unwrap_or(0).saturating_add(bytes));
                }
            }
            _ => {}
        }
    }
    out.memory_bytes = memory;
    out
}

/// Size of one type 17 Memory Device in bytes (lshw `dmi.cc`): the 16-bit Size at
/// 0x0C is 0 for an empty slot and 0xFFFF for unknown (both give `None`); bit 15 set
/// means KiB units, else MiB; 0x7FFF means "see the 32-bit Extended Size at 0x1C" (MiB,
/// bit 31 reserved).
pub fn memory_device_bytes(formatted: &[u8]) -> Option<u64> {
    let size = try_le16(formatted, 0x0C)?;
    match size {
        0 | 0xFFFF => None,
        0x7FFF if formatted.len() >= 0x20 => {
            let ext = try_le32(formatted, 0x1C)?;
            Some(u64::from(ext & 0x7FFF_FFFF) << 20)
        }
        s if s & 0x8000 != 0 => Some(u64::from(s & 0x7FFF) << 10),
        s => Some(u64::from(s) << 20),
    }
}

/// The strings after a structure's formatted area, and where the next structure
/// starts (`None` when the set is unterminated, i.e. the table is truncated).
fn string_set(table: &[u8], start: usize) -> (Vec<String>, Option<usize>) {
    let mut strings = Vec::new();
    let rest = table.get(start..).unwrap_or_default();
    // No strings: the set is just two NUL bytes.
    if rest.starts_with(&[0, 0]) {
        return (strings, Some(start + 2));
    }
    let mut pos = 0;
    while pos < rest.len() {
        let Some(nul) = rest[pos..].iter().position(|b| *b == 0) else {
            return (strings, None);
        };
        if nul == 0 {
            // Empty string = end of the set.
            return (strings, Some(start + pos + 1));
        }
        let s = String::from_utf8_lossy(&rest[pos..pos + nul]);
        strings.push(s.trim().to_owned());
        pos += nul + 1;
    }
    (strings, None)
}

/// The string whose 1-based index is the byte at `offset`; `""` for index 0, a short
/// structure or a dangling index.
fn string_at(formatted: &[u8], offset: usize, strings: &[String]) -> String {
    match formatted.get(offset) {
        Some(&idx) if idx > 0 => strings
            .get(usize::from(idx) - 1)
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one structure: header, `body` (the formatted area after the header) and
    /// the string set.
    fn structure(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let len = u8::try_from(4 + body.len()).unwrap();
        let mut out = vec![kind, len, 0x00, 0x01];
        out.extend_from_slice(body);
        if strings.is_empty() {
            out.extend_from_slice(&[0, 0]);
        } else {
            for s in strings {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
            out.push(0);
        }
        out
    }

    fn mem17(size: u16, ext: u32) -> Vec<u8> {
        let mut body = vec![0u8; 0x28 - 4];
        body[0x0C - 4..0x0E - 4].copy_from_slice(&size.to_le_bytes());
        body[0x1C - 4..0x20 - 4].copy_from_slice(&ext.to_le_bytes());
        structure(17, &body, &["DIMM A1"])
    }

    fn sample() -> Vec<u8> {
        let mut t = Vec::new();
        // Type 0: vendor=1, version=2, start segment (2 bytes), date=3.
        t.extend(structure(
            0,
            &[1, 2, 0, 0, 3, 0],
            &["Dell Inc.", "1.13.1", "06/13/2024"],
        ));
        // Type 1: manufacturer=1 product=2 version=0 serial=3, uuid 16, wake 1, sku=4.
        let mut body = vec![1, 2, 0, 3];
        body.extend([0u8; 16]);
        body.push(6);
        body.push(4);
        body.push(0);
        t.extend(structure(
            1,
            &body,
            &["Dell Inc.", "PowerEdge R650", "7XJ2ZK3", "SKU=090F"],
        ));
        t.extend(mem17(0x4000, 0)); // 16 GiB in MiB
        t.extend(mem17(0, 0)); // empty slot
        t.extend(mem17(0xFFFF, 0)); // unknown
        t.extend(mem17(0x8000 | 512, 0)); // 512 KiB
        t.extend(mem17(0x7FFF, 65536)); // 64 GiB via extended size
        t.extend(structure(127, &[], &[]));
        t
    }

    #[test]
    fn parses_vendor_product_sku_and_memory() {
        let s = parse_smbios(&sample());
        assert_eq!(s.bios_vendor, "Dell Inc.");
        assert_eq!(s.bios_version, "1.13.1");
        assert_eq!(s.bios_date, "06/13/2024");
        assert_eq!(s.manufacturer, "Dell Inc.");
        assert_eq!(s.product, "PowerEdge R650");
        assert_eq!(s.serial, "7XJ2ZK3");
        assert_eq!(s.sku, "SKU=090F");
        assert_eq!(s.memory_bytes, Some((16 << 30) + (512 << 10) + (64 << 30)));
        let v = s.system_vendor();
        assert_eq!(v.product_name, "PowerEdge R650 (SKU=090F)");
        assert_eq!(v.firmware.build_date, "06/13/2024");
    }

    #[test]
    fn short_type1_has_no_sku_and_no_suffix() {
        let t = structure(1, &[1, 2, 0, 0], &["QEMU", "Standard PC"]);
        let s = parse_smbios(&t);
        assert_eq!(s.sku, "");
        assert_eq!(s.serial, "");
        assert_eq!(s.system_vendor().product_name, "Standard PC");
        assert_eq!(s.memory_bytes, None);
    }

    #[test]
    fn truncated_tables_never_panic() {
        let t = sample();
        for cut in 0..t.len() {
            let _ = parse_smbios(&t[..cut]);
        }
        // Cut inside the second structure: the first one is still parsed.
        let s = parse_smbios(&t[..40]);
        assert_eq!(s.bios_vendor, "Dell Inc.");
    }

    #[test]
    fn dangling_string_index_is_empty() {
        let t = structure(0, &[9, 0, 0, 0, 0, 0], &["only"]);
        assert_eq!(parse_smbios(&t).bios_vendor, "");
    }
}
