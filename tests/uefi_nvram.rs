//! `clean_uefi_nvram` against a temp directory standing in for efivarfs
//! (`<root>/sys/firmware/efi/efivars`): entries on disk partitions and shim/GRUB
//! loaders go, network, CD and firmware entries stay, `BootOrder` follows.

mod common;

use std::io;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use common::fixtures::empty_inventory;
use ira::deploy::bootloader::efivarfs::EfiVars;
use ira::deploy::bootloader::load_option::{
    DevicePathNode, HardDrive, LoadOption, PartitionSignature, LOAD_OPTION_ACTIVE,
};
use ira::deploy::bootloader::nvram::{
    clean_boot_records, clean_uefi_nvram, parse_patterns, render_path, NvramError,
};
use ira::deploy::mount::{MountKind, MountOptions, Mounter};
use ira::hardware::GenericHardwareManager;
use ira_hw::{HardwareManager, HwError, StepCall, StepKind};

/// A mounter that records calls and refuses them (no efivarfs in tests).
#[derive(Default)]
struct NoMount(Mutex<Vec<String>>);

impl Mounter for NoMount {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        _kind: &MountKind,
        _options: &MountOptions,
    ) -> io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", source.display(), target.display()));
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
    fn umount(&self, _target: &Path, _detach: bool) -> io::Result<()> {
        Ok(())
    }
}

fn hd(number: u32) -> HardDrive {
    HardDrive {
        number,
        start_lba: 2048,
        size_lba: 1_048_576,
        signature: PartitionSignature::Gpt(
            Uuid::parse_str("1b4e28ba-2fa1-11d2-883f-0016d3cca427").unwrap(),
        ),
    }
}

fn other(kind: u8, subtype: u8, data: &[u8]) -> DevicePathNode {
    DevicePathNode::Other {
        kind,
        subtype,
        data: data.to_vec(),
    }
}

fn pci_root() -> DevicePathNode {
    other(2, 1, &[0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0])
}

fn option(description: &str, path: Vec<DevicePathNode>) -> LoadOption {
    LoadOption {
        attributes: LOAD_OPTION_ACTIVE,
        description: description.to_owned(),
        path,
        optional_data: Vec::new(),
    }
}

/// A UEFI root: variables for six entries, `BootOrder` 0..=5.
fn uefi_root() -> (tempfile::TempDir, EfiVars) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&dir).unwrap();
    let vars = EfiVars::new(&dir);
    let mut mac = vec![0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    mac.resize(32, 0);
    mac.push(1);
    let mut fv_shell = Uuid::parse_str("7c04a583-9e3e-4f1c-ad65-e05268d0b4d1")
        .unwrap()
        .to_bytes_le()
        .to_vec();
    fv_shell.truncate(16);
    let bbs_cd = [&[3u8, 0, 0, 0][..], b"CD-ROM\0"].concat();
    let entries = vec![
        // 0: an OS entry on a disk partition: `^HD\(` matches.
        LoadOption::for_loader("ubuntu", hd(1), "\\EFI\\ubuntu\\shimx64.efi"),
        // 1: PXE on a NIC.
        option(
            "UEFI PXEv4",
            vec![pci_root(), other(1, 1, &[0, 3]), other(3, 11, &mac)],
        ),
        // 2: a CD drive (BBS type 3).
        option("CD/DVD", vec![other(5, 1, &bbs_cd)]),
        // 3: the firmware's shell.
        option("EFI Shell", vec![other(4, 7, &fv_shell)]),
        // 4: GRUB on a disk behind PCI: `grub.*\.efi` matches.
        option(
            "grub",
            vec![
                pci_root(),
                other(1, 1, &[0, 4]),
                DevicePathNode::HardDrive(hd(2)),
                DevicePathNode::File("\\EFI\\BOOT\\GRUBX64.EFI".to_owned()),
            ],
        ),
        // 5: a shim behind a PCIe root: IPA's efibootmgr line parser never sees it.
        option(
            "pcie shim",
            vec![
                other(2, 1, &[0xd0, 0x41, 0x08, 0x0a, 0, 0, 0, 0]),
                DevicePathNode::HardDrive(hd(1)),
                DevicePathNode::File("\\EFI\\x\\shimx64.efi".to_owned()),
            ],
        ),
    ];
    for e in &entries {
        vars.create_boot_entry(e).unwrap();
    }
    // create_boot_entry puts each new entry first; make the order plain.
    vars.set_boot_order(&[0, 1, 2, 3, 4, 5]).unwrap();
    (root, vars)
}

fn numbers(vars: &EfiVars) -> Vec<u16> {
    vars.boot_entries()
        .unwrap()
        .iter()
        .map(|e| e.number)
        .collect()
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn entries_render_like_efibootmgr() {
    let (_root, vars) = uefi_root();
    let paths: Vec<String> = vars
        .boot_entries()
        .unwrap()
        .iter()
        .map(|e| render_path(&e.option.as_ref().unwrap().path))
        .collect();
    assert_eq!(
        paths,
        [
            "HD(1,GPT,1b4e28ba-2fa1-11d2-883f-0016d3cca427,0x800,0x100000)/File(\\EFI\\ubuntu\\shimx64.efi)",
            "PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)",
            "BBS(CDROM,CD-ROM,0x0)",
            "FvVol(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)",
            "PciRoot(0x0)/Pci(0x4,0x0)/HD(2,GPT,1b4e28ba-2fa1-11d2-883f-0016d3cca427,0x800,0x100000)/File(\\EFI\\BOOT\\GRUBX64.EFI)",
            "PcieRoot(0x0)/HD(1,GPT,1b4e28ba-2fa1-11d2-883f-0016d3cca427,0x800,0x100000)/File(\\EFI\\x\\shimx64.efi)",
        ]
    );
}

#[test]
fn default_patterns_delete_disk_and_loader_entries_only() {
    let (root, vars) = uefi_root();
    let mounter = NoMount::default();
    clean_uefi_nvram(root.path(), &mounter, &Map::new()).unwrap();
    assert_eq!(numbers(&vars), [1, 2, 3, 5]);
    assert_eq!(vars.boot_order().unwrap(), [1, 2, 3, 5]);
    assert!(mounter.0.lock().unwrap().is_empty());
    // Null means the defaults too; a second run finds nothing more.
    clean_uefi_nvram(
        root.path(),
        &mounter,
        &args(json!({"match_patterns": null})),
    )
    .unwrap();
    assert_eq!(numbers(&vars), [1, 2, 3, 5]);
}

#[test]
fn given_patterns_match_case_insensitively_anywhere_in_the_path() {
    let (_root, vars) = uefi_root();
    let patterns =
        parse_patterns(&args(json!({"match_patterns": ["525400123456", "fvvol"]}))).unwrap();
    let mut deleted = clean_boot_records(&vars, &patterns).unwrap();
    deleted.sort_unstable();
    assert_eq!(deleted, [1, 3]);
    assert_eq!(numbers(&vars), [0, 2, 4, 5]);
    assert_eq!(vars.boot_order().unwrap(), [0, 2, 4, 5]);
    // An empty list deletes nothing.
    let none = parse_patterns(&args(json!({"match_patterns": []}))).unwrap();
    assert!(clean_boot_records(&vars, &none).unwrap().is_empty());
    assert_eq!(numbers(&vars), [0, 2, 4, 5]);
}

#[test]
fn invalid_patterns_are_invalid_parameters() {
    for bad in [
        json!({"match_patterns": "^HD\\("}),
        json!({"match_patterns": [1]}),
        json!({"match_patterns": ["ok", "("]}),
        json!({"match_patterns": {"a": 1}}),
    ] {
        let err = parse_patterns(&args(bad.clone())).unwrap_err();
        assert!(
            matches!(&err, NvramError::InvalidPatterns(_)),
            "{bad}: {err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("The match_patterns must be a list of strings: "));
    }
    // Through the manager: a 400-class error, and nothing deleted.
    let (root, vars) = uefi_root();
    let manager = GenericHardwareManager::new(0).with_erase_scope(ira::erase::EraseScope {
        sysroot: root.path().to_path_buf(),
        ..ira::erase::EraseScope::disabled()
    });
    let inventory = empty_inventory();
    let call_args = args(json!({"match_patterns": "HD"}));
    let err = manager
        .execute_step(&StepCall {
            kind: StepKind::Deploy,
            step: "clean_uefi_nvram",
            node: &json!({}),
            ports: &[],
            args: &call_args,
            inventory: &inventory,
            host: &ira_hw::NoHost,
        })
        .unwrap_err();
    assert!(matches!(err, HwError::InvalidParams(_)), "{err:?}");
    assert_eq!(numbers(&vars).len(), 6);
    // And a valid call through the manager returns null.
    let call_args = Map::new();
    let ok = manager
        .execute_step(&StepCall {
            kind: StepKind::Deploy,
            step: "clean_uefi_nvram",
            node: &json!({}),
            ports: &[],
            args: &call_args,
            inventory: &inventory,
            host: &ira_hw::NoHost,
        })
        .unwrap();
    assert_eq!(ok, Value::Null);
    assert_eq!(numbers(&vars), [1, 2, 3, 5]);
}

#[test]
fn a_bios_ramdisk_fails_as_efibootmgr_does() {
    let root = tempfile::tempdir().unwrap();
    let mounter = NoMount::default();
    let err = clean_uefi_nvram(root.path(), &mounter, &Map::new()).unwrap_err();
    assert!(matches!(err, NvramError::NotSupported), "{err:?}");
    assert_eq!(
        err.to_string(),
        "EFI variables are not supported on this system."
    );
    // UEFI, but efivarfs is empty and cannot be mounted: the same failure.
    std::fs::create_dir_all(root.path().join("sys/firmware/efi/efivars")).unwrap();
    let err = clean_uefi_nvram(root.path(), &mounter, &Map::new()).unwrap_err();
    assert!(matches!(err, NvramError::NotSupported), "{err:?}");
    assert_eq!(mounter.0.lock().unwrap().len(), 1);
    // Invalid patterns are reported before the variables are looked at.
    let err =
        clean_uefi_nvram(root.path(), &mounter, &args(json!({"match_patterns": 3}))).unwrap_err();
    assert!(matches!(err, NvramError::InvalidPatterns(_)), "{err:?}");
}

#[test]
fn unparsable_entries_are_left_alone() {
    let (root, vars) = uefi_root();
    // Boot0009: bytes no load option parser accepts.
    let name = format!(
        "Boot0009-{}",
        ira::deploy::bootloader::efivarfs::GLOBAL_GUID
    );
    std::fs::write(
        root.path().join("sys/firmware/efi/efivars").join(name),
        [7, 0, 0, 0, 1, 0, 0, 0, 0xff],
    )
    .unwrap();
    clean_uefi_nvram(root.path(), &NoMount::default(), &Map::new()).unwrap();
    assert_eq!(numbers(&vars), [1, 2, 3, 5, 9]);
}
