//! Inventory and block-device allow-list tests: golden fixture trees under
//! `tests/fixtures/sysfs/<case>/` (captured or hand-written, each with `expected.json`),
//! fail-closed disk probing, the write door, and property tests of the parsers.
//!
//! A case may carry `.ira-fixture/options.json` (`allowlist`, `bootif`,
//! `skip_bmc_detect`) and `.ira-fixture/addrs.json` (interface addresses).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ira::blockdev::{self, AllowList, BlockDevError};
use ira::inventory::{self, FileAddrs, InventoryError, InventoryOptions};
use proptest::prelude::*;
use serde_json::Value;

const CASES: [&str; 6] = [
    "this-vm",
    "nvme-sata",
    "many-nics",
    "no-dmi",
    "usb-cdrom",
    "loop-allowed",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs")
}

fn case_root(case: &str) -> PathBuf {
    fixtures().join(case)
}

/// Options of a case from its `.ira-fixture/options.json`, root set to the case.
fn case_options(root: &Path) -> InventoryOptions {
    let mut opts = InventoryOptions {
        root: root.to_path_buf(),
        ..Default::default()
    };
    if let Ok(text) = fs::read_to_string(root.join(".ira-fixture/options.json")) {
        let v: Value = serde_json::from_str(&text).unwrap();
        if let Some(list) = v["allowlist"].as_str() {
            opts.allowlist = AllowList::parse(list);
        }
        opts.bootif = v["bootif"].as_str().map(str::to_owned);
        opts.skip_bmc_detect = v["skip_bmc_detect"].as_bool().unwrap_or(false);
    }
    opts
}

fn collect_case(root: &Path, opts: &InventoryOptions) -> Result<Value, InventoryError> {
    let addrs = FileAddrs::new(root.join(".ira-fixture/addrs.json"));
    let inv = inventory::collect_with(opts, &addrs)?;
    Ok(serde_json::to_value(inv).unwrap())
}

/// Every difference between two JSON values, one line per JSON path.
fn json_diff(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let keys: BTreeSet<&String> = g.keys().chain(w.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (g.get(k), w.get(k)) {
                    (Some(a), Some(b)) => json_diff(&p, a, b, out),
                    (Some(a), None) => out.push(format!("{p}: unexpected key, value {a}")),
                    (None, Some(b)) => out.push(format!("{p}: missing, expected {b}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                let names = |a: &[Value]| -> Vec<String> {
                    a.iter()
                        .map(|v| {
                            v.get("name")
                                .map_or_else(|| v.to_string(), |n| n.to_string())
                        })
                        .collect()
                };
                out.push(format!(
                    "{path}: {} entries {:?}, expected {} {:?}",
                    g.len(),
                    names(g),
                    w.len(),
                    names(w)
                ));
            }
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                json_diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: got {a}, expected {b}")),
        _ => {}
    }
}

fn assert_golden(case: &str) {
    let root = case_root(case);
    let got = collect_case(&root, &case_options(&root))
        .unwrap_or_else(|e| panic!("{case}: inventory failed: {e}"));
    let want: Value =
        serde_json::from_str(&fs::read_to_string(root.join("expected.json")).unwrap()).unwrap();
    let mut diffs = Vec::new();
    json_diff("$", &got, &want, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{case}: inventory differs from expected.json:\n  {}",
        diffs.join("\n  ")
    );
}

#[test]
fn golden_this_vm() {
    assert_golden("this-vm");
}

#[test]
fn golden_nvme_sata() {
    assert_golden("nvme-sata");
}

#[test]
fn golden_many_nics() {
    assert_golden("many-nics");
}

#[test]
fn golden_no_dmi() {
    assert_golden("no-dmi");
}

#[test]
fn golden_usb_cdrom() {
    assert_golden("usb-cdrom");
}

#[test]
fn golden_loop_allowed() {
    assert_golden("loop-allowed");
}

#[test]
fn golden_raid_mpath() {
    assert_golden("raid-mpath");
}

#[test]
fn every_case_directory_has_a_golden_test() {
    let mut on_disk: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    known.push("raid-mpath".into());
    known.sort();
    assert_eq!(on_disk, known);
    for case in &known {
        assert!(case_root(case).join("expected.json").is_file(), "{case}");
    }
}

#[test]
fn serialized_keys_and_order_match_ipa() {
    let root = case_root("nvme-sata");
    let inv = inventory::collect_with(
        &case_options(&root),
        &FileAddrs::new(root.join(".ira-fixture/addrs.json")),
    )
    .unwrap();
    let text = serde_json::to_string(&inv).unwrap();
    let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = v.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // Map key order depends on serde_json features: compare the key sets here, and the
    // order in the serialized text, which follows the struct.
    let want = [
        "interfaces",
        "cpu",
        "disks",
        "memory",
        "bmc_address",
        "bmc_v6address",
        "system_vendor",
        "boot",
        "hostname",
    ];
    let mut sorted_want = want.to_vec();
    sorted_want.sort_unstable();
    assert_eq!(keys, sorted_want, "bmc_mac must be absent when unknown");
    let positions: Vec<usize> = want
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let disk_keys: BTreeSet<&str> = v["disks"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(disk_keys.len(), 14);
}

fn disk_names(v: &Value) -> Vec<String> {
    v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn loop_devices_are_listed_only_when_the_allow_list_names_them() {
    let root = case_root("loop-allowed");
    let mut opts = case_options(&root);

    opts.allowlist = AllowList::default();
    let v = collect_case(&root, &opts).unwrap();
    assert_eq!(
        disk_names(&v),
        ["/dev/vda"],
        "zram and loop hidden by default"
    );

    opts.allowlist = AllowList::parse("/dev/loop*");
    let v = collect_case(&root, &opts).unwrap();
    // loop1 is named but empty (size 0); vda is outside the list.
    assert_eq!(disk_names(&v), ["/dev/loop0"]);

    opts.allowlist = AllowList::parse("/dev/vd*");
    let v = collect_case(&root, &opts).unwrap();
    assert_eq!(disk_names(&v), ["/dev/vda"]);

    opts.allowlist = AllowList::parse("/dev/sdz");
    let v = collect_case(&root, &opts).unwrap();
    assert!(disk_names(&v).is_empty());
}

#[test]
fn usb_stick_and_cd_drive_are_skipped_but_a_fixed_usb_disk_is_not() {
    let root = case_root("usb-cdrom");
    // The fixture really has all four devices.
    let present: BTreeSet<String> = fs::read_dir(root.join("sys/block"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present,
        ["sda", "sdb", "sdc", "sr0"].map(String::from).into()
    );
    let v = collect_case(&root, &case_options(&root)).unwrap();
    assert_eq!(disk_names(&v), ["/dev/sda", "/dev/sdc"]);
    assert_eq!(v["disks"][1]["tran"], "usb");
}

#[test]
fn bmc_detection_can_be_skipped_and_ipmi_presence_reports_null() {
    let root = case_root("nvme-sata");
    assert!(root.join("dev/ipmi0").exists());
    assert!(inventory::bmc::ipmi_device(&root).is_some());
    assert!(inventory::bmc::ipmi_device(&case_root("no-dmi")).is_none());
    let mut opts = case_options(&root);
    opts.skip_bmc_detect = true;
    let v = collect_case(&root, &opts).unwrap();
    assert_eq!(v["bmc_address"], Value::Null);
    assert_eq!(v["bmc_v6address"], Value::Null);
    assert!(v.get("bmc_mac").is_none());
}

/// Copies a fixture case into a temp dir (symlinks kept) so a test can break it.
fn copy_case(case: &str) -> tempfile::TempDir {
    fn copy(src: &Path, dst: &Path) {
        fs::create_dir_all(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
            } else if kind.is_dir() {
                copy(&from, &to);
            } else {
                fs::copy(&from, &to).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&case_root(case), dir.path());
    dir
}

#[test]
fn disk_probe_fails_closed() {
    // No sys/block at all: an error, not an empty list.
    let tmp = copy_case("nvme-sata");
    fs::remove_dir_all(tmp.path().join("sys/block")).unwrap();
    let err = collect_case(tmp.path(), &case_options(tmp.path())).unwrap_err();
    assert!(matches!(err, InventoryError::Read { .. }), "{err}");

    // A listed disk whose size is garbage or whose sector size is unreadable.
    let tmp = copy_case("nvme-sata");
    let size = tmp.path().join("sys/block/sda/size");
    fs::write(&size, "lots\n").unwrap();
    let err = collect_case(tmp.path(), &case_options(tmp.path())).unwrap_err();
    assert!(matches!(err, InventoryError::Invalid { .. }), "{err}");
    fs::write(&size, "937703088\n").unwrap();
    assert!(collect_case(tmp.path(), &case_options(tmp.path())).is_ok());
    fs::remove_file(tmp.path().join("sys/block/sda/queue/physical_block_size")).unwrap();
    assert!(collect_case(tmp.path(), &case_options(tmp.path())).is_err());

    // The same breakage on a device that is not selected does not matter.
    let tmp = copy_case("loop-allowed");
    fs::write(tmp.path().join("sys/block/loop0/size"), "garbage\n").unwrap();
    let mut opts = case_options(tmp.path());
    opts.allowlist = AllowList::default();
    assert_eq!(
        disk_names(&collect_case(tmp.path(), &opts).unwrap()),
        ["/dev/vda"]
    );
    opts.allowlist = AllowList::parse("/dev/loop0");
    assert!(collect_case(tmp.path(), &opts).is_err());
}

#[test]
fn missing_optional_files_give_nulls_not_errors() {
    let tmp = copy_case("nvme-sata");
    for rel in [
        "proc/meminfo",
        "proc/cpuinfo",
        "sys/firmware/dmi/tables/DMI",
    ] {
        fs::remove_file(tmp.path().join(rel)).unwrap();
    }
    fs::remove_dir_all(tmp.path().join("run/udev")).unwrap();
    let v = collect_case(tmp.path(), &case_options(tmp.path())).unwrap();
    assert_eq!(v["memory"]["total"], Value::Null);
    assert_eq!(v["cpu"]["model_name"], "");
    assert_eq!(v["cpu"]["frequency"], "3200.0000", "cpufreq still read");
    // Without the raw table, sys/class/dmi/id is used (it only has product_name here).
    assert_eq!(v["system_vendor"]["product_name"], "NOT USED");
    assert_eq!(v["system_vendor"]["manufacturer"], "");
    let sda = &v["disks"][1];
    assert_eq!(sda["name"], "/dev/sda");
    assert_eq!(sda["serial"], Value::Null);
    assert_eq!(sda["by_path"], Value::Null);
    // Without udev, the WWN comes from sysfs device/wwid, in udev's form.
    assert_eq!(sda["wwn"], "0x55cd2e415123abcd");
    assert_eq!(
        v["disks"][0]["serial"], "S64GNE0R602354",
        "NVMe serial from sysfs"
    );
}

#[test]
fn live_system_inventory() {
    let opts = InventoryOptions {
        root: PathBuf::from("/"),
        ..Default::default()
    };
    let inv = inventory::collect(&opts).expect("inventory of this machine");
    assert!(inv.cpu.count >= 1);
    assert!(!inv.cpu.architecture.is_empty());
    assert_eq!(inv.cpu.architecture, std::env::consts::ARCH);
    assert!(inv.memory.total.unwrap() > 0);
    assert!(inv.memory.physical_mb.unwrap() > 0);
    for disk in &inv.disks {
        assert!(disk.name.starts_with("/dev/"), "{}", disk.name);
        for hidden in ["/dev/loop", "/dev/zram", "/dev/ram", "/dev/sr", "/dev/fd"] {
            assert!(!disk.name.starts_with(hidden), "{} listed", disk.name);
        }
        assert!(disk.size > 0);
    }
    assert!(inv.interfaces.iter().all(|i| i.name != "lo"));
    assert!(inv
        .interfaces
        .iter()
        .all(|i| i.mac_address == i.mac_address.to_lowercase()));
    // The empty default root means the real system too.
    let default = inventory::collect(&InventoryOptions::default()).unwrap();
    assert_eq!(default.disks, inv.disks);
}

// ------------------------------------------------------------------ the write door

#[test]
fn system_devices_follow_partitions_and_device_mapper() {
    let vm = blockdev::system_devices(&case_root("this-vm")).unwrap();
    assert_eq!(vm, BTreeSet::from(["vda".to_owned()]));

    let root = case_root("raid-mpath");
    let sys = blockdev::system_devices(&root).unwrap();
    let want: BTreeSet<String> = ["dm-0", "sda2", "sda"].map(String::from).into();
    assert_eq!(sys, want);
    let sda = blockdev::devices_under(&root, "8:0").unwrap();
    assert!(sda.intersection(&sys).next().is_some());
    let boot = blockdev::devices_under(&root, "8:1").unwrap();
    assert_eq!(boot, ["sda", "sda1"].map(String::from).into());
    let mpath = blockdev::devices_under(&root, "253:1").unwrap();
    assert_eq!(mpath, ["dm-1", "sdb", "sdc"].map(String::from).into());
    assert!(mpath.intersection(&sys).next().is_none());
}

#[test]
fn root_on_a_ram_filesystem_holds_no_device() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("proc/self")).unwrap();
    fs::write(
        tmp.path().join("proc/self/mountinfo"),
        "1 0 0:2 / / rw - rootfs rootfs rw\n",
    )
    .unwrap();
    assert!(blockdev::system_devices(tmp.path()).unwrap().is_empty());
    // Without a mount table the probe fails, and callers refuse.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        blockdev::system_devices(empty.path()),
        Err(BlockDevError::Probe { .. })
    ));
}

#[test]
fn regular_files_obey_the_allow_list_and_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    fs::write(&img, vec![0u8; 4096]).unwrap();
    let canonical = fs::canonicalize(&img).unwrap();

    let other = AllowList::parse("/dev/loop7");
    let err = blockdev::open_for_write(&img, &other).unwrap_err();
    assert!(matches!(err, BlockDevError::NotAllowed { .. }), "{err}");

    let list = AllowList::new(vec![canonical.to_string_lossy().into_owned()]);
    let mut f = blockdev::open_for_write(&img, &list).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(b"ira").unwrap();
    f.sync_all().unwrap();
    let mut back = Vec::new();
    fs::File::open(&img)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(&back[512..515], b"ira");

    // Empty list: IPA behaviour, everything allowed.
    assert!(blockdev::open_for_write(&img, &AllowList::default()).is_ok());
    // A glob over the directory works too.
    let glob = AllowList::new(vec![format!(
        "{}/*.img",
        dir.path().canonicalize().unwrap().display()
    )]);
    assert!(blockdev::open_for_write(&img, &glob).is_ok());
}

#[test]
fn only_block_devices_and_regular_files_are_opened() {
    let dir = tempfile::tempdir().unwrap();
    let err = blockdev::open_for_write(dir.path(), &AllowList::default()).unwrap_err();
    assert!(matches!(err, BlockDevError::NotADevice { .. }), "{err}");
    let err = blockdev::open_for_write(Path::new("/dev/null"), &AllowList::default()).unwrap_err();
    assert!(matches!(err, BlockDevError::NotADevice { .. }), "{err}");
    let err =
        blockdev::open_for_write(&dir.path().join("missing"), &AllowList::default()).unwrap_err();
    assert!(matches!(err, BlockDevError::Probe { .. }), "{err}");
}

#[test]
fn the_running_systems_disk_is_refused() {
    // On this machine: every device holding `/` that has a node in /dev is refused,
    // even when the allow-list names it. Nothing is written either way.
    let sys = blockdev::system_devices(Path::new("/")).unwrap();
    for name in &sys {
        let node = Path::new("/dev").join(name);
        if !node.exists() {
            continue;
        }
        let list = AllowList::new(vec![node.to_string_lossy().into_owned()]);
        let err = blockdev::open_for_write(&node, &list).unwrap_err();
        assert!(
            matches!(err, BlockDevError::HoldsRunningSystem { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_real_block_device_is_refused_when_a_fixture_says_it_holds_root() {
    // A loop device of this test's own, with a system view claiming `/` is on it.
    let loopdev = common::loopdev::LoopDev::new(1 << 20);
    let node = loopdev.path();
    let name = loopdev.name();
    let meta = fs::metadata(node).expect("loop device node");
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
    let devnum = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("proc/self")).unwrap();
    fs::write(
        root.join("proc/self/mountinfo"),
        format!("27 1 {devnum} / / rw - ext4 {} rw\n", node.display()),
    )
    .unwrap();
    fs::create_dir_all(root.join("sys/devices/virtual/block").join(&name)).unwrap();
    fs::create_dir_all(root.join("sys/dev/block")).unwrap();
    fs::create_dir_all(root.join("sys/class/block")).unwrap();
    let target = format!("../../devices/virtual/block/{name}");
    std::os::unix::fs::symlink(&target, root.join("sys/dev/block").join(&devnum)).unwrap();
    std::os::unix::fs::symlink(&target, root.join("sys/class/block").join(&name)).unwrap();
    let list = AllowList::parse(&node.to_string_lossy());
    let err = blockdev::open_for_write_at(root, node, &list).unwrap_err();
    assert!(
        matches!(err, BlockDevError::HoldsRunningSystem { ref disk, .. } if *disk == name),
        "{err}"
    );
    // With the real system view, the loop device is not the system disk: opened.
    assert!(blockdev::open_for_write(node, &list).is_ok());
    // And outside the allow-list it is refused before anything else.
    let err = blockdev::open_for_write(node, &AllowList::parse("/dev/ira-test-other")).unwrap_err();
    assert!(matches!(err, BlockDevError::NotAllowed { .. }), "{err}");
}

// ------------------------------------------------------------------ parser properties

proptest! {
    #[test]
    fn smbios_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = inventory::dmi::parse_smbios(&bytes);
    }

    #[test]
    fn udev_and_cpuinfo_parsers_never_panic(text in "\\PC{0,512}") {
        let _ = inventory::udev::parse_udev_record(&text);
        let _ = inventory::cpu::parse_cpuinfo(&text);
        let _ = inventory::cpu::parse_cpu_list(&text);
        let _ = inventory::memory::parse_meminfo_total(&text);
        let _ = blockdev::parse_root_mount(&text);
    }

    #[test]
    fn literal_globs_match_only_themselves(name in "[a-z0-9]{1,12}", other in "[a-z0-9]{1,12}") {
        let path = format!("/dev/{name}");
        prop_assert!(blockdev::glob_match(&path, &path));
        prop_assert_eq!(blockdev::glob_match(&path, &format!("/dev/{other}")), name == other);
        prop_assert!(blockdev::glob_match("/dev/*", &path));
        prop_assert!(!blockdev::glob_match("/*", &path));
    }

    #[test]
    fn cpu_list_counts_ranges(lo in 0u32..1000, len in 1u32..1000) {
        let hi = lo + len - 1;
        prop_assert_eq!(inventory::cpu::parse_cpu_list(&format!("{lo}-{hi}\n")), Some(len));
    }

    #[test]
    fn bounded_reads_never_pass_their_cap(size in 0usize..5000, cap in 0u64..5000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![b'x'; size]).unwrap();
        match inventory::read::read_bounded(&path, cap) {
            Ok(bytes) => prop_assert!(bytes.len() as u64 <= cap && bytes.len() == size),
            Err(InventoryError::TooLarge { .. }) => prop_assert!(size as u64 > cap),
            Err(e) => prop_assert!(false, "{}", e),
        }
        prop_assert!(inventory::read::read_prefix(&path, cap).unwrap().len() as u64 <= cap);
    }
}
