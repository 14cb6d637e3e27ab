//! The scheduler against a real `berth server`, driven with the real `kubectl`: Node objects
//! registered through the API (no agent behind them, so no root is needed) and pods that
//! land where nodeSelector, node affinity, taints and tolerations, resource requests,
//! anti-affinity and topology spread allow; an unschedulable pod reported as upstream does
//! (`PodScheduled=False`, `FailedScheduling`) and scheduled once a fitting node joins; and the
//! `pods/binding` subresource itself.
//!
//! The server's own node is cordoned first so test pods never land on it.

mod common;

use common::Cluster;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Starts a server and cordons its own node.
fn cluster() -> Cluster {
    let c = Cluster::start_with(&["--node-name", "sched-self"]);
    c.eventually("the server's node registered", WAIT, || {
        c.kubectl_output(&["get", "node", "sched-self"], None)
            .status
            .success()
    });
    c.kubectl(&["cordon", "sched-self"]);
    c
}

/// Registers a Node with labels, taints and allocatable cpu (memory 8Gi, 10 pods), Ready.
fn add_node(c: &Cluster, name: &str, labels: &str, taints: &str, cpu: &str) {
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}"{labels}}}}},"spec":{{"taints":[{taints}]}}}}"#
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    let status = format!(
        r#"{{"status":{{"capacity":{{"cpu":"{cpu}","memory":"8Gi","pods":"10"}},"allocatable":{{"cpu":"{cpu}","memory":"8Gi","pods":"10"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"fake node"}}]}}}}"#
    );
    c.kubectl(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
}

/// Creates a pod from a JSON spec fragment (`"containers"` added when missing).
fn add_pod(c: &Cluster, name: &str, labels: &str, spec: &str) {
    let spec = if spec.contains("\"containers\"") {
        spec.to_string()
    } else {
        let sep = if spec.is_empty() { "" } else { "," };
        format!(r#""containers":[{{"name":"c","image":"busybox:latest"}}]{sep}{spec}"#)
    };
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{{labels}}}}},"spec":{{{spec}}}}}"#
    );
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
}

fn node_of(c: &Cluster, pod: &str) -> String {
    c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

/// Waits until the pod is bound and returns its node.
fn scheduled(c: &Cluster, pod: &str) -> String {
    c.eventually(&format!("pod {pod} scheduled"), WAIT, || {
        !node_of(c, pod).is_empty()
    });
    node_of(c, pod)
}

/// Waits until the pod is reported unschedulable and returns the condition's message.
fn unschedulable(c: &Cluster, pod: &str) -> String {
    let jsonpath =
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}/{.status.conditions[?(@.type==\"PodScheduled\")].reason}";
    c.eventually(&format!("pod {pod} unschedulable"), WAIT, || {
        c.kubectl(&["get", "pod", pod, "-o", jsonpath]) == "False/Unschedulable"
    });
    assert_eq!(node_of(c, pod), "");
    c.kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
    ])
}

#[test]
fn pods_land_where_selectors_taints_and_resources_allow() {
    let c = cluster();
    add_node(&c, "node-a", r#","zone":"a","disk":"ssd""#, "", "2");
    add_node(&c, "node-b", r#","zone":"b","disk":"hdd""#, "", "2");
    add_node(
        &c,
        "node-gpu",
        r#","zone":"a","gpu":"true""#,
        r#"{"key":"dedicated","value":"gpu","effect":"NoSchedule"}"#,
        "8",
    );

    // nodeSelector.
    add_pod(&c, "ssd", "", r#""nodeSelector":{"disk":"ssd"}"#);
    assert_eq!(scheduled(&c, "ssd"), "node-a");
    // Required node affinity (NotIn) with a preferred term.
    add_pod(
        &c,
        "not-zone-a",
        "",
        r#""affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}]},"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":10,"preference":{"matchExpressions":[{"key":"disk","operator":"In","values":["hdd"]}]}}]}}"#,
    );
    assert_eq!(scheduled(&c, "not-zone-a"), "node-b");
    // A taint keeps pods without the toleration away; the toleration lets one in.
    add_pod(
        &c,
        "gpu-tolerating",
        "",
        r#""nodeSelector":{"gpu":"true"},"tolerations":[{"key":"dedicated","operator":"Equal","value":"gpu","effect":"NoSchedule"}]"#,
    );
    assert_eq!(scheduled(&c, "gpu-tolerating"), "node-gpu");
    add_pod(&c, "gpu-intolerant", "", r#""nodeSelector":{"gpu":"true"}"#);
    let message = unschedulable(&c, "gpu-intolerant");
    assert_eq!(
        message,
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    );

    // Requests: 1.5 cpu fits node-a or node-b once; a second one fits only the other.
    let cpu = |n: &str| {
        format!(
            r#""containers":[{{"name":"c","image":"busybox:latest","resources":{{"requests":{{"cpu":"{n}"}}}}}}],"nodeSelector":{{"disk":"ssd"}}"#
        )
    };
    add_pod(&c, "cpu-1", "", &cpu("1500m"));
    assert_eq!(scheduled(&c, "cpu-1"), "node-a");
    add_pod(&c, "cpu-2", "", &cpu("1"));
    let message = unschedulable(&c, "cpu-2");
    assert!(
        message.starts_with("0/4 nodes are available: 1 Insufficient cpu, "),
        "{message}"
    );
    assert!(
        message.ends_with(
            "preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling."
        ),
        "{message}"
    );
    let describe = c.kubectl(&["describe", "pod", "cpu-2"]);
    assert!(
        describe.contains("FailedScheduling") && describe.contains("default-scheduler"),
        "{describe}"
    );
    assert!(describe.contains("Insufficient cpu"), "{describe}");

    // Freeing room (the pod holding it is deleted) schedules the waiting pod, no polling.
    c.kubectl(&["delete", "pod", "cpu-1", "--force", "--grace-period=0"]);
    assert_eq!(scheduled(&c, "cpu-2"), "node-a");

    // A pod too big for every node waits, and lands once a node that fits joins.
    add_pod(
        &c,
        "big",
        "",
        r#""containers":[{"name":"c","image":"busybox:latest","resources":{"requests":{"cpu":"16","memory":"1Gi"}}}]"#,
    );
    unschedulable(&c, "big");
    add_node(&c, "node-big", r#","zone":"c""#, "", "32");
    assert_eq!(scheduled(&c, "big"), "node-big");

    // Events as upstream records them.
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ssd",
    ]);
    assert!(
        events.contains("Scheduled")
            && events.contains("Successfully assigned default/ssd to node-a"),
        "{events}"
    );
    let condition = c.kubectl(&[
        "get",
        "pod",
        "big",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(condition, "True");
}

#[test]
fn anti_affinity_and_topology_spread_spread_pods() {
    let c = cluster();
    add_node(&c, "n1", r#","zone":"a""#, "", "4");
    add_node(&c, "n2", r#","zone":"a""#, "", "4");
    add_node(&c, "n3", r#","zone":"b""#, "", "4");

    // Required anti-affinity per host: three replicas on three nodes, a fourth waits.
    let anti = r#""affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":{"matchLabels":{"app":"web"}},"topologyKey":"kubernetes.io/hostname"}]}}"#;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        add_pod(&c, &name, r#""app":"web""#, anti);
        nodes.push(scheduled(&c, &name));
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    add_pod(&c, "web-3", r#""app":"web""#, anti);
    let message = unschedulable(&c, "web-3");
    assert!(
        message.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{message}"
    );
    // A plain pod with the label is kept away by the others' anti-affinity too.
    add_pod(&c, "web-plain", r#""app":"web""#, "");
    let message = unschedulable(&c, "web-plain");
    assert!(
        message.contains("3 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{message}"
    );

    // Topology spread across zones (a: n1+n2, b: n3) with maxSkew 1: pods alternate zones.
    let spread = r#""topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"zone","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"app":"spread"}}}]"#;
    let mut zones = std::collections::BTreeMap::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        add_pod(&c, &name, r#""app":"spread""#, spread);
        let node = scheduled(&c, &name);
        let zone = if node == "n3" { "b" } else { "a" };
        *zones.entry(zone).or_insert(0u32) += 1;
        let (a, b) = (
            zones.get("a").copied().unwrap_or(0),
            zones.get("b").copied().unwrap_or(0),
        );
        assert!(a.abs_diff(b) <= 1, "skew above 1 after {name}: {zones:?}");
    }
    assert_eq!(zones.get("a"), Some(&2));
    assert_eq!(zones.get("b"), Some(&2));

    // Pods naming their node skip the scheduler.
    add_pod(&c, "pinned", "", r#""nodeName":"n2""#);
    assert_eq!(node_of(&c, "pinned"), "n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_subresource_sets_the_node_once() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};

    let c = cluster();
    add_node(&c, "n1", "", "", "4");
    // Another scheduler's pod: ours leaves it alone, so the test binds it itself.
    add_pod(&c, "manual", "", r#""schedulerName":"my-scheduler""#);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node_of(&c, "manual"), "");

    let pods: Api<Pod> = Api::namespaced(c.client().await, "default");
    let binding = |node: &str| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "manual"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }))
        .unwrap_or_default()
    };
    let status: serde_json::Value = pods
        .create_subresource("binding", "manual", &PostParams::default(), binding("n1"))
        .await
        .expect("bind");
    assert_eq!(status["status"], "Success");
    assert_eq!(status["code"], 201);
    let pod = pods.get("manual").await.expect("get pod");
    let spec = pod.spec.unwrap_or_default();
    assert_eq!(spec.node_name.as_deref(), Some("n1"));
    let scheduled = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| c.status);
    assert_eq!(scheduled.as_deref(), Some("True"));

    // Bound already: 409 Conflict, worded as upstream.
    let err = pods
        .create_subresource::<serde_json::Value>(
            "binding",
            "manual",
            &PostParams::default(),
            binding("sched-self"),
        )
        .await
        .err();
    match err {
        Some(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Operation cannot be fulfilled on pods/binding \"manual\": pod manual is already assigned to node \"n1\""
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A missing pod is 404; a Binding without a target node is invalid.
    let missing = pods
        .create_subresource::<serde_json::Value>("binding", "nope", &PostParams::default(), {
            serde_json::to_vec(
                &serde_json::json!({"metadata": {"name": "nope"}, "target": {"name": "n1"}}),
            )
            .unwrap_or_default()
        })
        .await
        .err();
    assert!(matches!(missing, Some(kube::Error::Api(s)) if s.code == 404));
    add_pod(&c, "manual-2", "", r#""schedulerName":"my-scheduler""#);
    let invalid = pods
        .create_subresource::<serde_json::Value>("binding", "manual-2", &PostParams::default(), {
            serde_json::to_vec(
                &serde_json::json!({"metadata": {"name": "manual-2"}, "target": {"kind": "Pod"}}),
            )
            .unwrap_or_default()
        })
        .await
        .err();
    assert!(matches!(invalid, Some(kube::Error::Api(s)) if s.code == 422));
    // kubectl sees the subresource in discovery.
    let resources = c.kubectl(&["get", "--raw", "/api/v1"]);
    assert!(resources.contains("\"pods/binding\""), "{resources}");
}
