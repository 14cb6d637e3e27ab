//! The DaemonSet controller: one pod per eligible node (nodeSelector, required node
//! affinity, taints against the pod's tolerations plus upstream's automatic DaemonSet
//! tolerations), placed as upstream does — a required node affinity `metadata.name In
//! [node]` the scheduler honours — and removed when its node stops being eligible or goes;
//! ControllerRevisions `<ds>-<hash>` with revision numbers, rollback and
//! `revisionHistoryLimit`; RollingUpdate (maxUnavailable, or maxSurge) and OnDelete; and the
//! status `kubectl rollout status` reads.

use crate::cache::{Cache, Change, Informer};
use crate::deployment::{compute_hash, scaled_value};
use crate::history::{self, Created, CONTROLLER_REVISION_HASH};
use crate::pods::{self, Events, Expectations};
use crate::queue::{is_conflict, key, run_workers, Queue, ReconcileError, Requeue};
use crate::replicaset::slow_start_batch;
use berth_scheduler::selectors;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, PostParams};
use kube::core::SelectorExt;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a revision-name collision is retried with a raised collisionCount in one sync.
const MAX_COLLISIONS: i32 = 8;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for DaemonSet {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: Box<kube::Error>,
    },
    #[error("failed to encode DaemonSet {0}: {1}")]
    Encode(String, serde_json::Error),
    #[error("failed to create a revision of DaemonSet {0}: names keep colliding")]
    Collision(String),
    #[error("failed to manage the pods of DaemonSet {0}: {1}")]
    Manage(String, String),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source.as_ref()))
    }
}

// ---------------------------------------------------------------------------------------
// Eligibility and placement (pure, as upstream's daemon utilities).

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Adds upstream's automatic DaemonSet tolerations to a pod spec: daemon pods stay on
/// not-ready and unreachable nodes, and are placed on nodes under disk, memory or pid
/// pressure, unschedulable ones, and (with hostNetwork) ones without a pod network.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        let same = |o: &Toleration| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == "Exists"
                && o.value.as_deref().unwrap_or("").is_empty()
                && o.effect == t.effect
        };
        if !tolerations.iter().any(same) {
            tolerations.push(t);
        }
    }
}

/// The pod affinity with its required node terms replaced by `metadata.name In [node]`, as
/// upstream's ReplaceDaemonSetPodNodeNameNodeAffinity.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    affinity
}

/// The node a daemon pod is for: its nodeName, else the node its affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

/// Whether a daemon pod (its spec with the automatic tolerations) should be placed on
/// `node` now, and whether one already there may keep running: the node's name, labels and
/// required affinity must match; NoSchedule and NoExecute taints must be tolerated to
/// place a pod, NoExecute ones to keep it.
pub fn node_should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.name_any();
    if spec
        .node_name
        .as_ref()
        .is_some_and(|n| !n.is_empty() && *n != name)
    {
        return (false, false);
    }
    let labels = node.labels().clone();
    let selector_fits = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_fits = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|ns| selectors::node_matches_terms(&ns.node_selector_terms, &labels, &name));
    if !selector_fits || !affinity_fits {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !selectors::tolerated(tolerations, t))
    };
    let keeps = !untolerated("NoExecute");
    (keeps && !untolerated("NoSchedule"), keeps)
}

/// maxSurge and maxUnavailable of a rolling update as pod counts for `desired` nodes
/// (percentages rounded up; both zero would stall, so maxUnavailable is 1 then).
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let ru = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let one = IntOrString::Int(1);
    let zero = IntOrString::Int(0);
    let surge = scaled_value(
        ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&zero),
        desired,
        true,
    )
    .unwrap_or(0)
    .max(0);
    let unavailable = scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&one),
        desired,
        true,
    )
    .unwrap_or(1)
    .max(0);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// What the rolling update knows of one eligible node.
#[derive(Debug, Clone, Default)]
pub struct NodePods {
    pub node: String,
    /// The pod at the current hash, if any (and whether it is available).
    pub new: Option<(String, bool)>,
    /// The pod at an older hash, if any (and whether it is available).
    pub old: Option<(String, bool)>,
}

/// One rolling update step: old pods to delete, nodes to create a new pod on (surge).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub delete: Vec<String>,
    pub create_on: Vec<String>,
}

/// Upstream's rolling update. Without surge, old pods are deleted (and replaced by the next
/// sync) while at most `max_unavailable` nodes lack an available pod — unavailable old
/// pods go at once. With surge, a new pod starts beside the old one on up to `max_surge`
/// nodes, and the old one goes once the new one is available.
pub fn rolling_update(nodes: &[NodePods], max_surge: i32, max_unavailable: i32) -> Rollout {
    let mut out = Rollout::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
        for n in nodes {
            match (&n.new, &n.old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some((_, available)), None) => {
                    if !available {
                        unavailable += 1;
                    }
                }
                (None, Some((old, available))) => {
                    if !available {
                        allowed.push(old.clone());
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(old.clone());
                    }
                }
            }
        }
        let remaining = usize::try_from((max_unavailable - unavailable).max(0))
            .unwrap_or(0)
            .min(candidates.len());
        out.delete = allowed;
        out.delete.extend(candidates.into_iter().take(remaining));
        return out;
    }
    let mut surged = 0;
    let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
    for n in nodes {
        match (&n.new, &n.old) {
            (_, None) => {}
            (None, Some((_, available))) => {
                if !available {
                    allowed.push(n.node.clone());
                } else if surged < max_surge {
                    candidates.push(n.node.clone());
                }
            }
            (Some((_, new_available)), Some((old, _))) => {
                if *new_available {
                    out.delete.push(old.clone());
                } else {
                    surged += 1;
                }
            }
        }
    }
    let remaining = usize::try_from((max_surge - surged).max(0)).unwrap_or(0);
    out.create_on = allowed;
    out.create_on.extend(candidates.into_iter().take(remaining));
    out
}

fn by_age(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(b)
        .cmp(&scheduled(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// The status of a DaemonSet from the eligible nodes and the pods on each.
pub fn calculate_status(
    ds: &DaemonSet,
    spec: &PodSpec,
    nodes: &[Arc<Node>],
    node_pods: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    collision_count: i32,
    now: DateTime<Utc>,
) -> DaemonSetStatus {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for node in nodes {
        let (should_run, _) = node_should_run(spec, node);
        let here = node_pods.get(&node.name_any()).filter(|p| !p.is_empty());
        match (should_run, here) {
            (true, None) => desired += 1,
            (true, Some(pods_here)) => {
                desired += 1;
                current += 1;
                let mut sorted = pods_here.clone();
                sorted.sort_by(by_age);
                let pod = &sorted[0];
                if pods::is_ready(pod) {
                    ready += 1;
                    if pods::is_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if sorted.iter().any(|p| hash_of(p) == Some(hash)) {
                    updated += 1;
                }
            }
            (false, Some(_)) => misscheduled += 1,
            (false, None) => {}
        }
    }
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: nonzero(available),
        number_unavailable: nonzero(desired - available),
        updated_number_scheduled: nonzero(updated),
        observed_generation: ds.metadata.generation,
        collision_count: (collision_count != 0).then_some(collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// The controller.

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<Queue<String>>,
    expectations: Arc<Expectations>,
    failed_backoff: FailedBackoff,
    events: Events,
}

/// The first wait before replacing a failed daemon pod again on the same node.
const FAILED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest such wait.
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// Per DaemonSet and node, when a failed pod was last replaced and how long to wait before
/// the next replacement (doubling, as upstream's failedPodsBackoff).
#[derive(Default)]
pub struct FailedBackoff {
    entries: std::sync::Mutex<HashMap<(String, String), (std::time::Instant, Duration)>>,
}

impl FailedBackoff {
    /// `Some(wait)` while the back-off since the last replacement runs; otherwise records a
    /// replacement now (doubling the next wait) and returns `None`.
    pub fn wait(&self, ds: &str, node: &str) -> Option<Duration> {
        let now = std::time::Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ds.to_string(), node.to_string());
        match entries.get(&key) {
            Some((last, delay)) if now.duration_since(*last) < *delay => {
                Some(*delay - now.duration_since(*last))
            }
            Some((last, delay)) if now.duration_since(*last) < 2 * FAILED_BACKOFF_MAX => {
                let next = (*delay * 2).min(FAILED_BACKOFF_MAX);
                entries.insert(key, (now, next));
                None
            }
            _ => {
                entries.retain(|_, (last, _)| now.duration_since(*last) < 2 * FAILED_BACKOFF_MAX);
                entries.insert(key, (now, FAILED_BACKOFF_INITIAL));
                None
            }
        }
    }
}

fn matching_sets(sets: &Informer<DaemonSet>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let labels = pod.labels().clone();
    sets.list_namespace(&ns)
        .into_iter()
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
        nodes: cache.informer(),
        revisions: cache.informer(),
        queue: Queue::new(),
        expectations: Arc::new(Expectations::default()),
        failed_backoff: FailedBackoff::default(),
        events: Events::new(cache.client().clone(), "daemonset-controller"),
    });
    let (q, exp) = (c.queue.clone(), c.expectations.clone());
    c.sets.subscribe(move |change| {
        let s = change.object();
        let k = key(&s.namespace().unwrap_or_default(), &s.name_any());
        if let Change::Deleted(_) = change {
            exp.forget(&k);
        }
        q.add(k);
    });
    let (q, exp, sets) = (c.queue.clone(), c.expectations.clone(), c.sets.clone());
    c.pods.subscribe(move |change| {
        let pod = change.object();
        let pod_key = key(&pod.namespace().unwrap_or_default(), &pod.name_any());
        let owner = pods::controller_key::<DaemonSet>(&pod.metadata);
        match change {
            Change::Applied { old, new } => {
                let was_deleting = old
                    .as_ref()
                    .is_some_and(|o| o.metadata.deletion_timestamp.is_some());
                if let Some(k) = &owner {
                    if new.metadata.deletion_timestamp.is_some() {
                        if !was_deleting {
                            exp.deletion_observed(k, &pod_key);
                        }
                    } else if old.is_none() {
                        exp.creation_observed(k);
                    }
                }
                match &owner {
                    Some(k) => q.add(k.clone()),
                    None => {
                        for k in matching_sets(&sets, new) {
                            q.add(k);
                        }
                    }
                }
                if let Some(old) = old {
                    let before = pods::controller_key::<DaemonSet>(&old.metadata);
                    if before.is_some() && before != owner {
                        if let Some(k) = before {
                            q.add(k);
                        }
                    }
                }
            }
            Change::Deleted(_) => {
                if let Some(k) = owner {
                    exp.deletion_observed(&k, &pod_key);
                    q.add(k);
                }
            }
        }
    });
    // Eligibility depends on a node's name, labels and spec (taints, unschedulable).
    let (q, sets) = (c.queue.clone(), c.sets.clone());
    c.nodes.subscribe(move |change| {
        if let Change::Applied {
            old: Some(old),
            new,
        } = change
        {
            if old.labels() == new.labels() && old.spec == new.spec {
                return;
            }
        }
        for s in sets.list() {
            q.add(key(&s.namespace().unwrap_or_default(), &s.name_any()));
        }
    });
    let q = c.queue.clone();
    c.revisions.subscribe(move |change| {
        if let Some(k) = pods::controller_key::<DaemonSet>(&change.object().metadata) {
            q.add(k);
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.sets.wait_synced().await;
    c.pods.wait_synced().await;
    c.nodes.wait_synced().await;
    c.revisions.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "daemonset",
        queue,
        2,
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
        let Some(ds) = self.sets.get(ns, name) else {
            self.expectations.forget(k);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes the pods and revisions.
            return Ok(None);
        }
        let client = self.cache.client().clone();
        let spec = ds.spec.clone().unwrap_or_default();
        let selector = pods::selector_of(Some(&spec.selector));
        let owner = pods::controller_ref(ds.as_ref());
        let uid = owner.uid.clone();
        let satisfied = self.expectations.satisfied(k);

        // The revision of the current template.
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
        let mut collision_count = ds
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let current = self
            .current_revision(&ds, &rev_api, &owner, &revisions, &mut collision_count, k)
            .await?;
        let hash = current
            .labels()
            .get(CONTROLLER_REVISION_HASH)
            .cloned()
            .unwrap_or_else(|| current.name_any());

        // The set's pods, by the node each is for.
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let claim = pods::claim(&uid, false, selector.as_ref(), self.pods.list_namespace(ns));
        let mut owned = claim.owned;
        if !claim.adopt.is_empty() && self.can_adopt(&ds, k).await? {
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
        let mut node_pods: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        let mut targetless = Vec::new();
        // Nodes whose daemon pod is still terminating get no new one until it is gone.
        let mut terminating_on = HashSet::new();
        for p in &owned {
            if p.metadata.deletion_timestamp.is_some() {
                terminating_on.extend(target_node(p));
                continue;
            }
            match target_node(p) {
                Some(n) => node_pods.entry(n).or_default().push(p.clone()),
                None => targetless.push(p.clone()),
            }
        }
        let mut template_spec = spec.template.spec.clone().unwrap_or_default();
        add_daemon_tolerations(&mut template_spec);
        let nodes: Vec<Arc<Node>> = self
            .nodes
            .list()
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .collect();
        let now = Utc::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let (max_surge, max_unavailable) = if is_rolling(&ds) {
            let desired = nodes
                .iter()
                .filter(|n| node_should_run(&template_spec, n).0)
                .count();
            surge_and_unavailable(&ds, i32::try_from(desired).unwrap_or(i32::MAX))
        } else {
            (0, 0)
        };

        let mut result = Ok(());
        let mut backoff_requeue: Option<Duration> = None;
        if satisfied {
            // Pods to create (by node) and to delete.
            let mut create_on = Vec::new();
            let mut delete: Vec<Arc<Pod>> = targetless;
            let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
            for (node, here) in &node_pods {
                if !known.contains(node) {
                    delete.extend(here.iter().cloned());
                }
            }
            let mut rollout_nodes = Vec::new();
            for node in &nodes {
                let node_name = node.name_any();
                let (should_run, should_continue) = node_should_run(&template_spec, node);
                let here = node_pods.get(&node_name).cloned().unwrap_or_default();
                if !should_continue {
                    delete.extend(here);
                    continue;
                }
                let (failed, mut running): (Vec<_>, Vec<_>) = here.into_iter().partition(|p| {
                    matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed") | Some("Succeeded")
                    )
                });
                let had_failed = !failed.is_empty();
                for pod in failed {
                    // Pods a node keeps failing (e.g. rejected at admission) are replaced
                    // with a growing back-off, not in a hot loop.
                    match self.failed_backoff.wait(k, &node_name) {
                        Some(wait) => {
                            backoff_requeue =
                                Some(backoff_requeue.map_or(wait, |b: Duration| b.min(wait)));
                        }
                        None => {
                            self.events
                                .warning(
                                    &ds.object_ref(&()),
                                    "FailedDaemonPod",
                                    format!(
                                        "Found failed daemon pod {ns}/{} on node {node_name}, will try to kill it",
                                        pod.name_any()
                                    ),
                                )
                                .await;
                            delete.push(pod);
                        }
                    }
                }
                if running.is_empty() {
                    if should_run && !had_failed && !terminating_on.contains(&node_name) {
                        create_on.push(node_name);
                    }
                    continue;
                }
                running.sort_by(by_age);
                // Keep the oldest pod (with surge: the oldest new and the oldest old one).
                let (new, old): (Vec<_>, Vec<_>) = running
                    .into_iter()
                    .partition(|p| hash_of(p) == Some(hash.as_str()));
                if max_surge > 0 {
                    delete.extend(new.iter().skip(1).cloned());
                    delete.extend(old.iter().skip(1).cloned());
                } else if !new.is_empty() {
                    delete.extend(new.iter().skip(1).cloned());
                    delete.extend(old.iter().cloned());
                } else {
                    delete.extend(old.iter().skip(1).cloned());
                }
                if should_run {
                    let view = |p: &Arc<Pod>| (p.name_any(), pods::is_available(p, min_ready, now));
                    rollout_nodes.push(NodePods {
                        node: node_name,
                        new: new.first().map(view),
                        old: old.first().map(view),
                    });
                }
            }
            // Rolling update steps only once the pods are where they should be.
            if create_on.is_empty() && delete.is_empty() && is_rolling(&ds) {
                let step = rolling_update(&rollout_nodes, max_surge, max_unavailable);
                create_on = step.create_on;
                let doomed: HashSet<String> = step.delete.into_iter().collect();
                delete = owned
                    .iter()
                    .filter(|p| doomed.contains(&p.name_any()))
                    .cloned()
                    .collect();
            }
            result = self
                .sync_nodes(&ds, &pod_api, &create_on, &delete, &hash, k)
                .await;
        }

        let status = calculate_status(
            &ds,
            &template_spec,
            &nodes,
            &node_pods,
            &hash,
            collision_count,
            now,
        );
        if ds.status.as_ref() != Some(&status) {
            let mut updated = (*ds).clone();
            updated.status = Some(status);
            updated.metadata.managed_fields = None;
            updated.metadata.resource_version = None;
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.into(), e))?;
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
            match api.replace_status(name, &PostParams::default(), body).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(Self::err("update the status", k)(e)),
            }
        }
        result?;

        // Old revisions no pod uses, beyond the history limit.
        let pod_hashes: HashSet<&str> = owned.iter().filter_map(|p| hash_of(p)).collect();
        let mut live: HashSet<String> = revisions
            .iter()
            .filter(|r| {
                r.labels()
                    .get(CONTROLLER_REVISION_HASH)
                    .is_some_and(|h| pod_hashes.contains(h.as_str()))
            })
            .map(|r| r.name_any())
            .collect();
        live.insert(current.name_any());
        let limit = spec
            .revision_history_limit
            .unwrap_or(history::DEFAULT_REVISION_HISTORY_LIMIT);
        for r in history::to_prune(&revisions, &live, limit) {
            history::delete(&rev_api, &r)
                .await
                .map_err(Self::err("delete an old revision", k))?;
        }

        let next = owned
            .iter()
            .filter_map(|p| pods::until_available(p, min_ready, now))
            .map(|d| d + Duration::from_millis(100))
            .chain(backoff_requeue)
            .min();
        Ok(next)
    }

    /// The revision of the current template: an existing one with the same data (given the
    /// next revision number if older ones follow it: a rollback), or a new `<ds>-<hash>`.
    async fn current_revision(
        &self,
        ds: &DaemonSet,
        api: &Api<ControllerRevision>,
        owner: &OwnerReference,
        revisions: &[Arc<ControllerRevision>],
        collision_count: &mut i32,
        k: &str,
    ) -> Result<ControllerRevision, Error> {
        let template = ds.spec.clone().unwrap_or_default().template;
        let data = history::template_patch(&template);
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
            let hash = compute_hash(&template, Some(*collision_count).filter(|c| *c != 0));
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
            let rev = history::new_revision(
                history::revision_name(&ds.name_any(), &hash),
                &ds.namespace().unwrap_or_default(),
                owner.clone(),
                labels,
                ds.metadata.annotations.clone(),
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
    async fn can_adopt(&self, ds: &DaemonSet, k: &str) -> Result<bool, Error> {
        let api: Api<DaemonSet> = Api::namespaced(
            self.cache.client().clone(),
            &ds.namespace().unwrap_or_default(),
        );
        let fresh = api
            .get_opt(&ds.name_any())
            .await
            .map_err(Self::err("get", k))?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == ds.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    /// Creates a daemon pod on each of `create_on` and deletes `delete`.
    async fn sync_nodes(
        &self,
        ds: &Arc<DaemonSet>,
        api: &Api<Pod>,
        create_on: &[String],
        delete: &[Arc<Pod>],
        hash: &str,
        k: &str,
    ) -> Result<(), Error> {
        let ns = ds.namespace().unwrap_or_default();
        let reference = ds.object_ref(&());
        let template = ds.spec.clone().unwrap_or_default().template;
        if !create_on.is_empty() {
            self.expectations.expect_creations(k, create_on.len());
            let (created, failure) = slow_start_batch(create_on.len(), |i| {
                let mut pod = pods::pod_from_template(
                    &template,
                    &ns,
                    &format!("{}-", ds.name_any()),
                    pods::controller_ref(ds.as_ref()),
                );
                pod.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(CONTROLLER_REVISION_HASH.into(), hash.to_string());
                let spec = pod.spec.get_or_insert_with(PodSpec::default);
                add_daemon_tolerations(spec);
                spec.affinity = Some(pin_to_node(spec.affinity.take(), &create_on[i]));
                let (api, events, reference) =
                    (api.clone(), self.events.clone(), reference.clone());
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
            for _ in created..create_on.len() {
                self.expectations.creation_observed(k);
            }
            if let Some(e) = failure {
                return Err(Error::Manage(k.into(), e));
            }
        }
        if !delete.is_empty() {
            pods::delete_pods(api, &self.events, &reference, &self.expectations, k, delete)
                .await
                .map_err(|e| Error::Manage(k.into(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn daemon_spec() -> PodSpec {
        let mut s = PodSpec::default();
        add_daemon_tolerations(&mut s);
        s
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let s = daemon_spec();
        assert_eq!(node_should_run(&s, &node("a", &[], &[])), (true, true));
        // Untolerated NoSchedule: no new pod, an existing one stays.
        assert_eq!(
            node_should_run(&s, &node("a", &[], &[("dedicated", "NoSchedule")])),
            (false, true)
        );
        assert_eq!(
            node_should_run(&s, &node("a", &[], &[("dedicated", "NoExecute")])),
            (false, false)
        );
        // The automatic tolerations.
        for (taint, effect) in [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ] {
            assert_eq!(
                node_should_run(&s, &node("a", &[], &[(taint, effect)])),
                (true, true)
            );
        }
        assert!(
            !node_should_run(
                &s,
                &node(
                    "a",
                    &[],
                    &[("node.kubernetes.io/network-unavailable", "NoSchedule")]
                )
            )
            .0
        );
        let mut host = PodSpec {
            host_network: Some(true),
            ..Default::default()
        };
        add_daemon_tolerations(&mut host);
        assert!(
            node_should_run(
                &host,
                &node(
                    "a",
                    &[],
                    &[("node.kubernetes.io/network-unavailable", "NoSchedule")]
                )
            )
            .0
        );
        // Adding twice adds nothing.
        let before = host.tolerations.clone();
        add_daemon_tolerations(&mut host);
        assert_eq!(host.tolerations, before);

        let mut selected = daemon_spec();
        selected.node_selector = Some([("role".to_string(), "edge".to_string())].into());
        assert_eq!(
            node_should_run(&selected, &node("a", &[], &[])),
            (false, false)
        );
        assert_eq!(
            node_should_run(&selected, &node("a", &[("role", "edge")], &[])),
            (true, true)
        );
        let mut pinned = daemon_spec();
        pinned.affinity = Some(pin_to_node(None, "b"));
        assert!(!node_should_run(&pinned, &node("a", &[], &[])).0);
        assert!(node_should_run(&pinned, &node("b", &[], &[])).0);
    }

    #[test]
    fn pods_are_pinned_by_node_affinity() {
        let mut pod = Pod::default();
        let spec = pod.spec.get_or_insert_with(PodSpec::default);
        spec.affinity = Some(pin_to_node(None, "n1"));
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        // Existing required terms are replaced; nodeName wins.
        let again = pin_to_node(pod.spec.as_ref().and_then(|s| s.affinity.clone()), "n2");
        let terms = again
            .node_affinity
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        assert_eq!(terms.len(), 1);
        if let Some(s) = pod.spec.as_mut() {
            s.node_name = Some("n3".into());
        }
        assert_eq!(target_node(&pod).as_deref(), Some("n3"));
    }

    fn np(node: &str, new: Option<bool>, old: Option<bool>) -> NodePods {
        NodePods {
            node: node.into(),
            new: new.map(|a| (format!("{node}-new"), a)),
            old: old.map(|a| (format!("{node}-old"), a)),
        }
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let nodes = [
            np("a", None, Some(true)),
            np("b", None, Some(true)),
            np("c", None, Some(true)),
        ];
        assert_eq!(rolling_update(&nodes, 0, 1).delete, ["a-old"]);
        assert_eq!(rolling_update(&nodes, 0, 2).delete, ["a-old", "b-old"]);
        // A new pod not yet available uses the budget.
        let nodes = [np("a", Some(false), None), np("b", None, Some(true))];
        assert!(rolling_update(&nodes, 0, 1).delete.is_empty());
        // Unavailable old pods go regardless.
        let nodes = [np("a", Some(false), None), np("b", None, Some(false))];
        assert_eq!(rolling_update(&nodes, 0, 1).delete, ["b-old"]);
    }

    #[test]
    fn rolling_update_with_surge_starts_new_before_old_goes() {
        let nodes = [np("a", None, Some(true)), np("b", None, Some(true))];
        let r = rolling_update(&nodes, 1, 0);
        assert_eq!(r.create_on, ["a"]);
        assert!(r.delete.is_empty());
        let nodes = [np("a", Some(false), Some(true)), np("b", None, Some(true))];
        assert_eq!(rolling_update(&nodes, 1, 0), Rollout::default());
        let nodes = [np("a", Some(true), Some(true)), np("b", None, Some(true))];
        let r = rolling_update(&nodes, 1, 0);
        assert_eq!(r.delete, ["a-old"]);
        assert_eq!(r.create_on, ["b"]);
    }

    #[test]
    fn status_counts_eligible_ready_updated_and_misscheduled_nodes() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {"selector": {}, "template": {}}
        }))
        .expect("ds");
        let pod = |name: &str, hash: &str, ready: bool| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {"controller-revision-hash": hash}},
                    "spec": {"nodeName": "x", "containers": []},
                    "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
                }))
                .expect("pod"),
            )
        };
        let nodes = vec![
            Arc::new(node("a", &[], &[])),
            Arc::new(node("b", &[], &[])),
            Arc::new(node("c", &[], &[])),
            Arc::new(node("t", &[], &[("dedicated", "NoSchedule")])),
        ];
        let node_pods: HashMap<String, Vec<Arc<Pod>>> = [
            ("a".to_string(), vec![pod("p1", "h2", true)]),
            ("b".to_string(), vec![pod("p2", "h1", false)]),
            ("t".to_string(), vec![pod("p3", "h2", true)]),
        ]
        .into();
        let s = calculate_status(&ds, &daemon_spec(), &nodes, &node_pods, "h2", 0, Utc::now());
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_misscheduled
            ),
            (3, 2, 1)
        );
        assert_eq!(
            (
                s.number_ready,
                s.number_available,
                s.number_unavailable,
                s.updated_number_scheduled
            ),
            (1, Some(1), Some(2), Some(1))
        );
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn failed_pods_are_replaced_with_a_growing_backoff() {
        let b = FailedBackoff::default();
        assert_eq!(b.wait("ns/d", "n1"), None);
        let w = b.wait("ns/d", "n1").expect("in back-off");
        assert!(w <= FAILED_BACKOFF_INITIAL && !w.is_zero());
        // Other nodes are not held back.
        assert_eq!(b.wait("ns/d", "n2"), None);
    }

    #[test]
    fn max_unavailable_defaults_to_one_and_rounds_up() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {}, "template": {}, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}}
        }))
        .expect("ds");
        assert_eq!(surge_and_unavailable(&ds, 15), (0, 2));
        assert_eq!(surge_and_unavailable(&DaemonSet::default(), 15), (0, 1));
    }
}
