//! The scheduling loop: watches pods, nodes and namespaces into the [`Cache`] and the
//! [`SchedulingQueue`], and schedules one pending pod at a time (filter a sample of nodes as
//! upstream's `percentageOfNodesToScore`, score the feasible ones, pick the best with ties
//! broken at random), assumes it onto the chosen node and binds it through the
//! `pods/binding` subresource in the background, several binds in flight. A pod that fits
//! nowhere gets `PodScheduled=False` (`Unschedulable`, upstream's message) and a
//! `FailedScheduling` event, and waits for a cluster change that may help it.

use crate::cache::{Cache, NodeChange};
use crate::events::Recorder;
use crate::filters::{self, kind, Code, PreFilter};
use crate::podinfo::PodInfo;
use crate::queue::SchedulingQueue;
use crate::scores;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use rand::Rng;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every filter kind: a change that may help any waiting pod.
const ALL_KINDS: u8 = u8::MAX;
/// Below this many nodes every node is filtered (upstream's `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest adaptive share of nodes filtered (upstream's
/// `minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
/// How many pods are scheduled between yields to the other tasks of the runtime.
const YIELD_EVERY: usize = 8;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Binds (and unschedulable reports) in flight at once.
    pub parallel_binds: usize,
    /// Share of nodes to find feasible before scoring; 0 is upstream's adaptive default
    /// (50% minus 1% per 125 nodes, at least 5%, at least 100 nodes).
    pub percentage_of_nodes_to_score: usize,
    /// The reporting instance named in Events (the host name).
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            parallel_binds: 64,
            percentage_of_nodes_to_score: 0,
            instance: format!(
                "{}-{}",
                crate::SCHEDULER_NAME,
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_lowercase())
                    .unwrap_or_default()
            ),
        }
    }
}

/// What the loop learns from its watches and its binds. Watch events are large and short
/// lived; boxing them would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Update {
    Pod(Event<Pod>),
    Node(Event<Node>),
    Namespace(Event<Namespace>),
    /// A binding the API refused; `retry` unless the pod is gone or bound already.
    BindFailed {
        pod: Arc<PodInfo>,
        retry: bool,
    },
}

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()> + Send) {
    let (tx, rx) = unbounded_channel();
    let watches = [
        forward(Api::<Pod>::all(client.clone()), tx.clone(), Update::Pod),
        forward(Api::<Node>::all(client.clone()), tx.clone(), Update::Node),
        forward(
            Api::<Namespace>::all(client.clone()),
            tx.clone(),
            Update::Namespace,
        ),
    ];
    let recorder = Arc::new(Recorder::new(client.clone(), config.instance.clone()));
    let scheduler = Scheduler {
        client,
        binds: Arc::new(Semaphore::new(config.parallel_binds.max(1))),
        config,
        cache: Cache::default(),
        queue: SchedulingQueue::default(),
        recorder,
        updates: tx,
        next_start: 0,
        synced: [false; 3],
        relist_pods: None,
        relist_nodes: None,
    };
    scheduler.run(rx, shutdown).await;
    for w in watches {
        w.abort();
    }
}

/// Forwards a watch's events to the loop, retrying the watch with back-off on errors.
fn forward<K>(
    api: Api<K>,
    tx: UnboundedSender<Update>,
    wrap: fn(Event<K>) -> Update,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if tx.send(wrap(event)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!("scheduler watch: {e}"),
            }
        }
    })
}

struct Scheduler {
    client: Client,
    config: Config,
    cache: Cache,
    queue: SchedulingQueue,
    recorder: Arc<Recorder>,
    binds: Arc<Semaphore>,
    updates: UnboundedSender<Update>,
    /// Where the next pod starts trying nodes (upstream's `nextStartNodeIndex`).
    next_start: usize,
    /// Pods, nodes and namespaces listed once.
    synced: [bool; 3],
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
}

/// Why a pod fits no node, as upstream's `FitError` tells it.
#[derive(Debug, Default)]
pub struct FitError {
    pub num_nodes: usize,
    /// Reason → how many nodes gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Nodes whose failure preemption might resolve / never could.
    pub resolvable: usize,
    pub unresolvable: usize,
    /// The filter kinds that failed (which cluster changes may help).
    pub kinds: u8,
    /// The pod's `preemptionPolicy` is `Never`.
    pub never_preempts: bool,
}

impl FitError {
    /// Upstream's message: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't
    /// match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No
    /// preemption victims found for incoming pod, 2 Preemption is not helpful for
    /// scheduling.`
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        let n = self.num_nodes;
        let mut msg = format!("0/{n} nodes are available: {}.", parts.join(", "));
        if self.never_preempts {
            msg.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
            return msg;
        }
        let mut preemption = Vec::new();
        if self.resolvable > 0 {
            preemption.push(format!(
                "{} No preemption victims found for incoming pod",
                self.resolvable
            ));
        }
        if self.unresolvable > 0 {
            preemption.push(format!(
                "{} Preemption is not helpful for scheduling",
                self.unresolvable
            ));
        }
        preemption.sort();
        msg.push_str(&format!(
            " preemption: 0/{n} nodes are available: {}.",
            preemption.join(", ")
        ));
        msg
    }

    /// The pod condition's reason: `Unschedulable`, or `SchedulerError` with no nodes.
    pub fn reason(&self) -> &'static str {
        if self.num_nodes == 0 {
            "SchedulerError"
        } else {
            "Unschedulable"
        }
    }
}

/// How many feasible nodes to find before scoring, as upstream's `numFeasibleNodesToFind`.
pub fn num_feasible_nodes_to_find(percentage: usize, num_nodes: usize) -> usize {
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_nodes;
    }
    let percentage = if percentage == 0 {
        50usize
            .saturating_sub(num_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE)
    } else {
        percentage.min(100)
    };
    (num_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Chooses a node for `pod` from `cache`: filters nodes from `*next_start` on until enough
/// are feasible, scores those, and picks the best (ties at random).
pub fn find_node(
    pod: &PodInfo,
    cache: &Cache,
    percentage: usize,
    next_start: &mut usize,
) -> Result<String, FitError> {
    let n = cache.order.len();
    let never_preempts = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never");
    if n == 0 {
        return Err(FitError {
            kinds: ALL_KINDS,
            never_preempts,
            ..Default::default()
        });
    }
    let pre = PreFilter::compute(pod, cache);
    let wanted = num_feasible_nodes_to_find(percentage, n);
    let start = *next_start % n;
    let mut feasible = Vec::new();
    let mut error = FitError {
        num_nodes: n,
        never_preempts,
        ..Default::default()
    };
    let mut processed = 0;
    for i in 0..n {
        let Some(info) = cache.node(&cache.order[(start + i) % n]) else {
            continue;
        };
        processed += 1;
        match filters::run(pod, info, &pre, cache) {
            Ok(()) => {
                feasible.push(info);
                if feasible.len() >= wanted {
                    break;
                }
            }
            Err(f) => {
                for r in f.reasons {
                    *error.reasons.entry(r).or_insert(0) += 1;
                }
                match f.code {
                    Code::Unschedulable => error.resolvable += 1,
                    Code::UnschedulableAndUnresolvable => error.unresolvable += 1,
                }
                error.kinds |= f.kind;
            }
        }
    }
    *next_start = (start + processed) % n;
    match feasible.len() {
        0 => Err(error),
        1 => Ok(feasible[0].name.clone()),
        _ => {
            let scores = scores::score(pod, &feasible, cache);
            let mut best = 0;
            let mut best_score = i64::MIN;
            let mut ties = 0u32;
            let mut rng = rand::thread_rng();
            for (i, s) in scores.iter().enumerate() {
                if *s > best_score {
                    best_score = *s;
                    best = i;
                    ties = 1;
                } else if *s == best_score {
                    // Reservoir sampling: each tied node is chosen with equal chance.
                    ties += 1;
                    if rng.gen_range(0..ties) == 0 {
                        best = i;
                    }
                }
            }
            Ok(feasible[best].name.clone())
        }
    }
}

impl Scheduler {
    async fn run(mut self, mut rx: UnboundedReceiver<Update>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut since_yield = 0;
        loop {
            while let Ok(u) = rx.try_recv() {
                self.apply(u);
            }
            let now = Instant::now();
            self.queue.flush(now);
            let ready = self.synced.iter().all(|s| *s) && self.queue.has_active();
            if ready {
                if let Ok(permit) = self.binds.clone().try_acquire_owned() {
                    if let Some(pod) = self.queue.pop(now) {
                        self.schedule_one(pod, permit, now);
                    }
                    since_yield += 1;
                    if since_yield >= YIELD_EVERY {
                        since_yield = 0;
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            }
            let deadline = self.queue.next_deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| {
                        tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
                    }),
            );
            let binds = self.binds.clone();
            tokio::select! {
                _ = &mut shutdown => return,
                u = rx.recv() => match u {
                    Some(u) => self.apply(u),
                    None => return,
                },
                _ = sleep => {}
                permit = binds.acquire_owned(), if ready => drop(permit),
            }
        }
    }

    fn schedule_one(&mut self, pod: Arc<PodInfo>, permit: OwnedSemaphorePermit, now: Instant) {
        let key = pod.key();
        match find_node(
            &pod,
            &self.cache,
            self.config.percentage_of_nodes_to_score,
            &mut self.next_start,
        ) {
            Ok(node) => {
                let mut assumed = (*pod).clone();
                assumed.node_name = node.clone();
                self.cache.assume(Arc::new(assumed));
                self.queue.done(&key);
                let (client, recorder, tx) = (
                    self.client.clone(),
                    self.recorder.clone(),
                    self.updates.clone(),
                );
                tokio::spawn(async move {
                    bind(&client, &recorder, &tx, pod, &node).await;
                    drop(permit);
                });
            }
            Err(fit) => {
                tracing::debug!(pod = %key, "unschedulable: {}", fit.message());
                self.queue.unschedulable(&key, fit.kinds, now);
                let (client, recorder) = (self.client.clone(), self.recorder.clone());
                tokio::spawn(async move {
                    report_unschedulable(&client, &recorder, &pod, &fit).await;
                    drop(permit);
                });
            }
        }
    }

    fn apply(&mut self, update: Update) {
        let now = Instant::now();
        match update {
            Update::Pod(event) => match event {
                Event::Init => self.relist_pods = Some(HashSet::new()),
                Event::InitApply(pod) | Event::Apply(pod) => {
                    let info = Arc::new(PodInfo::new(Arc::new(pod)));
                    if let Some(seen) = self.relist_pods.as_mut() {
                        seen.insert(info.key());
                    }
                    self.pod_applied(info, now);
                }
                Event::Delete(pod) => {
                    let info = PodInfo::new(Arc::new(pod));
                    self.pod_deleted(&info.key(), now);
                }
                Event::InitDone => {
                    if let Some(seen) = self.relist_pods.take() {
                        let known = self.cache.pod_keys().into_iter().chain(self.queue.keys());
                        let gone: Vec<String> = known.filter(|k| !seen.contains(k)).collect();
                        for k in gone {
                            self.pod_deleted(&k, now);
                        }
                    }
                    self.synced[0] = true;
                }
            },
            Update::Node(event) => match event {
                Event::Init => self.relist_nodes = Some(HashSet::new()),
                Event::InitApply(node) | Event::Apply(node) => {
                    if let Some(seen) = self.relist_nodes.as_mut() {
                        seen.insert(node.metadata.name.clone().unwrap_or_default());
                    }
                    if self.cache.set_node(Arc::new(node)) != NodeChange::Unchanged {
                        self.queue.move_unschedulable(ALL_KINDS, now);
                    }
                }
                Event::Delete(node) => {
                    self.cache
                        .remove_node(node.metadata.name.as_deref().unwrap_or_default());
                }
                Event::InitDone => {
                    if let Some(seen) = self.relist_nodes.take() {
                        let gone: Vec<String> = self
                            .cache
                            .order
                            .iter()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect();
                        for n in gone {
                            self.cache.remove_node(&n);
                        }
                    }
                    self.synced[1] = true;
                }
            },
            Update::Namespace(event) => match event {
                Event::Init => {}
                Event::InitApply(ns) | Event::Apply(ns) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    let labels = ns.metadata.labels.clone().unwrap_or_default();
                    if self.cache.namespaces.insert(name, labels.clone()) != Some(labels) {
                        self.queue.move_unschedulable(
                            kind::POD_AFFINITY | kind::EXISTING_ANTI_AFFINITY,
                            now,
                        );
                    }
                }
                Event::Delete(ns) => {
                    self.cache
                        .namespaces
                        .remove(ns.metadata.name.as_deref().unwrap_or_default());
                }
                Event::InitDone => self.synced[2] = true,
            },
            Update::BindFailed { pod, retry } => {
                let key = pod.key();
                if self.cache.forget(&key) {
                    // The node's resources are free again for others.
                    self.queue.move_unschedulable(ALL_KINDS, now);
                    if retry {
                        self.queue.retry(pod, now);
                    }
                }
            }
        }
    }

    fn pod_applied(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key();
        if !info.node_name.is_empty() {
            self.queue.remove(&key);
            if info.terminal {
                // A finished pod holds nothing (upstream's cache drops terminal pods).
                if self.cache.remove_pod(&key).is_some() {
                    self.queue.move_unschedulable(ALL_KINDS & !kind::NODE, now);
                }
            } else if self.cache.add_pod(info) {
                self.queue
                    .move_unschedulable(kind::POD_AFFINITY | kind::SPREAD, now);
            }
            return;
        }
        if self.cache.is_assumed(&key) {
            // Our binding is on its way; this is an older state of the pod.
            return;
        }
        if self.cache.remove_pod(&key).is_some() {
            self.queue.move_unschedulable(ALL_KINDS & !kind::NODE, now);
        }
        let gated = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if info.scheduler_name != crate::SCHEDULER_NAME || info.deleting || info.terminal || gated {
            self.queue.remove(&key);
            return;
        }
        self.queue.add_or_update(info, now);
    }

    fn pod_deleted(&mut self, key: &str, now: Instant) {
        self.queue.remove(key);
        if self.cache.remove_pod(key).is_some() {
            self.queue.move_unschedulable(ALL_KINDS & !kind::NODE, now);
        }
    }
}

/// Binds `pod` to `node` and records `Scheduled`; reports a refused binding to the loop.
async fn bind(
    client: &Client,
    recorder: &Recorder,
    updates: &UnboundedSender<Update>,
    pod: Arc<PodInfo>,
    node: &str,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let body = serde_json::to_vec(&binding).unwrap_or_default();
    match api
        .create_subresource::<serde_json::Value>("binding", &pod.name, &PostParams::default(), body)
        .await
    {
        Ok(_) => {
            let message = format!(
                "Successfully assigned {}/{} to {node}",
                pod.namespace, pod.name
            );
            recorder
                .record(&pod, "Normal", "Scheduled", "Binding", &message)
                .await;
        }
        Err(e) => {
            // Gone, or bound by someone else: the watch tells the rest.
            let retry = !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            tracing::warn!(
                "failed to bind pod {}/{} to node {node}: {e}",
                pod.namespace,
                pod.name
            );
            let _ = updates.send(Update::BindFailed { pod, retry });
        }
    }
}

/// Records `FailedScheduling` and sets the pod's `PodScheduled=False` condition (unless it
/// says so already).
async fn report_unschedulable(client: &Client, recorder: &Recorder, pod: &PodInfo, fit: &FitError) {
    let message = fit.message();
    recorder
        .record(pod, "Warning", "FailedScheduling", "Scheduling", &message)
        .await;
    let current = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(fit.reason())
            && c.message.as_deref() == Some(message.as_str())
    }) {
        return;
    }
    let transition = current
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| json!(t))
        .unwrap_or_else(|| {
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        });
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": fit.reason(),
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    if let Err(e) = api
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        tracing::debug!(
            "failed to update the condition of pod {}/{}: {e}",
            pod.namespace,
            pod.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn fit_error_message_as_upstream() {
        let mut e = FitError {
            num_nodes: 3,
            resolvable: 1,
            unresolvable: 2,
            ..Default::default()
        };
        e.reasons.insert("Insufficient cpu".into(), 1);
        e.reasons.insert(
            "node(s) didn't match Pod's node affinity/selector".into(),
            2,
        );
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        e.never_preempts = true;
        assert!(e
            .message()
            .ends_with(" preemption: not eligible due to preemptionPolicy=Never."));
        assert_eq!(
            FitError::default().message(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn sampling_as_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 200), 100);
        assert_eq!(num_feasible_nodes_to_find(100, 1000), 1000);
    }

    #[test]
    fn find_node_picks_a_fitting_node_and_explains_failures() {
        let mut cache = Cache::default();
        for (name, cpu, zone) in [("n1", "1", "a"), ("n2", "4", "a"), ("n3", "4", "b")] {
            cache.set_node(node(json!({"metadata": {"name": name, "labels": {"zone": zone}}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}})));
        }
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": {"zone": "a"}, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}}),
        );
        let mut start = 0;
        assert_eq!(
            find_node(&p, &cache, 0, &mut start).ok().as_deref(),
            Some("n2")
        );
        let big = pod(
            json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": {"zone": "a"}, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "8"}}}]}}),
        );
        let err = find_node(&big, &cache, 0, &mut start)
            .err()
            .map(|e| e.message());
        assert_eq!(
            err.as_deref(),
            Some("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.")
        );
    }

    #[test]
    fn assumed_pods_take_room_at_once() {
        let mut cache = Cache::default();
        for name in ["n1", "n2"] {
            cache.set_node(node(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "1", "memory": "8Gi", "pods": "110"}}})));
        }
        let mut start = 0;
        let mut placed = Vec::new();
        for i in 0..2 {
            let p = pod(
                json!({"metadata": {"name": format!("p{i}")}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "600m"}}}]}}),
            );
            let n = find_node(&p, &cache, 0, &mut start).unwrap_or_default();
            let mut a = (*p).clone();
            a.node_name = n.clone();
            cache.assume(Arc::new(a));
            placed.push(n);
        }
        placed.sort();
        assert_eq!(placed, ["n1", "n2"]);
        let p = pod(
            json!({"metadata": {"name": "p3"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "600m"}}}]}}),
        );
        assert!(find_node(&p, &cache, 0, &mut start).is_err());
    }
}
