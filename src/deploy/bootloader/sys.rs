//! The two ioctls the bootloader code needs, behind safe functions: clearing a file's
//! immutable flag (FS_IOC_GETFLAGS/SETFLAGS; efivarfs marks boot variables immutable so
//! a stray `rm` cannot brick a machine) and telling the kernel about one partition
//! (BLKPG_ADD/DEL_PARTITION, what `partx -a`/`-d` do) when its view is missing or stale.
//! The only `unsafe` in `deploy::bootloader`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;

/// `FS_IMMUTABLE_FL` from `<linux/fs.h>`.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

// <linux/fs.h>: FS_IOC_GETFLAGS _IOR('f', 1, long), FS_IOC_SETFLAGS _IOW('f', 2, long);
// the kernel moves an int despite the `long` in the request code.
nix::ioctl_read_bad!(
    fs_ioc_getflags,
    nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);
nix::ioctl_write_ptr_bad!(
    fs_ioc_setflags,
    nix::request_code_write!(b'f', 2, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);
// <linux/fs.h>: BLKPG _IO(0x12, 105).
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

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

/// Clears `FS_IMMUTABLE_FL` on an open file; `Ok(false)` when it was not set or the
/// filesystem has no such flags (a plain directory standing in for efivarfs).
pub fn clear_immutable(file: &File) -> Result<bool, Errno> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the fd is open for the lifetime of `file`; FS_IOC_GETFLAGS writes one int
    // into `flags`, which lives across the call.
    match unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) } {
        Ok(_) => {}
        Err(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
    }
    if flags & FS_IMMUTABLE_FL == 0 {
        return Ok(false);
    }
    let cleared = flags & !FS_IMMUTABLE_FL;
    // SAFETY: the fd is open for the lifetime of `file`; FS_IOC_SETFLAGS reads one int
    // from `cleared`, which lives across the call.
    unsafe { fs_ioc_setflags(file.as_raw_fd(), &cleared) }?;
    Ok(true)
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
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: std::ptr::addr_of_mut!(part).cast(),
    };
    // SAFETY: the fd is open for the lifetime of `disk`; `arg.data` points at `part`
    // and `datalen` is its size; both live across the call and the kernel only reads them.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }?;
    Ok(())
}
