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

mod host;
pub mod inventory;
mod manager;
pub mod safe_path;

pub use host::*;
pub use inventory::*;
pub use manager::*;
