//! Client side of the Ironic protocol (spec section 4): version discovery, lookup,
//! heartbeats, the inspection callback and advertise-address detection.
//!
//! `wire.rs` holds the JSON shapes, `backoff.rs` the pure schedule maths, `client.rs`
//! the HTTP client with URL failover (TLS settings from `crate::tls_client`); `lookup.rs`,
//! `heartbeat.rs` and `inspection.rs` are the loops that retry, `advertise.rs` finds the
//! callback address, `session.rs` names the shared cells they read and write. The agent's
//! life cycle calls them.

pub mod advertise;
pub mod backoff;
pub mod client;
pub mod collectors;
pub mod heartbeat;
pub mod inspection;
pub mod lookup;
pub mod mdns;
pub mod session;
pub mod wire;

pub use backoff::{HeartbeatPolicy, InspectionPolicy, LookupPolicy};
pub use client::{ClientError, ClientOptions, IronicClient};
pub use heartbeat::Heartbeater;
pub use lookup::{LookupError, LookupOutcome};
pub use session::{LookupSettings, Secret, Session};
pub use wire::ApiVersion;
