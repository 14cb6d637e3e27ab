//! The few system calls std does not wrap: `mknod` (overlay whiteouts and device nodes in
//! layers), `flock` (one writer of the store's index across processes) and `syncfs`
//! (flush an unpacked layer before it is marked done). Each `unsafe` block is a plain FFI
//! call on values we own.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Creates a device node or fifo at `path` (`mode` includes the file type bits).
pub(crate) fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; mknod reads it
    // and touches no memory of ours.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates an overlayfs whiteout (a character device 0:0) at `path`.
pub(crate) fn mknod_whiteout(path: &Path) -> io::Result<()> {
    mknod(path, libc::S_IFCHR, 0, 0)
}

/// Takes an exclusive `flock` on `file`, blocking until it is free. Released when the
/// file is closed.
pub(crate) fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file`, borrowed here.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Flushes the filesystem that holds `file` to disk.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the lifetime of `file`, borrowed here.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
