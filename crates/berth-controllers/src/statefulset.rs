//! The StatefulSet controller: pods with stable names `<set>-<ordinal>` (from
//! `spec.ordinals.start`), identity labels, hostname and subdomain; OrderedReady (one pod at
//! a time, in order, each Running and Ready — and available after minReadySeconds — before
//! the next; scale down in reverse order) and Parallel pod management; failed or deleted
//! pods recreated under the same name; ControllerRevisions with revision numbers, rollback
//! and `revisionHistoryLimit`; RollingUpdate (reverse ordinal order, one pod at a time,
//! `partition`) and OnDelete; PersistentVolumeClaims from `volumeClaimTemplates`; and the
//! status `kubectl rollout status` reads, as upstream's controller does.

use crate::cache::{Cache, Change, Informer};
use crate::history::{self, Created};
use crate::pods::{self, Events};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::SelectorExt;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The pod label holding the pod's own name (for per-pod Services).
pub const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label holding the pod's ordinal.
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";
/// How often a revision-name collision is retried with a raised collisionCount in one sync.
const MAX_COLLISIONS: i32 = 8;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for StatefulSet {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: Box<kube::Error>,
    },
    #[error("failed to encode StatefulSet {0}: {1}")]
    Encode(String, serde_json::Error),
    #[error("failed to create a revision of StatefulSet {0}: names keep colliding")]
    Collision(String),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------
// Decisions (pure, as upstream's updateStatefulSet).

/// What the controller knows of one of its pods.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// The ordinal from the name (`-1` if the name has none).
    pub ordinal: i32,
    /// The `controller-revision-hash` label.
    pub revision: String,
    pub terminating: bool,
    /// Phase Failed or Succeeded: to be replaced.
    pub failed: bool,
    /// Running, Ready and available, not terminating.
    pub healthy: bool,
}

/// The parts of a StatefulSet's spec and status that decide what to do.
#[derive(Debug, Clone)]
pub struct Policy {
    /// OrderedReady (one at a time) rather than Parallel.
    pub monotonic: bool,
    /// RollingUpdate rather than OnDelete.
    pub rolling: bool,
    /// `rollingUpdate.partition`, if a rollingUpdate is given.
    pub partition: Option<i32>,
    pub start: i32,
    pub replicas: i32,
    /// `status.currentReplicas`.
    pub current_replicas: i32,
}

impl Policy {
    /// Whether a pod created now for `ordinal` gets the update revision (else the current).
    pub fn creates_at_update(&self, ordinal: i32) -> bool {
        if !self.rolling {
            return true;
        }
        match self.partition {
            Some(p) => ordinal >= self.start + p,
            None => ordinal >= self.start + self.current_replicas,
        }
    }
}

/// One thing to do to the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of `ordinal` from the update revision (`update`) or the current one.
    Create { ordinal: i32, update: bool },
    /// Delete the pod.
    Delete(String),
}

/// The steps of one sync: create missing pods in ordinal order and replace failed ones, then
/// delete pods beyond the replicas in reverse order, then roll pods not at `update_revision`
/// in reverse order down to the partition. OrderedReady stops at the first step or the
/// first pod that is not healthy; a rolling update always goes one pod at a time.
pub fn plan(p: &Policy, members: &[Member], update_revision: &str) -> Vec<Step> {
    let n = usize::try_from(p.replicas.max(0)).unwrap_or(0);
    let mut slots: Vec<Option<&Member>> = vec![None; n];
    let mut condemned: Vec<&Member> = Vec::new();
    for m in members {
        let i = i64::from(m.ordinal) - i64::from(p.start);
        match usize::try_from(i) {
            Ok(i) if m.ordinal >= 0 && i < n => slots[i] = Some(m),
            _ => condemned.push(m),
        }
    }
    condemned.sort_by_key(|m| m.ordinal);
    let first_unhealthy = slots
        .iter()
        .flatten()
        .chain(condemned.iter())
        .filter(|m| !m.healthy)
        .min_by_key(|m| m.ordinal)
        .map(|m| m.name.clone());
    let mut steps = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let ordinal = p.start + i32::try_from(i).unwrap_or(i32::MAX);
        match slot {
            None => {
                steps.push(Step::Create {
                    ordinal,
                    update: p.creates_at_update(ordinal),
                });
                if p.monotonic {
                    return steps;
                }
            }
            Some(m) if m.failed && !m.terminating => {
                steps.push(Step::Delete(m.name.clone()));
                if p.monotonic {
                    return steps;
                }
            }
            Some(m) if !m.healthy => {
                if p.monotonic {
                    return steps;
                }
            }
            Some(_) => {}
        }
    }
    for m in condemned.iter().rev() {
        if m.terminating {
            if p.monotonic {
                return steps;
            }
            continue;
        }
        if !m.healthy && p.monotonic && first_unhealthy.as_deref() != Some(m.name.as_str()) {
            return steps;
        }
        steps.push(Step::Delete(m.name.clone()));
        if p.monotonic {
            return steps;
        }
    }
    if !p.rolling {
        return steps;
    }
    let min = usize::try_from(p.partition.unwrap_or(0).max(0))
        .unwrap_or(0)
        .min(n);
    for slot in slots[min..].iter().rev() {
        let Some(m) = slot else { return steps };
        if m.revision != update_revision && !m.terminating {
            let delete = Step::Delete(m.name.clone());
            if !steps.contains(&delete) {
                steps.push(delete);
            }
            return steps;
        }
        if !m.healthy {
            return steps;
        }
    }
    steps
}

/// The ordinal in a pod name `<set>-<ordinal>` (`None` if it is not one of the set's).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if rest.len() > 1 && rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

fn spec_of(set: &StatefulSet) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
    set.spec.clone().unwrap_or_default()
}

/// The decision inputs of a StatefulSet.
pub fn policy_of(set: &StatefulSet) -> Policy {
    let spec = spec_of(set);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    Policy {
        monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
        rolling,
        partition: strategy
            .rolling_update
            .as_ref()
            .map(|r| r.partition.unwrap_or(0)),
        start: spec.ordinals.and_then(|o| o.start).unwrap_or(0),
        replicas: spec.replicas.unwrap_or(1),
        current_replicas: set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0),
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn member_of(
    set: &str,
    pod: &Pod,
    min_ready_seconds: i32,
    now: k8s_openapi::chrono::DateTime<Utc>,
) -> Member {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let p = phase(pod);
    Member {
        name: pod.name_any(),
        ordinal: ordinal_of(set, &pod.name_any()).unwrap_or(-1),
        revision: revision_of(pod),
        terminating,
        failed: matches!(p, Some("Failed") | Some("Succeeded")),
        healthy: !terminating
            && p == Some("Running")
            && pods::is_available(pod, min_ready_seconds, now),
    }
}

fn revision_of(pod: &Pod) -> String {
    pod.labels()
        .get(history::CONTROLLER_REVISION_HASH)
        .cloned()
        .unwrap_or_default()
}

/// The claim names of a pod: `<template>-<pod>` per volumeClaimTemplate.
pub fn claim_name(template: &str, pod: &str) -> String {
    format!("{template}-{pod}")
}

/// The pod of `ordinal` from `template` at revision `revision`: its stable name, identity
/// labels, hostname and subdomain, and a volume per claim template.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let spec = spec_of(set);
    let mut pod = pods::pod_from_template(
        template,
        &set.namespace().unwrap_or_default(),
        "",
        pods::controller_ref(set),
    );
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME.into(), name.clone());
    labels.insert(POD_INDEX.into(), ordinal.to_string());
    labels.insert(history::CONTROLLER_REVISION_HASH.into(), revision.into());
    let ps = pod.spec.get_or_insert_with(Default::default);
    ps.hostname = Some(name.clone());
    ps.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
    for t in spec.volume_claim_templates.iter().flatten() {
        let template_name = t.metadata.name.clone().unwrap_or_default();
        let volume = Volume {
            name: template_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&template_name, &name),
                read_only: None,
            }),
            ..Default::default()
        };
        let volumes = ps.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != template_name);
        volumes.push(volume);
    }
    pod
}

/// The claims a pod of the set uses, as upstream names and labels them.
pub fn claims_for(set: &StatefulSet, pod_name: &str) -> Vec<PersistentVolumeClaim> {
    let spec = spec_of(set);
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    let retention_delete = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let template_name = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let owner = retention_delete.then(|| {
                let mut r = pods::controller_ref(set);
                r.controller = None;
                r.block_owner_deletion = None;
                vec![r]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template_name, pod_name)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Whether the claims of pods removed by a scale down are deleted with them.
fn when_scaled_delete(set: &StatefulSet) -> bool {
    spec_of(set)
        .persistent_volume_claim_retention_policy
        .and_then(|p| p.when_scaled)
        .as_deref()
        == Some("Delete")
}

fn nonzero(n: usize) -> Option<i32> {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (n != 0).then_some(n)
}

/// The status of a set from its pods and revisions, the rolling update completed when
/// every pod is updated and ready.
pub fn calculate_status(
    set: &StatefulSet,
    owned: &[Arc<Pod>],
    current_revision: &str,
    update_revision: &str,
    collision_count: i32,
    now: k8s_openapi::chrono::DateTime<Utc>,
) -> StatefulSetStatus {
    let min_ready = spec_of(set).min_ready_seconds.unwrap_or(0);
    let mut replicas = 0;
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in owned {
        replicas += 1;
        if phase(p) == Some("Running") && pods::is_ready(p) {
            ready += 1;
            if pods::is_available(p, min_ready, now) {
                available += 1;
            }
        }
        if p.metadata.deletion_timestamp.is_none() {
            let r = revision_of(p);
            if r == current_revision {
                current += 1;
            }
            if r == update_revision {
                updated += 1;
            }
        }
    }
    let mut status = StatefulSetStatus {
        replicas: i32::try_from(replicas).unwrap_or(i32::MAX),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        current_replicas: nonzero(current),
        updated_replicas: nonzero(updated),
        current_revision: Some(current_revision.to_string()),
        update_revision: Some(update_revision.to_string()),
        observed_generation: set.metadata.generation,
        collision_count: Some(collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if policy_of(set).rolling && updated == replicas && ready == replicas {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    status
}

// ---------------------------------------------------------------------------------------
// The controller.

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<Queue<String>>,
    events: Events,
}

/// The sets an orphan pod could belong to: its name is theirs and their selector matches.
fn matching_sets(sets: &Informer<StatefulSet>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = pod.labels().clone();
    sets.list_namespace(&ns)
        .into_iter()
        .filter(|s| ordinal_of(&s.name_any(), &pod.name_any()).is_some())
        .filter(|s| {
            pods::selector_of(s.spec.as_ref().map(|s| &s.selector))
                .is_some_and(|sel| sel.matches(&labels))
        })
        .map(|s| key(&ns, &s.name_any()))
        .collect()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        sets: cache.informer(),
        pods: cache.informer(),
        revisions: cache.informer(),
        queue: Queue::new(),
        events: Events::new(cache.client().clone(), "statefulset-controller"),
    });
    let q = c.queue.clone();
    c.sets.subscribe(move |change| {
        let s = change.object();
        q.add(key(&s.namespace().unwrap_or_default(), &s.name_any()));
    });
    let (q, sets) = (c.queue.clone(), c.sets.clone());
    c.pods.subscribe(move |change| {
        let pod = change.object();
        match pods::controller_key::<StatefulSet>(&pod.metadata) {
            Some(k) => q.add(k),
            None => {
                if let Change::Applied { .. } = change {
                    for k in matching_sets(&sets, pod) {
                        q.add(k);
                    }
                }
            }
        }
        if let Change::Applied { old: Some(old), .. } = change {
            let before = pods::controller_key::<StatefulSet>(&old.metadata);
            if before.is_some() && before != pods::controller_key::<StatefulSet>(&pod.metadata) {
                if let Some(k) = before {
                    q.add(k);
                }
            }
        }
    });
    let q = c.queue.clone();
    c.revisions.subscribe(move |change| {
        if let Some(k) = pods::controller_key::<StatefulSet>(&change.object().metadata) {
            q.add(k);
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.sets.wait_synced().await;
    c.pods.wait_synced().await;
    c.revisions.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "statefulset",
        queue,
        4,
        move |k: String| {
            let c = c.clone();
            async move { c.reconcile(&k).await }
        },
        stop,
    )
    .await;
}

impl Controller {
    fn err(what: &'static str, k: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = k.to_string();
        move |source| Error::Api {
            what,
            key,
            source: Box::new(source),
        }
    }

    async fn reconcile(self: Arc<Self>, k: &str) -> Result<Requeue, Error> {
        let (ns, name) = k.split_once('/').unwrap_or(("", k));
        let Some(set) = self.sets.get(ns, name) else {
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes the pods and revisions.
            return Ok(None);
        }
        let client = self.cache.client().clone();
        let spec = spec_of(&set);
        let selector = pods::selector_of(Some(&spec.selector));
        let owner = pods::controller_ref(set.as_ref());
        let uid = owner.uid.clone();

        // The set's revisions, and the one its template makes.
        let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
        let revisions = history::claim(
            &rev_api,
            &owner,
            false,
            selector.as_ref(),
            self.revisions.list_namespace(ns),
        )
        .await
        .map_err(Self::err("claim revisions", k))?;
        let mut collision_count = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let update = self
            .update_revision(&set, &rev_api, &owner, &revisions, &mut collision_count, k)
            .await?;
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .and_then(|n| revisions.iter().find(|r| r.name_any() == n))
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update.clone());
        let update_name = update.name_any();
        let current_name = current.name_any();

        // The set's pods.
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let candidates: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| {
                pods::controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
                    || ordinal_of(name, &p.name_any()).is_some()
            })
            .collect();
        let claim = pods::claim(&uid, false, selector.as_ref(), candidates);
        let mut owned = claim.owned;
        if !claim.adopt.is_empty() && self.can_adopt(&set, k).await? {
            for p in &claim.adopt {
                if let Some(adopted) = pods::adopt(&pod_api, p, &owner)
                    .await
                    .map_err(Self::err("adopt a pod", k))?
                {
                    owned.push(Arc::new(adopted));
                }
            }
        }
        for p in &claim.release {
            pods::release(&pod_api, p, &uid)
                .await
                .map_err(Self::err("release a pod", k))?;
        }

        let now = Utc::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let members: Vec<Member> = owned
            .iter()
            .map(|p| member_of(name, p, min_ready, now))
            .collect();
        let steps = plan(&policy_of(&set), &members, &update_name);
        let mut result = Ok(());
        for step in steps {
            let r = match step {
                Step::Create {
                    ordinal,
                    update: at_update,
                } => {
                    let (template, revision) = if at_update {
                        (spec.template.clone(), update_name.as_str())
                    } else {
                        (
                            history::template_of(&current).unwrap_or_else(|| spec.template.clone()),
                            current_name.as_str(),
                        )
                    };
                    self.create_pod(&set, &pod_api, &template, revision, ordinal, k)
                        .await
                }
                Step::Delete(pod) => match owned.iter().find(|p| p.name_any() == pod) {
                    Some(p) => {
                        let policy = policy_of(&set);
                        let ordinal = ordinal_of(name, &pod).unwrap_or(-1);
                        let condemned =
                            ordinal < policy.start || ordinal >= policy.start + policy.replicas;
                        if condemned && when_scaled_delete(&set) {
                            self.give_claims_to(&set, p, k).await?;
                        }
                        self.delete_pod(&set, &pod_api, p, k).await
                    }
                    None => Ok(()),
                },
            };
            if r.is_err() {
                result = r;
                break;
            }
        }

        let status = calculate_status(
            &set,
            &owned,
            &current_name,
            &update_name,
            collision_count,
            now,
        );
        if set.status.as_ref() != Some(&status) {
            let mut updated = (*set).clone();
            updated.status = Some(status.clone());
            updated.metadata.managed_fields = None;
            // The controller is the only writer of the status.
            updated.metadata.resource_version = None;
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.into(), e))?;
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            match api.replace_status(name, &PostParams::default(), body).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(Self::err("update the status", k)(e)),
            }
        }
        result?;

        // Old revisions no pod uses, beyond the history limit.
        let mut live: HashSet<String> = owned.iter().map(|p| revision_of(p)).collect();
        live.insert(status.current_revision.clone().unwrap_or_default());
        live.insert(update_name.clone());
        let limit = spec
            .revision_history_limit
            .unwrap_or(history::DEFAULT_REVISION_HISTORY_LIMIT);
        for r in history::to_prune(&revisions, &live, limit) {
            history::delete(&rev_api, &r)
                .await
                .map_err(Self::err("delete an old revision", k))?;
        }

        // Ready pods become available after minReadySeconds without any event.
        let next = owned
            .iter()
            .filter_map(|p| pods::until_available(p, min_ready, now))
            .min();
        Ok(next.map(|d| d + Duration::from_millis(100)))
    }

    /// The revision of the set's current template: an existing one with the same data (given
    /// the next revision number if it is an older one: a rollback), or a new one.
    async fn update_revision(
        &self,
        set: &StatefulSet,
        api: &Api<ControllerRevision>,
        owner: &OwnerReference,
        revisions: &[Arc<ControllerRevision>],
        collision_count: &mut i32,
        k: &str,
    ) -> Result<ControllerRevision, Error> {
        let spec = spec_of(set);
        let data = history::template_patch(&spec.template);
        let next = history::next_revision(revisions);
        if let Some(equal) = revisions
            .iter()
            .rev()
            .find(|r| history::equal_data(r, &data))
        {
            if revisions
                .last()
                .is_some_and(|l| l.name_any() == equal.name_any())
            {
                return Ok((**equal).clone());
            }
            return history::renumber(api, equal, next)
                .await
                .map_err(Self::err("renumber a revision", k));
        }
        for _ in 0..MAX_COLLISIONS {
            let hash = history::hash_data(&data, Some(*collision_count));
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(history::CONTROLLER_HASH.into(), hash.clone());
            let rev = history::new_revision(
                history::revision_name(&set.name_any(), &hash),
                &set.namespace().unwrap_or_default(),
                owner.clone(),
                labels,
                set.metadata.annotations.clone(),
                data.clone(),
                next,
            );
            match history::create(api, &rev)
                .await
                .map_err(Self::err("create a revision", k))?
            {
                Created::Revision(r) => return Ok(*r),
                Created::Collision => *collision_count += 1,
            }
        }
        Err(Error::Collision(k.into()))
    }

    /// Adoption only by a set that is not being deleted, checked against the API.
    async fn can_adopt(&self, set: &StatefulSet, k: &str) -> Result<bool, Error> {
        let api: Api<StatefulSet> = Api::namespaced(
            self.cache.client().clone(),
            &set.namespace().unwrap_or_default(),
        );
        let fresh = api
            .get_opt(&set.name_any())
            .await
            .map_err(Self::err("get", k))?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == set.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    async fn create_pod(
        &self,
        set: &StatefulSet,
        api: &Api<Pod>,
        template: &PodTemplateSpec,
        revision: &str,
        ordinal: i32,
        k: &str,
    ) -> Result<(), Error> {
        let pod = new_pod(set, template, revision, ordinal);
        let pod_name = pod.name_any();
        let reference = set.object_ref(&());
        let ns = set.namespace().unwrap_or_default();
        let set_name = set.name_any();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.cache.client().clone(), &ns);
        for claim in claims_for(set, &pod_name) {
            let claim_name = claim.name_any();
            if claims
                .get_opt(&claim_name)
                .await
                .map_err(Self::err("get a claim", k))?
                .is_some()
            {
                continue;
            }
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.events
                        .normal(
                            &reference,
                            "SuccessfulCreate",
                            format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"),
                        )
                        .await
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.events
                        .warning(
                            &reference,
                            "FailedCreate",
                            format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                        )
                        .await;
                    return Err(Self::err("create a claim", k)(e));
                }
            }
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.events
                    .normal(
                        &reference,
                        "SuccessfulCreate",
                        format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                    )
                    .await;
                Ok(())
            }
            Err(e) => {
                let exists = matches!(&e, kube::Error::Api(s) if s.code == 409);
                if !exists {
                    self.events
                        .warning(
                            &reference,
                            "FailedCreate",
                            format!(
                                "create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                            ),
                        )
                        .await;
                }
                Err(Self::err("create a pod", k)(e))
            }
        }
    }

    /// Makes a condemned pod the owner of its claims instead of the set (`whenScaled:
    /// Delete`), so they go with it.
    async fn give_claims_to(&self, set: &StatefulSet, pod: &Pod, k: &str) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.cache.client().clone(),
            &set.namespace().unwrap_or_default(),
        );
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name_any(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        for claim in claims_for(set, &pod.name_any()) {
            let Some(live) = api
                .get_opt(&claim.name_any())
                .await
                .map_err(Self::err("get a claim", k))?
            else {
                continue;
            };
            let owned = live
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == owner.uid);
            if !owned {
                pods::adopt(&api, &live, &owner)
                    .await
                    .map_err(Self::err("set the owner of a claim", k))?;
            }
            // A claim the set also owns (whenDeleted: Delete) would outlive the pod.
            let set_uid = set.metadata.uid.clone().unwrap_or_default();
            if live
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == set_uid)
            {
                pods::release(&api, &live, &set_uid)
                    .await
                    .map_err(Self::err("release a claim", k))?;
            }
        }
        Ok(())
    }

    async fn delete_pod(
        &self,
        set: &StatefulSet,
        api: &Api<Pod>,
        pod: &Pod,
        k: &str,
    ) -> Result<(), Error> {
        let name = pod.name_any();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let reference = set.object_ref(&());
        if matches!(phase(pod), Some("Failed") | Some("Succeeded")) {
            self.events
                .warning(
                    &reference,
                    "RecreatingFailedPod",
                    format!(
                        "StatefulSet {}/{} is recreating failed Pod {name}",
                        set.namespace().unwrap_or_default(),
                        set.name_any()
                    ),
                )
                .await;
        }
        match api.delete(&name, &dp).await {
            Ok(_) => {
                self.events
                    .normal(
                        &reference,
                        "SuccessfulDelete",
                        format!(
                            "delete Pod {name} in StatefulSet {} successful",
                            set.name_any()
                        ),
                    )
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.events
                    .warning(
                        &reference,
                        "FailedDelete",
                        format!(
                            "delete Pod {name} in StatefulSet {} failed error: {e}",
                            set.name_any()
                        ),
                    )
                    .await;
                Err(Self::err("delete a pod", k)(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ord: i32, rev: &str, healthy: bool) -> Member {
        Member {
            name: format!("web-{ord}"),
            ordinal: ord,
            revision: rev.into(),
            terminating: false,
            failed: false,
            healthy,
        }
    }

    fn policy(monotonic: bool, replicas: i32) -> Policy {
        Policy {
            monotonic,
            rolling: true,
            partition: Some(0),
            start: 0,
            replicas,
            current_replicas: 0,
        }
    }

    fn create(ordinal: i32) -> Step {
        Step::Create {
            ordinal,
            update: true,
        }
    }

    fn delete(ord: i32) -> Step {
        Step::Delete(format!("web-{ord}"))
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let p = policy(true, 3);
        assert_eq!(plan(&p, &[], "r1"), [create(0)]);
        // web-0 exists but is not ready yet: wait.
        assert!(plan(&p, &[m(0, "r1", false)], "r1").is_empty());
        assert_eq!(plan(&p, &[m(0, "r1", true)], "r1"), [create(1)]);
        // A missing lower ordinal comes first.
        assert_eq!(
            plan(&p, &[m(0, "r1", true), m(2, "r1", true)], "r1"),
            [create(1)]
        );
        assert!(plan(
            &p,
            &[m(0, "r1", true), m(1, "r1", true), m(2, "r1", true)],
            "r1"
        )
        .is_empty());
    }

    #[test]
    fn parallel_creates_all_at_once() {
        let p = policy(false, 3);
        assert_eq!(plan(&p, &[], "r1"), [create(0), create(1), create(2)]);
    }

    #[test]
    fn scale_down_is_reverse_and_one_at_a_time() {
        let p = policy(true, 1);
        let all = [m(0, "r1", true), m(1, "r1", true), m(2, "r1", true)];
        assert_eq!(plan(&p, &all, "r1"), [delete(2)]);
        let mut terminating = m(2, "r1", false);
        terminating.terminating = true;
        assert!(plan(&p, &[m(0, "r1", true), m(1, "r1", true), terminating], "r1").is_empty());
        assert_eq!(plan(&p, &all[..2], "r1"), [delete(1)]);
        // Parallel deletes every condemned pod at once.
        assert_eq!(plan(&policy(false, 1), &all, "r1"), [delete(2), delete(1)]);
    }

    #[test]
    fn failed_pods_are_replaced() {
        let p = policy(true, 2);
        let mut failed = m(0, "r1", false);
        failed.failed = true;
        assert_eq!(plan(&p, &[failed, m(1, "r1", true)], "r1"), [delete(0)]);
    }

    #[test]
    fn rolling_update_goes_down_from_the_top_to_the_partition() {
        let all = [m(0, "r1", true), m(1, "r1", true), m(2, "r1", true)];
        let mut p = policy(true, 3);
        assert_eq!(plan(&p, &all, "r2"), [delete(2)]);
        // web-2 updated but not ready: wait for it.
        let pods = [m(0, "r1", true), m(1, "r1", true), m(2, "r2", false)];
        assert!(plan(&p, &pods, "r2").is_empty());
        let pods = [m(0, "r1", true), m(1, "r1", true), m(2, "r2", true)];
        assert_eq!(plan(&p, &pods, "r2"), [delete(1)]);
        // partition 2: only ordinals >= 2 are updated.
        p.partition = Some(2);
        assert!(plan(&p, &pods, "r2").is_empty());
        assert_eq!(plan(&p, &all, "r2"), [delete(2)]);
        // OnDelete never deletes for an update.
        p.rolling = false;
        assert!(plan(&p, &all, "r2").is_empty());
    }

    #[test]
    fn pods_below_the_partition_are_created_at_the_current_revision() {
        let mut p = policy(true, 3);
        p.partition = Some(2);
        assert_eq!(
            plan(&p, &[], "r2"),
            [Step::Create {
                ordinal: 0,
                update: false
            }]
        );
        assert!(p.creates_at_update(2));
        p.start = 5;
        assert!(!p.creates_at_update(6));
        assert!(p.creates_at_update(7));
    }

    fn pod(name: &str, revision: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"controller-revision-hash": revision}},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn status_counts_revisions_and_completes_the_rollout() {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "template": {},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}
        }))
        .expect("set");
        let now = Utc::now();
        let mid = [pod("web-0", "r1", true), pod("web-1", "r2", false)];
        let s = calculate_status(&set, &mid, "r1", "r2", 0, now);
        assert_eq!(
            (
                s.replicas,
                s.ready_replicas,
                s.current_replicas,
                s.updated_replicas
            ),
            (2, Some(1), Some(1), Some(1))
        );
        assert_eq!(s.current_revision.as_deref(), Some("r1"));
        assert_eq!(s.observed_generation, Some(4));
        let done = [pod("web-0", "r2", true), pod("web-1", "r2", true)];
        let s = calculate_status(&set, &done, "r1", "r2", 0, now);
        assert_eq!(s.current_revision.as_deref(), Some("r2"));
        assert_eq!(s.current_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(2));
    }

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webs-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }
        }))
        .expect("set");
        let pod = new_pod(&set, &spec_of(&set).template, "web-abc", 1);
        assert_eq!(pod.name_any(), "web-1");
        let labels = pod.labels();
        assert_eq!(labels.get(POD_NAME).map(String::as_str), Some("web-1"));
        assert_eq!(labels.get(POD_INDEX).map(String::as_str), Some("1"));
        assert_eq!(
            labels.get("controller-revision-hash").map(String::as_str),
            Some("web-abc")
        );
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.expect("volumes");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-web-1")
        );
        let claims = claims_for(&set, "web-1");
        assert_eq!(claims[0].name_any(), "data-web-1");
        assert_eq!(
            claims[0].labels().get("app").map(String::as_str),
            Some("web")
        );
        assert!(claims[0].metadata.owner_references.is_none());
    }
}
