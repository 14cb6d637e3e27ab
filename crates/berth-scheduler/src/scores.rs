//! Scores: how well a pod fits each feasible node, as upstream's default score plugins rate
//! it, each normalized to 0..100 and weighted as upstream's defaults (TaintToleration 3,
//! NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit
//! least-allocated 1, NodeResourcesBalancedAllocation 1).

use crate::cache::{Cache, NodeInfo};
use crate::filters::{count_matching, node_included};
use crate::podinfo::{AffinityTerm, PodInfo, WhenUnsatisfiable};
use crate::selectors::{self, Labels};
use std::collections::HashMap;

pub const MAX_NODE_SCORE: i64 = 100;

const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;
const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
const WEIGHT_RESOURCES_FIT: i64 = 1;
const WEIGHT_BALANCED_ALLOCATION: i64 = 1;

/// The hard-affinity weight upstream gives an existing pod's required affinity term that
/// matches the incoming pod (`hardPodAffinityWeight`).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The weighted total score of each of `nodes` for `pod`.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
    let mut total: Vec<i64> = nodes
        .iter()
        .map(|n| {
            least_allocated(pod, n) * WEIGHT_RESOURCES_FIT
                + balanced_allocation(pod, n) * WEIGHT_BALANCED_ALLOCATION
        })
        .collect();
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    add(
        normalize(
            nodes.iter().map(|n| taint_toleration(pod, n)).collect(),
            true,
        ),
        WEIGHT_TAINT_TOLERATION,
    );
    if !pod.preferred_node_affinity.is_empty() {
        add(
            normalize(nodes.iter().map(|n| node_affinity(pod, n)).collect(), false),
            WEIGHT_NODE_AFFINITY,
        );
    }
    if pod
        .spread_constraints
        .iter()
        .any(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
    {
        add(topology_spread(pod, nodes, cache), WEIGHT_TOPOLOGY_SPREAD);
    }
    if pod.has_affinity() || cache.affinity_pods > 0 {
        add(
            inter_pod_affinity(pod, nodes, cache),
            WEIGHT_INTER_POD_AFFINITY,
        );
    }
    total
}

/// Upstream's `DefaultNormalizeScore`: scales to 0..100 by the highest; `reverse` turns
/// "fewer is better" counts around.
pub fn normalize(mut scores: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return scores;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
    scores
}

/// NodeResourcesFit (LeastAllocated): the share of cpu and memory left free after placing
/// the pod, counting upstream's defaults for unset requests.
pub fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let parts = [
        (n.non_zero_cpu + pod.non_zero_cpu, n.allocatable.milli_cpu),
        (
            n.non_zero_memory + pod.non_zero_memory,
            n.allocatable.memory,
        ),
    ];
    let mut score = 0;
    let mut weights = 0;
    for (requested, capacity) in parts {
        if capacity == 0 {
            continue;
        }
        score += if requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        };
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        score / weights
    }
}

/// NodeResourcesBalancedAllocation: nodes whose cpu and memory would be used in equal
/// shares score higher. A pod requesting neither is not scored (0 everywhere).
pub fn balanced_allocation(pod: &PodInfo, n: &NodeInfo) -> i64 {
    if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
        return 0;
    }
    let fractions: Vec<f64> = [
        (
            n.requested.milli_cpu + pod.requests.milli_cpu,
            n.allocatable.milli_cpu,
        ),
        (
            n.requested.memory + pod.requests.memory,
            n.allocatable.memory,
        ),
    ]
    .iter()
    .filter(|(_, a)| *a > 0)
    .map(|(r, a)| (*r as f64 / *a as f64).min(1.0))
    .collect();
    let std = if fractions.len() == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration: how many PreferNoSchedule taints the pod does not tolerate (fewer is
/// better; normalized reversed).
pub fn taint_toleration(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    n.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !selectors::tolerated(&tolerations, t))
        .count() as i64
}

/// NodeAffinity (preferred): the summed weights of the preferred terms the node matches.
pub fn node_affinity(pod: &PodInfo, n: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|t| {
            t.weight != 0 && selectors::node_matches_term(&t.preference, &n.labels, &n.name)
        })
        .map(|t| i64::from(t.weight))
        .sum()
}

/// PodTopologySpread (ScheduleAnyway constraints): nodes in domains with fewer matching
/// pods score higher; nodes lacking a constraint's key score 0.
pub fn topology_spread(pod: &PodInfo, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
    let constraints: Vec<_> = pod
        .spread_constraints
        .iter()
        .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        .collect();
    let has_all = |n: &NodeInfo| {
        constraints
            .iter()
            .all(|c| n.labels.contains_key(&c.topology_key))
    };
    // Domains among the candidate nodes, per constraint.
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for n in nodes {
        if !has_all(n) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            counts[i].insert(n.labels[&c.topology_key].clone(), 0);
        }
    }
    let weights: Vec<f64> = counts
        .iter()
        .map(|domains| ((domains.len()) as f64 + 2.0).ln())
        .collect();
    // Matching pods per domain over every eligible node of the cluster.
    for n in cache.nodes.values() {
        if n.node.is_none() || !has_all(n) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !node_included(pod, n, c.honor_node_affinity, c.honor_node_taints) {
                continue;
            }
            if let Some(count) = counts[i].get_mut(&n.labels[&c.topology_key]) {
                *count += count_matching(n, &c.selector, &pod.namespace);
            }
        }
    }
    let raw: Vec<Option<i64>> = nodes
        .iter()
        .map(|n| {
            if !has_all(n) {
                return None;
            }
            let mut s = 0.0;
            for (i, c) in constraints.iter().enumerate() {
                let cnt = counts[i]
                    .get(&n.labels[&c.topology_key])
                    .copied()
                    .unwrap_or(0);
                s += cnt as f64 * weights[i] + (c.max_skew - 1) as f64;
            }
            Some(s.round() as i64)
        })
        .collect();
    let valid = raw.iter().flatten();
    let min = valid.clone().copied().min().unwrap_or(0);
    let max = valid.copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

/// InterPodAffinity (preferred terms of the pod, and of existing pods toward it; existing
/// pods' required affinity counts with `hardPodAffinityWeight`): summed per topology
/// domain, then min-max normalized.
pub fn inter_pod_affinity(pod: &PodInfo, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
    let ns_labels = |ns: &str| cache.namespace_labels(ns);
    let mut domains: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut add = |term: &AffinityTerm, weight: i64, target: &PodInfo, node: &Labels| {
        if let Some(v) = node.get(&term.topology_key) {
            if term.matches(target, &ns_labels) {
                *domains
                    .entry(term.topology_key.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_insert(0) += weight;
            }
        }
    };
    let own_preferred =
        !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    for n in cache.nodes.values() {
        if n.node.is_none() || n.labels.is_empty() {
            continue;
        }
        let existing: Box<dyn Iterator<Item = &std::sync::Arc<PodInfo>>> = if own_preferred {
            Box::new(n.pods.values())
        } else {
            Box::new(n.pods_with_affinity.values())
        };
        for e in existing {
            for w in &pod.preferred_affinity {
                add(&w.term, w.weight, e, &n.labels);
            }
            for w in &pod.preferred_anti_affinity {
                add(&w.term, -w.weight, e, &n.labels);
            }
            for t in &e.required_affinity {
                add(t, HARD_POD_AFFINITY_WEIGHT, pod, &n.labels);
            }
            for w in &e.preferred_affinity {
                add(&w.term, w.weight, pod, &n.labels);
            }
            for w in &e.preferred_anti_affinity {
                add(&w.term, -w.weight, pod, &n.labels);
            }
        }
    }
    if domains.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            domains
                .iter()
                .filter_map(|(k, values)| n.labels.get(k).and_then(|v| values.get(v)))
                .sum()
        })
        .collect();
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max > min {
                (MAX_NODE_SCORE as f64 * ((s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            }
        })
        .collect()
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

    fn sized(name: &str, cpu: &str, mem: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}})
    }

    fn infos<'a>(cache: &'a Cache, names: &[&str]) -> Vec<&'a NodeInfo> {
        names.iter().map(|n| &cache.nodes[*n]).collect()
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let mut cache = cache_with(&[
            sized("n1", "4", "8Gi", json!({})),
            sized("n2", "4", "8Gi", json!({})),
        ]);
        cache.add_pod(bound("n1", json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}})));
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}),
        );
        // n1: cpu (4-3)/4 = 25, mem (8-6)/8 = 25; n2: 75, 75.
        assert_eq!(least_allocated(&p, &cache.nodes["n1"]), 25);
        assert_eq!(least_allocated(&p, &cache.nodes["n2"]), 75);
        let s = score(&p, &infos(&cache, &["n1", "n2"]), &cache);
        assert!(s[1] > s[0]);
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        let mut cache = cache_with(&[
            sized("n1", "4", "8Gi", json!({})),
            sized("n2", "4", "8Gi", json!({})),
        ]);
        cache.add_pod(bound("n1", json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}})));
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}),
        );
        // n1: cpu 3/4, mem 2/8: std 0.25 → 75; n2: 1/4, 2/8 → 100.
        assert_eq!(balanced_allocation(&p, &cache.nodes["n1"]), 75);
        assert_eq!(balanced_allocation(&p, &cache.nodes["n2"]), 100);
    }

    #[test]
    fn prefer_no_schedule_taints_and_preferred_node_affinity() {
        let mut tainted = sized("n1", "4", "8Gi", json!({"disk": "hdd"}));
        tainted["spec"] = json!({"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]});
        let cache = cache_with(&[tainted, sized("n2", "4", "8Gi", json!({"disk": "ssd"}))]);
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(
            normalize(
                vec![
                    taint_toleration(&p, &cache.nodes["n1"]),
                    taint_toleration(&p, &cache.nodes["n2"])
                ],
                true
            ),
            vec![0, 100]
        );
        let a = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
            ]}}}}),
        );
        assert_eq!(node_affinity(&a, &cache.nodes["n1"]), 10);
        assert_eq!(node_affinity(&a, &cache.nodes["n2"]), 30);
        assert_eq!(normalize(vec![10, 30], false), vec![33, 100]);
    }

    #[test]
    fn preferred_pod_affinity_and_anti_affinity() {
        let mut cache = cache_with(&[
            sized("n1", "4", "8Gi", json!({"zone": "a"})),
            sized("n2", "4", "8Gi", json!({"zone": "b"})),
        ]);
        cache.add_pod(bound("n1", json!({"metadata": {"name": "db", "labels": {"app": "db"}}, "spec": {"containers": []}})));
        let near = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}}),
        );
        assert_eq!(
            inter_pod_affinity(&near, &infos(&cache, &["n1", "n2"]), &cache),
            vec![100, 0]
        );
        let far = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}}),
        );
        assert_eq!(
            inter_pod_affinity(&far, &infos(&cache, &["n1", "n2"]), &cache),
            vec![0, 100]
        );
    }

    #[test]
    fn schedule_anyway_spread_prefers_emptier_domains() {
        let mut cache = cache_with(&[
            sized("n1", "4", "8Gi", json!({"zone": "a"})),
            sized("n2", "4", "8Gi", json!({"zone": "b"})),
            sized("n3", "4", "8Gi", json!({})),
        ]);
        for i in 0..3 {
            cache.add_pod(bound("n1", json!({"metadata": {"name": format!("w{i}"), "labels": {"app": "web"}}, "spec": {"containers": []}})));
        }
        let p = pod(
            json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [], "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        );
        let s = topology_spread(&p, &infos(&cache, &["n1", "n2", "n3"]), &cache);
        assert_eq!(s[1], MAX_NODE_SCORE);
        assert!(s[0] < s[1]);
        assert_eq!(s[2], 0);
    }
}
