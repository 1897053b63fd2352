//! `erase_devices_metadata` on real block devices: loop devices with partition scanning
//! over sparse temp files, tables made by sgdisk/sfdisk and filesystems by mkfs, checked
//! afterwards with blkid/wipefs on the backing files (the kernel drops the partition
//! nodes when the disk's table is erased) and by reading the bytes that must survive.
//! Each test names only its own devices in the allow-list.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map};

use common::blockio::{read_at, write_at};
use common::cmd::{blkid_probe, run, spawn_with_stdin};
use common::fixtures::empty_inventory;
use common::loopdev::LoopDev;
use ira::blockdev::AllowList;
use ira::erase::{erase_devices_metadata, EraseError, EraseScope};
use ira::hardware::GenericHardwareManager;
use ira_hw::{HardwareManager, StepCall, StepKind};

const MIB: u64 = 1 << 20;
/// Where the test's own bytes go inside partition 1 (beyond every metadata area).
const P1_MARK: u64 = 12 * MIB + 777;
/// Where they go on the disk, between the partitions' end and the backup GPT.
const DISK_MARK: u64 = 40 * MIB + 333;

/// A loop device with partition scanning over a sparse file of `size` bytes.
fn partscan_loop(size: u64) -> LoopDev {
    LoopDev::builder(size).partscan(true).attach()
}

/// Makes the kernel show the partitions of the table just written on `l` (kernels
/// without table parsers need `partx`; where the re-read already did it, partx
/// complains).
fn show_partitions(l: &LoopDev, count: u32) {
    let _ = Command::new("partx").args(["-a", l.path_str()]).output();
    for n in 1..=count {
        let sys = format!("/sys/block/{0}/{0}p{n}", l.name());
        assert!(Path::new(&sys).exists(), "{sys} missing");
        wait_for(&part(l, n));
    }
}

/// `/dev/loopNpn` as the erase step names it.
fn part(l: &LoopDev, n: u32) -> String {
    l.part(n).display().to_string()
}

fn wait_for(path: &str) {
    for _ in 0..200 {
        if Path::new(path).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{path} never appeared");
}

/// blkid's low-level probe of `size` bytes at `offset` of `file`: the TYPE or PTTYPE it
/// finds, `None` when nothing is there.
fn probe(file: &Path, offset: u64, size: u64) -> Option<String> {
    blkid_probe(file, offset, Some(size))
        .into_iter()
        .find(|(k, _)| k == "TYPE" || k == "PTTYPE")
        .map(|(_, v)| v)
}

/// Every signature wipefs finds on `file`.
fn signatures(file: &Path) -> String {
    run("wipefs", &["--noheadings", file.to_str().unwrap()])
        .trim()
        .to_owned()
}

/// An erase scope whose allow-list names `with_parts` and all their partitions, and
/// `alone` without theirs.
fn scope(with_parts: &[&LoopDev], alone: &[&LoopDev]) -> EraseScope {
    let mut globs = Vec::new();
    for l in with_parts {
        globs.push(l.path_str().to_owned());
        globs.push(format!("{}p*", l.path_str()));
    }
    globs.extend(alone.iter().map(|l| l.path_str().to_owned()));
    EraseScope {
        sysroot: PathBuf::from("/"),
        allow: AllowList::new(globs),
        guard_special_filesystems: true,
        ..EraseScope::disabled()
    }
}

/// A 64 MiB disk: GPT, p1 ext4 (1-17 MiB), p2 vfat (17-33 MiB), marks in p1 and in
/// the free space.
fn gpt_disk() -> LoopDev {
    let l = partscan_loop(64 * MIB);
    run(
        "sgdisk",
        &["-n1:2048:+16M", "-n2:0:+16M", "-t2:ef00", l.path_str()],
    );
    show_partitions(&l, 2);
    run("mkfs.ext4", &["-q", "-F", &part(&l, 1)]);
    run("mkfs.vfat", &[&part(&l, 2)]);
    write_at(l.path(), MIB + P1_MARK, b"partition data");
    write_at(l.path(), DISK_MARK, b"disk data");
    l
}

#[test]
fn gpt_disk_and_partitions_lose_every_signature_and_keep_their_data() {
    let l = gpt_disk();
    assert_eq!(probe(l.file(), 0, 64 * MIB).as_deref(), Some("gpt"));
    assert_eq!(probe(l.file(), MIB, 16 * MIB).as_deref(), Some("ext4"));
    assert_eq!(probe(l.file(), 17 * MIB, 16 * MIB).as_deref(), Some("vfat"));

    let s = scope(&[&l], &[]);
    erase_devices_metadata(&s, &json!({})).unwrap();

    assert_eq!(signatures(l.file()), "", "disk signatures left");
    assert_eq!(probe(l.file(), 0, 64 * MIB), None);
    assert_eq!(probe(l.file(), MIB, 16 * MIB), None, "ext4 left in p1");
    assert_eq!(probe(l.file(), 17 * MIB, 16 * MIB), None, "vfat left in p2");
    // The backup GPT at the end is gone too.
    assert!(read_at(l.file(), 64 * MIB - 512, 512)
        .iter()
        .all(|&b| b == 0));
    assert_eq!(read_at(l.file(), MIB + P1_MARK, 14), b"partition data");
    assert_eq!(read_at(l.file(), DISK_MARK, 9), b"disk data");
}

#[test]
fn mbr_swap_and_whole_disk_filesystem_are_erased_others_are_not() {
    // Allowed: an MBR disk with a swap partition, and an ext4 filesystem on a whole disk.
    let mbr = partscan_loop(32 * MIB);
    let out = Command::new("sfdisk")
        .args(["-q", mbr.path_str()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"label: dos\n,8M,82\n")?;
            c.wait()
        })
        .unwrap();
    assert!(out.success());
    show_partitions(&mbr, 1);
    run("mkswap", &[&part(&mbr, 1)]);
    let whole = partscan_loop(16 * MIB);
    run("mkfs.ext4", &["-q", "-F", whole.path_str()]);
    write_at(whole.path(), 10 * MIB + 5, b"whole-disk data");
    // Not allowed: a disk with the same kind of content.
    let other = partscan_loop(16 * MIB);
    run("mkfs.ext4", &["-q", "-F", other.path_str()]);
    // Allowed disk, but its partition is not named: the table goes, the filesystem in
    // the partition stays. (It starts at 5 MiB: erasing a whole disk also zeroes the
    // 4 KiB blocks where a LUKS2 secondary header may sit, at 1, 2 and 4 MiB.)
    let unnamed = partscan_loop(64 * MIB);
    run("sgdisk", &["-n1:10240:+16M", unnamed.path_str()]);
    show_partitions(&unnamed, 1);
    run("mkfs.ext4", &["-q", "-F", &part(&unnamed, 1)]);

    assert_eq!(probe(mbr.file(), 0, 32 * MIB).as_deref(), Some("dos"));
    assert_eq!(probe(mbr.file(), MIB, 8 * MIB).as_deref(), Some("swap"));
    let s = scope(&[&mbr], &[&whole, &unnamed]);
    erase_devices_metadata(&s, &json!({})).unwrap();

    assert_eq!(signatures(mbr.file()), "");
    assert_eq!(probe(mbr.file(), MIB, 8 * MIB), None, "swap left");
    assert_eq!(signatures(whole.file()), "");
    assert_eq!(read_at(whole.file(), 10 * MIB + 5, 15), b"whole-disk data");
    assert_eq!(probe(other.file(), 0, 16 * MIB).as_deref(), Some("ext4"));
    assert_eq!(probe(unnamed.file(), 0, 64 * MIB), None);
    assert_eq!(
        probe(unnamed.file(), 5 * MIB, 16 * MIB).as_deref(),
        Some("ext4")
    );
}

#[test]
fn raid_members_and_read_only_disks_are_skipped() {
    // An md 1.2 superblock (magic at 4 KiB) in partition 1 makes it and its disk
    // members (IPA's lsblk --fs of the disk shows its children); partition 2 is not.
    let member = gpt_disk();
    let mut sb = vec![0u8; 136];
    sb[..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[128..136].copy_from_slice(&8u64.to_le_bytes());
    write_at(member.path(), MIB + 4096, &sb);
    let ro = partscan_loop(16 * MIB);
    run("mkfs.ext4", &["-q", "-F", ro.path_str()]);
    run("blockdev", &["--setro", ro.path_str()]);
    let plain = partscan_loop(16 * MIB);
    run("mkfs.vfat", &[plain.path_str()]);

    let s = scope(&[&member], &[&ro, &plain]);
    let result = erase_devices_metadata(&s, &json!({})).unwrap();
    // Every device is named: the skipped ones with the reason.
    assert_eq!(
        result[ro.path_str()],
        json!({"skipped": "read-only device"})
    );
    assert_eq!(
        result[member.path_str()],
        json!({"skipped": "Linux RAID member"})
    );
    assert_eq!(result[plain.path_str()], json!({"erased": "metadata"}));

    assert_eq!(probe(member.file(), 0, 64 * MIB).as_deref(), Some("gpt"));
    assert_eq!(
        read_at(member.file(), MIB + 4096, 4),
        0xa92b_4efcu32.to_le_bytes()
    );
    // The ext4 magic of partition 1 is still there too.
    assert_eq!(read_at(member.file(), MIB + 1024 + 56, 2), [0x53, 0xef]);
    assert_eq!(probe(member.file(), 17 * MIB, 16 * MIB), None);
    assert_eq!(probe(ro.file(), 0, 16 * MIB).as_deref(), Some("ext4"));
    assert_eq!(probe(plain.file(), 0, 16 * MIB), None);
}

#[test]
fn skip_list_protects_a_disk_and_its_partitions() {
    let skipped = gpt_disk();
    let erased = partscan_loop(16 * MIB);
    run("mkfs.ext4", &["-q", "-F", erased.path_str()]);
    let s = scope(&[&skipped], &[&erased]);
    let node = json!({"properties": {"skip_block_devices": [{"name": skipped.path_str()}]}});
    erase_devices_metadata(&s, &node).unwrap();
    assert_eq!(probe(skipped.file(), 0, 64 * MIB).as_deref(), Some("gpt"));
    assert_eq!(
        probe(skipped.file(), MIB, 16 * MIB).as_deref(),
        Some("ext4")
    );
    assert_eq!(probe(erased.file(), 0, 16 * MIB), None);
}

#[test]
fn a_vmfs_partition_stops_the_step_before_anything_is_written() {
    let vmfs = partscan_loop(32 * MIB);
    let mut child = spawn_with_stdin(
        Command::new("sfdisk").args(["-q", vmfs.path_str()]),
        b"label: dos\n,8M,fb\n",
    );
    assert!(child.wait().unwrap().success());
    show_partitions(&vmfs, 1);
    let bystander = partscan_loop(16 * MIB);
    run("mkfs.ext4", &["-q", "-F", bystander.path_str()]);
    let s = scope(&[&vmfs], &[&bystander]);

    let err = erase_devices_metadata(&s, &json!({})).unwrap_err();
    assert!(
        matches!(&err, EraseError::Protected { device, what }
            if *device == part(&vmfs, 1) && *what == "VMware VMFS Partition (MBR)"),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("Protected VMware VMFS Partition (MBR) located on device"));
    assert_eq!(probe(vmfs.file(), 0, 32 * MIB).as_deref(), Some("dos"));
    assert_eq!(
        probe(bystander.file(), 0, 16 * MIB).as_deref(),
        Some("ext4")
    );

    // The node may waive the guard.
    let node = json!({"driver_internal_info": {"wipe_special_filesystems": false}});
    erase_devices_metadata(&s, &node).unwrap();
    assert_eq!(probe(vmfs.file(), 0, 32 * MIB), None);
    assert_eq!(probe(bystander.file(), 0, 16 * MIB), None);
}

#[test]
fn the_generic_manager_runs_the_step_and_names_the_device() {
    let l = partscan_loop(16 * MIB);
    run("mkfs.vfat", &[l.path_str()]);
    let manager = GenericHardwareManager::new(0).with_erase_scope(scope(&[], &[&l]));
    let inventory = empty_inventory();
    let args = Map::new();
    let result = manager
        .execute_step(&StepCall {
            kind: StepKind::Clean,
            step: "erase_devices_metadata",
            node: &json!({"uuid": "n1"}),
            ports: &[],
            args: &args,
            inventory: &inventory,
            host: &ira_hw::NoHost,
        })
        .unwrap();
    assert_eq!(result, json!({ l.path_str(): {"erased": "metadata"} }));
    assert_eq!(probe(l.file(), 0, 16 * MIB), None);
}

#[test]
fn the_default_scope_touches_nothing() {
    let l = partscan_loop(16 * MIB);
    run("mkfs.vfat", &[l.path_str()]);
    erase_devices_metadata(&EraseScope::default(), &json!({})).unwrap();
    assert_eq!(probe(l.file(), 0, 16 * MIB).as_deref(), Some("vfat"));
}

#[test]
fn a_failed_device_is_reported_and_the_others_are_still_erased() {
    let l = gpt_disk();
    // The kernel still lists partition 2, but its device node is gone: opening it for
    // writing fails after every check passed.
    std::fs::remove_file(part(&l, 2)).unwrap();
    let s = scope(&[&l], &[]);
    let err = erase_devices_metadata(&s, &json!({})).unwrap_err();
    let EraseError::Devices(failures) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, part(&l, 2));
    assert!(err.to_string().starts_with(&format!(
        "Failed to erase the metadata on the device(s): \"{}\": ",
        part(&l, 2)
    )));
    assert_eq!(probe(l.file(), 0, 64 * MIB), None);
    assert_eq!(probe(l.file(), MIB, 16 * MIB), None);
    assert_eq!(probe(l.file(), 17 * MIB, 16 * MIB).as_deref(), Some("vfat"));
}
