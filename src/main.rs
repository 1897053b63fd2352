//! The `ira` binary: parse configuration, set up logging, run the agent.
//!
//! This is the only place configuration touches the filesystem: it reads the kernel
//! command line (`--cmdline-file` or `/proc/cmdline`) and the config file, then hands
//! the texts to `ira::config::resolve_sources`, which does no I/O.
//!
//! Exit codes: 0 done, 1 the agent or the inventory failed, 2 bad usage or configuration
//! (one `ira: <error>` line on stderr).

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ira::blockdev::AllowList;
use ira::config::{self, Config, Flags, Sources};
use ira::inventory::InventoryOptions;
use ira::logs::ring::{self, LogRing};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// musl's malloc with freed large blocks kept for reuse (see `ira::sys::alloc`).
#[global_allocator]
static GLOBAL: ira::sys::alloc::LargeBlockCache = ira::sys::alloc::LargeBlockCache;

/// The kernel command line when `--cmdline-file` is not given.
const PROC_CMDLINE: &str = "/proc/cmdline";
/// Config files tried, first found wins, when `--config-file` is not given
/// (the two system paths oslo.config searches for IPA).
const DEFAULT_CONFIG_FILES: &[&str] = &[
    "etc/ironic-python-agent/ironic-python-agent.conf",
    "etc/ironic-python-agent.conf",
];
/// Config directory read when `--config-dir` is not given (under the system root): the
/// one IPA ramdisks pass as `--config-dir`, where Ironic's virtual media puts `cafile`.
const DEFAULT_CONFIG_DIR: &str = "etc/ironic-python-agent.d";
/// Exit code of `network-data` when there is no network data to apply.
const EXIT_NO_NETWORK_DATA: u8 = 3;
/// Read bound for a kernel command line (the kernel's own limit is at most a few KiB).
const CMDLINE_LIMIT: u64 = 64 << 10;
/// Read bound for a config file.
const CONFIG_FILE_LIMIT: u64 = 1 << 20;
/// Exit code for bad usage or configuration, as clap uses for usage errors.
const EXIT_CONFIG: u8 = 2;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is larger than its read bound.
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
    /// The texts do not make a valid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Virtual media could not be read (IPA: `VirtualMediaBootError`).
    #[error("virtual media: {0}")]
    Vmedia(#[from] ira::vmedia::VmediaError),
}

/// What was taken from virtual media before configuration loaded, logged once logging
/// is up.
#[derive(Debug, Default)]
struct VmediaReport {
    /// Whether `parameters.txt` was found.
    parameters: bool,
    /// Configuration files copied into the system root.
    copied: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(err) => {
            // `--help` and `--version` arrive here too; clap prints them to stdout.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };

    if let Some(config::Command::NetworkData { file, wait }) = &flags.command {
        return network_data(&flags, file.as_deref(), *wait);
    }

    let (config, config_file, vmedia) = match load(&flags) {
        Ok(loaded) => loaded,
        Err(err) => {
            say(format_args!("{err}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.debug);
    tracing::info!(
        version = ira::AGENT_VERSION,
        config_file = ?config_file,
        "configuration loaded"
    );
    if config.boot_method.as_deref() == Some("vmedia") {
        tracing::info!(
            parameters_txt = vmedia.parameters,
            copied = ?vmedia.copied,
            "booted from virtual media"
        );
    }

    if flags.is_inventory() {
        print_inventory(&config)
    } else {
        run_agent(config)
    }
}

/// Prints one `ira: <message>` line on stderr. A closed stderr is ignored, as
/// `eprintln!` would panic on it (exit code 101 instead of ours).
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "ira: {message}");
}

/// The system root (`--sysroot`, default `/`).
fn sysroot(flags: &Flags) -> PathBuf {
    flags.sysroot.clone().unwrap_or_else(|| PathBuf::from("/"))
}

/// Reads the sources and resolves them; returns the config file used, if any, and what
/// came from virtual media.
///
/// With `boot_method=vmedia` on the kernel command line this first copies the agent
/// configuration from the boot ISO into the system root and reads `parameters.txt`
/// (IPA: `copy_config_from_vmedia`, then `get_agent_params`), so a CA and a config
/// file Ironic put on the media are in place before anything is read.
fn load(flags: &Flags) -> Result<(Config, Option<PathBuf>, VmediaReport), LoadError> {
    let root = sysroot(flags);
    let cmdline = match &flags.cmdline_file {
        Some(path) => read_bounded(path, CMDLINE_LIMIT)?,
        // Containers and some test hosts have no /proc/cmdline: no kernel parameters.
        None => read_optional(Path::new(PROC_CMDLINE), CMDLINE_LIMIT)?.unwrap_or_default(),
    };

    let mut vmedia = VmediaReport::default();
    let mut parameters = None;
    if config::cmdline::KernelParams::parse(&cmdline).is_vmedia() {
        let mounter = ira::deploy::mount::SysMounter;
        vmedia.copied = ira::vmedia::copy_config(&root, &mounter)?;
        parameters = ira::vmedia::read_parameters(&root, &mounter)?;
        vmedia.parameters = parameters.is_some();
    }

    let (file_text, file_path) = match &flags.config_file {
        Some(path) => (
            Some(read_bounded(path, CONFIG_FILE_LIMIT)?),
            Some(path.clone()),
        ),
        None => {
            let mut found = (None, None);
            for candidate in DEFAULT_CONFIG_FILES.iter().map(|rel| root.join(rel)) {
                if let Some(text) = read_optional(&candidate, CONFIG_FILE_LIMIT)? {
                    found = (Some(text), Some(candidate));
                    break;
                }
            }
            found
        }
    };
    let dir = flags
        .config_dir
        .clone()
        .unwrap_or_else(|| root.join(DEFAULT_CONFIG_DIR));
    let mut dir_texts = Vec::new();
    for name in ira::inventory::read::list_dir_opt(&dir) {
        // oslo.config reads only *.conf from a config directory, sorted by name.
        if name.ends_with(".conf") {
            if let Some(text) = read_optional(&dir.join(&name), CONFIG_FILE_LIMIT)? {
                dir_texts.push(text);
            }
        }
    }
    let dir_files: Vec<&str> = dir_texts.iter().map(String::as_str).collect();

    let sources = Sources {
        cmdline: &cmdline,
        vmedia_parameters: parameters.as_deref(),
        file: file_text.as_deref(),
        dir_files: &dir_files,
    };
    let mut config = config::resolve_sources(flags, &sources)?;
    // Files found in the system root name paths inside it (Ironic's ironic-tls.conf says
    // `cafile = /etc/ironic-python-agent/ironic.crt`); with --sysroot they are there.
    if flags.config_file.is_none() && root != Path::new("/") {
        if let Some(ca) = config.cafile.take() {
            config.cafile = Some(ira::inventory::read::under(&root, &ca.to_string_lossy()));
        }
    }
    Ok((config, file_path, vmedia))
}

/// The `network-data` subcommand: plan and apply `network_data.json`.
fn network_data(flags: &Flags, file: Option<&Path>, wait: u64) -> ExitCode {
    init_tracing(flags.debug);
    let root = sysroot(flags);
    let text = match file {
        Some(path) => read_bounded(path, ira::netconf::model::MAX_LEN as u64).map(Some),
        None => ira::vmedia::read_network_data(&root, &ira::deploy::mount::SysMounter)
            .map_err(LoadError::from),
    };
    let text = match text {
        Ok(Some(text)) => text,
        Ok(None) => {
            tracing::info!("no network_data.json on virtual media");
            return ExitCode::from(EXIT_NO_NETWORK_DATA);
        }
        Err(err) => {
            say(format_args!("network-data: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = ira::netconf::NetworkData::parse(&text)
        .map_err(|e| e.to_string())
        .and_then(|data| plan_waiting(&root, &data, wait).map_err(|e| e.to_string()))
        .and_then(|plan| {
            ira::netconf::apply(&plan, &root, &ira::netconf::SysRunner)
                .map(|()| plan)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(plan) => {
            tracing::info!(
                links = ?plan.links.iter().map(|l| l.name()).collect::<Vec<_>>(),
                addresses = plan.addresses.len(),
                routes = plan.routes.len(),
                dns = plan.dns.len(),
                "network configured from network_data.json"
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            say(format_args!("network-data: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// Plans `data`, waiting up to `wait` seconds for NICs it names that have no driver yet.
fn plan_waiting(
    root: &Path,
    data: &ira::netconf::NetworkData,
    wait: u64,
) -> Result<ira::netconf::Plan, ira::netconf::PlanError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let interfaces = ira::netconf::plan::read_interfaces(root);
        let plan = ira::netconf::plan(data, &interfaces);
        let missing = plan.as_ref().map_or(true, |p| {
            p.skipped.iter().any(|s| s.contains("no interface has MAC"))
        });
        if !missing || std::time::Instant::now() >= deadline {
            return plan;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Reads a UTF-8 text file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<String, LoadError> {
    read_optional(path, limit)?.ok_or_else(|| LoadError::Read {
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

/// Like [`read_bounded`], but a missing file is `None`.
fn read_optional(path: &Path, limit: u64) -> Result<Option<String>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_err(err)),
    };
    let mut text = String::new();
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if u64::try_from(text.len()).map_or(true, |len| len > limit) {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(text))
}

/// Logs to stderr and, in the same format, to the in-memory ring the diagnostics archive
/// carries as `ira.log`; `RUST_LOG` overrides the level chosen by `debug`.
fn init_tracing(debug: bool) {
    let default = if debug {
        // Our debug output, without the per-frame chatter of the HTTP and TLS stacks.
        "debug,hyper=info,hyper_util=info,rustls=info,reqwest=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        // Colour codes only for a terminal, not for journald or a serial console log
        // (a serial console is a terminal too: ramdisks set NO_COLOR, see no-color.org).
        .with_ansi(io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(ring::layer(LogRing::global().clone()))
        .init();
}

/// The `inventory` subcommand: the inventory as pretty JSON on stdout.
fn print_inventory(config: &Config) -> ExitCode {
    let opts = InventoryOptions {
        root: config.sysroot.clone(),
        allowlist: AllowList::new(config.device_allowlist.clone()),
        bootif: config.bootif.clone(),
        skip_bmc_detect: false,
        lldp_timeout: config.collect_lldp.then_some(config.lldp_timeout),
    };
    let json = ira::inventory::collect(&opts)
        .map_err(|e| e.to_string())
        .and_then(|inv| serde_json::to_string_pretty(&inv).map_err(|e| e.to_string()));
    let json = match json {
        Ok(json) => json,
        Err(err) => {
            say(format_args!("inventory: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    if let Err(err) = writeln!(out, "{json}").and_then(|()| out.flush()) {
        say(format_args!("writing inventory: {err}"));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs the agent on a multi-thread runtime until it stops.
fn run_agent(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ira::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "agent stopped");
            ExitCode::FAILURE
        }
    }
}
