//! Filters: whether a pod fits a node, as upstream's default filter plugins decide, in their
//! order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, PodTopologySpread, InterPodAffinity), with upstream's reasons. A node
//! fails at its first failing filter. The per-pod state some filters need (topology counts
//! of matching pods) is computed once per scheduling cycle in [`PreFilter`].

use crate::cache::{Cache, NodeInfo};
use crate::podinfo::{PodInfo, WhenUnsatisfiable};
use crate::selectors::{self, Labels};
use k8s_openapi::api::core::v1::Taint;
use std::collections::HashMap;

/// Which filter failed, so a waiting pod is retried only on cluster changes that may help.
pub mod kind {
    pub const NODE: u8 = 1;
    pub const RESOURCES: u8 = 2;
    pub const PORTS: u8 = 4;
    pub const POD_AFFINITY: u8 = 8;
    pub const SPREAD: u8 = 16;
    pub const EXISTING_ANTI_AFFINITY: u8 = 32;
}

/// Upstream's two failure codes: preemption may help an `Unschedulable` node, never an
/// `UnschedulableAndUnresolvable` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    UnschedulableAndUnresolvable,
}

/// Why a node does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub reasons: Vec<String>,
    pub kind: u8,
}

impl Failure {
    fn new(code: Code, kind: u8, reason: impl Into<String>) -> Self {
        Failure {
            code,
            reasons: vec![reason.into()],
            kind,
        }
    }
}

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// A topology domain: a label key and value.
pub type TopologyPair = (String, String);

/// Per-cycle state of the inter-pod affinity filter.
#[derive(Debug, Default)]
pub struct AffinityState {
    /// Domains holding existing pods whose required anti-affinity terms match the pod.
    pub existing_anti_affinity: HashMap<TopologyPair, i64>,
    /// Domains holding existing pods that match all of the pod's required affinity terms.
    pub affinity: HashMap<TopologyPair, i64>,
    /// Domains holding existing pods matching one of the pod's required anti-affinity terms.
    pub anti_affinity: HashMap<TopologyPair, i64>,
}

/// Per-cycle state of the topology spread filter: per DoNotSchedule constraint, matching
/// pods per domain over the eligible nodes.
#[derive(Debug, Default)]
pub struct SpreadState {
    /// (index into the pod's constraints, pods per domain value).
    pub counts: Vec<(usize, HashMap<String, i64>)>,
}

/// What the filters of one pod need computed over the whole cluster first.
#[derive(Debug, Default)]
pub struct PreFilter {
    pub affinity: Option<AffinityState>,
    pub spread: Option<SpreadState>,
}

impl PreFilter {
    /// Computes the state for `pod` over every node of `cache`.
    pub fn compute(pod: &PodInfo, cache: &Cache) -> Self {
        let ns_labels = |ns: &str| cache.namespace_labels(ns);
        let mut out = PreFilter::default();
        let has_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if has_terms || cache.required_anti_affinity_pods > 0 {
            let mut state = AffinityState::default();
            for info in cache.nodes.values() {
                if info.node.is_none() {
                    continue;
                }
                if cache.required_anti_affinity_pods > 0 {
                    for existing in info.pods_with_affinity.values() {
                        for term in &existing.required_anti_affinity {
                            if term.matches(pod, &ns_labels) {
                                bump(
                                    &mut state.existing_anti_affinity,
                                    &info.labels,
                                    &term.topology_key,
                                    1,
                                );
                            }
                        }
                    }
                }
                if !has_terms {
                    continue;
                }
                for existing in info.pods.values() {
                    if !pod.required_affinity.is_empty()
                        && pod
                            .required_affinity
                            .iter()
                            .all(|t| t.matches(existing, &ns_labels))
                    {
                        for t in &pod.required_affinity {
                            bump(&mut state.affinity, &info.labels, &t.topology_key, 1);
                        }
                    }
                    for t in &pod.required_anti_affinity {
                        if t.matches(existing, &ns_labels) {
                            bump(&mut state.anti_affinity, &info.labels, &t.topology_key, 1);
                        }
                    }
                }
            }
            out.affinity = Some(state);
        }
        let hard: Vec<usize> = pod
            .spread_constraints
            .iter()
            .enumerate()
            .filter(|(_, c)| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
            .map(|(i, _)| i)
            .collect();
        if !hard.is_empty() {
            let mut state = SpreadState {
                counts: hard.iter().map(|i| (*i, HashMap::new())).collect(),
            };
            for info in cache.nodes.values() {
                if info.node.is_none() {
                    continue;
                }
                // Only nodes carrying every constraint's key count.
                if !hard.iter().all(|i| {
                    info.labels
                        .contains_key(&pod.spread_constraints[*i].topology_key)
                }) {
                    continue;
                }
                for (i, counts) in state.counts.iter_mut() {
                    let c = &pod.spread_constraints[*i];
                    if !node_included(pod, info, c.honor_node_affinity, c.honor_node_taints) {
                        continue;
                    }
                    let value = info
                        .labels
                        .get(&c.topology_key)
                        .cloned()
                        .unwrap_or_default();
                    let n = count_matching(info, &c.selector, &pod.namespace);
                    *counts.entry(value).or_insert(0) += n;
                }
            }
            out.spread = Some(state);
        }
        out
    }
}

fn bump(map: &mut HashMap<TopologyPair, i64>, labels: &Labels, key: &str, by: i64) {
    if let Some(v) = labels.get(key) {
        *map.entry((key.to_string(), v.clone())).or_insert(0) += by;
    }
}

/// Pods on the node in `namespace` matching `selector`, not being deleted.
pub fn count_matching(info: &NodeInfo, selector: &selectors::Selector, namespace: &str) -> i64 {
    if selector.is_nothing() {
        return 0;
    }
    info.pods
        .values()
        .filter(|p| p.namespace == namespace && !p.deleting && selector.matches(&p.labels))
        .count() as i64
}

/// Whether a node counts for a spread constraint under its inclusion policies.
pub fn node_included(
    pod: &PodInfo,
    info: &NodeInfo,
    honor_affinity: bool,
    honor_taints: bool,
) -> bool {
    if honor_affinity && !node_affinity_matches(pod, info) {
        return false;
    }
    if honor_taints
        && info
            .taints
            .iter()
            .any(|t| is_hard_taint(t) && !selectors::tolerated(&pod.tolerations, t))
    {
        return false;
    }
    true
}

fn is_hard_taint(t: &Taint) -> bool {
    t.effect == "NoSchedule" || t.effect == "NoExecute"
}

/// Whether the node matches the pod's `nodeSelector` and required node affinity.
pub fn node_affinity_matches(pod: &PodInfo, info: &NodeInfo) -> bool {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| info.labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_node_affinity {
        Some(terms) => selectors::node_matches_terms(terms, &info.labels, &info.name),
        None => true,
    }
}

/// Runs every filter for `pod` on `info`, stopping at the first failure.
pub fn run(pod: &PodInfo, info: &NodeInfo, pre: &PreFilter, cache: &Cache) -> Result<(), Failure> {
    node_unschedulable(pod, info)?;
    node_name(pod, info)?;
    taint_toleration(pod, info)?;
    node_affinity(pod, info)?;
    node_ports(pod, info)?;
    resources_fit(pod, info)?;
    if let Some(spread) = &pre.spread {
        topology_spread(pod, info, spread)?;
    }
    if let Some(affinity) = &pre.affinity {
        inter_pod_affinity(pod, info, affinity, cache)?;
    }
    Ok(())
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating its unschedulable taint.
pub fn node_unschedulable(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    if !info.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    if selectors::tolerated(&pod.tolerations, &taint) {
        return Ok(());
    }
    Err(Failure::new(
        Code::UnschedulableAndUnresolvable,
        kind::NODE,
        REASON_UNSCHEDULABLE,
    ))
}

/// NodeName: a pod naming a node fits only that node.
pub fn node_name(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    if pod.node_name.is_empty() || pod.node_name == info.name {
        return Ok(());
    }
    Err(Failure::new(
        Code::UnschedulableAndUnresolvable,
        kind::NODE,
        REASON_NODE_NAME,
    ))
}

/// TaintToleration: every NoSchedule and NoExecute taint must be tolerated.
pub fn taint_toleration(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    match info
        .taints
        .iter()
        .find(|t| is_hard_taint(t) && !selectors::tolerated(&pod.tolerations, t))
    {
        None => Ok(()),
        Some(t) => Err(Failure::new(
            Code::UnschedulableAndUnresolvable,
            kind::NODE,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// NodeAffinity: `nodeSelector` and required node affinity.
pub fn node_affinity(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    if node_affinity_matches(pod, info) {
        return Ok(());
    }
    Err(Failure::new(
        Code::UnschedulableAndUnresolvable,
        kind::NODE,
        REASON_NODE_AFFINITY,
    ))
}

/// NodePorts: the pod's host ports must be free on the node.
pub fn node_ports(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    if pod
        .host_ports
        .iter()
        .any(|p| info.used_ports.iter().any(|u| u.conflicts(p)))
    {
        return Err(Failure::new(Code::Unschedulable, kind::PORTS, REASON_PORTS));
    }
    Ok(())
}

/// NodeResourcesFit: the pod count and every requested resource must fit in what the node
/// has allocatable minus what its pods request. Every shortage is a reason.
pub fn resources_fit(pod: &PodInfo, info: &NodeInfo) -> Result<(), Failure> {
    let mut reasons = Vec::new();
    if info.pods.len() as i64 + 1 > info.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let r = &pod.requests;
    if !r.is_zero() {
        let (a, used) = (&info.allocatable, &info.requested);
        if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if r.memory > 0 && r.memory > a.memory - used.memory {
            reasons.push("Insufficient memory".into());
        }
        if r.ephemeral_storage > 0
            && r.ephemeral_storage > a.ephemeral_storage - used.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, want) in &r.scalar {
            let free = a.scalar.get(name).copied().unwrap_or(0)
                - used.scalar.get(name).copied().unwrap_or(0);
            if *want > 0 && *want > free {
                reasons.push(format!("Insufficient {name}"));
            }
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Failure {
        code: Code::Unschedulable,
        reasons,
        kind: kind::RESOURCES,
    })
}

/// PodTopologySpread (DoNotSchedule constraints): placing the pod on the node must keep
/// each constraint's skew (matching pods in the node's domain, plus the pod itself, minus
/// the fewest in any eligible domain) within `maxSkew`.
pub fn topology_spread(pod: &PodInfo, info: &NodeInfo, state: &SpreadState) -> Result<(), Failure> {
    for (i, counts) in &state.counts {
        let c = &pod.spread_constraints[*i];
        let Some(value) = info.labels.get(&c.topology_key) else {
            return Err(Failure::new(
                Code::UnschedulableAndUnresolvable,
                kind::SPREAD,
                REASON_SPREAD_LABEL,
            ));
        };
        let domains = counts.len() as i64;
        let min = if c.min_domains.is_some_and(|m| domains < m) {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        let self_match = i64::from(c.selector.matches(&pod.labels));
        let here = counts.get(value).copied().unwrap_or(0);
        if here + self_match - min > c.max_skew {
            return Err(Failure::new(
                Code::Unschedulable,
                kind::SPREAD,
                REASON_SPREAD,
            ));
        }
    }
    Ok(())
}

/// InterPodAffinity: the pod's required affinity and anti-affinity, and the required
/// anti-affinity of pods already placed.
pub fn inter_pod_affinity(
    pod: &PodInfo,
    info: &NodeInfo,
    state: &AffinityState,
    cache: &Cache,
) -> Result<(), Failure> {
    // Affinity: every term's domain on this node must hold a matching pod (or, for the first
    // pod of a group matching its own terms, no pod anywhere matches yet).
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        match info.labels.get(&t.topology_key) {
            Some(v) => {
                if state
                    .affinity
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    <= 0
                {
                    pods_exist = false;
                }
            }
            None => {
                return Err(Failure::new(
                    Code::UnschedulableAndUnresolvable,
                    kind::POD_AFFINITY,
                    REASON_AFFINITY,
                ))
            }
        }
    }
    if !pods_exist {
        let ns_labels = |ns: &str| cache.namespace_labels(ns);
        let self_match = pod
            .required_affinity
            .iter()
            .all(|t| t.matches(pod, &ns_labels));
        if !(state.affinity.is_empty() && self_match) {
            return Err(Failure::new(
                Code::UnschedulableAndUnresolvable,
                kind::POD_AFFINITY,
                REASON_AFFINITY,
            ));
        }
    }
    if !state.anti_affinity.is_empty() {
        for t in &pod.required_anti_affinity {
            if let Some(v) = info.labels.get(&t.topology_key) {
                if state
                    .anti_affinity
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
                {
                    return Err(Failure::new(
                        Code::Unschedulable,
                        kind::POD_AFFINITY,
                        REASON_ANTI_AFFINITY,
                    ));
                }
            }
        }
    }
    if !state.existing_anti_affinity.is_empty()
        && info.labels.iter().any(|(k, v)| {
            state
                .existing_anti_affinity
                .get(&(k.clone(), v.clone()))
                .is_some_and(|n| *n > 0)
        })
    {
        return Err(Failure::new(
            Code::Unschedulable,
            kind::EXISTING_ANTI_AFFINITY,
            REASON_EXISTING_ANTI_AFFINITY,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bound, node, pod};
    use serde_json::json;

    fn cache_with(nodes: &[serde_json::Value]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(node(n.clone()));
        }
        c
    }

    fn simple_node(name: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"}}})
    }

    fn check(cache: &Cache, p: &PodInfo, name: &str) -> Result<(), Failure> {
        let pre = PreFilter::compute(p, cache);
        run(p, &cache.nodes[name], &pre, cache)
    }

    fn reason(r: Result<(), Failure>) -> String {
        r.err().map(|f| f.reasons.join(",")).unwrap_or_default()
    }

    #[test]
    fn unschedulable_nodes_take_only_tolerating_pods() {
        let mut n = simple_node("n1", json!({}));
        n["spec"] = json!({"unschedulable": true});
        let cache = cache_with(&[n]);
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(reason(check(&cache, &p, "n1")), REASON_UNSCHEDULABLE);
        let t = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(check(&cache, &t, "n1").is_ok());
    }

    #[test]
    fn taints_need_tolerations() {
        let mut n = simple_node("n1", json!({}));
        n["spec"] = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, {"key": "soft", "effect": "PreferNoSchedule"}]});
        let cache = cache_with(&[n]);
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(
            reason(check(&cache, &p, "n1")),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let t = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(check(&cache, &t, "n1").is_ok());
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let cache = cache_with(&[
            simple_node("n1", json!({"disk": "ssd", "zone": "a"})),
            simple_node("n2", json!({"disk": "hdd", "zone": "b"})),
        ]);
        let sel = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeSelector": {"disk": "ssd"}}}),
        );
        assert!(check(&cache, &sel, "n1").is_ok());
        assert_eq!(reason(check(&cache, &sel, "n2")), REASON_NODE_AFFINITY);
        let aff = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["nx"]}]}
            ]}}}}}),
        );
        assert_eq!(reason(check(&cache, &aff, "n1")), REASON_NODE_AFFINITY);
        assert!(check(&cache, &aff, "n2").is_ok());
        let named =
            pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": "n2"}}));
        assert_eq!(reason(check(&cache, &named, "n1")), REASON_NODE_NAME);
    }

    #[test]
    fn resources_and_pod_count() {
        let mut cache = cache_with(&[simple_node("n1", json!({}))]);
        cache.add_pod(bound("n1", json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]}})));
        let big = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "4Gi", "example.com/dongle": "1"}}}]}}),
        );
        assert_eq!(
            reason(check(&cache, &big, "n1")),
            "Insufficient cpu,Insufficient memory,Insufficient example.com/dongle"
        );
        let small = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "500m"}}}]}}),
        );
        assert!(check(&cache, &small, "n1").is_ok());
        for i in 0..9 {
            cache.add_pod(bound(
                "n1",
                json!({"metadata": {"name": format!("z{i}")}, "spec": {"containers": []}}),
            ));
        }
        let zero = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(reason(check(&cache, &zero, "n1")), "Too many pods");
    }

    #[test]
    fn host_ports_conflict() {
        let mut cache = cache_with(&[simple_node("n1", json!({}))]);
        cache.add_pod(bound("n1", json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})));
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        assert_eq!(reason(check(&cache, &p, "n1")), REASON_PORTS);
        let q = pod(
            json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8081}]}]}}),
        );
        assert!(check(&cache, &q, "n1").is_ok());
    }

    #[test]
    fn pod_anti_affinity_both_ways() {
        let mut cache = cache_with(&[
            simple_node("n1", json!({"kubernetes.io/hostname": "n1", "zone": "a"})),
            simple_node("n2", json!({"kubernetes.io/hostname": "n2", "zone": "a"})),
            simple_node("n3", json!({"kubernetes.io/hostname": "n3", "zone": "b"})),
        ]);
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}});
        cache.add_pod(bound("n1", json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"containers": [], "affinity": anti}})));
        let p = pod(
            json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [], "affinity": anti}}),
        );
        assert_eq!(reason(check(&cache, &p, "n2")), REASON_ANTI_AFFINITY);
        assert!(check(&cache, &p, "n3").is_ok());
        // A pod without terms is still kept away by the existing pod's anti-affinity.
        let plain = pod(
            json!({"metadata": {"name": "q", "labels": {"app": "web"}}, "spec": {"containers": []}}),
        );
        assert_eq!(
            reason(check(&cache, &plain, "n2")),
            REASON_EXISTING_ANTI_AFFINITY
        );
        assert!(check(&cache, &plain, "n3").is_ok());
    }

    #[test]
    fn pod_affinity_and_first_of_group() {
        let mut cache = cache_with(&[
            simple_node("n1", json!({"zone": "a"})),
            simple_node("n2", json!({"zone": "b"})),
            simple_node("n3", json!({})),
        ]);
        let aff = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}});
        // No db pod anywhere and the pod is not a db pod: nowhere.
        let web = pod(
            json!({"metadata": {"name": "w", "labels": {"app": "web"}}, "spec": {"containers": [], "affinity": aff}}),
        );
        assert_eq!(reason(check(&cache, &web, "n1")), REASON_AFFINITY);
        // The first db pod with affinity to db pods may go anywhere with the label.
        let db = pod(
            json!({"metadata": {"name": "d", "labels": {"app": "db"}}, "spec": {"containers": [], "affinity": aff}}),
        );
        assert!(check(&cache, &db, "n1").is_ok());
        assert_eq!(reason(check(&cache, &db, "n3")), REASON_AFFINITY);
        cache.add_pod(bound("n2", json!({"metadata": {"name": "d0", "labels": {"app": "db"}}, "spec": {"containers": []}})));
        assert_eq!(reason(check(&cache, &web, "n1")), REASON_AFFINITY);
        assert!(check(&cache, &web, "n2").is_ok());
    }

    #[test]
    fn topology_spread_max_skew_and_min_domains() {
        let mut cache = cache_with(&[
            simple_node("n1", json!({"zone": "a"})),
            simple_node("n2", json!({"zone": "b"})),
            simple_node("n3", json!({})),
        ]);
        for i in 0..2 {
            cache.add_pod(bound("n1", json!({"metadata": {"name": format!("a{i}"), "labels": {"app": "web"}}, "spec": {"containers": []}})));
        }
        let spread = |min_domains: Option<i32>| {
            let mut c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
            if let Some(m) = min_domains {
                c["minDomains"] = json!(m);
            }
            pod(
                json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [], "topologySpreadConstraints": [c]}}),
            )
        };
        let p = spread(None);
        assert_eq!(reason(check(&cache, &p, "n1")), REASON_SPREAD);
        assert!(check(&cache, &p, "n2").is_ok());
        assert_eq!(reason(check(&cache, &p, "n3")), REASON_SPREAD_LABEL);
        // With minDomains above the two domains there are, the global minimum is 0.
        cache.add_pod(bound("n2", json!({"metadata": {"name": "b0", "labels": {"app": "web"}}, "spec": {"containers": []}})));
        cache.add_pod(bound("n2", json!({"metadata": {"name": "b1", "labels": {"app": "web"}}, "spec": {"containers": []}})));
        assert!(check(&cache, &spread(None), "n1").is_ok());
        assert_eq!(reason(check(&cache, &spread(Some(3)), "n1")), REASON_SPREAD);
    }
}
