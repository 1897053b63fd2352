//! ira: an in-band deploy agent for Ironic, wire-compatible with ironic-python-agent.
//!
//! Layout, top to bottom; a module uses only those below it (`python3
//! ../shared/tools/layers.py src` checks there are no circles):
//! - `agent`: the life cycle (inventory, lookup, heartbeats, serving) tying it together.
//! - `api`: the local HTTP(S) API, its limits, token and TLS.
//! - `commands`: IPA's extensions, the command history and the step host.
//! - `state`: what the API, the commands and the heartbeat share.
//! - `hardware`: the manager registry, step dispatch and the generic manager.
//! - `deploy`, `erase`: image writes, bootloader and config drive; disk erasure.
//! - `image`: the download, decode and write pipeline.
//! - `ironic`: lookup, heartbeat and inspection client.
//! - `partition`: partition tables, filesystems and config drives on disk.
//! - `rescue`: the rescue password's hash and marker under the system root; SHA-256 crypt.
//! - `blockdev`: the install device, root device hints, the one door to writable handles.
//! - `inventory`: hardware facts read under a root path; the device allow-list.
//! - `config`: options from the kernel command line, files and flags.
//! - `tls_client`: TLS of every outgoing connection.
//! - `logs`: the diagnostics archive (`get_logs`, inspection `logs`) and the in-memory ring
//!   of the agent's own log it carries.
//! - `task`: blocking work off the async runtime.
//! - `errors`: IPA's error classes, mapped once to its JSON.
//! - `bytes`: big- and little-endian integers in on-disk structures.
//! - `sys`: ioctls and flags of block devices and files; with `image::aligned` the only
//!   `unsafe` code.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod blockdev;
pub mod bytes;
pub mod clock;
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
pub mod netconf;
pub mod partition;
pub mod rescue;
pub mod state;
pub mod sys;
pub mod task;
pub mod tls_client;
pub mod vmedia;

/// The agent version reported in `/v1/status` and heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
