//! Collector `numa-topology`: `sys/devices/system/node/node<N>` (memory and CPU threads)
//! and `sys/class/net/<if>/device/numa_node`, in the shape of IPA's
//! `numa_inspector.collect_numa_topology_info`:
//! `{"ram": [{"numa_node", "size_kb"}], "cpus": [{"cpu", "numa_node", "thread_siblings"}],
//! "nics": [{"name", "numa_node"}]}`.
//!
//! As in IPA, a machine without the node directory gives no topology at all (`None`), and
//! any malformed file drops the whole topology with a warning rather than sending half.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::read::{list_dir, list_dir_opt, read_bounded, read_opt, under, ATTR_CAP};
use super::InventoryError;

/// The NUMA layout IPA reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumaTopology {
    /// Memory per node.
    pub ram: Vec<NodeRam>,
    /// Physical cores per node with their hardware threads.
    pub cpus: Vec<NodeCpu>,
    /// Network interfaces with a known node.
    pub nics: Vec<NodeNic>,
}

/// `MemTotal` of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRam {
    /// Node id.
    pub numa_node: u32,
    /// Memory in KiB.
    pub size_kb: u64,
}

/// One core (`topology/core_id`) of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCpu {
    /// Core id within the node.
    pub cpu: u32,
    /// Node id.
    pub numa_node: u32,
    /// Logical CPU numbers sharing this core.
    pub thread_siblings: Vec<u32>,
}

/// A network interface's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeNic {
    /// Interface name.
    pub name: String,
    /// Node id (`-1` when the device has no affinity).
    pub numa_node: i32,
}

/// Reads the topology under `root`; `Ok(None)` when the kernel exposes no NUMA nodes.
pub fn read_numa_topology(root: &Path) -> Result<Option<NumaTopology>, InventoryError> {
    let base = under(root, "sys/devices/system/node");
    if !base.is_dir() {
        tracing::warn!(path = %base.display(), "no NUMA node directory; numa_topology not collected");
        return Ok(None);
    }
    let mut nodes = Vec::new();
    for name in list_dir(&base)? {
        if let Some(id) = name.strip_prefix("node") {
            if base.join(&name).is_dir() {
                let id: u32 = id
                    .parse()
                    .map_err(|_| invalid(&base.join(&name), "bad node id"))?;
                nodes.push(id);
            }
        }
    }
    let mut ram = Vec::new();
    let mut cpus: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for &node in &nodes {
        let dir = base.join(format!("node{node}"));
        let meminfo = dir.join("meminfo");
        let text = String::from_utf8_lossy(&read_bounded(&meminfo, ATTR_CAP)?).into_owned();
        let size_kb = parse_node_memtotal(&text).ok_or_else(|| invalid(&meminfo, "no MemTotal"))?;
        ram.push(NodeRam {
            numa_node: node,
            size_kb,
        });
        for entry in list_dir(&dir)? {
            let Some(thread) = entry.strip_prefix("cpu") else {
                continue;
            };
            // cpulist, cpumap: files, not thread directories.
            if !dir.join(&entry).is_dir() {
                continue;
            }
            let thread: u32 = thread
                .parse()
                .map_err(|_| invalid(&dir.join(&entry), "bad cpu id"))?;
            let core_path = dir.join(&entry).join("topology/core_id");
            let core: u32 = read_opt(&core_path)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid(&core_path, "no core id"))?;
            let siblings = cpus.entry((node, core)).or_default();
            if !siblings.contains(&thread) {
                siblings.push(thread);
            }
        }
    }
    let nics = read_nic_nodes(root)?;
    Ok(Some(NumaTopology {
        ram,
        cpus: cpus
            .into_iter()
            .map(|((numa_node, cpu), mut thread_siblings)| {
                thread_siblings.sort_unstable();
                NodeCpu {
                    cpu,
                    numa_node,
                    thread_siblings,
                }
            })
            .collect(),
        nics,
    }))
}

/// Interfaces whose device has a `numa_node` file (none without `sys/class/net`).
fn read_nic_nodes(root: &Path) -> Result<Vec<NodeNic>, InventoryError> {
    let net = under(root, "sys/class/net");
    let mut nics = Vec::new();
    for name in list_dir_opt(&net) {
        let path = net.join(&name).join("device/numa_node");
        if !path.is_file() {
            continue;
        }
        let numa_node = read_opt(&path)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(&path, "bad node id"))?;
        nics.push(NodeNic { name, numa_node });
    }
    Ok(nics)
}

/// `MemTotal` of a node's `meminfo` (`Node 0 MemTotal:  1560000 kB`) in KiB; `MB` and
/// `GB` suffixes are scaled by 1024 as IPA's unit table does.
pub fn parse_node_memtotal(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("MemTotal"))?;
    let value = line.split(':').nth(1)?.trim();
    let mut parts = value.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next().unwrap_or("kB") {
        "kB" | "KB" => Some(n),
        "MB" => n.checked_mul(1024),
        "GB" => n.checked_mul(1 << 20),
        _ => None,
    }
}

fn invalid(path: &Path, reason: &str) -> InventoryError {
    InventoryError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memtotal_units() {
        assert_eq!(
            parse_node_memtotal("Node 0 MemTotal:  1560000 kB\n"),
            Some(1_560_000)
        );
        assert_eq!(parse_node_memtotal("Node 1 MemTotal: 2 MB"), Some(2048));
        assert_eq!(parse_node_memtotal("Node 1 MemTotal: 1 GB"), Some(1 << 20));
        assert_eq!(parse_node_memtotal("Node 1 MemFree: 1 kB"), None);
        assert_eq!(parse_node_memtotal("Node 1 MemTotal: 1 TB"), None);
    }

    #[test]
    fn no_node_directory_is_none() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_numa_topology(t.path()).unwrap(), None);
    }
}
