//! [`ImageStore`]: the on-disk store of blobs, image names and unpacked layers, and the
//! public description of an image ([`Image`], [`ImageConfig`], [`Layer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext};
use crate::import::{PendingImage, Staging};
use crate::reference::Reference;
use crate::spec::{ConfigFile, Manifest};
use crate::sys;
use crate::unpack::{self, tmp_name, TMP_PREFIX};

/// Largest manifest or config blob we read into memory.
const MAX_JSON: u64 = 16 << 20;
/// Version of `index.json` written by this code.
const INDEX_VERSION: u32 = 1;

/// What an import produced: one entry per image in the tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Normalised names (`docker.io/library/busybox:latest`), possibly none.
    pub names: Vec<String>,
    /// Image id: the digest of its config.
    pub id: Digest,
    /// Digest of its manifest.
    pub manifest_digest: Digest,
}

/// A summary of a stored image, for listings (`berth images ls`, the Node's `images`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalised names.
    pub names: Vec<String>,
    /// Image id: the digest of its config.
    pub id: Digest,
    /// Digest of its manifest.
    pub manifest_digest: Digest,
    /// Bytes stored for it: config plus compressed layers.
    pub size: u64,
    /// Imported from a tarball (airgap) rather than pulled: used as it is, without pulling,
    /// even under `imagePullPolicy: Always`.
    pub pinned: bool,
}

/// Everything needed to run an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Image id: the digest of its config.
    pub id: Digest,
    /// Digest of its manifest.
    pub manifest_digest: Digest,
    /// Normalised names.
    pub names: Vec<String>,
    /// How to run it.
    pub config: ImageConfig,
    /// Its layers, lowest first.
    pub layers: Vec<Layer>,
    /// Operating system it is built for.
    pub os: String,
    /// Architecture it is built for (Go's naming).
    pub architecture: String,
    /// Bytes stored for it: config plus compressed layers.
    pub size: u64,
    /// Imported from a tarball (airgap) rather than pulled: used as it is, without pulling,
    /// even under `imagePullPolicy: Always`.
    pub pinned: bool,
}

/// The run-time defaults of an image (the `config` of its config blob).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// `ENTRYPOINT`; empty when unset.
    pub entrypoint: Vec<String>,
    /// `CMD`; empty when unset.
    pub cmd: Vec<String>,
    /// `NAME=value` environment entries.
    pub env: Vec<String>,
    /// `WORKDIR`, if set.
    pub working_dir: Option<String>,
    /// `USER` (`name`, `uid`, `uid:gid`, ...), if set.
    pub user: Option<String>,
    /// `EXPOSE`d ports (`8080/tcp`).
    pub exposed_ports: Vec<String>,
    /// `STOPSIGNAL` (`SIGTERM`, `15`), if set.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
}

/// What [`ImageStore::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The image had other names; only this one was removed.
    Untagged {
        /// The name removed.
        name: String,
        /// The image it named.
        id: Digest,
    },
    /// The image was deleted, with blobs and layers no other image uses.
    Deleted {
        /// Its id.
        id: Digest,
        /// Its manifest digest.
        manifest_digest: Digest,
        /// The names it had.
        names: Vec<String>,
    },
}

/// `index.json` of the store.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// One image in `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    manifest_digest: Digest,
    id: Digest,
    names: Vec<String>,
    size: u64,
    /// Every blob it needs (manifest, config, layers), for garbage collection.
    blobs: Vec<Digest>,
    /// Its layers' diff_ids, for garbage collection of unpacked layers.
    diff_ids: Vec<Digest>,
    /// Digests of the image indexes (manifest lists) it was pulled through, so
    /// `name@<index digest>` finds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    index_digests: Vec<Digest>,
    /// Imported from a tarball rather than pulled.
    #[serde(default)]
    pinned: bool,
}

/// The node's image store. Cheap to open; several stores (threads or processes) may use
/// one directory at once: the index is changed under an exclusive `flock`, layers are
/// renamed into place when complete.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    tmp: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store in `dir`, removing debris of crashed imports
    /// and unpacks.
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            root: dir.to_path_buf(),
            blobs: dir.join("blobs").join("sha256"),
            layers: dir.join("layers"),
            tmp: dir.join("tmp"),
        };
        for d in [&store.blobs, &store.layers, &store.tmp] {
            fs::create_dir_all(d).ctx("create directory", d)?;
        }
        store.remove_stale(&store.tmp)?;
        store.remove_stale(&store.layers)?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a layer with this diff_id is (or will be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers.join(diff_id.hex())
    }

    /// Path of a blob in the store (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Imports every image of an OCI image layout or `docker save` tarball (plain or
    /// gzip-compressed). All digests, sizes and diff_ids are verified before anything is
    /// stored; on error nothing is left behind. Names already used by another image move
    /// to the imported one. Importing the same tarball again changes nothing.
    pub fn import(&self, tarball: &Path) -> Result<Vec<ImageRef>, ImageError> {
        let mut staging = Staging::stage(tarball, &self.tmp, &self.blobs)?;
        let images = staging.images()?;
        let out = self.commit(images)?;
        drop(staging);
        Ok(out)
    }

    /// Stores verified images (an import's or a pull's): links their blobs into the store
    /// and records them in the index, names moving to them from other images.
    pub(crate) fn commit(&self, images: Vec<PendingImage>) -> Result<Vec<ImageRef>, ImageError> {
        let _lock = self.lock()?;
        for image in &images {
            for f in &image.files {
                self.put_blob_file(&f.path, &f.digest)?;
            }
            for (digest, bytes) in &image.generated {
                self.put_blob_bytes(digest, bytes)?;
            }
        }
        sync_dir(&self.blobs)?;
        let mut index = self.read_index()?;
        let mut out = Vec::new();
        for image in images {
            out.push(ImageRef {
                names: image.names.clone(),
                id: image.config_digest.clone(),
                manifest_digest: image.manifest_digest.clone(),
            });
            add_record(&mut index, image);
        }
        self.write_index(&index)?;
        Ok(out)
    }

    /// Where in-progress work (staged imports and pulls) goes.
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Lists every stored image.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        Ok(self
            .read_index()?
            .images
            .into_iter()
            .map(|r| ImageInfo {
                names: r.names,
                id: r.id,
                manifest_digest: r.manifest_digest,
                size: r.size,
                pinned: r.pinned,
            })
            .collect())
    }

    /// Looks an image up by name (`busybox`, normalised), `name@sha256:<manifest digest>`,
    /// `sha256:<id or manifest digest>`, or its id's hex (whole, or a unique prefix of at
    /// least 12 characters). `Ok(None)` if no image matches.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let index = self.read_index()?;
        match find(&index, reference)? {
            Some((i, _)) => match index.images.get(i) {
                Some(record) => self.load(record).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Unpacks every layer of `image` (once; layers already unpacked are reused) and
    /// returns their directories, lowest first — overlayfs wants them reversed, top first,
    /// in `lowerdir=`. Blob digests and diff_ids are verified while unpacking. Safe to
    /// call concurrently for images sharing layers.
    pub fn unpack(&self, image: &Image) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|l| {
                let dir = self.layer_dir(&l.diff_id);
                if dir.is_dir() {
                    return Ok(dir);
                }
                let blob = self.blob_path(&l.digest);
                if !blob.is_file() {
                    return Err(ImageError::MissingBlob(l.digest.to_string()));
                }
                unpack::unpack_layer(&blob, &l.digest, &l.diff_id, &self.layers)
            })
            .collect()
    }

    /// Removes a name, or a whole image. Given a name of an image that has others, only
    /// that name goes; otherwise (last name, id or digest) the image goes, with the blobs
    /// and unpacked layers no remaining image uses. `Ok(None)` if nothing matched.
    ///
    /// The caller must not remove images whose layers are mounted by running containers.
    pub fn remove(&self, reference: &str) -> Result<Option<Removed>, ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let Some((i, by_name)) = find(&index, reference)? else {
            return Ok(None);
        };
        if let Some(name) = by_name {
            if let Some(record) = index.images.get_mut(i) {
                if record.names.len() > 1 {
                    record.names.retain(|n| n != &name);
                    let id = record.id.clone();
                    self.write_index(&index)?;
                    return Ok(Some(Removed::Untagged { name, id }));
                }
            }
        }
        let record = index.images.remove(i);
        self.write_index(&index)?;
        let used_blobs: BTreeSet<&Digest> = index.images.iter().flat_map(|r| &r.blobs).collect();
        let used_layers: BTreeSet<&Digest> =
            index.images.iter().flat_map(|r| &r.diff_ids).collect();
        for blob in record.blobs.iter().filter(|b| !used_blobs.contains(b)) {
            let path = self.blob_path(blob);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove blob", path, e)),
            }
        }
        for diff_id in record.diff_ids.iter().filter(|d| !used_layers.contains(d)) {
            let dir = self.layer_dir(diff_id);
            if !dir.exists() {
                continue;
            }
            // Rename first so a crash never leaves a half-deleted layer that looks done.
            let doomed = self.layers.join(tmp_name("remove"));
            fs::rename(&dir, &doomed).ctx("move away layer", &dir)?;
            fs::remove_dir_all(&doomed).ctx("remove layer", &doomed)?;
        }
        Ok(Some(Removed::Deleted {
            id: record.id,
            manifest_digest: record.manifest_digest,
            names: record.names,
        }))
    }

    /// Builds an [`Image`] from its record, reading (and verifying) manifest and config.
    fn load(&self, record: &ImageRecord) -> Result<Image, ImageError> {
        let manifest: Manifest = self.read_json_blob(&record.manifest_digest)?;
        let config: ConfigFile = self.read_json_blob(&manifest.config.digest)?;
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| Layer {
                digest: d.digest.clone(),
                diff_id: diff_id.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            })
            .collect();
        let c = config.config.unwrap_or_default();
        Ok(Image {
            id: record.id.clone(),
            manifest_digest: record.manifest_digest.clone(),
            names: record.names.clone(),
            config: ImageConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.filter(|w| !w.is_empty()),
                user: c.user.filter(|u| !u.is_empty()),
                exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
                stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
                labels: c.labels.unwrap_or_default(),
            },
            layers,
            os: config.os,
            architecture: config.architecture,
            size: record.size,
            pinned: record.pinned,
        })
    }

    /// Reads a small JSON blob, checking it still hashes to its name.
    fn read_json_blob<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
    ) -> Result<T, ImageError> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::MissingBlob(digest.to_string()))
            }
            Err(e) => return Err(ImageError::io("open blob", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_JSON)
            .read_to_end(&mut bytes)
            .ctx("read blob", &path)?;
        digest.verify(&Digest::of(&bytes), format!("blob {}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Json {
            what: format!("blob {digest}"),
            source: e,
        })
    }

    /// Links a verified staged file into the blob store (no-op if it is there).
    fn put_blob_file(&self, src: &Path, digest: &Digest) -> Result<(), ImageError> {
        let dst = self.blob_path(digest);
        if dst.exists() {
            return Ok(());
        }
        File::open(src)
            .and_then(|f| f.sync_all())
            .ctx("sync", src)?;
        match fs::hard_link(src, &dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ImageError::io("store blob", dst, e)),
        }
    }

    /// Writes bytes we produced (and hashed) as a blob.
    fn put_blob_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        let dst = self.blob_path(digest);
        if dst.exists() {
            return Ok(());
        }
        let tmp = self.tmp.join(tmp_name("blob"));
        let result = write_synced(&tmp, bytes).and_then(|()| match fs::hard_link(&tmp, &dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ImageError::io("store blob", &dst, e)),
        });
        let _ = fs::remove_file(&tmp);
        result
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile, ImageError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    version: INDEX_VERSION,
                    images: Vec::new(),
                })
            }
            Err(e) => return Err(ImageError::io("read", path, e)),
        };
        let index: IndexFile = serde_json::from_slice(&bytes).map_err(|e| ImageError::Json {
            what: path.display().to_string(),
            source: e,
        })?;
        if index.version != INDEX_VERSION {
            return Err(ImageError::Unsupported {
                what: "image index version",
                value: index.version.to_string(),
            });
        }
        Ok(index)
    }

    /// Replaces `index.json` atomically: temp file, fsync, rename, fsync directory.
    fn write_index(&self, index: &IndexFile) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| ImageError::Json {
            what: "image index".to_string(),
            source: e,
        })?;
        let path = self.index_path();
        let tmp = self.tmp.join(tmp_name("index"));
        write_synced(&tmp, &bytes)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io("replace", path, e));
        }
        sync_dir(&self.root)
    }

    /// Takes the store-wide lock that serialises index changes (across processes too).
    fn lock(&self) -> Result<File, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        sys::flock_exclusive(&file).ctx("lock", &path)?;
        Ok(file)
    }

    /// Removes `.tmp-<pid>-...` entries of processes that no longer exist.
    fn remove_stale(&self, dir: &Path) -> Result<(), ImageError> {
        for entry in fs::read_dir(dir).ctx("read directory", dir)? {
            let entry = entry.ctx("read directory", dir)?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if pid.is_empty() || Path::new("/proc").join(pid).exists() {
                continue;
            }
            let path = entry.path();
            let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.ctx("remove stale", &path)?;
        }
        Ok(())
    }
}

/// Adds an imported image to the index, moving its names away from other images.
fn add_record(index: &mut IndexFile, image: PendingImage) {
    for other in &mut index.images {
        if other.manifest_digest != image.manifest_digest {
            other.names.retain(|n| !image.names.contains(n));
        }
    }
    let mut blobs: Vec<Digest> = image.files.iter().map(|f| f.digest.clone()).collect();
    blobs.extend(image.generated.iter().map(|(d, _)| d.clone()));
    blobs.push(image.manifest_digest.clone());
    blobs.sort();
    blobs.dedup();
    match index
        .images
        .iter_mut()
        .find(|r| r.manifest_digest == image.manifest_digest)
    {
        Some(existing) => {
            for n in image.names {
                if !existing.names.contains(&n) {
                    existing.names.push(n);
                }
            }
            for d in image.index_digests {
                if !existing.index_digests.contains(&d) {
                    existing.index_digests.push(d);
                }
            }
            existing.pinned |= image.pinned;
        }
        None => index.images.push(ImageRecord {
            manifest_digest: image.manifest_digest,
            id: image.config_digest,
            names: image.names,
            size: image.size,
            blobs,
            diff_ids: image.diff_ids,
            index_digests: image.index_digests,
            pinned: image.pinned,
        }),
    }
}

/// Finds the record a reference names; with the name matched if it matched by name.
fn find(index: &IndexFile, reference: &str) -> Result<Option<(usize, Option<String>)>, ImageError> {
    let by = |pred: &dyn Fn(&ImageRecord) -> bool| index.images.iter().position(pred);
    if reference.starts_with("sha256:") {
        let d = Digest::parse(reference)?;
        return Ok(
            by(&|r| r.id == d || r.manifest_digest == d || r.index_digests.contains(&d))
                .map(|i| (i, None)),
        );
    }
    let is_hex = !reference.is_empty()
        && reference
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex && reference.len() == 64 {
        return Ok(
            by(&|r| r.id.hex() == reference || r.manifest_digest.hex() == reference)
                .map(|i| (i, None)),
        );
    }
    let parsed = Reference::parse(reference);
    if let Ok(parsed) = &parsed {
        if let Some(d) = &parsed.digest {
            return Ok(
                by(&|r| &r.manifest_digest == d || r.index_digests.contains(d)).map(|i| (i, None)),
            );
        }
        if let Some(name) = parsed.tagged_name() {
            if let Some(i) = by(&|r| r.names.contains(&name)) {
                return Ok(Some((i, Some(name))));
            }
        }
    }
    if is_hex && reference.len() >= 12 {
        let matches: Vec<usize> = index
            .images
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.hex().starts_with(reference))
            .map(|(i, _)| i)
            .collect();
        if let [only] = matches.as_slice() {
            return Ok(Some((*only, None)));
        }
    }
    parsed.map(|_| None)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = File::create(path).ctx("create", path)?;
    f.write_all(bytes).ctx("write", path)?;
    f.sync_all().ctx("sync", path)
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx("sync directory", dir)
}
