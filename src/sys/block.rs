//! The block-device ioctls (`<linux/fs.h>` request type 0x12): size (BLKGETSIZE64),
//! logical sector size (BLKSSZGET), re-reading the partition table (BLKRRPART), telling
//! the kernel about one partition (BLKPG_ADD/DEL_PARTITION, what `partx -a`/`-d` do)
//! when its view is missing or stale, and the range commands erase uses: discard
//! (BLKDISCARD), secure discard (BLKSECDISCARD) and write zeroes (BLKZEROOUT). Callers see
//! safe functions taking a `&File`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use nix::errno::Errno;

// <linux/fs.h>: BLKRRPART _IO(0x12,95), BLKSSZGET _IO(0x12,104), BLKPG _IO(0x12,105),
// BLKGETSIZE64 _IOR(0x12,114,size_t), BLKDISCARD _IO(0x12,119), BLKSECDISCARD
// _IO(0x12,125), BLKZEROOUT _IO(0x12,127); the last three read a `uint64_t[2]`
// {start, length} in bytes despite their _IO encoding.
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blksecdiscard, nix::request_code_none!(0x12, 125), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// `BLKPG_ADD_PARTITION` from `<linux/blkpg.h>`.
const BLKPG_ADD_PARTITION: libc::c_int = 1;
/// `BLKPG_DEL_PARTITION` from `<linux/blkpg.h>`.
const BLKPG_DEL_PARTITION: libc::c_int = 2;

/// `struct blkpg_ioctl_arg` from `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` from `<linux/blkpg.h>` (offsets in bytes).
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<BlkpgIoctlArg>() == 24);
const _: () = assert!(std::mem::size_of::<BlkpgPartition>() == 152);

/// BLKRRPART answers EBUSY while udev or a prober still holds a partition; partprobe
/// retries too (IPA: `[disk_utils]partprobe_attempts` = 10).
const REREAD_ATTEMPTS: u32 = 10;
const REREAD_DELAY: Duration = Duration::from_millis(100);

/// A failed ioctl, named after the request.
#[derive(Debug, thiserror::Error)]
pub enum IoctlError {
    /// BLKGETSIZE64 failed.
    #[error("BLKGETSIZE64: {0}")]
    Size(Errno),
    /// BLKSSZGET failed or returned a nonsense value.
    #[error("BLKSSZGET: {0}")]
    SectorSize(Errno),
    /// BLKRRPART failed (EBUSY: a partition is in use; EINVAL: the device has no
    /// partition support, e.g. a loop device without partscan).
    #[error("BLKRRPART: {0}")]
    Reread(Errno),
    /// fsync before the re-read failed.
    #[error("fsync: {0}")]
    Sync(std::io::Error),
}

/// Size of a block device in bytes.
pub fn device_size(dev: &File) -> Result<u64, IoctlError> {
    let mut size: u64 = 0;
    // SAFETY: the fd is open for the lifetime of `dev`; BLKGETSIZE64 writes one u64
    // (size_t on 64-bit Linux) into `size`, which lives across the call.
    unsafe { blkgetsize64(dev.as_raw_fd(), &mut size) }.map_err(IoctlError::Size)?;
    Ok(size)
}

/// Logical sector size of a block device in bytes.
pub fn logical_sector_size(dev: &File) -> Result<u32, IoctlError> {
    let mut size: libc::c_int = 0;
    // SAFETY: the fd is open for the lifetime of `dev`; BLKSSZGET writes one int into
    // `size`, which lives across the call.
    unsafe { blksszget(dev.as_raw_fd(), &mut size) }.map_err(IoctlError::SectorSize)?;
    u32::try_from(size).map_err(|_| IoctlError::SectorSize(Errno::EINVAL))
}

/// Asks the kernel to re-read the partition table of a block device (once).
pub fn reread_partition_table(dev: &File) -> Result<(), IoctlError> {
    // SAFETY: the fd is open for the lifetime of `dev`; BLKRRPART takes no argument.
    unsafe { blkrrpart(dev.as_raw_fd()) }.map_err(IoctlError::Reread)?;
    Ok(())
}

/// Adds partition `number` (bytes `start..start+length`) to the kernel's view of the
/// disk open as `disk`, so its device node appears.
pub fn add_partition(disk: &File, number: u32, start: u64, length: u64) -> Result<(), Errno> {
    blkpg_partition(disk, BLKPG_ADD_PARTITION, number, start, length)
}

/// Removes partition `number` from the kernel's view of `disk` (EBUSY while in use).
pub fn delete_partition(disk: &File, number: u32) -> Result<(), Errno> {
    blkpg_partition(disk, BLKPG_DEL_PARTITION, number, 0, 0)
}

/// Discards (TRIMs/UNMAPs) `len` bytes at `offset` (both multiples of 512). What later
/// reads return is up to the device: zeros on some, old data on others. EOPNOTSUPP: the
/// device has no discard.
pub fn discard(dev: &File, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: the fd is open for the lifetime of `dev`; the kernel copies the two u64s
    // of `range`, which lives across the call, and writes nothing back.
    unsafe { blkdiscard(dev.as_raw_fd(), &range) }?;
    Ok(())
}

/// Securely discards `len` bytes at `offset` (both multiples of 512): the device must
/// make the old data unrecoverable, not only unmapped. EOPNOTSUPP: not offered.
pub fn secure_discard(dev: &File, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: as in discard(): `range` is read by the kernel during the call only.
    unsafe { blksecdiscard(dev.as_raw_fd(), &range) }?;
    Ok(())
}

/// Zeroes `len` bytes at `offset` (both multiples of 512) with the device's write-zeroes
/// command, or, on a device without one, with the kernel writing zero pages itself; the
/// blocks stay allocated (no unmap), and reads return zeros afterwards.
pub fn zero_out(dev: &File, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: as in discard(): `range` is read by the kernel during the call only.
    unsafe { blkzeroout(dev.as_raw_fd(), &range) }?;
    Ok(())
}

/// Whether the device offers secure discard, asked without touching data: the kernel
/// answers EOPNOTSUPP for a device without it before it looks at the range, and EINVAL
/// for a start that is not a multiple of 512 on one that has it (block/ioctl.c, the same
/// order since the secure-discard ioctl exists). EBADF: `dev` is not open for writing.
pub fn probe_secure_discard(dev: &File) -> Result<bool, Errno> {
    match secure_discard(dev, 1, 0) {
        Err(Errno::EINVAL) => Ok(true),
        Err(Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
        // A kernel that accepted an unaligned empty range did nothing with it, and still
        // took the command: count it as offered.
        Ok(()) => Ok(true),
    }
}

fn blkpg_partition(
    disk: &File,
    op: libc::c_int,
    number: u32,
    start: u64,
    length: u64,
) -> Result<(), Errno> {
    let mut part = BlkpgPartition {
        start: libc::c_longlong::try_from(start).map_err(|_| Errno::EOVERFLOW)?,
        length: libc::c_longlong::try_from(length).map_err(|_| Errno::EOVERFLOW)?,
        pno: libc::c_int::try_from(number).map_err(|_| Errno::EOVERFLOW)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: libc::c_int::try_from(std::mem::size_of::<BlkpgPartition>())
            .expect("BlkpgPartition is a few hundred bytes"),
        data: std::ptr::addr_of_mut!(part).cast(),
    };
    // SAFETY: the fd is open for the lifetime of `disk`; `arg.data` points at `part`
    // and `datalen` is its size; both live across the call and the kernel only reads them.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }?;
    Ok(())
}

/// Flushes what was written to `dev` and, for a block device, makes the kernel re-read
/// its partition table, retrying while it is busy. A regular file is only flushed.
pub fn rescan(dev: &File) -> Result<(), IoctlError> {
    dev.sync_all().map_err(IoctlError::Sync)?;
    let is_block = dev
        .metadata()
        .map_err(IoctlError::Sync)?
        .file_type()
        .is_block_device();
    if !is_block {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        match reread_partition_table(dev) {
            Err(IoctlError::Reread(Errno::EBUSY)) if attempt < REREAD_ATTEMPTS => {
                tracing::debug!(attempt, "partition table busy, retrying the re-read");
                attempt += 1;
                std::thread::sleep(REREAD_DELAY);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctls_on_a_regular_file_fail_with_enotty() {
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            device_size(&f),
            Err(IoctlError::Size(Errno::ENOTTY))
        ));
        assert!(matches!(
            logical_sector_size(&f),
            Err(IoctlError::SectorSize(Errno::ENOTTY))
        ));
        assert_eq!(add_partition(&f, 1, 1 << 20, 1 << 20), Err(Errno::ENOTTY));
        assert_eq!(delete_partition(&f, 1), Err(Errno::ENOTTY));
        assert_eq!(discard(&f, 0, 4096), Err(Errno::ENOTTY));
        assert_eq!(secure_discard(&f, 0, 4096), Err(Errno::ENOTTY));
        assert_eq!(zero_out(&f, 0, 4096), Err(Errno::ENOTTY));
        assert_eq!(probe_secure_discard(&f), Err(Errno::ENOTTY));
        // rescan of a regular file only flushes.
        rescan(&f).unwrap();
    }
}
