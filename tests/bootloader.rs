//! `image.install_bootloader`: EFI load option bytes against a vector built by hand from
//! the UEFI spec, the efivarfs store on a plain directory, `manage_uefi` on loop devices
//! carrying a GPT and a FAT32 ESP (made by our own writers, files put on it through a
//! kernel vfat mount), and the command's policy (CVE-2026-43003 refusal, ignored failures).
//! Only allow-listed loop devices are touched; a temp directory stands in for efivarfs.

mod common;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;

use serde_json::{json, Value};
use uuid::Uuid;

use common::agent;
use common::cmd::run as sh;
use common::fixtures::inventory;
use common::loopdev::LoopDev;
use ira::blockdev::{open_for_write, AllowList};
use ira::commands::image::{bootloader_request, install_bootloader};
use ira::config::Config;
use ira::deploy::bootloader::efivarfs::{EfiVars, ATTR_NV_BS_RT, GLOBAL_GUID};
use ira::deploy::bootloader::load_option::{
    DevicePathNode, HardDrive, LoadOption, PartitionSignature, LOAD_OPTION_ACTIVE,
};
use ira::deploy::bootloader::uefi::{manage_uefi, UefiEnv, UefiError};
use ira::deploy::bootloader::{run, BootEnv, Request, BIOS_INSTALL_DISABLED};
use ira::deploy::mount::{MountKind, MountOptions, Mounter, SysMounter};
use ira::deploy::DeployError;
use ira::errors::CommandError;
use ira::partition::fat::make_fat32;
use ira::partition::gpt::{types, Gpt, GptEntry};
use ira::partition::{mbr, Geometry, MIB};
use ira::state::AgentState;

const ESP_FIRST: u64 = 2048;
const ESP_SECTORS: u64 = 96 * MIB / 512;
const ROOT_SECTORS: u64 = 40 * MIB / 512;

// ---------------------------------------------------------------- helpers

fn mtools(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (mtools): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts as the kernel does, except `vfat`, which this test kernel may not have: its
/// files are copied out with mtools (from the partition node our code made) and made
/// executable as a vfat mount shows them (fmask 022); "unmounting" removes the copy.
/// Every call is logged so tests can check that each mount was undone.
#[derive(Default)]
struct TestMounter {
    log: Mutex<Vec<String>>,
    /// Fake mounts: the target, the names it held before, the device.
    vfat: Mutex<Vec<(PathBuf, Vec<String>, PathBuf)>>,
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl TestMounter {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn make_executable(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            make_executable(&e.path());
        } else if ty.is_file() {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

impl Mounter for TestMounter {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        kind: &MountKind,
        options: &MountOptions,
    ) -> io::Result<()> {
        self.log.lock().unwrap().push(format!(
            "mount {} {} {kind:?}",
            source.display(),
            target.display()
        ));
        if *kind != MountKind::Fs(Some("vfat".into())) {
            return SysMounter.mount(source, target, kind, options);
        }
        assert!(
            fs::metadata(source).unwrap().file_type().is_block_device(),
            "{} is not a block device",
            source.display()
        );
        let before = dir_names(target);
        let out = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-n", "-i"])
            .arg(source)
            .arg("::*")
            .arg(target)
            .output()?;
        // An empty filesystem: "::*" matches nothing, which mcopy reports as such.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("File \"::*\" not found") {
            return Err(io::Error::other(stderr.into_owned()));
        }
        make_executable(target);
        self.vfat
            .lock()
            .unwrap()
            .push((target.to_path_buf(), before, source.to_path_buf()));
        Ok(())
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("umount {}", target.display()));
        let mut vfat = self.vfat.lock().unwrap();
        if let Some(i) = vfat.iter().position(|(t, _, _)| t == target) {
            let (_, before, source) = vfat.remove(i);
            for e in fs::read_dir(target)? {
                let e = e?;
                if before.contains(&e.file_name().to_string_lossy().into_owned()) {
                    continue;
                }
                let p = e.path();
                // Written back (merged, overwriting) so the fake mount is read-write.
                let out = Command::new("mcopy")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .args(["-s", "-o", "-n", "-i"])
                    .arg(&source)
                    .arg(&p)
                    .arg("::/")
                    .output()?;
                if !out.status.success() {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ));
                }
                if p.is_dir() {
                    fs::remove_dir_all(p)?;
                } else {
                    fs::remove_file(p)?;
                }
            }
            return Ok(());
        }
        SysMounter.umount(target, detach)
    }
}

/// UTF-16LE of an ASCII string, NUL-terminated, written out byte by byte.
fn ascii16z(s: &str) -> Vec<u8> {
    assert!(s.is_ascii());
    let mut v = Vec::new();
    for b in s.bytes() {
        v.extend_from_slice(&[b, 0]);
    }
    v.extend_from_slice(&[0, 0]);
    v
}

fn var_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{GLOBAL_GUID}"))
}

fn read_var(dir: &Path, name: &str) -> Option<Vec<u8>> {
    fs::read(var_path(dir, name)).ok()
}

fn order_bytes(order: &[u16]) -> Vec<u8> {
    let mut v = ATTR_NV_BS_RT.to_le_bytes().to_vec();
    v.extend(order.iter().flat_map(|n| n.to_le_bytes()));
    v
}

/// A loop device with a GPT holding one ESP (FAT32 by our writer) and one Linux
/// partition; `files` are put on the ESP through a vfat mount at the partition's offset.
struct EspDisk {
    dev: LoopDev,
    esp_guid: Uuid,
}

impl Drop for EspDisk {
    fn drop(&mut self) {
        // Partitions added with BLKPG outlive a loop device without partscan: remove
        // them, or the next user of this loop number would see them.
        for n in ["1", "2"] {
            let _ = Command::new("delpart")
                .arg(self.dev.path())
                .arg(n)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn esp_disk(with_esp: bool, files: &[(&str, &[u8])]) -> EspDisk {
    let dev = LoopDev::new(160 * MIB);
    let allow = AllowList::new(vec![dev.path().display().to_string()]);
    let mut f = open_for_write(dev.path(), &allow).unwrap();
    let g = Geometry::of_file(&f).unwrap();
    mbr::write_protective(&mut f, g).unwrap();
    let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
    let esp_guid = Uuid::new_v4();
    gpt.set_entry(
        1,
        &GptEntry {
            type_guid: if with_esp {
                types::EFI_SYSTEM
            } else {
                types::LINUX_FS
            },
            unique_guid: esp_guid,
            first_lba: ESP_FIRST,
            last_lba: ESP_FIRST + ESP_SECTORS - 1,
            attributes: 0,
            name: "EFI System Partition".into(),
        },
    )
    .unwrap();
    gpt.set_entry(
        2,
        &GptEntry {
            type_guid: types::LINUX_FS,
            unique_guid: Uuid::new_v4(),
            first_lba: ESP_FIRST + ESP_SECTORS,
            last_lba: ESP_FIRST + ESP_SECTORS + ROOT_SECTORS - 1,
            attributes: 0,
            name: "root".into(),
        },
    )
    .unwrap();
    gpt.write(&mut f, g).unwrap();
    make_fat32(
        &mut f,
        ESP_FIRST * 512,
        ESP_SECTORS * 512,
        512,
        "EFI",
        0x1234_abcd,
    )
    .unwrap();
    f.sync_all().unwrap();
    drop(f);

    // This kernel may lack vfat: files go on with mtools at the partition's offset,
    // through the page cache of the whole device, which is dropped before (it may
    // hold what a prober read before our direct writes) and flushed after (the code
    // under test reads through the partition's own node).
    let whole = dev.path().display().to_string();
    sh("blockdev", &["--flushbufs", &whole]);
    let image = format!("{whole}@@{}", ESP_FIRST * 512);
    let mut made = std::collections::BTreeSet::new();
    for (rel, content) in files {
        let mut dir = String::new();
        for part in rel.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            dir = format!("{dir}/{part}");
            if made.insert(dir.clone()) {
                mtools("mmd", &["-i", &image, &format!("::{dir}")]);
            }
        }
        let local = tempfile::NamedTempFile::new().unwrap();
        fs::write(local.path(), content).unwrap();
        mtools(
            "mcopy",
            &[
                "-i",
                &image,
                &local.path().display().to_string(),
                &format!("::/{rel}"),
            ],
        );
    }
    sh("blockdev", &["--flushbufs", &whole]);
    EspDisk { dev, esp_guid }
}

/// A fake efivarfs holding one unrelated variable, as a real one never is empty.
fn efivars_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path()
            .join("Timeout-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0, 0, 0, 5, 0],
    )
    .unwrap();
    d
}

fn expected_entry(label: &str, guid: Uuid, loader: &str) -> LoadOption {
    LoadOption::for_loader(
        label,
        HardDrive {
            number: 1,
            start_lba: ESP_FIRST,
            size_lba: ESP_SECTORS,
            signature: PartitionSignature::Gpt(guid),
        },
        loader,
    )
}

// ---------------------------------------------------------------- load options

#[test]
fn load_option_matches_a_vector_built_from_the_uefi_spec() {
    let guid = Uuid::parse_str("12345678-9abc-def0-1122-334455667788").unwrap();
    let opt = LoadOption::for_loader(
        "ironic1",
        HardDrive {
            number: 1,
            start_lba: 2048,
            size_lba: 1_024_000,
            signature: PartitionSignature::Gpt(guid),
        },
        "\\EFI\\BOOT\\BOOTX64.EFI",
    );

    let mut want: Vec<u8> = Vec::new();
    want.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // LOAD_OPTION_ACTIVE
    want.extend_from_slice(&[94, 0x00]); // FilePathListLength: 42 + 48 + 4
    want.extend(ascii16z("ironic1"));
    // HARDDRIVE_DEVICE_PATH: type 4 (media), subtype 1, length 42.
    want.extend_from_slice(&[0x04, 0x01, 42, 0x00]);
    want.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // PartitionNumber
    want.extend_from_slice(&[0x00, 0x08, 0, 0, 0, 0, 0, 0]); // PartitionStart 2048
    want.extend_from_slice(&[0x00, 0xa0, 0x0f, 0, 0, 0, 0, 0]); // PartitionSize 1024000
                                                                // Signature: EFI_GUID, first three fields little-endian.
    want.extend_from_slice(&[
        0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
        0x88,
    ]);
    want.extend_from_slice(&[0x02, 0x02]); // MBRType GPT, SignatureType GUID
                                           // FILEPATH_DEVICE_PATH: type 4, subtype 4, length 4 + 2 * 22.
    want.extend_from_slice(&[0x04, 0x04, 48, 0x00]);
    want.extend(ascii16z("\\EFI\\BOOT\\BOOTX64.EFI"));
    want.extend_from_slice(&[0x7f, 0xff, 0x04, 0x00]); // End Entire Device Path

    let got = opt.encode().unwrap();
    assert_eq!(got, want);
    assert_eq!(LoadOption::decode(&want).unwrap(), opt);
}

#[test]
fn load_options_round_trip_for_gpt_and_mbr_partitions() {
    let cases = [
        LoadOption::for_loader(
            "Red Hat Enterprise Linux",
            HardDrive {
                number: 15,
                start_lba: u64::MAX / 3,
                size_lba: 7,
                signature: PartitionSignature::Gpt(Uuid::new_v4()),
            },
            "\\EFI\\redhat\\shimx64.efi",
        ),
        LoadOption {
            attributes: 0,
            description: "Windows Boot Manager é".into(),
            path: vec![
                DevicePathNode::HardDrive(HardDrive {
                    number: 2,
                    start_lba: 63,
                    size_lba: 1000,
                    signature: PartitionSignature::Mbr(0xdead_beef),
                }),
                DevicePathNode::File("\\EFI\\Microsoft\\Boot\\bootmgfw.efi".into()),
            ],
            optional_data: b"WINDOWS\0".to_vec(),
        },
    ];
    for opt in cases {
        let bytes = opt.encode().unwrap();
        let back = LoadOption::decode(&bytes).unwrap();
        assert_eq!(back, opt);
        assert_eq!(back.file(), opt.file());
        assert_eq!(back.encode().unwrap(), bytes);
    }
    // MBR signature bytes sit at the start of the 16-byte field, type bytes 01 01.
    let mbr = LoadOption::for_loader(
        "x",
        HardDrive {
            number: 1,
            start_lba: 1,
            size_lba: 1,
            signature: PartitionSignature::Mbr(0x0102_0304),
        },
        "\\a",
    )
    .encode()
    .unwrap();
    let hd = 6 + 4;
    assert_eq!(&mbr[hd + 24..hd + 28], &[4, 3, 2, 1]);
    assert_eq!(&mbr[hd + 28..hd + 40], &[0; 12]);
    assert_eq!(&mbr[hd + 40..hd + 42], &[1, 1]);
}

#[test]
fn efivars_store_creates_replaces_and_orders_entries() {
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    assert!(vars.is_populated());
    assert!(vars.boot_entries().unwrap().is_empty());
    let a = expected_entry("ironic1", Uuid::new_v4(), "\\EFI\\BOOT\\BOOTX64.EFI");
    assert_eq!(vars.create_boot_entry(&a).unwrap(), 0);
    let b = expected_entry("other", Uuid::new_v4(), "\\EFI\\x.efi");
    assert_eq!(vars.create_boot_entry(&b).unwrap(), 1);
    assert_eq!(vars.boot_order().unwrap(), [1, 0]);
    assert_eq!(
        read_var(d.path(), "BootOrder").unwrap(),
        order_bytes(&[1, 0])
    );
    let raw = read_var(d.path(), "Boot0000").unwrap();
    assert_eq!(&raw[..4], &[7, 0, 0, 0]);
    assert_eq!(raw[4..], a.encode().unwrap()[..]);

    vars.delete_boot_entry(0).unwrap();
    assert!(read_var(d.path(), "Boot0000").is_none());
    assert_eq!(vars.boot_order().unwrap(), [1]);
    // The lowest free number is reused, and goes first.
    assert_eq!(vars.create_boot_entry(&a).unwrap(), 0);
    assert_eq!(vars.boot_order().unwrap(), [0, 1]);
    let entries = vars.boot_entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].option.as_ref().unwrap().description, "other");
}

// ---------------------------------------------------------------- manage_uefi on loop devices

#[test]
fn manage_uefi_writes_a_first_boot_entry_for_the_esp_loader() {
    let mounter = TestMounter::default();
    let disk = esp_disk(true, &[("EFI/BOOT/BOOTX64.EFI", b"MZ loader")]);
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let env = UefiEnv {
        dev_root: Path::new("/"),
        efivars: &vars,
        mounter: &mounter,
    };
    assert!(manage_uefi(&env, disk.dev.path(), None).unwrap());

    let want = expected_entry("ironic1", disk.esp_guid, "\\EFI\\BOOT\\BOOTX64.EFI");
    let mut want_bytes = ATTR_NV_BS_RT.to_le_bytes().to_vec();
    want_bytes.extend(want.encode().unwrap());
    assert_eq!(read_var(d.path(), "Boot0000").unwrap(), want_bytes);
    assert_eq!(read_var(d.path(), "BootOrder").unwrap(), order_bytes(&[0]));
    assert_eq!(want.attributes, LOAD_OPTION_ACTIVE);

    // A firmware entry exists and an old "ironic1" is first in line to be replaced.
    let other = expected_entry("UEFI Shell", Uuid::new_v4(), "\\shell.efi");
    let mut other_bytes = ATTR_NV_BS_RT.to_le_bytes().to_vec();
    other_bytes.extend(other.encode().unwrap());
    fs::write(var_path(d.path(), "Boot0001"), &other_bytes).unwrap();
    fs::write(var_path(d.path(), "BootOrder"), order_bytes(&[1, 0])).unwrap();
    assert!(manage_uefi(&env, disk.dev.path(), None).unwrap());
    assert_eq!(read_var(d.path(), "Boot0000").unwrap(), want_bytes);
    assert_eq!(read_var(d.path(), "Boot0001").unwrap(), other_bytes);
    assert!(
        read_var(d.path(), "Boot0002").is_none(),
        "no duplicate entry"
    );
    assert_eq!(
        read_var(d.path(), "BootOrder").unwrap(),
        order_bytes(&[0, 1])
    );
    // The partition node our code made was mounted as vfat, and unmounted each time;
    // the private mount point is gone.
    let log = mounter.log();
    assert_eq!(log.len(), 4, "{log:?}");
    let node = format!("{}p1", disk.dev.path().display());
    for pair in log.chunks(2) {
        let target = pair[1].strip_prefix("umount ").unwrap();
        assert_eq!(pair[0], format!("mount {node} {target} Fs(Some(\"vfat\"))"));
        assert!(!Path::new(target).exists(), "{target} left behind");
    }
}

#[test]
fn manage_uefi_follows_a_shim_csv_alone() {
    let mounter = TestMounter::default();
    let csv: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(
            "shimx64.efi,Red Hat Enterprise Linux,,This is the boot entry for RHEL\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let disk = esp_disk(
        true,
        &[
            ("EFI/BOOT/BOOTX64.EFI", b"MZ"),
            ("EFI/redhat/shimx64.efi", b"MZ"),
            ("EFI/redhat/BOOTX64.CSV", &csv),
        ],
    );
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let env = UefiEnv {
        dev_root: Path::new("/"),
        efivars: &vars,
        mounter: &mounter,
    };
    assert!(manage_uefi(&env, disk.dev.path(), None).unwrap());
    let entries = vars.boot_entries().unwrap();
    assert_eq!(entries.len(), 1, "the CSV wins alone");
    let opt = entries[0].option.clone().unwrap();
    assert_eq!(opt.description, "Red Hat Enterprise Linux");
    assert_eq!(opt.file(), Some("\\EFI\\redhat\\shimx64.efi"));
}

#[test]
fn an_empty_esp_is_not_done_and_writes_nothing() {
    let mounter = TestMounter::default();
    let disk = esp_disk(true, &[("EFI/README.txt", b"nothing to boot")]);
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let env = UefiEnv {
        dev_root: Path::new("/"),
        efivars: &vars,
        mounter: &mounter,
    };
    assert!(!manage_uefi(&env, disk.dev.path(), None).unwrap());
    let names: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("Timeout-{GLOBAL_GUID}")]);
}

#[test]
fn a_disk_without_esp_is_device_not_found_unless_its_uuid_is_given() {
    let mounter = TestMounter::default();
    let disk = esp_disk(false, &[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let env = UefiEnv {
        dev_root: Path::new("/"),
        efivars: &vars,
        mounter: &mounter,
    };
    let err = manage_uefi(&env, disk.dev.path(), None).unwrap_err();
    assert!(matches!(err, UefiError::NoEsp(_)), "{err}");
    let cmd = DeployError::from(err).to_command_error();
    assert_eq!(cmd.ipa_type(), "DeviceNotFound");
    assert!(cmd.details().starts_with(&format!(
        "No EFI partition could be detected on device {}",
        disk.dev.path().display()
    )));

    let err = manage_uefi(&env, disk.dev.path(), Some(&Uuid::new_v4().to_string())).unwrap_err();
    let cmd = DeployError::from(err).to_command_error();
    assert_eq!(cmd.ipa_type(), "DeviceNotFound");
    assert!(cmd.details().contains("No partition with UUID"), "{cmd}");
    assert!(read_var(d.path(), "BootOrder").is_none());

    // Found by its PARTUUID, the partition is used although its type is not ESP.
    assert!(manage_uefi(&env, disk.dev.path(), Some(&disk.esp_guid.to_string())).unwrap());
    assert_eq!(read_var(d.path(), "BootOrder").unwrap(), order_bytes(&[0]));
}

// ---------------------------------------------------------------- the command's policy

/// A sysroot whose `/dev`, `/proc` and `/sys/block` are the host's, with or without a
/// `sys/firmware/efi` (whose `efivars` is a plain directory).
fn sysroot(uefi: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let sys = root.path().join("sys");
    fs::create_dir_all(&sys).unwrap();
    for dir in ["block", "class", "devices", "dev"] {
        std::os::unix::fs::symlink(Path::new("/sys").join(dir), sys.join(dir)).unwrap();
    }
    for dir in ["dev", "proc", "run"] {
        std::os::unix::fs::symlink(Path::new("/").join(dir), root.path().join(dir)).unwrap();
    }
    if uefi {
        let vars = sys.join("firmware/efi/efivars");
        fs::create_dir_all(&vars).unwrap();
        fs::write(var_path(&vars, "Timeout"), [7, 0, 0, 0, 5, 0]).unwrap();
    }
    root
}

fn request(params: Value, default_ignore: bool) -> Request {
    bootloader_request(params.as_object().unwrap(), default_ignore).unwrap()
}

#[test]
fn run_takes_the_uefi_path_then_refuses_grub_unless_enabled() {
    let mounter = TestMounter::default();
    let disk = esp_disk(true, &[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
    let empty = esp_disk(true, &[]);

    // UEFI ramdisk, loader present: done, whatever root_uuid says.
    let root = sysroot(true);
    let vars = root.path().join("sys/firmware/efi/efivars");
    let env = BootEnv {
        sysroot: root.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: false,
    };
    run(
        &env,
        &request(
            json!({"root_uuid": "abcd", "target_boot_mode": "uefi"}),
            false,
        ),
    )
    .unwrap();
    assert_eq!(read_var(&vars, "BootOrder").unwrap(), order_bytes(&[0]));

    // Empty ESP: not done, so a root UUID leads to the refused GRUB path.
    let env = BootEnv {
        device: empty.dev.path(),
        ..env
    };
    let err = run(&env, &request(json!({"root_uuid": "abcd"}), false))
        .unwrap_err()
        .to_command_error();
    assert_eq!(
        err,
        CommandError::InvalidImage(BIOS_INSTALL_DISABLED.to_owned())
    );
    // A whole-disk image without a root UUID: nothing more to do.
    run(&env, &request(json!({"root_uuid": "0x00000000"}), false)).unwrap();
    run(&env, &request(json!({"root_uuid": null}), false)).unwrap();

    // BIOS ramdisk: the UEFI path is skipped; the efivars are never touched.
    let bios = sysroot(false);
    let env = BootEnv {
        sysroot: bios.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: false,
    };
    let err = run(&env, &request(json!({"root_uuid": "abcd"}), false))
        .unwrap_err()
        .to_command_error();
    assert_eq!(err.ipa_type(), "InvalidImage");
    assert_eq!(err.details(), BIOS_INSTALL_DISABLED);
    // Ignored failures succeed (parameter, or the agent option when it is null).
    run(
        &env,
        &request(
            json!({"root_uuid": "abcd", "ignore_bootloader_failure": true}),
            false,
        ),
    )
    .unwrap();
    run(
        &env,
        &request(
            json!({"root_uuid": "abcd", "ignore_bootloader_failure": null}),
            true,
        ),
    )
    .unwrap();
    assert!(run(
        &env,
        &request(
            json!({"root_uuid": "abcd", "ignore_bootloader_failure": false}),
            true
        )
    )
    .is_err());
    // Enabled, but the root UUID is on no partition: DeviceNotFound, never success.
    let env = BootEnv {
        enable_bios_bootloader_install: true,
        ..env
    };
    let err = run(&env, &request(json!({"root_uuid": "abcd"}), false))
        .unwrap_err()
        .to_command_error();
    assert_eq!(err.ipa_type(), "DeviceNotFound");
    assert!(
        err.details().contains("No partition with UUID abcd"),
        "{err}"
    );
}

#[test]
fn a_uefi_failure_fails_the_command_unless_ignored() {
    let mounter = TestMounter::default();
    let disk = esp_disk(false, &[]);
    let root = sysroot(true);
    let env = BootEnv {
        sysroot: root.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: false,
    };
    let err = run(&env, &request(json!({"root_uuid": null}), false))
        .unwrap_err()
        .to_command_error();
    assert_eq!(err.ipa_type(), "DeviceNotFound");
    // Ignored: the flow goes on; without a root UUID that is the end.
    run(
        &env,
        &request(
            json!({"root_uuid": null, "ignore_bootloader_failure": true}),
            false,
        ),
    )
    .unwrap();
    // Ignored, with a root UUID: the refused GRUB path is ignored too.
    run(
        &env,
        &request(
            json!({"root_uuid": "x", "ignore_bootloader_failure": true}),
            false,
        ),
    )
    .unwrap();
}

#[test]
fn bad_parameter_types_are_refused() {
    for params in [
        json!({"root_uuid": 5}),
        json!({"ignore_bootloader_failure": "yes"}),
    ] {
        let err = bootloader_request(params.as_object().unwrap(), false).unwrap_err();
        assert_eq!(err.ipa_type(), "InvalidCommandParamsError");
    }
}

// ---------------------------------------------------------------- through the agent state

fn state(
    dev: &Path,
    root: &Path,
    config_ignore: Option<bool>,
    enable_bios: bool,
) -> Arc<AgentState> {
    let config = Config {
        sysroot: root.to_path_buf(),
        ignore_bootloader_failure: config_ignore,
        ..agent::allowlist_config(vec![dev.display().to_string()])
    };
    let state = agent::state(config, inventory("bootloader-test", "bios"));
    *state.node.lock().unwrap() = Some(json!({
        "uuid": "5b0c7a1e-2f3d-4c5b-9a8e-7d6c5b4a3f21",
        "properties": {"root_device": {"name": dev.display().to_string()}},
        "instance_info": {},
    }));
    state.lookup.lock().unwrap().enable_bios_bootloader_install = enable_bios;
    state
}

#[tokio::test]
async fn the_command_refuses_bios_installs_with_the_cve_message() {
    let disk = esp_disk(true, &[]);
    let root = sysroot(false);
    let params = json!({"root_uuid": "abcd", "efi_system_part_uuid": null});
    let params = params.as_object().unwrap();

    let st = state(disk.dev.path(), root.path(), None, false);
    let err = install_bootloader(&st, params).await.unwrap_err();
    assert_eq!(err.ipa_type(), "InvalidImage");
    assert_eq!(err.details(), BIOS_INSTALL_DISABLED);

    // The agent option, and the parameter over it.
    let st = state(disk.dev.path(), root.path(), Some(true), false);
    assert_eq!(install_bootloader(&st, params).await.unwrap(), Value::Null);
    let mut p = params.clone();
    p.insert("ignore_bootloader_failure".into(), json!(false));
    assert!(install_bootloader(&st, &p).await.is_err());

    // Whole-disk image without a root UUID on a BIOS ramdisk: success, null result.
    let st = state(disk.dev.path(), root.path(), None, false);
    let p = json!({"root_uuid": null});
    assert_eq!(
        install_bootloader(&st, p.as_object().unwrap())
            .await
            .unwrap(),
        Value::Null
    );
}

#[test]
fn efivarfs_files_are_replaced_not_truncated() {
    // A longer old BootOrder is fully replaced by a shorter new one.
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    vars.set_boot_order(&[3, 2, 1, 0]).unwrap();
    vars.set_boot_order(&[7]).unwrap();
    assert_eq!(read_var(d.path(), "BootOrder").unwrap(), order_bytes(&[7]));
}

// ---------------------------------------------------------------- the GRUB path

const FAKE_GRUB_INSTALL: &str = r#"#!/bin/sh
{
  echo "grub-install $*"
  [ -c /dev/null ] && echo dev-ok
  [ -e /proc/self/mounts ] && echo proc-ok
  [ -d /sys/block ] && echo sys-ok
  [ -e /boot/efi/EFI/BOOT/BOOTX64.EFI ] && echo esp-ok
} >> /install.log
exit 0
"#;

const FAKE_GRUB_MKCONFIG: &str = r##"#!/bin/sh
echo "grub-mkconfig $* os_prober_disabled=$GRUB_DISABLE_OS_PROBER" >> /install.log
echo "# generated" > "$2"
"##;

/// An image root with a dynamically linked `/bin/sh` (the host's dash and its libraries)
/// and shell scripts standing in for `grub-install` and `grub-mkconfig`.
fn image_root(efi_link: Option<&str>) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "bin",
        "usr/sbin",
        "etc",
        "boot/grub",
        "dev",
        "proc",
        "sys",
        "run",
    ] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    match efi_link {
        Some(target) => std::os::unix::fs::symlink(target, r.join("boot/efi")).unwrap(),
        None => fs::create_dir_all(r.join("boot/efi")).unwrap(),
    }
    let real_sh = fs::canonicalize("/bin/sh").unwrap();
    fs::copy(&real_sh, r.join("bin/sh")).unwrap();
    let ldd = sh("ldd", &[&real_sh.display().to_string()]);
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = r.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(lib, dest).unwrap();
    }
    for (name, body) in [
        ("grub-install", FAKE_GRUB_INSTALL),
        ("grub-mkconfig", FAKE_GRUB_MKCONFIG),
    ] {
        let p = r.join("usr/sbin").join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(r.join("etc/fstab"), "UUID=abc / ext4 defaults 0 1").unwrap();
    root
}

/// Puts an ext4 made from `dir` with filesystem UUID `uuid` into partition 2.
fn write_root_fs(disk: &EspDisk, dir: &Path, uuid: Uuid) {
    let img = tempfile::NamedTempFile::new().unwrap();
    let uuid = uuid.to_string();
    let dir = dir.display().to_string();
    let img_path = img.path().display().to_string();
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-U", &uuid, "-d", &dir, &img_path, "30M"],
    );
    let data = fs::read(img.path()).unwrap();
    assert!(data.len() as u64 <= ROOT_SECTORS * 512);
    let allow = AllowList::new(vec![disk.dev.path().display().to_string()]);
    let f = open_for_write(disk.dev.path(), &allow).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &data, (ESP_FIRST + ESP_SECTORS) * 512).unwrap();
    f.sync_all().unwrap();
}

fn debugfs_cat(node: &str, path: &str) -> String {
    sh("debugfs", &["-R", &format!("cat {path}"), node])
}

/// Every mount in `calls` was undone (an unmount may be retried while busy), newest
/// first, and none is left in the mount table.
fn assert_all_unmounted(calls: &[String]) {
    let mut stack: Vec<&str> = Vec::new();
    for c in calls {
        if let Some(rest) = c.strip_prefix("mount ") {
            stack.push(rest.split(' ').nth(1).unwrap());
        } else if let Some(target) = c.strip_prefix("umount ") {
            // A retry repeats the last unmount; anything else must be the newest mount.
            if stack.last() == Some(&target) {
                stack.pop();
            }
        }
    }
    assert!(stack.is_empty(), "left mounted: {stack:?} in {calls:?}");
    for c in calls {
        if let Some(rest) = c.strip_prefix("mount ") {
            assert!(!mounted_at(rest.split(' ').nth(1).unwrap()), "{c}");
        }
    }
}

fn mounted_at(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target))
}

#[test]
fn grub_runs_in_the_image_root_with_dev_proc_sys_and_unmounts_everything() {
    let disk = esp_disk(true, &[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
    let root_uuid = Uuid::new_v4();
    let tree = image_root(None);
    write_root_fs(&disk, tree.path(), root_uuid);
    let sysroot = sysroot(false);
    let mounter = TestMounter::default();
    let env = BootEnv {
        sysroot: sysroot.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: true,
    };
    run(
        &env,
        &request(json!({"root_uuid": root_uuid.to_string()}), false),
    )
    .unwrap();

    let dev = disk.dev.path().display().to_string();
    let node = format!("{dev}p2");
    let log = debugfs_cat(&node, "/install.log");
    assert_eq!(
        log,
        format!(
            "grub-install {dev}\ndev-ok\nproc-ok\nsys-ok\n\
             grub-mkconfig -o /boot/grub/grub.cfg os_prober_disabled=true\n"
        )
    );
    assert_eq!(debugfs_cat(&node, "/boot/grub/grub.cfg"), "# generated\n");
    // No ESP given: fstab untouched.
    assert_eq!(
        debugfs_cat(&node, "/etc/fstab"),
        "UUID=abc / ext4 defaults 0 1"
    );
    let calls = mounter.log();
    let mounts: Vec<&String> = calls.iter().filter(|c| c.starts_with("mount ")).collect();
    let umounts: Vec<&String> = calls.iter().filter(|c| c.starts_with("umount ")).collect();
    assert_eq!(mounts.len(), 5, "{calls:?}"); // root, dev, proc, run, sys
    assert_all_unmounted(&calls);
    let target = mounts[0].split(' ').nth(2).unwrap();
    // The node resolves under the agent's sysroot (here a link farm to the host's /dev).
    let rooted = sysroot.path().join(node.trim_start_matches('/'));
    assert!(mounts[0].starts_with(&format!("mount {} ", rooted.display())));
    assert_eq!(
        umounts.last().unwrap(),
        &&format!("umount {target}"),
        "root unmounted last"
    );
    assert!(!mounted_at(target) && !Path::new(target).exists());
}

#[test]
fn grub_with_an_esp_mounts_it_inside_the_root_and_records_it_in_fstab() {
    let disk = esp_disk(true, &[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
    let root_uuid = Uuid::new_v4();
    // A hostile image: /boot/efi is an absolute symlink; it must resolve inside the
    // image, never on the ramdisk (where /esp-elsewhere does not even exist).
    let tree = image_root(Some("/esp-elsewhere"));
    fs::create_dir(tree.path().join("esp-elsewhere")).unwrap();
    write_root_fs(&disk, tree.path(), root_uuid);
    let sysroot = sysroot(false);
    let mounter = TestMounter::default();
    let env = BootEnv {
        sysroot: sysroot.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: true,
    };
    let esp_uuid = disk.esp_guid.to_string();
    run(
        &env,
        &request(
            json!({"root_uuid": root_uuid.to_string(), "efi_system_part_uuid": esp_uuid}),
            false,
        ),
    )
    .unwrap();

    let dev = disk.dev.path().display().to_string();
    let node = format!("{dev}p2");
    let log = debugfs_cat(&node, "/install.log");
    assert!(
        log.starts_with("grub-install \ndev-ok\nproc-ok\nsys-ok\nesp-ok\n"),
        "{log}"
    );
    assert!(log.contains("grub-install --removable\n"), "{log}");
    assert_eq!(
        debugfs_cat(&node, "/etc/fstab"),
        format!("UUID=abc / ext4 defaults 0 1\nPARTUUID={esp_uuid}\t/boot/efi\tvfat\tumask=0077\t0\t1\n")
    );
    let calls = mounter.log();
    let root_target = calls[0].split(' ').nth(2).unwrap().to_owned();
    let esp_mount = calls
        .iter()
        .find(|c| c.contains(&format!("{dev}p1 ")))
        .expect("ESP mounted");
    assert!(
        esp_mount.contains(&format!("{root_target}/esp-elsewhere ")),
        "ESP mounted outside the image root: {esp_mount}"
    );
    let n_mounts = calls.iter().filter(|c| c.starts_with("mount ")).count();
    assert_eq!(n_mounts, 6, "{calls:?}");
    assert_all_unmounted(&calls);
    assert!(!mounted_at(&root_target));
}

#[test]
fn a_failing_grub_install_is_a_command_execution_error_and_unmounts() {
    let disk = esp_disk(true, &[]);
    let root_uuid = Uuid::new_v4();
    let tree = image_root(None);
    fs::write(
        tree.path().join("usr/sbin/grub-install"),
        "#!/bin/sh\necho 'no space for core.img' >&2\nexit 1\n",
    )
    .unwrap();
    write_root_fs(&disk, tree.path(), root_uuid);
    let sysroot = sysroot(false);
    let mounter = TestMounter::default();
    let env = BootEnv {
        sysroot: sysroot.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: true,
    };
    let err = run(
        &env,
        &request(json!({"root_uuid": root_uuid.to_string()}), false),
    )
    .unwrap_err()
    .to_command_error();
    assert_eq!(err.ipa_type(), "CommandExecutionError");
    let details = err.details();
    assert!(
        details.starts_with(&format!(
            "Installing GRUB2 boot loader to device {} failed with",
            disk.dev.path().display()
        )),
        "{details}"
    );
    assert!(details.contains("no space for core.img"), "{details}");
    let calls = mounter.log();
    assert_all_unmounted(&calls);
    // Ignored, the same failure is a success.
    run(
        &env,
        &request(
            json!({"root_uuid": root_uuid.to_string(), "ignore_bootloader_failure": true}),
            false,
        ),
    )
    .unwrap();
}

fn mtype(node: &str, path: &str) -> String {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", node, &format!("::{path}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_partition_images_efi_assets_are_preserved_and_registered_without_grub_install() {
    let disk = esp_disk(true, &[]);
    let root_uuid = Uuid::new_v4();
    let tree = image_root(None);
    let t = tree.path();
    // A grub2 image (Red Hat naming) whose ESP content sits in the root filesystem.
    for name in ["install", "mkconfig"] {
        fs::rename(
            t.join(format!("usr/sbin/grub-{name}")),
            t.join(format!("usr/sbin/grub2-{name}")),
        )
        .unwrap();
    }
    fs::create_dir_all(t.join("boot/grub2")).unwrap();
    fs::write(t.join("boot/grub2/grubenv"), "# GRUB Environment Block\n").unwrap();
    fs::create_dir_all(t.join("boot/efi/EFI/BOOT")).unwrap();
    fs::create_dir_all(t.join("boot/efi/EFI/fedora")).unwrap();
    fs::write(t.join("boot/efi/EFI/BOOT/BOOTX64.EFI"), "MZ shim").unwrap();
    fs::write(t.join("boot/efi/EFI/fedora/grubx64.efi"), "MZ grub").unwrap();
    fs::write(t.join("boot/efi/EFI/fedora/grub.cfg"), "configfile stub").unwrap();
    write_root_fs(&disk, tree.path(), root_uuid);

    let sysroot = sysroot(true);
    let vars = sysroot.path().join("sys/firmware/efi/efivars");
    let mounter = TestMounter::default();
    let env = BootEnv {
        sysroot: sysroot.path(),
        device: disk.dev.path(),
        mounter: &mounter,
        enable_bios_bootloader_install: true,
    };
    let esp_uuid = disk.esp_guid.to_string();
    // The ESP is empty, so the UEFI step finds nothing and GRUB's path takes over.
    run(
        &env,
        &request(
            json!({"root_uuid": root_uuid.to_string(), "efi_system_part_uuid": esp_uuid,
                   "target_boot_mode": "uefi"}),
            false,
        ),
    )
    .unwrap();

    let dev = disk.dev.path().display().to_string();
    let root_node = format!("{dev}p2");
    let esp_node = format!("{dev}p1");
    // GRUB's config regenerated, grub-install never run.
    assert_eq!(
        debugfs_cat(&root_node, "/install.log"),
        "grub-mkconfig -o /boot/grub2/grub.cfg os_prober_disabled=true\n"
    );
    // The assets are on the ESP, with grub.cfg and grubenv added where missing.
    assert_eq!(mtype(&esp_node, "/EFI/BOOT/BOOTX64.EFI"), "MZ shim");
    assert_eq!(mtype(&esp_node, "/EFI/fedora/grubx64.efi"), "MZ grub");
    assert_eq!(mtype(&esp_node, "/EFI/fedora/grub.cfg"), "configfile stub");
    assert_eq!(mtype(&esp_node, "/EFI/BOOT/grub.cfg"), "# generated\n");
    assert_eq!(
        mtype(&esp_node, "/EFI/fedora/grubenv"),
        "# GRUB Environment Block\n"
    );
    // Registered natively, first in BootOrder; the ESP recorded in the image's fstab.
    let entries = EfiVars::new(&vars).boot_entries().unwrap();
    assert_eq!(entries.len(), 1);
    let opt = entries[0].option.clone().unwrap();
    assert_eq!(opt.description, "ironic1");
    assert_eq!(opt.file(), Some("\\EFI\\BOOT\\BOOTX64.EFI"));
    assert_eq!(read_var(&vars, "BootOrder").unwrap(), order_bytes(&[0]));
    assert_eq!(
        debugfs_cat(&root_node, "/etc/fstab"),
        format!("UUID=abc / ext4 defaults 0 1\nPARTUUID={esp_uuid}\t/boot/efi\tvfat\tumask=0077\t0\t1\n")
    );
    let calls = mounter.log();
    assert_all_unmounted(&calls);
}

#[test]
fn immutable_variables_are_unlocked_before_they_are_replaced_or_deleted() {
    // efivarfs marks boot variables immutable; an ext4 temp dir can carry the same flag.
    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let old = expected_entry("ironic1", Uuid::new_v4(), "\\EFI\\old.efi");
    assert_eq!(vars.create_boot_entry(&old).unwrap(), 0);
    let boot0 = var_path(d.path(), "Boot0000").display().to_string();
    let order = var_path(d.path(), "BootOrder").display().to_string();
    sh("chattr", &["+i", &boot0, &order]);
    assert!(
        fs::remove_file(&boot0).is_err(),
        "the flag must really block a plain delete"
    );
    vars.delete_boot_entry(0).unwrap();
    assert!(read_var(d.path(), "Boot0000").is_none());
    assert_eq!(read_var(d.path(), "BootOrder").unwrap(), order_bytes(&[]));
}

#[test]
fn a_stale_kernel_partition_is_replaced_before_the_esp_is_mounted() {
    let disk = esp_disk(true, &[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
    let dev = disk.dev.path().display().to_string();
    // What the kernel kept from an older table: partition 1 somewhere else.
    let _ = Command::new("delpart").args([&dev, "1"]).output();
    sh("addpart", &[&dev, "1", "4096", "8192"]);
    let sys = format!("/sys/class/block/{}p1", disk.dev.name());
    assert_eq!(
        fs::read_to_string(format!("{sys}/start")).unwrap().trim(),
        "4096"
    );

    let d = efivars_dir();
    let vars = EfiVars::new(d.path());
    let mounter = TestMounter::default();
    let env = UefiEnv {
        dev_root: Path::new("/"),
        efivars: &vars,
        mounter: &mounter,
    };
    assert!(manage_uefi(&env, disk.dev.path(), None).unwrap());
    assert_eq!(
        fs::read_to_string(format!("{sys}/start")).unwrap().trim(),
        ESP_FIRST.to_string()
    );
    assert_eq!(
        fs::read_to_string(format!("{sys}/size")).unwrap().trim(),
        ESP_SECTORS.to_string()
    );
    assert_eq!(read_var(d.path(), "BootOrder").unwrap(), order_bytes(&[0]));
}
