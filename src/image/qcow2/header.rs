//! The qcow2 header: parsed from the first `HEADER_PREFIX` bytes and checked before any
//! table is trusted (layout from QEMU's docs/interop/qcow2.txt; checks as `qcow2_do_open`).

use super::Qcow2Error;
use crate::bytes::{be32, be64};

/// Bytes the parser needs: the v3 header up to the compression type and its padding.
pub const HEADER_PREFIX: usize = 112;

/// qemu's cap on the active L1 table (`QCOW_MAX_L1_SIZE`, 32 MiB), in entries.
pub const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// qemu's cap on the refcount table (`QCOW_MAX_REFTABLE_SIZE`, 8 MiB).
const MAX_REFTABLE_BYTES: u64 = 8 << 20;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION;

/// How compressed clusters are encoded (`compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCompression {
    /// Raw deflate (zlib without header), type 0.
    Deflate,
    /// zstd frames, type 1.
    Zstd,
}

/// The header fields the reader uses, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Guest disk size in bytes.
    pub virtual_size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table (never read; kept out of the spill).
    pub refcount_table_offset: u64,
    /// Size of the refcount table in clusters.
    pub refcount_table_clusters: u32,
    /// Incompatible feature bits (dirty and corrupt may be set).
    pub incompatible_features: u64,
    /// Encoding of compressed clusters.
    pub compression: ClusterCompression,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table (one cluster of 8-byte entries).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes covered by one L1 entry.
    pub fn l2_coverage(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// L1 entries that map the virtual disk; entries past these hold VM state, not disk.
    pub fn l1_entries_needed(&self) -> u64 {
        self.virtual_size.div_ceil(self.l2_coverage())
    }
}

fn bad(what: &'static str) -> Qcow2Error {
    Qcow2Error::Header(what)
}

/// Parses and checks the header from the first `HEADER_PREFIX` bytes of the image.
pub fn parse(b: &[u8]) -> Result<Header, Qcow2Error> {
    if b.len() < HEADER_PREFIX {
        return Err(Qcow2Error::Truncated {
            what: "header",
            offset: 0,
        });
    }
    if &b[0..4] != b"QFI\xfb" {
        return Err(Qcow2Error::NotQcow2);
    }
    let version = be32(b, 4);
    if version != 2 && version != 3 {
        return Err(Qcow2Error::Version(version));
    }
    if be64(b, 8) != 0 {
        return Err(Qcow2Error::BackingFile);
    }
    let cluster_bits = be32(b, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad("cluster size must be 512 B to 2 MiB"));
    }
    let cluster_size = 1u64 << cluster_bits;
    let crypt_method = be32(b, 32);
    if crypt_method != 0 {
        return Err(Qcow2Error::Encrypted(crypt_method));
    }
    let (incompatible_features, compression) = if version == 3 {
        let incompat = be64(b, 72);
        let header_length = be32(b, 100);
        if header_length < 104 || u64::from(header_length) > cluster_size {
            return Err(bad("v3 header length out of range"));
        }
        if be32(b, 96) > 6 {
            return Err(bad("refcount order out of range"));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(Qcow2Error::DataFile);
        }
        if incompat & INCOMPAT_EXTENDED_L2 != 0 {
            return Err(Qcow2Error::ExtendedL2);
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(Qcow2Error::UnknownFeatures(incompat & !INCOMPAT_KNOWN));
        }
        let ctype = if header_length > 104 { b[104] } else { 0 };
        let compression = match ctype {
            0 => ClusterCompression::Deflate,
            1 => ClusterCompression::Zstd,
            _ => return Err(bad("unknown compression type")),
        };
        // qemu: a non-zlib type must be flagged incompatible, and the flag means non-zlib.
        if (ctype != 0) != (incompat & INCOMPAT_COMPRESSION != 0) {
            return Err(bad("compression type and its incompatible bit disagree"));
        }
        (incompat, compression)
    } else {
        (0, ClusterCompression::Deflate)
    };

    let virtual_size = be64(b, 24);
    let l1_size = be32(b, 36);
    let l1_table_offset = be64(b, 40);
    let refcount_table_offset = be64(b, 48);
    let refcount_table_clusters = be32(b, 56);
    let header = Header {
        version,
        cluster_bits,
        virtual_size,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        incompatible_features,
        compression,
    };

    let needed = header.l1_entries_needed();
    if needed > MAX_L1_ENTRIES {
        return Err(bad("virtual size too large for the cluster size"));
    }
    if u64::from(l1_size) > MAX_L1_ENTRIES {
        return Err(bad("L1 table too large"));
    }
    if u64::from(l1_size) < needed {
        return Err(bad("L1 table too small for the virtual size"));
    }
    if needed > 0 && (l1_table_offset % cluster_size != 0 || l1_table_offset < cluster_size) {
        return Err(bad("L1 table offset invalid"));
    }
    if refcount_table_offset % cluster_size != 0 {
        return Err(bad("refcount table offset unaligned"));
    }
    if u64::from(refcount_table_clusters) * cluster_size > MAX_REFTABLE_BYTES {
        return Err(bad("refcount table too large"));
    }
    if incompatible_features & INCOMPAT_CORRUPT != 0 {
        // qemu still opens such images read-only; every table we use is checked anyway.
        tracing::warn!("qcow2 image is marked corrupt; reading it with full table checks");
    }
    Ok(header)
}
