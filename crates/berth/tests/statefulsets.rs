//! StatefulSets and DaemonSets against a real `berth server` running real busybox containers
//! (root), driven with the real `kubectl`: ordered creation, stable names, recreation, a
//! partitioned then full rolling update in reverse order, history and undo, ordered scale
//! down, Parallel pod management and deletion; DaemonSet pods on every eligible node (fake
//! Node objects beside the real one), taints, node deletion, and a rolling update.

mod common;

use common::pods::PodCluster;
use common::Cluster;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

const WEB: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:latest
        command: ["httpd", "-f", "-p", "8080"]
        env: [{name: V, value: "1"}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"#;

const PAR: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: par}
spec:
  replicas: 3
  podManagementPolicy: Parallel
  serviceName: par
  selector: {matchLabels: {app: par}}
  template:
    metadata: {labels: {app: par}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:latest
        command: ["sleep", "3600"]
        readinessProbe: {exec: {command: ["false"]}, periodSeconds: 1}
"#;

fn get(c: &Cluster, what: &str, path: &str) -> String {
    let out = c.kubectl_output(&["get", what, "-o", &format!("jsonpath={path}")], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rollout(c: &Cluster, what: &str) -> String {
    let out = c.kubectl_output(&["rollout", "status", what, "--timeout=120s"], None);
    if !out.status.success() {
        // Say where it stopped.
        let state = c.kubectl(&["get", what, "-o", "yaml"]);
        let pods = c.kubectl(&["get", "pods", "-o", "wide"]);
        let events = c.kubectl(&["get", "events"]);
        panic!(
            "kubectl rollout status {what} failed: {}\n{state}\n{pods}\n{events}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the pods with label `app=<app>`, sorted.
fn pods(c: &Cluster, app: &str) -> Vec<String> {
    let out = c.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

fn created(c: &Cluster, pod: &str) -> String {
    get(c, &format!("pod/{pod}"), "{.metadata.creationTimestamp}")
}

fn ready_at(c: &Cluster, pod: &str) -> String {
    get(
        c,
        &format!("pod/{pod}"),
        "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    )
}

fn revision(c: &Cluster, pod: &str) -> String {
    get(
        c,
        &format!("pod/{pod}"),
        "{.metadata.labels.controller-revision-hash}",
    )
}

#[test]
fn statefulsets_and_daemonsets() {
    let Some(pc) = PodCluster::start("sts-node", 188, "btsts", "crun") else {
        return;
    };
    let c = &pc.c;
    statefulset_lifecycle(c);
    parallel_statefulset(c);
    claims(c);
    daemonsets(c);
}

fn statefulset_lifecycle(c: &Cluster) {
    c.kubectl_stdin(&["apply", "-f", "-"], WEB);
    let out = rollout(c, "sts/web");
    assert!(
        out.contains("roll out complete") || out.contains("complete"),
        "{out}"
    );
    assert_eq!(pods(c, "web"), ["web-0", "web-1", "web-2"]);
    // Ordered: each pod was created once the one before it was Ready.
    for (prev, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let (ready, born) = (ready_at(c, prev), created(c, next));
        assert!(
            !ready.is_empty() && born >= ready,
            "{next} created {born} before {prev} ready {ready}"
        );
    }
    // Identity.
    assert_eq!(
        get(c, "pod/web-1", "{.spec.hostname}/{.spec.subdomain}"),
        "web-1/web"
    );
    assert_eq!(
        get(
            c,
            "pod/web-1",
            "{.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}/{.metadata.labels.apps\\.kubernetes\\.io/pod-index}"
        ),
        "web-1/1"
    );
    let first = get(c, "sts/web", "{.status.updateRevision}");
    assert!(first.starts_with("web-"), "{first}");
    assert_eq!(revision(c, "web-0"), first);
    assert_eq!(
        get(c, "sts/web", "{.status.replicas}/{.status.readyReplicas}/{.status.currentReplicas}/{.status.updatedReplicas}/{.status.availableReplicas}/{.status.currentRevision}"),
        format!("3/3/3/3/3/{first}")
    );
    assert_eq!(
        get(c, &format!("controllerrevision/{first}"), "{.revision}"),
        "1"
    );

    // A deleted pod comes back under the same name.
    let uid = get(c, "pod/web-1", "{.metadata.uid}");
    c.kubectl(&["delete", "pod", "web-1", "--wait=false"]);
    c.eventually("web-1 recreated and ready", WAIT, || {
        let now = get(c, "pod/web-1", "{.metadata.uid}");
        !now.is_empty()
            && now != uid
            && !ready_at(c, "web-1").is_empty()
            && get(
                c,
                "pod/web-1",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
    });
    rollout(c, "sts/web");

    // A partitioned update changes only the pods at or above the partition.
    c.kubectl(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#,
    ]);
    c.kubectl(&["set", "env", "sts/web", "V=2"]);
    let out = rollout(c, "sts/web");
    assert!(out.contains("partitioned roll out complete"), "{out}");
    let second = get(c, "sts/web", "{.status.updateRevision}");
    assert_ne!(second, first);
    assert_eq!(revision(c, "web-2"), second);
    assert_eq!(revision(c, "web-1"), first);
    assert_eq!(revision(c, "web-0"), first);
    assert_eq!(get(c, "sts/web", "{.status.currentRevision}"), first);
    assert_eq!(get(c, "sts/web", "{.status.updatedReplicas}"), "1");

    // Partition 0: the rest follow, highest ordinal first.
    c.kubectl(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    rollout(c, "sts/web");
    c.eventually("every pod at the update revision", WAIT, || {
        ["web-0", "web-1", "web-2"]
            .iter()
            .all(|p| revision(c, p) == second)
            && get(c, "sts/web", "{.status.currentRevision}") == second
    });
    assert!(
        created(c, "web-1") <= created(c, "web-0"),
        "web-1 ({}) replaced after web-0 ({})",
        created(c, "web-1"),
        created(c, "web-0")
    );
    assert!(c
        .kubectl(&["exec", "web-0", "--", "sh", "-c", "echo $V"])
        .contains('2'));

    // History and undo.
    let history = c.kubectl(&["rollout", "history", "sts/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.kubectl(&["rollout", "undo", "sts/web"]);
    c.eventually("undo rolled back to the first template", WAIT, || {
        get(c, "sts/web", "{.status.updateRevision}") == first
            && get(c, "sts/web", "{.status.currentRevision}") == first
            && get(c, "sts/web", "{.status.readyReplicas}") == "3"
    });
    assert_eq!(
        get(c, &format!("controllerrevision/{first}"), "{.revision}"),
        "3"
    );
    assert_eq!(
        get(
            c,
            "sts/web",
            "{.spec.template.spec.containers[0].env[0].value}"
        ),
        "1"
    );

    // Scale down: web-2 goes, then web-1, never the other way round.
    c.kubectl(&["scale", "sts", "web", "--replicas=1"]);
    let deadline = Instant::now() + WAIT;
    loop {
        // One listing: each pod with whether it is terminating.
        let listing = c.kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        let pods: Vec<(&str, bool)> = listing
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(n, t)| (n, !t.is_empty()))
            .collect();
        let has = |n: &str| pods.iter().any(|(p, _)| *p == n);
        let terminating = |n: &str| pods.iter().any(|(p, t)| *p == n && *t);
        if has("web-2") {
            assert!(
                has("web-1") && !terminating("web-1"),
                "web-1 went before web-2: {listing}"
            );
        }
        if pods.len() == 1 && has("web-0") {
            break;
        }
        assert!(Instant::now() < deadline, "scale down stuck at {listing}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(c, "sts/web", "{.status.replicas}"), "1");

    // Deleting the set deletes its pods and revisions.
    c.kubectl(&["delete", "sts", "web"]);
    c.eventually("web pods and revisions gone", WAIT, || {
        pods(c, "web").is_empty()
            && get(c, "controllerrevisions", "{.items[*].metadata.name}")
                .split_whitespace()
                .all(|n| !n.starts_with("web-"))
    });
}

fn parallel_statefulset(c: &Cluster) {
    // Never ready: OrderedReady would stop at par-0; Parallel creates all three.
    c.kubectl_stdin(&["apply", "-f", "-"], PAR);
    c.eventually("all Parallel pods created", WAIT, || {
        pods(c, "par") == ["par-0", "par-1", "par-2"]
    });
    assert_eq!(get(c, "sts/par", "{.status.readyReplicas}"), "");
    c.kubectl(&["delete", "sts", "par"]);
    c.eventually("par pods gone", WAIT, || pods(c, "par").is_empty());
}

const DATA: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: data}
spec:
  replicas: 2
  podManagementPolicy: Parallel
  serviceName: data
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  selector: {matchLabels: {app: data}}
  template:
    metadata: {labels: {app: data}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox:latest, command: ["sleep", "3600"]}]
  volumeClaimTemplates:
  - metadata: {name: disk}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

/// The names of the PersistentVolumeClaims, sorted.
fn claim_names(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = get(c, "pvc", "{.items[*].metadata.name}")
        .split_whitespace()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Claims from volumeClaimTemplates (berth provisions no storage: they stay Pending): one
/// per pod, referenced by the pod, deleted on scale down and with the set as the retention
/// policy says.
fn claims(c: &Cluster) {
    c.kubectl_stdin(&["apply", "-f", "-"], DATA);
    c.eventually("a claim per pod", WAIT, || {
        claim_names(c) == ["disk-data-0", "disk-data-1"] && pods(c, "data").len() == 2
    });
    assert_eq!(
        get(
            c,
            "pod/data-1",
            "{.spec.volumes[?(@.name==\"disk\")].persistentVolumeClaim.claimName}"
        ),
        "disk-data-1"
    );
    assert_eq!(get(c, "pvc/disk-data-0", "{.metadata.labels.app}"), "data");
    c.kubectl(&["scale", "sts", "data", "--replicas=1"]);
    let deadline = Instant::now() + WAIT;
    while claim_names(c) != ["disk-data-0"] {
        if Instant::now() > deadline {
            panic!(
                "the scaled-down pod's claim was not deleted:\n{}\n{}\n{}",
                c.kubectl(&["get", "pvc", "-o", "yaml"]),
                c.kubectl(&["get", "pods", "-l", "app=data", "-o", "wide"]),
                c.kubectl(&["get", "events"])
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kubectl(&["delete", "sts", "data"]);
    c.eventually("the set's claims deleted with it", WAIT, || {
        claim_names(c).is_empty() && pods(c, "data").is_empty()
    });
}

/// Registers a Node without an agent (its pods stay Pending), Ready.
fn add_node(c: &Cluster, name: &str, taints: &str) {
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}"}}}},"spec":{{"taints":[{taints}]}}}}"#
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    let status = r#"{"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"10"},"allocatable":{"cpu":"4","memory":"8Gi","pods":"10"},"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"fake node"}]}}"#;
    c.kubectl(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
}

/// The node each pod of `app` is pinned to by its node affinity, sorted.
fn daemon_nodes(c: &Cluster, app: &str) -> Vec<String> {
    let out = c.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.deletionTimestamp}={.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]}{\"\\n\"}{end}",
    ]);
    // Terminating pods (on nodes without an agent they stay so) do not count.
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(deleting, _)| deleting.is_empty())
        .map(|(_, node)| node.to_string())
        .collect();
    v.sort();
    v
}

const ALL: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: all}
spec:
  selector: {matchLabels: {app: all}}
  template:
    metadata: {labels: {app: all}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox:latest, command: ["sleep", "3600"]}]
"#;

const LOCAL: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: local}
spec:
  selector: {matchLabels: {app: local}}
  template:
    metadata: {labels: {app: local}}
    spec:
      nodeSelector: {role: real}
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:latest
        command: ["httpd", "-f", "-p", "8081"]
        env: [{name: V, value: "1"}]
        readinessProbe: {tcpSocket: {port: 8081}, periodSeconds: 1}
"#;

fn daemonsets(c: &Cluster) {
    add_node(c, "ds-fake-a", "");
    add_node(c, "ds-fake-b", "");
    add_node(
        c,
        "ds-tainted",
        r#"{"key":"dedicated","value":"x","effect":"NoSchedule"}"#,
    );
    c.kubectl_stdin(&["apply", "-f", "-"], ALL);
    // One pod per eligible node; the tainted node gets none.
    c.eventually("a daemon pod per eligible node", WAIT, || {
        daemon_nodes(c, "all") == ["ds-fake-a", "ds-fake-b", "sts-node"]
    });
    let on_real = || {
        get(
            c,
            "pods",
            "{.items[?(@.spec.nodeName==\"sts-node\")].metadata.name}",
        )
    };
    c.eventually("the pod on the real node bound", WAIT, || {
        !on_real().is_empty()
    });
    let on_real = on_real();
    c.eventually("the pod on the real node Running", WAIT, || {
        get(c, &format!("pod/{on_real}"), "{.status.phase}") == "Running"
    });
    c.eventually("status counts the eligible nodes", WAIT, || {
        get(
            c,
            "ds/all",
            "{.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/{.status.numberMisscheduled}",
        ) == "3/3/0"
    });

    // A node that goes takes its daemon pod with it.
    c.kubectl(&["delete", "node", "ds-fake-b"]);
    c.eventually("the deleted node's daemon pod deleted", WAIT, || {
        daemon_nodes(c, "all") == ["ds-fake-a", "sts-node"]
    });
    c.eventually("status follows", WAIT, || {
        get(c, "ds/all", "{.status.desiredNumberScheduled}") == "2"
    });
    // A taint the pods do not tolerate, with NoExecute, evicts the daemon pod.
    c.kubectl(&["taint", "node", "ds-fake-a", "gone=yes:NoExecute"]);
    c.eventually(
        "the NoExecute-tainted node's daemon pod deleted",
        WAIT,
        || daemon_nodes(c, "all") == ["sts-node"],
    );
    c.kubectl(&["delete", "ds", "all"]);

    // A DaemonSet on the real node only: it rolls out, and rolls on an update.
    c.kubectl(&["label", "node", "sts-node", "role=real"]);
    c.kubectl_stdin(&["apply", "-f", "-"], LOCAL);
    let out = rollout(c, "ds/local");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(daemon_nodes(c, "local"), ["sts-node"]);
    let before = pods(c, "local");
    assert_eq!(before.len(), 1);
    let first_hash = revision(c, &before[0]);
    c.kubectl(&["set", "env", "ds/local", "V=2"]);
    let out = rollout(c, "ds/local");
    assert!(out.contains("successfully rolled out"), "{out}");
    c.eventually("the old daemon pod replaced", WAIT, || {
        let now = pods(c, "local");
        now.len() == 1 && now != before
    });
    let after = pods(c, "local");
    assert_ne!(revision(c, &after[0]), first_hash);
    assert!(c
        .kubectl(&["exec", &after[0], "--", "sh", "-c", "echo $V"])
        .contains('2'));
    assert_eq!(
        get(
            c,
            "ds/local",
            "{.status.desiredNumberScheduled}/{.status.updatedNumberScheduled}/{.status.numberAvailable}/{.status.numberReady}"
        ),
        "1/1/1/1"
    );
    let history = c.kubectl(&["rollout", "history", "ds/local"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    // Undo goes back to the first template (its revision renumbered 3).
    c.kubectl(&["rollout", "undo", "ds/local"]);
    c.eventually("undo rolled the daemon pod back", WAIT, || {
        let now = pods(c, "local");
        now.len() == 1 && revision(c, &now[0]) == first_hash
    });
    rollout(c, "ds/local");
    let now = pods(c, "local");
    assert!(c
        .kubectl(&["exec", &now[0], "--", "sh", "-c", "echo $V"])
        .contains('1'));
    assert_eq!(
        get(
            c,
            &format!("controllerrevision/local-{first_hash}"),
            "{.revision}"
        ),
        "3"
    );
    c.kubectl(&["delete", "ds", "local"]);
    c.eventually("local pods gone", WAIT, || pods(c, "local").is_empty());
}
