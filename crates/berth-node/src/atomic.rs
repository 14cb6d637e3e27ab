//! Upstream's "atomic writer" for configMap, secret, downwardAPI and projected volumes: the
//! files go into a fresh timestamped directory `..<timestamp>`, the `..data` symlink is
//! swapped to it in one rename, and each top-level name is a symlink `name -> ..data/name`,
//! so a container reading the volume sees either the whole old or the whole new content.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The symlink to the current timestamped directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A volume's files: relative path → content.
pub type Payload = BTreeMap<String, FileProjection>;

/// Errors of writing a volume.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("invalid path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> AtomicWriteError + 'a {
    move |source| AtomicWriteError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a payload path as upstream: relative, no `..` element, not starting with `..`,
/// at most 4096 characters with names of at most 255.
pub fn validate_path(path: &str) -> Result<(), AtomicWriteError> {
    let bad = |why| {
        Err(AtomicWriteError::InvalidPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.starts_with('/') {
        return bad("must be relative path");
    }
    if path.len() > 4096 {
        return bad("must be less than or equal to 4096 characters");
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return bad("must not contain '..'");
        }
        if item.len() > 255 {
            return bad("filenames must be less than or equal to 255 characters");
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return bad("must not start with '..'");
    }
    Ok(())
}

/// `a//b/./c/` → `a/b/c` (Go's `filepath.Clean` for paths already validated).
fn clean(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The first element of a payload path: the name users see at the volume's top.
fn top(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Writes `payload` into `dir` atomically; returns whether anything changed (nothing is
/// written when the current content already matches).
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    let mut clean_payload = BTreeMap::new();
    for (path, file) in payload {
        validate_path(path)?;
        let p = clean(path);
        if p.is_empty() {
            return Err(AtomicWriteError::InvalidPath {
                path: path.clone(),
                why: "must name a file",
            });
        }
        clean_payload.insert(p, file);
    }
    std::fs::create_dir_all(dir).map_err(io_err("make the volume directory", dir))?;
    let data_link = dir.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link)
        .ok()
        .map(|t| dir.join(t))
        .filter(|p| p.is_dir());
    let old_files = match &old_ts {
        Some(ts) => list_files(ts, ts).map_err(io_err("read the volume", ts))?,
        None => BTreeSet::new(),
    };
    let new_tops: BTreeSet<&str> = clean_payload.keys().map(|p| top(p)).collect();
    let unchanged = old_ts.as_ref().is_some_and(|ts| {
        old_files.len() == clean_payload.len()
            && clean_payload.iter().all(|(p, f)| same_file(&ts.join(p), f))
    });
    if unchanged {
        create_visible(dir, &new_tops)?;
        return Ok(false);
    }
    // The new timestamped directory with every file.
    let ts = new_ts_dir(dir)?;
    for (path, file) in &clean_payload {
        let full = ts.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("make a directory in", parent))?;
        }
        std::fs::write(&full, &file.data).map_err(io_err("write", &full))?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(io_err("set the mode of", &full))?;
    }
    // Swap `..data` in one rename.
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    let ts_name = ts.file_name().map(PathBuf::from).unwrap_or_default();
    std::os::unix::fs::symlink(&ts_name, &tmp).map_err(io_err("link", &tmp))?;
    std::fs::rename(&tmp, &data_link).map_err(io_err("swap", &data_link))?;
    create_visible(dir, &new_tops)?;
    // Names that were in the old content but not the new one go.
    for old in old_files.iter().map(|p| top(p)).collect::<BTreeSet<_>>() {
        if !new_tops.contains(old) {
            let visible = dir.join(old);
            if visible.is_symlink() {
                std::fs::remove_file(&visible).map_err(io_err("remove", &visible))?;
            }
        }
    }
    if let Some(old) = old_ts {
        if old != ts {
            std::fs::remove_dir_all(&old).map_err(io_err("remove", &old))?;
        }
    }
    Ok(true)
}

/// `name -> ..data/name` for each top-level name that has no entry yet (a plain file, as an
/// older agent wrote volumes, is replaced; a directory made for a subPath stays).
fn create_visible(dir: &Path, tops: &BTreeSet<&str>) -> Result<(), AtomicWriteError> {
    for name in tops {
        let visible = dir.join(name);
        let existing = std::fs::symlink_metadata(&visible);
        if existing.as_ref().is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&visible).map_err(io_err("replace", &visible))?;
        }
        if existing.is_err() || existing.is_ok_and(|m| m.is_file()) {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &visible)
                .map_err(io_err("link", &visible))?;
        }
    }
    Ok(())
}

/// A new, empty `..YYYY_MM_DD_HH_MM_SS.<n>` directory in `dir`.
fn new_ts_dir(dir: &Path) -> Result<PathBuf, AtomicWriteError> {
    let stamp = chrono::Utc::now();
    let base = stamp.format("..%Y_%m_%d_%H_%M_%S.").to_string();
    let nanos = stamp.timestamp_subsec_nanos();
    for n in 0u32.. {
        let p = dir.join(format!("{base}{}", u64::from(nanos) + u64::from(n)));
        match std::fs::create_dir(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("set the mode of", &p))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(io_err("make", &p)(e)),
        }
    }
    Err(io_err("make a timestamped directory in", dir)(
        io::Error::other("no free name"),
    ))
}

/// Files (not directories) under `dir`, as paths relative to `base`.
fn list_files(base: &Path, dir: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            out.extend(list_files(base, &path)?);
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

fn same_file(path: &Path, want: &FileProjection) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o7777 == want.mode & 0o7777
        && meta.len() == want.data.len() as u64
        && std::fs::read(path).is_ok_and(|d| d == want.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_swaps_and_removes_atomically() {
        let tmp = std::env::temp_dir().join(format!("berth-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let dir = tmp.join("vol");
        let first = payload(&[("a", "one", 0o644), ("sub/b", "two", 0o400)]);
        assert!(write(&dir, &first).expect("first write"));
        assert_eq!(
            std::fs::read_link(dir.join("a")).expect("a link"),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/b")).expect("b"),
            "two"
        );
        let mode = std::fs::metadata(dir.join("sub/b"))
            .expect("b")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let ts1 = ts_dirs(&dir);
        assert_eq!(ts1.len(), 1, "one timestamped dir: {ts1:?}");
        assert_eq!(
            std::fs::read_link(dir.join(DATA_DIR)).expect("..data"),
            Path::new(&ts1[0])
        );

        // The same content again: nothing is written.
        assert!(!write(&dir, &first).expect("same write"));
        assert_eq!(ts_dirs(&dir), ts1);

        // A mode change alone is a change.
        let chmod = payload(&[("a", "one", 0o600), ("sub/b", "two", 0o400)]);
        assert!(write(&dir, &chmod).expect("chmod write"));

        // New content: a new directory, `..data` swapped, the old one and `sub` gone.
        let second = payload(&[("a", "uno", 0o644), ("c", "tres", 0o644)]);
        assert!(write(&dir, &second).expect("second write"));
        let ts2 = ts_dirs(&dir);
        assert_eq!(ts2.len(), 1);
        assert_ne!(ts2, ts1);
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "uno");
        assert_eq!(std::fs::read_to_string(dir.join("c")).expect("c"), "tres");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "sub removed"
        );
        assert!(!dir.join(DATA_DIR_TMP).exists());

        // An empty payload leaves an empty volume.
        assert!(write(&dir, &Payload::new()).expect("empty write"));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        assert!(left.is_empty(), "no visible files: {left:?}");
        std::fs::remove_dir_all(&tmp).expect("clean up");
    }

    #[test]
    fn refuses_escaping_paths() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "..data/x",
            "..x",
            "a/..",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} refused");
        }
        for good in ["a", "a/b", "a..b", ".x", "a/..b"] {
            assert!(validate_path(good).is_ok(), "{good:?} allowed");
        }
        let dir = std::env::temp_dir().join(format!("berth-atomic-bad-{}", std::process::id()));
        let p = payload(&[("ok", "1", 0o644), ("../escape", "2", 0o644)]);
        assert!(write(&dir, &p).is_err());
        assert!(!dir.exists(), "nothing written for an invalid payload");
        assert_eq!(clean("a//b/./c/"), "a/b/c");
    }
}
