//! The ATA security erase's real SG_IO path on devices that are no ATA drive: a loop
//! device refuses SG_IO (EINVAL from the loop driver), so the erase is "not supported" and writes
//! nothing; a partition is refused before any command is sent (a security erase would
//! take the whole disk). Each device is filled with a pattern that must survive.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::blockio::{read_at, write_at};
use common::cmd::run;
use common::loopdev::LoopDev;
use ira::erase::ata::{erase_ata, identify_cdb, AtaEraseError, AtaOutcome};
use ira::sys::sg_io::{ata_pass_through_16, DataDir, SgIoError};

const MIB: u64 = 1 << 20;

/// Writes a position-dependent pattern of `len` bytes at the start of `path` (synced)
/// and returns it.
fn plant_pattern(path: &Path, len: u64) -> Vec<u8> {
    let pattern: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i * 131 + i / 4096) % 251).unwrap())
        .collect();
    write_at(path, 0, &pattern);
    pattern
}

fn not_supported(res: Result<AtaOutcome, AtaEraseError>) -> String {
    match res {
        Ok(AtaOutcome::NotSupported { reason }) => reason,
        other => panic!("expected NotSupported, got {other:?}"),
    }
}

#[test]
fn a_loop_device_does_not_do_sg_io_and_is_left_untouched() {
    let l = LoopDev::new(8 * MIB);
    let pattern = plant_pattern(l.path(), 8 * MIB);
    // IDENTIFY DEVICE, the first command the erase sends, straight through sys::sg_io.
    let dev = File::open(l.path()).unwrap();
    let cdb = identify_cdb();
    let mut buf = [0u8; 512];
    let err =
        ata_pass_through_16(&dev, &cdb, DataDir::In, &mut buf, Duration::from_secs(5)).unwrap_err();
    // The loop driver answers unknown ioctls with EINVAL (lo_simple_ioctl); other
    // kernels' block layers with ENOTTY.
    assert!(
        matches!(err, SgIoError::NotSupported(e) if e == libc::EINVAL || e == libc::ENOTTY),
        "{err}"
    );

    let mut notes = Vec::new();
    let res = erase_ata(l.path(), &mut |n: &str| notes.push(n.to_owned()));
    let reason = not_supported(res);
    assert!(reason.contains("does not accept SG_IO"), "{reason}");
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        read_at(l.path(), 0, pattern.len()) == pattern,
        "the loop device changed"
    );
    assert!(
        std::fs::read(l.file()).unwrap() == pattern,
        "the backing file changed"
    );
}

#[test]
fn a_partition_is_refused_before_any_command() {
    let l = LoopDev::builder(16 * MIB).partscan(true).attach();
    run("sgdisk", &["-n1:2048:+4M", l.path_str()]);
    let _ = Command::new("partx").args(["-a", l.path_str()]).output();
    let p1 = l.part(1);
    for _ in 0..200 {
        if p1.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = std::fs::read(l.file()).unwrap();
    let reason = not_supported(erase_ata(&p1, &mut |_: &str| {}));
    assert!(reason.contains("partition"), "{reason}");
    assert!(std::fs::read(l.file()).unwrap() == before);
}

#[test]
fn a_regular_file_is_not_supported_and_a_missing_device_is_an_error() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let pattern = plant_pattern(f.path(), 64 << 10);
    let reason = not_supported(erase_ata(f.path(), &mut |_: &str| {}));
    assert!(reason.contains("not a block device"), "{reason}");
    assert!(std::fs::read(f.path()).unwrap() == pattern);

    let err = erase_ata(Path::new("/dev/nonexistent-ata-disk"), &mut |_: &str| {}).unwrap_err();
    assert!(matches!(err, AtaEraseError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains("/dev/nonexistent-ata-disk"),
        "{err}"
    );
}
