//! Mounts the node agent makes on the host for pod volumes: tmpfs for memory-backed emptyDirs
//! and for secret and projected volumes (their content never touches the disk, as upstream),
//! bind mounts for `subPath`s made safely (the path is opened component by component without
//! following symlinks, and the opened file is what gets mounted), and their removal: every
//! mount under a pod's directory goes before the directory does.

use nix::fcntl::{open, openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// Errors of making a volume's mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("subPath {0:?} is outside of its volume")]
    Escapes(String),
    #[error("subPath {0:?} changed while it was being mounted (a symlink appeared)")]
    Changed(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Mount points of this process, from `/proc/self/mountinfo`.
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
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

/// Whether `path` is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().is_ok_and(|m| m.iter().any(|p| p == path))
}

/// Mounts a tmpfs on `target` (made if missing) unless one is mounted there already.
pub fn mount_tmpfs(target: &Path, size_bytes: Option<u64>, mode: u32) -> Result<(), MountError> {
    std::fs::create_dir_all(target).map_err(io_err("make", target))?;
    if is_mount_point(target) {
        return Ok(());
    }
    let mut options = format!("mode={mode:o}");
    if let Some(size) = size_bytes.filter(|s| *s > 0) {
        options.push_str(&format!(",size={size}"));
    }
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| io_err("mount a tmpfs on", target)(errno(e)))
}

/// Unmounts everything mounted at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) -> Result<(), MountError> {
    // Mounts stacked on one point need one unmount each; a few rounds cover them.
    for _ in 0..8 {
        let mut under: Vec<PathBuf> = mount_points()
            .map_err(io_err("read the mounts under", dir))?
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect();
        if under.is_empty() {
            return Ok(());
        }
        under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in under {
            match umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(io_err("unmount", &m)(errno(e))),
            }
        }
    }
    Err(io_err("unmount everything under", dir)(io::Error::other(
        "mounts remain after repeated unmounts",
    )))
}

/// Removes a pod's directory after unmounting whatever its volumes mounted in it.
pub fn remove_pod_dir(dir: &Path) -> Result<(), MountError> {
    unmount_under(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

/// Bind-mounts `sub` of the volume at `volume` onto `target` (kept if already mounted, so a
/// restarted container sees what the first one saw, as upstream). The path is resolved once,
/// must stay inside the volume, and is then opened one component at a time without following
/// symlinks; the opened file itself is mounted, so a symlink swapped in meanwhile cannot
/// redirect the mount outside the volume.
pub fn bind_subpath(volume: &Path, sub: &str, target: &Path) -> Result<(), MountError> {
    if is_mount_point(target) {
        return Ok(());
    }
    let base = std::fs::canonicalize(volume).map_err(io_err("resolve", volume))?;
    let joined = volume.join(sub);
    let full = std::fs::canonicalize(&joined).map_err(io_err("resolve", &joined))?;
    let rel = full
        .strip_prefix(&base)
        .map_err(|_| MountError::Escapes(sub.to_string()))?
        .to_path_buf();
    let mut fd = open(
        &base,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", &base)(errno(e)))?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(MountError::Escapes(sub.to_string()));
        };
        fd = openat(
            &fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", &full)(errno(e)))?;
        let st = fstat(&fd).map_err(|e| io_err("stat", &full)(errno(e)))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(MountError::Changed(sub.to_string()));
        }
    }
    let st = fstat(&fd).map_err(|e| io_err("stat", &full)(errno(e)))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("make", parent))?;
    }
    if is_dir {
        std::fs::create_dir_all(target).map_err(io_err("make", target))?;
    } else if !target.exists() {
        std::fs::File::create(target).map_err(io_err("make", target))?;
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount(
        Some(&source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io_err("bind-mount a subPath on", target)(errno(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    /// Root only: tmpfs and subPath mounts are made, refused when escaping, and all removed
    /// with the pod directory.
    #[test]
    fn tmpfs_and_subpaths_are_mounted_and_removed() {
        if !crate::host::is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let pod = std::env::temp_dir().join(format!("berth-mounts-{}", std::process::id()));
        let _ = remove_pod_dir(&pod);
        let mem = pod.join("volumes/mem");
        mount_tmpfs(&mem, Some(1 << 20), 0o777).expect("tmpfs");
        mount_tmpfs(&mem, Some(1 << 20), 0o777).expect("tmpfs again is a no-op");
        assert!(is_mount_point(&mem));
        let count = mount_points()
            .expect("mounts")
            .iter()
            .filter(|m| *m == &mem)
            .count();
        assert_eq!(count, 1, "mounted once");
        std::fs::create_dir_all(mem.join("d")).expect("dir");
        std::fs::write(mem.join("d/f"), "file").expect("file");
        std::os::unix::fs::symlink("/etc", mem.join("out")).expect("symlink");
        std::os::unix::fs::symlink("d/f", mem.join("in")).expect("symlink");

        let t1 = pod.join("volume-subpaths/mem/c/0");
        bind_subpath(&mem, "d", &t1).expect("dir subPath");
        assert_eq!(std::fs::read_to_string(t1.join("f")).expect("f"), "file");
        let t2 = pod.join("volume-subpaths/mem/c/1");
        bind_subpath(&mem, "in", &t2).expect("symlink inside the volume");
        assert_eq!(std::fs::read_to_string(&t2).expect("f"), "file");
        let t3 = pod.join("volume-subpaths/mem/c/2");
        assert!(matches!(
            bind_subpath(&mem, "out", &t3),
            Err(MountError::Escapes(_))
        ));
        assert!(!is_mount_point(&t3));

        remove_pod_dir(&pod).expect("remove");
        assert!(!pod.exists());
        assert!(!mount_points()
            .expect("mounts")
            .iter()
            .any(|m| m.starts_with(&pod)));
    }
}
