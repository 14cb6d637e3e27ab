//! The PodDisruptionBudget controller (upstream's disruption controller): for each budget
//! it counts the pods its selector picks, the healthy (Ready, not being deleted, not just
//! evicted) ones, the pods expected (the scale of their controllers for `maxUnavailable`
//! and percentages), and reports `currentHealthy`, `desiredHealthy`, `expectedPods`,
//! `disruptionsAllowed`, `disruptedPods` (evictions not yet seen through) and the
//! `DisruptionAllowed` condition in the budget's status.

use crate::cache::{Cache, Change, Informer};
use crate::pods::{self, Events};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind, SelectorExt};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long an eviction recorded in `disruptedPods` keeps its pod out of the healthy count
/// while the pod is not seen being deleted (upstream's DeletionTimeout).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition saying whether a disruption is allowed.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for PodDisruptionBudget {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
    #[error("failed to encode PodDisruptionBudget {0}: {1}")]
    Encode(String, serde_json::Error),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source))
    }
}

/// Why the expected pod count could not be found (the budget then allows nothing).
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("failed to read the scale of {kind} {name}: {source}")]
    Scale {
        kind: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    Percent(String),
}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    statefulsets: Arc<Informer<StatefulSet>>,
    queue: Arc<Queue<String>>,
    events: Events,
}

/// The budgets in the pod's namespace whose selector picks it.
fn budgets_of(budgets: &Informer<PodDisruptionBudget>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    budgets
        .list_namespace(&ns)
        .into_iter()
        .filter(|b| {
            pods::selector_of(b.spec.as_ref().and_then(|s| s.selector.as_ref()))
                .is_some_and(|s| s.matches(pod.labels()))
        })
        .map(|b| key(&ns, &b.name_any()))
        .collect()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        budgets: cache.informer(),
        pods: cache.informer(),
        replicasets: cache.informer(),
        deployments: cache.informer(),
        statefulsets: cache.informer(),
        queue: Queue::new(),
        events: Events::new(cache.client().clone(), "controllermanager"),
    });
    let q = c.queue.clone();
    c.budgets.subscribe(move |change| {
        let b = change.object();
        q.add(key(&b.namespace().unwrap_or_default(), &b.name_any()));
    });
    let (q, budgets) = (c.queue.clone(), c.budgets.clone());
    c.pods.subscribe(move |change| {
        let mut keys = budgets_of(&budgets, change.object());
        if let Change::Applied { old: Some(old), .. } = change {
            keys.extend(budgets_of(&budgets, old));
        }
        for k in keys {
            q.add(k);
        }
    });
    // The scale of the pods' controllers sets the expected count.
    let namespace_budgets = |c: &Arc<Controller>| {
        let (q, budgets) = (c.queue.clone(), c.budgets.clone());
        move |ns: String| {
            for b in budgets.list_namespace(&ns) {
                q.add(key(&ns, &b.name_any()));
            }
        }
    };
    let requeue = namespace_budgets(&c);
    c.replicasets
        .subscribe(move |change| requeue(change.object().namespace().unwrap_or_default()));
    let requeue = namespace_budgets(&c);
    c.deployments
        .subscribe(move |change| requeue(change.object().namespace().unwrap_or_default()));
    let requeue = namespace_budgets(&c);
    c.statefulsets
        .subscribe(move |change| requeue(change.object().namespace().unwrap_or_default()));
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.budgets.wait_synced().await;
    c.pods.wait_synced().await;
    c.replicasets.wait_synced().await;
    c.deployments.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "disruption",
        queue,
        2,
        move |k: String| c.clone().reconcile(k),
        stop,
    )
    .await;
}

/// `value` of `total` for an int or a percentage, rounded up (upstream's
/// `GetScaledValueFromIntOrPercent` with roundUp).
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, ScaleError> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| ScaleError::Percent(s.clone()))?;
            let v = (p * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// The counts a budget's status reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub expected: i32,
    pub desired_healthy: i32,
    pub current_healthy: i32,
}

impl Counts {
    /// Disruptions the budget allows now.
    pub fn disruptions_allowed(&self) -> i32 {
        let allowed = self.current_healthy - self.desired_healthy;
        if self.expected <= 0 || allowed <= 0 {
            0
        } else {
            allowed
        }
    }
}

/// Expected and desired healthy pods from the budget's spec: `pods` matched pods, and
/// `scale` the summed scale of their controllers (asked only when the spec needs it).
pub fn desired(
    min_available: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    pods: i32,
    scale: impl FnOnce() -> Result<i32, ScaleError>,
) -> Result<(i32, i32), ScaleError> {
    if let Some(max) = max_unavailable {
        let expected = scale()?;
        let max = scaled(max, expected)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match min_available {
        Some(IntOrString::Int(min)) => Ok((pods, *min)),
        Some(min) => {
            let expected = scale()?;
            Ok((expected, scaled(min, expected)?))
        }
        None => Ok((pods, 0)),
    }
}

/// The evictions still pending in `disruptedPods`: pods not yet being deleted whose
/// eviction is younger than the deletion timeout; and when the oldest one runs out.
pub fn pending_disruptions(
    recorded: &BTreeMap<String, Time>,
    pods: &[Arc<Pod>],
    now: DateTime<Utc>,
) -> (BTreeMap<String, Time>, Option<DateTime<Utc>>) {
    let timeout = k8s_openapi::chrono::Duration::from_std(DELETION_TIMEOUT).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut recheck: Option<DateTime<Utc>> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else {
            continue;
        };
        let expires = at.0 + timeout;
        if expires > now {
            out.insert(pod.name_any(), at.clone());
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        }
    }
    (out, recheck)
}

/// Ready pods not being deleted and not just evicted.
pub fn healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| pods::is_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Sets the `DisruptionAllowed` condition, moving its transition time only on a change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    let fresh = Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    match conditions
        .iter_mut()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
    {
        Some(c) => {
            let transition = if c.status == status {
                c.last_transition_time.clone()
            } else {
                Time(now)
            };
            *c = Condition {
                last_transition_time: transition,
                ..fresh
            };
        }
        None => conditions.push(fresh),
    }
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    async fn reconcile(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = k.split_once('/').unwrap_or(("", &k));
        let Some(pdb) = self.budgets.get(ns, name) else {
            return Ok(None);
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let selected: Vec<Arc<Pod>> = match pods::selector_of(spec.selector.as_ref()) {
            Some(sel) => self
                .pods
                .list_namespace(ns)
                .into_iter()
                .filter(|p| sel.matches(p.labels()))
                .collect(),
            None => Vec::new(),
        };
        let reference = pdb.object_ref(&());
        let now = Utc::now();
        let old = pdb.status.clone().unwrap_or_default();
        let generation = pdb.metadata.generation;
        let mut status = PodDisruptionBudgetStatus {
            observed_generation: generation,
            conditions: Some(old.conditions.clone().unwrap_or_default()),
            ..Default::default()
        };
        let pods_count = i32::try_from(selected.len()).unwrap_or(i32::MAX);
        let scale = self.expected_scale(&selected).await;
        let counted = desired(
            spec.min_available.as_ref(),
            spec.max_unavailable.as_ref(),
            pods_count,
            || scale,
        );
        let mut recheck = None;
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        match counted {
            Ok((expected, desired_healthy)) => {
                let (disrupted, next) = pending_disruptions(
                    &old.disrupted_pods.clone().unwrap_or_default(),
                    &selected,
                    now,
                );
                recheck = next;
                let counts = Counts {
                    expected,
                    desired_healthy,
                    current_healthy: healthy(&selected, &disrupted),
                };
                status.expected_pods = counts.expected;
                status.desired_healthy = counts.desired_healthy;
                status.current_healthy = counts.current_healthy;
                status.disruptions_allowed = counts.disruptions_allowed();
                status.disrupted_pods = (!disrupted.is_empty()).then_some(disrupted);
                let (ok, reason) = if status.disruptions_allowed > 0 {
                    (true, "SufficientPods")
                } else {
                    (false, "InsufficientPods")
                };
                set_condition(conditions, ok, reason, "", generation, now);
            }
            Err(e) => {
                // Fail safe: allow nothing while the expected count is unknown.
                self.events
                    .warning(
                        &reference,
                        "CalculateExpectedPodCountFailed",
                        format!("Failed to calculate the number of expected pods: {e}"),
                    )
                    .await;
                status.disrupted_pods = old.disrupted_pods.clone();
                status.expected_pods = old.expected_pods;
                status.current_healthy = old.current_healthy;
                status.desired_healthy = old.desired_healthy;
                status.disruptions_allowed = 0;
                set_condition(
                    conditions,
                    false,
                    "SyncFailed",
                    &e.to_string(),
                    generation,
                    now,
                );
            }
        }
        if pdb.status.as_ref() != Some(&status) {
            // Said when the status changes, not on every look at the budget.
            if selected.is_empty() {
                self.events
                    .normal(&reference, "NoPods", "No matching pods found".into())
                    .await;
            }
            let mut updated = (*pdb).clone();
            updated.metadata.managed_fields = None;
            updated.status = Some(status);
            // Guarded by the resourceVersion: an eviction may have taken a disruption since
            // the cache saw the budget.
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.clone(), e))?;
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.cache.client().clone(), ns);
            match api.replace_status(name, &PostParams::default(), body).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(Self::api_err("update the status", &k)(e)),
            }
        }
        Ok(recheck
            .and_then(|at| (at - now).to_std().ok())
            .map(|d| d + Duration::from_millis(100)))
    }

    /// The summed scale of the controllers of `pods` (a Deployment for the pods of its
    /// ReplicaSets); pods without a controller do not count.
    async fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<i32, ScaleError> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        for pod in pods {
            let Some(owner) = pods::controller_of(&pod.metadata) else {
                continue;
            };
            if seen.insert(owner.uid.clone(), ()).is_some() {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let (uid, scale) = self
                .controller_scale(owner, &ns)
                .await?
                .ok_or_else(|| ScaleError::NoController(pod.name_any()))?;
            scales.insert(uid, scale);
        }
        Ok(scales.values().sum())
    }

    /// The uid and scale of the controller `owner` names (upstream's finders): the cache for
    /// ReplicaSets, Deployments and StatefulSets, the scale subresource for other kinds.
    async fn controller_scale(
        &self,
        owner: &OwnerReference,
        ns: &str,
    ) -> Result<Option<(String, i32)>, ScaleError> {
        let same = |uid: Option<&String>| uid == Some(&owner.uid);
        match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let Some(rs) = self.replicasets.get(ns, &owner.name) else {
                    return Ok(None);
                };
                if !same(rs.metadata.uid.as_ref()) {
                    return Ok(None);
                }
                if let Some(d) = pods::controller_of(&rs.metadata)
                    .filter(|r| r.kind == "Deployment" && r.api_version == "apps/v1")
                {
                    if let Some(dep) = self.deployments.get(ns, &d.name) {
                        if dep.metadata.uid.as_ref() == Some(&d.uid) {
                            let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                            return Ok(Some((d.uid.clone(), replicas)));
                        }
                    }
                }
                let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok(Some((owner.uid.clone(), replicas)))
            }
            ("apps/v1", "Deployment") => Ok(self
                .deployments
                .get(ns, &owner.name)
                .filter(|d| same(d.metadata.uid.as_ref()))
                .map(|d| {
                    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    (owner.uid.clone(), replicas)
                })),
            ("apps/v1", "StatefulSet") => Ok(self
                .statefulsets
                .get(ns, &owner.name)
                .filter(|s| same(s.metadata.uid.as_ref()))
                .map(|s| {
                    let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    (owner.uid.clone(), replicas)
                })),
            (api_version, kind) => {
                let Some(r) = berth_api::registry::find_kind(api_version, kind) else {
                    return Ok(None);
                };
                if !r.subresources.scale {
                    return Ok(None);
                }
                let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
                let ar = ApiResource::from_gvk_with_plural(&gvk, r.plural);
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.cache.client().clone(), ns, &ar);
                let scale = match api.get_subresource("scale", &owner.name).await {
                    Ok(s) => s,
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                    Err(source) => {
                        return Err(ScaleError::Scale {
                            kind: kind.into(),
                            name: owner.name.clone(),
                            source: Box::new(source),
                        })
                    }
                };
                if !same(scale.metadata.uid.as_ref()) {
                    return Ok(None);
                }
                let replicas = scale
                    .data
                    .pointer("/spec/replicas")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0);
                Ok(Some((
                    owner.uid.clone(),
                    i32::try_from(replicas).unwrap_or(i32::MAX),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn ok(i: i32) -> impl FnOnce() -> Result<i32, ScaleError> {
        move || Ok(i)
    }

    #[test]
    fn budgets_count_as_upstream() {
        // minAvailable as a number counts the matched pods.
        assert_eq!(desired(Some(&int(1)), None, 2, ok(5)).ok(), Some((2, 1)));
        // Percentages round up against the controllers' scale.
        assert_eq!(
            desired(Some(&pct("50%")), None, 2, ok(3)).ok(),
            Some((3, 2))
        );
        assert_eq!(
            desired(None, Some(&pct("30%")), 2, ok(10)).ok(),
            Some((10, 7))
        );
        assert_eq!(desired(None, Some(&int(1)), 3, ok(3)).ok(), Some((3, 2)));
        // maxUnavailable 0: every pod must stay.
        assert_eq!(desired(None, Some(&int(0)), 2, ok(2)).ok(), Some((2, 2)));
        // Never below zero.
        assert_eq!(desired(None, Some(&int(5)), 2, ok(2)).ok(), Some((2, 0)));
        assert!(desired(None, Some(&pct("x")), 2, ok(2)).is_err());
        let c = Counts {
            expected: 2,
            desired_healthy: 1,
            current_healthy: 2,
        };
        assert_eq!(c.disruptions_allowed(), 1);
        let none = Counts {
            expected: 0,
            desired_healthy: 0,
            current_healthy: 0,
        };
        assert_eq!(none.disruptions_allowed(), 0);
        let short = Counts {
            expected: 2,
            desired_healthy: 2,
            current_healthy: 1,
        };
        assert_eq!(short.disruptions_allowed(), 0);
    }

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then(|| Time(Utc::now())),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn evicted_pods_leave_the_healthy_count_until_deleted_or_timed_out() {
        let now = Utc::now();
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, true),
            pod("d", false, false),
            pod("e", true, false),
        ];
        let mut recorded = BTreeMap::new();
        recorded.insert("a".to_string(), Time(now));
        recorded.insert("c".to_string(), Time(now));
        recorded.insert(
            "e".to_string(),
            Time(now - k8s_openapi::chrono::Duration::seconds(600)),
        );
        recorded.insert("gone".to_string(), Time(now));
        let (pending, recheck) = pending_disruptions(&recorded, &pods, now);
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["a"]);
        assert!(recheck.is_some_and(|r| r > now));
        // b and e are healthy; a was just evicted, c is being deleted, d is not ready.
        assert_eq!(healthy(&pods, &pending), 2);
    }

    #[test]
    fn the_condition_moves_only_on_change() {
        let t0 = Utc::now();
        let mut cs = Vec::new();
        set_condition(&mut cs, true, "SufficientPods", "", Some(1), t0);
        let later = t0 + k8s_openapi::chrono::Duration::seconds(5);
        set_condition(&mut cs, true, "SufficientPods", "", Some(2), later);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert_eq!(cs[0].observed_generation, Some(2));
        set_condition(&mut cs, false, "InsufficientPods", "", Some(2), later);
        assert_eq!(cs[0].last_transition_time, Time(later));
        assert_eq!(cs[0].status, "False");
    }
}
