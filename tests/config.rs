//! Configuration: precedence of flags, kernel command line, config file and defaults;
//! every kernel parameter wired to its field; bad values named in one-line errors; and
//! the `ira` binary's exit codes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use clap::Parser;
use ira::config::cmdline::{parse_pairs, KernelParams};
use ira::config::{resolve, resolve_sources, Config, ConfigError, Flags, Origin, Sources};
use proptest::prelude::*;

fn flags(args: &[&str]) -> Flags {
    Flags::try_parse_from(std::iter::once("ira").chain(args.iter().copied()))
        .expect("test flags parse")
}

fn no_flags() -> Flags {
    Flags::default()
}

// ---------------------------------------------------------------------------------
// Precedence

/// One option seen through its three sources, with a distinct value in each.
struct Precedence {
    /// `--flag` arguments giving the flag value.
    flag: &'static [&'static str],
    /// `key=value` kernel token.
    kernel: &'static str,
    /// `name = value` line for `[DEFAULT]`.
    file: &'static str,
    /// The option rendered as text.
    get: fn(&Config) -> String,
    /// Expected rendering when the flag, the kernel, the file or nothing sets it.
    want: [&'static str; 4],
}

const PRECEDENCE: &[Precedence] = &[
    Precedence {
        flag: &["--listen-port", "1001"],
        kernel: "ipa-listen-port=1002",
        file: "listen_port = 1003",
        get: |c| c.listen_port.to_string(),
        want: ["1001", "1002", "1003", "9999"],
    },
    Precedence {
        flag: &["--lookup-timeout", "11"],
        kernel: "ipa-lookup-timeout=12.5",
        file: "lookup_timeout = 13",
        get: |c| format!("{:?}", c.lookup_timeout),
        want: ["11s", "12.5s", "13s", "600s"],
    },
    Precedence {
        flag: &["--api-url", "http://flag:6385/"],
        kernel: "ipa-api-url=http://kernel:6385",
        file: "api_url = https://file:6385//",
        get: |c| c.api_urls.join(","),
        want: [
            "http://flag:6385",
            "http://kernel:6385",
            "https://file:6385",
            "",
        ],
    },
    Precedence {
        flag: &["--advertise-host", "flag.example"],
        kernel: "ipa-advertise-host=kernel.example",
        file: "advertise_host = file.example",
        get: |c| format!("{:?}", c.advertise_host),
        want: [
            "Some(\"flag.example\")",
            "Some(\"kernel.example\")",
            "Some(\"file.example\")",
            "None",
        ],
    },
    // Switch flags can only say "true", so the kernel says false and the file true:
    // every layer still shows through.
    Precedence {
        flag: &["--insecure"],
        kernel: "ipa-insecure=0",
        file: "insecure = yes",
        get: |c| c.insecure.to_string(),
        want: ["true", "false", "true", "false"],
    },
    Precedence {
        flag: &["--debug"],
        kernel: "ipa-debug=off",
        file: "debug = True",
        get: |c| c.debug.to_string(),
        want: ["true", "false", "true", "false"],
    },
    Precedence {
        flag: &["--advertise-protocol", "https"],
        kernel: "ipa-advertise-protocol=http",
        file: "advertise_protocol = https",
        get: |c| c.advertise_protocol.clone(),
        want: ["https", "http", "https", "http"],
    },
    Precedence {
        flag: &["--inspection-collectors", "a,b"],
        kernel: "ipa-inspection-collectors=c",
        file: "inspection_collectors = d, e",
        get: |c| c.inspection_collectors.join("+"),
        want: ["a+b", "c", "d+e", ""],
    },
    Precedence {
        flag: &["--hardware-managers-dir", "/f"],
        kernel: "ipa-hardware-managers-dir=/k",
        file: "hardware_managers_dir = /c",
        get: |c| c.hardware_managers_dir.display().to_string(),
        want: ["/f", "/k", "/c", "/usr/lib/ira/hardware-managers.d"],
    },
];

#[test]
fn flag_beats_kernel_beats_file_beats_default() {
    for (row, case) in PRECEDENCE.iter().enumerate() {
        for mask in 0u8..8 {
            let (with_flag, with_kernel, with_file) = (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0);
            let f = if with_flag {
                flags(case.flag)
            } else {
                no_flags()
            };
            let cmdline = if with_kernel {
                format!("quiet console=ttyS0 {} root=/dev/ram0", case.kernel)
            } else {
                "quiet".to_owned()
            };
            let file = with_file.then(|| format!("[DEFAULT]\n{}\n", case.file));
            let config = resolve(&f, &cmdline, file.as_deref())
                .unwrap_or_else(|e| panic!("row {row} mask {mask}: {e}"));
            let winner = if with_flag {
                0
            } else if with_kernel {
                1
            } else if with_file {
                2
            } else {
                3
            };
            assert_eq!(
                (case.get)(&config),
                case.want[winner],
                "row {row} (flag {with_flag}, kernel {with_kernel}, file {with_file})"
            );
        }
    }
}

#[test]
fn nothing_given_is_the_default() {
    assert_eq!(resolve(&no_flags(), "", None), Ok(Config::default()));
    assert_eq!(resolve(&no_flags(), "", Some("")), Ok(Config::default()));
}

#[test]
fn unrelated_kernel_parameters_are_ignored() {
    let line = "BOOT_IMAGE=/vmlinuz root=UUID=1234 ro quiet console=tty0 \
                console=ttyS0,115200n8 ipa-unknown-option=1 nofb nomodeset vga=normal \
                rootdelay=5 systemd.journald.forward_to_console=yes";
    assert_eq!(resolve(&no_flags(), line, None), Ok(Config::default()));
}

#[test]
fn unknown_file_options_are_ignored() {
    let file = "[DEFAULT]\nlog_file = /var/log/ipa.log\nuse_stderr = true\n\
                [mdns]\ninterfaces = eth0\n[metrics]\nbackend = noop\n";
    assert_eq!(resolve(&no_flags(), "", Some(file)), Ok(Config::default()));
}

#[test]
fn later_kernel_duplicate_wins() {
    let c = resolve(&no_flags(), "ipa-listen-port=1 ipa-listen-port=2", None).unwrap();
    assert_eq!(c.listen_port, 2);
    let c = resolve(&no_flags(), "ipa-listen-port=1 ipa_listen_port=3", None).unwrap();
    assert_eq!(c.listen_port, 3);
}

// ---------------------------------------------------------------------------------
// Every kernel parameter sets its field; the file's name sets the same field.

/// (kernel parameter, config-file name, value, check on the resolved config).
type Wiring = (
    &'static str,
    Option<&'static str>,
    &'static str,
    fn(&Config) -> bool,
);

const WIRING: &[Wiring] = &[
    (
        "ipa-api-url",
        Some("api_url"),
        "http://a:6385/,https://b/",
        |c| c.api_urls == ["http://a:6385", "https://b"],
    ),
    (
        "ipa-inspection-callback-url",
        Some("inspection_callback_url"),
        "http://i:5050/v1/continue",
        |c| c.inspection_callback_url.as_deref() == Some("http://i:5050/v1/continue"),
    ),
    (
        "ipa-inspection-collectors",
        Some("inspection_collectors"),
        "default,logs,pci-devices",
        |c| c.inspection_collectors == ["default", "logs", "pci-devices"],
    ),
    (
        "ipa-inspection-dhcp-wait-timeout",
        Some("inspection_dhcp_wait_timeout"),
        "5",
        |c| c.inspection_dhcp_wait_timeout == Duration::from_secs(5),
    ),
    (
        "ipa-inspection-dhcp-all-interfaces",
        Some("inspection_dhcp_all_interfaces"),
        "yes",
        |c| c.inspection_dhcp_all_interfaces,
    ),
    ("ipa-listen-host", Some("listen_host"), "127.0.0.1", |c| {
        c.listen_host == Some(IpAddr::from([127, 0, 0, 1]))
    }),
    ("ipa-listen-port", Some("listen_port"), "0", |c| {
        c.listen_port == 0
    }),
    (
        "ipa-advertise-host",
        Some("advertise_host"),
        "10.0.0.9",
        |c| c.advertise_host.as_deref() == Some("10.0.0.9"),
    ),
    ("ipa-advertise-port", Some("advertise_port"), "443", |c| {
        c.advertise_port == 443
    }),
    (
        "ipa-advertise-protocol",
        Some("advertise_protocol"),
        "HTTPS",
        |c| c.advertise_protocol == "https",
    ),
    (
        "ipa-network-interface",
        Some("network_interface"),
        "eth1",
        |c| c.network_interface.as_deref() == Some("eth1"),
    ),
    (
        "ipa-ip-lookup-attempts",
        Some("ip_lookup_attempts"),
        "2",
        |c| c.ip_lookup_attempts == 2,
    ),
    (
        "ipa-ip-lookup-timeout",
        Some("ip_lookup_sleep"),
        "0.01",
        |c| c.ip_lookup_sleep == Duration::from_millis(10),
    ),
    ("ipa-lookup-timeout", Some("lookup_timeout"), "0.5", |c| {
        c.lookup_timeout == Duration::from_millis(500)
    }),
    (
        "ipa-lookup-interval",
        Some("lookup_interval"),
        "0.001",
        |c| c.lookup_interval == Duration::from_millis(1),
    ),
    (
        "ipa-hardware-initialization-delay",
        Some("hardware_initialization_delay"),
        "4",
        |c| c.hardware_initialization_delay == Duration::from_secs(4),
    ),
    (
        "ipa-disk-wait-attempts",
        Some("disk_wait_attempts"),
        "0",
        |c| c.disk_wait_attempts == 0,
    ),
    ("ipa-disk-wait-delay", Some("disk_wait_delay"), "1.5", |c| {
        c.disk_wait_delay == Duration::from_millis(1500)
    }),
    ("ipa-insecure", Some("insecure"), "1", |c| c.insecure),
    ("ipa-agent-token", Some("agent_token"), "tok3n", |c| {
        c.agent_token.as_deref() == Some("tok3n")
    }),
    (
        "ipa-global-request-id",
        Some("global_request_id"),
        "req-5c4a2e8e-3b8c-4e44-9a67-2b0a1f8c9d10",
        |c| c.global_request_id.as_deref() == Some("req-5c4a2e8e-3b8c-4e44-9a67-2b0a1f8c9d10"),
    ),
    (
        "ipa-ironic-api-version",
        Some("ironic_api_version"),
        "1.68",
        |c| c.ironic_api_version == Some((1, 68)),
    ),
    (
        "ipa-http-request-timeout",
        Some("http_request_timeout"),
        "7",
        |c| c.http_request_timeout == Duration::from_secs(7),
    ),
    ("ipa-tls-min-version", Some("tls_min_version"), "1.3", |c| {
        c.tls_min_version == "1.3"
    }),
    (
        "ipa-tls-certificate-curve",
        Some("tls_certificate_curve"),
        "p521",
        |c| c.tls_certificate_curve == "p521",
    ),
    ("ipa-debug", Some("debug"), "yes", |c| c.debug),
    ("ipa-standalone", Some("standalone"), "true", |c| {
        c.standalone
    }),
    ("ipa-use-mdns", Some("use_mdns"), "true", |c| c.use_mdns),
    ("ipa-collect-lldp", Some("collect_lldp"), "on", |c| {
        c.collect_lldp
    }),
    ("ipa-lldp-timeout", Some("lldp_timeout"), "2.5", |c| {
        c.lldp_timeout == Duration::from_millis(2500)
    }),
    (
        "ipa-enable-vlan-interfaces",
        Some("enable_vlan_interfaces"),
        "eth0.100,eth1",
        |c| c.enable_vlan_interfaces == ["eth0.100", "eth1"],
    ),
    ("ipa-ntp-server", Some("ntp_server"), "10.0.0.1", |c| {
        c.ntp_server.as_deref() == Some("10.0.0.1")
    }),
    (
        "ipa-image-download-connection-timeout",
        Some("image_download_connection_timeout"),
        "15",
        |c| c.image_download_connection_timeout == Duration::from_secs(15),
    ),
    (
        "ipa-image-download-connection-retries",
        Some("image_download_connection_retries"),
        "3",
        |c| c.image_download_connection_retries == 3,
    ),
    (
        "ipa-image-download-connection-retry-interval",
        Some("image_download_connection_retry_interval"),
        "0.2",
        |c| c.image_download_connection_retry_interval == Duration::from_millis(200),
    ),
    (
        "ipa-ignore-bootloader-failure",
        Some("ignore_bootloader_failure"),
        "false",
        |c| c.ignore_bootloader_failure == Some(false),
    ),
    (
        "ipa-inject-files-priority",
        Some("inject_files_priority"),
        "42",
        |c| c.inject_files_priority == 42,
    ),
    (
        "ipa-guard-special-filesystems",
        Some("guard_special_filesystems"),
        "0",
        |c| !c.guard_special_filesystems,
    ),
    (
        "ipa-nvme-erase-method",
        Some("nvme_erase_method"),
        "sanitize_crypto",
        |c| c.nvme_erase_method == "sanitize_crypto",
    ),
    (
        "ipa-hardware-managers-dir",
        Some("hardware_managers_dir"),
        "/opt/managers",
        |c| c.hardware_managers_dir == std::path::Path::new("/opt/managers"),
    ),
    ("BOOTIF", None, "01-52-54-00-12-34-56", |c| {
        c.bootif.as_deref() == Some("01-52-54-00-12-34-56")
    }),
    ("boot_method", None, "vmedia", |c| {
        c.boot_method.as_deref() == Some("vmedia")
    }),
];

#[test]
fn every_kernel_parameter_sets_its_field() {
    for (kernel, _, value, check) in WIRING {
        let config = resolve(&no_flags(), &format!("{kernel}={value}"), None)
            .unwrap_or_else(|e| panic!("{kernel}: {e}"));
        assert!(check(&config), "{kernel}={value} did not land");
        assert!(
            !check(&Config::default()),
            "{kernel}: test value equals the default"
        );
    }
}

#[test]
fn every_file_option_sets_the_same_field() {
    for (kernel, file, value, check) in WIRING {
        let Some(name) = file else { continue };
        let text = format!("[DEFAULT]\n{name} = {value}\n");
        let config =
            resolve(&no_flags(), "", Some(&text)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            check(&config),
            "{name} = {value} (for {kernel}) did not land"
        );
    }
}

#[test]
fn wiring_table_covers_every_kernel_parameter_ira_reads() {
    let tested: Vec<&str> = WIRING.iter().map(|w| w.0).collect();
    for name in ira::config::resolve::kernel_parameters() {
        assert!(tested.contains(&name), "{name} has no wiring test");
    }
}

#[test]
fn kernel_parameters_are_not_read_from_the_file() {
    // BOOTIF and boot_method describe this boot; a file cannot set them.
    let c = resolve(
        &no_flags(),
        "",
        Some("[DEFAULT]\nbootif = x\nboot_method = vmedia\n"),
    );
    assert_eq!(c, Ok(Config::default()));
}

#[test]
fn file_only_options() {
    let text = "[DEFAULT]\ncafile = /etc/ca.pem\nenable_auto_tls = false\n\
                auto_tls_allowed_clock_skew = 60\nlisten_tls = 1\n\
                tls_cert_file = /c.pem\ntls_key_file = /k.pem\n";
    let c = resolve(&no_flags(), "", Some(text)).unwrap();
    assert_eq!(c.cafile, Some(PathBuf::from("/etc/ca.pem")));
    assert!(!c.enable_auto_tls);
    assert_eq!(c.auto_tls_allowed_clock_skew, Duration::from_secs(60));
    assert!(c.listen_tls);
    assert_eq!(c.tls_cert_file, Some(PathBuf::from("/c.pem")));
    assert_eq!(c.tls_key_file, Some(PathBuf::from("/k.pem")));
    // Not settable from the kernel command line (IPA keeps TLS files on disk only).
    let c = resolve(
        &no_flags(),
        "ipa-cafile=/x listen_tls=1 ipa-listen-tls=1",
        None,
    )
    .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn ira_flags_set_their_fields() {
    let c = resolve(
        &flags(&[
            "--sysroot",
            "/tmp/fixture",
            "--device-allowlist",
            "/dev/loop7, /dev/vd*",
            "--no-power-off",
            "--standalone",
            "--network-interface",
            "eth9",
            "--global-request-id",
            "req-1",
            "--listen-host",
            "::1",
            "--advertise-port",
            "8443",
            "--inspection-callback-url",
            "https://i/v1/continue",
            "--lookup-interval",
            "0.05",
        ]),
        "",
        None,
    )
    .unwrap();
    assert_eq!(c.sysroot, PathBuf::from("/tmp/fixture"));
    assert_eq!(c.device_allowlist, ["/dev/loop7", "/dev/vd*"]);
    assert!(c.no_power_off);
    assert!(c.standalone);
    assert_eq!(c.network_interface.as_deref(), Some("eth9"));
    assert_eq!(c.global_request_id.as_deref(), Some("req-1"));
    assert_eq!(c.listen_host, Some("::1".parse().unwrap()));
    assert_eq!(c.advertise_port, 8443);
    assert_eq!(
        c.inspection_callback_url.as_deref(),
        Some("https://i/v1/continue")
    );
    assert_eq!(c.lookup_interval, Duration::from_millis(50));
}

// ---------------------------------------------------------------------------------
// Values

#[test]
fn api_urls_comma_separated_and_trailing_slashes_stripped() {
    let cases: &[(&str, &[&str])] = &[
        ("http://10.0.0.1:6385", &["http://10.0.0.1:6385"]),
        ("http://10.0.0.1:6385/", &["http://10.0.0.1:6385"]),
        (
            "https://ironic.example/baremetal///",
            &["https://ironic.example/baremetal"],
        ),
        (
            "http://a:6385/,https://b:6385,http://[fd00::1]:6385/",
            &["http://a:6385", "https://b:6385", "http://[fd00::1]:6385"],
        ),
        ("http://a,,http://b", &["http://a", "http://b"]),
    ];
    for (value, want) in cases {
        let c = resolve(&no_flags(), &format!("ipa-api-url={value}"), None).unwrap();
        assert_eq!(c.api_urls, *want, "{value}");
    }
}

#[test]
fn mdns_alone_asks_for_discovery_and_is_refused_elsewhere() {
    let c = resolve(&no_flags(), "ipa-api-url=mdns", None).unwrap();
    assert!(c.api_url_mdns && c.api_urls.is_empty());
    let c = resolve(&flags(&["--api-url", "MDNS"]), "ipa-api-url=http://a", None).unwrap();
    assert!(
        c.api_url_mdns && c.api_urls.is_empty(),
        "the flag wins, any case"
    );
    let c = resolve(&flags(&["--api-url", "http://b"]), "ipa-api-url=mdns", None).unwrap();
    assert!(!c.api_url_mdns && c.api_urls == ["http://b"]);
    // IPA's config file has it in its own section.
    let c = resolve(&no_flags(), "", Some("[mdns]\nuse_mdns = true\n")).unwrap();
    assert!(c.use_mdns && !c.api_url_mdns);
    let err = resolve(&no_flags(), "ipa-api-url=http://a,mdns", None).unwrap_err();
    assert_eq!(
        err,
        ConfigError::MdnsUnsupported {
            option: "ipa-api-url".to_owned(),
            origin: Origin::KernelCmdline
        }
    );
    assert!(err.to_string().contains("mdns"), "{err}");
    let err = resolve(&flags(&["--inspection-callback-url", "mdns"]), "", None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--inspection-callback-url (command-line flag)"),
        "{err}"
    );
}

#[test]
fn booleans_in_every_spelling() {
    let truthy = ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON"];
    let falsy = ["0", "false", "False", "no", "NO", "off", "Off"];
    for (param, get) in [
        (
            "ipa-insecure",
            (|c: &Config| c.insecure) as fn(&Config) -> bool,
        ),
        ("ipa-debug", |c| c.debug),
        ("ipa-collect-lldp", |c| c.collect_lldp),
        ("ipa-guard-special-filesystems", |c| {
            c.guard_special_filesystems
        }),
    ] {
        for v in truthy {
            let c = resolve(&no_flags(), &format!("{param}={v}"), None).unwrap();
            assert!(get(&c), "{param}={v}");
        }
        for v in falsy {
            let c = resolve(&no_flags(), &format!("{param}={v}"), None).unwrap();
            assert!(!get(&c), "{param}={v}");
        }
    }
}

#[test]
fn bootif_is_kept_raw() {
    let c = resolve(
        &no_flags(),
        "initrd=x BOOTIF=01-52-54-00-aa-bb-cc ipa-api-url=http://a",
        None,
    )
    .unwrap();
    assert_eq!(c.bootif.as_deref(), Some("01-52-54-00-aa-bb-cc"));
    let c = resolve(&no_flags(), "BOOTIF=52:54:00:aa:bb:cc", None).unwrap();
    assert_eq!(c.bootif.as_deref(), Some("52:54:00:aa:bb:cc"));
    // The kernel name is case-sensitive: `bootif` is some other parameter.
    let c = resolve(&no_flags(), "bootif=52:54:00:aa:bb:cc", None).unwrap();
    assert_eq!(c.bootif, None);
}

#[test]
fn vmedia_parameters_override_the_kernel_command_line() {
    let params = "ipa-api-url=http://vmedia:6385 ipa-agent-token=t0k BOOTIF=01-aa-bb-cc-dd-ee-ff";
    let cmdline = "boot_method=vmedia ipa-api-url=http://cmdline:6385 ipa-listen-port=1234";
    let c = resolve_sources(
        &no_flags(),
        &Sources {
            cmdline,
            vmedia_parameters: Some(params),
            file: Some("[DEFAULT]\nlisten_port = 4321\nntp_server = file-ntp\n"),
            dir_files: &[],
        },
    )
    .unwrap();
    assert_eq!(c.api_urls, ["http://vmedia:6385"]);
    assert_eq!(c.agent_token.as_deref(), Some("t0k"));
    assert_eq!(c.bootif.as_deref(), Some("01-aa-bb-cc-dd-ee-ff"));
    assert_eq!(
        c.listen_port, 1234,
        "kernel value not in parameters.txt stays"
    );
    assert_eq!(c.ntp_server.as_deref(), Some("file-ntp"));

    // Flags still win over parameters.txt.
    let c = resolve_sources(
        &flags(&["--api-url", "http://flag"]),
        &Sources {
            cmdline,
            vmedia_parameters: Some(params),
            file: None,
            dir_files: &[],
        },
    )
    .unwrap();
    assert_eq!(c.api_urls, ["http://flag"]);
}

#[test]
fn vmedia_parameters_ignored_without_boot_method_vmedia() {
    for cmdline in [
        "ipa-api-url=http://cmdline",
        "boot_method=pxe ipa-api-url=http://cmdline",
    ] {
        let c = resolve_sources(
            &no_flags(),
            &Sources {
                cmdline,
                vmedia_parameters: Some("ipa-api-url=http://vmedia"),
                file: None,
                dir_files: &[],
            },
        )
        .unwrap();
        assert_eq!(c.api_urls, ["http://cmdline"], "{cmdline}");
    }
}

#[test]
fn bad_vmedia_value_names_its_source() {
    let err = resolve_sources(
        &no_flags(),
        &Sources {
            cmdline: "boot_method=vmedia",
            vmedia_parameters: Some("ipa-listen-port=http"),
            file: None,
            dir_files: &[],
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value \"http\" for ipa-listen-port (virtual media parameters.txt): \
         expected a port number (0-65535)"
    );
}

// ---------------------------------------------------------------------------------
// Errors

/// (kernel parameter, file name, flag, a bad value).
const BAD_VALUES: &[(&str, &str, Option<&str>, &str)] = &[
    ("ipa-api-url", "api_url", Some("--api-url"), "ftp://x"),
    ("ipa-api-url", "api_url", Some("--api-url"), "ironic:6385"),
    (
        "ipa-inspection-callback-url",
        "inspection_callback_url",
        Some("--inspection-callback-url"),
        "inspector",
    ),
    (
        "ipa-inspection-dhcp-wait-timeout",
        "inspection_dhcp_wait_timeout",
        None,
        "soon",
    ),
    (
        "ipa-inspection-dhcp-all-interfaces",
        "inspection_dhcp_all_interfaces",
        None,
        "maybe",
    ),
    (
        "ipa-listen-host",
        "listen_host",
        Some("--listen-host"),
        "not-an-ip",
    ),
    (
        "ipa-listen-port",
        "listen_port",
        Some("--listen-port"),
        "abc",
    ),
    (
        "ipa-listen-port",
        "listen_port",
        Some("--listen-port"),
        "70000",
    ),
    (
        "ipa-advertise-port",
        "advertise_port",
        Some("--advertise-port"),
        "0",
    ),
    (
        "ipa-advertise-protocol",
        "advertise_protocol",
        Some("--advertise-protocol"),
        "ftp",
    ),
    ("ipa-ip-lookup-attempts", "ip_lookup_attempts", None, "0"),
    ("ipa-ip-lookup-timeout", "ip_lookup_sleep", None, "-1"),
    (
        "ipa-lookup-timeout",
        "lookup_timeout",
        Some("--lookup-timeout"),
        "abc",
    ),
    (
        "ipa-lookup-interval",
        "lookup_interval",
        Some("--lookup-interval"),
        "1m",
    ),
    (
        "ipa-hardware-initialization-delay",
        "hardware_initialization_delay",
        None,
        "inf",
    ),
    ("ipa-disk-wait-attempts", "disk_wait_attempts", None, "-3"),
    ("ipa-disk-wait-delay", "disk_wait_delay", None, "NaN"),
    ("ipa-insecure", "insecure", None, "maybe"),
    (
        "ipa-global-request-id",
        "global_request_id",
        Some("--global-request-id"),
        "req\u{7f}x",
    ),
    (
        "ipa-ironic-api-version",
        "ironic_api_version",
        None,
        "latest",
    ),
    (
        "ipa-http-request-timeout",
        "http_request_timeout",
        None,
        "30s",
    ),
    ("ipa-tls-min-version", "tls_min_version", None, "1.1"),
    (
        "ipa-tls-certificate-curve",
        "tls_certificate_curve",
        None,
        "ed25519",
    ),
    ("ipa-debug", "debug", None, "2"),
    ("ipa-standalone", "standalone", None, "y"),
    ("ipa-collect-lldp", "collect_lldp", None, "enabled"),
    ("ipa-lldp-timeout", "lldp_timeout", None, "x"),
    (
        "ipa-image-download-connection-timeout",
        "image_download_connection_timeout",
        None,
        "1h",
    ),
    (
        "ipa-image-download-connection-retries",
        "image_download_connection_retries",
        None,
        "1.5",
    ),
    (
        "ipa-image-download-connection-retry-interval",
        "image_download_connection_retry_interval",
        None,
        "",
    ),
    (
        "ipa-ignore-bootloader-failure",
        "ignore_bootloader_failure",
        None,
        "sometimes",
    ),
    (
        "ipa-inject-files-priority",
        "inject_files_priority",
        None,
        "100",
    ),
    (
        "ipa-inject-files-priority",
        "inject_files_priority",
        None,
        "-1",
    ),
    (
        "ipa-guard-special-filesystems",
        "guard_special_filesystems",
        None,
        "nah",
    ),
    ("ipa-nvme-erase-method", "nvme_erase_method", None, "shred"),
    (
        "ipa-hardware-managers-dir",
        "hardware_managers_dir",
        Some("--hardware-managers-dir"),
        "managers.d",
    ),
];

/// Asserts `err` is an `Invalid` for `option` from `origin` with `value`, on one line.
fn assert_names(err: &ConfigError, option: &str, origin: Origin, value: &str) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    assert_eq!(
        msg.split(": expected ").next().unwrap(),
        format!("invalid value {value:?} for {option} ({origin})"),
        "{msg}"
    );
    match err {
        ConfigError::Invalid {
            option: o,
            origin: s,
            value: v,
            ..
        } => assert_eq!((o.as_str(), *s, v.as_str()), (option, origin, value)),
        other => panic!("not an Invalid error: {other:?}"),
    }
}

#[test]
fn every_bad_kernel_value_is_named() {
    for (kernel, _, _, bad) in BAD_VALUES {
        let err = resolve(&no_flags(), &format!("quiet {kernel}={bad} ro"), None)
            .expect_err(&format!("{kernel}={bad:?} accepted"));
        assert_names(&err, kernel, Origin::KernelCmdline, bad);
    }
}

#[test]
fn every_bad_file_value_is_named() {
    for (_, name, _, bad) in BAD_VALUES {
        let text = format!("[DEFAULT]\n{name} = {bad}\n");
        let err =
            resolve(&no_flags(), "", Some(&text)).expect_err(&format!("{name} = {bad:?} accepted"));
        assert_names(&err, name, Origin::ConfigFile, bad);
    }
}

#[test]
fn every_bad_flag_value_is_named() {
    for (_, _, flag, bad) in BAD_VALUES {
        let Some(flag) = flag else { continue };
        let arg = format!("{flag}={bad}");
        let err = resolve(&flags(&[&arg]), "", None).expect_err(&format!("{arg} accepted"));
        assert_names(&err, flag, Origin::Flag, bad);
    }
}

#[test]
fn error_message_format() {
    let err = resolve(&no_flags(), "ipa-listen-port=abc", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value \"abc\" for ipa-listen-port (kernel command line): \
         expected a port number (0-65535)"
    );
}

#[test]
fn a_bad_value_fails_even_when_a_higher_source_overrides_it() {
    // IPA fails on a bad kernel value whatever else is configured; so do we.
    let err = resolve(&flags(&["--listen-port", "1"]), "ipa-listen-port=abc", None).unwrap_err();
    assert_names(&err, "ipa-listen-port", Origin::KernelCmdline, "abc");
}

#[test]
fn config_file_syntax_error_is_one_line_with_line_number() {
    let err = resolve(&no_flags(), "", Some("[DEFAULT]\nlisten_port 9999\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config file line 2: expected `name = value`"
    );
}

// ---------------------------------------------------------------------------------
// proptest: kernel command lines parse back

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.-]{0,12}"
}

fn value() -> impl Strategy<Value = String> {
    // Anything printable without whitespace, '=' included.
    "[!-~]{0,16}"
}

fn separator() -> impl Strategy<Value = String> {
    "[ \t\n]{1,3}"
}

proptest! {
    #[test]
    fn cmdline_round_trips(
        pairs in prop::collection::vec((key(), value()), 0..12),
        bare in prop::collection::vec("[a-z][a-z0-9.]{0,8}", 0..4),
        seps in prop::collection::vec(separator(), 16),
        lead in "[ \t]{0,2}",
    ) {
        let mut tokens: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Tokens without '=' may sit anywhere and are ignored.
        for (i, b) in bare.iter().enumerate() {
            let at = (i * 3) % (tokens.len() + 1);
            tokens.insert(at, b.clone());
        }
        let mut text = lead;
        for (i, t) in tokens.iter().enumerate() {
            text.push_str(t);
            text.push_str(&seps[i % seps.len()]);
        }

        let got = parse_pairs(&text);
        let want: Vec<(&str, &str)> =
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(&got, &want);

        let mut last = BTreeMap::new();
        for (k, v) in &pairs {
            last.insert(k.as_str(), v.as_str());
        }
        let params = KernelParams::parse(&text);
        prop_assert_eq!(params.len(), last.len());
        for (k, v) in last {
            prop_assert_eq!(params.get(k), Some(v));
        }
    }

    #[test]
    fn resolve_never_panics_on_arbitrary_cmdlines(text in "[ -~\t\n]{0,200}") {
        let _ = resolve(&no_flags(), &text, None);
    }

    #[test]
    fn ports_round_trip_through_the_kernel_line(port: u16) {
        let c = resolve(&no_flags(), &format!("ipa-listen-port={port}"), None).unwrap();
        prop_assert_eq!(c.listen_port, port);
    }
}

// ---------------------------------------------------------------------------------
// The binary

fn ira(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ira"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ira")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn binary_help() {
    let out = ira(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--api-url",
        "--listen-port",
        "--cmdline-file",
        "--config-file",
        "--device-allowlist",
        "--sysroot",
        "--no-power-off",
        "inventory",
    ] {
        assert!(text.contains(needle), "help lacks {needle}:\n{text}");
    }
    assert!(
        !text.contains("--agent-token"),
        "argv must never carry the token"
    );
}

#[test]
fn binary_version() {
    let out = ira(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ira {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn binary_bad_kernel_value_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        "quiet ipa-lookup-timeout=abc ipa-api-url=http://a\n",
    )
    .unwrap();
    let cmdline = cmdline.to_str().unwrap();
    for args in [
        vec!["--cmdline-file", cmdline, "--config-file", "/dev/null"],
        vec![
            "inventory",
            "--cmdline-file",
            cmdline,
            "--config-file",
            "/dev/null",
        ],
    ] {
        let out = ira(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let lines = stderr_lines(&out);
        assert_eq!(
            lines,
            [
                "ira: invalid value \"abc\" for ipa-lookup-timeout (kernel command line): \
              expected a non-negative number of seconds"
            ],
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn binary_bad_flag_and_file_values_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("cmdline");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let conf = dir.path().join("ipa.conf");
    std::fs::write(&conf, "[DEFAULT]\nlisten_port = nine\n").unwrap();
    let bad_syntax = dir.path().join("bad.conf");
    std::fs::write(&bad_syntax, "[DEFAULT]\nagent_token\n").unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--cmdline-file",
                empty,
                "--config-file",
                "/dev/null",
                "--listen-port",
                "x",
            ],
            "--listen-port (command-line flag)",
        ),
        (
            vec![
                "--cmdline-file",
                empty,
                "--config-file",
                conf.to_str().unwrap(),
            ],
            "listen_port (config file)",
        ),
        (
            vec![
                "--cmdline-file",
                empty,
                "--config-file",
                bad_syntax.to_str().unwrap(),
            ],
            "config file line 2",
        ),
        (
            vec![
                "--cmdline-file",
                "/nonexistent/cmdline",
                "--config-file",
                "/dev/null",
            ],
            "/nonexistent/cmdline",
        ),
        (
            vec![
                "--cmdline-file",
                empty,
                "--config-file",
                "/nonexistent/ipa.conf",
            ],
            "/nonexistent/ipa.conf",
        ),
    ];
    for (args, needle) in cases {
        let out = ira(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("ira: "), "{lines:?}");
        assert!(lines[0].contains(needle), "{lines:?} lacks {needle}");
    }
}

#[test]
fn binary_unknown_flag_is_a_usage_error() {
    let out = ira(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = ira(&["--agent-token", "secret"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_dir_files_override_the_file_in_name_order() {
    let c = resolve_sources(
        &no_flags(),
        &Sources {
            cmdline: "ipa-lookup-timeout=5",
            vmedia_parameters: None,
            file: Some("[DEFAULT]\ncafile = /etc/file.pem\nlookup_timeout = 7\nntp_server = a\n"),
            // As Ironic's virtual media puts ironic-tls.conf there, then a later file.
            dir_files: &[
                "[DEFAULT]\ncafile = /etc/ironic-python-agent/ironic.crt\nntp_server = b\n",
                "[DEFAULT]\nntp_server = c\n",
            ],
        },
    )
    .unwrap();
    assert_eq!(
        c.cafile,
        Some(PathBuf::from("/etc/ironic-python-agent/ironic.crt"))
    );
    assert_eq!(c.ntp_server.as_deref(), Some("c"));
    // The kernel command line stays above every file (see resolve.rs).
    assert_eq!(c.lookup_timeout, Duration::from_secs(5));

    let err = resolve_sources(
        &no_flags(),
        &Sources {
            dir_files: &["[DEFAULT]\nlisten_port = many\n"],
            ..Sources::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("listen_port"), "{err}");
}
