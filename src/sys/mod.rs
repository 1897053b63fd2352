//! Safe wrappers around the kernel interfaces nothing in std or nix wraps, one module per
//! ioctl family; with `image::aligned`, the only `unsafe` in the crate.
//!
//! - `block`: block-device ioctls (size, sector size, partition table re-read, BLKPG).
//! - `fs_flags`: inode flags (clearing efivarfs' immutable flag).
//! - `nvme`: the NVMe admin passthrough (Identify, Get Log Page, Format NVM, Sanitize).

pub mod block;
pub mod fs_flags;
pub mod nvme;
