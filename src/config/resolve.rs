//! Merging the configuration sources into one [`Config`], without any I/O.
//!
//! Precedence, highest first: command-line flags, then the kernel command line (with a
//! virtual-media `parameters.txt` overriding it when `boot_method=vmedia`), then the
//! config file, then `Config::default()`.
//!
//! This differs from IPA on purpose. In IPA the `ipa-*` kernel parameters are only the
//! *defaults* of oslo.config options, so a value in the file beats the kernel command
//! line (protocol spec 6.1). We put the kernel command line above the file because it
//! is written per boot by the conductor (API URL, token, request id for this node),
//! while the file is baked into the ramdisk image: a baked-in value must not silently
//! override what Ironic asked for on this boot. Flags stay on top so a developer can
//! always force a value.
//!
//! Every source is parsed with the same value parsers (`value.rs`), and every given
//! value is checked even when a higher source overrides it, as IPA fails on a bad
//! kernel parameter whatever the file says. To add an option: a row in [`OPTIONS`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use super::cmdline::{self, KernelParams};
use super::file::{FileError, IniFile};
use super::flags::{flag_name, Flags};
use super::value::{self, Invalid, ValueResult};
use super::Config;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag of `ira`.
    Flag,
    /// The kernel command line.
    KernelCmdline,
    /// The virtual-media `parameters.txt` file.
    VmediaParameters,
    /// The config file.
    ConfigFile,
    /// An `ipa_*` property of the Ironic API's mDNS announcement.
    Mdns,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "command-line flag",
            Self::KernelCmdline => "kernel command line",
            Self::VmediaParameters => "virtual media parameters.txt",
            Self::ConfigFile => "config file",
            Self::Mdns => "mDNS announcement",
        })
    }
}

/// A configuration that cannot be used; the message is one line naming the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value of the wrong form.
    #[error("invalid value {value:?} for {option} ({origin}): expected {expected}")]
    Invalid {
        /// The option as spelled in its source (`ipa-listen-port`, `--listen-port`).
        option: String,
        /// The source.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `mdns` beside URLs, or as the inspection callback URL (the legacy inspector's
    /// discovery).
    #[error("{option} ({origin}): \"mdns\" is accepted only as the whole ipa-api-url (not beside URLs, not for the inspection endpoint)")]
    MdnsUnsupported {
        /// The option as spelled in its source.
        option: String,
        /// The source.
        origin: Origin,
    },
    /// `listen_tls` without both static TLS files.
    #[error("listen_tls (config file) needs tls_cert_file and tls_key_file ([ssl] cert_file and key_file)")]
    ListenTlsWithoutFiles,
    /// The config file is not valid ini.
    #[error("config file {0}")]
    File(#[from] FileError),
}

/// The texts to resolve, as read by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The kernel command line (`/proc/cmdline`); empty when absent.
    pub cmdline: &'a str,
    /// Virtual-media `parameters.txt`, applied only with `boot_method=vmedia`.
    pub vmedia_parameters: Option<&'a str>,
    /// The config file, if one was found.
    pub file: Option<&'a str>,
    /// The `*.conf` files of the config directory (`/etc/ironic-python-agent.d`), in
    /// name order; each overrides the config file and the ones before it, as oslo.config
    /// reads a `--config-dir`.
    pub dir_files: &'a [&'a str],
}

/// Resolves flags, the kernel command line and the config file into a [`Config`].
pub fn resolve(
    flags: &Flags,
    cmdline_text: &str,
    file_text: Option<&str>,
) -> Result<Config, ConfigError> {
    resolve_sources(
        flags,
        &Sources {
            cmdline: cmdline_text,
            vmedia_parameters: None,
            file: file_text,
            dir_files: &[],
        },
    )
}

/// Like [`resolve`], with every source including virtual-media `parameters.txt`.
pub fn resolve_sources(flags: &Flags, sources: &Sources<'_>) -> Result<Config, ConfigError> {
    let mut config = Config::default();

    if let Some(text) = sources.file {
        apply_file(&mut config, &IniFile::parse(text)?)?;
    }
    for text in sources.dir_files {
        apply_file(&mut config, &IniFile::parse(text)?)?;
    }
    apply_kernel(&mut config, sources.cmdline, Origin::KernelCmdline)?;
    // IPA: utils.get_agent_params updates the kernel parameters with the vmedia ones,
    // and only when the kernel command line itself says boot_method=vmedia.
    if let Some(params) = sources.vmedia_parameters {
        if KernelParams::parse(sources.cmdline).is_vmedia() {
            apply_kernel(&mut config, params, Origin::VmediaParameters)?;
        }
    }
    apply_flags(&mut config, flags)?;

    if config.listen_tls && (config.tls_cert_file.is_none() || config.tls_key_file.is_none()) {
        return Err(ConfigError::ListenTlsWithoutFiles);
    }
    Ok(config)
}

/// One option: its names in each source and how to set it from text.
struct Opt {
    /// Name in the file's `[DEFAULT]` section and, with dashes, as a flag.
    name: &'static str,
    /// Kernel parameter (dash form; underscores are accepted too); None = not settable there.
    kernel: Option<&'static str>,
    /// Whether `[DEFAULT] <name>` is read from the file.
    in_file: bool,
    /// Parses the text into the config.
    set: fn(&mut Config, &str) -> ValueResult<()>,
}

/// Shorthand for a table row.
const fn opt(
    name: &'static str,
    kernel: Option<&'static str>,
    in_file: bool,
    set: fn(&mut Config, &str) -> ValueResult<()>,
) -> Opt {
    Opt {
        name,
        kernel,
        in_file,
        set,
    }
}

/// Every option with its sources (protocol spec 6.2).
static OPTIONS: &[Opt] = &[
    opt("api_url", Some("ipa-api-url"), true, |c, v| {
        c.api_url_mdns = v.trim().eq_ignore_ascii_case("mdns");
        c.api_urls = if c.api_url_mdns {
            Vec::new()
        } else {
            value::api_urls(v)?
        };
        Ok(())
    }),
    opt("use_mdns", Some("ipa-use-mdns"), true, |c, v| {
        c.use_mdns = value::boolean(v)?;
        Ok(())
    }),
    opt(
        "inspection_callback_url",
        Some("ipa-inspection-callback-url"),
        true,
        |c, v| {
            c.inspection_callback_url = value::callback_url(v)?;
            Ok(())
        },
    ),
    opt(
        "inspection_collectors",
        Some("ipa-inspection-collectors"),
        true,
        |c, v| {
            c.inspection_collectors = value::list(v);
            Ok(())
        },
    ),
    opt(
        "inspection_dhcp_wait_timeout",
        Some("ipa-inspection-dhcp-wait-timeout"),
        true,
        |c, v| {
            c.inspection_dhcp_wait_timeout = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "inspection_dhcp_all_interfaces",
        Some("ipa-inspection-dhcp-all-interfaces"),
        true,
        |c, v| {
            c.inspection_dhcp_all_interfaces = value::boolean(v)?;
            Ok(())
        },
    ),
    opt("listen_host", Some("ipa-listen-host"), true, |c, v| {
        c.listen_host = value::ip_addr(v)?;
        Ok(())
    }),
    opt("listen_port", Some("ipa-listen-port"), true, |c, v| {
        c.listen_port = value::port(v)?;
        Ok(())
    }),
    opt(
        "advertise_host",
        Some("ipa-advertise-host"),
        true,
        |c, v| {
            c.advertise_host = value::opt_string(v);
            Ok(())
        },
    ),
    opt(
        "advertise_port",
        Some("ipa-advertise-port"),
        true,
        |c, v| {
            c.advertise_port = value::nonzero_port(v)?;
            Ok(())
        },
    ),
    opt(
        "advertise_protocol",
        Some("ipa-advertise-protocol"),
        true,
        |c, v| {
            c.advertise_protocol = value::choice(v, &["http", "https"], "http or https")?;
            Ok(())
        },
    ),
    opt(
        "network_interface",
        Some("ipa-network-interface"),
        true,
        |c, v| {
            c.network_interface = value::opt_string(v);
            Ok(())
        },
    ),
    opt(
        "ip_lookup_attempts",
        Some("ipa-ip-lookup-attempts"),
        true,
        |c, v| {
            c.ip_lookup_attempts = value::positive_count(v)?;
            Ok(())
        },
    ),
    // IPA: the kernel name says "timeout" but the option is the sleep between attempts.
    opt(
        "ip_lookup_sleep",
        Some("ipa-ip-lookup-timeout"),
        true,
        |c, v| {
            c.ip_lookup_sleep = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "lookup_timeout",
        Some("ipa-lookup-timeout"),
        true,
        |c, v| {
            c.lookup_timeout = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "lookup_interval",
        Some("ipa-lookup-interval"),
        true,
        |c, v| {
            c.lookup_interval = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "hardware_initialization_delay",
        Some("ipa-hardware-initialization-delay"),
        true,
        |c, v| {
            c.hardware_initialization_delay = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "disk_wait_attempts",
        Some("ipa-disk-wait-attempts"),
        true,
        |c, v| {
            c.disk_wait_attempts = value::count(v)?;
            Ok(())
        },
    ),
    opt(
        "disk_wait_delay",
        Some("ipa-disk-wait-delay"),
        true,
        |c, v| {
            c.disk_wait_delay = value::seconds(v)?;
            Ok(())
        },
    ),
    opt("insecure", Some("ipa-insecure"), true, |c, v| {
        c.insecure = value::boolean(v)?;
        Ok(())
    }),
    opt("cafile", None, true, |c, v| {
        c.cafile = value::opt_string(v).map(PathBuf::from);
        Ok(())
    }),
    opt("agent_token", Some("ipa-agent-token"), true, |c, v| {
        c.agent_token = value::opt_string(v);
        Ok(())
    }),
    opt(
        "global_request_id",
        Some("ipa-global-request-id"),
        true,
        |c, v| {
            c.global_request_id = value::header_token(v)?;
            Ok(())
        },
    ),
    opt(
        "ironic_api_version",
        Some("ipa-ironic-api-version"),
        true,
        |c, v| {
            c.ironic_api_version = value::api_version(v)?;
            Ok(())
        },
    ),
    opt(
        "http_request_timeout",
        Some("ipa-http-request-timeout"),
        true,
        |c, v| {
            c.http_request_timeout = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "tls_min_version",
        Some("ipa-tls-min-version"),
        true,
        |c, v| {
            c.tls_min_version = value::choice(v, &["1.2", "1.3"], "1.2 or 1.3")?;
            Ok(())
        },
    ),
    opt(
        "tls_certificate_curve",
        Some("ipa-tls-certificate-curve"),
        true,
        |c, v| {
            c.tls_certificate_curve =
                value::choice(v, &["p256", "p384", "p521"], "p256, p384 or p521")?;
            Ok(())
        },
    ),
    opt("listen_tls", None, true, |c, v| {
        c.listen_tls = value::boolean(v)?;
        Ok(())
    }),
    opt("tls_cert_file", None, true, |c, v| {
        c.tls_cert_file = value::opt_string(v).map(PathBuf::from);
        Ok(())
    }),
    opt("tls_key_file", None, true, |c, v| {
        c.tls_key_file = value::opt_string(v).map(PathBuf::from);
        Ok(())
    }),
    opt("enable_auto_tls", None, true, |c, v| {
        c.enable_auto_tls = value::boolean(v)?;
        Ok(())
    }),
    opt("auto_tls_allowed_clock_skew", None, true, |c, v| {
        c.auto_tls_allowed_clock_skew = value::seconds(v)?;
        Ok(())
    }),
    opt("debug", Some("ipa-debug"), true, |c, v| {
        c.debug = value::boolean(v)?;
        Ok(())
    }),
    // Upstream IPA removed this kernel parameter in 2021; ira keeps it for development.
    opt("standalone", Some("ipa-standalone"), true, |c, v| {
        c.standalone = value::boolean(v)?;
        Ok(())
    }),
    opt("collect_lldp", Some("ipa-collect-lldp"), true, |c, v| {
        c.collect_lldp = value::boolean(v)?;
        Ok(())
    }),
    opt("lldp_timeout", Some("ipa-lldp-timeout"), true, |c, v| {
        c.lldp_timeout = value::seconds(v)?;
        Ok(())
    }),
    opt(
        "enable_vlan_interfaces",
        Some("ipa-enable-vlan-interfaces"),
        true,
        |c, v| {
            c.enable_vlan_interfaces = value::list(v);
            Ok(())
        },
    ),
    opt("ntp_server", Some("ipa-ntp-server"), true, |c, v| {
        c.ntp_server = value::opt_string(v);
        Ok(())
    }),
    opt(
        "image_download_connection_timeout",
        Some("ipa-image-download-connection-timeout"),
        true,
        |c, v| {
            c.image_download_connection_timeout = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "image_download_connection_retries",
        Some("ipa-image-download-connection-retries"),
        true,
        |c, v| {
            c.image_download_connection_retries = value::count(v)?;
            Ok(())
        },
    ),
    opt(
        "image_download_connection_retry_interval",
        Some("ipa-image-download-connection-retry-interval"),
        true,
        |c, v| {
            c.image_download_connection_retry_interval = value::seconds(v)?;
            Ok(())
        },
    ),
    opt(
        "ignore_bootloader_failure",
        Some("ipa-ignore-bootloader-failure"),
        true,
        |c, v| {
            c.ignore_bootloader_failure = Some(value::boolean(v)?);
            Ok(())
        },
    ),
    opt(
        "inject_files_priority",
        Some("ipa-inject-files-priority"),
        true,
        |c, v| {
            c.inject_files_priority = value::int_in_range(v, 0, 99, "an integer from 0 to 99")?;
            Ok(())
        },
    ),
    opt(
        "guard_special_filesystems",
        Some("ipa-guard-special-filesystems"),
        true,
        |c, v| {
            c.guard_special_filesystems = value::boolean(v)?;
            Ok(())
        },
    ),
    opt(
        "nvme_erase_method",
        Some("ipa-nvme-erase-method"),
        true,
        |c, v| {
            c.nvme_erase_method = value::choice(
                v,
                &super::NVME_ERASE_METHODS,
                "format, sanitize, sanitize_crypto, sanitize_block or sanitize_overwrite",
            )?;
            Ok(())
        },
    ),
    opt(
        "hardware_managers_dir",
        Some("ipa-hardware-managers-dir"),
        true,
        |c, v| {
            c.hardware_managers_dir = value::absolute_path(v)?;
            Ok(())
        },
    ),
    opt("bootif", Some("BOOTIF"), false, |c, v| {
        c.bootif = value::opt_string(v);
        Ok(())
    }),
    opt("boot_method", Some("boot_method"), false, |c, v| {
        c.boot_method = value::opt_string(v);
        Ok(())
    }),
];

/// Extra file spellings: oslo.service keeps the static TLS files in `[ssl]`.
/// `[DEFAULT]` wins when both are given.
static FILE_ALIASES: &[(&str, &str, &str)] = &[
    ("tls_cert_file", "ssl", "cert_file"),
    ("tls_key_file", "ssl", "key_file"),
    ("use_mdns", "mdns", "use_mdns"),
];

/// Kernel parameter names compare with underscores read as dashes, as the kernel
/// itself does for its own parameters (`ipa_api_url` = `ipa-api-url`).
fn normalize_kernel(key: &str) -> String {
    key.replace('_', "-")
}

/// Legacy kernel spellings and the parameter they stand for; the canonical spelling
/// wins over a legacy one wherever each appears (IPA: `ipa-lldp-timeout` then `lldp-timeout`).
fn translate_legacy_kernel(normalized: &str) -> Option<&'static str> {
    match normalized {
        "lldp-timeout" => Some("ipa-lldp-timeout"),
        _ => None,
    }
}

/// Parses `text` into `config` through `opt`, naming `option` and `origin` on error.
fn set(
    config: &mut Config,
    opt: &Opt,
    option: &str,
    origin: Origin,
    text: &str,
) -> Result<(), ConfigError> {
    (opt.set)(config, text).map_err(|invalid| match invalid {
        Invalid::Expected(expected) => ConfigError::Invalid {
            option: option.to_owned(),
            origin,
            value: text.to_owned(),
            expected,
        },
        Invalid::Mdns => ConfigError::MdnsUnsupported {
            option: option.to_owned(),
            origin,
        },
    })
}

/// Applies the file's `[DEFAULT]` options (and their `[ssl]` aliases).
fn apply_file(config: &mut Config, file: &IniFile) -> Result<(), ConfigError> {
    for (name, section, key) in FILE_ALIASES {
        if let (Some(opt), Some(text)) = (find(name), file.get(section, key)) {
            set(
                config,
                opt,
                &format!("[{section}] {key}"),
                Origin::ConfigFile,
                text,
            )?;
        }
    }
    for opt in OPTIONS.iter().filter(|o| o.in_file) {
        if let Some(text) = file.get("DEFAULT", opt.name) {
            set(config, opt, opt.name, Origin::ConfigFile, text)?;
        }
    }
    Ok(())
}

/// Applies the known parameters of a kernel command line (or `parameters.txt`) text;
/// every other key is someone else's (console=, root=, ...) and is ignored.
fn apply_kernel(config: &mut Config, text: &str, origin: Origin) -> Result<(), ConfigError> {
    let index: HashMap<String, usize> = OPTIONS
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.kernel.map(|k| (normalize_kernel(k), i)))
        .collect();

    // Option index -> (value, came from a legacy spelling); later tokens win.
    let mut chosen: BTreeMap<usize, (&str, bool)> = BTreeMap::new();
    for (key, text) in cmdline::parse_pairs(text) {
        let normalized = normalize_kernel(key);
        let (canonical, legacy) = match translate_legacy_kernel(&normalized) {
            Some(c) => (c.to_owned(), true),
            None => (normalized, false),
        };
        let Some(&i) = index.get(&canonical) else {
            continue;
        };
        if legacy && matches!(chosen.get(&i), Some((_, false))) {
            continue;
        }
        chosen.insert(i, (text, legacy));
    }

    for (i, (text, _)) in chosen {
        let opt = &OPTIONS[i];
        let option = opt.kernel.unwrap_or(opt.name);
        set(config, opt, option, origin, text)?;
    }
    Ok(())
}

/// Applies the flags that were given.
fn apply_flags(config: &mut Config, flags: &Flags) -> Result<(), ConfigError> {
    for (name, text) in flags.option_values() {
        // Every name Flags lists is a row of OPTIONS (checked by a unit test).
        if let Some(opt) = find(name) {
            set(config, opt, &flag_name(name), Origin::Flag, &text)?;
        }
    }
    if let Some(globs) = &flags.device_allowlist {
        config.device_allowlist = value::list(globs);
    }
    if let Some(root) = &flags.sysroot {
        config.sysroot = root.clone();
    }
    if flags.no_power_off {
        config.no_power_off = true;
    }
    Ok(())
}

/// The row of `name`.
fn find(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// Sets option `name` (its config-file name) to `text`, as a source of `origin` would:
/// the mDNS announcement's overrides.
pub fn set_option(
    config: &mut Config,
    name: &str,
    origin: Origin,
    text: &str,
) -> Result<(), ConfigError> {
    let opt = find(name).ok_or_else(|| ConfigError::Invalid {
        option: name.to_owned(),
        origin,
        value: text.to_owned(),
        expected: "a known option",
    })?;
    set(config, opt, name, origin, text)
}

/// Every kernel parameter ira reads, canonical spelling, in table order.
pub fn kernel_parameters() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().filter_map(|o| o.kernel)
}

/// Every `[DEFAULT]` option name ira reads from the config file, in table order.
pub fn file_options() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().filter(|o| o.in_file).map(|o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_flag_option_is_in_the_table() {
        let flags = Flags {
            api_url: Some(String::new()),
            listen_host: Some(String::new()),
            listen_port: Some(String::new()),
            advertise_host: Some(String::new()),
            advertise_port: Some(String::new()),
            advertise_protocol: Some(String::new()),
            inspection_callback_url: Some(String::new()),
            inspection_collectors: Some(String::new()),
            hardware_managers_dir: Some(String::new()),
            lookup_timeout: Some(String::new()),
            lookup_interval: Some(String::new()),
            network_interface: Some(String::new()),
            global_request_id: Some(String::new()),
            standalone: true,
            insecure: true,
            debug: true,
            ..Flags::default()
        };
        for (name, _) in flags.option_values() {
            assert!(find(name).is_some(), "{name} has no row");
        }
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<_> = OPTIONS.iter().map(|o| o.name).collect();
        assert_eq!(names.len(), OPTIONS.len());
        let kernel: HashSet<_> = kernel_parameters().map(normalize_kernel).collect();
        assert_eq!(kernel.len(), kernel_parameters().count());
        for (name, _, _) in FILE_ALIASES {
            assert!(find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn legacy_lldp_timeout_loses_to_canonical_in_any_order() {
        for line in [
            "lldp-timeout=5 ipa-lldp-timeout=7",
            "ipa-lldp-timeout=7 lldp-timeout=5",
        ] {
            let c = resolve(&Flags::default(), line, None).unwrap();
            assert_eq!(c.lldp_timeout.as_secs(), 7, "{line}");
        }
        let c = resolve(&Flags::default(), "lldp_timeout=5", None).unwrap();
        assert_eq!(c.lldp_timeout.as_secs(), 5);
    }

    #[test]
    fn underscore_kernel_spelling_is_accepted() {
        let c = resolve(
            &Flags::default(),
            "ipa_listen_port=1234 boot-method=vmedia",
            None,
        )
        .unwrap();
        assert_eq!(c.listen_port, 1234);
        assert_eq!(c.boot_method.as_deref(), Some("vmedia"));
    }

    #[test]
    fn listen_tls_needs_both_files() {
        let err = resolve(
            &Flags::default(),
            "",
            Some("[DEFAULT]\nlisten_tls = true\n"),
        );
        assert_eq!(err, Err(ConfigError::ListenTlsWithoutFiles));
        let c = resolve(
            &Flags::default(),
            "",
            Some("[DEFAULT]\nlisten_tls = true\n[ssl]\ncert_file = /c\nkey_file = /k\n"),
        )
        .unwrap();
        assert!(c.listen_tls);
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/c")));
        assert_eq!(c.tls_key_file, Some(PathBuf::from("/k")));
    }

    #[test]
    fn default_section_beats_ssl_alias() {
        let c = resolve(
            &Flags::default(),
            "",
            Some("[DEFAULT]\ntls_cert_file = /a\n[ssl]\ncert_file = /b\n"),
        )
        .unwrap();
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/a")));
    }
}
