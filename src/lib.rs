//! ira: an in-band deploy agent for Ironic, wire-compatible with ironic-python-agent.
//!
//! Layout: `config` (options from kernel command line, file and flags), `inventory`
//! (hardware facts read from sysfs/procfs/SMBIOS under a root path), `blockdev` (device
//! allow-list and the one door to writable handles), `hardware` (manager registry,
//! dispatch, generic manager), `commands` (IPA's extensions and the command history),
//! `logs` (the diagnostics archive), `api` (the local HTTP(S) API), `ironic` (lookup,
//! heartbeat, inspection client) and `agent` (the life cycle that ties them together).
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod blockdev;
pub mod commands;
pub mod config;
pub mod deploy;
pub mod erase;
pub mod errors;
pub mod hardware;
pub mod image;
pub mod inventory;
pub mod ironic;
pub mod logs;
pub mod partition;

pub use ira_hw as hw;

/// The agent version reported in `/v1/status` and heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
