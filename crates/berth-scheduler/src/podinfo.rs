//! What the scheduler needs to know about a pod, computed once when the pod is seen: its
//! resource requests (upstream's init-container and sidecar rules), host ports, node
//! selection, tolerations, inter-pod affinity terms and topology spread constraints.

use crate::quantity;
use crate::selectors::{Labels, Operator, Requirement, Selector};
use k8s_openapi::api::core::v1::{
    Container, NodeSelectorTerm, Pod, PodAffinityTerm, PreferredSchedulingTerm, Toleration,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The cpu request counted for scoring when a container requests none (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory request counted for scoring when a container requests none (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of resources: requests of a pod, or what a node can hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources, hugepages and anything else, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a resource list (`requests`, `allocatable`); quantities that do not parse
    /// count as zero (the API server validates them).
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, text: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli(text).unwrap_or(0),
            "memory" => self.memory = quantity::value(text).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(text).unwrap_or(0),
            // The pods count is a node's, never a request.
            "pods" => {}
            other => {
                self.scalar
                    .insert(other.to_string(), quantity::value(text).unwrap_or(0));
            }
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Raises each amount of `self` to at least `other`'s.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// True when nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A host port a container asks for: protocol, host IP (`0.0.0.0` when unset) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The namespaces an affinity term looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermNamespaces {
    /// Named namespaces (`namespaces`, or the pod's own when neither field is set).
    pub names: BTreeSet<String>,
    /// `namespaceSelector`, matched against namespace labels (`{}` is every namespace).
    pub selector: Option<Selector>,
}

/// An inter-pod affinity term, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    pub namespaces: TermNamespaces,
    pub selector: Selector,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, pod_namespace: &str, pod_labels: &Labels) -> Self {
        let mut selector = Selector::from_label_selector(term.label_selector.as_ref());
        // matchLabelKeys / mismatchLabelKeys take their values from the incoming pod.
        if term.label_selector.is_some() {
            for key in term.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(key) {
                    selector.add(Requirement {
                        key: key.clone(),
                        operator: Operator::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for key in term.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(key) {
                    selector.add(Requirement {
                        key: key.clone(),
                        operator: Operator::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let mut names: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let ns_selector = term
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if names.is_empty() && ns_selector.is_none() {
            names.insert(pod_namespace.to_string());
        }
        AffinityTerm {
            namespaces: TermNamespaces {
                names,
                selector: ns_selector,
            },
            selector,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one this term selects; `namespace_labels` looks up a namespace's
    /// labels for `namespaceSelector`.
    pub fn matches(
        &self,
        pod: &PodInfo,
        namespace_labels: &dyn Fn(&str) -> Option<Labels>,
    ) -> bool {
        let in_namespace = self.namespaces.names.contains(&pod.namespace)
            || self.namespaces.selector.as_ref().is_some_and(|s| {
                namespace_labels(&pod.namespace).is_some_and(|labels| s.matches(&labels))
            });
        in_namespace && self.selector.matches(&pod.labels)
    }
}

/// A weighted (preferred) inter-pod affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTerm {
    pub weight: i64,
    pub term: AffinityTerm,
}

/// What a topology spread constraint does when it cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

/// A topology spread constraint, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    pub selector: Selector,
    pub min_domains: Option<i64>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node
    /// selector and required affinity count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: only nodes whose taints the pod tolerates count.
    pub honor_node_taints: bool,
}

/// The scheduling facts of one pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub node_name: String,
    pub scheduler_name: String,
    pub priority: i32,
    /// Succeeded or Failed: holds no resources.
    pub terminal: bool,
    pub deleting: bool,
    pub requests: Resources,
    /// Requests with upstream's defaults for containers that request no cpu or memory,
    /// used for scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedTerm>,
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    pub spread_constraints: Vec<SpreadConstraint>,
}

impl PodInfo {
    /// Computes a pod's scheduling facts.
    pub fn new(pod: Arc<Pod>) -> Self {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let labels: Labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        let (requests, non_zero) = pod_requests(&spec);
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|h| h > 0))
            .map(|p| HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port: p.host_port.unwrap_or(0),
            })
            .collect();
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_affinity = affinity.node_affinity.unwrap_or_default();
        let pod_affinity = affinity.pod_affinity.unwrap_or_default();
        let anti = affinity.pod_anti_affinity.unwrap_or_default();
        let parse_terms = |terms: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::parse(t, &namespace, &labels))
                .collect()
        };
        let parse_weighted =
            |terms: Option<Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .unwrap_or_default()
                    .iter()
                    .map(|w| WeightedTerm {
                        weight: i64::from(w.weight),
                        term: AffinityTerm::parse(&w.pod_affinity_term, &namespace, &labels),
                    })
                    .collect::<Vec<_>>()
            };
        let spread_constraints = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
                if c.label_selector.is_some() {
                    for key in c.match_label_keys.iter().flatten() {
                        if let Some(v) = labels.get(key) {
                            selector.add(Requirement {
                                key: key.clone(),
                                operator: Operator::In,
                                values: vec![v.clone()],
                            });
                        }
                    }
                }
                SpreadConstraint {
                    max_skew: i64::from(c.max_skew.max(1)),
                    topology_key: c.topology_key.clone(),
                    when_unsatisfiable: if c.when_unsatisfiable == "ScheduleAnyway" {
                        WhenUnsatisfiable::ScheduleAnyway
                    } else {
                        WhenUnsatisfiable::DoNotSchedule
                    },
                    selector,
                    min_domains: c.min_domains.map(i64::from),
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                }
            })
            .collect();
        PodInfo {
            namespace: namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| crate::SCHEDULER_NAME.into()),
            priority: spec.priority.unwrap_or(0),
            terminal: phase == "Succeeded" || phase == "Failed",
            deleting: meta.deletion_timestamp.is_some(),
            requests,
            non_zero_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: node_affinity
                .required_during_scheduling_ignored_during_execution
                .map(|s| s.node_selector_terms),
            preferred_node_affinity: node_affinity
                .preferred_during_scheduling_ignored_during_execution
                .unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            required_affinity: parse_terms(
                pod_affinity.required_during_scheduling_ignored_during_execution,
            ),
            required_anti_affinity: parse_terms(
                anti.required_during_scheduling_ignored_during_execution,
            ),
            preferred_affinity: parse_weighted(
                pod_affinity.preferred_during_scheduling_ignored_during_execution,
            ),
            preferred_anti_affinity: parse_weighted(
                anti.preferred_during_scheduling_ignored_during_execution,
            ),
            spread_constraints,
            labels,
            pod,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod has any inter-pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }
}

/// A container's requests; a resource with a limit and no request requests its limit (the
/// API server defaults it so; this keeps objects written before that working).
fn container_requests(c: &Container) -> (Resources, Resources) {
    let resources = c.resources.clone().unwrap_or_default();
    let mut list = resources.limits.clone().unwrap_or_default();
    for (k, v) in resources.requests.iter().flatten() {
        list.insert(k.clone(), v.clone());
    }
    let requests = Resources::from_list(Some(&list));
    let mut non_zero = requests.clone();
    if !list.contains_key("cpu") {
        non_zero.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !list.contains_key("memory") {
        non_zero.memory = DEFAULT_MEMORY_REQUEST;
    }
    (requests, non_zero)
}

/// A pod's effective requests and its non-zero requests, as upstream's `PodRequests`: the
/// sum of its containers and restartable (sidecar) init containers, at least the largest
/// init container plus the sidecars started before it, plus the pod's overhead.
pub fn pod_requests(spec: &k8s_openapi::api::core::v1::PodSpec) -> (Resources, Resources) {
    let mut totals = [Resources::default(), Resources::default()];
    for c in &spec.containers {
        let (r, nz) = container_requests(c);
        totals[0].add(&r);
        totals[1].add(&nz);
    }
    let mut sidecars = [Resources::default(), Resources::default()];
    let mut init_max = [Resources::default(), Resources::default()];
    for c in spec.init_containers.iter().flatten() {
        let (r, nz) = container_requests(c);
        let restartable = c.restart_policy.as_deref() == Some("Always");
        for (i, req) in [r, nz].iter().enumerate() {
            let needed = if restartable {
                totals[i].add(req);
                sidecars[i].add(req);
                sidecars[i].clone()
            } else {
                let mut t = req.clone();
                t.add(&sidecars[i]);
                t
            };
            init_max[i].max_with(&needed);
        }
    }
    let overhead = Resources::from_list(spec.overhead.as_ref());
    let [mut requests, mut non_zero] = totals;
    requests.max_with(&init_max[0]);
    non_zero.max_with(&init_max[1]);
    requests.add(&overhead);
    non_zero.add(&overhead);
    (requests, non_zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use serde_json::json;

    #[test]
    fn requests_follow_init_container_rules() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "initContainers": [
                    {"name": "init", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
                    {"name": "sidecar", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                    {"name": "init2", "image": "x", "resources": {"requests": {"cpu": "1"}}}
                ],
                "containers": [
                    {"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}},
                    {"name": "b", "image": "x", "resources": {"limits": {"cpu": "250m", "nvidia.com/gpu": "1"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }));
        // containers 750m + sidecar 100m = 850m < init max 2000m (+0 sidecars before it).
        assert_eq!(p.requests.milli_cpu, 2010);
        assert_eq!(p.requests.memory, 1 << 30);
        assert_eq!(p.requests.scalar.get("nvidia.com/gpu"), Some(&1));
        // Container b requests no memory: 200Mi counted for scoring.
        assert_eq!(p.non_zero_memory, 1 << 30);
    }

    #[test]
    fn zero_requests_default_for_scoring() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        );
        assert!(p.requests.is_zero());
        assert_eq!(p.non_zero_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(p.non_zero_memory, DEFAULT_MEMORY_REQUEST);
        assert_eq!(p.scheduler_name, "default-scheduler");
    }

    #[test]
    fn host_ports_and_conflicts() {
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 90}
            ]}]}}),
        );
        assert_eq!(p.host_ports.len(), 2);
        let any = &p.host_ports[0];
        assert_eq!(any.ip, "0.0.0.0");
        let other = HostPort {
            protocol: "TCP".into(),
            ip: "10.0.0.1".into(),
            port: 8080,
        };
        assert!(any.conflicts(&other));
        let udp = &p.host_ports[1];
        let udp2 = HostPort {
            protocol: "UDP".into(),
            ip: "127.0.0.2".into(),
            port: 53,
        };
        assert!(!udp.conflicts(&udp2));
    }

    #[test]
    fn affinity_terms_default_to_own_namespace() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "team", "labels": {"app": "web", "v": "1"}}, "spec": {"containers": [], "affinity": {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname", "matchLabelKeys": ["v"]}
                ]}
            }}}),
        );
        let term = &p.required_anti_affinity[0];
        assert!(term.namespaces.names.contains("team"));
        let same = pod(
            json!({"metadata": {"name": "q", "namespace": "team", "labels": {"app": "web", "v": "1"}}}),
        );
        let other_version = pod(
            json!({"metadata": {"name": "q", "namespace": "team", "labels": {"app": "web", "v": "2"}}}),
        );
        let elsewhere = pod(
            json!({"metadata": {"name": "q", "namespace": "x", "labels": {"app": "web", "v": "1"}}}),
        );
        let none = |_: &str| None;
        assert!(term.matches(&same, &none));
        assert!(!term.matches(&other_version, &none));
        assert!(!term.matches(&elsewhere, &none));
    }
}
