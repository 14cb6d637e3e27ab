//! The host's cgroup layout and what the kernel reports about a container's cgroup.
//!
//! berth drives the OCI runtime with the cgroupfs layout (`linux.cgroupsPath` is a path
//! like `/berth/pod<uid>/<container>`), which means the same on cgroup v1 (one directory per
//! controller hierarchy), hybrid hosts (v1 controllers, cgroup2 at `/sys/fs/cgroup/unified`)
//! and cgroup v2 (one tree). What differs is where the files are, which this module knows.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The root of the cgroup filesystems.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup layout of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Every controller on a v1 hierarchy, no cgroup2.
    V1,
    /// Controllers on v1 hierarchies, cgroup2 mounted at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// The unified cgroup2 hierarchy at `/sys/fs/cgroup`.
    V2,
}

impl CgroupMode {
    /// Detects the layout from what is mounted under `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            CgroupMode::V2
        } else if root.join("unified/cgroup.controllers").exists() {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    }

    /// Whether the memory controller lives on a v1 hierarchy.
    pub fn memory_is_v1(self) -> bool {
        !matches!(self, CgroupMode::V2)
    }

    /// Whether memory+swap can be limited (v1 with swap accounting). On v2 the swap limit
    /// is left alone: without swap on the host it does not matter, and writing it fails
    /// on kernels without swap accounting.
    pub fn memory_swap_limit_supported(self) -> bool {
        self.memory_is_v1()
            && Path::new(CGROUP_ROOT)
                .join("memory/memory.memsw.limit_in_bytes")
                .exists()
    }
}

/// The memory cgroup directory of process `pid`, from `/proc/<pid>/cgroup`.
pub fn memory_cgroup_dir(pid: i32, mode: CgroupMode) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if mode.memory_is_v1() {
            if controllers.split(',').any(|c| c == "memory") {
                return Some(Path::new(CGROUP_ROOT).join("memory").join(rel));
            }
        } else if controllers.is_empty() {
            return Some(Path::new(CGROUP_ROOT).join(rel));
        }
    }
    None
}

/// How many times the kernel OOM-killed a process in the memory cgroup at `dir`
/// (v1 `memory.oom_control`, v2 `memory.events`); `None` when it cannot be read.
pub fn oom_kill_count(dir: &Path, mode: CgroupMode) -> Option<u64> {
    let file = if mode.memory_is_v1() {
        dir.join("memory.oom_control")
    } else {
        dir.join("memory.events")
    };
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

/// Every directory a cgroup at `rel` (relative to the cgroup root) can have: one per v1
/// hierarchy, plus the unified one.
pub fn cgroup_dirs(rel: &str, mode: CgroupMode) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    match mode {
        CgroupMode::V2 => vec![root.join(rel)],
        CgroupMode::V1 | CgroupMode::Hybrid => {
            let mut dirs = Vec::new();
            if let Ok(entries) = fs::read_dir(root) {
                for entry in entries.flatten() {
                    // Skip the co-mount symlinks (cpu,cpuacct -> ...); their targets are listed.
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push(entry.path().join(rel));
                    }
                }
            }
            dirs
        }
    }
}

/// Removes the (empty) cgroup at `rel` from every hierarchy; missing ones are fine. Used for
/// a pod's cgroup once its containers are gone (the runtime removes container cgroups).
pub fn remove_cgroup(rel: &str, mode: CgroupMode) -> io::Result<()> {
    let mut first_err = None;
    for dir in cgroup_dirs(rel, mode) {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_oom_kill_from_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(oom_kill_count(dir.path(), CgroupMode::V1), Some(2));
        assert_eq!(oom_kill_count(dir.path(), CgroupMode::V2), Some(1));
    }

    #[test]
    fn finds_own_memory_cgroup() {
        let mode = CgroupMode::detect();
        let dir = memory_cgroup_dir(std::process::id() as i32, mode);
        assert!(dir.is_some());
    }
}
