//! Network behaviour in network namespaces of our own (root needed): VLAN interfaces
//! brought up over netlink and listed in the inventory, and the SNTP client against a
//! real chronyd from Debian's package. The host's interfaces and clock are never touched:
//! the clock setter here records instead of setting.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::netns::NetNs;
use ira::agent::vlans;
use ira::clock::{self, ClockError, ClockSetter};
use ira::inventory::{net, AddrSource, SystemAddrs};
use ira_hw::NetworkInterface;

/// Mounts a sysfs at `dir` from inside the calling thread's network namespace, so its
/// `class/net` shows that namespace's interfaces; unmounted on drop.
struct NsSysfs(PathBuf);

impl NsSysfs {
    fn mount(dir: &Path) -> Self {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(dir).unwrap();
        mount(
            Some("sysfs"),
            dir,
            Some("sysfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .expect("mount sysfs");
        Self(dir.to_path_buf())
    }
}

impl Drop for NsSysfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn listed(root: &Path) -> Vec<NetworkInterface> {
    let addrs = SystemAddrs.addresses().unwrap();
    net::list_interfaces(root, &addrs, &net::SystemNics, None).unwrap()
}

/// Route attributes as sorted `type=hex` strings, the nested IFLA_LINKINFO (18) and
/// IFLA_INFO_DATA (2 inside it) as `type={...}`.
fn attrs(buf: &[u8], nested: &[u16]) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
        let payload = &buf[off + 4..off + len];
        if nested.contains(&kind) {
            out.push(format!("{kind}={{{}}}", attrs(payload, &[2]).join(",")));
        } else {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            out.push(format!("{kind}={hex}"));
        }
        off += (len + 3) & !3;
    }
    out.sort();
    out
}

/// The RTM_NEWLINK request `ip` sends for `args`, read from strace's dump, and whether
/// `ip` succeeded.
fn ip_request(ns: &NetNs, args: &[&str]) -> (Vec<u8>, bool, String) {
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=sendmsg",
            "-e",
            "write=all",
            "ip",
            "-n",
            &ns.name,
        ])
        .args(args)
        .output()
        .expect("strace");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    // Each sendmsg is followed by its hex dump; the RTM_NEWLINK (type 0x10) is the one
    // whose first line starts "10 00" after the length.
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(" * ") {
            messages.push(Vec::new());
        } else if let Some(rest) = line.strip_prefix(" | ") {
            let hex = &rest[7..rest.len().min(7 + 49)];
            messages.last_mut().unwrap().extend(
                hex.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).unwrap()),
            );
        }
    }
    let newlink = messages
        .into_iter()
        .find(|m| m.len() > 16 && u16::from_ne_bytes([m[4], m[5]]) == 0x10)
        .expect("ip sent an RTM_NEWLINK");
    (newlink, out.status.success(), text)
}

#[test]
fn vlan_interfaces_as_ip_link_add_makes_them() {
    let ns = NetNs::new("vlan");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    let (theirs, ip_ok, ip_log) = ip_request(
        &ns,
        &[
            "link", "add", "link", "v0", "name", "v0.5", "type", "vlan", "id", "5",
        ],
    );
    if ip_ok {
        ns.ip(&["link", "del", "v0.5"]);
    }
    let parent_index: u32 = ns
        .ip(&["-o", "link", "show", "v0"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ours = ira::sys::vlan::create_request(parent_index, 5, "v0.5", 1);
    // Same message type and flags (request, ack, create, exclusive), same attributes:
    // IFLA_IFNAME, IFLA_LINK and IFLA_LINKINFO {kind "vlan", data {IFLA_VLAN_ID}}.
    assert_eq!(ours[4..8], theirs[4..8]);
    assert_eq!(attrs(&ours[32..], &[18]), attrs(&theirs[32..], &[18]));
    // ip sets the link up with a second request; ours asks for IFF_UP in this one.
    assert_eq!(ours[24..32], [1, 0, 0, 0, 1, 0, 0, 0]);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (added, again, direct, after, mac) = ns.run(move || {
        let _sys = NsSysfs::mount(&root.join("sys"));
        let mac = std::fs::read_to_string(root.join("sys/class/net/v0/address"))
            .unwrap()
            .trim()
            .to_owned();
        // A veth has no `device` link, so it is no inventory candidate: describe the
        // parent as the inventory describes a NIC.
        let parent: NetworkInterface = serde_json::from_value(serde_json::json!({
            "name": "v0", "mac_address": mac, "ipv4_address": null, "ipv6_address": null,
            "has_carrier": true, "lldp": null, "vendor": null, "product": null,
            "client_id": null, "biosdevname": null, "speed_mbps": null,
            "pci_address": null, "driver": null}))
        .unwrap();
        let plan = vlans::plan(
            &[
                "v0.5".to_owned(),
                format!("{}.6", mac.to_uppercase()),
                "v9.7".to_owned(),
            ],
            std::slice::from_ref(&parent),
            false,
        );
        assert_eq!(plan, [("v0".to_owned(), 5), ("v0".to_owned(), 6)]);
        let added = vlans::bring_up(&plan, std::slice::from_ref(&parent));
        let after = listed(&root);
        let mut known = after.clone();
        known.push(parent);
        let again = vlans::bring_up(&plan, &known);
        // An existing VLAN is only set up again (IPA accepts ip's "exists" too).
        let direct = ira::sys::vlan::add_vlan("v0", 5, "v0.5").map_err(|e| e.to_string());
        (added, again, direct, after, mac)
    });
    assert!(again.is_empty());
    if ip_ok {
        assert_eq!(added, ["v0.5", "v0.6"]);
        let names: Vec<&str> = after.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["v0.5", "v0.6"], "the inventory lists the VLANs");
        assert!(
            after.iter().all(|i| i.mac_address == mac),
            "a VLAN shares its parent's MAC"
        );
        assert_eq!(direct, Ok(()));
        let detail = ns.ip(&["-d", "link", "show", "v0.5"]);
        assert!(detail.contains("vlan protocol 802.1Q id 5"), "{detail}");
        assert!(detail.contains(",UP"), "{detail}");
    } else {
        // A kernel without 802.1Q (CONFIG_VLAN_8021Q unset): ip gets "Unknown device
        // type" (EOPNOTSUPP); so must we, nothing is listed and the agent goes on.
        assert!(ip_log.contains("Unknown device type"), "{ip_log}");
        assert!(added.is_empty());
        assert!(after.is_empty(), "{after:?}");
        assert_eq!(
            direct,
            Err("netlink: EOPNOTSUPP: Operation not supported on transport endpoint".to_owned())
        );
    }
}

/// Records the times it is asked to set: the host's clock stays as it is.
#[derive(Default)]
struct Recorder(Mutex<Vec<SystemTime>>);

impl ClockSetter for Recorder {
    fn set(&self, time: SystemTime) -> Result<(), ClockError> {
        self.0.lock().unwrap().push(time);
        Ok(())
    }
}

const CHRONYD: &str = "/var/cache/ira-tests/chrony/usr/sbin/chronyd";

/// chronyd serving its own clock (stratum 8) on 127.0.0.1:123 of `ns`, never steering
/// any clock (`-x`); killed by its PID on drop.
struct Chronyd(Child);

impl Chronyd {
    fn start(ns: &NetNs, dir: &Path) -> Self {
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow 127.0.0.1\ncmdport 0\npidfile {}\ndriftfile {}\n",
                dir.join("chronyd.pid").display(),
                dir.join("drift").display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, CHRONYD, "-f"])
            .arg(&conf)
            .args(["-d", "-x", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chronyd (tests/setup.sh unpacks it)");
        Self(child)
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        // `ip netns exec` execs chronyd: the child's PID is chronyd's.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn clock_offset_from_a_real_chronyd() {
    let ns = NetNs::new("ntp");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Chronyd::start(&ns, dir.path());
    let (offset, set, elapsed, silent) = ns.run(|| {
        let rec = Recorder::default();
        let addr = clock::resolve("127.0.0.1", clock::NTP_PORT).unwrap();
        let start = Instant::now();
        // chronyd needs a moment to bind; a refused or unanswered try is retried.
        let offset = loop {
            match clock::sync_with(addr, Duration::from_millis(500), &rec) {
                Ok(o) => break o,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("no answer from chronyd: {e}"),
            }
        };
        let set = rec.0.lock().unwrap().clone();
        // Nobody on another port: a timeout, and nothing set.
        let other = std::net::SocketAddr::from(([127, 0, 0, 1], 124));
        let silent = clock::sync_with(other, Duration::from_millis(300), &rec).is_err()
            && rec.0.lock().unwrap().len() == set.len();
        (offset, set, start.elapsed(), silent)
    });
    drop(daemon);
    // chronyd serves this very machine's clock: the offset is the round-trip noise only.
    assert!(offset.abs() < 50_000_000, "offset {offset} ns");
    assert_eq!(set.len(), 1);
    let drift = set[0]
        .duration_since(SystemTime::now())
        .unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_secs(2) + elapsed, "{drift:?}");
    assert!(silent);
}
