//! Unpacking one layer tar into a directory that overlayfs can use as a lowerdir.
//!
//! OCI whiteouts become overlay whiteouts (`.wh.<name>` → character device 0:0,
//! `.wh..wh..opq` → `trusted.overlay.opaque=y` on the directory). Paths are refused if they
//! could leave the layer directory (`..`, absolute paths, a parent that is a symlink), and
//! the layer is written into a temporary directory that is renamed into place only once it
//! is complete and its digests verified, so a crash or a bad layer never leaves a half
//! layer that looks done.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use flate2::read::MultiGzDecoder;
use tar::EntryType;

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, IoContext};
use crate::sys;

/// Prefix of OCI whiteout file names.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// Prefix of aufs-internal names (`.wh..wh.plnk` and friends), which carry nothing for us.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// Prefix of in-progress directories (followed by the pid that owns them).
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// How a layer blob is compressed, found from its first bytes (media types lie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
}

/// Wraps `reader` in the decompressor its magic bytes call for.
pub(crate) fn decompress<'a, R: Read + 'a>(
    reader: R,
    what: &str,
) -> Result<(Box<dyn Read + 'a>, Compression), ImageError> {
    let mut buf = BufReader::with_capacity(64 * 1024, reader);
    let head = buf.fill_buf().map_err(|e| ImageError::Archive {
        what: what.to_string(),
        source: e,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(MultiGzDecoder::new(buf)), Compression::Gzip))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ImageError::Unsupported {
            what: "layer compression",
            value: format!("zstd ({what})"),
        })
    } else {
        Ok((Box::new(buf), Compression::None))
    }
}

/// Splits an archive path into its normal components, refusing anything that could point
/// outside the directory it is unpacked into.
pub(crate) fn safe_components(path: &Path) -> Result<Vec<&OsStr>, ImageError> {
    let refuse = |reason| ImageError::UnsafePath {
        entry: path.display().to_string(),
        reason,
    };
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("path contains `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse("path is absolute")),
        }
    }
    Ok(out)
}

/// Removes a directory tree on drop unless disarmed: keeps failures from leaving debris.
pub(crate) struct TempDirGuard {
    path: Option<PathBuf>,
}

impl TempDirGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempDirGuard { path: Some(path) }
    }
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
    /// Keeps the directory (it was renamed into place).
    pub(crate) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Best effort: a leftover is also collected by the next `ImageStore::open`.
            let _ = fs::remove_dir_all(&p);
        }
    }
}

/// A unique name for an in-progress directory owned by this process.
pub(crate) fn tmp_name(purpose: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TMP_PREFIX}{}-{n}-{purpose}", std::process::id())
}

/// Unpacks the layer blob at `blob` into `layers_dir/<diff_id hex>` unless it is there
/// already, verifying that the blob hashes to `digest` and its uncompressed tar to
/// `diff_id`. Safe to call concurrently (also from several processes) for the same layer.
pub(crate) fn unpack_layer(
    blob: &Path,
    digest: &Digest,
    diff_id: &Digest,
    layers_dir: &Path,
) -> Result<PathBuf, ImageError> {
    let target = layers_dir.join(diff_id.hex());
    if target.is_dir() {
        return Ok(target);
    }
    let tmp = TempDirGuard::new(layers_dir.join(tmp_name(diff_id.hex())));
    fs::create_dir(tmp.path()).ctx("create directory", tmp.path())?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .ctx("set mode of", tmp.path())?;

    let file = File::open(blob).ctx("open blob", blob)?;
    let what = format!("layer {digest}");
    let mut compressed = HashingReader::new(file);
    let (stream, _) = decompress(&mut compressed, &what)?;
    let mut uncompressed = HashingReader::new(stream);
    {
        let mut archive = tar::Archive::new(&mut uncompressed);
        let mut unpacker = Unpacker::new(tmp.path());
        let entries = archive.entries().map_err(|e| ImageError::Archive {
            what: what.clone(),
            source: e,
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::Archive {
                what: what.clone(),
                source: e,
            })?;
            unpacker.apply(&mut entry, &what)?;
        }
        unpacker.finish()?;
    }
    // Hash whatever follows the tar's end (padding) so the digests cover the whole blob.
    let (actual_diff_id, _) = uncompressed.finish().map_err(|e| ImageError::Archive {
        what: what.clone(),
        source: e,
    })?;
    diff_id.verify(&actual_diff_id, format!("diff_id of {what}"))?;
    let (actual_digest, _) = compressed.finish().map_err(|e| ImageError::Archive {
        what: what.clone(),
        source: e,
    })?;
    digest.verify(&actual_digest, format!("digest of {what}"))?;

    let dir = File::open(tmp.path()).ctx("open directory", tmp.path())?;
    sys::syncfs(&dir).ctx("sync filesystem of", tmp.path())?;
    match fs::rename(tmp.path(), &target) {
        Ok(()) => {
            tmp.disarm();
            Ok(target)
        }
        // Someone else finished the same layer first; theirs is as good as ours.
        Err(_) if target.is_dir() => Ok(target),
        Err(e) => Err(ImageError::io("rename layer directory to", &target, e)),
    }
}

/// Applies tar entries to a directory.
struct Unpacker {
    root: PathBuf,
    /// Directory mtimes, set at the end (creating entries inside would change them).
    dir_times: Vec<(PathBuf, FileTime)>,
}

impl Unpacker {
    fn new(root: &Path) -> Self {
        Unpacker {
            root: root.to_path_buf(),
            dir_times: Vec::new(),
        }
    }

    /// Walks `parents` below the root, creating missing directories and refusing anything
    /// that is not a real directory (a symlink could point anywhere).
    fn parent_dir(
        &self,
        parents: &[&OsStr],
        entry: &Path,
        create: bool,
    ) -> Result<PathBuf, ImageError> {
        let mut dir = self.root.clone();
        for part in parents {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::UnsafePath {
                        entry: entry.display().to_string(),
                        reason: "a parent directory is a symlink",
                    })
                }
                Ok(_) => {
                    return Err(ImageError::UnsafePath {
                        entry: entry.display().to_string(),
                        reason: "a parent directory is not a directory",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&dir).ctx("create directory", &dir)?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .ctx("set mode of", &dir)?;
                }
                Err(e) => return Err(ImageError::io("inspect", &dir, e)),
            }
        }
        Ok(dir)
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        what: &str,
    ) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let path = entry
            .path()
            .map_err(|e| ImageError::Archive {
                what: what.to_string(),
                source: e,
            })?
            .into_owned();
        let parts = safe_components(&path)?;
        let Some((name, parents)) = parts.split_last() else {
            // The layer root itself ("./"): the layer directory stands for it.
            return Ok(());
        };
        let name_bytes = name.as_bytes();

        if name_bytes == WHITEOUT_OPAQUE.as_bytes() {
            let dir = self.parent_dir(parents, &path, true)?;
            xattr::set(&dir, "trusted.overlay.opaque", b"y").ctx("mark opaque directory", &dir)?;
            return Ok(());
        }
        if name_bytes.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(ImageError::UnsafePath {
                    entry: path.display().to_string(),
                    reason: "whiteout names no file",
                });
            }
            let dir = self.parent_dir(parents, &path, true)?;
            let target = dir.join(OsStr::from_bytes(hidden));
            remove_existing(&target)?;
            sys::mknod_whiteout(&target).ctx("create whiteout", &target)?;
            return Ok(());
        }

        let dir = self.parent_dir(parents, &path, true)?;
        let target = dir.join(name);
        let header = entry.header().clone();
        let mode = header.mode().map_err(|e| archive_err(what, e))? & 0o7777;
        let uid = header.uid().map_err(|e| archive_err(what, e))?;
        let gid = header.gid().map_err(|e| archive_err(what, e))?;
        let mtime = FileTime::from_unix_time(
            i64::try_from(header.mtime().map_err(|e| archive_err(what, e))?).unwrap_or(0),
            0,
        );

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(_) => {
                        remove_existing(&target)?;
                        fs::create_dir(&target).ctx("create directory", &target)?;
                    }
                    Err(_) => fs::create_dir(&target).ctx("create directory", &target)?,
                }
                chown(&target, uid, gid)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .ctx("set mode of", &target)?;
                self.apply_xattrs(entry, &target, what)?;
                self.dir_times.push((target, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&target)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .ctx("create file", &target)?;
                let expected = entry.size();
                let copied = io::copy(entry, &mut file).map_err(|e| archive_err(what, e))?;
                if kind != EntryType::GNUSparse && copied != expected {
                    return Err(ImageError::Archive {
                        what: what.to_string(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("entry {} is truncated", path.display()),
                        ),
                    });
                }
                drop(file);
                chown(&target, uid, gid)?;
                // After chown, which clears setuid/setgid bits.
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .ctx("set mode of", &target)?;
                self.apply_xattrs(entry, &target, what)?;
                filetime::set_symlink_file_times(&target, mtime, mtime)
                    .ctx("set times of", &target)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| archive_err(what, e))?
                    .ok_or_else(|| ImageError::UnsafePath {
                        entry: path.display().to_string(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                remove_existing(&target)?;
                std::os::unix::fs::symlink(&link, &target).ctx("create symlink", &target)?;
                chown(&target, uid, gid)?;
                filetime::set_symlink_file_times(&target, mtime, mtime)
                    .ctx("set times of", &target)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| archive_err(what, e))?
                    .ok_or_else(|| ImageError::UnsafePath {
                        entry: path.display().to_string(),
                        reason: "hard link without a target",
                    })?
                    .into_owned();
                let link_parts = safe_components(&link)?;
                let Some((link_name, link_parents)) = link_parts.split_last() else {
                    return Err(ImageError::UnsafePath {
                        entry: path.display().to_string(),
                        reason: "hard link to the layer root",
                    });
                };
                let source = self.parent_dir(link_parents, &link, false)?.join(link_name);
                let meta =
                    fs::symlink_metadata(&source).ctx("inspect hard link target", &source)?;
                if meta.is_dir() {
                    return Err(ImageError::UnsafePath {
                        entry: path.display().to_string(),
                        reason: "hard link to a directory",
                    });
                }
                if source == target {
                    return Ok(());
                }
                remove_existing(&target)?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(&source, &target).ctx("create hard link", &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                // A fifo has no device numbers; some writers leave the fields blank.
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    let major = header.device_major().map_err(|e| archive_err(what, e))?;
                    let minor = header.device_minor().map_err(|e| archive_err(what, e))?;
                    (major.unwrap_or(0), minor.unwrap_or(0))
                };
                remove_existing(&target)?;
                sys::mknod(&target, file_type | mode, major, minor)
                    .ctx("create device node", &target)?;
                chown(&target, uid, gid)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .ctx("set mode of", &target)?;
                filetime::set_symlink_file_times(&target, mtime, mtime)
                    .ctx("set times of", &target)?;
            }
            // Other types (sockets do not exist in tar; vendor types) carry no file.
            _ => {}
        }
        Ok(())
    }

    /// Applies the PAX `SCHILY.xattr.*` records an image may legitimately carry (file
    /// capabilities and user attributes). `trusted.*` is refused: it would let an image
    /// forge overlayfs metadata.
    fn apply_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        what: &str,
    ) -> Result<(), ImageError> {
        let Some(exts) = entry.pax_extensions().map_err(|e| archive_err(what, e))? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(|e| archive_err(what, e))?;
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            if name == "security.capability" || name.starts_with("user.") {
                match xattr::set(target, name, ext.value_bytes()) {
                    Ok(()) => {}
                    // A filesystem without xattrs still runs most images.
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                    Err(e) => return Err(ImageError::io("set extended attribute on", target, e)),
                }
            }
        }
        Ok(())
    }

    /// Sets directory mtimes, deepest first.
    fn finish(mut self) -> Result<(), ImageError> {
        while let Some((dir, t)) = self.dir_times.pop() {
            filetime::set_symlink_file_times(&dir, t, t).ctx("set times of", &dir)?;
        }
        Ok(())
    }
}

fn archive_err(what: &str, e: io::Error) -> ImageError {
    ImageError::Archive {
        what: what.to_string(),
        source: e,
    }
}

/// Removes whatever is at `path` (without following symlinks), if anything.
fn remove_existing(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(path).ctx("remove", path),
        Ok(_) => fs::remove_file(path).ctx("remove", path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("inspect", path, e)),
    }
}

/// Sets ownership without following symlinks. Without root this is not allowed, and an
/// unprivileged unpack keeps our own ids instead of failing.
fn chown(path: &Path, uid: u64, gid: u64) -> Result<(), ImageError> {
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(ImageError::UnsafePath {
            entry: path.display().to_string(),
            reason: "uid or gid out of range",
        });
    };
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(ImageError::io("change owner of", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::LayerBuilder;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// Unpacks `tar` as a plain layer into `layers/` below `dir`.
    fn unpack(dir: &Path, tar: &[u8]) -> std::result::Result<PathBuf, ImageError> {
        let blob = dir.join("blob");
        fs::write(&blob, tar).map_err(|e| ImageError::io("write", &blob, e))?;
        let layers = dir.join("layers");
        fs::create_dir_all(&layers).map_err(|e| ImageError::io("create", &layers, e))?;
        let d = Digest::of(tar);
        unpack_layer(&blob, &d, &d, &layers)
    }

    fn layers_left(dir: &Path) -> usize {
        fs::read_dir(dir.join("layers"))
            .map(|r| r.count())
            .unwrap_or(0)
    }

    #[test]
    fn refuses_escapes_at_unpack_time_too() -> Result {
        let dir = tempfile::tempdir()?;
        let outside = dir.path().join("outside");
        fs::create_dir(&outside)?;
        let o = outside.display().to_string();
        let cases: Vec<Vec<u8>> = vec![
            {
                let mut l = LayerBuilder::new();
                l.file("a/../../x", 0o644, b"x")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.file(&format!("{o}/x"), 0o644, b"x")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.symlink("d", &o)?.file("d/x", 0o644, b"x")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.symlink("d", &o)?.dir("d/sub", 0o755)?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.symlink("d", &o)?.whiteout("d", "x")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.symlink("d", &o)?.opaque("d")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.symlink("d", &o)?.hardlink("h", "d/x")?;
                l.finish()?
            },
            {
                let mut l = LayerBuilder::new();
                l.file(".wh...", 0o644, b"")?;
                l.finish()?
            },
        ];
        for (i, tar) in cases.iter().enumerate() {
            let r = unpack(dir.path(), tar);
            assert!(
                matches!(r, Err(ImageError::UnsafePath { .. })),
                "{i}: {r:?}"
            );
            assert_eq!(layers_left(dir.path()), 0, "{i}: nothing left");
            assert_eq!(fs::read_dir(&outside)?.count(), 0, "{i}: nothing outside");
        }
        Ok(())
    }

    #[test]
    fn a_file_replacing_a_symlink_does_not_follow_it() -> Result {
        let dir = tempfile::tempdir()?;
        let victim = dir.path().join("victim");
        fs::write(&victim, b"original")?;
        let mut l = LayerBuilder::new();
        l.symlink("f", &victim.display().to_string())?
            .file("f", 0o644, b"replaced")?;
        let layer = unpack(dir.path(), &l.finish()?)?;
        assert_eq!(fs::read(&victim)?, b"original");
        assert!(fs::symlink_metadata(layer.join("f"))?.is_file());
        assert_eq!(fs::read(layer.join("f"))?, b"replaced");
        Ok(())
    }

    #[test]
    fn a_truncated_layer_leaves_nothing() -> Result {
        let dir = tempfile::tempdir()?;
        let mut l = LayerBuilder::new();
        l.file("big", 0o644, &[7u8; 8192])?
            .file("after", 0o644, b"x")?;
        let tar = l.finish()?;
        let blob = dir.path().join("blob");
        fs::write(&blob, &tar[..4096])?;
        let layers = dir.path().join("layers");
        fs::create_dir(&layers)?;
        let d = Digest::of(&tar);
        let r = unpack_layer(&blob, &d, &d, &layers);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(layers_left(dir.path()), 0);
        Ok(())
    }

    #[test]
    fn device_nodes_and_fifos_are_created() -> Result {
        let dir = tempfile::tempdir()?;
        let mut l = LayerBuilder::new();
        l.raw("fifo", tar::EntryType::Fifo, 0o600, None, &[])?;
        let layer = unpack(dir.path(), &l.finish()?)?;
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(layer.join("fifo"))?
            .file_type()
            .is_fifo());
        Ok(())
    }
}
