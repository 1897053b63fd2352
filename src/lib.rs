//! ira: an in-band deploy agent for Ironic, wire-compatible with ironic-python-agent.
//!
//! Layout, top to bottom (a module uses only those below it): `agent` (the life cycle
//! that ties them together), `api` (the local HTTP(S) API), `commands` (IPA's
//! extensions and the command history), `state` (what the API, the commands and the
//! heartbeat share), `hardware` (manager registry, dispatch, generic manager), `deploy`
//! and `erase` (image writes, bootloader, disk erasure), `task` (blocking work off the
//! runtime), `image` (download and decode pipeline), `ironic` (lookup, heartbeat,
//! inspection client), `blockdev` (device allow-list and the one door to writable
//! handles), `inventory` (hardware facts read from sysfs/procfs/SMBIOS under a root
//! path), `partition` (tables and filesystems), `config` (options from kernel command
//! line, file and flags) and `errors` (IPA's error classes).
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod blockdev;
pub mod bytes;
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
pub mod state;
pub mod sys;
pub mod task;
pub mod tls_client;

pub use ira_hw as hw;

/// The agent version reported in `/v1/status` and heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
