//! The image pipeline: what a deploy image is and how its bytes reach the disk.
//!
//! Each stage is a small module with one job. `format` sniffs the first bytes of a stream
//! (disk formats as oslo's inspector names them, plus compression wrappers) and gates the
//! declared format against the detected one and the permitted list; `qcow2` turns a qcow2
//! stream into positional guest writes without seeking. Other stages (HTTP source,
//! checksum, decompression, hold-back of the first MiB, the aligned disk sink) live in
//! their own modules next to these and are tied together by the write step.
//!
//! The modules form layers, each using only those below it: vocabulary at the bottom
//! (`url`, `hash_algo`, `progress`, `format`, `aligned`, `content_encoding`), then `error` and `info`, the
//! stages (`pool`, `sink`, `holdback`, `decompress`, `checksum`, `source`, `stages`), and
//! `pipeline`, which ties them together, on top.
//!
//! Order matters (INVARIANT 1): no parser that follows references inside an image runs on
//! bytes that `format::gate` has not identified and checked first; raw is copied, never
//! parsed.

pub mod format;
pub mod qcow2;

pub mod aligned;
pub mod checksum;
pub mod content_encoding;
pub mod decompress;
pub mod error;
pub mod hash_algo;
pub mod holdback;
pub mod info;
pub mod pipeline;
pub mod pool;
pub mod progress;
pub mod sink;
pub mod source;
pub mod stages;
pub mod url;
pub use error::ImageError;
pub use info::ImageInfo;
