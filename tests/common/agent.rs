//! Agents for tests: a configuration that may write only to an explicit device
//! allow-list, the state over it with the built-in (or given) hardware managers, and
//! the agent API served on 127.0.0.1.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ira::api::{self, ServerLimits};
use ira::commands::Commands;
use ira::config::Config;
use ira::hardware::{builtin_managers, BuiltinOptions, Registry};
use ira::state::AgentState;
use ira_hw::{HardwareManager, Inventory};

/// A configuration that never powers off and may write only to the devices in `allow`.
pub fn allowlist_config(allow: Vec<String>) -> Config {
    Config {
        no_power_off: true,
        device_allowlist: allow,
        ..Config::default()
    }
}

/// The agent state over `config` and `inv` with the built-in hardware managers.
pub fn state(config: Config, inv: Inventory) -> Arc<AgentState> {
    state_with(config, builtin_managers(&BuiltinOptions::default()), inv)
}

/// The agent state over `config` and `inv` with `managers` registered.
pub fn state_with(
    config: Config,
    managers: Vec<Box<dyn HardwareManager>>,
    inv: Inventory,
) -> Arc<AgentState> {
    let registry = Registry::new(managers, &inv).expect("managers support the test machine");
    Arc::new(AgentState::new(Arc::new(config), Arc::new(registry), inv))
}

/// The agent API running in a task on a fresh 127.0.0.1 port.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Set to `true` to shut the server down.
    pub stop: watch::Sender<bool>,
    /// The server task; it ends when the server has shut down.
    pub task: JoinHandle<io::Result<()>>,
}

/// Serves `cmds` over `state` on 127.0.0.1 (over TLS when `tls` is given) with `limits`.
pub async fn serve(
    state: Arc<AgentState>,
    cmds: Arc<Commands>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServerLimits,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(api::serve_with_limits(
        listener, tls, state, cmds, stop_rx, limits,
    ));
    Served { addr, stop, task }
}
