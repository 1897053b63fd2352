//! The hardware-manager API of the ira agent.
//!
//! This crate is what a vendor manager depends on: the [`HardwareManager`] trait, its
//! support levels, step descriptors, the error type whose [`HwError::NotMine`] means
//! "ask the next manager" (IPA's `IncompatibleHardwareMethodError`), and the inventory
//! types in IPA's exact JSON shape. The agent itself builds the registry, orders the
//! managers by support level and dispatches; see `ira::hardware`.
//!
//! To add a manager: implement [`HardwareManager`], override only what your hardware
//! supports (every default means "not mine"), and register it in the agent's registry
//! behind a cargo feature (see `hardware-managers/example-vendor`).
//!
//! # What a step may ask of the agent
//!
//! Every step gets [`StepCall`]: the node and ports the conductor sent, the step's
//! `args`, the inventory, and `host`, the agent's services ([`AgentHost`]):
//!
//! | service | what it does |
//! |---|---|
//! | [`AgentHost::install_device`] | the install device as `get_os_install_device` picks it (root device hints, skip list, 4 GiB rule) |
//! | [`AgentHost::open_install_device`] | that device opened read-write after the allow-list and running-system checks |
//! | [`AgentHost::open_block_device`] | any device through the same checks (the only writable handles a manager gets) |
//! | [`AgentHost::image_written`] | after a step wrote a whole-disk image itself: re-read, validate, record `root uuid` for `get_partition_uuids` |
//! | [`AgentHost::prepare_image`] | the agent's own image write (`standby.prepare_image`) |
//! | [`AgentHost::with_instance_root`] | the written instance's root filesystem, mounted for the call |
//! | [`AgentHost::set_status`] | the heartbeat's `agent_status_message` |
//! | [`AgentHost::erase_block_device`] | erase one device through the managers in support order |
//!
//! A manager that replaces `write_image` with its own installer opens the install
//! device, writes, and calls `image_written`; the conductor's next commands
//! (`get_partition_uuids`, `install_bootloader`) then see what it wrote. An operator
//! who cannot rebuild the agent gets the same services from an executable manager (a
//! program in the ramdisk speaking the agent's JSON protocol; see the agent's README).

mod host;
pub mod inventory;
mod manager;
pub mod safe_path;

pub use host::*;
pub use inventory::*;
pub use manager::*;
