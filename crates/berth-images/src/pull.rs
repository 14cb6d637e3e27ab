//! Pulling images from OCI Distribution (Docker Registry v2) registries, as containerd does:
//! resolve the reference to a manifest on the first endpoint that has it (mirrors first, see
//! [`crate::registries`]), follow an image index to this machine's platform, then fetch the
//! config and the layers the store lacks, verifying every digest and size while the bytes
//! stream to disk (and every layer's diff_id after), and record the image exactly as an
//! import does. Blocking code: async callers run it on a blocking thread.

mod auth;
mod client;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use auth::docker_config_credentials;
use client::Client;

use crate::digest::{Digest, HashingWriter};
use crate::error::{ImageError, IoContext};
use crate::import::{layer_diff_id, BlobFile, PendingImage};
use crate::reference::Reference;
use crate::registries::{Credentials, RegistriesConfig};
use crate::spec::{
    host_architecture, is_index_media_type, ConfigFile, Descriptor, Index, Manifest,
    MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::store::{ImageRef, ImageStore};
use crate::unpack::{tmp_name, TempDirGuard};

/// Largest manifest, index or config we read into memory.
const MAX_JSON: u64 = 16 << 20;
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;
/// What we accept for manifests, most wanted first.
const MANIFEST_ACCEPT: [&str; 4] = [
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// How far one layer's download is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer blob's digest.
    pub digest: Digest,
    /// Bytes fetched so far.
    pub done: u64,
    /// The blob's size.
    pub total: u64,
    /// Where the layer is at.
    pub state: LayerState,
}

/// The stages of a layer during a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// The store has it already: nothing to fetch.
    Exists,
    /// Bytes are arriving.
    Downloading,
    /// Fetched; its digest and size checked.
    Downloaded,
}

/// Receives progress reports during a pull (from the pulling thread).
pub trait PullProgress {
    /// A layer's download moved on (called often while bytes arrive).
    fn layer(&self, progress: &LayerProgress);
}

/// How to pull: registry configuration, credentials and where progress goes.
#[derive(Default)]
pub struct PullOptions<'a> {
    /// Mirrors, endpoint credentials and TLS settings (`registries.yaml`).
    pub registries: RegistriesConfig,
    /// Credentials for the image's own registry (from pull secrets or the command line);
    /// they win over `registries` for that host and are never sent to mirrors.
    pub credentials: Option<Credentials>,
    /// Where progress reports go.
    pub progress: Option<&'a dyn PullProgress>,
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The image: its names, id and manifest digest.
    pub image: ImageRef,
    /// Bytes stored for it: config plus compressed layers.
    pub size: u64,
    /// Bytes of layer and config blobs fetched (0 when the store had them all).
    pub downloaded: u64,
}

/// A manifest found for a reference.
struct Resolved {
    manifest_digest: Digest,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    /// Indexes passed through, with their bytes.
    indexes: Vec<(Digest, Vec<u8>)>,
}

impl ImageStore {
    /// Pulls `reference` (`busybox`, `busybox:1.36`, `host:5000/x/y@sha256:...`) into the
    /// store and returns what it stored. Blobs the store has are not fetched again, so
    /// pulling an unchanged image fetches only its manifest. Errors read like containerd's:
    /// `failed to pull and unpack image "docker.io/library/x:latest": ...`.
    pub fn pull(&self, reference: &str, options: &PullOptions<'_>) -> Result<Pulled, ImageError> {
        let parsed = Reference::parse(reference)?;
        let full = parsed.to_string();
        self.pull_parsed(&parsed, options)
            .map_err(|e| ImageError::Pull {
                reference: full,
                source: Box::new(e),
            })
    }

    fn pull_parsed(&self, r: &Reference, options: &PullOptions<'_>) -> Result<Pulled, ImageError> {
        let full = r.to_string();
        let (registry, repository) =
            r.repository
                .split_once('/')
                .ok_or_else(|| ImageError::InvalidReference {
                    reference: full.clone(),
                    reason: "no registry in the normalised name",
                })?;
        let mut last_error = None;
        for endpoint in options.registries.endpoints(registry) {
            let credentials = if endpoint.is_registry_host {
                options
                    .credentials
                    .clone()
                    .or_else(|| endpoint.credentials.clone())
            } else {
                endpoint.credentials.clone()
            };
            let mut client = Client::new(endpoint, repository, credentials)?;
            match resolve(&mut client, r) {
                Ok(Some(resolved)) => return self.fetch(&mut client, r, resolved, options),
                // Not there: the next endpoint may have it.
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
        }
        Err(ImageError::Resolve {
            reference: full.clone(),
            source: Box::new(last_error.unwrap_or(ImageError::ManifestNotFound(full))),
        })
    }

    /// Fetches what the store lacks of a resolved image, verifies it and records it.
    fn fetch(
        &self,
        client: &mut Client,
        r: &Reference,
        resolved: Resolved,
        options: &PullOptions<'_>,
    ) -> Result<Pulled, ImageError> {
        let Resolved {
            manifest_digest,
            manifest_bytes,
            manifest,
            indexes,
        } = resolved;
        let staging = TempDirGuard::new(self.tmp_dir().join(tmp_name("pull")));
        std::fs::create_dir(staging.path()).ctx("create directory", staging.path())?;
        let mut downloaded = 0;
        // The config: from the store if it has it, else from the registry.
        let config_desc = &manifest.config;
        let config_bytes = match read_stored(self, config_desc)? {
            Some(bytes) => bytes,
            None => {
                if config_desc.size > MAX_JSON {
                    return Err(ImageError::InvalidImage(format!(
                        "config {} is {} bytes, more than the {MAX_JSON} allowed",
                        config_desc.digest, config_desc.size
                    )));
                }
                let path = download(client, config_desc, staging.path(), None)?;
                downloaded += config_desc.size;
                std::fs::read(&path).ctx("read", &path)?
            }
        };
        let config: ConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Json {
                what: format!("config {}", config_desc.digest),
                source: e,
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidImage(format!(
                "manifest {manifest_digest} has {} layers but its config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut files = Vec::new();
        let mut size = config_desc.size;
        let mut fetched: HashMap<Digest, PathBuf> = HashMap::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if layer.media_type.contains("zstd") {
                return Err(ImageError::Unsupported {
                    what: "layer media type",
                    value: layer.media_type.clone(),
                });
            }
            size += layer.size;
            let stored = self.blob_path(&layer.digest);
            let path = if stored.is_file() {
                report(options, layer, layer.size, LayerState::Exists);
                stored
            } else if let Some(p) = fetched.get(&layer.digest) {
                p.clone()
            } else {
                let p = download(client, layer, staging.path(), options.progress)?;
                downloaded += layer.size;
                let (actual, _) = layer_diff_id(&p, &layer.digest)?;
                diff_id.verify(&actual, format!("diff_id of layer {}", layer.digest))?;
                fetched.insert(layer.digest.clone(), p.clone());
                p
            };
            files.push(BlobFile {
                path,
                digest: layer.digest.clone(),
                size: layer.size,
            });
        }
        let names = match (&r.digest, r.tagged_name()) {
            (None, Some(name)) => vec![name],
            _ => Vec::new(),
        };
        let mut generated = vec![
            (manifest_digest.clone(), manifest_bytes),
            (config_desc.digest.clone(), config_bytes),
        ];
        let index_digests = indexes.iter().map(|(d, _)| d.clone()).collect();
        generated.extend(indexes);
        let pending = PendingImage {
            names,
            manifest_digest,
            config_digest: config_desc.digest.clone(),
            diff_ids: config.rootfs.diff_ids,
            files,
            generated,
            size,
            index_digests,
            pinned: false,
        };
        let mut refs = self.commit(vec![pending])?;
        drop(staging);
        let image = refs.pop().ok_or_else(|| {
            ImageError::InvalidImage("the pulled image was not recorded".to_string())
        })?;
        Ok(Pulled {
            image,
            size,
            downloaded,
        })
    }
}

fn report(options: &PullOptions<'_>, layer: &Descriptor, done: u64, state: LayerState) {
    if let Some(p) = options.progress {
        p.layer(&LayerProgress {
            digest: layer.digest.clone(),
            done,
            total: layer.size,
            state,
        });
    }
}

/// A small blob from the store (checked against its digest), if it is there.
fn read_stored(store: &ImageStore, d: &Descriptor) -> Result<Option<Vec<u8>>, ImageError> {
    let path = store.blob_path(&d.digest);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read blob", path, e)),
    };
    if Digest::of(&bytes) != d.digest {
        // A damaged blob: fetch it again (the fresh copy replaces nothing, but is used).
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// Fetches the manifest `r` names from one endpoint, following indexes to this platform's
/// manifest. `Ok(None)` if the endpoint does not have it.
fn resolve(client: &mut Client, r: &Reference) -> Result<Option<Resolved>, ImageError> {
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => crate::reference::DEFAULT_TAG.to_string(),
    };
    let Some((mut bytes, mut media_type, mut digest)) =
        fetch_manifest(client, &reference, r.digest.as_ref())?
    else {
        return Ok(None);
    };
    let mut indexes = Vec::new();
    for _ in 0..=MAX_INDEX_DEPTH {
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Json {
                what: format!("manifest {digest}"),
                source: e,
            })?;
        let stated = value
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| media_type.clone());
        let is_index = is_index_media_type(&stated)
            || is_index_media_type(&media_type)
            || value.get("manifests").is_some();
        if !is_index {
            if !(stated.is_empty()
                || stated == MEDIA_TYPE_OCI_MANIFEST
                || stated == MEDIA_TYPE_DOCKER_MANIFEST
                || stated == "application/json")
            {
                return Err(ImageError::Unsupported {
                    what: "manifest media type",
                    value: stated,
                });
            }
            let manifest: Manifest =
                serde_json::from_value(value).map_err(|e| ImageError::Json {
                    what: format!("manifest {digest}"),
                    source: e,
                })?;
            return Ok(Some(Resolved {
                manifest_digest: digest,
                manifest_bytes: bytes,
                manifest,
                indexes,
            }));
        }
        let index: Index = serde_json::from_value(value).map_err(|e| ImageError::Json {
            what: format!("index {digest}"),
            source: e,
        })?;
        let chosen = select_manifest(&index)
            .ok_or_else(|| ImageError::Unsupported {
                what: "platform",
                value: format!("index {digest} has no linux/{} image", host_architecture()),
            })?
            .clone();
        indexes.push((digest, bytes));
        let Some(next) = fetch_manifest(client, &chosen.digest.to_string(), Some(&chosen.digest))?
        else {
            return Err(ImageError::InvalidImage(format!(
                "manifest {} listed in the index is not in the registry",
                chosen.digest
            )));
        };
        (bytes, media_type, digest) = next;
        if bytes.len() as u64 != chosen.size {
            return Err(ImageError::SizeMismatch {
                what: format!("manifest {}", chosen.digest),
                expected: chosen.size,
                actual: bytes.len() as u64,
            });
        }
    }
    Err(ImageError::InvalidImage(
        "image indexes nest too deep".to_string(),
    ))
}

/// GETs one manifest: its bytes, media type and digest (checked against `expected` and the
/// registry's `Docker-Content-Digest`).
fn fetch_manifest(
    client: &mut Client,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<Option<(Vec<u8>, String, Digest)>, ImageError> {
    let Some(response) = client.get("manifests", reference, &MANIFEST_ACCEPT)? else {
        return Ok(None);
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
    };
    let media_type = header("content-type").unwrap_or_default();
    let stated_digest = header("docker-content-digest");
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::Request {
            method: "GET",
            url: format!("{}/.../manifests/{reference}", client.endpoint().base_url()),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(ImageError::InvalidImage(format!(
            "manifest {reference} is more than {MAX_JSON} bytes"
        )));
    }
    let digest = Digest::of(&bytes);
    if let Some(e) = expected {
        e.verify(&digest, format!("manifest {reference}"))?;
    }
    if let Some(stated) = stated_digest.and_then(|s| Digest::parse(&s).ok()) {
        stated.verify(
            &digest,
            format!("manifest {reference} (Docker-Content-Digest)"),
        )?;
    }
    Ok(Some((bytes, media_type, digest)))
}

/// The entry of an index for this machine (`linux/<host arch>`), or its only entry when
/// that entry names no platform.
pub(crate) fn select_manifest(index: &Index) -> Option<&Descriptor> {
    let arch = host_architecture();
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| match index.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
}

/// Streams a blob into `dir/<hex>`, checking its size and digest on the way; reports
/// progress about every 256 KiB.
fn download(
    client: &mut Client,
    d: &Descriptor,
    dir: &std::path::Path,
    progress: Option<&dyn PullProgress>,
) -> Result<PathBuf, ImageError> {
    let what = format!("blob {}", d.digest);
    let Some(response) = client.get("blobs", &d.digest.to_string(), &[])? else {
        return Err(ImageError::InvalidImage(format!(
            "{what} is not in the registry ({})",
            client.endpoint().base_url()
        )));
    };
    let url = format!("{}/.../blobs/{}", client.endpoint().base_url(), d.digest);
    let path = dir.join(d.digest.hex());
    let file = File::create(&path).ctx("create", &path)?;
    let mut out = HashingWriter::new(io::BufWriter::new(file));
    // One byte more than announced, to notice a blob that is too long.
    let mut body = response.into_body().into_reader().take(d.size + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    let mut reported = 0u64;
    let send = |done: u64, state: LayerState| {
        if let Some(p) = progress {
            p.layer(&LayerProgress {
                digest: d.digest.clone(),
                done,
                total: d.size,
                state,
            });
        }
    };
    send(0, LayerState::Downloading);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::Request {
                    method: "GET",
                    url,
                    reason: e.to_string(),
                })
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk).ctx("write", &path)?;
        done += n as u64;
        if done - reported >= 256 * 1024 {
            reported = done;
            send(done, LayerState::Downloading);
        }
    }
    let (writer, actual, count) = out.finish();
    let file = writer
        .into_inner()
        .map_err(|e| ImageError::io("write", &path, e.into_error()))?;
    file.sync_all().ctx("sync", &path)?;
    if count != d.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected: d.size,
            actual: count,
        });
    }
    d.digest.verify(&actual, what)?;
    send(done, LayerState::Downloaded);
    Ok(path)
}

#[cfg(test)]
mod tests;
