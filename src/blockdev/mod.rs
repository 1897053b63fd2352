//! Block devices: the allow-list that hides every device outside it, and the one door
//! to a writable handle.
//!
//! The allow-list ([`crate::inventory::allowlist`], re-exported here) decides which
//! `/dev` paths the agent may see and touch; `device` opens a
//! device for writing only after the allow-list and running-system checks. Any new code
//! that needs to write to a device goes through [`open_for_write`]; never open a device
//! with write access elsewhere.

mod device;
pub mod hints;
pub mod install_device;
pub mod nodes;

pub use crate::inventory::allowlist::{glob_match, AllowList};
pub use device::{
    devices_under, open_for_write, open_for_write_at, parse_root_mount, system_devices,
    BlockDevError, RootMount,
};
