//! Virtual media as a BMC attaches it: a `config-2` ISO (genisoimage) and an
//! `ir-vfd-dev` vfat floppy (mkfs.vfat + mcopy, as Ironic makes them), seen through a
//! system root whose sysfs says what kind of device each is (a CD drive, a USB stick, a
//! disk partition) and whose `dev/` nodes are the image files, so labels are read from
//! the real bytes. The host kernel here has neither isofs nor vfat, so the media are
//! "mounted" the way IPA also accepts them: listed in the root's `proc/mounts` (a
//! config-drive tool mounted them), or through a mounter that unpacks the image's tree;
//! the kernel mounts them in the VM suite. The agent binary then reads `parameters.txt`,
//! copies the configuration and CA Ironic puts on the ISO, and trusts that CA.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cmd::run;
use std::sync::Mutex;

use ira::deploy::mount::{MountKind, MountOptions, Mounter, SysMounter};

/// What the ISO carries, as Ironic's `prepare_deploy_iso` lays it out.
const TLS_CONF: &str = "[DEFAULT]\ncafile = /etc/ironic-python-agent/ironic.crt\n";
const NETWORK_DATA: &str = include_str!("fixtures/network_data/static.json");

/// An image file and the tree it was made from.
struct Image {
    file: tempfile::NamedTempFile,
    tree: tempfile::TempDir,
}

/// An ISO with `files` (relative path, content), made by genisoimage.
fn iso(label: &str, files: &[(&str, &[u8])]) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().to_path_buf();
    for (rel, content) in files {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::fs::create_dir_all(&tree).unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = out.path().to_str().unwrap();
    run(
        "genisoimage",
        &[
            "-quiet",
            "-R",
            "-J",
            "-V",
            label,
            "-o",
            o,
            tree.to_str().unwrap(),
        ],
    );
    Image {
        file: out,
        tree: dir,
    }
}

/// A 1.44 MB vfat floppy image labelled `label` with `parameters.txt`, as Ironic's
/// `create_vfat_image` makes it (mkfs.vfat, then mcopy).
fn floppy(label: &str, parameters: &str) -> Image {
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = out.path().to_str().unwrap();
    std::fs::remove_file(o).unwrap();
    run("mkfs.vfat", &["-C", "-n", label, o, "1440"]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parameters.txt");
    std::fs::write(&p, parameters).unwrap();
    run("mcopy", &["-i", o, p.to_str().unwrap(), "::"]);
    Image {
        file: out,
        tree: dir,
    }
}

/// Lists `kname` as mounted (by some other tool) at `/media/<kname>` in the root's
/// `proc/mounts`, the mount point showing `img`'s files.
fn premounted(root: &Path, kname: &str, fstype: &str, img: &Image) {
    std::fs::create_dir_all(root.join("media")).unwrap();
    std::os::unix::fs::symlink(img.tree.path(), root.join("media").join(kname)).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("proc/mounts"))
        .unwrap();
    writeln!(f, "/dev/{kname} /media/{kname} {fstype} ro,relatime 0 0").unwrap();
}

/// A mounter that "mounts" by copying an image's tree onto the target and records
/// every call; unmounting empties the target again.
struct Unpacking {
    trees: Vec<(PathBuf, PathBuf)>,
    calls: Mutex<Vec<String>>,
}

impl Mounter for Unpacking {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        kind: &MountKind,
        options: &MountOptions,
    ) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(format!(
            "mount {} {kind:?} {:?}",
            source.display(),
            options.flags
        ));
        let (_, tree) = self
            .trees
            .iter()
            .find(|(dev, _)| dev == source)
            .expect("a known device");
        run(
            "cp",
            &[
                "-a",
                &format!("{}/.", tree.display()),
                target.to_str().unwrap(),
            ],
        );
        Ok(())
    }
    fn umount(&self, target: &Path, _detach: bool) -> std::io::Result<()> {
        self.calls.lock().unwrap().push("umount".to_owned());
        for e in std::fs::read_dir(target)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p)?
            } else {
                std::fs::remove_file(p)?
            }
        }
        Ok(())
    }
}

/// A block device in the fake sysfs: `sys/class/block/<kname>` links to `devpath` under
/// `sys/devices`, and `dev/<kname>` links to the real loop device.
fn add_block(
    root: &Path,
    kname: &str,
    devpath: &str,
    sectors: u64,
    scsi_type: &str,
    partition: bool,
    dev: Option<&Path>,
) {
    let real = root
        .join("sys/devices")
        .join(devpath)
        .join("block")
        .join(kname);
    std::fs::create_dir_all(real.join("device")).unwrap();
    std::fs::write(real.join("size"), format!("{sectors}\n")).unwrap();
    std::fs::write(real.join("device/type"), format!("{scsi_type}\n")).unwrap();
    if partition {
        std::fs::write(real.join("partition"), "1\n").unwrap();
    }
    std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
    std::os::unix::fs::symlink(&real, root.join("sys/class/block").join(kname)).unwrap();
    if let Some(dev) = dev {
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::os::unix::fs::symlink(dev, root.join("dev").join(kname)).unwrap();
    }
}

const CDROM: &str = "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0";
const USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host7/target7:0:0/7:0:0:0";
const DISK: &str = "pci0000:00/0000:00:04.0/virtio2/block/vda";

/// A system root copied from an inventory fixture (so the agent finds a NIC and disks).
fn fixture_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/nvme-sata/.");
    run(
        "cp",
        &["-a", src.to_str().unwrap(), root.path().to_str().unwrap()],
    );
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    root
}

#[test]
fn only_whole_cd_or_small_usb_devices_count_as_virtual_media() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    add_block(r, "sr0", CDROM, 2048, "5", false, None);
    add_block(r, "sdb", USB, 2880, "0", false, None);
    add_block(
        r,
        "sdc",
        USB.replace("2-1", "2-2").as_str(),
        16 << 21,
        "0",
        false,
        None,
    );
    add_block(r, "vda1", DISK, 1 << 20, "0", true, None);
    add_block(
        r,
        "vdb",
        "pci0000:00/0000:00:05.0/virtio3",
        2048,
        "0",
        false,
        None,
    );
    assert!(ira::vmedia::is_virtual_media(r, "sr0"));
    assert!(ira::vmedia::is_virtual_media(r, "sdb"));
    assert!(
        !ira::vmedia::is_virtual_media(r, "sdc"),
        "an 8 GiB USB disk is a real disk"
    );
    assert!(!ira::vmedia::is_virtual_media(r, "vda1"), "a partition");
    assert!(!ira::vmedia::is_virtual_media(r, "vdb"), "a virtio disk");
}

#[test]
fn finds_media_by_label_mounts_read_only_and_reads_them() {
    let cd = iso(
        "config-2",
        &[
            (
                "openstack/latest/network_data.json",
                NETWORK_DATA.as_bytes(),
            ),
            ("etc/ironic-python-agent/ironic.crt", b"not a real CA\n"),
            (
                "etc/ironic-python-agent.d/ironic-tls.conf",
                TLS_CONF.as_bytes(),
            ),
        ],
    );
    let fd = floppy(
        "ir-vfd-dev",
        "ipa-api-url=http://10.0.2.2:6385\nipa-debug=1\n",
    );
    // A deployed instance's config drive on a local disk: same label, never taken.
    let tenant = iso("config-2", &[("openstack/latest/network_data.json", b"{}")]);

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    add_block(r, "sda1", DISK, 2048, "0", true, Some(tenant.file.path()));
    add_block(r, "sdb", USB, 2880, "0", false, Some(fd.file.path()));
    add_block(r, "sr0", CDROM, 2048, "5", false, Some(cd.file.path()));

    let labelled = ira::vmedia::devices_with_labels(r, &["CONFIG-2"]);
    let names: Vec<&str> = labelled.iter().map(|c| c.kname.as_str()).collect();
    assert_eq!(names, ["sda1", "sr0"], "labels compare case-insensitively");
    let found = ira::vmedia::find_by_labels(r, ira::vmedia::CONFIG_LABELS).unwrap();
    assert_eq!((found.kname.as_str(), found.fstype), ("sr0", "iso9660"));
    let found = ira::vmedia::find_by_labels(r, &[ira::vmedia::PARAMETERS_LABEL]).unwrap();
    assert_eq!((found.kname.as_str(), found.fstype), ("sdb", "vfat"));

    let m = Unpacking {
        trees: vec![
            (r.join("dev/sr0"), cd.tree.path().to_path_buf()),
            (r.join("dev/sdb"), fd.tree.path().to_path_buf()),
        ],
        calls: Mutex::default(),
    };
    let params = ira::vmedia::read_parameters(r, &m).unwrap().unwrap();
    assert_eq!(params, "ipa-api-url=http://10.0.2.2:6385\nipa-debug=1\n");
    let nd = ira::vmedia::read_network_data(r, &m).unwrap().unwrap();
    assert_eq!(nd, NETWORK_DATA);
    let copied = ira::vmedia::copy_config(r, &m).unwrap();
    let want: Vec<PathBuf> = vec![
        r.join("etc/ironic-python-agent/ironic.crt"),
        r.join("etc/ironic-python-agent.d/ironic-tls.conf"),
    ];
    assert_eq!(copied, want);
    assert_eq!(std::fs::read_to_string(&want[1]).unwrap(), TLS_CONF);
    // Each read mounted its device read-only (nosuid, nodev, noexec) and unmounted it.
    let ro = "MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)";
    let calls = m.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            format!(
                "mount {} Fs(Some(\"vfat\")) {ro}",
                r.join("dev/sdb").display()
            ),
            "umount".to_owned(),
            format!(
                "mount {} Fs(Some(\"iso9660\")) {ro}",
                r.join("dev/sr0").display()
            ),
            "umount".to_owned(),
            format!(
                "mount {} Fs(Some(\"iso9660\")) {ro}",
                r.join("dev/sr0").display()
            ),
            "umount".to_owned(),
        ]
    );

    // Already mounted by another tool: read where it is, no second mount.
    premounted(r, "sr0", "iso9660", &cd);
    let nd = ira::vmedia::read_network_data(r, &m).unwrap().unwrap();
    assert_eq!(nd, NETWORK_DATA);
    assert_eq!(m.calls.lock().unwrap().len(), calls.len());
}

#[test]
fn a_usb_stick_whose_disk_shows_late_is_waited_for() {
    let fd = floppy("ir-vfd-dev", "ipa-api-url=http://10.0.2.2:6385\n");
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    // The stick's interface is bound to usb-storage, its disk not scanned yet.
    std::fs::create_dir_all(r.join("sys/bus/usb/drivers/usb-storage/2-1:1.0")).unwrap();
    assert!(ira::vmedia::usb_storage_bound(&r));
    let late = {
        let (r, dev) = (r.clone(), fd.file.path().to_path_buf());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            add_block(&r, "sdb", USB, 2880, "0", false, Some(&dev));
        })
    };
    let m = Unpacking {
        trees: vec![(r.join("dev/sdb"), fd.tree.path().to_path_buf())],
        calls: Mutex::default(),
    };
    let params =
        ira::vmedia::read_parameters_within(&r, &m, std::time::Duration::from_secs(20)).unwrap();
    late.join().unwrap();
    assert_eq!(
        params.as_deref(),
        Some("ipa-api-url=http://10.0.2.2:6385\n")
    );
}

#[test]
fn without_a_usb_stick_nothing_is_waited_for() {
    let root = tempfile::tempdir().unwrap();
    assert!(!ira::vmedia::usb_storage_bound(root.path()));
    let started = std::time::Instant::now();
    let got = ira::vmedia::read_parameters_within(
        root.path(),
        &SysMounter,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert!(got.is_none());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "waited without a stick"
    );
}

#[test]
fn no_media_means_nothing_read() {
    let root = tempfile::tempdir().unwrap();
    let m = SysMounter;
    assert!(ira::vmedia::read_parameters(root.path(), &m)
        .unwrap()
        .is_none());
    assert!(ira::vmedia::read_network_data(root.path(), &m)
        .unwrap()
        .is_none());
    assert!(ira::vmedia::copy_config(root.path(), &m)
        .unwrap()
        .is_empty());
    assert!(!root.path().join("etc").exists(), "nothing written");
}

/// A TLS server with `tls` that counts HTTP requests received after a handshake and
/// answers each with a 503 (the agent then retries until its lookup timeout).
fn tls_server(tls: &ira::api::GeneratedTls) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let (config, count) = (tls.server_config.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut s = rustls::Stream::new(&mut conn, &mut tcp);
            let mut line = String::new();
            if BufReader::new(&mut s).read_line(&mut line).is_ok() && line.starts_with("GET ") {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        }
    });
    (port, seen)
}

/// Runs the agent binary with `--sysroot root` and the kernel command line `cmdline`
/// until its lookup gives up; returns its stderr.
fn run_agent(root: &Path, cmdline: &str) -> String {
    let cmd_file = root.join("cmdline");
    std::fs::write(&cmd_file, cmdline).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ira"))
        .args([
            "--sysroot",
            root.to_str().unwrap(),
            "--cmdline-file",
            cmd_file.to_str().unwrap(),
        ])
        .args([
            "--device-allowlist",
            "/dev/ira-matches-no-disk",
            "--listen-port",
            "0",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "lookup ends in failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn agent_takes_parameters_and_the_private_ca_from_virtual_media() {
    let ip = "127.0.0.1".parse().unwrap();
    let tls = ira::api::generate_self_signed(ip, "ironic-api", "p256", Duration::ZERO).unwrap();
    let (port, seen) = tls_server(&tls);
    let cd = iso(
        "config-2",
        &[
            (
                "etc/ironic-python-agent/ironic.crt",
                tls.cert_pem.as_bytes(),
            ),
            (
                "etc/ironic-python-agent.d/ironic-tls.conf",
                TLS_CONF.as_bytes(),
            ),
        ],
    );
    let url = format!("https://127.0.0.1:{port}");
    // parameters.txt corrects the kernel's API URL (it overrides the command line).
    let fd = floppy(
        "ir-vfd-dev",
        &format!("ipa-api-url={url} ipa-lookup-timeout=2\n"),
    );
    let media = |r: &Path| {
        add_block(r, "sdx", USB, 2880, "0", false, Some(fd.file.path()));
        add_block(r, "sr0", CDROM, 2048, "5", false, Some(cd.file.path()));
        premounted(r, "sdx", "vfat", &fd);
        premounted(r, "sr0", "iso9660", &cd);
    };
    let root = fixture_root();
    let r = root.path();
    media(r);
    let log = run_agent(
        r,
        "boot_method=vmedia ipa-api-url=https://127.0.0.1:9 ipa-lookup-interval=0.2",
    );
    assert!(
        log.contains("booted from virtual media parameters_txt=true"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/ironic-python-agent/ironic.crt")).unwrap(),
        tls.cert_pem
    );
    // The kernel's URL points at a closed port: requests here came from parameters.txt's
    // URL, over TLS verified with the CA from the ISO.
    assert!(log.contains("HTTP 503"), "{log}");
    assert!(
        seen.load(Ordering::SeqCst) >= 1,
        "TLS with the private CA worked: {log}"
    );

    // Without boot_method=vmedia nothing is copied, so the same server is not trusted.
    let before = seen.load(Ordering::SeqCst);
    let root = fixture_root();
    let r = root.path();
    media(r);
    let log = run_agent(
        r,
        &format!("ipa-api-url={url} ipa-lookup-timeout=1 ipa-lookup-interval=0.2"),
    );
    assert!(!r.join("etc/ironic-python-agent").exists());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        before,
        "no request got past TLS: {log}"
    );
}
