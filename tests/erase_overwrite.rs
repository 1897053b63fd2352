//! The erase data paths on real block devices: overwrite (random passes, zero pass by
//! BLKZEROOUT or by writes), express erase by discard, and sampled verification, on
//! loop devices over sparse temp files. Each device starts filled with a pattern in
//! which every 4 KiB block differs from every other and from zeros; afterwards the whole
//! device is read back with direct reads (not through the page cache) and compared.
//! Each test opens only its own device, through the allow-list door.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::loopdev::LoopDev;
use ira::blockdev::{open_for_write, AllowList};
use ira::erase::caps::Caps;
use ira::erase::express::{express_erase, ExpressMethod};
use ira::erase::io::EraseIoError;
use ira::erase::overwrite::{
    overwrite, overwrite_verified, OverwriteError, OverwritePlan, PassKind,
};
use ira::erase::report::DiskEraseReport;
use ira::erase::verify::{check, sample_offsets, snapshot, Expect, VerifyError};
use ira::image::aligned::AlignedBuf;
use ira::sys::block;
use nix::errno::Errno;

const MIB: u64 = 1 << 20;
const BLOCK: usize = 4096;

/// The pattern's 4 KiB block at byte `offset`: words naming the block and their index,
/// never zero.
fn pattern_block(offset: u64) -> Vec<u8> {
    let b = offset / BLOCK as u64;
    (0..BLOCK as u64 / 8)
        .flat_map(|w| ((b << 32) | (w + 1) | (1 << 63)).to_le_bytes())
        .collect()
}

/// Fills `len` bytes of `path` from `start` with the pattern of their offsets.
fn fill_pattern(path: &Path, start: u64, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let mut off = start;
    while off < start + len {
        let n = (start + len - off).min(4 * MIB);
        let chunk: Vec<u8> = (0..n.div_ceil(BLOCK as u64))
            .flat_map(|i| pattern_block(off + i * BLOCK as u64))
            .take(usize::try_from(n).unwrap())
            .collect();
        f.write_all_at(&chunk, off).unwrap();
        off += n;
    }
    f.sync_all().unwrap();
}

/// All of `path` read with direct I/O (the device's bytes, not cached ones).
fn read_direct(path: &Path, len: u64) -> Vec<u8> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut buf = AlignedBuf::new(usize::try_from(MIB).unwrap());
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap());
    while (out.len() as u64) < len {
        let n = usize::try_from((len - out.len() as u64).min(MIB)).unwrap();
        f.read_exact_at(&mut buf.full_mut()[..n], out.len() as u64)
            .unwrap();
        out.extend_from_slice(&buf.full()[..n]);
    }
    out
}

/// A loop device of `size` bytes filled with the pattern, and its writable handle.
fn patterned(size: u64) -> (LoopDev, File) {
    let l = LoopDev::new(size);
    fill_pattern(l.path(), 0, size);
    let f = open(&l);
    (l, f)
}

fn open(l: &LoopDev) -> File {
    open_for_write(l.path(), &AllowList::new(vec![l.path_str().to_owned()])).unwrap()
}

fn caps(l: &LoopDev, f: &File) -> Caps {
    Caps::probe(Path::new("/"), &l.name(), f).unwrap()
}

fn plan(iterations: u32, zeroize: bool) -> OverwritePlan {
    OverwritePlan {
        iterations,
        zeroize,
        ..OverwritePlan::default()
    }
}

fn no_abort() -> AtomicBool {
    AtomicBool::new(false)
}

fn assert_all_zero(data: &[u8]) {
    if let Some(i) = data.iter().position(|&b| b != 0) {
        panic!("non-zero byte at offset {i}");
    }
}

#[test]
fn loop_devices_offer_discard_and_write_zeroes_but_not_secure_discard() {
    let (l, f) = patterned(8 * MIB);
    let c = caps(&l, &f);
    assert!(c.discard() && c.write_zeroes(), "{c:?}");
    // Asking must not have changed a byte.
    assert!(!c.secure_discard);
    assert_eq!(
        read_direct(l.path(), 8192),
        [pattern_block(0), pattern_block(4096)].concat()
    );
}

#[test]
fn range_ioctls_touch_exactly_their_range() {
    let (l, f) = patterned(4 * MIB);
    block::zero_out(&f, MIB, 8192).unwrap();
    block::discard(&f, 2 * MIB, 4096).unwrap();
    let data = read_direct(l.path(), 4 * MIB);
    let (one, two) = (
        usize::try_from(MIB).unwrap(),
        usize::try_from(2 * MIB).unwrap(),
    );
    assert_all_zero(&data[one..one + 8192]);
    assert_all_zero(&data[two..two + 4096]);
    assert_eq!(data[one - BLOCK..one], pattern_block(MIB - 4096)[..]);
    assert_eq!(
        data[one + 8192..one + 8192 + BLOCK],
        pattern_block(MIB + 8192)[..]
    );
    assert_eq!(
        data[two + 4096..two + 8192],
        pattern_block(2 * MIB + 4096)[..]
    );
    // Unaligned and out-of-range requests are refused by the kernel.
    assert_eq!(block::zero_out(&f, 100, 512), Err(Errno::EINVAL));
    assert_eq!(block::discard(&f, 4 * MIB, 4096), Err(Errno::EINVAL));
    assert_eq!(block::secure_discard(&f, 0, 4096), Err(Errno::EOPNOTSUPP));
}

#[test]
fn one_random_pass_and_zeros_leave_every_byte_zero() {
    let size = 64 * MIB;
    let (l, f) = patterned(size);
    let c = caps(&l, &f);
    let mut calls = 0;
    let r = overwrite_verified(&f, size, &plan(1, true), &c, &no_abort(), &mut |_| {
        calls += 1
    })
    .unwrap();
    let kinds: Vec<_> = r.overwrite.passes.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [PassKind::Random, PassKind::WriteZeroes]);
    assert_eq!(r.overwrite.bytes, 2 * size);
    assert!(r.overwrite.direct_io);
    // One progress call per write of the default size, then one BLKZEROOUT range.
    let writes = size / u64::try_from(ira::erase::overwrite::DEFAULT_BUFFER).unwrap();
    assert_eq!(writes, 16);
    assert_eq!(calls, writes + 1);
    let v = r.verify.clone().unwrap();
    assert_eq!(
        (v.expect, v.samples, v.zero_before),
        (Expect::Zeroes, 64, 0)
    );
    assert_all_zero(&read_direct(l.path(), size));

    let report = DiskEraseReport::from_overwrite(l.path_str(), Some("SER1"), &r);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["method"], "overwrite");
    assert_eq!(json["serial"], "SER1");
    assert_eq!(json["bytes"], 2 * size);
    assert_eq!(json["passes"], 2);
    assert_eq!(json["verified_samples"], 64);
    assert!(json["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn two_random_passes_leave_no_old_block() {
    let size = 32 * MIB;
    let (l, f) = patterned(size);
    let r = overwrite_verified(
        &f,
        size,
        &plan(2, false),
        &caps(&l, &f),
        &no_abort(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.overwrite.passes.len(), 2);
    assert_eq!(r.verify.unwrap().expect, Expect::NotOld);
    let data = read_direct(l.path(), size);
    let mut zero_blocks = 0;
    for (i, b) in data.chunks(BLOCK).enumerate() {
        assert_ne!(
            b,
            pattern_block(i as u64 * BLOCK as u64),
            "block {i} kept its data"
        );
        zero_blocks += usize::from(b.iter().all(|&x| x == 0));
    }
    assert_eq!(zero_blocks, 0, "random data, not zeros");
}

#[test]
fn zeros_only_by_writes_when_the_device_has_no_write_zeroes() {
    let size = 24 * MIB;
    let (l, f) = patterned(size);
    let c = Caps {
        write_zeroes_max_bytes: 0,
        ..caps(&l, &f)
    };
    let r = overwrite_verified(&f, size, &plan(0, true), &c, &no_abort(), &mut |_| {}).unwrap();
    let kinds: Vec<_> = r.overwrite.passes.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [PassKind::Zeros]);
    assert_all_zero(&read_direct(l.path(), size));
}

#[test]
fn a_size_that_is_no_multiple_of_the_buffer_is_overwritten_to_its_last_sector() {
    // A window of 20 MiB + 3 sectors into a patterned backing file: the last write is
    // short and the bytes around the window must survive.
    let (start, size) = (MIB, 20 * MIB + 1536);
    let backing = LoopDev::new(32 * MIB);
    fill_pattern(backing.path(), 0, 32 * MIB);
    let l = LoopDev::over(backing.path())
        .offset(start)
        .size_limit(size)
        .attach();
    assert_eq!(l.size(), size);
    let f = open(&l);
    let c = Caps {
        write_zeroes_max_bytes: 0,
        ..caps(&l, &f)
    };
    let r = overwrite_verified(&f, size, &plan(1, true), &c, &no_abort(), &mut |_| {}).unwrap();
    assert_eq!(r.overwrite.bytes, 2 * size);
    // Direct I/O all the way: the 1536-byte tail is a whole number of sectors.
    assert!(r.overwrite.direct_io);
    drop(f);
    drop(l);
    let all = read_direct(backing.path(), 32 * MIB);
    let (s, e) = (
        usize::try_from(start).unwrap(),
        usize::try_from(start + size).unwrap(),
    );
    assert_all_zero(&all[s..e]);
    assert_eq!(all[s - BLOCK..s], pattern_block(start - 4096)[..]);
    // The pattern resumes mid-block right after the window.
    assert_eq!(all[e..e + 2560], pattern_block(start + size - 1536)[1536..]);
    assert_eq!(all[all.len() - BLOCK..], pattern_block(32 * MIB - 4096)[..]);
}

#[test]
fn express_erase_discards_a_loop_device_and_proves_it() {
    let size = 64 * MIB;
    let (l, f) = patterned(size);
    let c = caps(&l, &f);
    let r = express_erase(&f, size, &c, &no_abort()).unwrap();
    assert_eq!(r.method, ExpressMethod::Discard);
    assert!(r.tried.is_empty(), "{:?}", r.tried);
    assert_eq!((r.verify.expect, r.verify.samples), (Expect::NotOld, 64));
    // Loop discards punch holes in the backing file: reads return zeros.
    assert_all_zero(&read_direct(l.path(), size));
    let report = DiskEraseReport::from_express(l.path_str(), None, &r);
    assert_eq!(report.method, "discard");
    assert_eq!(
        (report.bytes, report.passes, report.verified_samples),
        (size, 1, 64)
    );
}

#[test]
fn express_erase_by_write_zeroes_when_discard_is_not_offered() {
    let size = 16 * MIB;
    let (l, f) = patterned(size);
    let c = Caps {
        discard_max_bytes: 0,
        ..caps(&l, &f)
    };
    let r = express_erase(&f, size, &c, &no_abort()).unwrap();
    assert_eq!(r.method, ExpressMethod::WriteZeroes);
    assert_eq!(r.verify.expect, Expect::Zeroes);
    assert_all_zero(&read_direct(l.path(), size));
}

#[test]
fn verification_fails_when_nothing_was_erased() {
    let size = 16 * MIB;
    let (l, f) = patterned(size);
    let offsets = sample_offsets(size, 16, 4096, 42);
    let before = snapshot(&f, &offsets, 4096).unwrap();
    let e = check(&f, &before, Expect::NotOld).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Survived {
                offset: 0,
                count: 16,
                samples: 16
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "old data survived at offset 0 (16 of 16 samples)"
    );
    let e = check(&f, &before, Expect::Zeroes).unwrap_err();
    assert!(
        e.to_string().starts_with("data is not zero at offset 0"),
        "{e}"
    );
    // One block left behind by an otherwise complete erase is found too.
    block::zero_out(&f, 0, size).unwrap();
    let missed = offsets[7];
    fill_pattern(l.path(), missed, 4096);
    let e = check(&f, &before, Expect::NotOld).unwrap_err();
    assert!(
        matches!(e, VerifyError::Survived { offset, count: 1, .. } if offset == missed),
        "{e}"
    );
}

#[test]
fn the_abort_flag_stops_an_overwrite_with_an_error() {
    let size = 16 * MIB;
    let (l, f) = patterned(size);
    let abort = AtomicBool::new(false);
    let e = overwrite(&f, size, &plan(1, true), &caps(&l, &f), &abort, &mut |p| {
        if p.bytes_done >= 8 * MIB {
            abort.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(
        matches!(e, EraseIoError::Aborted { pass: 1, done, total } if done == 8 * MIB && total == size),
        "{e}"
    );
    // The second half was never written.
    let data = read_direct(l.path(), size);
    let half = usize::try_from(8 * MIB).unwrap();
    assert_eq!(data[half..half + BLOCK], pattern_block(8 * MIB)[..]);
    // Through the verified entry point the same abort is an I/O error, not a verdict.
    let abort = AtomicBool::new(true);
    let e = overwrite_verified(&f, size, &plan(1, true), &caps(&l, &f), &abort, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(e, OverwriteError::Io(EraseIoError::Aborted { done: 0, .. })),
        "{e}"
    );
}
