//! The inode-flag ioctls (FS_IOC_GETFLAGS/SETFLAGS, `chattr`'s family): clearing a
//! file's immutable flag; efivarfs marks boot variables immutable so a stray `rm`
//! cannot brick a machine.
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
