//! Format detection on images made by qemu-img, sgdisk, sfdisk, mkfs.vfat and genisoimage,
//! on crafted heads, and IPA's gate messages word for word.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cmd::{run_retrying, spawn_with_stdin};
use ira::image::format::{
    detect, gate, Compression, Detected, Format, FormatError, Safety, SNIFF_LEN,
};
use proptest::prelude::*;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn head_of(path: &Path) -> Vec<u8> {
    let mut b = fs::read(path).unwrap();
    b.truncate(SNIFF_LEN);
    b
}

/// The single format the head resolves to, with its safety verdict.
fn resolved(head: &[u8]) -> (Format, Safety) {
    let i = detect(head).resolve().unwrap();
    (i.format, i.safety)
}

fn qemu_create(dir: &Path, name: &str, fmt: &str, opts: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["create", "-f", fmt];
    args.extend_from_slice(opts);
    args.push(p(&out));
    args.push("4M");
    run_retrying("qemu-img", &args);
    out
}

fn permitted(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn ironic_default() -> Vec<String> {
    permitted(&["raw", "gpt", "qcow2", "iso"])
}

fn random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33).to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn qemu_img_formats() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cases: &[(&str, &str, &[&str], Format, bool)] = &[
        (
            "v2.qcow2",
            "qcow2",
            &["-o", "compat=0.10"],
            Format::Qcow2,
            true,
        ),
        ("v3.qcow2", "qcow2", &[], Format::Qcow2, true),
        (
            "zstd.qcow2",
            "qcow2",
            &["-o", "compression_type=zstd"],
            Format::Qcow2,
            true,
        ),
        ("d.vhd", "vpc", &[], Format::Vhd, true),
        ("d.vhdx", "vhdx", &[], Format::Vhdx, true),
        ("d.vmdk", "vmdk", &[], Format::Vmdk, true),
        (
            "s.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            Format::Vmdk,
            true,
        ),
        ("d.vdi", "vdi", &[], Format::Vdi, true),
        ("d.qed", "qed", &[], Format::Qed, false),
        (
            "d.luks",
            "luks",
            &[
                "--object",
                "secret,id=s0,data=x",
                "-o",
                "key-secret=s0,iter-time=10",
            ],
            Format::Luks,
            true,
        ),
    ];
    for &(name, fmt, opts, want, safe) in cases {
        let img = qemu_create(dir, name, fmt, opts);
        let head = head_of(&img);
        let (got, safety) = resolved(&head);
        assert_eq!(got, want, "{name}");
        assert_eq!(safety == Safety::Safe, safe, "{name}: {safety:?}");
    }
    // A fixed VHD keeps its footer only at the end: oslo sees raw bytes, and so do we.
    let fixed = qemu_create(dir, "f.vhd", "vpc", &["-o", "subformat=fixed"]);
    assert_eq!(resolved(&head_of(&fixed)).0, Format::Raw);

    let q = detect(&head_of(&dir.join("v3.qcow2"))).resolve().unwrap();
    assert_eq!(q.virtual_size, Some(4 << 20));
}

#[test]
fn qcow2_safety_checks() {
    let d = tempfile::tempdir().unwrap();
    let img = qemu_create(d.path(), "a.qcow2", "qcow2", &[]);
    let good = head_of(&img);
    let check = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut h = good.clone();
        edit(&mut h);
        resolved(&h).1
    };
    assert_eq!(check(&|_| {}), Safety::Safe);
    assert!(
        matches!(check(&|h| h[15] = 1), Safety::Unsafe(_)),
        "backing file offset"
    );
    assert!(
        matches!(check(&|h| h[0x4f] |= 4), Safety::Unsafe(_)),
        "data file bit"
    );
    assert_eq!(
        check(&|h| h[0x4f] |= 0b1011),
        Safety::Safe,
        "dirty, corrupt, zstd bits"
    );
    assert!(
        matches!(check(&|h| h[0x4f] |= 0x10), Safety::Unsafe(_)),
        "extended L2"
    );
    assert!(
        matches!(check(&|h| h[0x48] = 0x80), Safety::Unsafe(_)),
        "high unknown bit"
    );
    assert!(
        matches!(check(&|h| h[7] = 4), Safety::Unsafe(_)),
        "version 4"
    );
    assert!(
        matches!(check(&|h| h[7] = 1), Safety::Unsafe(_)),
        "version 1"
    );
    // v2 has no feature bits: bytes past its 72-byte header are not checked
    assert_eq!(
        check(&|h| {
            h[7] = 2;
            h[0x48] = 0xff
        }),
        Safety::Safe
    );
    // Under 512 bytes oslo does not call it qcow2 at all.
    assert_eq!(resolved(&good[..511]).0, Format::Raw);
}

#[test]
fn partition_tables_and_filesystems() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let disk = |name: &str| {
        let f = dir.join(name);
        fs::File::create(&f).unwrap().set_len(8 << 20).unwrap();
        f
    };
    let gpt = disk("gpt.img");
    run_retrying("sgdisk", &["-n", "1:2048:+2M", "-n", "2:0:0", p(&gpt)]);
    assert_eq!(resolved(&head_of(&gpt)), (Format::Gpt, Safety::Safe));

    let mbr = disk("mbr.img");
    let mut child = spawn_with_stdin(
        Command::new("sfdisk").args(["-q", p(&mbr)]),
        b"label: dos\n,4M,L,*\n,,L\n",
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(resolved(&head_of(&mbr)), (Format::Gpt, Safety::Safe));

    // A FAT boot sector carries 0x55aa too; oslo excludes it, and it is plain raw.
    let fat = disk("fat.img");
    run_retrying("mkfs.vfat", &[p(&fat)]);
    assert_eq!(resolved(&head_of(&fat)).0, Format::Raw);

    // Hybrid MBR: a protective entry plus another one.
    let mut h = head_of(&gpt);
    h[446 + 16 + 4] = 0x83;
    assert!(matches!(resolved(&h).1, Safety::Unsafe(_)));
    // Protective entry not starting at LBA 1.
    let mut h = head_of(&gpt);
    h[446 + 8] = 2;
    assert!(matches!(resolved(&h).1, Safety::Unsafe(_)));
    // Boot flag other than 0x00/0x80.
    let mut h = head_of(&mbr);
    h[446] = 0x12;
    assert!(matches!(resolved(&h).1, Safety::Unsafe(_)));
    // Signature but no partitions.
    let mut h = vec![0u8; 4096];
    h[510..512].copy_from_slice(&[0x55, 0xaa]);
    assert_eq!(
        resolved(&h),
        (Format::Gpt, Safety::Unsafe("MBR has no partitions defined"))
    );
}

fn make_iso(dir: &Path) -> PathBuf {
    let src = dir.join("isosrc");
    fs::create_dir_all(src.join("openstack/latest")).unwrap();
    fs::write(src.join("openstack/latest/meta_data.json"), b"{}").unwrap();
    let iso = dir.join("cd.iso");
    run_retrying(
        "genisoimage",
        &["-quiet", "-R", "-V", "config-2", "-o", p(&iso), p(&src)],
    );
    iso
}

#[test]
fn iso_and_isohybrid() {
    let d = tempfile::tempdir().unwrap();
    let iso = make_iso(d.path());
    let head = head_of(&iso);
    let i = detect(&head).resolve().unwrap();
    assert_eq!((i.format, i.safety), (Format::Iso, Safety::Safe));
    assert_eq!(i.virtual_size, Some(fs::metadata(&iso).unwrap().len()));

    // isohybrid: a protective MBR in the system area. Both match; Ironic takes the ISO.
    let mut hybrid = head.clone();
    hybrid[446..462].copy_from_slice(&[
        0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0xff, 0, 0,
    ]);
    hybrid[510..512].copy_from_slice(&[0x55, 0xaa]);
    let det = detect(&hybrid);
    assert_eq!(det.formats().len(), 2);
    assert_eq!(det.resolve().unwrap().format, Format::Iso);
    assert_eq!(
        gate(&det, Some("iso"), &ironic_default(), false),
        Ok(Format::Iso)
    );
    assert_eq!(gate(&det, None, &ironic_default(), false), Ok(Format::Iso));

    // An ISO 9660 descriptor behind a qcow2 header is a polyglot: refused.
    let mut poly = head.clone();
    poly[..4].copy_from_slice(b"QFI\xfb");
    poly[4..8].copy_from_slice(&3u32.to_be_bytes());
    let det = detect(&poly);
    assert_eq!(det.formats(), vec![Format::Qcow2, Format::Iso]);
    let err = gate(&det, Some("qcow2"), &ironic_default(), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Security: Image matched multiple potential formats"
    );

    // Cut short of the descriptor, it is not an ISO.
    assert_eq!(resolved(&head[..0x8000]).0, Format::Raw);
}

#[test]
fn compression_wrappers() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[0u8; 10000]).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(detect(&gz), Detected::Compressed(Compression::Gzip));
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4];
    assert_eq!(detect(&xz), Detected::Compressed(Compression::Xz));
    let zst = [0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x04];
    assert_eq!(detect(&zst), Detected::Compressed(Compression::Zstd));
    let err = gate(&detect(&gz), Some("qcow2"), &ironic_default(), false).unwrap_err();
    assert_eq!(err.to_string(), "Security: Unable to safety check image");
    // A declared raw image is copied as it is, compressed or not.
    assert_eq!(
        gate(&detect(&gz), Some("raw"), &ironic_default(), false),
        Ok(Format::Raw)
    );
}

#[test]
fn vmdk_descriptor_rules() {
    let text = |body: &str| {
        let mut h = body.as_bytes().to_vec();
        h.resize(600, b'\n');
        h
    };
    let ok = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
              createType=\"monolithicSparse\"\n\nRW 8192 SPARSE \"disk.vmdk\"\n\nddb.adapterType = \"ide\"\n";
    assert_eq!(resolved(&text(ok)), (Format::Vmdk, Safety::Safe));
    let path = ok.replace("\"disk.vmdk\"", "\"/etc/shadow\"");
    assert!(matches!(resolved(&text(&path)).1, Safety::Unsafe(_)));
    let flat = ok.replace("monolithicSparse", "monolithicFlat");
    assert!(matches!(resolved(&text(&flat)).1, Safety::Unsafe(_)));
    let junk = ok.replace("ddb.adapterType", "some junk line\nddb.adapterType");
    assert!(matches!(resolved(&text(&junk)).1, Safety::Unsafe(_)));
    // Plain text without createType is just raw bytes.
    assert_eq!(resolved(&text("hello world\n")).0, Format::Raw);
}

#[test]
fn gate_follows_ipa() {
    let d = tempfile::tempdir().unwrap();
    let qcow = detect(&head_of(&qemu_create(d.path(), "g.qcow2", "qcow2", &[])));
    let vmdk = detect(&head_of(&qemu_create(d.path(), "g.vmdk", "vmdk", &[])));
    let qed = detect(&head_of(&qemu_create(d.path(), "g.qed", "qed", &[])));
    let raw = detect(&random(SNIFF_LEN, 1));
    let ipa = permitted(&["raw", "gpt", "qcow2"]);

    assert_eq!(gate(&qcow, Some("qcow2"), &ipa, false), Ok(Format::Qcow2));
    assert_eq!(gate(&qcow, None, &ipa, false), Ok(Format::Qcow2));
    assert_eq!(gate(&qcow, Some("unknown"), &ipa, false), Ok(Format::Qcow2));
    assert_eq!(gate(&raw, None, &ipa, false), Ok(Format::Raw));
    // Declared raw or gpt: never inspected, copied bit for bit.
    assert_eq!(gate(&qcow, Some("raw"), &ipa, false), Ok(Format::Raw));
    assert_eq!(gate(&vmdk, Some("gpt"), &[], false), Ok(Format::Gpt));

    let msg = |r: Result<Format, FormatError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(gate(&raw, Some("qcow2"), &ipa, false)),
        "Security: Expected format was qcow2, but image was actually raw"
    );
    assert_eq!(
        msg(gate(&vmdk, Some("vmdk"), &ipa, false)),
        "Security: Detected image format was vmdk, but only raw, gpt, qcow2 are allowed"
    );
    assert_eq!(
        msg(gate(&qcow, Some("qcow2"), &permitted(&["raw"]), false)),
        "Security: Detected image format was qcow2, but only raw are allowed"
    );
    // IPA checks safety before the permitted list.
    assert_eq!(
        msg(gate(&qed, None, &ipa, false)),
        "Security: Image failed safety check"
    );

    let mut backing = head_of(&d.path().join("g.qcow2"));
    backing[15] = 0x40;
    assert_eq!(
        msg(gate(&detect(&backing), Some("qcow2"), &ipa, false)),
        "Security: Image failed safety check"
    );
    let mut short_luks = b"LUKS\xba\xbe\x00\x01".to_vec();
    short_luks.resize(100, 0);
    assert_eq!(
        msg(gate(
            &detect(&short_luks),
            None,
            &permitted(&["luks"]),
            false
        )),
        "Security: Unable to safety check image"
    );

    // Inspection disabled: raw-like bytes go through whatever was declared, but anything
    // we would parse is still checked in full.
    assert_eq!(gate(&raw, Some("qcow2"), &[], true), Ok(Format::Raw));
    assert!(matches!(
        gate(&qcow, Some("qcow2"), &permitted(&["raw"]), true),
        Err(FormatError::NotPermitted { .. })
    ));
    assert!(matches!(
        gate(&detect(&backing), Some("qcow2"), &ipa, true),
        Err(FormatError::Unsafe { .. })
    ));
    assert!(matches!(
        gate(&qcow, Some("vmdk"), &ipa, true),
        Err(FormatError::Mismatch { .. })
    ));
}

#[test]
fn names_round_trip() {
    for f in Format::ALL {
        assert_eq!(Format::from_name(f.name()), Some(f));
    }
    assert_eq!(Format::from_name("ami"), None);
}

fn magics() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let m: Vec<&'static [u8]> = vec![
        b"QFI\xfb",
        b"KDMV",
        b"conectix",
        b"vhdxfile",
        b"QED\0",
        b"LUKS\xba\xbe",
        b"\x55\xaa",
        b"\x7f\x10\xda\xbe",
        b"CD001",
        b"createType=\"",
        b"\x00\x02\x00\xee",
    ];
    (0usize..SNIFF_LEN, prop::sample::select(m)).prop_map(|(at, m)| (at, m.to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn detect_never_panics(
        seed in any::<u64>(),
        len in prop_oneof![0usize..1024, 0usize..SNIFF_LEN + 100],
        plants in prop::collection::vec(magics(), 0..6),
        fixed in prop::collection::vec(prop_oneof![Just(0usize), Just(0x40), Just(510), Just(0x8001), Just(0x200)], 0..4),
    ) {
        let mut head = random(len, seed);
        for (i, (at, m)) in plants.iter().enumerate() {
            let at = fixed.get(i).copied().unwrap_or(*at);
            if at + m.len() <= head.len() {
                head[at..at + m.len()].copy_from_slice(m);
            }
        }
        let det = detect(&head);
        let r = det.resolve();
        let _ = gate(&det, None, &ironic_default(), false);
        let _ = gate(&det, Some("qcow2"), &ironic_default(), true);
        if let Ok(i) = r {
            prop_assert!(det.formats().contains(&i.format));
        }
    }

    #[test]
    fn text_heads_never_panic(s in "[ -~\n\t]{0,3000}", kind in "[a-zA-Z\"]{0,80}") {
        let body = format!("createType=\"{kind}\"\n{s}");
        let _ = detect(body.as_bytes());
    }
}
