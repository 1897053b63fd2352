//! A streaming qcow2 reader: consumes the image once, in file order, never seeking back,
//! and turns it into positional guest writes on a `GuestSink`.
//!
//! Only run this on bytes `format::gate` accepted as qcow2 (INVARIANT 1); the reader
//! repeats the checks that matter for its own safety anyway (backing file, external data
//! file, encryption, unknown features) and refuses them.
//!
//! How it streams: the header names the L1 table; each L1 entry names an L2 table; each
//! L2 entry names a data cluster (plain or compressed), a zero cluster or nothing. The
//! reader keeps a map of byte ranges it is waiting for ("wants": tables, data runs,
//! compressed clusters), ordered by host offset, and hands every passing byte to the
//! wants that cover it. qemu-img writes each table before the data it maps, so a data
//! cluster usually arrives when its guest offset is already known. Bytes that pass while
//! a table is still outstanding and that nobody wants yet go to a bounded in-memory
//! spill, a window over the newest such bytes (`Limits::max_spill`), from which a table
//! that arrives later is served; a reference further back than the window is refused as
//! not streamable.
//!
//! Memory stays bounded whatever the image size: the L1 table (at most qemu's 32 MiB),
//! one buffer per want being filled (at most two clusters), the map of pending wants
//! (`Limits::max_pending` entries; contiguous data clusters merge into one run) and the
//! spill.
//!
//! Out of scope: backing files, external data files, encryption, extended L2 entries
//! (subclusters), snapshots (only the active L1 is read) and refcounts (never needed to
//! read).

mod decompress;
pub mod header;
mod output;
mod reader;
mod spill;

use std::io;

pub use header::{ClusterCompression, Header};
pub use reader::{stream, Qcow2Stream};

/// Where guest data goes; offsets are guest (virtual disk) byte offsets.
///
/// Every guest byte below the virtual size is reported exactly once, through one of the
/// three methods, in no particular order. `write_at` calls are whole 512-byte sectors
/// (offset and length), except a last partial sector when the virtual size is not a
/// multiple of 512.
pub trait GuestSink {
    /// Guest data at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// A range the image marks as zero (qcow2 zero clusters): the disk must read zeros.
    fn zero(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// A range the image leaves unallocated: it reads as zeros too, so by default this is
    /// `zero`; a sink whose target is known to be zeroed may skip it.
    fn unallocated(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }
}

/// Bounds on what the reader may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Window of recent unclaimed bytes kept for tables that arrive after the data they
    /// map (see the module doc of the spill).
    pub max_spill: u64,
    /// Ranges waiting for their bytes (tables, data runs, compressed clusters).
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spill: 64 << 20,
            max_pending: 1 << 20,
        }
    }
}

/// What a finished stream contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Guest disk size in bytes.
    pub virtual_size: u64,
    /// Image bytes consumed.
    pub bytes_read: u64,
    /// Guest bytes written from plain data clusters.
    pub data_bytes: u64,
    /// Guest bytes written from compressed clusters.
    pub compressed_bytes: u64,
    /// Guest bytes reported through `zero`.
    pub zero_bytes: u64,
    /// Guest bytes reported through `unallocated`.
    pub unallocated_bytes: u64,
    /// Most bytes held in the spill at once.
    pub peak_spill: u64,
}

/// Why a qcow2 stream was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The magic is not "QFI\xfb".
    #[error("not a qcow2 image")]
    NotQcow2,
    /// Version other than 2 or 3.
    #[error("qcow2 version {0} is not supported (only 2 and 3)")]
    Version(u32),
    /// A backing file is named; its bytes would come from elsewhere.
    #[error("qcow2 image has a backing file; refused")]
    BackingFile,
    /// Guest data lives in an external file.
    #[error("qcow2 image uses an external data file; refused")]
    DataFile,
    /// `crypt_method` is not 0.
    #[error("qcow2 image is encrypted (method {0}); refused")]
    Encrypted(u32),
    /// Incompatible bit 4: 128-bit L2 entries with subclusters.
    #[error("qcow2 image uses extended L2 entries (subclusters), which are not supported")]
    ExtendedL2,
    /// Incompatible feature bits nobody defined.
    #[error("qcow2 image has unknown incompatible features {0:#x}")]
    UnknownFeatures(u64),
    /// A header field is out of range.
    #[error("invalid qcow2 header: {0}")]
    Header(&'static str),
    /// A table entry is invalid.
    #[error("invalid qcow2 {what} at offset {offset}")]
    Corrupt {
        /// The offending structure.
        what: &'static str,
        /// Host offset of the entry.
        offset: u64,
    },
    /// Two structures claim the same bytes, or a reference points at bytes already used.
    #[error("qcow2 {what} at offset {offset} overlaps other image data")]
    Overlap {
        /// The structure that was being placed.
        what: &'static str,
        /// Its host offset.
        offset: u64,
    },
    /// A table references bytes that already went by and were not kept (outside the
    /// spill window, or already used by another reference).
    #[error(
        "qcow2 {what} at offset {offset} was referenced after its bytes streamed past and \
         they were not kept; the image is not laid out for streaming (rewrite it with \
         qemu-img convert -O qcow2)"
    )]
    Behind {
        /// The structure that was referenced.
        what: &'static str,
        /// Its host offset.
        offset: u64,
    },
    /// The stream ended before a referenced structure.
    #[error("qcow2 image truncated: {what} at offset {offset} is past the end")]
    Truncated {
        /// The structure that is missing.
        what: &'static str,
        /// Its host offset.
        offset: u64,
    },
    /// A compressed cluster did not decode to exactly one cluster.
    #[error("qcow2 compressed cluster at offset {offset} (guest {guest}): {reason}")]
    Decompress {
        /// Host offset of the compressed data.
        offset: u64,
        /// Guest offset of the cluster.
        guest: u64,
        /// What the decoder said.
        reason: String,
    },
    /// Too many ranges are outstanding at once.
    #[error("qcow2 image maps more than {cap} separate pending ranges at once")]
    PendingLimit {
        /// The configured cap.
        cap: usize,
    },
    /// The sink refused a write.
    #[error("writing guest offset {offset}")]
    Sink {
        /// Guest offset of the failed call.
        offset: u64,
        /// The sink's error.
        #[source]
        source: io::Error,
    },
    /// Reading the source failed (`stream` only).
    #[error("reading the qcow2 image")]
    Read(#[source] io::Error),
    /// An earlier error stopped this stream.
    #[error("qcow2 stream already failed")]
    Failed,
}
