//! Format inspection over the first bytes of an image stream, and the format gate.
//!
//! `detect` looks only at the head of the stream (no seeking: the image arrives over
//! HTTP) and reports what oslo.utils' format inspector would find there: compression
//! wrappers first (gzip, xz, zstd: the pipeline decompresses and detects again on the
//! inner head), then every specific disk format that matches, each with its safety verdict.
//! `gate` then applies IPA's rules (`disk_utils.get_and_validate_image_format`) with IPA's
//! exact messages, so the conductor's `last_error` reads the same as with IPA.
//!
//! Not here: reading past the head (a VHDX metadata region, a VMDK footer), decrypting
//! LUKS, and writing. To add a format, add a `Format` variant, its name, and one
//! `inspect_*` function that returns `None` when the bytes do not match.

use std::fmt;

use crate::bytes::{be32, be64, le16, le32, le64};

/// How many leading bytes `detect` wants: enough for every rule (ISO 9660 needs 34 KiB,
/// a VMDK descriptor up to about 63 KiB fits); a shorter head means the whole stream.
pub const SNIFF_LEN: usize = 64 * 1024;

/// A disk image format, named as oslo's inspector (and qemu-img) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Nothing specific recognised: bytes as they are.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Microsoft VHD (qemu's `vpc`).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// VMware VMDK (sparse header or text descriptor).
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// QEMU enhanced disk (never allowed).
    Qed,
    /// ISO 9660 or UDF.
    Iso,
    /// A raw disk with an MBR or GPT partition table.
    Gpt,
    /// LUKS encrypted container.
    Luks,
}

impl Format {
    /// Every format, in oslo's order.
    pub const ALL: [Format; 10] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vhd,
        Format::Vhdx,
        Format::Vmdk,
        Format::Vdi,
        Format::Qed,
        Format::Iso,
        Format::Gpt,
        Format::Luks,
    ];

    /// The name used in `disk_format` and `permitted_image_formats`.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Qed => "qed",
            Format::Iso => "iso",
            Format::Gpt => "gpt",
            Format::Luks => "luks",
        }
    }

    /// The format with this exact name, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The bytes go to the disk unchanged: raw, and raw disks that merely carry a partition
    /// table or an ISO 9660 filesystem (spec 8, open question 2).
    pub const fn is_raw_like(self) -> bool {
        matches!(self, Format::Raw | Format::Gpt | Format::Iso)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression wrapper recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd frame (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Short lower-case name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The wrapper whose magic starts `head`, if any.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// The verdict of a format's safety checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Every check passed.
    Safe,
    /// A check failed; the reason is for logs.
    Unsafe(&'static str),
    /// The head does not hold what the checks need; the reason is for logs.
    Unknown(&'static str),
}

/// One format that matched, with its safety verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspection {
    /// The format that matched.
    pub format: Format,
    /// Outcome of that format's safety checks.
    pub safety: Safety,
    /// Virtual disk size from the header, when the format has one in the head.
    pub virtual_size: Option<u64>,
}

/// What the head of a stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A compression wrapper: decompress, then `detect` the inner head.
    Compressed(Compression),
    /// An image: the specific formats that matched (empty means raw).
    Image(Vec<Inspection>),
}

impl Detected {
    /// The names oslo's `InspectWrapper.formats` would give: `[raw]` when nothing specific
    /// matched; empty for a compression wrapper.
    pub fn formats(&self) -> Vec<Format> {
        match self {
            Detected::Compressed(_) => Vec::new(),
            Detected::Image(m) if m.is_empty() => vec![Format::Raw],
            Detected::Image(m) => m.iter().map(|i| i.format).collect(),
        }
    }

    /// The single format the image is, by Ironic's rule: exactly one specific match, or
    /// raw when none; ISO 9660 together with a partition table (isohybrid) is an ISO.
    pub fn resolve(&self) -> Result<Inspection, FormatError> {
        let matches = match self {
            Detected::Compressed(c) => {
                return Err(FormatError::Unchecked {
                    reason: format!("{} data must be decompressed before inspection", c.name()),
                })
            }
            Detected::Image(m) => m,
        };
        match matches.as_slice() {
            [] => Ok(RAW),
            [one] => Ok(*one),
            // Ironic: images.detect_file_format allows exactly {iso, gpt} and takes the ISO,
            // since bootable-as-block ISOs carry an MBR/GPT in front.
            [a, b] if is_iso_gpt(a.format, b.format) => {
                Ok(if a.format == Format::Iso { *a } else { *b })
            }
            _ => Err(FormatError::Multiple(
                matches.iter().map(|i| i.format).collect(),
            )),
        }
    }
}

const RAW: Inspection = Inspection {
    format: Format::Raw,
    safety: Safety::Safe,
    virtual_size: None,
};

fn is_iso_gpt(a: Format, b: Format) -> bool {
    matches!(
        (a, b),
        (Format::Iso, Format::Gpt) | (Format::Gpt, Format::Iso)
    )
}

/// Why an image is refused; `Display` is IPA's exact `InvalidImage` detail text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The checks could not run (compressed head, truncated or out-of-head structures).
    #[error("Security: Unable to safety check image")]
    Unchecked {
        /// What was missing, for logs.
        reason: String,
    },
    /// More than one specific format matched (a polyglot image).
    #[error("Security: Image matched multiple potential formats")]
    Multiple(Vec<Format>),
    /// The detected format's safety checks failed.
    #[error("Security: Image failed safety check")]
    Unsafe {
        /// The detected format.
        format: Format,
        /// The failed check, for logs.
        reason: &'static str,
    },
    /// The detected format is not in `permitted_image_formats`.
    #[error("Security: Detected image format was {detected}, but only {allowed} are allowed")]
    NotPermitted {
        /// The detected format.
        detected: Format,
        /// The permitted list joined with ", " as IPA prints it.
        allowed: String,
    },
    /// `disk_format` names another format than the bytes are.
    #[error("Security: Expected format was {expected}, but image was actually {detected}")]
    Mismatch {
        /// The declared `disk_format`.
        expected: String,
        /// The detected format.
        detected: Format,
    },
}

/// One format's matcher: `None` when the head is not that format.
type Inspector = fn(&[u8]) -> Option<Inspection>;

/// Inspects the head of a stream: `head` is its first `SNIFF_LEN` bytes, or the whole
/// stream when that is shorter (a short head means end of stream).
pub fn detect(head: &[u8]) -> Detected {
    if let Some(c) = Compression::sniff(head) {
        return Detected::Compressed(c);
    }
    let inspectors: [Inspector; 9] = [
        inspect_qcow2,
        inspect_vhd,
        inspect_vhdx,
        inspect_vmdk,
        inspect_vdi,
        inspect_qed,
        inspect_iso,
        inspect_gpt,
        inspect_luks,
    ];
    Detected::Image(inspectors.iter().filter_map(|f| f(head)).collect())
}

/// Decides whether and as what an image may be written (IPA:
/// `disk_utils.get_and_validate_image_format`, spec 8.1/8.2).
///
/// A declared `raw` or `gpt` is copied bit for bit and never inspected (IPA's
/// `RAW_LIKE_IMAGETYPES`). Otherwise, in IPA's order: detection (one format, or the
/// ISO+GPT rule), safety checks, permitted list, declared-versus-detected. With
/// `inspection_disabled` (IPA then trusts `qemu-img info`), the permitted and declared
/// checks are skipped only for formats whose bytes are copied unparsed (raw, gpt, iso);
/// anything we would parse (qcow2) must still be safe, permitted and as declared
/// (INVARIANT 1). The safety checks are never skipped.
pub fn gate(
    detected: &Detected,
    declared: Option<&str>,
    permitted: &[String],
    inspection_disabled: bool,
) -> Result<Format, FormatError> {
    match declared {
        Some("raw") => return Ok(Format::Raw),
        Some("gpt") => return Ok(Format::Gpt),
        _ => {}
    }
    let found = detected.resolve()?;
    match found.safety {
        Safety::Safe => {}
        Safety::Unsafe(reason) => {
            return Err(FormatError::Unsafe {
                format: found.format,
                reason,
            })
        }
        Safety::Unknown(reason) => {
            return Err(FormatError::Unchecked {
                reason: format!("{}: {reason}", found.format),
            })
        }
    }
    if inspection_disabled && found.format.is_raw_like() {
        tracing::warn!(
            detected = %found.format,
            declared = declared.unwrap_or(""),
            "deep image inspection disabled: not checking the permitted list or disk_format"
        );
        return Ok(found.format);
    }
    if !permitted.iter().any(|p| p == found.format.name()) {
        return Err(FormatError::NotPermitted {
            detected: found.format,
            allowed: permitted.join(", "),
        });
    }
    if let Some(expected) = declared {
        if expected != "unknown" && expected != found.format.name() {
            return Err(FormatError::Mismatch {
                expected: expected.to_owned(),
                detected: found.format,
            });
        }
    }
    Ok(found.format)
}

// ---- the inspectors: each returns None when the head does not match ----------------------

fn found(format: Format, safety: Safety, virtual_size: Option<u64>) -> Option<Inspection> {
    Some(Inspection {
        format,
        safety,
        virtual_size,
    })
}

/// qcow2: oslo matches on the magic once 512 header bytes are in.
fn inspect_qcow2(head: &[u8]) -> Option<Inspection> {
    if head.len() < 512 || !head.starts_with(b"QFI\xfb") {
        return None;
    }
    found(Format::Qcow2, qcow2_safety(head), Some(be64(head, 24)))
}

/// oslo's three qcow2 checks: backing file, data file, version and unknown features.
fn qcow2_safety(h: &[u8]) -> Safety {
    if be64(h, 8) != 0 {
        return Safety::Unsafe("qcow2 image has a backing file");
    }
    // oslo reads the incompatible-feature byte at 0x4f (bit 2 = external data file) for
    // every version, v2 included, where those bytes follow the 72-byte header.
    if h[0x4f] & 0x04 != 0 {
        return Safety::Unsafe("qcow2 image has an external data file");
    }
    match be32(h, 4) {
        2 => Safety::Safe,
        // Bits 0..3 are known (dirty, corrupt, data file, compression type); any other
        // incompatible feature (extended L2 is bit 4) is refused.
        3 if be64(h, 0x48) & !0x0f == 0 => Safety::Safe,
        3 => Safety::Unsafe("qcow2 image has unknown incompatible features"),
        _ => Safety::Unsafe("unsupported qcow2 version"),
    }
}

/// VHD: the footer copy at 0 starts with "conectix"; oslo has no safety check for it.
fn inspect_vhd(head: &[u8]) -> Option<Inspection> {
    if !head.starts_with(b"conectix") {
        return None;
    }
    let size = (head.len() >= 48).then(|| be64(head, 40));
    found(Format::Vhd, Safety::Safe, size)
}

/// VHDX: the file identifier "vhdxfile" at 0; the size lives in a metadata region that
/// may lie anywhere, so it is not read here.
fn inspect_vhdx(head: &[u8]) -> Option<Inspection> {
    if !head.starts_with(b"vhdxfile") {
        return None;
    }
    found(Format::Vhdx, Safety::Safe, None)
}

/// VDI: magic 0xbeda107f (LE) at 0x40 within a complete 512-byte header.
fn inspect_vdi(head: &[u8]) -> Option<Inspection> {
    if head.len() < 512 || le32(head, 0x40) != 0xbeda_107f {
        return None;
    }
    found(Format::Vdi, Safety::Safe, Some(le64(head, 0x170)))
}

/// QED: recognised so that it can be refused (oslo's "banned" check).
fn inspect_qed(head: &[u8]) -> Option<Inspection> {
    if head.len() < 512 || !head.starts_with(b"QED\0") {
        return None;
    }
    found(
        Format::Qed,
        Safety::Unsafe("this file format is not allowed"),
        None,
    )
}

const ISO_DESC: usize = 32 * 1024;

/// ISO 9660 / UDF: a volume descriptor identifier at 32 KiB + 1.
fn inspect_iso(head: &[u8]) -> Option<Inspection> {
    if head.len() < ISO_DESC + 2048 {
        return None;
    }
    let d = &head[ISO_DESC..ISO_DESC + 2048];
    if !matches!(&d[1..6], b"CD001" | b"NSR02" | b"NSR03") {
        return None;
    }
    // Primary volume descriptor: block count at 80 and block size at 128 (LE halves).
    let size = (d[0] == 1).then(|| u64::from(le32(d, 80)) * u64::from(le16(d, 128)));
    found(Format::Iso, Safety::Safe, size)
}

/// MBR/GPT: the 0x55aa signature, excluding FAT boot sectors (two FATs on a fixed disk).
fn inspect_gpt(head: &[u8]) -> Option<Inspection> {
    if head.len() < 512 || le16(head, 510) != 0xaa55 {
        return None;
    }
    if head[0x10] == 2 && head[0x15] == 0xf8 {
        return None;
    }
    found(Format::Gpt, mbr_safety(&head[..512]), None)
}

/// oslo's MBR checks: boot flags 0x00/0x80; a protective 0xEE entry starts at CHS 0/2/0
/// and LBA 1 and is the only entry; at least one entry.
fn mbr_safety(mbr: &[u8]) -> Safety {
    let mut used = Vec::with_capacity(4);
    let mut protective = false;
    for i in 0..4 {
        let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
        if e[0] != 0x00 && e[0] != 0x80 {
            return Safety::Unsafe("MBR partition entry has an invalid boot flag");
        }
        if e[4] != 0 {
            used.push(i);
        }
        if e[4] == 0xee {
            protective = true;
            if e[1..4] != [0x00, 0x02, 0x00] {
                return Safety::Unsafe("GPT protective MBR has an invalid start CHS");
            }
            if le32(e, 8) != 1 {
                return Safety::Unsafe("GPT protective MBR has an invalid start LBA");
            }
        }
    }
    if protective && used != [0] {
        return Safety::Unsafe("GPT protective MBR defines extra partitions");
    }
    if used.is_empty() {
        return Safety::Unsafe("MBR has no partitions defined");
    }
    Safety::Safe
}

/// LUKS: magic at 0; only version 1 passes (we never decrypt, as IPA without a passphrase).
fn inspect_luks(head: &[u8]) -> Option<Inspection> {
    if !head.starts_with(b"LUKS\xba\xbe") {
        return None;
    }
    let safety = if head.len() < 592 {
        Safety::Unknown("LUKS header truncated")
    } else if u16::from_be_bytes([head[6], head[7]]) != 1 {
        Safety::Unsafe("LUKS version is not supported")
    } else {
        Safety::Safe
    };
    found(Format::Luks, safety, None)
}

const VMDK_DESC_OFFSET: u64 = 0x200;
const VMDK_DESC_MAX: u64 = (1 << 20) - 1;
const VMDK_GD_AT_END: u64 = u64::MAX;
/// IPA reads images in 4 KiB chunks; oslo parses a text descriptor from the first one.
const VMDK_TEXT_CHUNK: usize = 4096;

/// VMDK: a sparse extent header ("KDMV") with an embedded descriptor, or a bare text
/// descriptor naming a `createType`.
fn inspect_vmdk(head: &[u8]) -> Option<Inspection> {
    if head.starts_with(b"KDMV") {
        return found(Format::Vmdk, vmdk_sparse_safety(head), vmdk_sectors(head));
    }
    // oslo needs 64 header bytes before it looks, and treats the head as a descriptor
    // only if its first 512 bytes are printable ASCII or whitespace.
    if head.len() < 64 || !head[..head.len().min(512)].iter().all(|&b| is_py_text(b)) {
        return None;
    }
    let desc = &head[..head.len().min(VMDK_TEXT_CHUNK)];
    let text = vmdk_descriptor_text(desc)?;
    let kind = vmdk_create_type(&text)?;
    found(Format::Vmdk, vmdk_descriptor_safety(&text, &kind), None)
}

/// Python's `str.isprintable() or str.isspace()` for one ASCII byte.
fn is_py_text(b: u8) -> bool {
    matches!(b, 0x20..=0x7e | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f)
}

fn vmdk_sectors(head: &[u8]) -> Option<u64> {
    // Sparse extent header: magic, version, flags (u32 each), then capacity in sectors.
    (head.len() >= 20).then(|| le64(head, 12).saturating_mul(512))
}

fn vmdk_sparse_safety(head: &[u8]) -> Safety {
    if head.len() < 64 {
        return Safety::Unknown("VMDK header truncated");
    }
    if !(1..=3).contains(&le32(head, 4)) {
        return Safety::Unsafe("unsupported VMDK version");
    }
    let (desc_sec, desc_num, gd_offset) = (le64(head, 28), le64(head, 36), le64(head, 56));
    if desc_sec.checked_mul(512) != Some(VMDK_DESC_OFFSET) {
        return Safety::Unsafe("VMDK descriptor is not at 0x200");
    }
    if gd_offset == VMDK_GD_AT_END {
        // The footer that overrides the header sits at the end of the stream.
        return Safety::Unknown("VMDK footer cannot be checked from the head");
    }
    let len = desc_num.saturating_mul(512).min(VMDK_DESC_MAX);
    let end = usize::try_from(VMDK_DESC_OFFSET + len).unwrap_or(usize::MAX);
    if head.len() < end {
        return Safety::Unknown("VMDK descriptor extends past the inspected head");
    }
    let Some(text) = vmdk_descriptor_text(&head[0x200..end]) else {
        return Safety::Unsafe("VMDK descriptor is not ASCII");
    };
    match vmdk_create_type(&text) {
        Some(kind) => vmdk_descriptor_safety(&text, &kind),
        None => Safety::Unsafe("VMDK descriptor has no createType"),
    }
}

/// The descriptor up to its first NUL, lower-cased; None if it is not ASCII.
fn vmdk_descriptor_text(desc: &[u8]) -> Option<String> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let d = &desc[..end];
    d.is_ascii()
        .then(|| String::from_utf8_lossy(d).to_ascii_lowercase())
}

/// The `createtype="..."` value; None when absent or implausibly long (oslo's
/// "formatnotfound", which is not a match).
fn vmdk_create_type(text: &str) -> Option<String> {
    let start = text.find("createtype=\"")? + "createtype=\"".len();
    let rest = &text[start..];
    let kind = match rest.find('"') {
        Some(end) => &rest[..end],
        None => rest,
    };
    (kind.len() < 64).then(|| kind.to_owned())
}

/// oslo's descriptor check: a supported subformat, only known line kinds, and extents
/// that name no path.
fn vmdk_descriptor_safety(text: &str, kind: &str) -> Safety {
    if kind != "monolithicsparse" && kind != "streamoptimized" {
        return Safety::Unsafe("unsupported VMDK subformat");
    }
    let mut extents = 0usize;
    for line in text.split('\n').map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
            continue;
        }
        let first_word = line.split(' ').next().unwrap_or("");
        if line
            .split('=')
            .next()
            .is_some_and(|k| line.contains('=') && !k.contains(' '))
        {
            continue;
        }
        if matches!(first_word, "rw" | "rdonly" | "noaccess") {
            if line.contains('/') {
                return Safety::Unsafe("VMDK extent names a path");
            }
            extents += 1;
            continue;
        }
        return Safety::Unsafe("invalid VMDK descriptor line");
    }
    if extents == 0 {
        return Safety::Unsafe("VMDK descriptor has no extents");
    }
    Safety::Safe
}
