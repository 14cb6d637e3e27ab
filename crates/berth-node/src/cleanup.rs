//! Cleanup of what deleted pods left on the node: containers, sandboxes, pod cgroups, pod
//! directories and logs.

use crate::pods::{blocking, err, PodError, PodRuntime};
use berth_net::Sandbox;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use std::path::Path;
use std::time::Duration;

impl PodRuntime {
    /// Removes containers, sandboxes and pod directories of pods the API no longer has on
    /// this node (e.g. finished pods deleted at once, or pods deleted while the agent was
    /// down). `pods` is the node's watch of its pods.
    pub(crate) async fn cleanup_orphans(&self, pods: &Store<Pod>) -> Result<(), PodError> {
        // What exists on the node is read before the API is asked: anything of a pod the API
        // does not have afterwards belongs to a deleted pod (a new pod is in the API before
        // the node makes anything for it).
        let containers = self.containers.clone();
        let network = self.network.clone();
        let pods_dir = self.pods_dir.clone();
        let (ids, sandboxes, dirs) = blocking(move || {
            let dirs: Vec<String> = std::fs::read_dir(&pods_dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (
                containers.list(),
                Sandbox::list(&network).unwrap_or_default(),
                dirs,
            )
        })
        .await
        .map_err(|e| err("clean up", "*", e))?;
        // The watch is only a hint (it may lag, or not have listed yet): while everything on
        // the node belongs to a pod it has, there is nothing to clean and the API is not asked.
        let watched: std::collections::HashSet<String> =
            pods.state().iter().filter_map(|p| p.uid()).collect();
        if ids
            .iter()
            .map(|id| uid_of(id))
            .chain(sandboxes.iter().cloned())
            .chain(dirs.iter().cloned())
            .all(|uid| watched.contains(&uid))
        {
            return Ok(());
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp =
            kube::api::ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
        let live: std::collections::HashSet<String> = api
            .list(&lp)
            .await
            .map_err(|e| err("list pods", "*", e))?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        self.sources.forget_pods(|uid| live.contains(uid));
        let containers = self.containers.clone();
        let network = self.network.clone();
        let pods_dir = self.pods_dir.clone();
        let logs_dir = self.logs_dir.clone();
        blocking(move || {
            let mut orphans: std::collections::HashSet<String> = std::collections::HashSet::new();
            for id in ids.iter().filter(|id| !live.contains(&uid_of(id))) {
                let _ = containers.stop(id, libc::SIGKILL, Duration::from_secs(1));
                if let Err(e) = containers.remove(id) {
                    tracing::warn!(container = %id, "failed to remove an orphaned container: {e}");
                }
                orphans.insert(uid_of(id));
            }
            orphans.extend(
                sandboxes
                    .into_iter()
                    .chain(dirs)
                    .filter(|uid| !live.contains(uid)),
            );
            for uid in orphans {
                if let Err(e) = Sandbox::destroy(&network, &uid) {
                    tracing::warn!(pod_uid = %uid, "failed to destroy an orphaned sandbox: {e}");
                }
                let _ = berth_runtime::cgroup::remove_cgroup(
                    &format!("/berth/pod{uid}"),
                    containers.cgroup_mode(),
                );
                // Volume mounts (tmpfs, subPaths) go before the directory.
                if let Err(e) = crate::mounts::remove_pod_dir(&pods_dir.join(&uid)) {
                    tracing::warn!(pod_uid = %uid, "failed to remove an orphaned pod directory: {e}");
                }
                remove_logs(&logs_dir, &uid);
            }
        })
        .await
        .map_err(|e| err("clean up", "*", e))
    }
}

/// The pod uid of a container id (`<pod-uid>-<container>-<attempt>`; a uid is 36 characters).
fn uid_of(id: &str) -> String {
    id.get(..36).unwrap_or_default().to_string()
}

/// Removes a deleted pod's log directory (`<ns>_<name>_<uid>`).
pub(crate) fn remove_logs(logs_dir: &Path, uid: &str) {
    let suffix = format!("_{uid}");
    if let Ok(entries) = std::fs::read_dir(logs_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
