//! Named network namespaces kept alive by a bind mount instead of a process, the way
//! `ip netns add` does it: a dedicated thread unshares its network namespace and
//! bind-mounts `/proc/thread-self/ns/net` onto `<dir>/<name>`; the thread then exits and
//! the mount alone keeps the namespace. The directory itself is made a mount point with
//! shared propagation so that the namespace mounts are visible in mount namespaces
//! created later (containers, shims). The calling thread never changes namespace.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys;

/// Errors from managing named network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name is empty or contains characters not allowed in a file name.
    #[error("failed to use network namespace name {0:?}: only [A-Za-z0-9_.-] allowed")]
    InvalidName(String),
    /// The namespace directory could not be created or prepared as a mount point.
    #[error("failed to prepare network namespace directory {dir}: {source}")]
    PrepareDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A new network namespace could not be created or mounted.
    #[error("failed to create network namespace {path}: {source}")]
    Create {
        /// The bind mount target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A network namespace could not be unmounted or its file removed.
    #[error("failed to remove network namespace {path}: {source}")]
    Remove {
        /// The bind mount target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory could not be listed or the mount table read.
    #[error("failed to list network namespaces in {dir}: {source}")]
    List {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A directory of named network namespaces, like `/run/netns` but owned by the caller
/// (the node uses `<data-dir>/netns`).
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

/// Checks that `name` is a plain file name (what CNI also allows in container IDs).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl NetnsDir {
    /// A namespace directory at `dir`; nothing is touched until a namespace is created.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding the namespace files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path a namespace named `name` has (or would have).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether a namespace named `name` is mounted.
    pub fn exists(&self, name: &str) -> Result<bool, NetnsError> {
        // Mount tables show canonical paths.
        let path = fs::canonicalize(&self.dir)
            .unwrap_or_else(|_| self.dir.clone())
            .join(name);
        let mounts = sys::mounts().map_err(|source| NetnsError::List {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(mounts.iter().any(|(p, fs)| p == &path && fs == "nsfs"))
    }

    /// Creates the directory and makes it a mount point with shared propagation, exactly
    /// like `ip netns`: first try `MS_SHARED|MS_REC`, and if the directory is not a mount
    /// point yet, bind-mount it onto itself and try again. Idempotent.
    pub fn prepare(&self) -> Result<(), NetnsError> {
        let err = |source| NetnsError::PrepareDir {
            dir: self.dir.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(err)?;
        // Mount tables show canonical paths.
        let dir = fs::canonicalize(&self.dir).map_err(err)?;
        let is_mount_point = sys::mounts().map_err(err)?.iter().any(|(p, _)| p == &dir);
        if !is_mount_point {
            sys::mount(Some(&dir), &dir, libc::MS_BIND | libc::MS_REC).map_err(err)?;
        }
        sys::mount(None, &dir, libc::MS_SHARED | libc::MS_REC).map_err(err)
    }

    /// Creates the network namespace `name` and returns its path. Idempotent: an existing
    /// namespace of that name is kept (with whatever interfaces it has).
    pub fn create(&self, name: &str) -> Result<PathBuf, NetnsError> {
        if !valid_name(name) {
            return Err(NetnsError::InvalidName(name.to_string()));
        }
        self.prepare()?;
        let path = self.path(name);
        if self.exists(name)? {
            return Ok(path);
        }
        let err = |source| NetnsError::Create {
            path: path.clone(),
            source,
        };
        // The mount target must exist; a leftover empty file from a crash is reused.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        let target = path.clone();
        // A dedicated thread owns the new namespace only long enough to mount it, so no
        // thread of the caller (tokio workers included) ever changes namespace.
        let result = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || -> io::Result<()> {
                sys::unshare_net()?;
                sys::mount(
                    Some(Path::new("/proc/thread-self/ns/net")),
                    &target,
                    libc::MS_BIND,
                )
            })
            .map_err(err)?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(source) = result {
            let _ = fs::remove_file(&path);
            return Err(err(source));
        }
        Ok(path)
    }

    /// Removes the namespace `name`: unmounts it (lazily, so open handles stay valid) and
    /// unlinks the file. Idempotent: a missing namespace is not an error.
    pub fn remove(&self, name: &str) -> Result<(), NetnsError> {
        if !valid_name(name) {
            return Err(NetnsError::InvalidName(name.to_string()));
        }
        let path = self.path(name);
        let err = |source| NetnsError::Remove {
            path: path.clone(),
            source,
        };
        // Stacked mounts (two racing creates) are all undone.
        for _ in 0..8 {
            match sys::umount(&path, libc::MNT_DETACH) {
                Ok(()) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => break,
                Err(e) => return Err(err(e)),
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Names of the entries in the directory (mounted or leftover files), sorted, for
    /// cleaning up namespaces nobody owns any more.
    pub fn list(&self) -> Result<Vec<String>, NetnsError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetnsError::List {
                    dir: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| NetnsError::List {
                dir: self.dir.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str() {
                if valid_name(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes every namespace in the directory and unmounts the directory itself (the
    /// inverse of [`NetnsDir::prepare`]); for uninstalling and for tests.
    pub fn remove_all(&self) -> Result<(), NetnsError> {
        for name in self.list()? {
            self.remove(&name)?;
        }
        let Ok(dir) = fs::canonicalize(&self.dir) else {
            return Ok(());
        };
        for _ in 0..8 {
            match sys::umount(&dir, libc::MNT_DETACH) {
                Ok(()) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => break,
                Err(source) => return Err(NetnsError::Remove { path: dir, source }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        assert!(valid_name("0b8f-uid_1.x"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
    }

    #[test]
    fn create_remove_list_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = NetnsDir::new(tmp.path().join("netns"));
        struct Guard(NetnsDir);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.remove_all();
            }
        }
        let guard = Guard(dir.clone());
        let me = fs::read_link("/proc/thread-self/ns/net").expect("own netns");
        let path = dir.create("pod-a").expect("create");
        assert!(dir.exists("pod-a").expect("exists"));
        // The calling thread stayed where it was.
        assert_eq!(
            fs::read_link("/proc/thread-self/ns/net").expect("own netns"),
            me
        );
        // Idempotent create returns the same namespace.
        assert_eq!(dir.create("pod-a").expect("create again"), path);
        dir.create("pod-b").expect("create b");
        assert_eq!(dir.list().expect("list"), vec!["pod-a", "pod-b"]);
        dir.remove("pod-a").expect("remove");
        dir.remove("pod-a").expect("remove again");
        assert!(!dir.exists("pod-a").expect("exists"));
        assert!(!path.exists());
        assert_eq!(dir.list().expect("list"), vec!["pod-b"]);
        assert!(matches!(
            dir.create("../x"),
            Err(NetnsError::InvalidName(_))
        ));
        drop(guard);
        assert!(!dir.exists("pod-b").expect("exists"));
        let canon = fs::canonicalize(dir.dir()).expect("canon");
        let mounts = sys::mounts().expect("mounts");
        assert!(!mounts.iter().any(|(p, _)| p.starts_with(&canon)));
    }
}
