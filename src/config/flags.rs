//! Command-line flags of the `ira` binary (clap derive), named as IPA's oslo.config
//! options with dashes (`--api-url`, `--listen-port`, ...), plus ira's own test flags.
//!
//! Every option value stays an `Option<String>` (switches a `bool`, false = not given):
//! `resolve.rs` tells "not given" from "given" and parses the text with the same
//! parsers as the kernel command line and the file, so a bad value gives the same
//! one-line error whatever its source. To add a flag: a field here and a line in
//! [`Flags::option_values`] naming the `Config` field it sets (its name in the file).
//!
//! There is deliberately no `--agent-token`: argv is world-readable through `ps`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The `ira` command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Parser)]
#[command(
    name = "ira",
    version,
    about = "In-band deploy agent for Ironic, wire-compatible with ironic-python-agent",
    long_about = "In-band deploy agent for Ironic, wire-compatible with ironic-python-agent.\n\n\
        Options come from these flags, then the kernel command line (ipa-* parameters), \
        then the config file ([DEFAULT] section), then defaults, in that order of precedence."
)]
pub struct Flags {
    /// What to do; without a subcommand the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Ironic API URL(s), comma-separated (kernel: ipa-api-url).
    #[arg(long, value_name = "URL[,URL...]")]
    pub api_url: Option<String>,
    /// Address the agent API binds (kernel: ipa-listen-host).
    #[arg(long, value_name = "IP")]
    pub listen_host: Option<String>,
    /// Port the agent API binds (kernel: ipa-listen-port).
    #[arg(long, value_name = "PORT")]
    pub listen_port: Option<String>,
    /// Host Ironic calls back (kernel: ipa-advertise-host).
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Port Ironic calls back (kernel: ipa-advertise-port).
    #[arg(long, value_name = "PORT")]
    pub advertise_port: Option<String>,
    /// Protocol of the callback URL, http or https (kernel: ipa-advertise-protocol).
    #[arg(long, value_name = "http|https")]
    pub advertise_protocol: Option<String>,
    /// No lookup and no heartbeats, for development (kernel: ipa-standalone).
    #[arg(long)]
    pub standalone: bool,
    /// Inspection endpoint (kernel: ipa-inspection-callback-url).
    #[arg(long, value_name = "URL")]
    pub inspection_callback_url: Option<String>,
    /// Inspection collectors, comma-separated (kernel: ipa-inspection-collectors).
    #[arg(long, value_name = "NAME[,NAME...]")]
    pub inspection_collectors: Option<String>,
    /// Directory of executable hardware managers (kernel: ipa-hardware-managers-dir).
    #[arg(long, value_name = "DIR")]
    pub hardware_managers_dir: Option<String>,
    /// Seconds to keep retrying lookup (kernel: ipa-lookup-timeout).
    #[arg(long, value_name = "SECONDS")]
    pub lookup_timeout: Option<String>,
    /// Initial seconds between lookup attempts (kernel: ipa-lookup-interval).
    #[arg(long, value_name = "SECONDS")]
    pub lookup_interval: Option<String>,
    /// Skip TLS verification of Ironic and image servers (kernel: ipa-insecure).
    #[arg(long)]
    pub insecure: bool,
    /// Interface whose address is advertised (kernel: ipa-network-interface).
    #[arg(long, value_name = "IFACE")]
    pub network_interface: Option<String>,
    /// X-OpenStack-Request-ID sent to Ironic (kernel: ipa-global-request-id).
    #[arg(long, value_name = "req-UUID")]
    pub global_request_id: Option<String>,

    /// Config file to read instead of the default ones.
    #[arg(long, global = true, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Directory whose *.conf files override the config file, in name order (default
    /// /etc/ironic-python-agent.d under the system root).
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Verbose logs (kernel: ipa-debug).
    #[arg(short, long, global = true)]
    pub debug: bool,
    /// Read the kernel command line from this file instead of /proc/cmdline.
    #[arg(long, global = true, value_name = "PATH")]
    pub cmdline_file: Option<PathBuf>,
    /// Only these block devices are visible, comma-separated globs (e.g. /dev/loop7).
    #[arg(long, global = true, value_name = "GLOB[,GLOB...]")]
    pub device_allowlist: Option<String>,
    /// Log power_off/run_image instead of doing them (tests).
    #[arg(long)]
    pub no_power_off: bool,
    /// Root of the filesystem the inventory reads (default /).
    #[arg(long, global = true, value_name = "PATH")]
    pub sysroot: Option<PathBuf>,
}

/// Subcommands; none means "run the agent".
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print the hardware inventory as JSON and exit.
    Inventory,
    /// Configure the network from openstack/latest/network_data.json on a config-2
    /// virtual media device (or --file) and exit: 0 configured, 3 no network data.
    NetworkData {
        /// Read this network_data.json instead of the virtual media's.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Seconds to wait for every NIC the file names to appear.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
    },
}

impl Flags {
    /// The option values given as flags, as `(Config field name, text)` pairs.
    ///
    /// The field name is also the option's config-file name; the flag spelling is it
    /// with dashes (see [`flag_name`]). Path and allow-list flags are not listed: they
    /// have no other source and `resolve.rs` takes them directly.
    pub fn option_values(&self) -> Vec<(&'static str, String)> {
        let text = [
            ("api_url", &self.api_url),
            ("listen_host", &self.listen_host),
            ("listen_port", &self.listen_port),
            ("advertise_host", &self.advertise_host),
            ("advertise_port", &self.advertise_port),
            ("advertise_protocol", &self.advertise_protocol),
            ("inspection_callback_url", &self.inspection_callback_url),
            ("inspection_collectors", &self.inspection_collectors),
            ("hardware_managers_dir", &self.hardware_managers_dir),
            ("lookup_timeout", &self.lookup_timeout),
            ("lookup_interval", &self.lookup_interval),
            ("network_interface", &self.network_interface),
            ("global_request_id", &self.global_request_id),
        ];
        let switches = [
            ("standalone", self.standalone),
            ("insecure", self.insecure),
            ("debug", self.debug),
        ];
        text.into_iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| (name, v.clone())))
            .chain(
                switches
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| (name, "true".to_owned())),
            )
            .collect()
    }

    /// True when the `inventory` subcommand was given.
    pub fn is_inventory(&self) -> bool {
        self.command == Some(Command::Inventory)
    }
}

/// The flag spelling of an option name: `lookup_timeout` -> `--lookup-timeout`.
pub fn flag_name(option: &str) -> String {
    format!("--{}", option.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("ira").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn clap_definition_is_valid() {
        Flags::command().debug_assert();
    }

    #[test]
    fn nothing_given_means_no_values() {
        let f = parse(&[]);
        assert_eq!(f, Flags::default());
        assert!(f.option_values().is_empty());
        assert!(!f.is_inventory());
    }

    #[test]
    fn values_are_kept_as_text() {
        let f = parse(&[
            "--api-url",
            "http://a/",
            "--listen-port=abc",
            "--insecure",
            "--debug",
        ]);
        let mut got = f.option_values();
        got.sort();
        assert_eq!(
            got,
            [
                ("api_url", "http://a/".to_owned()),
                ("debug", "true".to_owned()),
                ("insecure", "true".to_owned()),
                ("listen_port", "abc".to_owned()),
            ]
        );
    }

    #[test]
    fn every_listed_option_has_a_matching_flag() {
        let f = parse(&[
            "--api-url=1",
            "--listen-host=1",
            "--listen-port=1",
            "--advertise-host=1",
            "--advertise-port=1",
            "--advertise-protocol=1",
            "--inspection-callback-url=1",
            "--inspection-collectors=1",
            "--hardware-managers-dir=1",
            "--lookup-timeout=1",
            "--lookup-interval=1",
            "--network-interface=1",
            "--global-request-id=1",
            "--standalone",
            "--insecure",
            "--debug",
        ]);
        let cmd = Flags::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        let values = f.option_values();
        assert_eq!(values.len(), 16);
        for (name, _) in values {
            assert!(longs.contains(&flag_name(name)), "{name}");
        }
    }

    #[test]
    fn inventory_subcommand_takes_global_flags() {
        let f = parse(&[
            "inventory",
            "--sysroot",
            "/tmp/root",
            "--device-allowlist",
            "/dev/loop7",
            "--cmdline-file",
            "/tmp/cmdline",
        ]);
        assert!(f.is_inventory());
        assert_eq!(f.sysroot, Some(PathBuf::from("/tmp/root")));
        assert_eq!(f.device_allowlist.as_deref(), Some("/dev/loop7"));
        assert_eq!(f.cmdline_file, Some(PathBuf::from("/tmp/cmdline")));
        let f = parse(&["--sysroot", "/r", "inventory"]);
        assert!(f.is_inventory());
        assert_eq!(f.sysroot, Some(PathBuf::from("/r")));
    }

    #[test]
    fn no_agent_token_flag() {
        assert!(Flags::try_parse_from(["ira", "--agent-token", "x"]).is_err());
    }

    #[test]
    fn flag_names() {
        assert_eq!(flag_name("lookup_timeout"), "--lookup-timeout");
        assert_eq!(flag_name("debug"), "--debug");
    }
}
