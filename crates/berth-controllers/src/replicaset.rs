//! The ReplicaSet controller: keeps `spec.replicas` pods from the template (created in
//! slow-start batches, extra ones deleted in upstream's order), adopts matching orphans and
//! releases pods that stop matching, and reports replicas, fully labeled, ready and
//! available pods and the `ReplicaFailure` condition in the status.

use crate::cache::{Cache, Change, Informer};
use crate::pods::{self, Events, Expectations};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, PostParams};
use kube::core::SelectorExt;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The most pods created or deleted in one sync (upstream's burstReplicas).
pub const BURST_REPLICAS: usize = 500;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for ReplicaSet {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
    #[error("failed to encode ReplicaSet {0}: {1}")]
    Encode(String, serde_json::Error),
    #[error("failed to manage the pods of ReplicaSet {0}: {1}")]
    Manage(String, String),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source))
    }
}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<Queue<String>>,
    expectations: Arc<Expectations>,
    events: Events,
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The ReplicaSets (in the pod's namespace) whose selector matches an orphan pod.
fn matching_replicasets(rs: &Informer<ReplicaSet>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = pod.labels().clone();
    rs.list_namespace(&ns)
        .into_iter()
        .filter(|r| {
            pods::selector_of(r.spec.as_ref().map(|s| &s.selector))
                .is_some_and(|s| s.matches(&labels))
        })
        .map(|r| key(&ns, &r.name_any()))
        .collect()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        replicasets: cache.informer(),
        pods: cache.informer(),
        queue: Queue::new(),
        expectations: Arc::new(Expectations::default()),
        events: Events::new(cache.client().clone(), "replicaset-controller"),
    });
    let (q, exp) = (c.queue.clone(), c.expectations.clone());
    c.replicasets.subscribe(move |change| {
        let rs = change.object();
        let k = key(&rs.namespace().unwrap_or_default(), &rs.name_any());
        if let Change::Deleted(_) = change {
            exp.forget(&k);
        }
        q.add(k);
    });
    let (q, exp, rs) = (
        c.queue.clone(),
        c.expectations.clone(),
        c.replicasets.clone(),
    );
    c.pods.subscribe(move |change| {
        let pod_key = key(
            &change.object().namespace().unwrap_or_default(),
            &change.object().name_any(),
        );
        match change {
            Change::Applied { old, new } => {
                let owner = pods::controller_key::<ReplicaSet>(&new.metadata);
                let was_deleting = old
                    .as_ref()
                    .is_some_and(|o| o.metadata.deletion_timestamp.is_some());
                if new.metadata.deletion_timestamp.is_some() {
                    // A pod being deleted counts as deleted (upstream does the same).
                    if !was_deleting {
                        if let Some(k) = &owner {
                            exp.deletion_observed(k, &pod_key);
                        }
                    }
                } else if old.is_none() {
                    if let Some(k) = &owner {
                        exp.creation_observed(k);
                    }
                }
                match &owner {
                    Some(k) => q.add(k.clone()),
                    None => {
                        for k in matching_replicasets(&rs, new) {
                            q.add(k);
                        }
                    }
                }
                if let Some(old) = old {
                    let old_owner = pods::controller_key::<ReplicaSet>(&old.metadata);
                    if old_owner != owner {
                        if let Some(k) = old_owner {
                            q.add(k);
                        }
                    }
                    if owner.is_none() && old.labels() != new.labels() {
                        for k in matching_replicasets(&rs, old) {
                            q.add(k);
                        }
                    }
                }
            }
            Change::Deleted(pod) => {
                if let Some(k) = pods::controller_key::<ReplicaSet>(&pod.metadata) {
                    exp.deletion_observed(&k, &pod_key);
                    q.add(k);
                }
            }
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.replicasets.wait_synced().await;
    c.pods.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "replicaset",
        queue,
        4,
        move |k: String| c.clone().reconcile(k),
        stop,
    )
    .await;
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    async fn reconcile(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = split(&k);
        let Some(rs) = self.replicasets.get(ns, name) else {
            self.expectations.forget(&k);
            return Ok(None);
        };
        let spec = rs.spec.clone().unwrap_or_default();
        let selector = pods::selector_of(Some(&spec.selector));
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        // Read the expectations before the cache: a creation seen in between only makes
        // the decision more conservative.
        let satisfied = self.expectations.satisfied(&k);
        let active = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| pods::is_active(p));
        let claim = pods::claim(&uid, deleting, selector.as_ref(), active);
        let pod_api: Api<Pod> = Api::namespaced(self.cache.client().clone(), ns);
        let mut owned = claim.owned;
        if !claim.adopt.is_empty() && self.can_adopt(&rs).await? {
            let owner = pods::controller_ref(rs.as_ref());
            for p in &claim.adopt {
                if let Some(adopted) = pods::adopt(&pod_api, p, &owner)
                    .await
                    .map_err(Self::api_err("adopt a pod", &k))?
                {
                    owned.push(Arc::new(adopted));
                }
            }
        }
        for p in &claim.release {
            pods::release(&pod_api, p, &uid)
                .await
                .map_err(Self::api_err("release a pod", &k))?;
        }

        let mut manage_err = None;
        if satisfied && !deleting {
            manage_err = self.manage_replicas(&k, &rs, &owned, &pod_api).await.err();
        }
        let now = Utc::now();
        let status = calculate_status(&rs, &owned, manage_err.as_ref(), now);
        if rs.status.as_ref() != Some(&status) {
            let mut updated = (*rs).clone();
            updated.status = Some(status);
            updated.metadata.managed_fields = None;
            // This controller is the only writer of the status, computed from the pods: no
            // need to conflict with spec or metadata changes made meanwhile.
            updated.metadata.resource_version = None;
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.clone(), e))?;
            let api: Api<ReplicaSet> = Api::namespaced(self.cache.client().clone(), ns);
            match api.replace_status(name, &PostParams::default(), body).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(Self::api_err("update the status", &k)(e)),
            }
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        // Ready pods become available after minReadySeconds without any event: look again then.
        let next = owned
            .iter()
            .filter_map(|p| pods::until_available(p, spec.min_ready_seconds.unwrap_or(0), now))
            .min();
        Ok(next.map(|d| d + Duration::from_millis(100)))
    }

    /// Adoption only by a ReplicaSet that is not being deleted, checked against the API
    /// (the cache may not have seen the deletion yet).
    async fn can_adopt(&self, rs: &ReplicaSet) -> Result<bool, Error> {
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.cache.client().clone(), &ns);
        let fresh = api
            .get_opt(&rs.name_any())
            .await
            .map_err(Self::api_err("get", &key(&ns, &rs.name_any())))?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == rs.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    async fn manage_replicas(
        &self,
        k: &str,
        rs: &Arc<ReplicaSet>,
        owned: &[Arc<Pod>],
        api: &Api<Pod>,
    ) -> Result<(), Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let reference = rs.object_ref(&());
        if owned.len() < want {
            let n = (want - owned.len()).min(BURST_REPLICAS);
            self.expectations.expect_creations(k, n);
            let template = spec.template.clone().unwrap_or_default();
            let ns = rs.namespace().unwrap_or_default();
            let pod = pods::pod_from_template(
                &template,
                &ns,
                &format!("{}-", rs.name_any()),
                pods::controller_ref(rs.as_ref()),
            );
            let (created, failure) = slow_start_batch(n, |_| {
                let (api, pod, events, reference) = (
                    api.clone(),
                    pod.clone(),
                    self.events.clone(),
                    reference.clone(),
                );
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            events
                                .normal(
                                    &reference,
                                    "SuccessfulCreate",
                                    format!("Created pod: {}", p.name_any()),
                                )
                                .await;
                            Ok(())
                        }
                        Err(e) => {
                            events
                                .warning(&reference, "FailedCreate", format!("Error creating: {e}"))
                                .await;
                            Err(e.to_string())
                        }
                    }
                }
            })
            .await;
            // Creations that failed or never started will not be observed.
            for _ in created..n {
                self.expectations.creation_observed(k);
            }
            if let Some(e) = failure {
                return Err(Error::Manage(k.to_string(), e));
            }
        } else if owned.len() > want {
            let n = (owned.len() - want).min(BURST_REPLICAS);
            let related = self.related_pods(rs, owned);
            let victims = pods::pods_to_delete(owned, &related, n);
            pods::delete_pods(
                api,
                &self.events,
                &reference,
                &self.expectations,
                k,
                &victims,
            )
            .await
            .map_err(|e| Error::Manage(k.to_string(), e))?;
        }
        Ok(())
    }

    /// The active pods of every ReplicaSet sharing this one's controller (the Deployment's
    /// other ReplicaSets), to rank pods by how crowded their node is.
    fn related_pods(&self, rs: &ReplicaSet, owned: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let Some(owner) = pods::controller_of(&rs.metadata) else {
            return owned.to_vec();
        };
        let ns = rs.namespace().unwrap_or_default();
        let siblings: std::collections::HashSet<String> = self
            .replicasets
            .list_namespace(&ns)
            .into_iter()
            .filter(|r| pods::controller_of(&r.metadata).is_some_and(|o| o.uid == owner.uid))
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        self.pods
            .list_namespace(&ns)
            .into_iter()
            .filter(|p| pods::is_active(p))
            .filter(|p| pods::controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid)))
            .collect()
    }
}

/// Runs `n` calls of `f` in batches of 1, 2, 4, ... (upstream's slow start), stopping at the
/// first batch with a failure. Returns how many succeeded and the first failure.
pub async fn slow_start_batch<F, Fut>(n: usize, f: F) -> (usize, Option<String>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut done = 0;
    let mut batch = 1;
    while done < n {
        let size = batch.min(n - done);
        let results = futures::future::join_all((done..done + size).map(&f)).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let failure = results.into_iter().find_map(|r| r.err());
        done += size;
        if failure.is_some() {
            return (done - size + ok, failure);
        }
        batch *= 2;
    }
    (done, None)
}

/// The batch sizes slow start uses for `n` creations (for tests and docs).
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut done, mut batch) = (0, 1);
    while done < n {
        let size = batch.min(n - done);
        out.push(size);
        done += size;
        batch *= 2;
    }
    out
}

fn nonzero(n: usize) -> Option<i32> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (n != 0).then_some(n)
}

/// The status a ReplicaSet should have given its owned active pods.
pub fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    manage_err: Option<&Error>,
    now: k8s_openapi::chrono::DateTime<Utc>,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.labels();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| pods::is_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let failure = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
    match (manage_err, failure) {
        (Some(e), None) => {
            let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
            let reason = if owned.len() < want {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(match e {
                    Error::Manage(_, m) => m.clone(),
                    other => other.to_string(),
                }),
                last_transition_time: Some(Time(now)),
            });
        }
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    ReplicaSetStatus {
        replicas: i32::try_from(owned.len()).unwrap_or(i32::MAX),
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_doubles_batches() {
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(16), [1, 2, 4, 8, 1]);
    }

    #[tokio::test]
    async fn slow_start_stops_after_a_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, |i| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if i == 4 {
                    Err("quota".to_string())
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the third (indices 3..7) has the failure; nothing after it runs.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
        assert_eq!(ok, 6);
        assert_eq!(err.as_deref(), Some("quota"));
    }
}
