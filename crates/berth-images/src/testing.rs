//! Building test images in-process: layers with any entries (including whiteouts and
//! deliberately malicious paths), OCI-layout and `docker save` tarballs, root filesystems
//! assembled from the host's own files ([`HostRootfs`]: binaries with the shared libraries
//! `ldd` lists, config files, directories), and a busybox image made from the host's
//! `/bin/busybox` (Debian's `busybox-static`). Used by this crate's tests, the node agent's
//! and the benchmarks (an nginx image from Debian's nginx); no registry is needed.
//!
//! Everything here builds tarballs in memory: test images are small.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::digest::Digest;
use crate::spec::{
    ConfigFile, ContainerConfig, Descriptor, Index, Manifest, RootFs, ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
};

/// Files of a tarball: path inside it and content.
pub type Files = Vec<(String, Vec<u8>)>;

/// The mtime given to every entry, so builds are reproducible.
const MTIME: u64 = 946_684_800;

/// Builds one layer tar, entry by entry.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    /// Appends an entry with a raw (unchecked) path, so tests can build hostile layers.
    pub fn raw(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> io::Result<&mut Self> {
        let mut h = tar::Header::new_ustar();
        let name = path.as_bytes();
        if name.len() > 100 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path longer than 100 bytes",
            ));
        }
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            let l = link.as_bytes();
            if l.len() > 100 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "link longer than 100 bytes",
                ));
            }
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data)?;
        Ok(self)
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        self.raw(path, tar::EntryType::Directory, mode, None, &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        self.raw(path, tar::EntryType::Regular, mode, None, data)
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> io::Result<&mut Self> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data)?;
        Ok(self)
    }

    /// A symlink `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        self.raw(path, tar::EntryType::Symlink, 0o777, Some(target), &[])
    }

    /// A hard link `path` to the earlier entry `target`.
    pub fn hardlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        self.raw(path, tar::EntryType::Link, 0o644, Some(target), &[])
    }

    /// An OCI whiteout hiding `dir/name` of lower layers.
    pub fn whiteout(&mut self, dir: &str, name: &str) -> io::Result<&mut Self> {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{}/.wh.{name}", dir.trim_end_matches('/'))
        };
        self.file(&path, 0o644, &[])
    }

    /// An OCI opaque marker: `dir` hides everything of lower layers.
    pub fn opaque(&mut self, dir: &str) -> io::Result<&mut Self> {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            0o644,
            &[],
        )
    }

    /// Appends a file streamed from `src`.
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> io::Result<&mut Self> {
        let f = File::open(src)?;
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(f.metadata()?.len());
        h.set_cksum();
        self.tar.append(&h, f)?;
        Ok(self)
    }

    /// The finished, uncompressed layer tar.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.tar.into_inner()
    }
}

/// A test image: layers (lowest first) and a config, written as either tarball format.
#[derive(Debug, Clone, Default)]
pub struct TestImage {
    /// Uncompressed layer tars, lowest first.
    pub layers: Vec<Vec<u8>>,
    /// Whether to gzip layers.
    pub gzip: bool,
    /// The run-time config.
    pub config: ContainerConfig,
}

/// A layer as it goes into a tarball.
struct BuiltLayer {
    blob: Vec<u8>,
    digest: Digest,
    media_type: &'static str,
}

impl TestImage {
    fn built_layers(&self) -> io::Result<Vec<BuiltLayer>> {
        self.layers
            .iter()
            .map(|tar| {
                let (blob, media_type) = if self.gzip {
                    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
                    enc.write_all(tar)?;
                    (enc.finish()?, MEDIA_TYPE_OCI_LAYER_GZIP)
                } else {
                    (tar.clone(), MEDIA_TYPE_OCI_LAYER)
                };
                Ok(BuiltLayer {
                    digest: Digest::of(&blob),
                    blob,
                    media_type,
                })
            })
            .collect()
    }

    /// The config blob.
    pub fn config_json(&self) -> io::Result<Vec<u8>> {
        let config = ConfigFile {
            architecture: crate::spec::host_architecture().to_string(),
            os: "linux".to_string(),
            variant: None,
            created: Some("2000-01-01T00:00:00Z".to_string()),
            config: Some(self.config.clone()),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: self.layers.iter().map(|l| Digest::of(l)).collect(),
            },
        };
        serde_json::to_vec(&config).map_err(io::Error::other)
    }

    /// The blobs of this image as an OCI layout holds them (`blobs/sha256/<hex>` and
    /// content) and the descriptor of its manifest.
    pub fn oci_blobs(&self) -> io::Result<(Descriptor, Files)> {
        let layers = self.built_layers()?;
        let config = self.config_json()?;
        let config_digest = Digest::of(&config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: MEDIA_TYPE_OCI_CONFIG.to_string(),
                digest: config_digest.clone(),
                size: config.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.to_string(),
                    digest: l.digest.clone(),
                    size: l.blob.len() as u64,
                    platform: None,
                    annotations: BTreeMap::new(),
                })
                .collect(),
            annotations: BTreeMap::new(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let manifest_digest = Digest::of(&manifest);
        let desc = Descriptor {
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            digest: manifest_digest.clone(),
            size: manifest.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (format!("blobs/sha256/{}", manifest_digest.hex()), manifest),
            (format!("blobs/sha256/{}", config_digest.hex()), config),
        ];
        for l in layers {
            files.push((format!("blobs/sha256/{}", l.digest.hex()), l.blob));
        }
        Ok((desc, files))
    }

    /// Writes an OCI image layout tarball, its manifest named `ref_name` (if any) by the
    /// `org.opencontainers.image.ref.name` annotation.
    pub fn write_oci(&self, out: &Path, ref_name: Option<&str>) -> io::Result<()> {
        let (mut desc, blobs) = self.oci_blobs()?;
        if let Some(r) = ref_name {
            desc.annotations
                .insert(ANNOTATION_REF_NAME.to_string(), r.to_string());
        }
        write_oci_layout(out, vec![desc], blobs)
    }

    /// Writes a `docker save` tarball (old layout: `<n>/layer.tar`, `<id>.json`).
    pub fn write_docker_save(&self, out: &Path, repo_tags: &[&str]) -> io::Result<()> {
        let layers = self.built_layers()?;
        let config = self.config_json()?;
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let layer_names: Vec<String> = (0..layers.len())
            .map(|i| format!("layer{i}/layer.tar"))
            .collect();
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        let mut files = vec![(config_name, config)];
        let mut dirs = Vec::new();
        for (i, (l, name)) in layers.into_iter().zip(&layer_names).enumerate() {
            dirs.push(format!("layer{i}"));
            files.push((name.clone(), l.blob));
        }
        files.push((
            "manifest.json".to_string(),
            serde_json::to_vec(&manifest).map_err(io::Error::other)?,
        ));
        let dir_refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        write_tar(out, &dir_refs, &files)
    }
}

/// Writes an OCI image layout tarball whose `index.json` lists `manifests`, with `blobs`
/// (`blobs/sha256/<hex>`, content) beside it; repeated blobs are written once.
pub fn write_oci_layout(
    out: &Path,
    manifests: Vec<Descriptor>,
    blobs: Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
        manifests,
        annotations: BTreeMap::new(),
    };
    let index = serde_json::to_vec(&index).map_err(io::Error::other)?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
    ];
    for b in blobs {
        if !files.iter().any(|(p, _)| p == &b.0) {
            files.push(b);
        }
    }
    write_tar(out, &["blobs", "blobs/sha256"], &files)
}

/// Writes a tar of `dirs` then `files`.
pub fn write_tar(out: &Path, dirs: &[&str], files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let mut b = tar::Builder::new(File::create(out)?);
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_path(d)?;
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty())?;
    }
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice())?;
    }
    b.into_inner()?.sync_all()
}

/// A root filesystem layer assembled from the host's files: each path lands at the same
/// path in the layer with its host permissions, its parent directories created once
/// (0755); binaries bring the shared libraries `ldd` lists (and the program interpreter).
/// Symlinks among the host path's parents (`/lib` → `usr/lib` on merged-`/usr` hosts) are
/// followed, so the layer holds plain directories.
pub struct HostRootfs {
    layer: LayerBuilder,
    entries: BTreeSet<String>,
}

impl Default for HostRootfs {
    fn default() -> Self {
        Self::new()
    }
}

/// A host path as a layer path: without the leading `/`.
fn layer_path(path: &Path) -> io::Result<String> {
    let s = path.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not UTF-8"),
        )
    })?;
    let s = s.trim_start_matches('/').trim_end_matches('/');
    if s.is_empty() || s.split('/').any(|c| c == ".." || c == ".") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not a normal absolute path"),
        ));
    }
    Ok(s.to_string())
}

impl HostRootfs {
    /// An empty root filesystem.
    pub fn new() -> Self {
        HostRootfs {
            layer: LayerBuilder::new(),
            entries: BTreeSet::new(),
        }
    }

    /// The parent directories of `path` (a layer path) not yet in the layer.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            if self.entries.insert(parent.to_string()) {
                self.layer.dir(parent, 0o755)?;
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Whether `path` is new; creates its parents.
    fn claim(&mut self, path: &str) -> io::Result<bool> {
        self.parents(path)?;
        Ok(self.entries.insert(path.to_string()))
    }

    /// A directory `path` (absolute) with `mode`; parents as needed.
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<&mut Self> {
        let p = layer_path(Path::new(path))?;
        if self.claim(&p)? {
            self.layer.dir(&p, mode)?;
        }
        Ok(self)
    }

    /// A file `path` (absolute) with `mode` and `data`; parents as needed.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<&mut Self> {
        let p = layer_path(Path::new(path))?;
        if self.claim(&p)? {
            self.layer.file(&p, mode, data)?;
        }
        Ok(self)
    }

    /// A symlink `path` (absolute) → `target`; parents as needed.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<&mut Self> {
        let p = layer_path(Path::new(path))?;
        if self.claim(&p)? {
            self.layer.symlink(&p, target)?;
        }
        Ok(self)
    }

    /// The host's `path` at the same place: a file (a symlink given by name is followed)
    /// with its mode, or a directory with everything under it (symlinks inside kept as
    /// symlinks).
    pub fn copy(&mut self, path: &Path) -> io::Result<&mut Self> {
        let meta = std::fs::metadata(path)?;
        let p = layer_path(path)?;
        if meta.is_dir() {
            self.copy_tree(path, &p, meta.permissions_mode())?;
        } else if self.claim(&p)? {
            self.layer.file_from(&p, meta.permissions_mode(), path)?;
        }
        Ok(self)
    }

    fn copy_tree(&mut self, src: &Path, dst: &str, mode: u32) -> io::Result<()> {
        if self.claim(dst)? {
            self.layer.dir(dst, mode)?;
        }
        let mut children: Vec<_> = std::fs::read_dir(src)?.collect::<io::Result<_>>()?;
        children.sort_by_key(|e| e.file_name());
        for e in children {
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} is not UTF-8"),
                )
            })?;
            let child = format!("{dst}/{name}");
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path())?;
                let target = target.to_str().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "symlink target is not UTF-8")
                })?;
                if self.claim(&child)? {
                    self.layer.symlink(&child, target)?;
                }
            } else if meta.is_dir() {
                self.copy_tree(&e.path(), &child, meta.permissions_mode())?;
            } else if meta.is_file() && self.claim(&child)? {
                self.layer
                    .file_from(&child, meta.permissions_mode(), &e.path())?;
            }
        }
        Ok(())
    }

    /// The host's executable `path` and every shared library it loads, at their paths.
    pub fn binary(&mut self, path: &Path) -> io::Result<&mut Self> {
        self.copy(path)?;
        for lib in shared_libraries(path)? {
            self.copy(&lib)?;
        }
        Ok(self)
    }

    /// The finished, uncompressed layer tar.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.layer.finish()
    }
}

/// Permission bits (with setuid/setgid/sticky) of file metadata.
trait PermissionsMode {
    fn permissions_mode(&self) -> u32;
}

impl PermissionsMode for std::fs::Metadata {
    fn permissions_mode(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        self.permissions().mode() & 0o7777
    }
}

/// The shared libraries (absolute paths, the program interpreter included) that `ldd`
/// lists for the host's `binary`; empty for a static binary.
pub fn shared_libraries(binary: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let out = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // `ldd` fails with "not a dynamic executable" for static binaries.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(io::Error::other(format!(
            "`ldd {}` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Lines are `name => /path (0x...)`, `/path (0x...)` (the interpreter) or
    // `linux-vdso.so.1 (0x...)` (in the kernel, no file).
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/')
                .then(|| std::path::PathBuf::from(path))
        })
        .collect())
}

/// The busybox root filesystem layer: `/bin/busybox`, a symlink per applet in `/bin`,
/// `/etc/passwd`, `/etc/group`, `/tmp` (1777) and empty mount points.
pub fn busybox_layer() -> io::Result<Vec<u8>> {
    let busybox = Path::new("/bin/busybox");
    let out = Command::new(busybox).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other("`/bin/busybox --list` failed"));
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    let mut l = HostRootfs::new();
    for d in ["/bin", "/dev", "/etc", "/proc", "/root", "/sys", "/var"] {
        l.dir(d, 0o755)?;
    }
    l.dir("/tmp", 0o1777)?;
    l.binary(busybox)?;
    for a in applets {
        l.symlink(&format!("/bin/{a}"), "busybox")?;
    }
    l.file(
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    l.file("/etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    l.finish()
}

/// The busybox test image (see [`busybox_layer`]), with `Cmd ["sh"]` and a `PATH`.
pub fn busybox_image() -> io::Result<TestImage> {
    Ok(TestImage {
        layers: vec![busybox_layer()?],
        gzip: true,
        config: ContainerConfig {
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ]),
            cmd: Some(vec!["sh".to_string()]),
            ..Default::default()
        },
    })
}

/// Writes an OCI image layout tarball of busybox named `tag` (a reference such as
/// `busybox:latest` or `localhost/busybox:1`), like `tools/busybox-image.sh`.
pub fn build_busybox_oci_tar(out: &Path, tag: &str) -> io::Result<()> {
    busybox_image()?.write_oci(out, Some(tag))
}
