//! The scheduler's in-memory view of the cluster, updated incrementally from watch events:
//! each node with what its pods already take (requests, host ports, pods with affinity
//! terms), the pods bound or assumed bound to nodes, and namespace labels. A pod the
//! scheduler has chosen a node for is "assumed" onto it at once, before its binding is
//! confirmed by the watch, as upstream's scheduler cache does.

use crate::podinfo::{HostPort, PodInfo, Resources};
use crate::selectors::Labels;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use std::collections::HashMap;
use std::sync::Arc;

/// A node and what its pods take.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// The Node object; `None` while only pods bound to the name are known.
    pub node: Option<Arc<Node>>,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// The `pods` allocatable: how many pods the node takes.
    pub allowed_pods: i64,
    /// Sum of the requests of its pods.
    pub requested: Resources,
    /// Sum of the non-zero requests (upstream's defaults for unset ones), for scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: HashMap<String, Arc<PodInfo>>,
    /// Its pods with any inter-pod affinity or anti-affinity term.
    pub pods_with_affinity: HashMap<String, Arc<PodInfo>>,
    /// Host ports in use (one entry per container port).
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    fn new(name: &str) -> Self {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Takes the facts of a Node object.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        self.allocatable = Resources::from_list(allocatable);
        self.allowed_pods = allocatable
            .and_then(|a| a.get("pods"))
            .and_then(|q| crate::quantity::value(&q.0))
            .unwrap_or(0);
        self.node = Some(node);
    }

    fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        let key = pod.key();
        if pod.has_affinity() {
            self.pods_with_affinity.insert(key.clone(), pod.clone());
        }
        self.pods.insert(key, pod);
    }

    fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let pod = self.pods.remove(key)?;
        self.pods_with_affinity.remove(key);
        self.requested.sub(&pod.requests);
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        Some(pod)
    }
}

/// What a Node update changed, for deciding which waiting pods to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Labels, taints, unschedulable, allocatable or condition statuses changed.
    SchedulingProperties,
    /// Only heartbeats or other fields the scheduler does not read.
    Unchanged,
}

/// Where a pod the cache holds is.
#[derive(Debug, Clone)]
struct PodPlace {
    node: String,
    /// Chosen by this scheduler, its binding not yet seen on the watch.
    assumed: bool,
}

/// The cluster as the scheduler sees it.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: HashMap<String, NodeInfo>,
    /// Names of the nodes with a Node object, in the order nodes are tried.
    pub order: Vec<String>,
    pods: HashMap<String, PodPlace>,
    pub namespaces: HashMap<String, Labels>,
    /// How many cached pods have required anti-affinity terms (a pending pod checks them
    /// only when there are some).
    pub required_anti_affinity_pods: usize,
    /// How many cached pods have any affinity term.
    pub affinity_pods: usize,
}

impl Cache {
    /// Adds or updates a Node.
    pub fn set_node(&mut self, node: Arc<Node>) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self
            .nodes
            .entry(name.clone())
            .or_insert_with(|| NodeInfo::new(&name));
        let change = match &info.node {
            None => {
                self.order.push(name);
                NodeChange::Added
            }
            Some(old) if scheduling_properties_changed(old, &node) => {
                NodeChange::SchedulingProperties
            }
            Some(_) => NodeChange::Unchanged,
        };
        info.set_node(node);
        change
    }

    /// Removes a Node (its pods stay known until they go).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            info.labels.clear();
            info.taints.clear();
            info.unschedulable = false;
            info.allocatable = Resources::default();
            info.allowed_pods = 0;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
        if let Some(i) = self.order.iter().position(|n| n == name) {
            self.order.remove(i);
        }
    }

    /// Adds or replaces a pod bound to a node (confirming it if it was assumed). Returns
    /// true when the pod is new to the cache or its labels or node changed.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) -> bool {
        let key = pod.key();
        let previous = self.remove_pod(&key);
        let changed = previous
            .as_ref()
            .is_none_or(|p| p.labels != pod.labels || p.node_name != pod.node_name);
        self.insert(key, pod, false);
        changed
    }

    /// Assumes `pod` (its `node_name` set to the chosen node) onto its node before the
    /// binding is confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>) {
        let key = pod.key();
        self.remove_pod(&key);
        self.insert(key, pod, true);
    }

    fn insert(&mut self, key: String, pod: Arc<PodInfo>, assumed: bool) {
        if !pod.required_anti_affinity.is_empty() {
            self.required_anti_affinity_pods += 1;
        }
        if pod.has_affinity() {
            self.affinity_pods += 1;
        }
        let node = pod.node_name.clone();
        self.nodes
            .entry(node.clone())
            .or_insert_with(|| NodeInfo::new(&node))
            .add_pod(pod);
        self.pods.insert(key, PodPlace { node, assumed });
    }

    /// Whether the pod is assumed and not yet confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Whether the cache holds the pod (bound or assumed).
    pub fn has_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Keys of every cached pod.
    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Forgets an assumed pod whose binding failed. Returns true if it was assumed.
    pub fn forget(&mut self, key: &str) -> bool {
        if self.is_assumed(key) {
            self.remove_pod(key);
            true
        } else {
            false
        }
    }

    /// Removes a pod (deleted, or finished); returns it if it was cached.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let place = self.pods.remove(key)?;
        let info = self.nodes.get_mut(&place.node)?;
        let pod = info.remove_pod(key)?;
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(&place.node);
        }
        if !pod.required_anti_affinity.is_empty() {
            self.required_anti_affinity_pods -= 1;
        }
        if pod.has_affinity() {
            self.affinity_pods -= 1;
        }
        Some(pod)
    }

    /// A node that has a Node object.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    /// Labels of a namespace, if known.
    pub fn namespace_labels(&self, name: &str) -> Option<Labels> {
        self.namespaces.get(name).cloned()
    }
}

/// Whether a Node update changed anything filters or scores read (upstream's
/// `nodeSchedulingPropertiesChange`).
fn scheduling_properties_changed(old: &Node, new: &Node) -> bool {
    let spec = |n: &Node| {
        let s = n.spec.clone().unwrap_or_default();
        (
            s.unschedulable.unwrap_or(false),
            s.taints.unwrap_or_default(),
        )
    };
    let allocatable = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    let conditions = |n: &Node| -> Vec<(String, String)> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c: &NodeCondition| (c.type_.clone(), c.status.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
        || spec(old) != spec(new)
        || allocatable(old) != allocatable(new)
        || conditions(old) != conditions(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn pods_add_and_remove_their_requests() {
        let mut cache = Cache::default();
        assert_eq!(
            cache.set_node(node(json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}))),
            NodeChange::Added
        );
        let p = pod(
            json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "500m"}}, "ports": [{"containerPort": 80, "hostPort": 80}]}]}}),
        );
        assert!(cache.add_pod(p.clone()));
        let n = &cache.nodes["n1"];
        assert_eq!(n.requested.milli_cpu, 500);
        assert_eq!(n.used_ports.len(), 1);
        assert_eq!(n.allowed_pods, 110);
        // The same pod again changes nothing.
        assert!(!cache.add_pod(p));
        assert!(cache.remove_pod("default/a").is_some());
        let n = &cache.nodes["n1"];
        assert_eq!(n.requested.milli_cpu, 0);
        assert!(n.used_ports.is_empty());
    }

    #[test]
    fn assumed_pods_are_forgotten_or_confirmed() {
        let mut cache = Cache::default();
        cache.set_node(node(json!({"metadata": {"name": "n1"}})));
        let p = pod(
            json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1", "containers": []}}),
        );
        cache.assume(p.clone());
        assert!(cache.is_assumed("default/a"));
        assert!(cache.forget("default/a"));
        assert!(!cache.has_pod("default/a"));
        cache.assume(p.clone());
        cache.add_pod(p);
        assert!(!cache.is_assumed("default/a"));
        assert!(!cache.forget("default/a"));
    }

    #[test]
    fn heartbeats_are_not_scheduling_changes() {
        let mut cache = Cache::default();
        let base = json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}});
        cache.set_node(node(base.clone()));
        let mut beat = base.clone();
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:10Z");
        assert_eq!(cache.set_node(node(beat)), NodeChange::Unchanged);
        let mut tainted = base;
        tainted["spec"] = json!({"taints": [{"key": "k", "effect": "NoSchedule"}]});
        assert_eq!(
            cache.set_node(node(tainted)),
            NodeChange::SchedulingProperties
        );
        cache.remove_node("n1");
        assert!(cache.order.is_empty());
        assert!(cache.node("n1").is_none());
    }
}
