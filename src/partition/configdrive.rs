//! The config drive (spec 7): classify what the conductor sent (a URL to download, or
//! gzip+base64 content), decode it into the ISO image with a hard bound on the
//! decompressed size, and place it on a whole-disk image (IPA's
//! `create_config_drive_partition`): reuse a `config-2` partition, else add one in the
//! last 64 MiB (GPT, after moving the backup header) or in a free MBR slot.
//!
//! Downloading is the image source's job: [`decode`] answers
//! [`Decoded::NeedsDownload`] for a URL and [`decode_downloaded`] takes the body.
//! Memory stays bounded: decompression stops one chunk past [`MAX_SIZE`], so a gzip
//! bomb costs at most that much. IPA only checks the 64 MiB limit for whole-disk
//! images; here every config drive is held to it (invariant 5).
//!
//! Not done here: IPA's test mount of the written partition and the vfat rebuild it
//! falls back to (4Kn disks, `config_drive_rebuild`).

use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use uuid::Uuid;

use super::find::{describe, with_label};
use super::fixup::{fix_gpt_partition, FixGptError};
use super::gpt::types;
use super::mbr::kinds;
use super::rw::write_all_at;
use super::table::{read_table, PartitionTable};
use super::{fsprobe, partition_path, Disk, Geometry, MIB};

/// The filesystem label cloud-init looks for.
pub const LABEL: &str = "config-2";
/// IPA's `MAX_CONFIG_DRIVE_SIZE_MB`: the largest decompressed config drive, and the size
/// of the partition created for it.
pub const MAX_SIZE: u64 = 64 * MIB;
/// A bound for downloading a config drive body: the base64 text of an uncompressed
/// 64 MiB image plus line breaks.
pub const MAX_DOWNLOAD_SIZE: u64 = 96 * MIB;
/// Decompression reads in chunks of this size.
const CHUNK: usize = 64 << 10;

/// Python's `b64decode` skips line breaks and tolerates missing padding poorly; we accept
/// either padding, and strip ASCII whitespace before decoding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Config drive failures, with IPA's `DeploymentError` messages.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// Inline content is not base64.
    #[error("Config drive for node {node} is not base64 encoded or the content is malformed. Error: {reason}.")]
    NotBase64 {
        /// Node UUID.
        node: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The decoded content is not gzip, or is truncated.
    #[error("Encountered error while decompressing and writing config drive for node {node}. Error: {reason}")]
    Decompress {
        /// Node UUID.
        node: String,
        /// The decompressor's complaint.
        reason: String,
    },
    /// Larger than 64 MiB once decompressed.
    #[error("Config drive size exceeds maximum limit of 64MiB. Size of the given config drive is {size} for node {node}.")]
    TooLarge {
        /// Node UUID.
        node: String,
        /// `N MiB`, or `more than 64 MiB` when decompression stopped at the bound.
        size: String,
    },
    /// The partitions' labels could not be read.
    #[error("Failed to retrieve partition labels on disk {dev} for node {node}. Error: {reason}")]
    Labels {
        /// The disk.
        dev: String,
        /// Node UUID.
        node: String,
        /// The cause.
        reason: String,
    },
    /// Two partitions carry the label.
    #[error("More than one partition with label \"config-2\" exists on device {dev} for node {node}: {first} and {second}.")]
    Duplicate {
        /// The disk.
        dev: String,
        /// Node UUID.
        node: String,
        /// The first partition found.
        first: String,
        /// The second one.
        second: String,
    },
    /// Moving the backup GPT failed.
    #[error(transparent)]
    FixGpt(#[from] FixGptError),
    /// Not GPT and no readable MBR.
    #[error("Failed to check the number of primary partitions present on {dev} for node {node}. Error: {reason}")]
    PrimaryCount {
        /// The disk.
        dev: String,
        /// Node UUID.
        node: String,
        /// The cause.
        reason: String,
    },
    /// All the MBR primary slots IPA may use are taken.
    #[error("Config drive cannot be created for node {node}. Disk ({dev}) uses MBR partitioning and already has {count} primary partitions.")]
    TooManyPrimaries {
        /// Node UUID.
        node: String,
        /// The disk.
        dev: String,
        /// Primary partitions in use.
        count: usize,
    },
    /// Creating the partition or writing the image failed.
    #[error("Failed to create config drive on disk {dev} for node {node}. Error: {reason}")]
    Failed {
        /// The disk.
        dev: String,
        /// Node UUID.
        node: String,
        /// The cause.
        reason: String,
    },
}

/// What the conductor's `configdrive` string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// An http(s) URL to download.
    Url(&'a str),
    /// gzip+base64 content.
    Inline(&'a str),
}

/// Classifies the string: a URL when it starts with `http://` or `https://` in any case.
pub fn classify(value: &str) -> Source<'_> {
    let head = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    if head.starts_with("http://") || head.starts_with("https://") {
        Source::Url(value)
    } else {
        Source::Inline(value)
    }
}

/// A decoded config drive (normally an ISO 9660 image), at most [`MAX_SIZE`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigDriveImage {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for ConfigDriveImage {
    // The content carries the tenant's user data; never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDriveImage")
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl ConfigDriveImage {
    /// Wraps an already decoded image, refusing one over the limit.
    pub fn from_bytes(bytes: Vec<u8>, node_uuid: &str) -> Result<Self, ConfigDriveError> {
        if bytes.len() as u64 > MAX_SIZE {
            return Err(ConfigDriveError::TooLarge {
                node: node_uuid.to_owned(),
                size: format!("{} MiB", (bytes.len() as u64).div_ceil(MIB)),
            });
        }
        Ok(Self { bytes })
    }

    /// The image bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// IPA's `C`: the size in MiB, rounded up (the partition size for partition images).
    pub fn size_mib(&self) -> u64 {
        self.len().div_ceil(MIB)
    }

    /// The filesystem label of the image (`config-2` for a proper config drive).
    pub fn label(&self) -> Option<String> {
        fsprobe::probe(&mut Cursor::new(&self.bytes), 0, self.len())
            .ok()
            .flatten()
            .and_then(|i| i.label)
    }
}

/// The outcome of [`decode`].
pub enum Decoded {
    /// The value is a URL: download it (bounded by [`MAX_DOWNLOAD_SIZE`]) and pass the
    /// body to [`decode_downloaded`].
    NeedsDownload(String),
    /// The decoded image.
    Image(ConfigDriveImage),
}

impl std::fmt::Debug for Decoded {
    // The URL may be signed (a Swift temp URL): print it without its query.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decoded::NeedsDownload(url) => {
                let bare = url.split(['?', '#']).next().unwrap_or_default();
                f.debug_tuple("NeedsDownload").field(&bare).finish()
            }
            Decoded::Image(img) => f.debug_tuple("Image").field(img).finish(),
        }
    }
}

/// Decodes the conductor's `configdrive` string, or says it must be downloaded first.
pub fn decode(value: &str, node_uuid: &str) -> Result<Decoded, ConfigDriveError> {
    match classify(value) {
        Source::Url(url) => Ok(Decoded::NeedsDownload(url.to_owned())),
        Source::Inline(text) => decode_inline(text, node_uuid).map(Decoded::Image),
    }
}

/// Decodes inline gzip+base64 content.
pub fn decode_inline(text: &str, node_uuid: &str) -> Result<ConfigDriveImage, ConfigDriveError> {
    let gz = base64_decode(text.as_bytes()).map_err(|e| ConfigDriveError::NotBase64 {
        node: node_uuid.to_owned(),
        reason: e.to_string(),
    })?;
    gunzip_bounded(&gz, node_uuid)
}

/// Decodes a downloaded body: gzip+base64 when it is base64 text, otherwise (as IPA
/// does when base64 decoding fails on downloaded bytes) an uncompressed image as is.
pub fn decode_downloaded(
    body: &[u8],
    node_uuid: &str,
) -> Result<ConfigDriveImage, ConfigDriveError> {
    let looks_base64 = body.iter().all(|&b| {
        b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' || b.is_ascii_whitespace()
    });
    match base64_decode(body) {
        Ok(gz) if looks_base64 => gunzip_bounded(&gz, node_uuid),
        _ => {
            tracing::debug!("config drive body is not base64, using it as an uncompressed image");
            ConfigDriveImage::from_bytes(body.to_vec(), node_uuid)
        }
    }
}

fn base64_decode(data: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let cleaned: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    BASE64.decode(cleaned)
}

/// Gunzips (all members, like Python's `GzipFile`) into memory, failing as soon as the
/// output would pass [`MAX_SIZE`], so memory never exceeds it.
fn gunzip_bounded(gz: &[u8], node_uuid: &str) -> Result<ConfigDriveImage, ConfigDriveError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(gz);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ConfigDriveError::Decompress {
                    node: node_uuid.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        if (out.len() + n) as u64 > MAX_SIZE {
            return Err(ConfigDriveError::TooLarge {
                node: node_uuid.to_owned(),
                size: "more than 64 MiB".to_owned(),
            });
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(ConfigDriveImage { bytes: out })
}

/// Where the config drive went on a whole-disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Partition number.
    pub number: u32,
    /// Its device path.
    pub path: PathBuf,
    /// Byte offset on the disk.
    pub start: u64,
    /// Partition size in bytes.
    pub size: u64,
    /// Whether the partition was created (false: an existing `config-2` was reused).
    pub created: bool,
}

/// Puts the config drive on a whole-disk image written to `disk` (IPA's
/// `create_config_drive_partition`, spec 7.3): reuse the one partition labelled
/// `config-2`, else move the backup GPT to the end and add a partition in the last
/// 64 MiB (GPT) or in a free primary slot (MBR), then copy the image into it. The caller
/// re-reads the partition table afterwards ([`crate::sys::block::rescan`]).
pub fn place_on_whole_disk<D: Disk + ?Sized>(
    disk: &mut D,
    geometry: Geometry,
    dev: &Path,
    node_uuid: &str,
    image: &ConfigDriveImage,
) -> Result<Placement, ConfigDriveError> {
    let dev_s = dev.display().to_string();
    let failed = |reason: String| ConfigDriveError::Failed {
        dev: dev_s.clone(),
        node: node_uuid.to_owned(),
        reason,
    };
    let parts = describe(disk, geometry, dev).map_err(|e| ConfigDriveError::Labels {
        dev: dev_s.clone(),
        node: node_uuid.to_owned(),
        reason: e.to_string(),
    })?;
    let labelled = with_label(&parts, LABEL);
    if let [first, second, ..] = labelled[..] {
        return Err(ConfigDriveError::Duplicate {
            dev: dev_s,
            node: node_uuid.to_owned(),
            first: first.path.display().to_string(),
            second: second.path.display().to_string(),
        });
    }
    // from_bytes enforces it; an image built another way is checked here too.
    if image.len() > MAX_SIZE {
        return Err(ConfigDriveError::TooLarge {
            node: node_uuid.to_owned(),
            size: format!("{} MiB", image.size_mib()),
        });
    }
    fix_gpt_partition(disk, geometry, dev, Some(node_uuid))?;

    let placement = match labelled.first() {
        Some(existing) => {
            tracing::info!(part = %existing.path.display(), "reusing the existing config drive partition");
            Placement {
                number: existing.info.number,
                path: existing.path.clone(),
                start: existing.info.start,
                size: existing
                    .info
                    .size
                    .min(geometry.size().saturating_sub(existing.info.start)),
                created: false,
            }
        }
        None => create_partition(disk, geometry, dev, node_uuid)?,
    };
    if image.len() > placement.size {
        return Err(failed(format!(
            "the config drive ({} bytes) does not fit in {} ({} bytes)",
            image.len(),
            placement.path.display(),
            placement.size
        )));
    }
    write_all_at(disk, placement.start, image.as_bytes())
        .and_then(|()| disk.flush())
        .map_err(|e| failed(format!("writing {}: {e}", placement.path.display())))?;
    tracing::info!(part = %placement.path.display(), bytes = image.len(), "config drive written");
    Ok(placement)
}

/// Adds the config drive partition; the table was already fixed up.
fn create_partition<D: Disk + ?Sized>(
    disk: &mut D,
    geometry: Geometry,
    dev: &Path,
    node_uuid: &str,
) -> Result<Placement, ConfigDriveError> {
    let dev_s = dev.display().to_string();
    let failed = |reason: String| ConfigDriveError::Failed {
        dev: dev_s.clone(),
        node: node_uuid.to_owned(),
        reason,
    };
    let ss = geometry.sector_size();
    let table = read_table(disk, geometry).map_err(|e| failed(e.to_string()))?;
    let (number, first, sectors) = match table {
        Some(PartitionTable::Gpt(mut gpt)) => {
            // sgdisk -n 0:-64MB:0: the last 64 MiB of usable space, start aligned down.
            let n = gpt
                .add_at_end(
                    MAX_SIZE / ss,
                    geometry.sectors_per_mib(),
                    types::LINUX_FS,
                    Uuid::new_v4(),
                    "",
                )
                .map_err(|e| failed(e.to_string()))?;
            gpt.write(disk, geometry)
                .map_err(|e| failed(e.to_string()))?;
            let e = gpt.entry(n).expect("entry just added");
            (n, e.first_lba, e.last_lba - e.first_lba + 1)
        }
        Some(PartitionTable::Mbr(mut mbr)) => {
            let count = mbr.primary_count();
            if count > 3 {
                return Err(ConfigDriveError::TooManyPrimaries {
                    node: node_uuid.to_owned(),
                    dev: dev_s,
                    count,
                });
            }
            let (first, sectors) = mbr_range(geometry)
                .ok_or_else(|| failed("the disk is smaller than 64 MiB".to_owned()))?;
            let n = mbr
                .add_primary(first, sectors, kinds::FAT32_LBA, geometry)
                .map_err(|e| failed(e.to_string()))?;
            mbr.write(disk).map_err(|e| failed(e.to_string()))?;
            (n, first, sectors)
        }
        None => {
            return Err(ConfigDriveError::PrimaryCount {
                dev: dev_s,
                node: node_uuid.to_owned(),
                reason: "the disk has no msdos partition table".to_owned(),
            })
        }
    };
    tracing::info!(dev = %dev.display(), number, first, sectors, "config drive partition created");
    Ok(Placement {
        number,
        path: partition_path(dev, number),
        start: first * ss,
        size: sectors * ss,
        created: true,
    })
}

/// The sectors of a new MBR config drive partition (first, count); `None` when the
/// disk is smaller than 64 MiB.
///
/// Normally the last 64 MiB of the disk (`parted mkpart primary fat32 -64MiB -0`), start
/// aligned down to 1 MiB. When the disk is larger than an MBR can address (2^32
/// sectors: 2 TiB at 512 bytes), IPA passes `2097087 2097151` to parted meaning MiB, but
/// parted reads unit-less numbers as decimal MB (open question 9). We place it where
/// IPA's code intends: 64 MiB ending 1 MiB below the addressable limit, which for
/// 512-byte sectors is exactly MiB 2097087-2097151.
pub fn mbr_range(geometry: Geometry) -> Option<(u64, u64)> {
    let spm = geometry.sectors_per_mib();
    let size = MAX_SIZE / geometry.sector_size();
    let limit = 1u64 << 32;
    if geometry.sectors() > limit {
        let end = limit - spm; // exclusive, 1 MiB below the limit
        Some((end - size, size))
    } else {
        let end = geometry.sectors(); // exclusive
        let first = end.checked_sub(size)? / spm * spm;
        (first > 0).then_some((first, end - first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip_b64(data: &[u8]) -> String {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap())
    }

    #[test]
    fn classify_urls_case_insensitively() {
        assert_eq!(classify("HTTPS://x/y"), Source::Url("HTTPS://x/y"));
        assert_eq!(classify("http://x"), Source::Url("http://x"));
        assert_eq!(classify("H4sIAAAA"), Source::Inline("H4sIAAAA"));
        assert_eq!(classify("ftp://x"), Source::Inline("ftp://x"));
        assert_eq!(classify("é"), Source::Inline("é"));
        assert!(
            matches!(decode("https://h/cd?sig=1", "n").unwrap(), Decoded::NeedsDownload(u) if u == "https://h/cd?sig=1")
        );
    }

    #[test]
    fn inline_round_trip_with_line_breaks() {
        let data = vec![7u8; usize::try_from(3 * MIB).unwrap() + 1];
        let mut text = gzip_b64(&data);
        text.insert(10, '\n');
        let img = decode_inline(&text, "n1").unwrap();
        assert_eq!(img.as_bytes(), &data[..]);
        assert_eq!(img.size_mib(), 4);
    }

    #[test]
    fn errors_carry_ipa_messages() {
        let e = decode_inline("not base64 !!!", "n1").unwrap_err();
        assert!(e.to_string().starts_with(
            "Config drive for node n1 is not base64 encoded or the content is malformed. Error: "
        ), "{e}");
        let e = decode_inline(
            &base64::engine::general_purpose::STANDARD.encode(b"plain"),
            "n1",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with(
            "Encountered error while decompressing and writing config drive for node n1. Error: "
        ), "{e}");
        let e = ConfigDriveImage::from_bytes(vec![0; usize::try_from(MAX_SIZE).unwrap() + 1], "n1")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Config drive size exceeds maximum limit of 64MiB. Size of the given config drive is 65 MiB for node n1."
        );
    }

    #[test]
    fn downloaded_bodies_are_base64_or_raw() {
        let iso = b"\x00\x01binary ISO bytes\xff".to_vec();
        assert_eq!(decode_downloaded(&iso, "n").unwrap().as_bytes(), &iso[..]);
        let text = gzip_b64(b"hello");
        assert_eq!(
            decode_downloaded(text.as_bytes(), "n").unwrap().as_bytes(),
            b"hello"
        );
    }

    #[test]
    fn mbr_range_at_end_and_below_the_limit() {
        let g = Geometry::new(2 << 30, 512).unwrap();
        assert_eq!(mbr_range(g), Some((4063232, 131072))); // what parted chose on a 2 GiB disk
        let big = Geometry::new(3 << 40, 512).unwrap();
        let (first, n) = mbr_range(big).unwrap();
        assert_eq!(
            (first * 512 / MIB, (first + n) * 512 / MIB),
            (2097087, 2097151)
        );
        let big4k = Geometry::new(3 << 40, 4096).unwrap();
        let (first, n) = mbr_range(big4k).unwrap();
        assert_eq!(mbr_range(Geometry::new(32 * MIB, 512).unwrap()), None);
        assert_eq!(first + n, big4k.sectors());
    }
}
