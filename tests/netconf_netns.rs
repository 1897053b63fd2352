//! `ira network-data` applies a `network_data.json` inside a network namespace made for
//! the test (a veth pair; `ip netns exec` also gives the process that namespace's
//! /sys), then the namespace's addresses and routes are read back with `ip -j` and the
//! DNS servers from the system root's `etc/resolv.conf`. The namespace is deleted by
//! name when the test ends, pass or fail.
//!
//! The kernel of the machines these tests run on has no bonding or 802.1Q driver, so
//! bonds and VLANs are applied in the VM suite (Debian's kernel in ira's ramdisk); their
//! commands are checked in `netconf::apply`'s unit tests.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("ira-{tag}-{}", std::process::id());
        common::cmd::run("ip", &["netns", "add", &name]);
        Self(name)
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        common::cmd::run("ip", &all)
    }
    /// Adds the veth pair NAME (with MAC) and PEER.
    fn veth(&self, name: &str, mac: &str, peer: &str) {
        self.ip(&[
            "link", "add", name, "address", mac, "type", "veth", "peer", "name", peer,
        ]);
    }
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ip(args)).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `ira network-data --file FILE` inside `ns` with the system root `root`.
fn network_data(ns: &Netns, root: &Path, file: &Path) -> std::process::Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            env!("CARGO_BIN_EXE_ira"),
            "network-data",
        ])
        .args(["--file", file.to_str().unwrap(), "--wait", "0"])
        .args(["--sysroot", root.to_str().unwrap()])
        .output()
        .unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/network_data")
        .join(name)
}

/// `(address/prefix)` of every global address on `dev`.
fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    let v = ns.json(&["-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// `dst via gateway dev` of every route with a gateway.
fn routes(ns: &Netns, family: &str) -> Vec<String> {
    let v = ns.json(&[family, "-j", "route", "show"]);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("gateway").is_some())
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap(),
                r["gateway"].as_str().unwrap(),
                r["dev"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn static_network_data_applied_in_a_namespace() {
    let ns = Netns::new("nd");
    // The NIC the file names by MAC, and one it does not know.
    ns.veth("e0", "52:54:00:12:34:56", "p0");
    ns.veth("e1", "52:54:00:00:00:01", "p1");
    ns.ip(&["link", "set", "p0", "up"]);
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys", root.path().join("sys")).unwrap();

    let out = network_data(&ns, root.path(), &fixture("static.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    assert_eq!(addresses(&ns, "e0"), ["10.0.2.15/24", "fd00:1::15/64"]);
    assert!(
        addresses(&ns, "e1").is_empty(),
        "a NIC the file does not name is left alone"
    );
    assert_eq!(
        routes(&ns, "-4"),
        [
            "default via 10.0.2.2 dev e0",
            "192.168.50.0/23 via 10.0.2.1 dev e0"
        ]
    );
    assert_eq!(routes(&ns, "-6"), ["default via fd00:1::1 dev e0"]);
    let link = ns.json(&["-j", "link", "show", "e0"]);
    assert_eq!(link[0]["mtu"], 1500);
    assert!(link[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap(),
        "nameserver 10.0.2.3\nnameserver 2001:4860:4860::8888\n"
    );
    // The DHCP network and the absent NIC are reported, not configured.
    assert!(
        stderr.contains("ipv4_dhcp") && stderr.contains("no DHCP is run"),
        "{stderr}"
    );

    // A second run (the ramdisk's init, then again) finds everything in place.
    let out = network_data(&ns, root.path(), &fixture("static.json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(addresses(&ns, "e0"), ["10.0.2.15/24", "fd00:1::15/64"]);
}

#[test]
fn bad_or_foreign_network_data_changes_nothing() {
    let ns = Netns::new("ndbad");
    ns.veth("e0", "52:54:00:12:34:56", "p0");
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/sys", root.path().join("sys")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "garbage.json",
            "{\"links\": [",
            "ira: network-data: network_data.json: EOF",
        ),
        (
            "foreign.json",
            r#"{"links":[{"id":"x","type":"phy","ethernet_mac_address":"02:00:00:00:00:09"}],
                "networks":[{"type":"ipv4","link":"x","ip_address":"10.1.1.1","netmask":"255.0.0.0"}]}"#,
            "no link of network_data.json matches a network interface of this machine",
        ),
    ];
    for (name, text, want) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = network_data(&ns, root.path(), &f);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
        assert!(addresses(&ns, "e0").is_empty());
        assert!(!root.path().join("etc/resolv.conf").exists());
    }
    // No file and no virtual media: exit 3, the ramdisk then runs DHCP.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            env!("CARGO_BIN_EXE_ira"),
            "network-data",
            "--wait",
            "0",
        ])
        .args(["--sysroot", root.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
