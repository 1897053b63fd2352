//! Helpers shared by the integration tests: the fake conductor, free ports, an agent
//! configuration scaled to milliseconds, and one module per kind of helper (agent
//! states, external commands, fixtures, byte-level I/O, loop devices, TLS, the
//! whole-disk deploy harness).
#![allow(dead_code)] // each test binary uses a different subset

pub mod agent;
pub mod blockio;
pub mod cmd;
pub mod fake_conductor;
pub mod fixtures;
pub mod loopdev;
pub mod misbehaving_http;
pub mod netns;
pub mod tls;
pub mod whole_disk;

use std::time::Duration;

use ira::config::Config;

/// A port that was free a moment ago on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A URL on 127.0.0.1 where nothing listens (connections are refused).
pub fn refused_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Agent configuration pointing at `api_url`, with short timeouts and no disks visible.
pub fn test_config(api_urls: Vec<String>) -> Config {
    Config {
        api_urls,
        http_request_timeout: Duration::from_secs(5),
        lookup_timeout: Duration::from_secs(10),
        lookup_interval: Duration::from_millis(5),
        ip_lookup_attempts: 2,
        ip_lookup_sleep: Duration::from_millis(10),
        device_allowlist: vec!["/dev/ira-test-none".to_owned()],
        no_power_off: true,
        // One look for a root disk, no sleep: the host's disks are outside the allow-list.
        disk_wait_attempts: 1,
        inspection_dhcp_wait_timeout: Duration::ZERO,
        ..Config::default()
    }
}
