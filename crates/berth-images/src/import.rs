//! Reading image tarballs: an OCI image layout (`oci-layout`, `index.json`, `blobs/`) or a
//! `docker save` archive (`manifest.json`). The tarball is read once, front to back, and
//! every file is streamed into a staging directory while it is hashed, so no layer is
//! ever held in memory; then the images it holds are checked (every digest, size and
//! diff_id) and handed to the store as [`PendingImage`]s to commit.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{ImageError, IoContext};
use crate::reference::normalize_reference;
use crate::spec::{
    host_architecture, is_index_media_type, ConfigFile, Descriptor, DockerSaveEntry, Index,
    Manifest, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::unpack::{decompress, safe_components, tmp_name, Compression, TempDirGuard};

/// Largest JSON document (index, manifest, config) we read into memory.
const MAX_JSON: u64 = 16 << 20;
/// How many symlinks in the tarball we follow before giving up.
const MAX_LINK_HOPS: usize = 16;
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// A blob ready to be linked into the store: where its verified bytes are.
#[derive(Debug, Clone)]
pub(crate) struct BlobFile {
    pub(crate) path: PathBuf,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// One image found in a tarball, fully verified, waiting to be committed.
#[derive(Debug)]
pub(crate) struct PendingImage {
    pub(crate) names: Vec<String>,
    pub(crate) manifest_digest: Digest,
    pub(crate) config_digest: Digest,
    pub(crate) diff_ids: Vec<Digest>,
    /// Blobs to link into the store (config, layers, and the manifest if it was in the
    /// tarball).
    pub(crate) files: Vec<BlobFile>,
    /// Blobs we made (the manifest of a `docker save` image), with their bytes.
    pub(crate) generated: Vec<(Digest, Vec<u8>)>,
    /// Config plus compressed layer sizes.
    pub(crate) size: u64,
    /// Image indexes it was pulled through (none for imports).
    pub(crate) index_digests: Vec<Digest>,
    /// Imported from a tarball (true) or pulled (false).
    pub(crate) pinned: bool,
}

/// The tarball's files, staged on disk and hashed.
pub(crate) struct Staging {
    guard: TempDirGuard,
    files: HashMap<PathBuf, BlobFile>,
    links: HashMap<PathBuf, PathBuf>,
    blobs_dir: PathBuf,
    diff_ids: HashMap<Digest, Digest>,
}

impl Staging {
    /// Streams `tarball` (optionally gzip-compressed) into a new directory under
    /// `tmp_root`. Blobs named `blobs/sha256/<hex>` are checked against their names here.
    pub(crate) fn stage(
        tarball: &Path,
        tmp_root: &Path,
        blobs_dir: &Path,
    ) -> Result<Self, ImageError> {
        let guard = TempDirGuard::new(tmp_root.join(tmp_name("import")));
        fs::create_dir(guard.path()).ctx("create directory", guard.path())?;
        let mut staging = Staging {
            guard,
            files: HashMap::new(),
            links: HashMap::new(),
            blobs_dir: blobs_dir.to_path_buf(),
            diff_ids: HashMap::new(),
        };
        let what = tarball.display().to_string();
        let file = File::open(tarball).ctx("open", tarball)?;
        let (stream, _) = decompress(file, &what)?;
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| archive_err(&what, e))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| archive_err(&what, e))?;
            let path = entry
                .path()
                .map_err(|e| archive_err(&what, e))?
                .into_owned();
            let key: PathBuf = safe_components(&path)?.iter().collect();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dest = staging.guard.path().join(format!("{n}"));
                    let out = File::create(&dest).ctx("create", &dest)?;
                    let mut w = HashingWriter::new(out);
                    let expected = entry.size();
                    io::copy(&mut entry, &mut w).map_err(|e| archive_err(&what, e))?;
                    let (_, digest, size) = w.finish();
                    if size != expected {
                        return Err(archive_err(
                            &what,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("{} is truncated", path.display()),
                            ),
                        ));
                    }
                    if let Some(hex) = blob_name(&key) {
                        let named = Digest::from_hex(hex)?;
                        named.verify(&digest, format!("blob {}", key.display()))?;
                    }
                    staging.files.insert(
                        key,
                        BlobFile {
                            path: dest,
                            digest,
                            size,
                        },
                    );
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| archive_err(&what, e))?
                        .unwrap_or_default()
                        .into_owned();
                    let base = key.parent().unwrap_or(Path::new(""));
                    staging
                        .links
                        .insert(key.clone(), join_inside(base, &target, &key)?);
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| archive_err(&what, e))?
                        .unwrap_or_default()
                        .into_owned();
                    staging
                        .links
                        .insert(key.clone(), join_inside(Path::new(""), &target, &key)?);
                }
                _ => {}
            }
        }
        Ok(staging)
    }

    /// Finds the images in the staged tarball and verifies them completely.
    pub(crate) fn images(&mut self) -> Result<Vec<PendingImage>, ImageError> {
        if self.lookup("manifest.json").is_ok() {
            self.docker_images()
        } else if self.lookup("index.json").is_ok() {
            self.oci_images()
        } else {
            Err(ImageError::InvalidImage(
                "tarball has neither index.json (OCI image layout) nor manifest.json (docker save)"
                    .to_string(),
            ))
        }
    }

    /// The staged file at `path`, following links within the tarball.
    fn lookup(&self, path: &str) -> Result<BlobFile, ImageError> {
        let mut key: PathBuf = safe_components(Path::new(path))?.iter().collect();
        for _ in 0..MAX_LINK_HOPS {
            if let Some(f) = self.files.get(&key) {
                return Ok(f.clone());
            }
            match self.links.get(&key) {
                Some(next) => key = next.clone(),
                None => break,
            }
        }
        Err(ImageError::InvalidImage(format!(
            "tarball has no file {path}"
        )))
    }

    /// The blob a descriptor names: from the tarball, else already in the store.
    fn blob(&self, d: &Descriptor) -> Result<BlobFile, ImageError> {
        let found = match self.lookup(&format!("blobs/sha256/{}", d.digest.hex())) {
            Ok(f) => f,
            Err(_) => {
                let path = self.blobs_dir.join(d.digest.hex());
                let meta = fs::metadata(&path).map_err(|_| {
                    ImageError::InvalidImage(format!("tarball has no blob {}", d.digest))
                })?;
                BlobFile {
                    path,
                    digest: d.digest.clone(),
                    size: meta.len(),
                }
            }
        };
        d.digest
            .verify(&found.digest, format!("blob {}", d.digest))?;
        if found.size != d.size {
            return Err(ImageError::SizeMismatch {
                what: format!("blob {}", d.digest),
                expected: d.size,
                actual: found.size,
            });
        }
        Ok(found)
    }

    fn oci_images(&mut self) -> Result<Vec<PendingImage>, ImageError> {
        if let Ok(layout) = self.lookup("oci-layout") {
            let v: serde_json::Value = read_json(&layout, "oci-layout")?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                return Err(ImageError::Unsupported {
                    what: "OCI image layout version",
                    value: v.to_string(),
                });
            }
        }
        let index: Index = read_json(&self.lookup("index.json")?, "index.json")?;
        let mut images = Vec::new();
        for desc in &index.manifests {
            if let Some(p) = &desc.platform {
                if !platform_matches(&p.os, &p.architecture) {
                    continue;
                }
            }
            let name = desc
                .annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| desc.annotations.get(ANNOTATION_REF_NAME));
            let names = match name {
                Some(n) => vec![normalize_reference(n)?],
                None => Vec::new(),
            };
            let manifest_desc = self.pick_manifest(desc, 0)?;
            let (manifest_file, manifest): (BlobFile, Manifest) = {
                let f = self.blob(&manifest_desc)?;
                let m = read_json(&f, &format!("manifest {}", manifest_desc.digest))?;
                (f, m)
            };
            let mut image = self.verify_manifest(&manifest, manifest_desc.digest.clone(), names)?;
            image.files.push(manifest_file);
            images.push(image);
        }
        if images.is_empty() {
            return Err(ImageError::Unsupported {
                what: "platform",
                value: format!(
                    "no image in index.json is for linux/{}",
                    host_architecture()
                ),
            });
        }
        Ok(images)
    }

    /// Follows (possibly nested) indexes down to the manifest for this machine.
    fn pick_manifest(&self, desc: &Descriptor, depth: usize) -> Result<Descriptor, ImageError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(ImageError::InvalidImage(
                "image indexes nest too deep".to_string(),
            ));
        }
        let f = self.blob(desc)?;
        let value: serde_json::Value = read_json(&f, &format!("blob {}", desc.digest))?;
        let stated = value
            .get("mediaType")
            .and_then(|v| v.as_str())
            .unwrap_or(&desc.media_type);
        let is_index = is_index_media_type(&desc.media_type)
            || is_index_media_type(stated)
            || value.get("manifests").is_some();
        if !is_index {
            if !(stated.is_empty()
                || stated == MEDIA_TYPE_OCI_MANIFEST
                || stated == MEDIA_TYPE_DOCKER_MANIFEST)
            {
                return Err(ImageError::Unsupported {
                    what: "manifest media type",
                    value: stated.to_string(),
                });
            }
            return Ok(desc.clone());
        }
        let index: Index = serde_json::from_value(value).map_err(|e| ImageError::Json {
            what: format!("index {}", desc.digest),
            source: e,
        })?;
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| platform_matches(&p.os, &p.architecture))
            })
            .or_else(|| match index.manifests.as_slice() {
                [only] if only.platform.is_none() => Some(only),
                _ => None,
            })
            .ok_or_else(|| ImageError::Unsupported {
                what: "platform",
                value: format!(
                    "index {} has no linux/{} image",
                    desc.digest,
                    host_architecture()
                ),
            })?;
        self.pick_manifest(chosen, depth + 1)
    }

    /// Checks a manifest's config and every layer (digest, size, diff_id).
    fn verify_manifest(
        &mut self,
        manifest: &Manifest,
        manifest_digest: Digest,
        names: Vec<String>,
    ) -> Result<PendingImage, ImageError> {
        let config_file = self.blob(&manifest.config)?;
        let config: ConfigFile =
            read_json(&config_file, &format!("config {}", manifest.config.digest))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidImage(format!(
                "manifest {manifest_digest} has {} layers but its config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut files = vec![config_file.clone()];
        let mut size = config_file.size;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if layer.media_type.contains("zstd") {
                return Err(ImageError::Unsupported {
                    what: "layer media type",
                    value: layer.media_type.clone(),
                });
            }
            let f = self.blob(layer)?;
            self.verify_diff_id(&f, diff_id)?;
            size += f.size;
            files.push(f);
        }
        Ok(PendingImage {
            names,
            manifest_digest,
            config_digest: manifest.config.digest.clone(),
            diff_ids: config.rootfs.diff_ids,
            files,
            generated: Vec::new(),
            size,
            index_digests: Vec::new(),
            pinned: true,
        })
    }

    /// Decompresses a layer blob and checks that it hashes to `diff_id`.
    fn verify_diff_id(
        &mut self,
        f: &BlobFile,
        diff_id: &Digest,
    ) -> Result<Compression, ImageError> {
        let what = format!("layer {}", f.digest);
        if let Some(known) = self.diff_ids.get(&f.digest) {
            diff_id.verify(known, format!("diff_id of {what}"))?;
            let file = File::open(&f.path).ctx("open", &f.path)?;
            let (_, compression) = decompress(BufReader::new(file), &what)?;
            return Ok(compression);
        }
        let (actual, compression) = layer_diff_id(&f.path, &f.digest)?;
        diff_id.verify(&actual, format!("diff_id of {what}"))?;
        self.diff_ids.insert(f.digest.clone(), actual);
        Ok(compression)
    }

    fn docker_images(&mut self) -> Result<Vec<PendingImage>, ImageError> {
        let entries: Vec<DockerSaveEntry> =
            read_json(&self.lookup("manifest.json")?, "manifest.json")?;
        let mut images = Vec::new();
        for entry in entries {
            let config_file = self.lookup(&entry.config)?;
            // Old saves name the config `<hex>.json`, new ones `blobs/sha256/<hex>`.
            let stem = Path::new(&entry.config)
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.trim_end_matches(".json"))
                .unwrap_or_default();
            if let Ok(named) = Digest::from_hex(stem) {
                named.verify(&config_file.digest, format!("config {}", entry.config))?;
            }
            let config: ConfigFile = read_json(&config_file, &format!("config {}", entry.config))?;
            if config.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(ImageError::InvalidImage(format!(
                    "manifest.json lists {} layers but config {} lists {} diff_ids",
                    entry.layers.len(),
                    entry.config,
                    config.rootfs.diff_ids.len()
                )));
            }
            let mut files = vec![config_file.clone()];
            let mut layers = Vec::new();
            let mut size = config_file.size;
            for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
                let f = self.lookup(path)?;
                let compression = self.verify_diff_id(&f, diff_id)?;
                let media_type = match compression {
                    Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
                    Compression::None => MEDIA_TYPE_OCI_LAYER,
                };
                layers.push(Descriptor {
                    media_type: media_type.to_string(),
                    digest: f.digest.clone(),
                    size: f.size,
                    platform: None,
                    annotations: Default::default(),
                });
                size += f.size;
                files.push(f);
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: MEDIA_TYPE_OCI_CONFIG.to_string(),
                    digest: config_file.digest.clone(),
                    size: config_file.size,
                    platform: None,
                    annotations: Default::default(),
                },
                layers,
                annotations: Default::default(),
            };
            let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Json {
                what: "generated manifest".to_string(),
                source: e,
            })?;
            let manifest_digest = Digest::of(&bytes);
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| normalize_reference(t))
                .collect::<Result<Vec<_>, _>>()?;
            images.push(PendingImage {
                names,
                manifest_digest: manifest_digest.clone(),
                config_digest: config_file.digest.clone(),
                diff_ids: config.rootfs.diff_ids,
                files,
                generated: vec![(manifest_digest, bytes)],
                size,
                index_digests: Vec::new(),
                pinned: true,
            });
        }
        if images.is_empty() {
            return Err(ImageError::InvalidImage(
                "manifest.json lists no images".to_string(),
            ));
        }
        Ok(images)
    }
}

/// The diff_id (digest of the uncompressed tar) of the layer blob at `path`, and how it is
/// compressed; refuses layers with paths that could escape their directory.
pub(crate) fn layer_diff_id(
    path: &Path,
    digest: &Digest,
) -> Result<(Digest, Compression), ImageError> {
    let what = format!("layer {digest}");
    let file = File::open(path).ctx("open", path)?;
    let (stream, compression) = decompress(BufReader::new(file), &what)?;
    let mut hashing = HashingReader::new(stream);
    check_layer_paths(&mut hashing, &what)?;
    let (actual, _) = hashing.finish().map_err(|e| archive_err(&what, e))?;
    Ok((actual, compression))
}

/// Reads a layer tar's headers and refuses paths that could escape the directory it is
/// unpacked into: `..`, absolute paths, hard links out of the layer, and entries below a
/// symlink of the same layer. (Unpacking checks again; this rejects bad images early.)
fn check_layer_paths<R: Read>(reader: R, what: &str) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(|e| archive_err(what, e))? {
        let entry = entry.map_err(|e| archive_err(what, e))?;
        let path = entry.path().map_err(|e| archive_err(what, e))?.into_owned();
        let parts: PathBuf = safe_components(&path)?.iter().collect();
        if parts.ancestors().skip(1).any(|a| symlinks.contains(a)) {
            return Err(ImageError::UnsafePath {
                entry: path.display().to_string(),
                reason: "a parent directory is a symlink",
            });
        }
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                symlinks.insert(parts);
            }
            tar::EntryType::Link => {
                if let Some(link) = entry.link_name().map_err(|e| archive_err(what, e))? {
                    safe_components(&link)?;
                }
                symlinks.remove(&parts);
            }
            _ => {
                symlinks.remove(&parts);
            }
        }
    }
    Ok(())
}

/// `<hex>` if `key` is `blobs/sha256/<hex>`.
fn blob_name(key: &Path) -> Option<&str> {
    let rest = key.strip_prefix("blobs/sha256").ok()?;
    let name = rest.to_str()?;
    (!name.contains('/')).then_some(name)
}

/// Resolves a link target against `base`, refusing anything outside the tarball's root.
fn join_inside(base: &Path, target: &Path, entry: &Path) -> Result<PathBuf, ImageError> {
    let refuse = |reason| ImageError::UnsafePath {
        entry: entry.display().to_string(),
        reason,
    };
    let mut out = if target.is_absolute() {
        return Err(refuse("link target is absolute"));
    } else {
        base.to_path_buf()
    };
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return Err(refuse("link target leaves the archive"));
                }
            }
            _ => return Err(refuse("link target is absolute")),
        }
    }
    Ok(out)
}

fn platform_matches(os: &str, arch: &str) -> bool {
    os == "linux" && arch == host_architecture()
}

fn read_json<T: DeserializeOwned>(f: &BlobFile, what: &str) -> Result<T, ImageError> {
    if f.size > MAX_JSON {
        return Err(ImageError::InvalidImage(format!(
            "{what} is {} bytes, more than the {MAX_JSON} allowed for JSON",
            f.size
        )));
    }
    let file = File::open(&f.path).ctx("open", &f.path)?;
    serde_json::from_reader(BufReader::new(file.take(MAX_JSON))).map_err(|e| ImageError::Json {
        what: what.to_string(),
        source: e,
    })
}

fn archive_err(what: &str, e: io::Error) -> ImageError {
    ImageError::Archive {
        what: what.to_string(),
        source: e,
    }
}
