//! Types 16 (Physical Memory Array) and 17 (Memory Device), line by line as dmidecode
//! 3.4 prints them.

use super::bits::{OPERATING_MODES, TYPE_DETAIL};
use super::{bit_names, byte, dword, lookup, memory_size, names, qword, string, word, Block};
use crate::inventory::dmi::Structure;

fn error_handle(code: u16) -> String {
    match code {
        0xFFFE => "Not Provided".into(),
        0xFFFF => "No Error".into(),
        h => format!("0x{h:04X}"),
    }
}

/// Type 16, Physical Memory Array.
pub(super) fn decode_array(s: &Structure<'_>) -> Block {
    let mut b = Block::default();
    if s.formatted.len() < 0x0F {
        return b;
    }
    b.text("Location", lookup(names::ARRAY_LOCATION, byte(s, 0x04)));
    b.text("Use", lookup(names::ARRAY_USE, byte(s, 0x05)));
    b.text(
        "Error Correction Type",
        lookup(names::ARRAY_ECC, byte(s, 0x06)),
    );
    let capacity = dword(s, 0x07);
    b.text(
        "Maximum Capacity",
        if capacity == 0x8000_0000 {
            if s.formatted.len() < 0x17 {
                "Unknown".into()
            } else {
                memory_size(qword(s, 0x0F), 0)
            }
        } else {
            memory_size(u64::from(capacity), 1)
        },
    );
    b.text("Error Information Handle", error_handle(word(s, 0x0B)));
    b.text("Number Of Devices", word(s, 0x0D).to_string());
    b
}

fn width(code: u16) -> String {
    if code == 0 || code == 0xFFFF {
        "Unknown".into()
    } else {
        format!("{code} bits")
    }
}

fn speed(code: u16, extended: u32) -> String {
    if code == 0 {
        "Unknown".into()
    } else if code == 0xFFFF && extended > 0 {
        format!("{extended} MT/s")
    } else {
        format!("{code} MT/s")
    }
}

pub(super) fn voltage_mv(code: u16) -> String {
    if code == 0 {
        return "Unknown".into();
    }
    let volts = f64::from(code) / 1000.0;
    if code % 100 == 0 {
        format!("{volts:.1} V")
    } else {
        // dmidecode's %g: the shortest form, here at most three decimals.
        format!("{volts} V")
    }
}

fn size_qword(code: u64) -> String {
    match code {
        u64::MAX => "Unknown".into(),
        0 => "None".into(),
        c => memory_size(c, 0),
    }
}

fn id_word(code: u16) -> String {
    if code == 0 {
        "Unknown".into()
    } else {
        format!("0x{code:04X}")
    }
}

fn manufacturer_id(code: u16) -> String {
    if code == 0 {
        "Unknown".into()
    } else {
        format!("Bank {}, Hex 0x{:02X}", (code & 0x7F) + 1, code >> 8)
    }
}

/// Names of the set bits joined by spaces, or "None" when `mask` selects no bit.
fn bits_or_none(value: u16, mask: u16, first: u32, names: &[&str]) -> String {
    if value & mask == 0 {
        "None".into()
    } else {
        bit_names(u64::from(value), first, names).join(" ")
    }
}

/// Type 17, Memory Device.
pub(super) fn decode_device(s: &Structure<'_>) -> Block {
    let mut b = Block::default();
    let len = s.formatted.len();
    if len < 0x15 {
        return b;
    }
    b.text("Array Handle", format!("0x{:04X}", word(s, 0x04)));
    b.text("Error Information Handle", error_handle(word(s, 0x06)));
    b.text("Total Width", width(word(s, 0x08)));
    b.text("Data Width", width(word(s, 0x0A)));
    let size = word(s, 0x0C);
    b.text(
        "Size",
        match size {
            0 => "No Module Installed".into(),
            0xFFFF => "Unknown".into(),
            0x7FFF if len >= 0x20 => memory_size(u64::from(dword(s, 0x1C) & 0x7FFF_FFFF), 2),
            s if s & 0x8000 != 0 => memory_size(u64::from(s & 0x7FFF), 1),
            s => memory_size(u64::from(s), 2),
        },
    );
    b.text("Form Factor", lookup(names::FORM_FACTOR, byte(s, 0x0E)));
    let set = byte(s, 0x0F);
    b.text(
        "Set",
        match set {
            0 => "None".into(),
            0xFF => "Unknown".into(),
            n => n.to_string(),
        },
    );
    b.text("Locator", string(s, 0x10));
    b.text("Bank Locator", string(s, 0x11));
    b.text("Type", lookup(names::MEMORY_TYPE, byte(s, 0x12)));
    b.text(
        "Type Detail",
        bits_or_none(word(s, 0x13), 0xFFFE, 1, &TYPE_DETAIL),
    );
    // An empty slot: dmidecode stops here, the rest describes no module.
    if size == 0 || len < 0x17 {
        return b;
    }
    let ext = |off| if len >= 0x5C { dword(s, off) } else { 0 };
    b.text("Speed", speed(word(s, 0x15), ext(0x54)));
    if len < 0x1B {
        return b;
    }
    b.text("Manufacturer", string(s, 0x17));
    b.text("Serial Number", string(s, 0x18));
    b.text("Asset Tag", string(s, 0x19));
    b.text("Part Number", string(s, 0x1A));
    if len < 0x1C {
        return b;
    }
    let rank = byte(s, 0x1B) & 0x0F;
    b.text(
        "Rank",
        if rank == 0 {
            "Unknown".into()
        } else {
            rank.to_string()
        },
    );
    if len < 0x22 {
        return b;
    }
    b.text("Configured Memory Speed", speed(word(s, 0x20), ext(0x58)));
    if len < 0x28 {
        return b;
    }
    b.text("Minimum Voltage", voltage_mv(word(s, 0x22)));
    b.text("Maximum Voltage", voltage_mv(word(s, 0x24)));
    b.text("Configured Voltage", voltage_mv(word(s, 0x26)));
    if len < 0x34 {
        return b;
    }
    b.text(
        "Memory Technology",
        lookup(names::MEMORY_TECHNOLOGY, byte(s, 0x28)),
    );
    b.text(
        "Memory Operating Mode Capability",
        bits_or_none(word(s, 0x29), 0xFFFE, 1, &OPERATING_MODES),
    );
    b.text("Firmware Version", string(s, 0x2B));
    b.text("Module Manufacturer ID", manufacturer_id(word(s, 0x2C)));
    b.text("Module Product ID", id_word(word(s, 0x2E)));
    b.text(
        "Memory Subsystem Controller Manufacturer ID",
        manufacturer_id(word(s, 0x30)),
    );
    b.text(
        "Memory Subsystem Controller Product ID",
        id_word(word(s, 0x32)),
    );
    if len < 0x3C {
        return b;
    }
    b.text("Non-Volatile Size", size_qword(qword(s, 0x34)));
    if len < 0x44 {
        return b;
    }
    b.text("Volatile Size", size_qword(qword(s, 0x3C)));
    if len < 0x4C {
        return b;
    }
    b.text("Cache Size", size_qword(qword(s, 0x44)));
    if len < 0x54 {
        return b;
    }
    b.text("Logical Size", size_qword(qword(s, 0x4C)));
    b
}
