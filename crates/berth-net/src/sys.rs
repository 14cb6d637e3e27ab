//! Thin wrappers over the few system calls the kernel needs us to make directly
//! (`unshare`, `mount`, `umount2`); everything unsafe in this crate lives here.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Moves the calling thread into a new, empty network namespace.
#[allow(unsafe_code)]
pub(crate) fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare takes a flag word only; CLONE_NEWNET affects just the calling
    // thread (which the caller dedicates to this purpose) and touches no memory of ours.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mount(2)` with an optional source and no data.
#[allow(unsafe_code)]
pub(crate) fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let none = c"none";
    let src_ptr = source.as_ref().map_or(none.as_ptr(), |s| s.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, and
    // `data` is null, which mount(2) accepts for bind and propagation changes.
    let rc = unsafe {
        libc::mount(
            src_ptr,
            target.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `umount2(2)` of `target` with `flags`.
#[allow(unsafe_code)]
pub(crate) fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mount points of the calling process, decoded from `/proc/self/mountinfo`, with their
/// filesystem type.
pub(crate) fn mounts() -> io::Result<Vec<(std::path::PathBuf, String)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or_default().to_string();
        out.push((std::path::PathBuf::from(unescape(mount_point)), fstype));
    }
    Ok(out)
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trail\04"), r"/trail\04");
    }

    #[test]
    fn lists_root_mount() {
        let m = mounts().expect("mountinfo");
        assert!(m.iter().any(|(p, _)| p == Path::new("/")));
    }
}
