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

/// The kernel command line when `--cmdline-file` is not given.
const PROC_CMDLINE: &str = "/proc/cmdline";
/// Config files tried, first found wins, when `--config-file` is not given
/// (the two system paths oslo.config searches for IPA).
const DEFAULT_CONFIG_FILES: &[&str] = &[
    "/etc/ironic-python-agent/ironic-python-agent.conf",
    "/etc/ironic-python-agent.conf",
];
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

    let (config, config_file) = match load(&flags) {
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
        tracing::warn!("boot_method=vmedia: parameters.txt on virtual media is not read");
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

/// Reads the sources and resolves them; returns the config file used, if any.
fn load(flags: &Flags) -> Result<(Config, Option<PathBuf>), LoadError> {
    let cmdline = match &flags.cmdline_file {
        Some(path) => read_bounded(path, CMDLINE_LIMIT)?,
        // Containers and some test hosts have no /proc/cmdline: no kernel parameters.
        None => read_optional(Path::new(PROC_CMDLINE), CMDLINE_LIMIT)?.unwrap_or_default(),
    };

    let (file_text, file_path) = match &flags.config_file {
        Some(path) => (
            Some(read_bounded(path, CONFIG_FILE_LIMIT)?),
            Some(path.clone()),
        ),
        None => {
            let mut found = (None, None);
            for candidate in DEFAULT_CONFIG_FILES.iter().map(Path::new) {
                if let Some(text) = read_optional(candidate, CONFIG_FILE_LIMIT)? {
                    found = (Some(text), Some(candidate.to_path_buf()));
                    break;
                }
            }
            found
        }
    };

    let sources = Sources {
        cmdline: &cmdline,
        vmedia_parameters: None,
        file: file_text.as_deref(),
    };
    Ok((config::resolve_sources(flags, &sources)?, file_path))
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
