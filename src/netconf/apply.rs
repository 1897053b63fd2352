//! Carries a [`Plan`] out: the system's `ip` command for links, VLANs, addresses and
//! routes, the bonding driver's sysfs files for bonds, and `etc/resolv.conf` for DNS,
//! all under a root path.
//!
//! Why `ip` and not rtnetlink from Rust: ira's ramdisk has busybox's `ip`, DIB ramdisks
//! have iproute2, and both speak the same subset used here (`link set`, `link add ...
//! type vlan`, `addr add`, `route replace`); bonds are made through sysfs
//! (`bonding_masters`, `bonding/mode`, `bonding/slaves`), which busybox's `ip` cannot
//! do and which needs no netlink attributes. The commands are planned as [`Action`]s
//! first, so tests read them without running anything.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::plan::{LinkStep, Plan};
use crate::inventory::read::under;

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command (`ip ...`, `modprobe ...`).
    Run(Vec<String>),
    /// Load the kernel's VLAN driver unless it is there (built in or loaded).
    VlanDriver,
    /// Create the bond `name` through `sys/class/net/bonding_masters`, loading the
    /// bonding driver first if needed (an existing bond of that name is reused).
    CreateBond(String),
    /// Write `value` to a sysfs file under the root.
    Sysfs(String, String),
    /// Write the DNS servers to `etc/resolv.conf` under the root.
    ResolvConf(Vec<String>),
}

/// Why applying a plan failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output or the reason it could not run.
        message: String,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Runs commands; [`SysRunner`] in production, a recorder in tests.
pub trait CommandRunner {
    /// Runs `argv`; `Err` carries the error output.
    fn run(&self, argv: &[String]) -> Result<(), String>;
}

/// Runs commands as child processes found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysRunner;

impl CommandRunner for SysRunner {
    fn run(&self, argv: &[String]) -> Result<(), String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let out = Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

fn ip(args: &[&str]) -> Action {
    Action::Run(
        std::iter::once("ip")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect(),
    )
}

fn family(v6: bool) -> &'static [&'static str] {
    if v6 {
        &["-6"]
    } else {
        &[]
    }
}

/// The actions for `plan`, in order.
pub fn actions(plan: &Plan) -> Vec<Action> {
    let mut out = Vec::new();
    for step in &plan.links {
        match step {
            LinkStep::Phy {
                name, mtu, master, ..
            } => {
                if let Some(mtu) = mtu {
                    out.push(ip(&["link", "set", name, "mtu", &mtu.to_string()]));
                }
                // The bonding driver refuses a member that is up.
                let state = if master.is_some() { "down" } else { "up" };
                out.push(ip(&["link", "set", name, state]));
            }
            LinkStep::Bond {
                name,
                mode,
                miimon,
                xmit_hash_policy,
                mac,
                mtu,
                members,
            } => {
                out.push(Action::CreateBond(name.clone()));
                let attr = |a: &str| format!("sys/class/net/{name}/bonding/{a}");
                // Mode first: the driver takes it only while the bond has no members.
                out.push(Action::Sysfs(attr("mode"), mode.clone()));
                if let Some(ms) = miimon {
                    out.push(Action::Sysfs(attr("miimon"), ms.to_string()));
                }
                if let Some(policy) = xmit_hash_policy {
                    out.push(Action::Sysfs(attr("xmit_hash_policy"), policy.clone()));
                }
                if let Some(mac) = mac {
                    out.push(ip(&["link", "set", name, "address", mac]));
                }
                for member in members {
                    out.push(Action::Sysfs(attr("slaves"), format!("+{member}")));
                }
                if let Some(mtu) = mtu {
                    out.push(ip(&["link", "set", name, "mtu", &mtu.to_string()]));
                }
                out.push(ip(&["link", "set", name, "up"]));
            }
            LinkStep::Vlan {
                name,
                parent,
                vlan_id,
                mac,
                mtu,
            } => {
                let id = vlan_id.to_string();
                if !out.contains(&Action::VlanDriver) {
                    out.push(Action::VlanDriver);
                }
                out.push(ip(&[
                    "link", "add", "link", parent, "name", name, "type", "vlan", "id", &id,
                ]));
                if let Some(mac) = mac {
                    out.push(ip(&["link", "set", name, "address", mac]));
                }
                if let Some(mtu) = mtu {
                    out.push(ip(&["link", "set", name, "mtu", &mtu.to_string()]));
                }
                out.push(ip(&["link", "set", name, "up"]));
            }
        }
    }
    for a in &plan.addresses {
        let cidr = format!("{}/{}", a.address, a.prefix);
        let mut args: Vec<&str> = family(a.address.is_ipv6()).to_vec();
        args.extend(["addr", "add", &cidr, "dev", &a.link]);
        out.push(ip(&args));
    }
    for r in &plan.routes {
        let dest = if r.prefix == 0 {
            "default".to_owned()
        } else {
            format!("{}/{}", r.destination, r.prefix)
        };
        let gw = r.gateway.map(|g| g.to_string());
        let mut args: Vec<&str> = family(r.destination.is_ipv6()).to_vec();
        args.extend(["route", "replace", &dest]);
        if let Some(gw) = &gw {
            args.extend(["via", gw]);
        }
        args.extend(["dev", &r.link]);
        out.push(ip(&args));
    }
    if !plan.dns.is_empty() {
        out.push(Action::ResolvConf(
            plan.dns.iter().map(ToString::to_string).collect(),
        ));
    }
    out
}

/// Applies `plan` on the machine whose filesystem is at `root` (`/` in production).
pub fn apply(plan: &Plan, root: &Path, runner: &dyn CommandRunner) -> Result<(), ApplyError> {
    for note in &plan.skipped {
        tracing::warn!("network_data.json: skipped {note}");
    }
    for action in actions(plan) {
        tracing::debug!(?action, "network configuration");
        match action {
            Action::Run(argv) => run(runner, &argv)?,
            Action::CreateBond(name) => {
                let masters = under(root, "sys/class/net/bonding_masters");
                if !masters.exists() {
                    load_module(runner, "bonding");
                }
                // Loading the driver may have made a bond0 already.
                if !under(root, &format!("sys/class/net/{name}/bonding")).exists() {
                    write_sysfs(&masters, &format!("+{name}"))?;
                }
            }
            Action::VlanDriver => {
                if !under(root, "proc/net/vlan").exists() {
                    load_module(runner, "8021q");
                }
            }
            Action::Sysfs(rel, value) => write_sysfs(&under(root, &rel), &value)?,
            Action::ResolvConf(servers) => write_resolv_conf(root, &servers)?,
        }
    }
    Ok(())
}

fn run(runner: &dyn CommandRunner, argv: &[String]) -> Result<(), ApplyError> {
    let Err(msg) = runner.run(argv) else {
        return Ok(());
    };
    // An address or VLAN already there (a second run, or the agent after the ramdisk's
    // init) is what was asked for.
    let adds = argv
        .windows(2)
        .any(|w| w[1] == "add" && (w[0] == "addr" || w[0] == "link"));
    if adds && (msg.contains("exists") || msg.contains("already assigned")) {
        tracing::debug!(command = %argv.join(" "), "already configured");
        return Ok(());
    }
    Err(command_error(argv, msg))
}

/// Loads a driver; a failure is only logged, as the driver may be built in, and the
/// command that needs it reports the real error.
fn load_module(runner: &dyn CommandRunner, name: &str) {
    if let Err(msg) = runner.run(&["modprobe".to_owned(), name.to_owned()]) {
        tracing::warn!(module = name, error = %msg, "modprobe failed");
    }
}

fn command_error(argv: &[String], message: String) -> ApplyError {
    ApplyError::Command {
        command: argv.join(" "),
        message,
    }
}

fn write_sysfs(path: &Path, value: &str) -> Result<(), ApplyError> {
    let err = |source| ApplyError::Write {
        path: path.to_path_buf(),
        source,
    };
    // One write(2) per value: sysfs attributes take the whole value in one call.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Writes `etc/resolv.conf` under `root` (replacing it, a symlink included).
fn write_resolv_conf(root: &Path, servers: &[String]) -> Result<(), ApplyError> {
    let path = under(root, "etc/resolv.conf");
    let tmp = under(root, "etc/.resolv.conf.ira");
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ApplyError::Write { path: p, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
    }
    std::fs::write(&tmp, text).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netconf::{plan, NetworkData};
    use std::cell::RefCell;

    const BOND_VLAN: &str = include_str!("../../tests/fixtures/network_data/bond_vlan.json");

    fn bond_plan() -> Plan {
        let ifaces = vec![
            ("eth0".to_owned(), "52:54:00:aa:00:01".to_owned()),
            ("eth1".to_owned(), "52:54:00:aa:00:02".to_owned()),
        ];
        plan(&NetworkData::parse(BOND_VLAN).unwrap(), &ifaces).unwrap()
    }

    fn line(a: &Action) -> String {
        match a {
            Action::Run(argv) => argv.join(" "),
            Action::CreateBond(n) => format!("create bond {n}"),
            Action::VlanDriver => "vlan driver".to_owned(),
            Action::Sysfs(p, v) => format!("{p} < {v}"),
            Action::ResolvConf(s) => format!("resolv.conf {}", s.join(" ")),
        }
    }

    #[test]
    fn bond_vlan_actions_in_order() {
        let got: Vec<String> = actions(&bond_plan()).iter().map(line).collect();
        let want = [
            "ip link set eth0 down",
            "ip link set eth1 down",
            "create bond bond0",
            "sys/class/net/bond0/bonding/mode < active-backup",
            "sys/class/net/bond0/bonding/miimon < 100",
            "sys/class/net/bond0/bonding/xmit_hash_policy < layer3+4",
            "ip link set bond0 address 52:54:00:aa:00:01",
            "sys/class/net/bond0/bonding/slaves < +eth0",
            "sys/class/net/bond0/bonding/slaves < +eth1",
            "ip link set bond0 mtu 9000",
            "ip link set bond0 up",
            "vlan driver",
            "ip link add link bond0 name bond0.101 type vlan id 101",
            "ip link set bond0.101 address 52:54:00:aa:00:01",
            "ip link set bond0.101 up",
            "ip addr add 192.0.2.10/24 dev bond0",
            "ip addr add 198.51.100.7/25 dev bond0.101",
            "ip -6 addr add 2001:db8:101::7/64 dev bond0.101",
            "ip route replace default via 198.51.100.1 dev bond0.101",
            "ip -6 route replace 2001:db8:200::/48 via 2001:db8:101::1 dev bond0.101",
            "resolv.conf 198.51.100.53",
        ];
        assert_eq!(got, want);
    }

    /// Records commands; fails those whose text contains `fail`, with `msg`.
    struct Recorder {
        seen: RefCell<Vec<String>>,
        fail: &'static str,
        msg: &'static str,
    }
    impl CommandRunner for Recorder {
        fn run(&self, argv: &[String]) -> Result<(), String> {
            let l = argv.join(" ");
            self.seen.borrow_mut().push(l.clone());
            if !self.fail.is_empty() && l.contains(self.fail) {
                Err(self.msg.to_owned())
            } else {
                Ok(())
            }
        }
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("sys/class/net");
        std::fs::create_dir_all(net.join("bond0/bonding")).unwrap();
        for f in ["mode", "miimon", "xmit_hash_policy", "slaves"] {
            std::fs::write(net.join("bond0/bonding").join(f), "").unwrap();
        }
        std::fs::write(net.join("bonding_masters"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        dir
    }

    #[test]
    fn apply_writes_sysfs_and_resolv_conf_under_the_root() {
        let root = fake_root();
        let rec = Recorder {
            seen: RefCell::default(),
            fail: "",
            msg: "",
        };
        apply(&bond_plan(), root.path(), &rec).unwrap();
        let bonding = root.path().join("sys/class/net/bond0/bonding");
        let read = |f: &str| std::fs::read_to_string(bonding.join(f)).unwrap();
        assert_eq!(read("mode"), "active-backup");
        assert_eq!(read("miimon"), "100");
        // The file keeps the last write; the recorder saw both.
        assert_eq!(read("slaves"), "+eth1");
        // bond0 existed (the driver makes one when loaded): not created again, no modprobe.
        assert_eq!(
            std::fs::read_to_string(root.path().join("sys/class/net/bonding_masters")).unwrap(),
            ""
        );
        // The root has no proc/net/vlan: the VLAN driver is loaded, the bonding one not.
        let modprobes: Vec<String> = rec
            .seen
            .borrow()
            .iter()
            .filter(|l| l.starts_with("modprobe"))
            .cloned()
            .collect();
        assert_eq!(modprobes, ["modprobe 8021q"]);
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap(),
            "nameserver 198.51.100.53\n"
        );
    }

    #[test]
    fn an_existing_address_is_fine_other_failures_stop() {
        let root = fake_root();
        let rec = Recorder {
            seen: RefCell::default(),
            fail: "addr add",
            msg: "RTNETLINK answers: File exists",
        };
        apply(&bond_plan(), root.path(), &rec).unwrap();

        let rec = Recorder {
            seen: RefCell::default(),
            fail: "route replace default",
            msg: "Network unreachable",
        };
        let err = apply(&bond_plan(), root.path(), &rec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ip route replace default via 198.51.100.1")
                && err.contains("Network unreachable"),
            "{err}"
        );
        // Nothing after the failed command ran.
        assert!(rec
            .seen
            .borrow()
            .last()
            .unwrap()
            .contains("route replace default"));
    }
}
