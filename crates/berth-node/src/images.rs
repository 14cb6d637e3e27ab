//! The image a container runs, per its `imagePullPolicy` as the kubelet decides: found in the
//! node's image store or pulled from its registry (credentials from the pod's
//! `imagePullSecrets`, then `<data-dir>/registries.yaml`), with upstream's pull back-off
//! (`ErrImagePull`, then `ImagePullBackOff`, 10 s doubling to 5 min) and events (`Pulling`,
//! `Pulled`, `Failed`, `BackOff`); then its layers unpacked.
//!
//! Pulls run on blocking threads, one at a time per image (others wanting the same image
//! wait for it), so a pull never holds up other pods' syncs.
//!
//! Images imported from tarballs (airgap) are pinned: they are used as they are, without a
//! pull, even under `imagePullPolicy: Always`, so an air-gapped node runs the `:latest`
//! images it was given.

use crate::pods::{blocking, PodRuntime};
use crate::podstatus::ContainerState;
use berth_images::{docker_config_credentials, Credentials, Image, ImageError, Reference};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::Api;
use kube::ResourceExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waiting reasons of containers whose image could not be had (they have their own
/// back-off and events, recorded here).
const IMAGE_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// Whether a container's waiting state is about its image (handled here: events and
/// back-off), rather than a failed start.
pub(crate) fn is_image_state(state: &ContainerState) -> bool {
    matches!(state, ContainerState::Waiting { reason, .. } if IMAGE_REASONS.contains(&reason.as_str()))
}

/// The node's pulls in progress and the back-off of failed ones. Kept in memory, as
/// upstream's: a restarted agent just tries again.
#[derive(Debug, Default)]
pub struct ImagePulls {
    /// One lock per image reference: a second pull of the same image waits for the first.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per `<pod uid>/<image>`: failures in a row, the last one's time, and whether this
    /// back-off was reported (events are recorded once per back-off, not every sync).
    failures: Mutex<HashMap<String, PullFailure>>,
}

#[derive(Debug, Clone)]
struct PullFailure {
    count: u32,
    at: Instant,
    reported: bool,
}

impl ImagePulls {
    fn lock_for(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.in_flight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Forget locks nobody holds or waits for (only the map refers to them).
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(image.to_string()).or_default().clone()
    }

    fn with_failures<T>(&self, f: impl FnOnce(&mut HashMap<String, PullFailure>) -> T) -> T {
        let mut map = match self.failures.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        f(&mut map)
    }

    /// Whether `key` is still backing off; `Some(first)` with `first` true the first time
    /// this back-off is seen.
    fn backing_off(&self, key: &str) -> Option<bool> {
        self.with_failures(|m| {
            let f = m.get_mut(key)?;
            if f.at.elapsed() >= pull_backoff(f.count) {
                return None;
            }
            let first = !f.reported;
            f.reported = true;
            Some(first)
        })
    }

    /// For failures that are not pulls (a missing image under `Never`, a bad name): whether
    /// to record their events now — once per back-off period rather than every sync.
    fn report_once(&self, key: &str) -> bool {
        if self.backing_off(key).is_some() {
            return false;
        }
        self.failed(key);
        self.backing_off(key);
        true
    }

    fn failed(&self, key: &str) {
        self.with_failures(|m| {
            // Entries untouched for longer than the longest back-off are of pods long gone.
            m.retain(|_, f| f.at.elapsed() < FORGET_AFTER);
            let count = m.get(key).map_or(0, |f| f.count) + 1;
            m.insert(
                key.to_string(),
                PullFailure {
                    count,
                    at: Instant::now(),
                    reported: false,
                },
            );
        });
    }

    fn succeeded(&self, key: &str) {
        self.with_failures(|m| m.remove(key));
    }
}

/// Failures older than this are forgotten (twice the longest back-off).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Upstream's image pull back-off after `failures` failed pulls: 10 s doubling, capped at
/// 5 minutes.
fn pull_backoff(failures: u32) -> Duration {
    Duration::from_secs((10u64 << failures.saturating_sub(1).min(5)).min(300))
}

/// The API server defaults `imagePullPolicy`; this is the same default for pods that
/// somehow lack it: `Always` for `:latest` or untagged images, else `IfNotPresent`.
fn default_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// A duration as Go prints a `time.Duration` truncated to milliseconds (`547ms`, `1.234s`).
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, rest) = (ms / 60_000, ms % 60_000);
    let secs = format!("{}.{:03}", rest / 1000, rest % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    if minutes > 0 {
        format!("{minutes}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

impl PodRuntime {
    /// The container's image and its unpacked layers (lowest first), pulled if its policy
    /// says so; or the waiting state upstream reports when it cannot have them. Records
    /// the image events (`Pulled ... already present on machine` included).
    pub(crate) async fn image_for(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<(Image, Vec<PathBuf>), ContainerState> {
        let waiting = |reason: &str, message: String| ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        let image_name = c.image.clone().unwrap_or_default();
        let key = format!("{}/{image_name}", pod.uid().unwrap_or_default());
        if let Err(e) = Reference::parse(&image_name) {
            let message = format!("Failed to apply default image tag {image_name:?}: {e}");
            if self.image_pulls.report_once(&key) {
                self.image_event(pod, c, "Warning", "InspectFailed", &message)
                    .await;
            }
            return Err(waiting("InvalidImageName", message));
        }
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_policy(&image_name).to_string());
        let images = self.images.clone();
        let lookup = image_name.clone();
        let present = blocking(move || images.resolve(&lookup))
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| waiting("ErrImagePull", e))?;
        let must_pull = match policy.as_str() {
            "Never" => false,
            "IfNotPresent" => present.is_none(),
            _ => !present.as_ref().is_some_and(|i| i.pinned),
        };
        let image = match (must_pull, present) {
            (false, Some(image)) => {
                let message =
                    format!("Container image \"{image_name}\" already present on machine");
                self.image_event(pod, c, "Normal", "Pulled", &message).await;
                image
            }
            (false, None) => {
                let message = format!(
                    "Container image \"{image_name}\" is not present with pull policy of Never"
                );
                if self.image_pulls.report_once(&key) {
                    self.image_event(pod, c, "Warning", "ErrImageNeverPull", &message)
                        .await;
                    self.image_event(pod, c, "Warning", "Failed", "Error: ErrImageNeverPull")
                        .await;
                }
                return Err(waiting("ErrImageNeverPull", message));
            }
            (true, _) => self.pull(pod, c, &image_name, &key).await?,
        };
        let images = self.images.clone();
        let unpack_image = image.clone();
        let layers = blocking(move || images.unpack(&unpack_image))
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| waiting("ErrImagePull", e))?;
        if let Ok(mut ids) = self.image_ids.0.lock() {
            ids.insert(image_name, image.id.to_string());
        }
        Ok((image, layers))
    }

    /// Pulls `image_name` for a container, honouring the back-off of earlier failures.
    async fn pull(
        &self,
        pod: &Pod,
        c: &Container,
        image_name: &str,
        key: &str,
    ) -> Result<Image, ContainerState> {
        let waiting = |reason: &str, message: String| ContainerState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        if let Some(first) = self.image_pulls.backing_off(key) {
            let message = format!("Back-off pulling image \"{image_name}\"");
            if first {
                self.image_event(pod, c, "Normal", "BackOff", &message)
                    .await;
                self.image_event(pod, c, "Warning", "Failed", "Error: ImagePullBackOff")
                    .await;
            }
            return Err(waiting("ImagePullBackOff", message));
        }
        let credentials = self.pull_credentials(pod, image_name).await;
        self.image_event(
            pod,
            c,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image_name}\""),
        )
        .await;
        let asked = Instant::now();
        let lock = self.image_pulls.lock_for(image_name);
        let guard = lock.lock().await;
        let started = Instant::now();
        let images = self.images.clone();
        let registries_file = self.registries_file();
        let name = image_name.to_string();
        let result = blocking(move || pull_with(&images, &name, &registries_file, credentials))
            .await
            .unwrap_or_else(Err);
        let pulled_in = started.elapsed();
        drop(guard);
        match result {
            Ok(image) => {
                self.image_pulls.succeeded(key);
                let message = format!(
                    "Successfully pulled image \"{image_name}\" in {} ({} including waiting). Image size: {} bytes.",
                    go_duration(pulled_in),
                    go_duration(asked.elapsed()),
                    image.size
                );
                self.image_event(pod, c, "Normal", "Pulled", &message).await;
                Ok(image)
            }
            Err(e) => {
                self.image_pulls.failed(key);
                self.image_event(
                    pod,
                    c,
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image \"{image_name}\": {e}"),
                )
                .await;
                self.image_event(pod, c, "Warning", "Failed", "Error: ErrImagePull")
                    .await;
                Err(waiting("ErrImagePull", e))
            }
        }
    }

    /// `<data-dir>/registries.yaml`: beside the image store (`<data-dir>/images`).
    fn registries_file(&self) -> PathBuf {
        self.images
            .root()
            .parent()
            .unwrap_or(self.images.root())
            .join("registries.yaml")
    }

    /// The credentials the pod's `imagePullSecrets` hold for `image`, most specific first.
    /// Missing or malformed secrets are skipped (logged), as the kubelet does.
    async fn pull_credentials(&self, pod: &Pod, image: &str) -> Vec<Credentials> {
        let Ok(reference) = Reference::parse(image) else {
            return Vec::new();
        };
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut out = Vec::new();
        let names = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        for r in names {
            let name = r.name;
            let secret = match api.get_opt(&name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::warn!(
                        "pod {}/{} names image pull secret {name:?}, which does not exist",
                        ns,
                        pod.name_any()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("failed to get image pull secret {ns}/{name}: {e}");
                    continue;
                }
            };
            let key = match secret.type_.as_deref() {
                Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
                Some("kubernetes.io/dockercfg") => ".dockercfg",
                _ => continue,
            };
            let Some(data) = secret.data.as_ref().and_then(|d| d.get(key)) else {
                continue;
            };
            match docker_config_credentials(&data.0, &reference.repository) {
                Ok(found) => {
                    for creds in found {
                        if !out.contains(&creds) {
                            out.push(creds);
                        }
                    }
                }
                Err(e) => tracing::warn!("image pull secret {ns}/{name}: {e}"),
            }
        }
        out
    }

    async fn image_event(&self, pod: &Pod, c: &Container, kind: &str, reason: &str, message: &str) {
        crate::events::record(
            &self.client,
            &self.node_name,
            pod,
            &c.name,
            kind,
            reason,
            message,
        )
        .await;
    }
}

/// Pulls `image` with each of `credentials` in turn (anonymously when there are none) until
/// one works, as the kubelet tries pull secrets; returns the stored image.
fn pull_with(
    store: &berth_images::ImageStore,
    image: &str,
    registries_file: &std::path::Path,
    credentials: Vec<Credentials>,
) -> Result<Image, String> {
    let registries =
        berth_images::RegistriesConfig::load(registries_file).map_err(|e| e.to_string())?;
    let attempts: Vec<Option<Credentials>> = if credentials.is_empty() {
        vec![None]
    } else {
        credentials.into_iter().map(Some).collect()
    };
    let mut errors: Vec<ImageError> = Vec::new();
    for credentials in attempts {
        let options = berth_images::PullOptions {
            registries: registries.clone(),
            credentials,
            progress: None,
        };
        match store.pull(image, &options) {
            Ok(pulled) => {
                let id = pulled.image.id.to_string();
                return match store.resolve(&id) {
                    Ok(Some(image)) => Ok(image),
                    Ok(None) => Err(format!("pulled image {id} is not in the store")),
                    Err(e) => Err(e.to_string()),
                };
            }
            Err(e) => errors.push(e),
        }
    }
    // The last error, like the kubelet's when every secret failed.
    Err(errors
        .pop()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "no pull was attempted".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_backoff_is_upstreams() {
        assert_eq!(pull_backoff(1), Duration::from_secs(10));
        assert_eq!(pull_backoff(2), Duration::from_secs(20));
        assert_eq!(pull_backoff(4), Duration::from_secs(80));
        assert_eq!(pull_backoff(6), Duration::from_secs(300));
        assert_eq!(pull_backoff(60), Duration::from_secs(300));
    }

    #[test]
    fn back_off_is_reported_once_per_period() {
        let pulls = ImagePulls::default();
        assert_eq!(pulls.backing_off("u/x"), None);
        pulls.failed("u/x");
        assert_eq!(pulls.backing_off("u/x"), Some(true));
        assert_eq!(pulls.backing_off("u/x"), Some(false));
        pulls.succeeded("u/x");
        assert_eq!(pulls.backing_off("u/x"), None);
        pulls.failed("v/y");
        assert_eq!(pulls.backing_off("u/x"), None);
        assert_eq!(pulls.backing_off("v/y"), Some(true));
        assert!(pulls.report_once("w/z"));
        assert!(!pulls.report_once("w/z"));
    }

    #[test]
    fn defaults_and_durations_read_like_upstream() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("busybox:latest"), "Always");
        assert_eq!(default_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_policy("127.0.0.1:5000/x/y"), "Always");
        assert_eq!(default_policy("127.0.0.1:5000/x/y:v1"), "IfNotPresent");
        assert_eq!(default_policy("x@sha256:abc"), "IfNotPresent");
        assert_eq!(go_duration(Duration::from_millis(547)), "547ms");
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(go_duration(Duration::from_millis(3000)), "3s");
        assert_eq!(go_duration(Duration::from_millis(61_500)), "1m1.5s");
        assert!(is_image_state(&ContainerState::Waiting {
            reason: "ImagePullBackOff".into(),
            message: None
        }));
        assert!(!is_image_state(&ContainerState::Waiting {
            reason: "RunContainerError".into(),
            message: None
        }));
    }
}
