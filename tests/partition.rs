//! Partition tables on sparse files and loop devices, checked with real readers
//! (`sfdisk --json`, `sgdisk -v`, `blkid -p`, `wipefs`), fixtures built at test time
//! with `sfdisk`, `sgdisk`, `genisoimage`, `mkfs.vfat` and `mkswap`.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use common::blockio::{read_at, write_at};
use common::cmd::{blkid_probe, run, sfdisk_json, spawn_with_stdin, tag};
use common::loopdev::LoopDev;
use ira::blockdev::{open_for_write, AllowList};
use ira::partition::configdrive::{self, ConfigDriveError, ConfigDriveImage};
use ira::partition::fat::{make_fat32, ESP_LABEL};
use ira::partition::find::{describe, find_by_uuid, FindError};
use ira::partition::fixup::{self, GptFix, ValidateError};
use ira::partition::gpt::{types, Gpt, GptEntry};
use ira::partition::layout::{BootMode, Layout, LayoutError, LayoutRequest, Role};
use ira::partition::swap::{make_swap, SWAP_LABEL};
use ira::partition::table::TableKind;
use ira::partition::{wipe, Geometry, MIB};
use ira::sys::block;
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";

// ---------------------------------------------------------------- helpers

/// A sparse file of `size` bytes with the partition table sfdisk makes from `script`.
fn sfdisk_image(size: u64, script: &str) -> tempfile::NamedTempFile {
    let img = sparse(size);
    run_stdin("sfdisk", &["--quiet", img.path().to_str().unwrap()], script);
    img
}

/// The bytes of a FAT filesystem of `kib` KiB made by `mkfs.vfat` with `options`.
fn vfat_image(options: &[&str], kib: u32) -> Vec<u8> {
    let fat = tempfile::NamedTempFile::new().unwrap();
    std::fs::remove_file(fat.path()).unwrap();
    let mut args = vec!["-C"];
    args.extend_from_slice(options);
    let size = kib.to_string();
    args.extend([fat.path().to_str().unwrap(), &size]);
    run("mkfs.vfat", &args);
    std::fs::read(fat.path()).unwrap()
}

fn run_stdin(cmd: &str, args: &[&str], input: &str) {
    let child = spawn_with_stdin(
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        input.as_bytes(),
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sparse(size: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    f
}

/// The write door, with the allow-list set to this one path.
fn open(path: &Path) -> File {
    open_for_write(path, &AllowList::new(vec![path.display().to_string()])).unwrap()
}

fn geometry(f: &File) -> Geometry {
    Geometry::of_file(f).unwrap()
}

fn sgdisk_verify(path: &Path) -> String {
    run("sgdisk", &["-v", path.to_str().unwrap()])
}

/// The config drive these tests place, with 300 KiB of user data.
fn config_drive_iso() -> Vec<u8> {
    common::fixtures::config_drive_iso(br#"{"uuid": "1be26c0b"}"#, Some(&[b'x'; 300 << 10]))
}

fn gzip_base64(data: &[u8]) -> String {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap())
}

/// A loop device with 4096-byte logical sectors over a sparse file of `size` bytes.
fn loop_4k(size: u64) -> LoopDev {
    LoopDev::builder(size)
        .sector_size(4096)
        .direct_io(false)
        .attach()
}

fn parts(t: &Value) -> Vec<Value> {
    t["partitions"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------- layouts

#[test]
fn bios_msdos_layout_with_every_role_reads_back_in_sfdisk() {
    let img = sparse(4 << 30);
    let mut f = open(img.path());
    let g = geometry(&f);
    let mut req = LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 1024);
    req.ephemeral_mib = 100;
    req.swap_mib = 100;
    req.configdrive_mib = 64;
    let layout = Layout::plan(&req, g).unwrap();
    let written = layout.write(&mut f, g, Path::new("/dev/sda")).unwrap();

    let t = sfdisk_json(img.path());
    assert_eq!(t["label"], "dos");
    let p = parts(&t);
    // What `parted -a optimal -s -- unit MiB mklabel msdos mkpart ...` produced for the
    // same request (checked by hand against parted 3.5).
    let expect = [
        (2048, 204800, "83"),
        (206848, 204800, "82"),
        (411648, 131072, "83"),
        (542720, 2097152, "83"),
    ];
    assert_eq!(p.len(), 4);
    for (got, (start, size, kind)) in p.iter().zip(expect) {
        assert_eq!(
            (
                got["start"].as_u64().unwrap(),
                got["size"].as_u64().unwrap()
            ),
            (start, size)
        );
        assert_eq!(got["type"], kind);
    }
    assert_eq!(p[3]["bootable"], true);
    assert!(p[..3].iter().all(|x| x.get("bootable").is_none()));
    let id = t["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .to_owned();
    assert_ne!(id, "00000000");
    assert_eq!(
        written.get(Role::Root).unwrap().part_uuid,
        format!("{id}-04")
    );
    let map = written.partitions_map();
    assert_eq!(map["ephemeral"], "/dev/sda1");
    assert_eq!(map["swap"], "/dev/sda2");
    assert_eq!(map["configdrive"], "/dev/sda3");
    assert_eq!(map["root"], "/dev/sda4");
    fixup::validate_partitioning(&mut f, g, img.path()).unwrap();
}

#[test]
fn bios_gpt_layout_on_a_loop_device_has_bios_grub_and_verifies_clean() {
    let dev = LoopDev::new(1 << 30);
    let mut f = open(dev.path());
    let g = geometry(&f);
    assert_eq!(g.sector_size(), 512);
    let mut req = LayoutRequest::new(BootMode::Bios, TableKind::Gpt, 512);
    req.swap_mib = 64;
    let written = Layout::plan(&req, g)
        .unwrap()
        .write(&mut f, g, dev.path())
        .unwrap();
    block::rescan(&f)
        .or_else(|e| match e {
            // LoopDev has no partscan: the kernel refuses to re-read, which is what we expect.
            block::IoctlError::Reread(nix::errno::Errno::EINVAL) => Ok(()),
            e => Err(e),
        })
        .unwrap();

    let t = sfdisk_json(dev.path());
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["lastlba"].as_u64().unwrap(), g.sectors() - 34);
    let p = parts(&t);
    assert_eq!(p.len(), 3);
    assert_eq!(p[0]["type"], types::BIOS_BOOT.to_string().to_uppercase());
    assert_eq!(
        (p[0]["start"].as_u64(), p[0]["size"].as_u64()),
        (Some(2048), Some(2048))
    );
    assert_eq!(p[1]["type"], types::LINUX_SWAP.to_string().to_uppercase());
    assert_eq!(p[2]["type"], types::LINUX_FS.to_string().to_uppercase());
    assert!(p.iter().all(|x| x["name"] == "primary"));
    assert_eq!(
        p[2]["uuid"].as_str().unwrap().to_lowercase(),
        written.get(Role::Root).unwrap().part_uuid
    );
    let v = sgdisk_verify(dev.path());
    assert!(v.contains("No problems found"), "{v}");
    let name = dev.name();
    assert_eq!(
        written.get(Role::Root).unwrap().path,
        PathBuf::from(format!("/dev/{name}p3")),
        "loop names end in a digit"
    );
}

#[test]
fn uefi_layout_on_a_4k_loop_device_puts_the_esp_at_1_mib() {
    let dev = loop_4k(2 << 30);
    let mut f = open(dev.path());
    let g = geometry(&f);
    assert_eq!(g.sector_size(), 4096);
    let mut req = LayoutRequest::new(BootMode::Uefi, TableKind::Gpt, 1024);
    req.ephemeral_mib = 16;
    req.configdrive_mib = 2;
    let written = Layout::plan(&req, g)
        .unwrap()
        .write(&mut f, g, dev.path())
        .unwrap();
    let t = sfdisk_json(dev.path());
    assert_eq!(t["sectorsize"], 4096);
    assert_eq!(t["firstlba"], 6);
    let p = parts(&t);
    assert_eq!(p[0]["type"], types::EFI_SYSTEM.to_string().to_uppercase());
    assert_eq!(
        (p[0]["start"].as_u64(), p[0]["size"].as_u64()),
        (Some(256), Some(550 * 256))
    );
    assert_eq!(p.len(), 4);
    assert_eq!(
        p[3]["start"].as_u64().unwrap() * 4096,
        written.get(Role::Root).unwrap().start
    );
    let v = sgdisk_verify(dev.path());
    assert!(v.contains("No problems found"), "{v}");
}

#[test]
fn layout_too_big_for_the_disk_is_refused_before_writing() {
    let img = sparse(256 * MIB);
    let f = open(img.path());
    let g = geometry(&f);
    let err =
        Layout::plan(&LayoutRequest::new(BootMode::Uefi, TableKind::Gpt, 100), g).unwrap_err();
    assert!(
        matches!(
            err,
            LayoutError::DoesNotFit {
                needed_mib: 651,
                usable_mib: 255
            }
        ),
        "{err}"
    );
    assert!(read_at(img.path(), 0, 4096).iter().all(|&b| b == 0));
}

#[test]
fn swap_is_recognised_by_blkid_and_found_by_uuid() {
    let dev = LoopDev::new(256 * MIB);
    let mut f = open(dev.path());
    let g = geometry(&f);
    let mut req = LayoutRequest::new(BootMode::Bios, TableKind::Msdos, 64);
    req.swap_mib = 32;
    let written = Layout::plan(&req, g)
        .unwrap()
        .write(&mut f, g, dev.path())
        .unwrap();
    let swap = written.get(Role::Swap).unwrap();
    let uuid = Uuid::new_v4();
    make_swap(&mut f, swap.start, swap.size, 4096, SWAP_LABEL, uuid).unwrap();
    f.sync_all().unwrap();

    let tags = blkid_probe(dev.path(), swap.start, Some(swap.size));
    assert_eq!(tag(&tags, "TYPE"), Some("swap"), "{tags:?}");
    assert_eq!(tag(&tags, "LABEL"), Some("swap1"));
    assert_eq!(tag(&tags, "UUID"), Some(uuid.to_string().as_str()));

    let found = find_by_uuid(&mut f, g, dev.path(), &uuid.to_string().to_uppercase()).unwrap();
    assert_eq!(found.info.number, swap.number);
    let root = written.get(Role::Root).unwrap();
    let by_partuuid = find_by_uuid(&mut f, g, dev.path(), &root.part_uuid).unwrap();
    assert_eq!(by_partuuid.path, root.path);
    let by_label = find_by_uuid(&mut f, g, dev.path(), "swap1").unwrap();
    assert_eq!(by_label.info.number, swap.number);
    let err = find_by_uuid(&mut f, g, Path::new("/dev/sdq"), "nope").unwrap_err();
    assert!(matches!(err, FindError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "No partition with UUID nope found on device /dev/sdq"
    );
}

#[test]
fn esp_made_natively_passes_fsck_fat_at_both_sector_sizes() {
    for ss in [512u64, 4096] {
        let img = sparse(1 << 30);
        let mut f = open(img.path());
        let g = Geometry::new(1 << 30, ss).unwrap();
        let written = Layout::plan(&LayoutRequest::new(BootMode::Uefi, TableKind::Gpt, 100), g)
            .unwrap()
            .write(&mut f, g, Path::new("/dev/sda"))
            .unwrap();
        let esp = written.get(Role::EfiSystem).unwrap();
        assert_eq!((esp.start, esp.size), (MIB, 550 * MIB));
        let vol = make_fat32(&mut f, esp.start, esp.size, ss, ESP_LABEL, rand_id()).unwrap();
        f.sync_all().unwrap();
        assert_eq!(vol.cluster_size, 4096);

        let copy = tempfile::NamedTempFile::new().unwrap();
        run(
            "dd",
            &[
                &format!("if={}", img.path().display()),
                &format!("of={}", copy.path().display()),
                "bs=1M",
                "skip=1",
                "count=550",
                "conv=sparse",
                "status=none",
            ],
        );
        let fsck = run("fsck.fat", &["-n", "-v", copy.path().to_str().unwrap()]);
        assert!(fsck.contains("2 FATs, 32 bit entries"), "{fsck}");
        assert!(
            fsck.contains(&format!("{ss} bytes per logical sector")),
            "{fsck}"
        );
        let tags = blkid_probe(img.path(), esp.start, Some(esp.size));
        assert_eq!(tag(&tags, "TYPE"), Some("vfat"), "{tags:?}");
        assert_eq!(tag(&tags, "LABEL"), Some("efi-part"));
        assert_eq!(tag(&tags, "UUID"), Some(vol.uuid().as_str()));
    }
}

fn rand_id() -> u32 {
    u32::from_le_bytes(Uuid::new_v4().as_bytes()[..4].try_into().unwrap())
}

// ---------------------------------------------------------------- filesystem probes

#[test]
fn probes_agree_with_blkid_on_iso_and_vfat() {
    let img = sfdisk_image(
        128 * MIB,
        "label: gpt\nstart=2048, size=32768\nstart=36864, size=65536\n",
    );
    let iso = config_drive_iso();
    write_at(img.path(), 2048 * 512, &iso);
    let fat = vfat_image(&["-n", "CONFIG-2", "-i", "1a2b3c4d"], 32768);
    write_at(img.path(), 36864 * 512, &fat);

    let mut f = open(img.path());
    let g = geometry(&f);
    let parts = describe(&mut f, g, Path::new("/dev/vdb")).unwrap();
    for p in &parts {
        let tags = blkid_probe(img.path(), p.info.start, Some(p.info.size));
        let fs = p.fs.as_ref().unwrap();
        assert_eq!(Some(fs.kind.as_str()), tag(&tags, "TYPE"));
        assert_eq!(fs.label.as_deref(), tag(&tags, "LABEL"));
        assert_eq!(fs.uuid.as_deref(), tag(&tags, "UUID"));
    }
    assert_eq!(parts[1].fs_uuid(), Some("1A2B-3C4D"));
    assert_eq!(parts[1].path, Path::new("/dev/vdb2"));
}

// ---------------------------------------------------------------- config drive

#[test]
fn config_drive_on_a_gpt_whole_disk_image_on_a_loop_device() {
    // A 96 MiB GPT image (as sfdisk makes it) written to a 512 MiB disk.
    let image = sfdisk_image(96 * MIB, "label: gpt\nstart=2048, size=20480, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=22528, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n");
    let dev = LoopDev::new(512 * MIB);
    write_at(dev.path(), 0, &std::fs::read(image.path()).unwrap());
    assert!(sgdisk_verify(dev.path()).contains("doesn't reside\nat the end of the disk"));

    let iso = config_drive_iso();
    let cd = configdrive::decode_inline(&gzip_base64(&iso), NODE).unwrap();
    assert_eq!(cd.label().as_deref(), Some("config-2"));
    let mut f = open(dev.path());
    let g = geometry(&f);
    let placed = configdrive::place_on_whole_disk(&mut f, g, dev.path(), NODE, &cd).unwrap();
    f.sync_all().unwrap();

    assert!(placed.created);
    assert_eq!(placed.number, 3);
    assert_eq!(placed.path, PathBuf::from(format!("/dev/{}p3", dev.name())));
    let v = sgdisk_verify(dev.path());
    assert!(v.contains("No problems found"), "{v}");
    let t = sfdisk_json(dev.path());
    let p = parts(&t);
    let last = g.sectors() - 34;
    assert_eq!(
        p[2]["start"].as_u64().unwrap() + p[2]["size"].as_u64().unwrap() - 1,
        last
    );
    assert!(p[2]["size"].as_u64().unwrap() >= 131072);
    assert_eq!(p[2]["start"].as_u64().unwrap() % 2048, 0);
    let tags = blkid_probe(dev.path(), placed.start, Some(placed.size));
    assert_eq!(tag(&tags, "LABEL"), Some("config-2"));
    assert_eq!(tag(&tags, "TYPE"), Some("iso9660"));
    assert_eq!(read_at(dev.path(), placed.start, iso.len()), iso);

    // A second run reuses the partition instead of adding another.
    let again = configdrive::place_on_whole_disk(&mut f, g, dev.path(), NODE, &cd).unwrap();
    assert!(!again.created);
    assert_eq!(again.number, 3);
    assert_eq!(parts(&sfdisk_json(dev.path())).len(), 3);
}

#[test]
fn config_drive_on_an_mbr_image_takes_the_last_64_mib() {
    let img = sfdisk_image(1 << 30, "label: dos\nlabel-id: 0x1a2b3c4d\nstart=2048, size=204800, type=83, bootable\nstart=206848, size=204800, type=82\n");
    let iso = config_drive_iso();
    let cd = configdrive::decode_downloaded(gzip_base64(&iso).as_bytes(), NODE).unwrap();
    let mut f = open(img.path());
    let g = geometry(&f);
    let placed =
        configdrive::place_on_whole_disk(&mut f, g, Path::new("/dev/sda"), NODE, &cd).unwrap();
    assert_eq!(placed.path, Path::new("/dev/sda3"));
    let t = sfdisk_json(img.path());
    let p = parts(&t);
    assert_eq!(p.len(), 3);
    assert_eq!(p[2]["type"], "c");
    assert_eq!(
        (p[2]["start"].as_u64(), p[2]["size"].as_u64()),
        (Some(g.sectors() - 131072), Some(131072))
    );
    assert_eq!(p[0]["bootable"], true, "existing entries are kept");
    assert_eq!(t["id"], "0x1a2b3c4d", "the disk signature is kept");
    let tags = blkid_probe(img.path(), placed.start, Some(placed.size));
    assert_eq!(tag(&tags, "LABEL"), Some("config-2"));
    assert_eq!(fixup::whole_disk_root_uuid(&mut f).unwrap(), "0x1a2b3c4d");
}

#[test]
fn config_drive_refused_on_an_mbr_with_four_primaries() {
    let img = sfdisk_image(1 << 30, "label: dos\nstart=2048, size=2048\nstart=4096, size=2048\nstart=6144, size=2048\nstart=8192, size=2048, type=5\n");
    let cd = ConfigDriveImage::from_bytes(config_drive_iso(), NODE).unwrap();
    let mut f = open(img.path());
    let g = geometry(&f);
    let before = read_at(img.path(), 0, 512);
    let err =
        configdrive::place_on_whole_disk(&mut f, g, Path::new("/dev/sdb"), NODE, &cd).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Config drive cannot be created for node {NODE}. Disk (/dev/sdb) uses MBR partitioning and already has 4 primary partitions.")
    );
    assert_eq!(read_at(img.path(), 0, 512), before, "nothing was written");
}

#[test]
fn existing_config_2_partitions_are_reused_and_duplicates_refused() {
    let img = sfdisk_image(
        256 * MIB,
        "label: gpt\nstart=2048, size=65536\nstart=67584, size=65536\nstart=133120, size=65536\n",
    );
    let old = config_drive_iso();
    write_at(img.path(), 67584 * 512, &old);
    let mut f = open(img.path());
    let g = geometry(&f);
    let cd = ConfigDriveImage::from_bytes(config_drive_iso(), NODE).unwrap();
    let placed =
        configdrive::place_on_whole_disk(&mut f, g, Path::new("/dev/sdc"), NODE, &cd).unwrap();
    assert!(!placed.created);
    assert_eq!(placed.path, Path::new("/dev/sdc2"));
    assert_eq!(
        read_at(img.path(), 67584 * 512, cd.as_bytes().len()),
        cd.as_bytes()
    );
    assert_eq!(parts(&sfdisk_json(img.path())).len(), 3);

    // A vfat CONFIG-2 (IPA's rebuilt form) in partition 3 makes two: refused.
    let fat = vfat_image(&["-n", "CONFIG-2"], 32768);
    write_at(img.path(), 133120 * 512, &fat);
    let err =
        configdrive::place_on_whole_disk(&mut f, g, Path::new("/dev/sdc"), NODE, &cd).unwrap_err();
    assert!(matches!(err, ConfigDriveError::Duplicate { .. }));
    assert_eq!(
        err.to_string(),
        format!("More than one partition with label \"config-2\" exists on device /dev/sdc for node {NODE}: /dev/sdc2 and /dev/sdc3.")
    );
}

#[test]
fn config_drive_without_room_at_the_end_fails_with_ipa_wording() {
    let img = sfdisk_image(128 * MIB, "label: gpt\nstart=2048\n");
    let mut f = open(img.path());
    let g = geometry(&f);
    let cd = ConfigDriveImage::from_bytes(vec![1; 4096], NODE).unwrap();
    let err =
        configdrive::place_on_whole_disk(&mut f, g, Path::new("/dev/sdd"), NODE, &cd).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "Failed to create config drive on disk /dev/sdd for node {NODE}. Error: no free space"
        )),
        "{err}"
    );
}

#[test]
fn a_gzip_bomb_stops_at_64_mib() {
    // One gzip member of 1 MiB of zeroes is about 1 KiB; gzip allows members to be
    // concatenated (Python's GzipFile reads them all), so 200 of them inflate to 200 MiB.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; usize::try_from(MIB).unwrap()])
        .unwrap();
    let member = e.finish().unwrap();
    let bomb = member.repeat(200);
    assert!(bomb.len() < usize::try_from(MIB / 2).unwrap());
    let text = base64::engine::general_purpose::STANDARD.encode(&bomb);
    let err = configdrive::decode_inline(&text, NODE).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Config drive size exceeds maximum limit of 64MiB. Size of the given config drive is more than 64 MiB for node {NODE}.")
    );
    // Exactly 64 MiB is accepted.
    let text = base64::engine::general_purpose::STANDARD.encode(member.repeat(64));
    let img = configdrive::decode_inline(&text, NODE).unwrap();
    assert_eq!((img.len(), img.size_mib()), (64 * MIB, 64));
}

// ---------------------------------------------------------------- fixups

#[test]
fn backup_gpt_moves_to_the_end_of_a_loop_device() {
    let image = sparse(64 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:0:+10M",
            "-n",
            "2:0:0",
            image.path().to_str().unwrap(),
        ],
    );
    let dev = LoopDev::new(256 * MIB);
    write_at(dev.path(), 0, &std::fs::read(image.path()).unwrap());
    let mut f = open(dev.path());
    let g = geometry(&f);
    assert!(fixup::backup_gpt_misplaced(&mut f, g).unwrap());
    let fix = fixup::fix_gpt_partition(&mut f, g, dev.path(), Some(NODE)).unwrap();
    assert_eq!(
        fix,
        GptFix::Moved {
            from_lba: 64 * MIB / 512 - 1
        }
    );
    f.sync_all().unwrap();
    let v = sgdisk_verify(dev.path());
    assert!(v.contains("No problems found"), "{v}");
    let t = sfdisk_json(dev.path());
    assert_eq!(t["lastlba"].as_u64().unwrap(), g.sectors() - 34);
    assert_eq!(parts(&t).len(), 2);
    // The protective MBR now covers the whole disk, as sgdisk -e leaves it.
    let mbr = read_at(dev.path(), 446, 16);
    assert_eq!(
        u32::from_le_bytes(mbr[12..16].try_into().unwrap()) as u64,
        g.sectors() - 1
    );
    assert_eq!(
        fixup::fix_gpt_partition(&mut f, g, dev.path(), None).unwrap(),
        GptFix::AlreadyAtEnd
    );
}

#[test]
fn validation_refuses_bare_filesystems_empty_tables_and_wrong_sector_sizes() {
    let bare = sparse(64 * MIB);
    run("mkfs.ext4", &["-q", "-F", bare.path().to_str().unwrap()]);
    let mut f = open(bare.path());
    let g = geometry(&f);
    let err = fixup::validate_partitioning(&mut f, g, bare.path()).unwrap_err();
    assert!(matches!(err, ValidateError::NoTable(_)), "{err}");
    assert!(err.to_string().starts_with(
        "Unable to find a valid partition table on the disk after writing the image. The image may be corrupted or it uses a different sector size than the device. Error: "
    ));

    let empty = sfdisk_image(64 * MIB, "label: dos\n");
    let mut f = open(empty.path());
    let err = fixup::validate_partitioning(&mut f, g, Path::new("/dev/sde")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "No partitions found on the device /dev/sde after writing the image."
    );

    // A GPT made for 512-byte sectors on a 4Kn disk.
    let image = sparse(64 * MIB);
    run("sgdisk", &["-n", "1:0:0", image.path().to_str().unwrap()]);
    let dev = loop_4k(128 * MIB);
    write_at(dev.path(), 0, &std::fs::read(image.path()).unwrap());
    let mut f = open(dev.path());
    let g4 = geometry(&f);
    let err = fixup::validate_partitioning(&mut f, g4, dev.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("protective MBR without a GPT at 4096-byte sectors"),
        "{err}"
    );
}

#[test]
fn mbr_signature_is_the_whole_disk_root_uuid() {
    let img = sfdisk_image(
        16 * MIB,
        "label: dos\nlabel-id: 0x00c0ffee\nstart=2048, type=83\n",
    );
    let out = run(
        "hexdump",
        &[
            "-s",
            "440",
            "-n",
            "4",
            "-e",
            "\"0x%08x\"",
            img.path().to_str().unwrap(),
        ],
    );
    let mut f = open(img.path());
    assert_eq!(fixup::whole_disk_root_uuid(&mut f).unwrap(), out);
    assert_eq!(out, "0x00c0ffee");
}

// ---------------------------------------------------------------- destroy_disk_metadata

#[test]
fn destroy_disk_metadata_leaves_nothing_for_wipefs_on_a_loop_device() {
    let dev = LoopDev::new(256 * MIB);
    let path = dev.path().to_str().unwrap();
    // A GPT image smaller than the disk: its backup header sits at 64 MiB.
    let image = sparse(64 * MIB);
    run("sgdisk", &["-n", "1:0:0", image.path().to_str().unwrap()]);
    write_at(dev.path(), 0, &std::fs::read(image.path()).unwrap());
    let marker = vec![0x5a; 4096];
    write_at(dev.path(), 100 * MIB, &marker);
    assert!(!run("wipefs", &[path]).trim().is_empty());

    let mut f = open(dev.path());
    let g = geometry(&f);
    let ranges = wipe::destroy_disk_metadata(&mut f, g).unwrap();
    f.sync_all().unwrap();
    assert!(
        ranges.iter().any(|r| r.contains(&(64 * MIB - 512))),
        "the image's backup header"
    );
    assert_eq!(run("wipefs", &[path]).trim(), "");
    assert!(read_at(dev.path(), 64 * MIB - 512, 512)
        .iter()
        .all(|&b| b == 0));
    assert!(Gpt::read(&mut f, g).unwrap().is_none());
    assert_eq!(
        read_at(dev.path(), 100 * MIB, 4096),
        marker,
        "data is untouched"
    );

    // Whole-disk filesystems: swap (4 KiB page) and ISO 9660.
    run("mkswap", &["-q", path]);
    assert!(run("wipefs", &[path]).contains("swap"));
    wipe::destroy_disk_metadata(&mut f, g).unwrap();
    f.sync_all().unwrap();
    assert_eq!(run("wipefs", &[path]).trim(), "");
    write_at(dev.path(), 0, &config_drive_iso());
    assert!(run("wipefs", &[path]).contains("iso9660"));
    wipe::destroy_disk_metadata(&mut f, g).unwrap();
    f.sync_all().unwrap();
    assert_eq!(run("wipefs", &[path]).trim(), "");
}

#[test]
fn destroy_disk_metadata_on_a_4k_device_zeroes_five_sectors_at_each_end() {
    let dev = loop_4k(64 * MIB);
    write_at(dev.path(), 0, &vec![0xee; 64 << 10]);
    write_at(dev.path(), 64 * MIB - (64 << 10), &vec![0xee; 64 << 10]);
    let mut f = open(dev.path());
    let g = geometry(&f);
    wipe::destroy_disk_metadata(&mut f, g).unwrap();
    f.sync_all().unwrap();
    assert!(read_at(dev.path(), 0, 20480).iter().all(|&b| b == 0));
    assert!(read_at(dev.path(), 64 * MIB - 20480, 20480)
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        read_at(dev.path(), 24576, 4096),
        vec![0xee; 4096],
        "between the edge and the ISO blocks"
    );
}

// ---------------------------------------------------------------- properties

fn arb_entries() -> impl Strategy<Value = Vec<(u64, u64, String)>> {
    // (gap before, length, name) in MiB-ish units, laid out one after another.
    prop::collection::vec((0u64..4, 1u64..6, "[a-zA-Z0-9 é]{0,40}"), 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn gpt_built_is_gpt_parsed(entries in arb_entries(), ss in prop::sample::select(vec![512u64, 4096])) {
        let size = 256 * MIB;
        let g = Geometry::new(size, ss).unwrap();
        let mut disk = std::io::Cursor::new(vec![0u8; usize::try_from(size).unwrap()]);
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        let spm = g.sectors_per_mib();
        let mut next = spm;
        let mut expected = Vec::new();
        for ((i, (gap, len, name)), number) in entries.iter().enumerate().zip(1u32..) {
            let first = next + gap * spm;
            let last = first + len * spm - 1;
            next = last + 1;
            let e = GptEntry {
                type_guid: types::LINUX_FS,
                unique_guid: Uuid::new_v4(),
                first_lba: first,
                last_lba: last,
                attributes: i as u64,
                name: name.chars().filter(|_| true).collect(),
            };
            gpt.set_entry(number, &e).unwrap();
            expected.push((number, e));
        }
        gpt.write(&mut disk, g).unwrap();
        let back = Gpt::read(&mut disk, g).unwrap().unwrap();
        let got = back.partitions();
        prop_assert_eq!(got.len(), expected.len());
        for ((n, e), (m, f)) in got.iter().zip(&expected) {
            prop_assert_eq!(n, m);
            prop_assert_eq!(e.first_lba, f.first_lba);
            prop_assert_eq!(e.last_lba, f.last_lba);
            prop_assert_eq!(e.unique_guid, f.unique_guid);
            prop_assert_eq!(e.attributes, f.attributes);
            let units: Vec<u16> = f.name.encode_utf16().take(36).collect();
            prop_assert_eq!(&e.name, &String::from_utf16_lossy(&units));
        }
    }

    #[test]
    fn layouts_never_overlap_and_stay_inside_the_disk(
        disk_mib in 8u64..8192,
        root in 1u64..4096,
        swap in prop::sample::select(vec![0u64, 1, 64, 1000]),
        eph in prop::sample::select(vec![0u64, 1, 500]),
        cd in prop::sample::select(vec![0u64, 1, 64]),
        uefi in any::<bool>(),
        gpt in any::<bool>(),
        ppc64 in any::<bool>(),
        ss in prop::sample::select(vec![512u64, 4096]),
    ) {
        let g = Geometry::new(disk_mib * MIB, ss).unwrap();
        let boot = if uefi { BootMode::Uefi } else { BootMode::Bios };
        let table = if uefi || gpt { TableKind::Gpt } else { TableKind::Msdos };
        let mut req = LayoutRequest::new(boot, table, root);
        req.swap_mib = swap;
        req.ephemeral_mib = eph;
        req.configdrive_mib = cd;
        req.ppc64 = ppc64;
        match Layout::plan(&req, g) {
            Ok(l) => {
                let mut prev_end = g.sectors_per_mib() - 1;
                let last_usable = if table == TableKind::Gpt { g.sectors() - 2 - 16384 / ss } else { g.sectors() - 1 };
                for p in &l.partitions {
                    let (first, last) = p.sectors(g);
                    prop_assert!(first > prev_end && first <= last && last <= last_usable);
                    prop_assert_eq!(first % g.sectors_per_mib(), 0);
                    prev_end = last;
                }
                prop_assert_eq!(l.partitions.last().unwrap().role, Role::Root);
                if table == TableKind::Msdos { prop_assert!(l.partitions.len() <= 4); }
            }
            Err(LayoutError::DoesNotFit { needed_mib, .. }) => {
                let reserved = if table == TableKind::Gpt { 16384 + ss } else { 0 };
                prop_assert!(needed_mib * MIB > g.size() - reserved);
            }
            Err(LayoutError::TooManyPartitions(n)) => prop_assert!(table == TableKind::Msdos && n > 4),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}

/// Sets a GPT header field to a hostile value and fixes the header CRC so the header
/// is still accepted as far as checksums go.
fn poke_header(disk: &mut [u8], header_at: usize, field: usize, value: u64) {
    let h = &mut disk[header_at..header_at + 92];
    let width = if matches!(field, 8 | 12 | 80 | 84 | 88) {
        4
    } else {
        8
    };
    h[field..field + width].copy_from_slice(&value.to_le_bytes()[..width]);
    h[16..20].fill(0);
    let mut crc = flate2::Crc::new();
    crc.update(h);
    let sum = crc.sum();
    h[16..20].copy_from_slice(&sum.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Hostile but checksum-valid GPT headers (and MBR entries) never panic the readers
    /// or the write-back paths, and nothing is written past the end of the disk.
    #[test]
    fn hostile_tables_are_handled(
        pokes in prop::collection::vec((prop::sample::select(vec![24usize, 32, 40, 48, 72, 80, 84, 12]), any::<u64>(), any::<bool>()), 1..4),
        mbr_entry in prop::collection::vec(any::<u8>(), 16),
        small in any::<u64>(),
        backup_too in any::<bool>(),
    ) {
        let size = 1usize << 20;
        let g = Geometry::new(size as u64, 512).unwrap();
        let mut disk = std::io::Cursor::new(vec![0u8; size]);
        ira::partition::mbr::write_protective(&mut disk, g).unwrap();
        let mut gpt = Gpt::new(g, Uuid::new_v4()).unwrap();
        gpt.set_entry(1, &GptEntry {
            type_guid: types::LINUX_FS, unique_guid: Uuid::new_v4(),
            first_lba: 64, last_lba: 1000, attributes: 0, name: "x".into(),
        }).unwrap();
        gpt.write(&mut disk, g).unwrap();
        let mut bytes = disk.into_inner();
        for (field, value, make_small) in pokes {
            let value = if make_small { value % 4096 } else { value };
            poke_header(&mut bytes, 512, field, value);
            if backup_too {
                poke_header(&mut bytes, size - 512, field, value ^ (small % 7));
            }
        }
        if small % 3 == 0 {
            bytes[446..462].copy_from_slice(&mbr_entry);
        }
        let dev = Path::new("/dev/sdx");
        let mut c = std::io::Cursor::new(bytes);
        let _ = ira::partition::table::read_table(&mut c, g);
        let _ = describe(&mut c, g, dev);
        let _ = fixup::validate_partitioning(&mut c, g, dev);
        let _ = fixup::fix_gpt_partition(&mut c, g, dev, None);
        let cd = ConfigDriveImage::from_bytes(vec![7; 4096], NODE).unwrap();
        let _ = configdrive::place_on_whole_disk(&mut c, g, dev, NODE, &cd);
        let declared = wipe::declared_gpt_ranges(&mut c, g).unwrap();
        let _ = wipe::metadata_ranges(g, &declared);
        prop_assert_eq!(c.get_ref().len(), size);
    }
}
