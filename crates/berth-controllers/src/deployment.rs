//! The Deployment controller: one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`),
//! rolled out with RollingUpdate (maxSurge/maxUnavailable, minReadySeconds) or Recreate,
//! proportional scaling of every active ReplicaSet, pause/resume, revisions (and rollback by
//! template, as `kubectl rollout undo` does it), `revisionHistoryLimit` cleanup, the
//! `Progressing` (with `progressDeadlineSeconds`) and `Available` conditions and the status
//! counts, as upstream's controller does.

use crate::cache::{Cache, Change, Informer};
use crate::pods::{self, canonical, fnv32a, safe_encode, Events};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::SelectorExt;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// The longest `revision-history` annotation kept (upstream's limit).
const REVISION_HISTORY_CHARS: usize = 2000;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for Deployment {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: Box<kube::Error>,
    },
    #[error("failed to encode Deployment {0}: {1}")]
    Encode(String, serde_json::Error),
    #[error("invalid rolling update parameters of Deployment {0}: {1}")]
    Invalid(String, String),
    #[error("hash collision for ReplicaSet {0}: collisionCount raised to {1}")]
    Collision(String, i32),
}

// ---------------------------------------------------------------------------------------
// Arithmetic of rollouts (pure, as upstream's deployment utilities).

/// An int-or-percent against `total`: percentages round up when `round_up` (maxSurge)
/// and down otherwise (maxUnavailable).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err(format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"));
            };
            let p: i64 = p
                .parse()
                .map_err(|_| format!("invalid value {s:?}: not a percentage"))?;
            let scaled = p * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| format!("value {s:?} out of range"))
        }
    }
}

/// maxSurge and maxUnavailable as pod counts for `desired` replicas; both zero is not
/// allowed to stall a rollout, so maxUnavailable becomes 1 then (upstream's fenceposts).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let default = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&default), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&default), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired(d),
    )
    .unwrap_or((0, 1))
}

/// The Deployment's desired replicas.
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// How many pods above `replicas` a rolling update may run.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// How many of `replicas` a rolling update may have unavailable.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || desired(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired(d))
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn sum(rss: &[&ReplicaSet], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(|r| f(r)).sum()
}

/// The replicas the new ReplicaSet may have now (upstream's NewRSNewReplicas).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return desired(d);
    }
    if replicas(new) == desired(d) {
        return replicas(new);
    }
    let current = sum(all, replicas);
    let max_total = desired(d) + max_surge(d);
    if current >= max_total {
        return replicas(new);
    }
    let up = (max_total - current).min(desired(d) - replicas(new));
    replicas(new) + up
}

/// The `pod-template-hash` of a template: FNV-32a of the template (its canonical JSON), then
/// of the collisionCount as 8 little-endian bytes when set, rendered in decimal and safe
/// encoded, as upstream's ComputeHash.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical(
        &serde_json::to_value(template).unwrap_or(Value::Null),
        &mut text,
    );
    let mut h = fnv32a(0x811c_9dc5, text.as_bytes());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from_ne_bytes(c.to_ne_bytes()).to_le_bytes());
        h = fnv32a(h, &bytes);
    }
    safe_encode(&h.to_string())
}

/// Templates equal once the `pod-template-hash` label is ignored.
pub fn equal_ignore_hash(a: Option<&PodTemplateSpec>, b: Option<&PodTemplateSpec>) -> bool {
    let strip = |t: Option<&PodTemplateSpec>| {
        let mut t = t.cloned().unwrap_or_default();
        if let Some(m) = t.metadata.as_mut() {
            if let Some(l) = m.labels.as_mut() {
                l.remove(POD_TEMPLATE_HASH);
                if l.is_empty() {
                    m.labels = None;
                }
            }
            if *m == ObjectMeta::default() {
                t.metadata = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

fn annotation<'a>(meta: &'a ObjectMeta, k: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(k).map(String::as_str)
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn set_annotation(meta: &mut ObjectMeta, k: &str, v: &str) -> bool {
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    if a.get(k).map(String::as_str) == Some(v) {
        return false;
    }
    a.insert(k.into(), v.into());
    true
}

/// desired-replicas and max-replicas on a ReplicaSet; true if they changed.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = set_annotation(&mut rs.metadata, DESIRED_REPLICAS, &desired.to_string());
    let b = set_annotation(&mut rs.metadata, MAX_REPLICAS, &max.to_string());
    a || b
}

fn skip_copy(k: &str) -> bool {
    matches!(
        k,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// The Deployment's annotations copied to its new ReplicaSet, the revision raised (keeping
/// the old one in revision-history, as after a rollback) and, for a ReplicaSet about to be
/// created, the replica annotations. True if anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !skip_copy(k) && set_annotation(&mut rs.metadata, k, v) {
            changed = true;
        }
    }
    let old = annotation(&rs.metadata, REVISION).map(str::to_string);
    let old_int: i64 = match old.as_deref().map(str::parse) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return changed,
        None => 0,
    };
    let new_int: i64 = new_revision.parse().unwrap_or(0);
    if old_int < new_int {
        set_annotation(&mut rs.metadata, REVISION, new_revision);
        changed = true;
        if let Some(old) = old.as_deref() {
            let history = annotation(&rs.metadata, REVISION_HISTORY)
                .unwrap_or("")
                .to_string();
            let value = if history.is_empty() {
                Some(old.to_string())
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > REVISION_HISTORY_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                (total <= REVISION_HISTORY_CHARS).then(|| {
                    revs = revs.split_off(start);
                    revs.push(old);
                    revs.join(",")
                })
            };
            if let Some(v) = value {
                set_annotation(&mut rs.metadata, REVISION_HISTORY, &v);
            }
        }
    }
    if !exists && set_replicas_annotations(rs, desired(d), desired(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// How many replicas `rs` gains (or loses) when the Deployment scales by `to_add` while
/// `added` were already handed out (upstream's GetProportion).
pub fn proportion(
    d: &Deployment,
    rs: &ReplicaSet,
    to_add: i32,
    added: i32,
    status_replicas: i32,
) -> i32 {
    if replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(d, rs, status_replicas);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn replica_set_fraction(d: &Deployment, rs: &ReplicaSet, status_replicas: i32) -> i32 {
    if desired(d) == 0 {
        return -replicas(rs);
    }
    let deployment_replicas = desired(d) + max_surge(d);
    let annotated = annotation(&rs.metadata, MAX_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(status_replicas);
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    (size.round() as i32) - replicas(rs)
}

// ---------------------------------------------------------------------------------------
// Conditions.

fn condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn new_condition(
    t: &str,
    status: &str,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition; an unchanged status and reason keep the current one (and its times).
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(s, &c.type_.clone());
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(s: &mut DeploymentStatus, t: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|c| c.type_ != t);
        if c.is_empty() {
            s.conditions = None;
        }
    }
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn n(s: &DeploymentStatus, f: fn(&DeploymentStatus) -> Option<i32>) -> i32 {
    f(s).unwrap_or(0)
}

/// Every replica updated and available, for the current generation.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = desired(d);
    n(s, |s| s.updated_replicas) == want
        && n(s, |s| s.replicas) == want
        && n(s, |s| s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// The rollout moved since the last status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(&old, |s| s.replicas) - n(&old, |s| s.updated_replicas);
    let new_old = n(new, |s| s.replicas) - n(new, |s| s.updated_replicas);
    n(new, |s| s.updated_replicas) > n(&old, |s| s.updated_replicas)
        || new_old < old_old
        || n(new, |s| s.ready_replicas) > n(&old, |s| s.ready_replicas)
        || n(new, |s| s.available_replicas) > n(&old, |s| s.available_replicas)
}

fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now: DateTime<Utc>) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => return false,
        Some("ProgressDeadlineExceeded") => return true,
        _ => {}
    }
    let Some(from) = c.last_update_time.as_ref() else {
        return false;
    };
    from.0 + k8s_openapi::chrono::Duration::seconds(i64::from(deadline)) < now
}

fn nonzero(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// The Deployment's status from its ReplicaSets.
pub fn calculate_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: DateTime<Utc>,
) -> DeploymentStatus {
    let status_of =
        |rs: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>| {
            rs.status.as_ref().and_then(f).unwrap_or(0)
        };
    let available_count = sum(all, |r| status_of(r, |s| s.available_replicas));
    let total = sum(all, replicas);
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(sum(all, |r| status_of(r, |s| Some(s.replicas)))),
        updated_replicas: nonzero(new.map(|r| status_of(r, |s| Some(s.replicas))).unwrap_or(0)),
        ready_replicas: nonzero(sum(all, |r| status_of(r, |s| s.ready_replicas))),
        available_replicas: nonzero(available_count),
        unavailable_replicas: nonzero((total - available_count).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available_count >= desired(d) - max_unavailable(d) {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut s,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    s
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

// ---------------------------------------------------------------------------------------
// The controller.

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    deployments: Arc<Informer<Deployment>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<Queue<String>>,
    events: Events,
}

fn owner_deployment(rs: &ReplicaSet) -> Option<String> {
    let r = pods::controller_of(&rs.metadata)?;
    (r.kind == "Deployment" && r.api_version == "apps/v1")
        .then(|| key(&rs.namespace().unwrap_or_default(), &r.name))
}

fn matching_deployments(deployments: &Informer<Deployment>, rs: &ReplicaSet) -> Vec<String> {
    let ns = rs.namespace().unwrap_or_default();
    let labels = rs.labels().clone();
    deployments
        .list_namespace(&ns)
        .into_iter()
        .filter(|d| {
            pods::selector_of(d.spec.as_ref().map(|s| &s.selector))
                .is_some_and(|s| s.matches(&labels))
        })
        .map(|d| key(&ns, &d.name_any()))
        .collect()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        deployments: cache.informer(),
        replicasets: cache.informer(),
        pods: cache.informer(),
        queue: Queue::new(),
        events: Events::new(cache.client().clone(), "deployment-controller"),
    });
    let q = c.queue.clone();
    c.deployments.subscribe(move |change| {
        let d = change.object();
        q.add(key(&d.namespace().unwrap_or_default(), &d.name_any()));
    });
    let (q, deployments) = (c.queue.clone(), c.deployments.clone());
    c.replicasets.subscribe(move |change| {
        let rs = change.object();
        match owner_deployment(rs) {
            Some(k) => q.add(k),
            None => {
                for k in matching_deployments(&deployments, rs) {
                    q.add(k);
                }
            }
        }
        if let Change::Applied { old: Some(old), .. } = change {
            if owner_deployment(old) != owner_deployment(rs) {
                if let Some(k) = owner_deployment(old) {
                    q.add(k);
                }
            }
        }
    });
    // A Recreate rollout waits for the old pods to be gone.
    let (q, replicasets) = (c.queue.clone(), c.replicasets.clone());
    c.pods.subscribe(move |change| {
        if let Change::Deleted(pod) = change {
            let Some(r) = pods::controller_of(&pod.metadata) else {
                return;
            };
            if r.kind != "ReplicaSet" {
                return;
            }
            let ns = pod.namespace().unwrap_or_default();
            if let Some(k) = replicasets
                .get(&ns, &r.name)
                .and_then(|rs| owner_deployment(&rs))
            {
                q.add(k);
            }
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.deployments.wait_synced().await;
    c.replicasets.wait_synced().await;
    c.pods.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "deployment",
        queue,
        4,
        move |k: String| {
            let c = c.clone();
            async move { Sync::new(c, &k).reconcile().await }
        },
        stop,
    )
    .await;
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source.as_ref()))
    }
}

/// One reconcile of one Deployment: its current state and ReplicaSets, kept up to date
/// with every write so later steps see earlier ones.
struct Sync {
    c: Arc<Controller>,
    key: String,
    ns: String,
    name: String,
    d: Deployment,
    rss: Vec<ReplicaSet>,
    new: Option<usize>,
}

impl Sync {
    fn new(c: Arc<Controller>, k: &str) -> Self {
        let (ns, name) = k.split_once('/').unwrap_or(("", k));
        Sync {
            c,
            key: k.to_string(),
            ns: ns.to_string(),
            name: name.to_string(),
            d: Deployment::default(),
            rss: Vec::new(),
            new: None,
        }
    }

    fn err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> Error {
        let key = self.key.clone();
        move |source| Error::Api {
            what,
            key,
            source: Box::new(source),
        }
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.c.cache.client().clone(), &self.ns)
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.c.cache.client().clone(), &self.ns)
    }

    fn all(&self) -> Vec<&ReplicaSet> {
        self.rss.iter().collect()
    }

    fn old(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rss.len())
            .filter(|i| Some(*i) != self.new)
            .collect();
        idx.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        idx
    }

    fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.map(|i| &self.rss[i])
    }

    async fn reconcile(mut self) -> Result<Requeue, Error> {
        let Some(d) = self.c.deployments.get(&self.ns, &self.name) else {
            return Ok(None);
        };
        self.d = (*d).clone();
        self.d.metadata.managed_fields = None;
        let spec = self.d.spec.clone().unwrap_or_default();
        let Some(selector) = pods::selector_of(Some(&spec.selector)) else {
            // An empty selector would select every pod: upstream refuses to act on it.
            return Ok(None);
        };
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let claim = pods::claim(
            &uid,
            deleting,
            Some(&selector),
            self.c.replicasets.list_namespace(&self.ns),
        );
        let mut owned: Vec<ReplicaSet> = claim.owned.iter().map(|r| (**r).clone()).collect();
        if !claim.adopt.is_empty() && self.can_adopt().await? {
            let owner = pods::controller_ref(&self.d);
            for rs in &claim.adopt {
                if let Some(a) = pods::adopt(&self.rs_api(), rs.as_ref(), &owner)
                    .await
                    .map_err(self.err("adopt a ReplicaSet"))?
                {
                    owned.push(a);
                }
            }
        }
        for rs in &claim.release {
            pods::release(&self.rs_api(), rs.as_ref(), &uid)
                .await
                .map_err(self.err("release a ReplicaSet"))?;
        }
        for rs in owned.iter_mut() {
            rs.metadata.managed_fields = None;
        }
        owned.sort_by(by_creation);
        self.rss = owned;

        if deleting {
            self.find_new(false).await?;
            return self.sync_status().await;
        }
        self.check_paused_condition().await?;
        if spec.paused == Some(true) {
            return self.sync_scale().await;
        }
        if self.is_scaling_event().await? {
            return self.sync_scale().await;
        }
        if is_rolling(&self.d) {
            self.rollout_rolling().await
        } else {
            self.rollout_recreate().await
        }
    }

    async fn can_adopt(&self) -> Result<bool, Error> {
        let fresh = self
            .d_api()
            .get_opt(&self.name)
            .await
            .map_err(self.err("get"))?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == self.d.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    /// Finds (and with `create`, makes) the ReplicaSet of the current template, and keeps
    /// the revision annotations of it and the Deployment current.
    async fn find_new(&mut self, create: bool) -> Result<(), Error> {
        let template = self.d.spec.as_ref().map(|s| s.template.clone());
        self.new = self.rss.iter().position(|rs| {
            equal_ignore_hash(
                rs.spec.as_ref().and_then(|s| s.template.as_ref()),
                template.as_ref(),
            )
        });
        let max_old = self
            .old()
            .into_iter()
            .map(|i| revision(&self.rss[i]))
            .max()
            .unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let now = Utc::now();
        if let Some(i) = self.new {
            let mut rs = self.rss[i].clone();
            let annotations_changed = set_new_rs_annotations(&self.d, &mut rs, &new_revision, true);
            // Unset and 0 are the same minReadySeconds (defaulting may write either).
            let min_ready = self
                .d
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0);
            let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_changed || min_ready_changed {
                let patch = json!({
                    "metadata": {"annotations": rs.metadata.annotations},
                    "spec": {"minReadySeconds": min_ready},
                });
                self.rss[i] = self.patch_rs(&rs.name_any(), patch).await?;
            }
            let rev = annotation(&self.rss[i].metadata, REVISION)
                .unwrap_or("")
                .to_string();
            self.set_deployment_revision(&rev).await?;
            let mut status = self.d.status.clone().unwrap_or_default();
            if progress_deadline(&self.d).is_some() && condition(&status, "Progressing").is_none() {
                let msg = format!("Found new replica set \"{}\"", self.rss[i].name_any());
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", "FoundNewReplicaSet", msg, now),
                );
                self.write_status(status).await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let spec = self.d.spec.clone().unwrap_or_default();
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", self.name);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                owner_references: Some(vec![pods::controller_ref(&self.d)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let count = {
            let mut all = self.all();
            all.push(&rs);
            new_rs_new_replicas(&self.d, &all, &rs)
        };
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(count);
        }
        set_new_rs_annotations(&self.d, &mut rs, &new_revision, false);
        let mut already_exists = false;
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = self
                    .rs_api()
                    .get(&name)
                    .await
                    .map_err(self.err("get a ReplicaSet"))?;
                let ours = pods::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                if ours
                    && equal_ignore_hash(
                        existing.spec.as_ref().and_then(|s| s.template.as_ref()),
                        Some(&spec.template),
                    )
                {
                    already_exists = true;
                    existing
                } else {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    let c = status.collision_count.unwrap_or(0).saturating_add(1);
                    status.collision_count = Some(c);
                    self.write_status(status).await?;
                    return Err(Error::Collision(name, c));
                }
            }
            Err(e) => {
                if progress_deadline(&self.d).is_some() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    let msg = format!("Failed to create new replica set \"{name}\": {e}");
                    set_condition(
                        &mut status,
                        new_condition("Progressing", "False", "FailedRSCreate", msg, now),
                    );
                    self.write_status(status).await?;
                }
                return Err(self.err("create a ReplicaSet")(e));
            }
        };
        if !already_exists && count > 0 {
            let msg = format!("Scaled up replica set {name} from 0 to {count}");
            self.c
                .events
                .normal(&self.d.object_ref(&()), "ScalingReplicaSet", msg)
                .await;
        }
        self.rss.push(created);
        self.new = Some(self.rss.len() - 1);
        self.set_deployment_revision(&new_revision).await?;
        if !already_exists && progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            let msg = format!("Created new replica set \"{name}\"");
            set_condition(
                &mut status,
                new_condition("Progressing", "True", "NewReplicaSetCreated", msg, now),
            );
            self.write_status(status).await?;
        }
        Ok(())
    }

    async fn set_deployment_revision(&mut self, rev: &str) -> Result<(), Error> {
        if rev.is_empty() || annotation(&self.d.metadata, REVISION) == Some(rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        let d = self
            .d_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(self.err("set the revision"))?;
        self.d.metadata = d.metadata;
        self.d.metadata.managed_fields = None;
        Ok(())
    }

    async fn patch_rs(&self, name: &str, patch: Value) -> Result<ReplicaSet, Error> {
        let mut rs = self
            .rs_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(self.err("update a ReplicaSet"))?;
        rs.metadata.managed_fields = None;
        Ok(rs)
    }

    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.status = Some(status);
        let body = serde_json::to_vec(&d).map_err(|e| Error::Encode(self.key.clone(), e))?;
        let mut written = self
            .d_api()
            .replace_status(&self.name, &PostParams::default(), body)
            .await
            .map_err(self.err("update the status"))?;
        written.metadata.managed_fields = None;
        self.d = written;
        Ok(())
    }

    /// Scales ReplicaSet `i` to `to`, keeping its replica annotations current.
    async fn scale(&mut self, i: usize, to: i32) -> Result<bool, Error> {
        let mut rs = self.rss[i].clone();
        let from = replicas(&rs);
        let size_changed = from != to;
        let annotations_changed = set_replicas_annotations(
            &mut rs,
            desired(&self.d),
            desired(&self.d) + max_surge(&self.d),
        );
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: annotation(&rs.metadata, DESIRED_REPLICAS),
                MAX_REPLICAS: annotation(&rs.metadata, MAX_REPLICAS),
            }},
            "spec": {"replicas": to},
        });
        self.rss[i] = self.patch_rs(&rs.name_any(), patch).await?;
        if size_changed {
            let op = if from < to { "up" } else { "down" };
            let msg = format!(
                "Scaled {op} replica set {} from {from} to {to}",
                rs.name_any()
            );
            self.c
                .events
                .normal(&self.d.object_ref(&()), "ScalingReplicaSet", msg)
                .await;
        }
        Ok(size_changed)
    }

    async fn check_paused_condition(&mut self) -> Result<(), Error> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let now = Utc::now();
        if paused && reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                    now,
                ),
            );
        } else if !paused && reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    now,
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(status).await
    }

    async fn is_scaling_event(&mut self) -> Result<bool, Error> {
        self.find_new(false).await?;
        let want = desired(&self.d).to_string();
        Ok(self
            .rss
            .iter()
            .filter(|r| replicas(r) > 0)
            .any(|r| annotation(&r.metadata, DESIRED_REPLICAS).is_some_and(|v| v != want)))
    }

    /// Scaling (or a paused Deployment): spread the change over the active ReplicaSets.
    async fn sync_scale(&mut self) -> Result<Requeue, Error> {
        self.find_new(false).await?;
        self.scale_deployment().await?;
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup().await?;
        }
        self.sync_status().await
    }

    async fn scale_deployment(&mut self) -> Result<(), Error> {
        let want = desired(&self.d);
        let active: Vec<usize> = (0..self.rss.len())
            .filter(|i| replicas(&self.rss[*i]) > 0)
            .collect();
        // One active (or, with none, the newest) ReplicaSet simply takes the whole size.
        let only = match active.len() {
            0 => self.new.or_else(|| self.old().last().copied()),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = only {
            self.scale(i, want).await?;
            return Ok(());
        }
        if let Some(ni) = self.new {
            let nrs = &self.rss[ni];
            let saturated = replicas(nrs) == want
                && annotation(&nrs.metadata, DESIRED_REPLICAS) == Some(want.to_string().as_str())
                && available(nrs) == want;
            if saturated {
                for i in self.old() {
                    if replicas(&self.rss[i]) > 0 {
                        self.scale(i, 0).await?;
                    }
                }
                return Ok(());
            }
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let allowed = if want > 0 {
            want + max_surge(&self.d)
        } else {
            0
        };
        let current: i32 = active.iter().map(|i| replicas(&self.rss[*i])).sum();
        let to_add = allowed - current;
        let mut order = active.clone();
        let newer_first = to_add > 0;
        order.sort_by(|a, b| {
            let (ra, rb) = (&self.rss[*a], &self.rss[*b]);
            replicas(rb).cmp(&replicas(ra)).then_with(|| {
                if newer_first {
                    by_creation(rb, ra)
                } else {
                    by_creation(ra, rb)
                }
            })
        });
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes: HashMap<usize, i32> = HashMap::new();
        for i in &order {
            let rs = &self.rss[*i];
            if to_add != 0 {
                let p = proportion(&self.d, rs, to_add, added, status_replicas);
                sizes.insert(*i, replicas(rs) + p);
                added += p;
            } else {
                sizes.insert(*i, replicas(rs));
            }
        }
        if added != to_add {
            if let Some(first) = order.first() {
                let leftover = to_add - added;
                let v = sizes.get(first).copied().unwrap_or(0) + leftover;
                sizes.insert(*first, v.max(0));
            }
        }
        for i in order {
            let to = sizes.get(&i).copied().unwrap_or(0);
            self.scale(i, to).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(&mut self) -> Result<Requeue, Error> {
        self.find_new(true).await?;
        if self.reconcile_new_rs().await? {
            return self.sync_rollout_status().await;
        }
        if self.reconcile_old_rss().await? {
            return self.sync_rollout_status().await;
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    async fn reconcile_new_rs(&mut self) -> Result<bool, Error> {
        let Some(ni) = self.new else { return Ok(false) };
        let want = desired(&self.d);
        let have = replicas(&self.rss[ni]);
        if have == want {
            return Ok(false);
        }
        if have > want {
            return self.scale(ni, want).await;
        }
        let to = new_rs_new_replicas(&self.d, &self.all(), &self.rss[ni]);
        self.scale(ni, to).await
    }

    async fn reconcile_old_rss(&mut self) -> Result<bool, Error> {
        let old: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|i| replicas(&self.rss[*i]) > 0)
            .collect();
        if old.is_empty() {
            return Ok(false);
        }
        let all_pods = sum(&self.all(), replicas);
        let min_available = desired(&self.d) - max_unavailable(&self.d);
        let new_unavailable = self
            .new_rs()
            .map(|n| replicas(n) - available(n))
            .unwrap_or(0);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // First the old pods that are not available anyway, then available ones down to
        // minAvailable.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let (r, a) = (replicas(&self.rss[i]), available(&self.rss[i]));
            if r == 0 || r == a {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(r - a);
            self.scale(i, r - down).await?;
            cleaned += down;
        }
        let available_count = sum(&self.all(), available);
        let mut scaled = 0;
        if available_count > min_available {
            let total = available_count - min_available;
            for &i in &old {
                if scaled >= total {
                    break;
                }
                let r = replicas(&self.rss[i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled);
                self.scale(i, r - down).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(&mut self) -> Result<Requeue, Error> {
        self.find_new(false).await?;
        let mut scaled_down = false;
        for i in self.old() {
            if replicas(&self.rss[i]) > 0 {
                scaled_down |= self.scale(i, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running() {
            return self.sync_rollout_status().await;
        }
        if self.new.is_none() {
            self.find_new(true).await?;
        }
        if let Some(ni) = self.new {
            self.scale(ni, desired(&self.d)).await?;
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    fn old_pods_running(&self) -> bool {
        let old: Vec<&ReplicaSet> = self.old().into_iter().map(|i| &self.rss[i]).collect();
        if old
            .iter()
            .any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        self.c.pods.list_namespace(&self.ns).iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            pods::controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
                && phase != Some("Failed")
                && phase != Some("Succeeded")
        })
    }

    /// Deletes the oldest ReplicaSets with no pods beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = self
            .old()
            .into_iter()
            .map(|i| &self.rss[i])
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        let victims: Vec<(String, Option<String>)> = cleanable
            .into_iter()
            .take(usize::try_from(excess).unwrap_or(0))
            .filter(|r| {
                let st = r.status.clone().unwrap_or_default();
                st.replicas == 0
                    && replicas(r) == 0
                    && r.metadata.generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0)
            })
            .map(|r| (r.name_any(), r.metadata.uid.clone()))
            .collect();
        for (name, uid) in victims {
            let dp = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.rs_api().delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(self.err("delete an old ReplicaSet")(e)),
            }
        }
        Ok(())
    }

    async fn sync_status(&mut self) -> Result<Requeue, Error> {
        let status = calculate_status(&self.d, &self.all(), self.new_rs(), Utc::now());
        self.write_status(status).await?;
        Ok(None)
    }

    async fn sync_rollout_status(&mut self) -> Result<Requeue, Error> {
        let now = Utc::now();
        let mut s = calculate_status(&self.d, &self.all(), self.new_rs(), now);
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut s, "Progressing");
        }
        let current = condition(&s, "Progressing").cloned();
        let complete_already = n(&s, |s| s.replicas) == n(&s, |s| s.updated_replicas)
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        if deadline.is_some() && !complete_already {
            let what = match self.new_rs() {
                Some(r) => format!("ReplicaSet \"{}\"", r.name_any()),
                None => format!("Deployment \"{}\"", self.name),
            };
            if deployment_complete(&self.d, &s) {
                let c = new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("{what} has successfully progressed."),
                    now,
                );
                set_condition(&mut s, c);
            } else if deployment_progressing(&self.d, &s) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("{what} is progressing."),
                    now,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut s, "Progressing");
                }
                set_condition(&mut s, c);
            } else if deployment_timed_out(&self.d, &s, now) {
                let c = new_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("{what} has timed out progressing."),
                    now,
                );
                set_condition(&mut s, c);
            }
        }
        // ReplicaSet failures (e.g. pods refused) surface on the Deployment.
        let failure = self.all().into_iter().find_map(|r| {
            r.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut s,
                DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: f.status,
                    reason: f.reason,
                    message: f.message,
                    last_update_time: f.last_transition_time.clone(),
                    last_transition_time: f.last_transition_time,
                },
            ),
            None => remove_condition(&mut s, "ReplicaFailure"),
        }
        let requeue = requeue_stuck(&self.d, &s, now);
        self.write_status(s).await?;
        Ok(requeue)
    }
}

/// When a rollout still in progress would pass its deadline, to look at it then.
fn requeue_stuck(d: &Deployment, s: &DeploymentStatus, now: DateTime<Utc>) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = condition(s, "Progressing")?;
    if deployment_complete(d, s) || c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0;
    let after = from + k8s_openapi::chrono::Duration::seconds(i64::from(deadline)) - now;
    let after = after.to_std().unwrap_or(Duration::ZERO);
    Some(after + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };

    fn ios(s: &str) -> IntOrString {
        match s.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(s.into()),
        }
    }

    fn deploy(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(ios(surge)),
                        max_unavailable: Some(ios(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn percentages_round_up_for_surge_and_down_for_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&ios("25%")), Some(&ios("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("25%")), Some(&ios("25%")), 1),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("0")), Some(&ios("0")), 5),
            Ok((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("2")), Some(&ios("50%")), 3),
            Ok((2, 1))
        );
        assert_eq!(resolve_fenceposts(None, None, 4), Ok((1, 1)));
        assert!(resolve_fenceposts(Some(&ios("abc")), None, 4).is_err());
        assert_eq!(max_unavailable(&deploy(3, "0", "100%")), 3);
        assert_eq!(max_unavailable(&deploy(0, "1", "1")), 0);
        assert_eq!(max_surge(&deploy(10, "30%", "0")), 3);
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_collision_count() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let a = compute_hash(&t, None);
        assert_eq!(a, compute_hash(&t, None));
        assert!(
            a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{a}"
        );
        assert!((1..=10).contains(&a.len()));
        assert_ne!(a, compute_hash(&t, Some(1)));
        assert_ne!(compute_hash(&t, Some(1)), compute_hash(&t, Some(2)));
        let mut u = t.clone();
        u.metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert("v".into(), "2".into()));
        assert_ne!(a, compute_hash(&u, None));
        // FNV-32a of "" is the offset basis; "a" is 0xe40c292c (reference values).
        assert_eq!(fnv32a(0x811c_9dc5, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(0x811c_9dc5, b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert(POD_TEMPLATE_HASH.into(), "abc".into()));
        assert!(equal_ignore_hash(Some(&a), Some(&b)));
        b.metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert("x".into(), "y".into()));
        assert!(!equal_ignore_hash(Some(&a), Some(&b)));
    }

    #[test]
    fn rolling_steps_surge_then_scale_down_within_max_unavailable() {
        // 10 replicas, maxSurge 3, maxUnavailable 2: the new ReplicaSet starts at 3.
        let d = deploy(10, "25%", "25%");
        let old = rs("old", 10, 10);
        let new = rs("new", 0, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        // At 13 pods the new one cannot grow until old ones go.
        let new = rs("new", 3, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        let old = rs("old", 8, 8);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 5);
        // Never beyond the desired count.
        let new = rs("new", 9, 9);
        let old = rs("old", 0, 0);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 10);
    }

    #[test]
    fn proportional_scaling_follows_max_replicas() {
        // Scaling 10 (+3 surge) to 20 (+5 surge): an RS at 5 of 13 gets round(5*25/13)-5 = 5.
        let d = deploy(20, "25%", "25%");
        let mut a = rs("a", 5, 5);
        set_replicas_annotations(&mut a, 10, 13);
        assert_eq!(proportion(&d, &a, 12, 0, 13), 5);
        // Never more than what is left to hand out.
        assert_eq!(proportion(&d, &a, 12, 10, 13), 2);
        // Scaling down to zero takes everything.
        let z = deploy(0, "25%", "25%");
        assert_eq!(proportion(&z, &a, -5, 0, 13), -5);
    }

    #[test]
    fn revision_annotations_keep_history_on_rollback() {
        let d = deploy(3, "1", "0");
        let mut r = rs("r", 0, 0);
        assert!(set_new_rs_annotations(&d, &mut r, "1", false));
        assert_eq!(annotation(&r.metadata, REVISION), Some("1"));
        assert_eq!(annotation(&r.metadata, DESIRED_REPLICAS), Some("3"));
        assert_eq!(annotation(&r.metadata, MAX_REPLICAS), Some("4"));
        assert!(set_new_rs_annotations(&d, &mut r, "3", true));
        assert_eq!(annotation(&r.metadata, REVISION), Some("3"));
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY), Some("1"));
        assert!(!set_new_rs_annotations(&d, &mut r, "3", true));
    }

    #[test]
    fn complete_and_available_conditions() {
        let mut d = deploy(2, "1", "0");
        d.metadata.generation = Some(1);
        let mut new = rs("new", 2, 2);
        if let Some(s) = new.status.as_mut() {
            s.ready_replicas = Some(2);
        }
        let s = calculate_status(&d, &[&new], Some(&new), Utc::now());
        assert!(deployment_complete(&d, &s));
        assert_eq!(
            condition(&s, "Available").map(|c| c.status.as_str()),
            Some("True")
        );
        let half = rs("new", 2, 1);
        let s = calculate_status(&d, &[&half], Some(&half), Utc::now());
        assert!(!deployment_complete(&d, &s));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(
            condition(&s, "Available").map(|c| c.status.as_str()),
            Some("False")
        );
    }
}
