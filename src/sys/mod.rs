//! Safe wrappers around the kernel interfaces nothing in std or nix wraps, one module per
//! ioctl family; with `image::aligned`, the only `unsafe` in the crate.
//!
//! - `alloc`: the agent's global allocator (the system's, with a cache of freed large
//!   blocks: musl maps and unmaps each one).
//! - `block`: block-device ioctls (size, sector size, partition table re-read, BLKPG,
//!   discard, secure discard, write zeroes).
//! - `ethtool`: `SIOCETHTOOL` (permanent MAC address, supported link modes).
//! - `fs_flags`: inode flags (clearing efivarfs' immutable flag).
//! - `ipmi`: requests to the BMC through the OpenIPMI device (`/dev/ipmi0`).
//! - `packet`: raw `AF_PACKET` sockets receiving LLDP frames.
//! - `nvme`: the NVMe admin passthrough (Identify, Get Log Page, Format NVM, Sanitize).
//! - `sg_io`: SCSI generic I/O (`SG_IO`) for ATA PASS-THROUGH(16), and the ATA registers
//!   in its sense data.
//! - `vlan`: VLAN interfaces over rtnetlink (no `unsafe`).

pub mod alloc;
pub mod block;
pub mod ethtool;
pub mod fs_flags;
pub mod ipmi;
pub mod nvme;
pub mod packet;
pub mod sg_io;
pub mod vlan;
