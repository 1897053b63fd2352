//! UEFI boot variables as bytes (UEFI spec 2.10, 3.1.3 "Load Options" and 10.3 "Device
//! Path Nodes"): an `EFI_LOAD_OPTION` with its device path, encoded and decoded without
//! I/O. The efivarfs module stores them; the UEFI flow decides what to store.
//!
//! Only the nodes an agent writes are typed (hard drive, file path, end); every other
//! node a firmware or another tool put in a variable is kept as opaque bytes, so
//! reading an existing entry never fails on a node we do not know.

use uuid::Uuid;

use crate::bytes::{le16, le32};

/// `LOAD_OPTION_ACTIVE`: the firmware may boot this option.
pub const LOAD_OPTION_ACTIVE: u32 = 0x0000_0001;

/// Device path type 4: media.
const MEDIA: u8 = 0x04;
/// Media subtype 1: hard drive (a partition).
const MEDIA_HARD_DRIVE: u8 = 0x01;
/// Media subtype 4: file path.
const MEDIA_FILE_PATH: u8 = 0x04;
/// Type 0x7f: end of hardware device path.
const END: u8 = 0x7f;
/// End subtype 0xff: end of the entire device path.
const END_ENTIRE: u8 = 0xff;
/// Length of a hard-drive node: header 4, number 4, start 8, size 8, signature 16,
/// partition format 1, signature type 1.
const HARD_DRIVE_LEN: u16 = 42;

/// Why bytes are not a load option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadOptionError {
    /// Fewer bytes than a field needs.
    #[error("load option truncated at byte {0}")]
    Truncated(usize),
    /// The description has no NUL terminator.
    #[error("load option description is not terminated")]
    UnterminatedDescription,
    /// A device path node is shorter than its header or runs past the path list.
    #[error("device path node at byte {0} has a bad length")]
    BadNode(usize),
    /// The path list does not end with an end-entire node.
    #[error("device path is not terminated")]
    UnterminatedPath,
    /// A field is too long for its 16-bit length.
    #[error("{0} is too long for a load option")]
    TooLong(&'static str),
    /// A hard-drive node with an unknown partition format or signature type.
    #[error("hard drive node has unknown format {format:#x}/signature type {sig_type:#x}")]
    BadHardDrive {
        /// Partition format byte.
        format: u8,
        /// Signature type byte.
        sig_type: u8,
    },
}

/// How a hard-drive node identifies its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSignature {
    /// GPT: the partition's unique GUID (format 0x02, signature type 0x02).
    Gpt(Uuid),
    /// MBR: the disk signature at byte 440 (format 0x01, signature type 0x01).
    Mbr(u32),
}

/// A hard-drive media node: which partition, where (in logical blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardDrive {
    /// Partition number (1-based).
    pub number: u32,
    /// First logical block of the partition.
    pub start_lba: u64,
    /// Length in logical blocks.
    pub size_lba: u64,
    /// The partition's identity.
    pub signature: PartitionSignature,
}

/// One device path node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePathNode {
    /// `HD(...)`.
    HardDrive(HardDrive),
    /// `File(\EFI\...)`, a path with backslashes.
    File(String),
    /// Any other node, kept byte for byte (without its 4-byte header).
    Other {
        /// Node type.
        kind: u8,
        /// Node subtype.
        subtype: u8,
        /// Node data.
        data: Vec<u8>,
    },
}

/// An `EFI_LOAD_OPTION`: the content of a `Boot####` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    /// `LOAD_OPTION_*` bits.
    pub attributes: u32,
    /// The label firmware menus show.
    pub description: String,
    /// The first device path instance (the end node is implied).
    pub path: Vec<DevicePathNode>,
    /// Bytes after the path list (loader arguments); efibootmgr writes none by default.
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// An active option booting `loader` (a `\EFI\...` path) from partition `hd`.
    pub fn for_loader(description: &str, hd: HardDrive, loader: &str) -> Self {
        Self {
            attributes: LOAD_OPTION_ACTIVE,
            description: description.to_owned(),
            path: vec![
                DevicePathNode::HardDrive(hd),
                DevicePathNode::File(loader.to_owned()),
            ],
            optional_data: Vec::new(),
        }
    }

    /// The variable data (without efivarfs' 4-byte attribute prefix).
    pub fn encode(&self) -> Result<Vec<u8>, LoadOptionError> {
        let mut path = Vec::new();
        for node in &self.path {
            encode_node(node, &mut path)?;
        }
        path.extend_from_slice(&[END, END_ENTIRE, 4, 0]);
        let path_len = u16::try_from(path.len()).map_err(|_| LoadOptionError::TooLong("path"))?;

        let mut out = Vec::with_capacity(6 + 2 * self.description.len() + path.len());
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&path_len.to_le_bytes());
        push_utf16z(&mut out, &self.description);
        out.extend_from_slice(&path);
        out.extend_from_slice(&self.optional_data);
        Ok(out)
    }

    /// Parses variable data; only the first device path instance is typed, the rest of
    /// the path list is ignored.
    pub fn decode(b: &[u8]) -> Result<Self, LoadOptionError> {
        let attributes = u32::from_le_bytes(take::<4>(b, 0)?);
        let path_len = usize::from(u16::from_le_bytes(take::<2>(b, 4)?));
        let (description, desc_end) = read_utf16z(b, 6)?;
        let path_end = desc_end
            .checked_add(path_len)
            .filter(|&e| e <= b.len())
            .ok_or(LoadOptionError::Truncated(b.len()))?;
        let path = decode_path(&b[desc_end..path_end], desc_end)?;
        Ok(Self {
            attributes,
            description,
            path,
            optional_data: b[path_end..].to_vec(),
        })
    }

    /// The hard-drive node, if the path has one.
    pub fn hard_drive(&self) -> Option<&HardDrive> {
        self.path.iter().find_map(|n| match n {
            DevicePathNode::HardDrive(hd) => Some(hd),
            _ => None,
        })
    }

    /// The file path node, if any.
    pub fn file(&self) -> Option<&str> {
        self.path.iter().find_map(|n| match n {
            DevicePathNode::File(f) => Some(f.as_str()),
            _ => None,
        })
    }
}

fn encode_node(node: &DevicePathNode, out: &mut Vec<u8>) -> Result<(), LoadOptionError> {
    match node {
        DevicePathNode::HardDrive(hd) => {
            out.extend_from_slice(&[MEDIA, MEDIA_HARD_DRIVE]);
            out.extend_from_slice(&HARD_DRIVE_LEN.to_le_bytes());
            out.extend_from_slice(&hd.number.to_le_bytes());
            out.extend_from_slice(&hd.start_lba.to_le_bytes());
            out.extend_from_slice(&hd.size_lba.to_le_bytes());
            match hd.signature {
                PartitionSignature::Gpt(guid) => {
                    // EFI_GUID layout: the first three fields little-endian.
                    out.extend_from_slice(&guid.to_bytes_le());
                    out.extend_from_slice(&[0x02, 0x02]);
                }
                PartitionSignature::Mbr(sig) => {
                    out.extend_from_slice(&sig.to_le_bytes());
                    out.extend_from_slice(&[0; 12]);
                    out.extend_from_slice(&[0x01, 0x01]);
                }
            }
        }
        DevicePathNode::File(path) => {
            let mut data = Vec::new();
            push_utf16z(&mut data, path);
            push_node(out, MEDIA, MEDIA_FILE_PATH, &data)?;
        }
        DevicePathNode::Other {
            kind,
            subtype,
            data,
        } => push_node(out, *kind, *subtype, data)?,
    }
    Ok(())
}

fn push_node(out: &mut Vec<u8>, kind: u8, subtype: u8, data: &[u8]) -> Result<(), LoadOptionError> {
    let len = u16::try_from(data.len() + 4).map_err(|_| LoadOptionError::TooLong("node"))?;
    out.extend_from_slice(&[kind, subtype]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// Parses nodes up to the first end node (end-instance or end-entire).
fn decode_path(b: &[u8], base: usize) -> Result<Vec<DevicePathNode>, LoadOptionError> {
    let mut nodes = Vec::new();
    let mut at = 0;
    loop {
        if b.len() < at + 4 {
            return Err(LoadOptionError::UnterminatedPath);
        }
        let (kind, subtype) = (b[at], b[at + 1]);
        let len = usize::from(le16(b, at + 2));
        if len < 4 || at + len > b.len() {
            return Err(LoadOptionError::BadNode(base + at));
        }
        let data = &b[at + 4..at + len];
        match (kind, subtype) {
            (END, _) => return Ok(nodes),
            (MEDIA, MEDIA_HARD_DRIVE) if len == usize::from(HARD_DRIVE_LEN) => {
                nodes.push(DevicePathNode::HardDrive(decode_hard_drive(data)?));
            }
            (MEDIA, MEDIA_FILE_PATH) => {
                let (path, _) = read_utf16z(data, 0)
                    .or_else(|_| Ok::<_, LoadOptionError>((utf16_lossy(data), data.len())))?;
                nodes.push(DevicePathNode::File(path));
            }
            _ => nodes.push(DevicePathNode::Other {
                kind,
                subtype,
                data: data.to_vec(),
            }),
        }
        at += len;
    }
}

fn decode_hard_drive(d: &[u8]) -> Result<HardDrive, LoadOptionError> {
    let number = u32::from_le_bytes(take::<4>(d, 0)?);
    let start_lba = u64::from_le_bytes(take::<8>(d, 4)?);
    let size_lba = u64::from_le_bytes(take::<8>(d, 12)?);
    let sig = take::<16>(d, 20)?;
    let (format, sig_type) = (d[36], d[37]);
    let signature = match (format, sig_type) {
        (0x02, 0x02) => PartitionSignature::Gpt(Uuid::from_bytes_le(sig)),
        (0x01, 0x01) => PartitionSignature::Mbr(le32(&sig, 0)),
        _ => return Err(LoadOptionError::BadHardDrive { format, sig_type }),
    };
    Ok(HardDrive {
        number,
        start_lba,
        size_lba,
        signature,
    })
}

fn take<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], LoadOptionError> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(LoadOptionError::Truncated(at))
}

fn push_utf16z(out: &mut Vec<u8>, s: &str) {
    for unit in s.encode_utf16().chain(std::iter::once(0)) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

/// A NUL-terminated UTF-16LE string at `at`, and the offset after its terminator.
fn read_utf16z(b: &[u8], at: usize) -> Result<(String, usize), LoadOptionError> {
    let mut units = Vec::new();
    let mut i = at;
    while i + 1 < b.len() {
        let u = u16::from_le_bytes([b[i], b[i + 1]]);
        i += 2;
        if u == 0 {
            return Ok((String::from_utf16_lossy(&units), i));
        }
        units.push(u);
    }
    Err(LoadOptionError::UnterminatedDescription)
}

fn utf16_lossy(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_nodes_survive_a_round_trip_and_garbage_is_refused() {
        let opt = LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: "UEFI PXE".to_owned(),
            path: vec![DevicePathNode::Other {
                kind: 0x02,
                subtype: 0x01,
                data: vec![0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0],
            }],
            optional_data: vec![1, 2, 3],
        };
        let bytes = opt.encode().unwrap();
        assert_eq!(LoadOption::decode(&bytes).unwrap(), opt);
        // Cut inside the path list, and a node whose length runs past it.
        assert!(LoadOption::decode(&bytes[..bytes.len() - 8]).is_err());
        let mut bad = bytes.clone();
        let node = 6 + 2 * ("UEFI PXE".len() + 1);
        bad[node + 2] = 0xff;
        assert_eq!(
            LoadOption::decode(&bad),
            Err(LoadOptionError::BadNode(node))
        );
        assert!(LoadOption::decode(&[1, 0, 0, 0, 4, 0, b'a', 0]).is_err());
    }
}
