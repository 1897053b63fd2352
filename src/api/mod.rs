//! The agent's local HTTP(S) API, the one the conductor drives (protocol spec 1).
//!
//! `server.rs` accepts connections (limits, TLS, graceful stop), `routes.rs` maps paths
//! to handlers, `auth.rs` checks the agent token, `error.rs` is the one place that builds
//! IPA's error JSON, `limits.rs` holds every bound and `tls.rs` makes the certificates.
//! The commands themselves live in `crate::commands`.

pub mod auth;
pub mod error;
pub mod limits;
pub mod routes;
pub mod server;
pub mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::commands::Commands;
use crate::state::AgentState;

pub use error::{ApiError, CommandError, IpaError};
pub use limits::ServerLimits;
pub use server::serve_with_limits;
pub use tls::{
    generate_self_signed, server_config_from_pem, static_server_config, GeneratedTls, TlsError,
};

/// Serves the API on `listener` with the default limits until `shutdown` (or
/// `state.stop_serving`) turns true; HTTPS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<AgentState>,
    commands: Arc<Commands>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with_limits(
        listener,
        tls,
        state,
        commands,
        shutdown,
        ServerLimits::default(),
    )
    .await
}
