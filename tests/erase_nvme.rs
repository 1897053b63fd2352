//! The real NVMe transport on a device that is no NVMe namespace: a loop device (and a
//! plain file) must be refused as "not an NVMe device" by the first ioctl, with not a
//! byte written. The erase logic itself is unit-tested over a fake controller in
//! `src/erase/nvme.rs`; a QEMU NVMe disk belongs to the VM suite.

mod common;

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use common::blockio::{read_at, write_at};
use common::loopdev::LoopDev;
use ira::erase::nvme::{erase_nvme, NvmeEraseError, NvmeLimits, NvmeMode, SanitizeChoice};

const SIZE: u64 = 1 << 20;

/// A pattern no erase would leave behind: every byte differs from its neighbours.
fn pattern() -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i * 7 + i / 251).to_le_bytes()[0])
        .collect()
}

fn limits() -> NvmeLimits {
    NvmeLimits {
        admin_timeout: Duration::from_secs(5),
        format_timeout: Duration::from_secs(5),
        sanitize_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
    }
}

fn modes() -> [NvmeMode; 3] {
    [
        NvmeMode::Format,
        NvmeMode::Sanitize(SanitizeChoice::BestAvailable),
        NvmeMode::Sanitize(SanitizeChoice::Overwrite {
            passes: 1,
            pattern: 0,
        }),
    ]
}

fn assert_not_nvme(path: &Path, mode: NvmeMode, errnos: &[Errno]) {
    let mut calls = 0;
    let e = erase_nvme(path, mode, &mut |_| calls += 1, &limits()).unwrap_err();
    match &e {
        NvmeEraseError::NotNvme { device, errno } => {
            assert_eq!(device, &path.display().to_string());
            assert!(errnos.contains(errno), "{mode:?}: {errno}");
        }
        other => panic!("{mode:?}: expected NotNvme, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{} is not an NVMe namespace device",
            path.display()
        )),
        "{msg}"
    );
    assert_eq!(calls, 0, "{mode:?}: no progress reported");
}

#[test]
fn a_loop_device_is_not_nvme_and_is_left_untouched() {
    let l = LoopDev::new(SIZE);
    let data = pattern();
    write_at(l.path(), 0, &data);
    for mode in modes() {
        // The loop driver refuses unknown ioctls with EINVAL; most drivers say ENOTTY.
        assert_not_nvme(l.path(), mode, &[Errno::EINVAL, Errno::ENOTTY]);
    }
    let len = usize::try_from(SIZE).unwrap();
    assert!(read_at(l.path(), 0, len) == data, "device changed");
    assert!(read_at(l.file(), 0, len) == data, "backing file changed");
}

#[test]
fn a_regular_file_is_not_nvme_and_is_left_untouched() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let data = pattern();
    write_at(f.path(), 0, &data);
    for mode in modes() {
        assert_not_nvme(f.path(), mode, &[Errno::ENOTTY]);
    }
    assert!(read_at(f.path(), 0, data.len()) == data, "file changed");
}

#[test]
fn a_missing_device_cannot_be_opened() {
    let e = erase_nvme(
        Path::new("/nonexistent/nvme9n1"),
        NvmeMode::Format,
        &mut |_| {},
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(e, NvmeEraseError::Open { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/nvme9n1: cannot open"),
        "{e}"
    );
}
