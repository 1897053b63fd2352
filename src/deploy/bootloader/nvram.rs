//! The `clean_uefi_nvram` clean/deploy step (spec 4.6): deletes the `Boot####`
//! entries whose device path, shown as `efibootmgr -v` shows it, matches one of the
//! given regular expressions (case-insensitive search), and drops them from
//! `BootOrder`.
//!
//! IPA reads `efibootmgr -v` output and considers only lines whose device path starts
//! with `BBS(`, `HD(`, `FvFile(`, `FvVol(`, `PciRoot(`, `VenMsg(`, `VenHw(` or
//! `UsbClass(`; entries starting otherwise are never deleted, and neither are
//! entries whose bytes do not parse (efibootmgr cannot show them either). The text of
//! each node follows libefivar's formatter for the node types rendered below; any
//! other node is shown in its generic form, e.g. `Msg(<subtype>,<hex data>)`.
//!
//! On a ramdisk that did not boot UEFI (or whose variables cannot be reached), IPA's
//! `efibootmgr` call fails and so does the step; so does this one.

use std::fmt::Write as _;
use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::blockdev::hints::py;
use crate::bytes::{try_le16, try_le32, try_le64};
use crate::deploy::mount::Mounter;

use super::efivarfs::{boot_var_name, EfiVarError, EfiVars};
use super::load_option::{DevicePathNode, HardDrive, PartitionSignature};
use super::system_efivars;

/// IPA's default `match_patterns`: entries on a disk partition and shim/GRUB loaders.
pub const DEFAULT_MATCH_PATTERNS: [&str; 3] = [r"^HD\(", r"shim.*\.efi", r"grub.*\.efi"];
/// How a device path must start for IPA to consider the entry at all.
const RECOGNISED_STARTS: [&str; 8] = [
    "BBS(",
    "HD(",
    "FvFile(",
    "FvVol(",
    "PciRoot(",
    "VenMsg(",
    "VenHw(",
    "UsbClass(",
];
/// Compiled size bound of one pattern (the request body is bounded; this bounds memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// What efibootmgr says where there are no EFI variables.
const NOT_SUPPORTED: &str = "EFI variables are not supported on this system.";

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum NvramError {
    /// `match_patterns` is not a list of strings that compile (IPA:
    /// `InvalidCommandParamsError`).
    #[error("The match_patterns must be a list of strings: {0}")]
    InvalidPatterns(String),
    /// The ramdisk did not boot UEFI or efivarfs is unavailable.
    #[error("{NOT_SUPPORTED}")]
    NotSupported,
    /// Reading or deleting a variable failed.
    #[error(transparent)]
    Var(#[from] EfiVarError),
}

/// The step's `match_patterns` argument, validated and compiled case-insensitively;
/// the defaults when absent or null.
pub fn parse_patterns(args: &Map<String, Value>) -> Result<Vec<Regex>, NvramError> {
    let defaults: Vec<Value> = DEFAULT_MATCH_PATTERNS
        .iter()
        .map(|p| Value::String((*p).to_owned()))
        .collect();
    let given = match args.get("match_patterns") {
        None | Some(Value::Null) => &defaults,
        Some(Value::Array(list)) => list,
        Some(other) => return Err(NvramError::InvalidPatterns(py::repr_of(other))),
    };
    let invalid = || NvramError::InvalidPatterns(py::repr_of(&Value::Array(given.clone())));
    given
        .iter()
        .map(|item| {
            let Value::String(text) = item else {
                return Err(invalid());
            };
            RegexBuilder::new(text)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|_| invalid())
        })
        .collect()
}

/// Runs the step: the system's variables under `sysroot` (efivarfs mounted through
/// `mounter` if needed), entries matching the `match_patterns` in `args` deleted.
pub fn clean_uefi_nvram(
    sysroot: &Path,
    mounter: &dyn Mounter,
    args: &Map<String, Value>,
) -> Result<(), NvramError> {
    let patterns = parse_patterns(args)?;
    let efivars = system_efivars(sysroot, mounter).ok_or(NvramError::NotSupported)?;
    let deleted = clean_boot_records(&efivars, &patterns)?;
    tracing::info!(deleted = deleted.len(), "UEFI boot entries cleaned");
    Ok(())
}

/// Deletes every entry whose rendered device path starts as IPA recognises and
/// matches some pattern; returns the deleted numbers.
pub fn clean_boot_records(efivars: &EfiVars, patterns: &[Regex]) -> Result<Vec<u16>, NvramError> {
    let mut deleted = Vec::new();
    for entry in efivars.boot_entries()? {
        let name = boot_var_name(entry.number);
        let Some(option) = entry.option else {
            continue;
        };
        let path = render_path(&option.path);
        if !RECOGNISED_STARTS.iter().any(|s| path.starts_with(s)) {
            tracing::debug!(entry = %name, path = %path, "device path not recognised; entry kept");
            continue;
        }
        if let Some(p) = patterns.iter().find(|p| p.is_match(&path)) {
            tracing::info!(entry = %name, label = %option.description, path = %path,
                pattern = %p.as_str(), "deleting UEFI boot entry");
            efivars.delete_boot_entry(entry.number)?;
            deleted.push(entry.number);
        }
    }
    Ok(deleted)
}

/// A device path as `efibootmgr -v` prints it: nodes joined by `/`.
pub fn render_path(nodes: &[DevicePathNode]) -> String {
    nodes.iter().map(render_node).collect::<Vec<_>>().join("/")
}

/// One node in libefivar's text form.
pub fn render_node(node: &DevicePathNode) -> String {
    match node {
        DevicePathNode::HardDrive(hd) => render_hd(hd),
        DevicePathNode::File(path) => format!("File({path})"),
        DevicePathNode::Other {
            kind,
            subtype,
            data,
        } => render_other(*kind, *subtype, data).unwrap_or_else(|| generic(*kind, *subtype, data)),
    }
}

fn render_hd(hd: &HardDrive) -> String {
    match hd.signature {
        PartitionSignature::Gpt(guid) => format!(
            "HD({},GPT,{},{:#x},{:#x})",
            hd.number,
            guid.hyphenated(),
            hd.start_lba,
            hd.size_lba
        ),
        PartitionSignature::Mbr(sig) => format!(
            "HD({},MBR,{:#x},{:#x},{:#x})",
            hd.number, sig, hd.start_lba, hd.size_lba
        ),
    }
}

/// The typed forms; `None` when the node is unknown or too short for its type.
fn render_other(kind: u8, subtype: u8, d: &[u8]) -> Option<String> {
    let r = Fields(d);
    Some(match (kind, subtype) {
        // Hardware.
        (1, 1) => format!("Pci({:#x},{:#x})", r.u8(1)?, r.u8(0)?),
        (1, 4) => vendor("VenHw", d)?,
        (1, 5) => format!("Ctrl({:#x})", r.u32(0)?),
        // ACPI.
        (2, 1) => match (r.u32(0)?, r.u32(4)?) {
            (0x0a03_41d0, uid) => format!("PciRoot({uid:#x})"),
            (0x0a08_41d0, uid) => format!("PcieRoot({uid:#x})"),
            (hid, uid) => format!("Acpi({hid:#010x},{uid:#x})"),
        },
        // Messaging.
        (3, 1) => format!("Ata({},{},{})", r.u8(0)?, r.u8(1)?, r.u16(2)?),
        (3, 2) => format!("SCSI({},{})", r.u16(0)?, r.u16(2)?),
        (3, 5) => format!("USB({},{})", r.u8(0)?, r.u8(1)?),
        (3, 10) => vendor("VenMsg", d)?,
        (3, 11) => {
            let if_type = r.u8(32)?;
            let len = if if_type < 2 { 6 } else { 32 };
            format!("MAC({},{if_type})", hex(d.get(..len)?))
        }
        (3, 12) => ipv4(&r)?,
        (3, 15) => usb_class(&r)?,
        (3, 17) => format!("Unit({})", r.u8(0)?),
        (3, 18) => format!("Sata({},{},{})", r.u16(0)?, r.u16(2)?, r.u16(4)?),
        (3, 20) => format!("Vlan({})", r.u16(0)?),
        (3, 23) => {
            let eui = d.get(4..12)?;
            let eui: Vec<String> = eui.iter().map(|b| format!("{b:02X}")).collect();
            format!("NVMe({:#x},{})", r.u32(0)?, eui.join("-"))
        }
        (3, 24) => format!("Uri({})", String::from_utf8_lossy(d)),
        // Media (hard drive and file path are typed by the decoder).
        (4, 2) => format!("CDROM({},{:#x},{:#x})", r.u32(0)?, r.u64(4)?, r.u64(12)?),
        (4, 3) => vendor("VenMedia", d)?,
        (4, 5) => format!("Media({})", guid(d)?),
        (4, 6) => format!("FvFile({})", guid(d)?),
        (4, 7) => format!("FvVol({})", guid(d)?),
        (4, 8) => format!("Offset({:#x},{:#x})", r.u64(4)?, r.u64(12)?),
        // BIOS boot specification.
        (5, 1) => {
            const TYPES: [&str; 8] = ["", "Floppy", "HD", "CDROM", "PCMCIA", "USB", "Network", ""];
            let device_type = r.u16(0)?;
            let status = r.u16(2)?;
            let desc = d.get(4..)?;
            let desc = &desc[..desc.iter().position(|&b| b == 0).unwrap_or(desc.len())];
            let desc = String::from_utf8_lossy(desc);
            match TYPES.get(usize::from(device_type)) {
                Some(t) if (1..7).contains(&device_type) => format!("BBS({t},{desc},{status:#x})"),
                _ => format!("BBS({device_type},{desc},{status:#x})"),
            }
        }
        _ => return None,
    })
}

/// libefivar's fallbacks for nodes it cannot type.
fn generic(kind: u8, subtype: u8, d: &[u8]) -> String {
    let label = match kind {
        1 => "HardwarePath",
        3 => "Msg",
        4 => "MediaPath",
        5 => "BbsPath",
        _ => return format!("Path({kind},{subtype},{})", hex(d)),
    };
    format!("{label}({subtype},{})", hex(d))
}

/// `IPv4(remote[:port],proto,Static|DHCP,local[:port],gateway,netmask)`.
fn ipv4(r: &Fields<'_>) -> Option<String> {
    let addr = |at: usize| -> Option<String> {
        let b = r.0.get(at..at + 4)?;
        Some(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
    };
    let with_port = |a: String, port: u16| {
        if port > 0 {
            format!("{a}:{port}")
        } else {
            a
        }
    };
    let proto = match r.u16(12)? {
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        other => other.to_string(),
    };
    let origin = if r.u8(14)? != 0 { "Static" } else { "DHCP" };
    let gateway = addr(15).unwrap_or_else(|| "0.0.0.0".to_owned());
    let netmask = addr(19).unwrap_or_else(|| "0.0.0.0".to_owned());
    Some(format!(
        "IPv4({},{proto},{origin},{},{gateway},{netmask})",
        with_port(addr(4)?, r.u16(10)?),
        with_port(addr(0)?, r.u16(8)?),
    ))
}

/// A USB class node: a label per well-known class, `UsbClass(...)` for the rest.
fn usb_class(r: &Fields<'_>) -> Option<String> {
    let (vid, pid, class, sub, proto) = (r.u16(0)?, r.u16(2)?, r.u8(4)?, r.u8(5)?, r.u8(6)?);
    let label = match (class, sub) {
        (0x01, _) => "UsbAudio",
        (0x02, _) => "UsbCDCControl",
        (0x03, _) => "UsbHID",
        (0x06, _) => "UsbImage",
        (0x07, _) => "UsbPrinter",
        (0x08, _) => "UsbMassStorage",
        (0x09, _) => "UsbHub",
        (0x0a, _) => "UsbCDCData",
        (0x0b, _) => "UsbSmartCard",
        (0x0e, _) => "UsbVideo",
        (0xdc, _) => "UsbDiagnostic",
        (0xe0, _) => "UsbWireless",
        (0xfe, 1) => {
            return Some(format!(
                "UsbDeviceFirmwareUpdate({vid:#x},{pid:#x},{proto})"
            ))
        }
        (0xfe, 2) => return Some(format!("UsbIrdaBridge({vid:#x},{pid:#x},{proto})")),
        (0xfe, 3) => return Some(format!("UsbTestAndMeasurement({vid:#x},{pid:#x},{proto})")),
        (0xfe, _) => return Some(String::new()),
        _ => return Some(format!("UsbClass({vid:x},{pid:x},{sub},{proto})")),
    };
    Some(format!("{label}({vid:#x},{pid:#x},{sub},{proto})"))
}

/// `<label>(<guid>[,<hex data>])`.
fn vendor(label: &str, d: &[u8]) -> Option<String> {
    let g = guid(d)?;
    let rest = &d[16..];
    Some(if rest.is_empty() {
        format!("{label}({g})")
    } else {
        format!("{label}({g},{})", hex(rest))
    })
}

/// An EFI_GUID (mixed-endian) at the start of `d`, lower case.
fn guid(d: &[u8]) -> Option<String> {
    let bytes: [u8; 16] = d.get(..16)?.try_into().ok()?;
    Some(Uuid::from_bytes_le(bytes).hyphenated().to_string())
}

fn hex(d: &[u8]) -> String {
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Little-endian fields of a node's data.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        try_le16(self.0, at)
    }
    fn u32(&self, at: usize) -> Option<u32> {
        try_le32(self.0, at)
    }
    fn u64(&self, at: usize) -> Option<u64> {
        try_le64(self.0, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_render_as_efibootmgr_shows_them() {
        let pci_root = DevicePathNode::Other {
            kind: 2,
            subtype: 1,
            data: vec![0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0],
        };
        let pci = DevicePathNode::Other {
            kind: 1,
            subtype: 1,
            data: vec![0x0, 0x3],
        };
        let mut mac = vec![0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        mac.resize(32, 0);
        mac.push(1);
        let mac = DevicePathNode::Other {
            kind: 3,
            subtype: 11,
            data: mac,
        };
        assert_eq!(
            render_path(&[pci_root, pci, mac]),
            "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)"
        );
        let hd = DevicePathNode::HardDrive(HardDrive {
            number: 1,
            start_lba: 2048,
            size_lba: 0x100000,
            signature: PartitionSignature::Mbr(0xdeadbeef),
        });
        assert_eq!(render_node(&hd), "HD(1,MBR,0xdeadbeef,0x800,0x100000)");
        let unknown = DevicePathNode::Other {
            kind: 3,
            subtype: 99,
            data: vec![0xab, 0x01],
        };
        assert_eq!(render_node(&unknown), "Msg(99,ab01)");
        let short_pci = DevicePathNode::Other {
            kind: 1,
            subtype: 1,
            data: vec![0x1],
        };
        assert_eq!(render_node(&short_pci), "HardwarePath(1,01)");
        let uri = DevicePathNode::Other {
            kind: 3,
            subtype: 24,
            data: b"http://10.0.0.1/grubx64.efi".to_vec(),
        };
        assert_eq!(render_node(&uri), "Uri(http://10.0.0.1/grubx64.efi)");
    }
}
