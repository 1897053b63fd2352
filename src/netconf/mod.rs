//! Static network configuration from a config drive's `openstack/latest/network_data.json`
//! (the file Ironic puts on the virtual-media ISO when the node has `network_data`), for
//! sites that run no DHCP on the provisioning network.
//!
//! Three steps, each testable alone: [`model`] parses the JSON (no I/O), [`plan`] turns
//! it into interface steps against the MAC addresses the machine has (links by MAC, static
//! addresses, routes, DNS, VLANs, bonds), and [`apply`] carries the plan out with the
//! system's `ip` command (busybox in ira's ramdisk, iproute2 elsewhere) and the bonding
//! driver's sysfs files. DHCP-typed networks are never configured here: the plan lists
//! them as skipped, so nothing on a static network asks for a lease.
//!
//! To support another link type: a variant in [`plan::LinkStep`], its planning in
//! `plan.rs` and its commands in `apply.rs`.

pub mod apply;
pub mod model;
pub mod plan;

pub use apply::{apply, ApplyError, CommandRunner, SysRunner};
pub use model::{NetworkData, ParseError};
pub use plan::{plan, AddrStep, LinkStep, Plan, PlanError, RouteStep};

/// Where the network data sits on a config drive.
pub const NETWORK_DATA_PATH: &str = "openstack/latest/network_data.json";
