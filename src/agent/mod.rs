//! The agent's life cycle (protocol spec section 7): inventory, inspection, lookup,
//! TLS, serve, heartbeat, until a signal stops it.
//!
//! `crate::state` holds what the API, the commands and the heartbeat loop share. The pieces
//! live elsewhere (`crate::inventory`, `crate::ironic`, `crate::api`, `crate::commands`);
//! this module only orders them, logs one line per phase with its duration, and decides
//! what is fatal. Every wait comes from a [`RunPolicy`] so tests run in milliseconds.

pub mod discovery;
mod inspect;
pub mod vlans;
pub mod waits;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::blockdev::AllowList;
use crate::commands::Commands;
use crate::config::Config;
use crate::hardware::exec::protocol::TlsSettings;
use crate::hardware::exec::ExecOptions;
use crate::hardware::{all_managers, BuiltinOptions, Registry};
use crate::inventory::InventoryOptions;
use crate::ironic::advertise::{self, AdvertiseOptions};
use crate::ironic::mdns::Query;
use crate::ironic::Secret;
use crate::ironic::{
    lookup, ApiVersion, HeartbeatPolicy, Heartbeater, InspectionPolicy, IronicClient,
    LookupOutcome, LookupPolicy,
};
use crate::state::AgentState;
use ira_hw::Inventory;

/// Errors that end the agent process.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Lookup did not succeed before `lookup_timeout`.
    #[error("lookup failed: {0}")]
    Lookup(String),
    /// Anything else fatal at start.
    #[error("{0}")]
    Startup(String),
    /// The API server stopped with an error.
    #[error("API server failed: {0}")]
    Serve(String),
}

/// Waits and schedules of the life cycle; [`RunPolicy::from_config`] gives IPA's.
#[derive(Debug, Clone)]
pub struct RunPolicy {
    /// How long to wait for a network interface with a MAC address (IPA: 60 s).
    pub nic_wait: Duration,
    /// How often to look again meanwhile (IPA: 5 s).
    pub nic_poll: Duration,
    /// Lookup retries.
    pub lookup: LookupPolicy,
    /// Heartbeat schedule.
    pub heartbeat: HeartbeatPolicy,
    /// Inspection callback retries.
    pub inspection: InspectionPolicy,
    /// How often the DHCP wait before inspection looks at the addresses (IPA: 2 s).
    pub dhcp_poll: Duration,
    /// How long a stop waits for the server and heartbeat tasks to finish.
    pub shutdown_grace: Duration,
    /// The mDNS query of `ipa-api-url=mdns` (`None`: IPA's, to the mDNS group from the
    /// inventory's addresses).
    pub mdns: Option<Query>,
}

impl RunPolicy {
    /// IPA's numbers, with the lookup timeout and interval from `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            nic_wait: Duration::from_secs(60),
            nic_poll: Duration::from_secs(5),
            lookup: LookupPolicy::from_config(config),
            heartbeat: HeartbeatPolicy::default(),
            inspection: InspectionPolicy::default(),
            dhcp_poll: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            mdns: None,
        }
    }
}

/// Sets the clock from `ntp_server`, when there is one; failures are logged only.
async fn sync_clock(config: &Config) {
    if let Some(server) = config.ntp_server.clone().filter(|s| !s.is_empty()) {
        let _ = tokio::task::spawn_blocking(move || {
            crate::clock::sync_ignoring_errors(Some(&server), &crate::clock::SystemClock)
        })
        .await;
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let policy = RunPolicy::from_config(&config);
    run_with(config, policy, shutdown_signal()).await
}

/// Runs the agent with explicit waits until `shutdown` completes.
pub async fn run_with<F>(config: Config, policy: RunPolicy, shutdown: F) -> Result<(), AgentError>
where
    F: Future<Output = ()> + Send,
{
    let started_at = unix_now();
    let config = Arc::new(config);
    tokio::pin!(shutdown);

    // A rescued node belongs to its user: no lookup (it would take the token), no API,
    // no heartbeats, as IPA.
    if crate::rescue::rescued(config.root()) {
        tracing::error!("rescue marker present: this node was rescued; not serving the API");
        shutdown.await;
        return Ok(());
    }

    // Before anything talks TLS: a clock far off makes valid certificates look invalid.
    sync_clock(&config).await;

    if !config.hardware_initialization_delay.is_zero() {
        tracing::info!(
            delay_ms = config.hardware_initialization_delay.as_millis(),
            "waiting before hardware initialisation"
        );
        tokio::time::sleep(config.hardware_initialization_delay).await;
    }

    // IPA waits for a root disk while loading the hardware managers: slow HBAs.
    let phase = Instant::now();
    let found = waits::wait_for_disks(
        config.root(),
        &AllowList::new(config.device_allowlist.clone()),
        config.disk_wait_attempts,
        config.disk_wait_delay,
    )
    .await;
    tracing::debug!(
        found,
        elapsed_ms = phase.elapsed().as_millis(),
        "disk wait done"
    );

    let phase = Instant::now();
    let mut inventory = wait_for_interfaces(&config, &policy).await?;
    if !config.enable_vlan_interfaces.is_empty() {
        let plan = vlans::plan(
            &config.enable_vlan_interfaces,
            &inventory.interfaces,
            config.collect_lldp,
        );
        let nics = inventory.interfaces.clone();
        let added = tokio::task::spawn_blocking(move || vlans::bring_up(&plan, &nics))
            .await
            .unwrap_or_default();
        if !added.is_empty() {
            let fresh = collect_inventory(&config).await?;
            inventory = keep_lldp(fresh, &inventory);
        }
    }
    tracing::info!(
        interfaces = inventory.interfaces.len(),
        disks = inventory.disks.len(),
        elapsed_ms = phase.elapsed().as_millis(),
        "inventory collected"
    );

    let config = match discovery::discover_api(
        &config,
        discovery::sources(&inventory),
        &policy.lookup,
        policy.mdns.clone(),
    )
    .await?
    {
        Some(found) => {
            // The announcement may name the NTP server (an allowed override).
            if found.ntp_server != config.ntp_server {
                sync_clock(&found).await;
            }
            Arc::new(found)
        }
        None => config,
    };

    let builtin = BuiltinOptions::from_config(&config);
    let erase_abort = builtin.erase_abort.clone();
    let exec = ExecOptions {
        abort: erase_abort.clone(),
        tls: TlsSettings {
            insecure: config.insecure,
            cafile: config.cafile.clone(),
        },
        ..ExecOptions::new(config.hardware_managers_dir.clone())
    };
    let exec_running = exec.running.clone();
    let inv = inventory.clone();
    let managers = tokio::task::spawn_blocking(move || all_managers(&builtin, &exec, &inv))
        .await
        .map_err(|e| AgentError::Startup(format!("hardware managers: {e}")))?;
    let registry = Arc::new(
        Registry::new(managers, &inventory).expect("the generic manager supports every machine"),
    );
    let mut state = AgentState::new(config.clone(), registry.clone(), inventory.clone());
    state.started_at = started_at;
    if let Some(token) = config.agent_token.as_deref().filter(|t| !t.is_empty()) {
        state.token = std::sync::RwLock::new(Some(Secret::new(token)));
        tracing::info!("using the pregenerated agent token");
    }
    let state = Arc::new(state);

    let mut client = IronicClient::from_config(&config)
        .map_err(|e| AgentError::Startup(format!("Ironic client: {e}")))?;

    let (node_uuid, refreshed) =
        inspect::inspect(&client, &config, &inventory, &registry, &policy).await;
    if let Some(fresh) = refreshed {
        *state.inventory.write().expect("inventory lock poisoned") = fresh.clone();
        inventory = fresh;
    }

    let use_api = !config.api_urls.is_empty() && !config.standalone;
    let mut api_version = None;
    if use_api {
        let phase = Instant::now();
        let addresses: Vec<String> = inventory
            .interfaces
            .iter()
            .map(|i| i.mac_address.clone())
            .filter(|m| !m.is_empty())
            .collect();
        let mut rng = StdRng::from_os_rng();
        let answer = lookup::lookup(
            &client,
            &addresses,
            node_uuid.as_deref(),
            &policy.lookup,
            &mut rng,
        )
        .await
        .map_err(|e| AgentError::Lookup(e.to_string()))?;
        let uuid = answer.uuid.clone();
        let outcome = lookup::apply_answer(&state, answer);
        tracing::info!(
            node = %uuid,
            elapsed_ms = phase.elapsed().as_millis(),
            "lookup succeeded"
        );
        if outcome == LookupOutcome::TokenRefused {
            tracing::error!(
                "lookup returned a masked agent token and this agent has none: another agent \
                 process already received it (restart without reboot?). Not serving the API \
                 and not heartbeating; reboot the node to recover"
            );
            shutdown.await;
            return Ok(());
        }
        api_version = Some(client.api_version().await);
        let lookup_tls = state
            .lookup
            .lock()
            .expect("lookup lock poisoned")
            .tls_min_version
            .clone();
        if let Some(min) = lookup_tls.filter(|m| *m != config.tls_min_version) {
            match client.with_tls_min_version(&min) {
                Ok(c) => client = c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply the lookup's TLS minimum to the client")
                }
            }
        }
    } else if config.standalone {
        tracing::info!("standalone mode: no lookup, no heartbeats");
    } else {
        tracing::info!("no Ironic API URL: serving without lookup or heartbeats");
    }

    // Advertise address: needed for heartbeats and for the certificate's IP SAN.
    let wants_auto_tls = config.enable_auto_tls
        && !config.listen_tls
        && use_api
        && api_version.is_some_and(|v| v >= ApiVersion::AGENT_VERIFY_CA);
    let advertise_host = if use_api {
        let phase = Instant::now();
        let mut opts = AdvertiseOptions::from_config(&config);
        opts.api_urls = client.urls();
        match advertise::find_advertise_host(&opts).await {
            Ok(host) => {
                tracing::info!(host = %host, elapsed_ms = phase.elapsed().as_millis(), "advertise address found");
                Some(host)
            }
            Err(e) if wants_auto_tls => return Err(AgentError::Startup(e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "no advertise address: serving without heartbeats");
                None
            }
        }
    } else {
        None
    };

    let server_min_tls = state
        .lookup
        .lock()
        .expect("lookup lock poisoned")
        .tls_min_version
        .clone()
        .unwrap_or_else(|| config.tls_min_version.clone());
    let (tls, verify_ca, protocol) = server_tls(
        &config,
        wants_auto_tls,
        advertise_host.as_deref(),
        &inventory,
        &server_min_tls,
    )
    .await?;

    let listener = bind(&config).await?;
    let local = listener
        .local_addr()
        .map_err(|e| AgentError::Startup(format!("listener address: {e}")))?;
    let commands = Commands::new(state.clone());
    let server = tokio::spawn(crate::api::serve(
        listener,
        tls,
        state.clone(),
        commands,
        state.stop_serving.subscribe(),
    ));
    tracing::info!(address = %local, protocol = %protocol, "API server listening");

    let node = state
        .node()
        .and_then(|n| n.get("uuid").and_then(|u| u.as_str()).map(str::to_owned));
    let heartbeat = match (node, &advertise_host) {
        (Some(node_uuid), Some(host)) => {
            let hb = Heartbeater {
                client: Arc::new(client),
                state: state.clone(),
                node_uuid,
                callback_url: advertise::callback_url(&protocol, host, config.advertise_port),
                verify_ca,
                policy: policy.heartbeat.clone(),
            };
            Some(tokio::spawn(hb.run(StdRng::from_os_rng())))
        }
        _ => None,
    };

    let server = wait_until_stopped(server, &state, &mut shutdown).await;
    tracing::info!("stopping");
    // An erase still writing would be cut off mid-pass by the exit: end it between writes
    // so its command records the disk as partly erased.
    erase_abort.store(true, std::sync::atomic::Ordering::Relaxed);
    state.stop_serving.send_replace(true);
    // The same flag ends running executable managers (SIGTERM, SIGKILL after the grace);
    // they are in process groups of their own, so wait for that rather than orphan them.
    if exec_running.count() > 0 {
        tracing::info!(
            running = exec_running.count(),
            "ending running executable hardware managers"
        );
        let limit = crate::hardware::exec::run::KILL_GRACE + Duration::from_secs(1);
        let left = tokio::task::spawn_blocking(move || exec_running.wait_idle(limit))
            .await
            .unwrap_or_default();
        if left > 0 {
            tracing::warn!(left, "executable hardware managers killed at exit");
        }
    }
    let grace = policy.shutdown_grace;
    let result = match server {
        Some(task) => match tokio::time::timeout(grace, task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(AgentError::Serve(e.to_string())),
            Ok(Err(e)) => Err(AgentError::Serve(e.to_string())),
            Err(_) => {
                tracing::warn!("API server did not stop in time");
                Ok(())
            }
        },
        None => Ok(()),
    };
    if let Some(task) = heartbeat {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("heartbeat loop did not stop in time");
        }
    }
    result
}

/// Waits for the shutdown signal. If serving stops first, the agent idles until the
/// signal (lockdown, as IPA) or returns at once (rescue: the process ends, as IPA's);
/// if the server fails, it returns at once.
async fn wait_until_stopped<F: Future<Output = ()>>(
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    state: &AgentState,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
    let mut stop = state.stop_serving.subscribe();
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return Some(server),
            res = &mut server => {
                match res {
                    Ok(Ok(())) if *stop.borrow() && state.exit_when_stopped.load(Ordering::SeqCst) => {
                        tracing::info!("API server stopped on request; the agent exits");
                    }
                    Ok(Ok(())) if *stop.borrow() => {
                        tracing::info!("API server stopped on request; idling until shut down");
                        shutdown.as_mut().await;
                    }
                    Ok(Ok(())) => tracing::error!("API server stopped unexpectedly"),
                    Ok(Err(e)) => tracing::error!(error = %e, "API server failed"),
                    Err(e) => tracing::error!(error = %e, "API server task failed"),
                }
                return None;
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return Some(server);
                }
            }
        }
    }
}

/// Collects the inventory, again every `nic_poll` until an interface has a MAC address
/// or `nic_wait` passed (then goes on with a warning).
async fn wait_for_interfaces(
    config: &Arc<Config>,
    policy: &RunPolicy,
) -> Result<Inventory, AgentError> {
    let start = Instant::now();
    let mut inventory = loop {
        let inventory = collect_inventory(config).await?;
        if inventory
            .interfaces
            .iter()
            .any(|i| !i.mac_address.is_empty())
        {
            break inventory;
        }
        if start.elapsed() >= policy.nic_wait {
            tracing::warn!(
                waited_ms = start.elapsed().as_millis(),
                "no network interface with a MAC address found; continuing anyway"
            );
            break inventory;
        }
        tokio::time::sleep(policy.nic_poll).await;
    };
    if config.collect_lldp {
        let timeout = config.lldp_timeout;
        let mut interfaces = std::mem::take(&mut inventory.interfaces);
        inventory.interfaces = tokio::task::spawn_blocking(move || {
            crate::inventory::net::attach_lldp(
                &mut interfaces,
                &crate::inventory::SystemNics,
                timeout,
            );
            interfaces
        })
        .await
        .map_err(|e| AgentError::Startup(format!("LLDP task: {e}")))?;
    }
    Ok(inventory)
}

/// `fresh` with the LLDP frames each interface of `earlier` heard (a re-read does not
/// listen again).
pub(crate) fn keep_lldp(mut fresh: Inventory, earlier: &Inventory) -> Inventory {
    for iface in &mut fresh.interfaces {
        if let Some(old) = earlier.interfaces.iter().find(|o| o.name == iface.name) {
            iface.lldp = old.lldp.clone();
        }
    }
    fresh
}

/// A fresh inventory of the system under `config.sysroot`.
pub(crate) async fn collect_inventory(config: &Config) -> Result<Inventory, AgentError> {
    let opts = InventoryOptions {
        root: config.sysroot.clone(),
        allowlist: AllowList::new(config.device_allowlist.clone()),
        bootif: config.bootif.clone(),
        skip_bmc_detect: false,
        // LLDP is heard once at start (wait_for_interfaces) and carried over by
        // `keep_lldp`, not listened for again on every re-read.
        lldp_timeout: None,
    };
    tokio::task::spawn_blocking(move || crate::inventory::collect(&opts))
        .await
        .map_err(|e| AgentError::Startup(format!("inventory task: {e}")))?
        .map_err(|e| AgentError::Startup(format!("inventory: {e}")))
}

/// The server TLS configuration, the PEM to send as `agent_verify_ca`, and the protocol
/// to advertise (spec 5.1).
async fn server_tls(
    config: &Config,
    auto: bool,
    advertise_host: Option<&str>,
    inventory: &Inventory,
    min_version: &str,
) -> Result<(Option<Arc<rustls::ServerConfig>>, Option<String>, String), AgentError> {
    let fail = |e: &dyn std::fmt::Display| AgentError::Startup(format!("TLS: {e}"));
    if config.listen_tls {
        let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
            return Err(AgentError::Startup(
                "listen_tls needs tls_cert_file and tls_key_file".into(),
            ));
        };
        let tls =
            crate::api::tls::static_server_config(cert, key, min_version).map_err(|e| fail(&e))?;
        return Ok((Some(tls), None, config.advertise_protocol.clone()));
    }
    if !auto {
        return Ok((None, None, config.advertise_protocol.clone()));
    }
    let host = advertise_host
        .ok_or_else(|| AgentError::Startup("auto-TLS needs an advertise address".into()))?;
    let ip = resolve_ip(host).await.map_err(|e| fail(&e))?;
    let hostname = if inventory.hostname.is_empty() {
        "localhost".to_owned()
    } else {
        inventory.hostname.clone()
    };
    let phase = Instant::now();
    let generated = crate::api::tls::generate_self_signed(
        ip,
        &hostname,
        &config.tls_certificate_curve,
        config.auto_tls_allowed_clock_skew,
    )
    .map_err(|e| fail(&e))?;
    let server = generated
        .server_config_min(min_version)
        .map_err(|e| fail(&e))?;
    tracing::info!(ip = %ip, elapsed_ms = phase.elapsed().as_millis(), "self-signed certificate generated");
    Ok((Some(server), Some(generated.cert_pem), "https".to_owned()))
}

/// `host` as an IP address, resolving a name when needed (the certificate's SAN is an IP).
async fn resolve_ip(host: &str) -> Result<IpAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        return Ok(ip);
    }
    tokio::net::lookup_host((bare, 0))
        .await
        .map_err(|e| format!("resolving {bare}: {e}"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("{bare} has no address"))
}

/// Binds `listen_host:listen_port`; without a host, `::` (dual stack) or else `0.0.0.0`.
async fn bind(config: &Config) -> Result<TcpListener, AgentError> {
    let port = config.listen_port;
    let result = match config.listen_host {
        Some(ip) => TcpListener::bind(SocketAddr::new(ip, port)).await,
        None => {
            match TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).await {
                Ok(l) => Ok(l),
                Err(e) => {
                    tracing::debug!(error = %e, "no IPv6 wildcard, binding 0.0.0.0");
                    TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)).await
                }
            }
        }
    };
    result.map_err(|e| AgentError::Startup(format!("binding port {port}: {e}")))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let wait_for = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
                tracing::info!(signal = name, "signal received");
            }
            Err(e) => {
                // Without the handler this signal keeps its default action.
                tracing::warn!(signal = name, error = %e, "cannot watch signal");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = wait_for(SignalKind::terminate(), "SIGTERM") => {}
        () = wait_for(SignalKind::interrupt(), "SIGINT") => {}
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
