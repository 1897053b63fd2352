//! Agent configuration, taken as IPA takes it.
//!
//! Sources, highest first: command-line flags (`flags.rs`), the kernel command line
//! (`cmdline.rs`, `ipa-*` parameters), the config file (`file.rs`, `[DEFAULT]` ini with
//! IPA's option names), then defaults. `resolve.rs` merges them without doing any I/O,
//! so precedence is tested with tables of strings; `value.rs` holds the typed value
//! parsers every source shares. To add an option: a field here, its default in
//! `Config::default`, a row in `resolve.rs`'s `OPTIONS` table, and a flag in `flags.rs`
//! when operators need it on the command line.
//!
//! `Config` derives `Debug` and holds the agent token in clear: never log it whole.

pub mod cmdline;
pub mod file;
pub mod flags;
pub mod resolve;
pub mod value;

pub use flags::{Command, Flags};
pub use resolve::{resolve, resolve_sources, ConfigError, Origin, Sources};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Values of `nvme_erase_method`, the default first.
pub const NVME_ERASE_METHODS: [&str; 5] = [
    "format",
    "sanitize",
    "sanitize_crypto",
    "sanitize_block",
    "sanitize_overwrite",
];

/// Where executable hardware managers are looked for unless configured.
pub const DEFAULT_HARDWARE_MANAGERS_DIR: &str = "/usr/lib/ira/hardware-managers.d";

/// The fully resolved configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Ironic API URLs (`ipa-api-url`, comma-separated), trailing slashes stripped.
    pub api_urls: Vec<String>,
    /// `ipa-api-url=mdns`: the API URL must be discovered by mDNS.
    pub api_url_mdns: bool,
    /// Without an API URL, look for one by mDNS (`ipa-use-mdns`, `[mdns]use_mdns`).
    pub use_mdns: bool,
    /// Inspection endpoint (`ipa-inspection-callback-url`).
    pub inspection_callback_url: Option<String>,
    /// Inspection collectors (`ipa-inspection-collectors`).
    pub inspection_collectors: Vec<String>,
    /// Seconds to wait for DHCP before inspecting (`ipa-inspection-dhcp-wait-timeout`).
    pub inspection_dhcp_wait_timeout: Duration,
    /// Wait for DHCP on every interface, not only the PXE one
    /// (`ipa-inspection-dhcp-all-interfaces`).
    pub inspection_dhcp_all_interfaces: bool,
    /// Address the API binds (`ipa-listen-host`); None = wildcard.
    pub listen_host: Option<IpAddr>,
    /// Port the API binds (`ipa-listen-port`).
    pub listen_port: u16,
    /// Host in the callback URL (`ipa-advertise-host`); None = detect.
    pub advertise_host: Option<String>,
    /// Port in the callback URL (`ipa-advertise-port`).
    pub advertise_port: u16,
    /// `http` or `https` (`ipa-advertise-protocol`).
    pub advertise_protocol: String,
    /// Interface whose address is advertised (`ipa-network-interface`).
    pub network_interface: Option<String>,
    /// Advertise-address detection attempts (`ipa-ip-lookup-attempts`).
    pub ip_lookup_attempts: u32,
    /// Sleep between detection attempts (`ipa-ip-lookup-timeout`).
    pub ip_lookup_sleep: Duration,
    /// Total lookup retry time (`ipa-lookup-timeout`).
    pub lookup_timeout: Duration,
    /// Minimum lookup back-off (`ipa-lookup-interval`).
    pub lookup_interval: Duration,
    /// Sleep before hardware work (`ipa-hardware-initialization-delay`).
    pub hardware_initialization_delay: Duration,
    /// Root-disk wait attempts (`ipa-disk-wait-attempts`).
    pub disk_wait_attempts: u32,
    /// Delay between them (`ipa-disk-wait-delay`).
    pub disk_wait_delay: Duration,
    /// Skip TLS verification of Ironic and image servers (`ipa-insecure`).
    pub insecure: bool,
    /// CA bundle for outgoing TLS (`cafile`, config file only).
    pub cafile: Option<PathBuf>,
    /// Pregenerated agent token (`ipa-agent-token`).
    pub agent_token: Option<String>,
    /// `X-OpenStack-Request-ID` value (`ipa-global-request-id`).
    pub global_request_id: Option<String>,
    /// Forced Ironic API version `X.Y` (`ipa-ironic-api-version`).
    pub ironic_api_version: Option<(u32, u32)>,
    /// Per-request timeout to Ironic (`ipa-http-request-timeout`).
    pub http_request_timeout: Duration,
    /// Minimum TLS version `1.2`/`1.3` (`ipa-tls-min-version`).
    pub tls_min_version: String,
    /// Auto-TLS key curve `p256`/`p384`/`p521` (`ipa-tls-certificate-curve`).
    pub tls_certificate_curve: String,
    /// Serve TLS with static files (`listen_tls`, config file only).
    pub listen_tls: bool,
    /// Static TLS certificate (`tls_cert_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// Static TLS key (`tls_key_file`).
    pub tls_key_file: Option<PathBuf>,
    /// Generate a self-signed certificate at start (`enable_auto_tls`).
    pub enable_auto_tls: bool,
    /// notBefore back-dating of the auto certificate (`auto_tls_allowed_clock_skew`).
    pub auto_tls_allowed_clock_skew: Duration,
    /// Verbose logs (`ipa-debug`).
    pub debug: bool,
    /// Standalone mode: no lookup, no heartbeats (`ipa-standalone`, developer mode).
    pub standalone: bool,
    /// Collect LLDP (`ipa-collect-lldp`).
    pub collect_lldp: bool,
    /// LLDP wait (`ipa-lldp-timeout`).
    pub lldp_timeout: Duration,
    /// VLAN interfaces to bring up (`ipa-enable-vlan-interfaces`).
    pub enable_vlan_interfaces: Vec<String>,
    /// NTP server (`ipa-ntp-server`).
    pub ntp_server: Option<String>,
    /// Image download connect timeout (`ipa-image-download-connection-timeout`).
    pub image_download_connection_timeout: Duration,
    /// Image download retries (`ipa-image-download-connection-retries`).
    pub image_download_connection_retries: u32,
    /// Sleep between image download retries (`ipa-image-download-connection-retry-interval`).
    pub image_download_connection_retry_interval: Duration,
    /// Ignore bootloader failures (`ipa-ignore-bootloader-failure`).
    pub ignore_bootloader_failure: Option<bool>,
    /// Priority of the `inject_files` deploy step (`ipa-inject-files-priority`).
    pub inject_files_priority: i64,
    /// Refuse to erase shared-cluster filesystems (`ipa-guard-special-filesystems`).
    pub guard_special_filesystems: bool,
    /// How NVMe disks are secure-erased (`ipa-nvme-erase-method`, ira only): `format`
    /// (IPA's Format NVM), `sanitize`, `sanitize_crypto`, `sanitize_block`, `sanitize_overwrite`.
    pub nvme_erase_method: String,
    /// Directory of executable hardware managers (`ipa-hardware-managers-dir`, ira only);
    /// a real path, not under `sysroot`; missing means none.
    pub hardware_managers_dir: PathBuf,
    /// Raw `BOOTIF` kernel parameter.
    pub bootif: Option<String>,
    /// `boot_method` kernel parameter (`vmedia` enables parameters.txt).
    pub boot_method: Option<String>,
    /// Block-device allow-list globs (`--device-allowlist`); empty = every disk visible.
    pub device_allowlist: Vec<String>,
    /// Turn `power_off`/`run_image` into a log line (`--no-power-off`, for tests).
    pub no_power_off: bool,
    /// Root of the filesystem the inventory reads (`--sysroot`, for tests; default `/`).
    pub sysroot: PathBuf,
}

impl Config {
    /// The filesystem root the agent reads sysfs, udev data and `/dev` under (`/` when unset).
    pub fn root(&self) -> &Path {
        if self.sysroot.as_os_str().is_empty() {
            Path::new("/")
        } else {
            self.sysroot.as_path()
        }
    }
}

/// `path` (an absolute name such as `/dev/sda1`) under `sysroot`, as the process must open it.
pub fn rooted(sysroot: &Path, path: &Path) -> PathBuf {
    if sysroot == Path::new("/") {
        path.to_path_buf()
    } else {
        sysroot.join(path.strip_prefix("/").unwrap_or(path))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_urls: Vec::new(),
            api_url_mdns: false,
            use_mdns: false,
            inspection_callback_url: None,
            inspection_collectors: Vec::new(),
            inspection_dhcp_wait_timeout: Duration::from_secs(60),
            inspection_dhcp_all_interfaces: false,
            listen_host: None,
            listen_port: 9999,
            advertise_host: None,
            advertise_port: 9999,
            advertise_protocol: "http".to_owned(),
            network_interface: None,
            ip_lookup_attempts: 6,
            ip_lookup_sleep: Duration::from_secs(10),
            lookup_timeout: Duration::from_secs(600),
            lookup_interval: Duration::from_secs(1),
            hardware_initialization_delay: Duration::ZERO,
            disk_wait_attempts: 10,
            disk_wait_delay: Duration::from_secs(3),
            insecure: false,
            cafile: None,
            agent_token: None,
            global_request_id: None,
            ironic_api_version: None,
            http_request_timeout: Duration::from_secs(30),
            tls_min_version: "1.2".to_owned(),
            tls_certificate_curve: "p384".to_owned(),
            listen_tls: false,
            tls_cert_file: None,
            tls_key_file: None,
            enable_auto_tls: true,
            auto_tls_allowed_clock_skew: Duration::from_secs(3600),
            debug: false,
            standalone: false,
            collect_lldp: false,
            lldp_timeout: Duration::from_secs(30),
            enable_vlan_interfaces: Vec::new(),
            ntp_server: None,
            image_download_connection_timeout: Duration::from_secs(60),
            image_download_connection_retries: 9,
            image_download_connection_retry_interval: Duration::from_secs(10),
            ignore_bootloader_failure: None,
            inject_files_priority: 0,
            guard_special_filesystems: true,
            nvme_erase_method: NVME_ERASE_METHODS[0].to_owned(),
            hardware_managers_dir: PathBuf::from(DEFAULT_HARDWARE_MANAGERS_DIR),
            bootif: None,
            boot_method: None,
            device_allowlist: Vec::new(),
            no_power_off: false,
            sysroot: PathBuf::from("/"),
        }
    }
}
