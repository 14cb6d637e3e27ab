//! The node lifecycle controller (upstream's node lifecycle and taint eviction
//! controllers): a node whose Lease (or status heartbeat) is not renewed within the grace
//! period gets its conditions set to `Unknown`; nodes get the `not-ready`/`unreachable`
//! (NoExecute and NoSchedule), pressure and `unschedulable` taints their conditions and
//! spec call for, and lose them when they recover; the pods of a node that is not Ready are
//! marked not Ready; pods on a node with a NoExecute taint they do not tolerate are deleted
//! at once, and those tolerating it for `tolerationSeconds` when that time is up.

use crate::cache::{Cache, Change, Informer};
use crate::pods::Events;
use crate::queue::{is_conflict, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The namespace node agents keep their Leases in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (its agent stopped reporting).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node (`spec.unschedulable`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

const NO_EXECUTE: &str = "NoExecute";
const NO_SCHEDULE: &str = "NoSchedule";

/// The taints this controller owns: (key, effect), and the condition (type, status) or
/// spec field that calls for each.
const MANAGED_TAINTS: &[(&str, &str)] = &[
    (TAINT_NOT_READY, NO_EXECUTE),
    (TAINT_UNREACHABLE, NO_EXECUTE),
    (TAINT_NOT_READY, NO_SCHEDULE),
    (TAINT_UNREACHABLE, NO_SCHEDULE),
    ("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/pid-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/network-unavailable", NO_SCHEDULE),
    (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
];

/// The conditions a node agent reports, set to `Unknown` when it stops reporting.
const REPORTED_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node may go without renewing its Lease (or posting its status) before
    /// its conditions become `Unknown` (upstream's `--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace_period: Duration::from_secs(40),
        }
    }
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
    #[error("failed to encode {0}: {1}")]
    Encode(String, serde_json::Error),
}

impl ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if is_conflict(source))
    }
}

/// A Go-style duration as upstream flags take it: `40s`, `500ms`, `1m30s`, `2h`.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {0:?}: expected e.g. 40s, 500ms, 1m30s")]
pub struct ParseDurationError(String);

/// Parses a Go-style duration (`40s`, `1m30s`, `500ms`; a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseDurationError> {
    let bad = || ParseDurationError(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(n * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

/// When the controller last saw a node's heartbeat change.
struct Health {
    /// The Lease's renewTime and the Ready condition's lastHeartbeatTime.
    heartbeat: (Option<String>, Option<String>),
    probed: Instant,
}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    node_queue: Arc<Queue<String>>,
    pod_queue: Arc<Queue<String>>,
    grace: Duration,
    health: Mutex<HashMap<String, Health>>,
    /// When a NoExecute taint without `timeAdded` was first seen (node, key, effect).
    taints_seen: Mutex<HashMap<(String, String), DateTime<Utc>>>,
    node_events: Events,
    eviction_events: Events,
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == NO_EXECUTE)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>, config: &Config) -> Arc<Controller> {
    let client = cache.client().clone();
    let c = Arc::new(Controller {
        cache: cache.clone(),
        nodes: cache.informer(),
        leases: cache.informer(),
        pods: cache.informer(),
        node_queue: Queue::new(),
        pod_queue: Queue::new(),
        grace: config.node_monitor_grace_period,
        health: Mutex::default(),
        taints_seen: Mutex::default(),
        node_events: Events::new(client.clone(), "node-controller"),
        eviction_events: Events::new(client, "taint-eviction-controller"),
    });
    let (nq, pq, pods) = (c.node_queue.clone(), c.pod_queue.clone(), c.pods.clone());
    c.nodes.subscribe(move |change| {
        let node = change.object();
        nq.add(node.name_any());
        // Pods follow their node's NoExecute taints.
        let (old, new) = match change {
            Change::Applied { old, new } => (
                old.as_ref()
                    .map(|o| no_execute_taints(o))
                    .unwrap_or_default(),
                no_execute_taints(new),
            ),
            Change::Deleted(_) => return,
        };
        if old != new {
            let name = node.name_any();
            for p in pods.list() {
                if node_of(&p) == Some(name.as_str()) {
                    pq.add(pod_key(&p));
                }
            }
        }
    });
    let nq = c.node_queue.clone();
    c.leases.subscribe(move |change| {
        let lease = change.object();
        if lease.namespace().as_deref() == Some(LEASE_NAMESPACE) {
            nq.add(lease.name_any());
        }
    });
    let (pq, nodes) = (c.pod_queue.clone(), c.nodes.clone());
    c.pods.subscribe(move |change| {
        let Change::Applied { new, .. } = change else {
            return;
        };
        if new.metadata.deletion_timestamp.is_some() {
            return;
        }
        let tainted = node_of(new)
            .and_then(|n| nodes.get("", n))
            .is_some_and(|n| !no_execute_taints(&n).is_empty());
        if tainted {
            pq.add(pod_key(new));
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.nodes.wait_synced().await;
    c.leases.wait_synced().await;
    c.pods.wait_synced().await;
    let nodes = {
        let c = c.clone();
        run_workers(
            "node-lifecycle",
            c.node_queue.clone(),
            2,
            move |k: String| {
                let c = c.clone();
                async move { c.reconcile_node(k).await }
            },
            stop.clone(),
        )
    };
    let pods = {
        let c = c.clone();
        run_workers(
            "taint-eviction",
            c.pod_queue.clone(),
            2,
            move |k: String| {
                let c = c.clone();
                async move { c.reconcile_pod(k).await }
            },
            stop,
        )
    };
    tokio::join!(nodes, pods);
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    condition(node, type_).map(|c| c.status.as_str())
}

/// The conditions of a node whose agent stopped reporting: each reported condition becomes
/// `Unknown` (added if the agent never posted it), as upstream's `tryUpdateNodeHealth`.
pub fn unknown_conditions(node: &Node, now: DateTime<Utc>) -> Vec<NodeCondition> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for type_ in REPORTED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            None => conditions.push(NodeCondition {
                type_: (*type_).into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    conditions
}

/// The node's taints with the managed ones made to follow its conditions and spec:
/// unmanaged taints stay as they are, a managed taint that stays keeps its `timeAdded`.
pub fn desired_taints(node: &Node, now: DateTime<Utc>) -> Vec<Taint> {
    let mut want: Vec<(&str, &str)> = Vec::new();
    match condition_status(node, "Ready") {
        Some("False") => want.extend([
            (TAINT_NOT_READY, NO_EXECUTE),
            (TAINT_NOT_READY, NO_SCHEDULE),
        ]),
        Some("Unknown") => want.extend([
            (TAINT_UNREACHABLE, NO_EXECUTE),
            (TAINT_UNREACHABLE, NO_SCHEDULE),
        ]),
        _ => {}
    }
    for (type_, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if condition_status(node, type_) == Some("True") {
            want.push((key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push((TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let managed = |t: &Taint| {
        MANAGED_TAINTS
            .iter()
            .any(|(k, e)| t.key == *k && t.effect == *e)
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == NO_EXECUTE).then_some(Time(now)),
            });
        }
    }
    out
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When a pod on a node with these NoExecute taints must go.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every taint for ever.
    Never,
    /// At this time (now or in the past: at once).
    At(DateTime<Utc>),
}

/// When a pod with `tolerations` must leave a node with NoExecute `taints`, each taint added
/// at the time `added` gives for it: at once for a taint it does not tolerate, else when the
/// shortest `tolerationSeconds` of the tolerations it uses runs out since its taint came.
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    added: impl Fn(&Taint) -> DateTime<Utc>,
) -> Eviction {
    let mut at: Option<DateTime<Utc>> = None;
    for taint in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::At(added(taint));
        };
        if let Some(seconds) = t.toleration_seconds {
            let when = added(taint) + k8s_openapi::chrono::Duration::seconds(seconds.max(0));
            at = Some(at.map_or(when, |a| a.min(when)));
        }
    }
    at.map_or(Eviction::Never, Eviction::At)
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    /// How long since the node's heartbeat last changed (as this controller saw it).
    fn since_heartbeat(&self, node: &Node) -> Duration {
        let name = node.name_any();
        let lease = self.leases.get(LEASE_NAMESPACE, &name).and_then(|l| {
            l.spec
                .as_ref()?
                .renew_time
                .as_ref()
                .map(|t| t.0.to_rfc3339())
        });
        let ready = condition(node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_rfc3339());
        let heartbeat = (lease, ready);
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = health.entry(name).or_insert_with(|| Health {
            heartbeat: heartbeat.clone(),
            probed: Instant::now(),
        });
        if h.heartbeat != heartbeat {
            h.heartbeat = heartbeat;
            h.probed = Instant::now();
        }
        h.probed.elapsed()
    }

    async fn reconcile_node(self: Arc<Self>, name: String) -> Result<Requeue, Error> {
        let Some(node) = self.nodes.get("", &name) else {
            self.health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            return Ok(None);
        };
        let api: Api<Node> = Api::all(self.cache.client().clone());
        let since = self.since_heartbeat(&node);
        let now = Utc::now();
        if since >= self.grace {
            let conditions = unknown_conditions(&node, now);
            let current = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            if current != Some(&conditions) {
                let was_ready = condition_status(&node, "Ready") == Some("True");
                let mut updated = (*node).clone();
                updated.metadata.managed_fields = None;
                updated
                    .status
                    .get_or_insert_with(Default::default)
                    .conditions = Some(conditions);
                let body =
                    serde_json::to_vec(&updated).map_err(|e| Error::Encode(name.clone(), e))?;
                api.replace_status(&name, &PostParams::default(), body)
                    .await
                    .map_err(Self::api_err("mark unknown the conditions of node", &name))?;
                tracing::info!(node = %name, "node stopped posting its status: conditions Unknown");
                if was_ready {
                    self.node_events
                        .normal(
                            &node.object_ref(&()),
                            "NodeNotReady",
                            format!("Node {name} status is now: NodeNotReady"),
                        )
                        .await;
                }
                // The update comes back as an event, which taints the node.
                return Ok(None);
            }
        }
        let taints = desired_taints(&node, now);
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if taints != current {
            let patch = json!({
                "metadata": {"resourceVersion": node.resource_version()},
                "spec": {"taints": taints},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Self::api_err("update the taints of node", &name))?;
        }
        if condition_status(&node, "Ready").is_some_and(|s| s != "True") {
            self.mark_pods_not_ready(&name).await?;
        }
        // Look again when the grace period would run out without a new heartbeat.
        Ok(self
            .grace
            .checked_sub(since)
            .map(|d| d + Duration::from_millis(200)))
    }

    /// Sets the Ready condition of the node's pods to False (upstream's `MarkPodsNotReady`):
    /// their node cannot say whether they still serve.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), Error> {
        for pod in self.pods.list() {
            if node_of(&pod) != Some(node) {
                continue;
            }
            let Some(conditions) = pod.status.as_ref().and_then(|s| s.conditions.as_ref()) else {
                continue;
            };
            if !conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                continue;
            }
            let key = pod_key(&pod);
            let mut updated = (*pod).clone();
            updated.metadata.managed_fields = None;
            if let Some(cs) = updated.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                for c in cs.iter_mut().filter(|c| c.type_ == "Ready") {
                    c.status = "False".into();
                    c.last_transition_time = Some(Time(Utc::now()));
                }
            }
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(key.clone(), e))?;
            let api: Api<Pod> = Api::namespaced(
                self.cache.client().clone(),
                &pod.namespace().unwrap_or_default(),
            );
            match api
                .replace_status(&pod.name_any(), &PostParams::default(), body)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => return Err(Self::api_err("mark not ready pod", &key)(e)),
            }
            self.node_events
                .warning(
                    &pod.object_ref(&()),
                    "NodeNotReady",
                    "Node is not ready".into(),
                )
                .await;
        }
        Ok(())
    }

    /// When a NoExecute taint was added: its `timeAdded`, else when this controller first
    /// saw it.
    fn taint_added(&self, node: &str, taint: &Taint) -> DateTime<Utc> {
        if let Some(t) = &taint.time_added {
            return t.0;
        }
        let mut seen = self.taints_seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen
            .entry((node.to_string(), format!("{}:{}", taint.key, taint.effect)))
            .or_insert_with(Utc::now)
    }

    async fn reconcile_pod(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = k.split_once('/').unwrap_or(("", &k));
        let Some(pod) = self.pods.get(ns, name) else {
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(node_name) = node_of(&pod) else {
            return Ok(None);
        };
        let Some(node) = self.nodes.get("", node_name) else {
            return Ok(None);
        };
        let taints = no_execute_taints(&node);
        if taints.is_empty() {
            return Ok(None);
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let now = Utc::now();
        match eviction_time(&taints, &tolerations, |t| self.taint_added(node_name, t)) {
            Eviction::Never => Ok(None),
            Eviction::At(at) if at > now => Ok(Some(
                (at - now).to_std().unwrap_or_default() + Duration::from_millis(50),
            )),
            Eviction::At(_) => {
                self.evict(&pod, &k).await?;
                Ok(None)
            }
        }
    }

    /// Deletes a pod its node's NoExecute taints no longer allow, marking it as a
    /// disruption first.
    async fn evict(&self, pod: &Pod, k: &str) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(
            self.cache.client().clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let mut updated = pod.clone();
        updated.metadata.managed_fields = None;
        let status = updated.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if !conditions.iter().any(|c| c.type_ == "DisruptionTarget") {
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByTaintManager".into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(Time(Utc::now())),
                ..Default::default()
            });
            let body = serde_json::to_vec(&updated).map_err(|e| Error::Encode(k.into(), e))?;
            // Best effort: the deletion is what matters.
            if let Err(e) = api
                .replace_status(&pod.name_any(), &PostParams::default(), body)
                .await
            {
                tracing::debug!("taint eviction of {k}: DisruptionTarget condition: {e}");
            }
        }
        self.eviction_events
            .normal(
                &pod.object_ref(&()),
                "TaintManagerEviction",
                format!("Marking for deletion Pod {k}"),
            )
            .await;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(Self::api_err("delete pod", k)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .unwrap_or_default()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: Some(Time(at(0))),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn added(t: &Taint) -> DateTime<Utc> {
        t.time_added.as_ref().map(|t| t.0).unwrap_or_default()
    }

    #[test]
    fn untolerated_taints_evict_at_once_and_tolerated_ones_after_their_seconds() {
        let unreachable = [taint(TAINT_UNREACHABLE, NO_EXECUTE)];
        assert_eq!(eviction_time(&unreachable, &[], added), Eviction::At(at(0)));
        let five = [toleration(TAINT_UNREACHABLE, Some(5))];
        assert_eq!(
            eviction_time(&unreachable, &five, added),
            Eviction::At(at(5))
        );
        let ever = [toleration(TAINT_UNREACHABLE, None)];
        assert_eq!(eviction_time(&unreachable, &ever, added), Eviction::Never);
        // The shortest toleration among the taints wins; a negative one is zero.
        let both = [
            taint(TAINT_UNREACHABLE, NO_EXECUTE),
            taint(TAINT_NOT_READY, NO_EXECUTE),
        ];
        let tols = [
            toleration(TAINT_UNREACHABLE, Some(300)),
            toleration(TAINT_NOT_READY, Some(-1)),
        ];
        assert_eq!(eviction_time(&both, &tols, added), Eviction::At(at(0)));
        // A toleration for another key does not help.
        let other = [toleration("example.com/x", None)];
        assert_eq!(
            eviction_time(&unreachable, &other, added),
            Eviction::At(at(0))
        );
        // An empty key with Exists tolerates everything.
        let all = [Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        assert_eq!(eviction_time(&both, &all, added), Eviction::Never);
    }

    #[test]
    fn equal_tolerations_compare_values() {
        let mut t = taint("dedicated", NO_EXECUTE);
        t.value = Some("gpu".into());
        let tol = Toleration {
            key: Some("dedicated".into()),
            value: Some("gpu".into()),
            ..Default::default()
        };
        assert!(tolerates(&tol, &t));
        let wrong = Toleration {
            value: Some("db".into()),
            ..tol
        };
        assert!(!tolerates(&wrong, &t));
    }

    fn node(ready: &str, unschedulable: bool, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taints_follow_conditions_and_keep_their_time() {
        let custom = taint("example.com/x", NO_EXECUTE);
        let n = node("Unknown", true, vec![custom.clone()]);
        let t = desired_taints(&n, at(10));
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("example.com/x", NO_EXECUTE),
                (TAINT_UNREACHABLE, NO_EXECUTE),
                (TAINT_UNREACHABLE, NO_SCHEDULE),
                (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
            ]
        );
        assert_eq!(t[1].time_added, Some(Time(at(10))));
        assert_eq!(t[2].time_added, None);
        // Still unreachable later: the taint keeps when it came.
        let again = desired_taints(&node("Unknown", true, t.clone()), at(99));
        assert_eq!(again, t);
        // Ready again and uncordoned: only the unmanaged taint stays.
        assert_eq!(desired_taints(&node("True", false, t), at(100)), [custom]);
        let not_ready = desired_taints(&node("False", false, vec![]), at(1));
        assert_eq!(not_ready[0].key, TAINT_NOT_READY);
    }

    #[test]
    fn silent_nodes_get_unknown_conditions() {
        let n = node("True", false, vec![]);
        let cs = unknown_conditions(&n, at(5));
        assert_eq!(cs.len(), REPORTED_CONDITIONS.len());
        assert_eq!(cs[0].status, "Unknown");
        assert_eq!(cs[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            cs[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(cs[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        // Already Unknown: nothing changes.
        let mut n2 = n.clone();
        if let Some(s) = n2.status.as_mut() {
            s.conditions = Some(cs.clone());
        }
        assert_eq!(unknown_conditions(&n2, at(50)), cs);
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("40s").ok(), Some(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("12").ok(), Some(Duration::from_secs(12)));
        assert!(parse_duration("forty").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
