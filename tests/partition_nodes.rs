//! Partition device nodes after a re-read: no wait when the kernel said it creates none
//! (a loop device without partition scanning), a wait that finds them when it does.

mod common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::loopdev::LoopDev;
use ira::blockdev::nodes::{self, await_block_devices, NodeOutlook};
use ira::sys::block;

const SIZE: u64 = 64 << 20;

/// A GPT with two partitions, written by sgdisk onto the loop device.
fn write_gpt(dev: &Path) {
    let out = Command::new("sgdisk")
        .args(["-n", "1:2048:+16M", "-n", "2:0:+16M"])
        .arg(dev)
        .output()
        .expect("run sgdisk");
    assert!(
        out.status.success(),
        "sgdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node_paths(dev: &Path) -> Vec<PathBuf> {
    (1..=2)
        .map(|n| PathBuf::from(format!("{}p{n}", dev.display())))
        .collect()
}

/// Re-reads and waits as a deploy does; the outlook, what is missing, and how long.
fn settle(dev: &Path) -> (NodeOutlook, Vec<usize>, Duration) {
    let disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .expect("open loop device");
    let started = Instant::now();
    let outlook = nodes::reread(&disk, dev, Path::new("/"));
    let missing = await_block_devices(&node_paths(dev), &outlook);
    (outlook, missing, started.elapsed())
}

#[test]
fn without_partscan_nothing_is_awaited() {
    let lo = LoopDev::new(SIZE);
    write_gpt(lo.path());
    let (outlook, missing, took) = settle(lo.path());
    match &outlook {
        NodeOutlook::NotCreated(why) => {
            assert!(why.contains("EINVAL"), "{why}");
            assert!(why.contains("loop device"), "{why}");
        }
        other => panic!("expected no nodes, got {other:?}"),
    }
    assert_eq!(missing, [0, 1], "no partition node may exist");
    assert!(
        took < Duration::from_secs(1),
        "took {took:?}, the old wait was {:?}",
        nodes::NODE_WAIT
    );
}

#[test]
fn with_partscan_the_nodes_are_awaited_and_found() {
    let lo = LoopDev::builder(SIZE).partscan(true).attach();
    write_gpt(lo.path());
    // This kernel may not create the nodes itself on a re-read: they are added with
    // BLKPG a moment after the wait starts, as a slow udev would make them appear.
    let dev = lo.path().to_path_buf();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let disk = std::fs::File::open(&dev).unwrap();
        for n in 1..=2u32 {
            let start = (2048 + u64::from(n - 1) * 32768) * 512;
            match block::add_partition(&disk, n, start, 16 << 20) {
                Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
                Err(e) => panic!("BLKPG_ADD_PARTITION {n}: {e}"),
            }
        }
    });
    let (outlook, missing, took) = settle(lo.path());
    adder.join().unwrap();
    assert_eq!(outlook, NodeOutlook::Expected);
    assert!(missing.is_empty(), "missing nodes: {missing:?}");
    assert!(took >= Duration::from_millis(300), "did not wait: {took:?}");
    for p in node_paths(lo.path()) {
        assert!(nodes::is_block_device(&p), "{}", p.display());
    }
    let disk = std::fs::File::open(lo.path()).unwrap();
    for n in 1..=2 {
        let _ = block::delete_partition(&disk, n);
    }
}
