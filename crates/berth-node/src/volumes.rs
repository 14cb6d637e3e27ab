//! A pod's volumes on the node and its containers' mounts of them. configMap, secret,
//! downwardAPI and projected volumes are written by the atomic writer (secret and projected
//! ones on a tmpfs, as upstream) and mounted read-only; while the pod runs they are compared
//! with their sources when one changes (a ConfigMap or Secret event from the node's shared
//! watch, or new pod labels or annotations) and rewritten in one swap when they differ. emptyDir is a
//! directory, or a tmpfs for `medium: Memory`; hostPath is the host's path. `subPath` and
//! `subPathExpr` mounts are safe bind mounts (they keep what they saw, as upstream). Also the
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` files containers mount.

use crate::atomic::{self, FileProjection, Payload};
use crate::downward;
use crate::pods::{blocking, PodRuntime};
use crate::sources::{Source, SourceChange};
use berth_runtime::MountSpec;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::ResourceExt;
use std::collections::HashMap;
use std::path::PathBuf;

/// Why a pod's volumes or a container's mounts cannot be made. `SetUp` reads as upstream's
/// `FailedMount` message.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {why}")]
    SetUp { volume: String, why: String },
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    NotFound { volume: String, container: String },
    #[error("{0}")]
    SubPath(String),
}

/// A volume as containers mount it.
#[derive(Debug, Clone)]
pub struct PodVolume {
    /// The host path that is mounted.
    pub path: PathBuf,
    /// Mounted read-only whatever the mount says (configMap, secret, downwardAPI and
    /// projected volumes, as upstream).
    pub read_only: bool,
}

/// How a volume is backed on the node.
enum Backing {
    /// Files from the atomic writer; on a tmpfs when `memory`.
    Written {
        memory: bool,
    },
    EmptyDir {
        memory: bool,
    },
    HostPath(String),
}

fn backing(v: &Volume) -> Option<Backing> {
    if v.config_map.is_some() || v.downward_api.is_some() {
        Some(Backing::Written { memory: false })
    } else if v.secret.is_some() || v.projected.is_some() {
        Some(Backing::Written { memory: true })
    } else if let Some(e) = &v.empty_dir {
        Some(Backing::EmptyDir {
            memory: e.medium.as_deref() == Some("Memory"),
        })
    } else {
        v.host_path
            .as_ref()
            .map(|h| Backing::HostPath(h.path.clone()))
    }
}

/// Whether one of `pod`'s configMap, secret or projected volumes reads `change`'s object.
pub(crate) fn mounts_source(pod: &Pod, change: &SourceChange) -> bool {
    if pod.namespace().unwrap_or_default() != change.namespace {
        return false;
    }
    let config_map = |name: &str| (ConfigMap::KIND, name.to_string());
    let secret = |name: &str| (Secret::KIND, name.to_string());
    let mut read = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        read.extend(v.config_map.as_ref().map(|c| config_map(&c.name)));
        read.extend(
            v.secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                .map(secret),
        );
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            read.extend(p.config_map.as_ref().map(|c| config_map(&c.name)));
            read.extend(p.secret.as_ref().map(|s| secret(&s.name)));
        }
    }
    read.iter()
        .any(|(kind, name)| *kind == change.kind && *name == change.name)
}

/// Upstream's aggregate error text: the one message, or `[a, b]`.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// A configMap's or secret's files: every key, or the `items` (key → path, mode).
/// `missing_key` is upstream's message prefix for an item whose key does not exist.
fn key_payload(
    data: &HashMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing_key: &str,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{missing_key}: {}", item.key));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: item.mode.map_or(default_mode, |m| m as u32),
                    },
                );
            }
        }
    }
    Ok(payload)
}

fn mode(m: Option<i32>, default: u32) -> u32 {
    m.map_or(default, |m| m as u32)
}

/// The pod's memory limit as upstream's pod cgroup has it: the containers' limits summed
/// when every container sets one.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let mut sum = 0u64;
    for c in &spec.containers {
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| downward::bytes(&q.0))?;
        sum = sum.saturating_add(limit);
    }
    Some(sum).filter(|s| *s > 0)
}

impl PodRuntime {
    fn data_dir(&self) -> PathBuf {
        self.pods_dir
            .parent()
            .map_or_else(|| self.pods_dir.clone(), |p| p.to_path_buf())
    }

    /// The files of a downwardAPI volume (or projection).
    fn downward_payload(
        &self,
        pod: &Pod,
        items: &[DownwardAPIVolumeFile],
        default_mode: u32,
    ) -> Result<Payload, String> {
        let mut payload = Payload::new();
        let mut errors = Vec::new();
        for item in items {
            let value = if let Some(f) = &item.field_ref {
                downward::field_value(pod, &f.field_path, None)
            } else if let Some(r) = &item.resource_field_ref {
                let name = r.container_name.clone().unwrap_or_default();
                downward::container(pod, &name).and_then(|c| {
                    downward::resource_value(
                        &r.resource,
                        r.divisor.as_ref(),
                        c,
                        self.sources.allocatable(&self.data_dir()),
                    )
                })
            } else {
                continue;
            };
            match value {
                Ok(v) => {
                    payload.insert(
                        item.path.clone(),
                        FileProjection {
                            data: v.into_bytes(),
                            mode: mode(item.mode, default_mode),
                        },
                    );
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        aggregate(errors).map(|()| payload)
    }

    /// The files of a configMap or secret volume (or projection); `optional` ones may be
    /// missing, or miss keys.
    async fn key_source_payload<K: Source>(
        &self,
        confirm_miss: bool,
        ns: &str,
        name: &str,
        items: Option<&[KeyToPath]>,
        default_mode: u32,
        optional: bool,
    ) -> Result<Payload, String> {
        let object = self
            .sources
            .get::<K>(&self.client, ns, name, confirm_miss)
            .await
            .map_err(|e| e.to_string())?;
        if object.is_none() && !optional {
            return Err(format!("{} {name:?} not found", K::KIND));
        }
        // Upstream's messages for an item whose key does not exist.
        let missing_key = if K::KIND == "configmap" {
            "configmap references non-existent config key"
        } else {
            "references non-existent secret key"
        };
        key_payload(
            &object.map(|o| o.entries()).unwrap_or_default(),
            items,
            default_mode,
            optional,
            missing_key,
        )
    }

    /// The files a configMap, secret, downwardAPI or projected volume holds now; `None` for
    /// other volume types. A refresh (`confirm_miss` false) reads only the node's shared
    /// watch, never the API, once the watch has loaded.
    async fn payload(
        &self,
        pod: &Pod,
        v: &Volume,
        confirm_miss: bool,
    ) -> Option<Result<Payload, String>> {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        if let Some(cm) = &v.config_map {
            return Some(
                self.key_source_payload::<ConfigMap>(
                    confirm_miss,
                    &ns,
                    &cm.name,
                    cm.items.as_deref(),
                    mode(cm.default_mode, 0o644),
                    cm.optional == Some(true),
                )
                .await,
            );
        }
        if let Some(s) = &v.secret {
            return Some(
                self.key_source_payload::<Secret>(
                    confirm_miss,
                    &ns,
                    s.secret_name.as_deref().unwrap_or_default(),
                    s.items.as_deref(),
                    mode(s.default_mode, 0o644),
                    s.optional == Some(true),
                )
                .await,
            );
        }
        if let Some(d) = &v.downward_api {
            return Some(self.downward_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                mode(d.default_mode, 0o644),
            ));
        }
        let p = v.projected.as_ref()?;
        let default_mode = mode(p.default_mode, 0o644);
        let mut payload = Payload::new();
        let mut errors = Vec::new();
        for source in p.sources.iter().flatten() {
            let part = if let Some(cm) = &source.config_map {
                self.key_source_payload::<ConfigMap>(
                    confirm_miss,
                    &ns,
                    &cm.name,
                    cm.items.as_deref(),
                    default_mode,
                    cm.optional == Some(true),
                )
                .await
            } else if let Some(s) = &source.secret {
                self.key_source_payload::<Secret>(
                    confirm_miss,
                    &ns,
                    &s.name,
                    s.items.as_deref(),
                    default_mode,
                    s.optional == Some(true),
                )
                .await
            } else if let Some(d) = &source.downward_api {
                self.downward_payload(pod, d.items.as_deref().unwrap_or_default(), default_mode)
            } else if let Some(t) = &source.service_account_token {
                // A token needs the API's TokenRequest (serviceaccounts/<name>/token), which
                // berth does not serve yet; a made-up token would only fail later.
                Err(format!(
                    "serviceAccountToken projection to {:?} is not supported: the API server \
                     does not serve TokenRequest (serviceaccounts/token) yet",
                    t.path
                ))
            } else if source.cluster_trust_bundle.is_some() {
                Err(
                    "clusterTrustBundle projection is not supported: the API server does not \
                     serve ClusterTrustBundles"
                        .to_string(),
                )
            } else {
                Err(
                    "projected volume source of an unsupported kind (only configMap, secret \
                     and downwardAPI are supported)"
                        .to_string(),
                )
            };
            match part {
                Ok(files) => payload.extend(files),
                Err(e) => errors.push(e),
            }
        }
        Some(aggregate(errors).map(|()| payload))
    }

    /// Writes a volume's files with the atomic writer (a tmpfs mounted first when `memory`).
    async fn write_volume(
        &self,
        key: String,
        dir: PathBuf,
        payload: Payload,
        memory: bool,
    ) -> Result<bool, String> {
        let record = payload.clone();
        let changed = blocking(move || -> Result<bool, String> {
            if memory {
                crate::mounts::mount_tmpfs(&dir, None, 0o755).map_err(|e| e.to_string())?;
            }
            atomic::write(&dir, &payload).map_err(|e| e.to_string())
        })
        .await??;
        self.sources.record_written(&key, &record);
        Ok(changed)
    }

    /// Makes every volume of the pod (writing configMap, secret, downwardAPI and projected
    /// files, making emptyDirs); returns volume name → what containers mount.
    pub(crate) async fn volumes(
        &self,
        pod: &Pod,
    ) -> Result<HashMap<String, PodVolume>, VolumeError> {
        let uid = pod.uid().unwrap_or_default();
        let mut out = HashMap::new();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in volumes {
            let failed = |why: String| VolumeError::SetUp {
                volume: v.name.clone(),
                why,
            };
            let dir = self.pod_dir(&uid).join("volumes").join(&v.name);
            let volume = match backing(&v) {
                Some(Backing::Written { memory }) => {
                    let payload = match self.payload(pod, &v, true).await {
                        Some(p) => p.map_err(failed)?,
                        None => Payload::new(),
                    };
                    let key = format!("{uid}/{}", v.name);
                    self.write_volume(key, dir.clone(), payload, memory)
                        .await
                        .map_err(failed)?;
                    PodVolume {
                        path: dir,
                        read_only: true,
                    }
                }
                Some(Backing::EmptyDir { memory }) => {
                    let size = v
                        .empty_dir
                        .as_ref()
                        .and_then(|e| e.size_limit.as_ref())
                        .and_then(|q| downward::bytes(&q.0))
                        .filter(|s| *s > 0);
                    // As upstream: the tmpfs is as big as the pod may use, or sizeLimit if less.
                    let node = self.sources.allocatable(&self.data_dir()).memory.clone();
                    let pod_limit = pod_memory_limit(pod).or_else(|| downward::bytes(&node));
                    let tmpfs_size = match (size, pod_limit) {
                        (Some(s), Some(p)) => Some(s.min(p)),
                        (s, p) => s.or(p),
                    };
                    let d = dir.clone();
                    blocking(move || -> Result<(), String> {
                        if memory {
                            crate::mounts::mount_tmpfs(&d, tmpfs_size, 0o777)
                                .map_err(|e| e.to_string())
                        } else {
                            use std::os::unix::fs::PermissionsExt;
                            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                                .map_err(|e| e.to_string())
                        }
                    })
                    .await
                    .and_then(|r| r)
                    .map_err(failed)?;
                    PodVolume {
                        path: dir,
                        read_only: false,
                    }
                }
                Some(Backing::HostPath(path)) => PodVolume {
                    path: PathBuf::from(path),
                    read_only: false,
                },
                None => {
                    return Err(failed(
                        "this node does not support the volume's type yet (supported: \
                         configMap, secret, downwardAPI, projected, emptyDir, hostPath)"
                            .into(),
                    ))
                }
            };
            out.insert(v.name.clone(), volume);
        }
        Ok(out)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes of a pod whose
    /// sources changed since they were written (only volumes already set up; a source that
    /// cannot be read now leaves the volume as it is, as upstream). Called when a source
    /// changed (see [`crate::sources::Sources::take_stale`]), not on every sync.
    pub(crate) async fn refresh_volumes(&self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(Backing::Written { memory }) = backing(v) else {
                continue;
            };
            let key = format!("{uid}/{}", v.name);
            let dir = self.pod_dir(&uid).join("volumes").join(&v.name);
            if !self.sources.was_written(&key) && !dir.join(atomic::DATA_DIR).exists() {
                continue;
            }
            let payload = match self.payload(pod, v, false).await {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    tracing::debug!(pod = %pod.name_any(), volume = %v.name, "volume not refreshed: {e}");
                    continue;
                }
                None => continue,
            };
            if self.sources.is_written(&key, &payload) {
                continue;
            }
            match self.write_volume(key, dir, payload, memory).await {
                Ok(true) => {
                    tracing::info!(pod = %pod.name_any(), volume = %v.name, "volume updated")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), volume = %v.name, "failed to update a volume: {e}")
                }
            }
        }
    }

    /// A container's mounts of the pod's volumes; `subPath`/`subPathExpr` ones are bind
    /// mounts prepared under `<pod dir>/volume-subpaths/<volume>/<container>/<index>`.
    pub(crate) async fn volume_mounts(
        &self,
        pod: &Pod,
        c: &Container,
        volumes: &HashMap<String, PodVolume>,
        env: &[(String, String)],
    ) -> Result<Vec<MountSpec>, VolumeError> {
        let uid = pod.uid().unwrap_or_default();
        let env: HashMap<String, String> = env.iter().cloned().collect();
        let mut mounts = Vec::new();
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let Some(vol) = volumes.get(&m.name) else {
                return Err(VolumeError::NotFound {
                    volume: m.name.clone(),
                    container: c.name.clone(),
                });
            };
            let sub = match m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                Some(expr) => expand_sub_path(expr, &env)?,
                None => m.sub_path.clone().unwrap_or_default(),
            };
            let source = if sub.is_empty() {
                vol.path.clone()
            } else {
                check_sub_path(&sub)?;
                let target = self
                    .pod_dir(&uid)
                    .join("volume-subpaths")
                    .join(&m.name)
                    .join(&c.name)
                    .join(i.to_string());
                let volume_path = vol.path.clone();
                let t = target.clone();
                let s = sub.clone();
                blocking(move || -> Result<(), String> {
                    let host = volume_path.join(&s);
                    // A missing subPath is made as a directory, as upstream.
                    if std::fs::symlink_metadata(&host).is_err() {
                        std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
                    }
                    crate::mounts::bind_subpath(&volume_path, &s, &t).map_err(|e| e.to_string())
                })
                .await
                .and_then(|r| r)
                .map_err(|e| {
                    tracing::warn!(pod = %pod.name_any(), container = %c.name, "subPath {sub:?}: {e}");
                    VolumeError::SubPath(format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        m.name, c.name
                    ))
                })?;
                target
            };
            mounts.push(MountSpec::Bind {
                source,
                destination: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false) || vol.read_only,
            });
        }
        Ok(mounts)
    }

    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` for the pod (see [`crate::dns`]).
    pub(crate) fn etc_files(&self, pod: &Pod, ip: &str) -> Result<PathBuf, std::io::Error> {
        let dir = self.pod_dir(&pod.uid().unwrap_or_default()).join("etc");
        std::fs::create_dir_all(&dir)?;
        let domain = self
            .cluster_dns
            .as_ref()
            .map_or("cluster.local", |c| c.domain.as_str());
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write(
            dir.join("hosts"),
            crate::dns::hosts(pod, ip, domain, &host_hosts),
        )?;
        let host = crate::dns::ResolvConf::parse(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        );
        let resolv = crate::dns::resolv_conf(pod, self.cluster_dns.as_ref(), &host);
        std::fs::write(dir.join("resolv.conf"), resolv.render())?;
        std::fs::write(dir.join("hostname"), crate::dns::hostname_file(pod, domain))?;
        Ok(dir)
    }
}

/// `subPathExpr` with `$(VAR)` taken from the container's environment; every variable must
/// have a value (upstream: `missing value for A, B`).
fn expand_sub_path(expr: &str, env: &HashMap<String, String>) -> Result<String, VolumeError> {
    let mut missing = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let name = &after[..end];
        if env.get(name).is_none_or(|v| v.is_empty()) && !rest[..start].ends_with('$') {
            missing.insert(name.to_string());
        }
        rest = &after[end + 1..];
    }
    if !missing.is_empty() {
        return Err(VolumeError::SubPath(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(crate::spec::expand(expr, env))
}

/// A subPath must stay inside its volume: relative and without `..` elements.
fn check_sub_path(sub: &str) -> Result<(), VolumeError> {
    if sub.starts_with('/') {
        return Err(VolumeError::SubPath(format!(
            "error SubPath `{sub}` must not be an absolute path"
        )));
    }
    if sub.split('/').any(|p| p == "..") {
        return Err(VolumeError::SubPath(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_payloads_follow_items_modes_and_optional() {
        let data: HashMap<String, Vec<u8>> = [("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let all = key_payload(&data, None, 0o644, false, "x").expect("all keys");
        assert_eq!(all.len(), 2);
        assert_eq!(all["a"].mode, 0o644);
        let items = vec![
            KeyToPath {
                key: "a".into(),
                path: "dir/renamed".into(),
                mode: Some(0o400),
            },
            KeyToPath {
                key: "missing".into(),
                path: "m".into(),
                mode: None,
            },
        ];
        assert_eq!(
            key_payload(
                &data,
                Some(&items),
                0o644,
                false,
                "configmap references non-existent config key"
            ),
            Err("configmap references non-existent config key: missing".into())
        );
        let some = key_payload(&data, Some(&items), 0o644, true, "x").expect("optional");
        assert_eq!(some.len(), 1);
        assert_eq!(some["dir/renamed"].mode, 0o400);
        assert_eq!(some["dir/renamed"].data, b"1");
    }

    #[test]
    fn sub_paths_expand_and_stay_inside() {
        let env: HashMap<String, String> = [("POD".to_string(), "web-1".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            expand_sub_path("logs/$(POD)", &env).expect("expanded"),
            "logs/web-1"
        );
        assert_eq!(
            expand_sub_path("$(NOPE)/$(POD)/$(ALSO)", &env)
                .map_err(|e| e.to_string())
                .expect_err("missing"),
            "missing value for ALSO, NOPE"
        );
        assert!(check_sub_path("a/b").is_ok());
        assert!(check_sub_path("a..b").is_ok());
        assert!(check_sub_path("/etc").is_err());
        assert!(check_sub_path("a/../../etc").is_err());
        assert_eq!(aggregate(vec![]), Ok(()));
        assert_eq!(aggregate(vec!["x".into()]), Err("x".into()));
        assert_eq!(
            aggregate(vec!["x".into(), "y".into()]),
            Err("[x, y]".into())
        );
    }
}
