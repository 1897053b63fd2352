//! Collector `dmi-decode`: the `dmi` object IPA builds from `dmidecode -t bios -t
//! processor -t memory`, decoded natively from the raw SMBIOS table.
//!
//! IPA turns each dmidecode block into a dictionary of its `Key: value` lines (a key with
//! an empty value collects the indented lines below it as a list, the `Handle ...` line
//! is kept under `Handle`) and keeps types 0 (`bios`, the last one), 4 (`cpu`, a list),
//! 16 (`memory`, the first array, without `Handle`, its `Number Of Devices` summed over
//! all arrays as an integer) and 17 (`memory.devices`). This module produces the same
//! keys and the same value text dmidecode 3.4 prints for those four types, so Ironic
//! rules written against IPA's data match. Enumeration names live in `names`, bit names in
//! `bits`, the memory types (16, 17) in `memory`.
//!
//! To decode another field: add the line to the type's `decode_*` in dmidecode's order,
//! with the structure length that gates it, and extend the cross-check fixture.

mod bits;
mod memory;
mod names;

use serde_json::{Map, Value};

use self::bits::{
    BIOS_CHARACTERISTICS, BIOS_CHARACTERISTICS_X1, BIOS_CHARACTERISTICS_X2, CPUID_FLAGS,
    PROCESSOR_CHARACTERISTICS,
};
use super::dmi::{structures, Structure};
use crate::bytes::{try_le16, try_le32, try_le64};

/// What dmidecode prints for a value outside the specification's table.
const OUT_OF_SPEC: &str = "<OUT OF SPEC>";

/// One decoded line: `Key: value`, or `Key:` followed by list items.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attr {
    /// A single value.
    Text(String),
    /// Indented items under an empty value.
    List(Vec<String>),
}

/// Lines of one structure, in dmidecode's order.
#[derive(Debug, Default)]
struct Block(Vec<(String, Attr)>);

impl Block {
    fn text(&mut self, key: &str, value: impl Into<String>) {
        let value: String = value.into();
        // IPA's parser treats an empty value as the start of a list.
        let attr = if value.trim().is_empty() {
            Attr::List(Vec::new())
        } else {
            Attr::Text(value.trim().to_owned())
        };
        self.0.push((key.to_owned(), attr));
    }

    fn list(&mut self, key: &str, items: Vec<String>) {
        self.0.push((key.to_owned(), Attr::List(items)));
    }

    fn into_map(self, handle_line: Option<String>) -> Map<String, Value> {
        let mut map = Map::new();
        if let Some(h) = handle_line {
            map.insert("Handle".into(), Value::String(h));
        }
        for (k, v) in self.0 {
            let v = match v {
                Attr::Text(t) => Value::String(t),
                Attr::List(items) => Value::Array(items.into_iter().map(Value::String).collect()),
            };
            map.insert(k, v);
        }
        map
    }
}

/// Builds IPA's `dmi` object (`{"bios": {}, "cpu": [], "memory": {...}}`) from a raw
/// SMBIOS structure table.
pub fn decode(table: &[u8]) -> Value {
    let mut bios = Map::new();
    let mut cpus = Vec::new();
    let mut arrays: Vec<Map<String, Value>> = Vec::new();
    let mut devices = Vec::new();
    for s in structures(table) {
        let handle = format!(
            "Handle 0x{:04X}, DMI type {}, {} bytes",
            s.handle,
            s.kind,
            s.formatted.len()
        );
        match s.kind {
            0 => bios = decode_bios(&s).into_map(Some(handle)),
            4 => cpus.push(Value::Object(decode_processor(&s).into_map(Some(handle)))),
            16 => arrays.push(memory::decode_array(&s).into_map(None)),
            17 => devices.push(Value::Object(
                memory::decode_device(&s).into_map(Some(handle)),
            )),
            _ => {}
        }
    }
    let mut memory = Map::new();
    if !arrays.is_empty() {
        let count: u64 = arrays
            .iter()
            .map(|a| {
                a.get("Number Of Devices")
                    .and_then(Value::as_str)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        memory = arrays.swap_remove(0);
        memory.insert("Number Of Devices".into(), Value::from(count));
    }
    if !devices.is_empty() || memory.is_empty() {
        memory.insert("devices".into(), Value::Array(devices));
    }
    serde_json::json!({"bios": bios, "cpu": cpus, "memory": memory})
}

/// A string field as dmidecode prints it: number 0 is "Not Specified", a number past the
/// string set is "<BAD INDEX>".
fn string(s: &Structure<'_>, offset: usize) -> String {
    match s.formatted.get(offset) {
        Some(0) | None => "Not Specified".into(),
        Some(&n) if usize::from(n) > s.strings.len() => "<BAD INDEX>".into(),
        Some(_) => s.string(offset),
    }
}

fn byte(s: &Structure<'_>, offset: usize) -> u8 {
    s.formatted.get(offset).copied().unwrap_or_default()
}

fn word(s: &Structure<'_>, offset: usize) -> u16 {
    try_le16(s.formatted, offset).unwrap_or_default()
}

fn dword(s: &Structure<'_>, offset: usize) -> u32 {
    try_le32(s.formatted, offset).unwrap_or_default()
}

fn qword(s: &Structure<'_>, offset: usize) -> u64 {
    try_le64(s.formatted, offset).unwrap_or_default()
}

fn lookup<T: PartialEq + Copy>(table: &[(T, &str)], value: T) -> String {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map_or(OUT_OF_SPEC, |(_, name)| name)
        .to_owned()
}

/// dmidecode's memory size: in the largest unit with a non-zero 10-bit group, or one
/// unit lower when the group below is non-zero too. `shift` is the unit of `value`
/// (0 bytes, 1 kB, 2 MB).
fn memory_size(value: u64, shift: usize) -> String {
    const UNITS: [&str; 8] = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB"];
    let split: Vec<u64> = (0..7).map(|i| (value >> (10 * i)) & 0x3FF).collect();
    let mut i = (1..7).rev().find(|&i| split[i] != 0).unwrap_or(0);
    let capacity = if i > 0 && split[i - 1] != 0 {
        i -= 1;
        split[i] + (split[i + 1] << 10)
    } else {
        split[i]
    };
    format!("{capacity} {}", UNITS[(i + shift).min(UNITS.len() - 1)])
}

/// Names of the set bits `first..=last` of `value`, from `names[bit - first]`.
fn bit_names(value: u64, first: u32, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, name)| !name.is_empty() && value & (1u64 << (first as usize + i)) != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// Type 0, BIOS Information.
fn decode_bios(s: &Structure<'_>) -> Block {
    let mut b = Block::default();
    let len = s.formatted.len();
    if len < 0x12 {
        return b;
    }
    b.text("Vendor", string(s, 0x04));
    b.text("Version", string(s, 0x05));
    b.text("Release Date", string(s, 0x08));
    let segment = word(s, 0x06);
    if segment != 0 {
        b.text("Address", format!("0x{segment:04X}0"));
        let runtime = (0x10000 - u32::from(segment)) << 4;
        b.text(
            "Runtime Size",
            if runtime & 0x3FF != 0 {
                format!("{runtime} bytes")
            } else {
                format!("{} kB", runtime >> 10)
            },
        );
    }
    let rom = byte(s, 0x09);
    if rom != 0xFF {
        b.text("ROM Size", memory_size((u64::from(rom) + 1) << 6, 1));
    } else {
        let ext = word(s, 0x18);
        let unit = match ext >> 14 {
            0 => "MB",
            1 => "GB",
            _ => OUT_OF_SPEC,
        };
        b.text("ROM Size", format!("{} {unit}", ext & 0x3FFF));
    }
    let chars = qword(s, 0x0A);
    let mut items = if chars & (1 << 3) != 0 {
        vec!["BIOS characteristics not supported".to_owned()]
    } else {
        bit_names(chars, 4, &BIOS_CHARACTERISTICS)
    };
    if len >= 0x13 {
        items.extend(bit_names(
            u64::from(byte(s, 0x12)),
            0,
            &BIOS_CHARACTERISTICS_X1,
        ));
    }
    if len >= 0x14 {
        items.extend(bit_names(
            u64::from(byte(s, 0x13)),
            0,
            &BIOS_CHARACTERISTICS_X2,
        ));
    }
    b.list("Characteristics", items);
    if len < 0x18 {
        return b;
    }
    if byte(s, 0x14) != 0xFF && byte(s, 0x15) != 0xFF {
        b.text(
            "BIOS Revision",
            format!("{}.{}", byte(s, 0x14), byte(s, 0x15)),
        );
    }
    if byte(s, 0x16) != 0xFF && byte(s, 0x17) != 0xFF {
        b.text(
            "Firmware Revision",
            format!("{}.{}", byte(s, 0x16), byte(s, 0x17)),
        );
    }
    b
}

/// How the processor ID bytes are laid out, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuidStyle {
    Intel,
    Amd,
}

fn cpuid_style(family: u16, version: &str) -> Option<CpuidStyle> {
    let intel = matches!(family, 0x28..=0x2F | 0xA1..=0xB3 | 0xB5 | 0xB9..=0xC7 | 0xCD..=0xCF
        | 0xD2..=0xDB | 0xDD..=0xE0);
    let amd = matches!(family, 0x18..=0x1D | 0x1F | 0x38..=0x3F | 0x46..=0x4F | 0x66..=0x6B
        | 0x83..=0x8F | 0xB6..=0xB7 | 0xE4..=0xEF);
    if intel {
        return Some(CpuidStyle::Intel);
    }
    if amd {
        return Some(CpuidStyle::Amd);
    }
    if family == 0x01 || family == 0x02 {
        // Families "Other"/"Unknown": dmidecode guesses from the version string.
        let intel_prefixes = [
            "Pentium III MMX",
            "Intel(R) Core(TM)2",
            "Intel(R) Pentium(R)",
        ];
        let amd_prefixes = [
            "AMD Athlon(TM)",
            "AMD Opteron(tm)",
            "Dual-Core AMD Opteron(tm)",
        ];
        if intel_prefixes.iter().any(|p| version.starts_with(p))
            || version == "Genuine Intel(R) CPU U1400"
        {
            return Some(CpuidStyle::Intel);
        }
        if amd_prefixes.iter().any(|p| version.starts_with(p)) {
            return Some(CpuidStyle::Amd);
        }
    }
    None
}

fn processor_family(s: &Structure<'_>) -> (u16, String) {
    let code = byte(s, 0x06);
    let family = if code == 0xFE && s.formatted.len() >= 0x2A {
        word(s, 0x28)
    } else {
        u16::from(code)
    };
    if family == 0xBE {
        // One code for two families: the manufacturer decides.
        let maker = string(s, 0x07);
        let name = if maker.contains("Intel") {
            "Core 2"
        } else if maker.contains("AMD") {
            "K7"
        } else {
            "Core 2 or K7"
        };
        return (family, name.to_owned());
    }
    let name = if family >= 0x100 {
        lookup(names::PROCESSOR_FAMILY_2, family)
    } else {
        lookup(names::PROCESSOR_FAMILY, family)
    };
    (family, name)
}

fn frequency(code: u16) -> String {
    if code == 0 {
        "Unknown".into()
    } else {
        format!("{code} MHz")
    }
}

fn cache_handle(code: u16) -> String {
    if code == 0xFFFF {
        "Not Provided".into()
    } else {
        format!("0x{code:04X}")
    }
}

/// Type 4, Processor Information.
fn decode_processor(s: &Structure<'_>) -> Block {
    let mut b = Block::default();
    let len = s.formatted.len();
    if len < 0x1A {
        return b;
    }
    b.text("Socket Designation", string(s, 0x04));
    b.text("Type", lookup(names::PROCESSOR_TYPE, byte(s, 0x05)));
    let (family, family_name) = processor_family(s);
    b.text("Family", family_name);
    b.text("Manufacturer", string(s, 0x07));
    let id = s.formatted.get(0x08..0x10).unwrap_or_default();
    b.text(
        "ID",
        id.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let version = string(s, 0x10);
    if let Some(style) = cpuid_style(family, &version) {
        let eax = dword(s, 0x08);
        let edx = dword(s, 0x0C);
        let signature = match style {
            CpuidStyle::Intel => format!(
                "Type {}, Family {}, Model {}, Stepping {}",
                (eax >> 12) & 0x3,
                ((eax >> 20) & 0xFF) + ((eax >> 8) & 0x0F),
                ((eax >> 12) & 0xF0) + ((eax >> 4) & 0x0F),
                eax & 0xF
            ),
            CpuidStyle::Amd => {
                let base = (eax >> 8) & 0xF;
                let ext = base == 0xF;
                format!(
                    "Family {}, Model {}, Stepping {}",
                    base + if ext { (eax >> 20) & 0xFF } else { 0 },
                    ((eax >> 4) & 0xF) | if ext { (eax >> 12) & 0xF0 } else { 0 },
                    eax & 0xF
                )
            }
        };
        b.text("Signature", signature);
        if edx & 0xBFEF_FBFF == 0 {
            b.text("Flags", "None");
        } else {
            b.list("Flags", bit_names(u64::from(edx), 0, &CPUID_FLAGS));
        }
    }
    b.text("Version", version);
    let voltage = byte(s, 0x11);
    b.text(
        "Voltage",
        if voltage & 0x80 != 0 {
            format!("{:.1} V", f32::from(voltage & 0x7F) / 10.0)
        } else if voltage & 0x07 == 0 {
            "Unknown".into()
        } else {
            ["5.0 V", "3.3 V", "2.9 V"]
                .iter()
                .enumerate()
                .filter(|(i, _)| voltage & (1 << i) != 0)
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    b.text("External Clock", frequency(word(s, 0x12)));
    b.text("Max Speed", frequency(word(s, 0x14)));
    b.text("Current Speed", frequency(word(s, 0x16)));
    let status = byte(s, 0x18);
    b.text(
        "Status",
        if status & (1 << 6) != 0 {
            let state = match status & 0x07 {
                0 => "Unknown",
                1 => "Enabled",
                2 => "Disabled By User",
                3 => "Disabled By BIOS",
                4 => "Idle",
                7 => "Other",
                _ => OUT_OF_SPEC,
            };
            format!("Populated, {state}")
        } else {
            "Unpopulated".into()
        },
    );
    b.text("Upgrade", lookup(names::PROCESSOR_UPGRADE, byte(s, 0x19)));
    if len < 0x20 {
        return b;
    }
    b.text("L1 Cache Handle", cache_handle(word(s, 0x1A)));
    b.text("L2 Cache Handle", cache_handle(word(s, 0x1C)));
    b.text("L3 Cache Handle", cache_handle(word(s, 0x1E)));
    if len < 0x23 {
        return b;
    }
    b.text("Serial Number", string(s, 0x20));
    b.text("Asset Tag", string(s, 0x21));
    b.text("Part Number", string(s, 0x22));
    if len < 0x28 {
        return b;
    }
    for (key, short, long) in [
        ("Core Count", 0x23, 0x2A),
        ("Core Enabled", 0x24, 0x2C),
        ("Thread Count", 0x25, 0x2E),
    ] {
        let n = byte(s, short);
        if n != 0 {
            let n = if len >= 0x30 && n == 0xFF {
                word(s, long)
            } else {
                u16::from(n)
            };
            b.text(key, n.to_string());
        }
    }
    let chars = word(s, 0x26);
    if chars & 0x00FC == 0 {
        b.text("Characteristics", "None");
    } else {
        b.list(
            "Characteristics",
            bit_names(u64::from(chars), 2, &PROCESSOR_CHARACTERISTICS),
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_as_dmidecode_prints_them() {
        assert_eq!(memory_size(64, 1), "64 kB");
        assert_eq!(memory_size(16384, 1), "16 MB");
        assert_eq!(memory_size(4096, 2), "4 GB");
        assert_eq!(memory_size(1536, 2), "1536 MB");
        assert_eq!(memory_size(2 << 40, 0), "2 TB");
        assert_eq!(memory_size(0, 1), "0 kB");
    }

    #[test]
    fn voltages() {
        assert_eq!(memory::voltage_mv(1200), "1.2 V");
        assert_eq!(memory::voltage_mv(1000), "1.0 V");
        assert_eq!(memory::voltage_mv(1350), "1.35 V");
        assert_eq!(memory::voltage_mv(0), "Unknown");
    }

    #[test]
    fn empty_table_gives_ipa_defaults() {
        assert_eq!(
            decode(&[]),
            serde_json::json!({"bios": {}, "cpu": [], "memory": {"devices": []}})
        );
    }
}
