//! Workload controllers and the garbage collector against a real `berth server`, driven with
//! the real `kubectl`: cascading deletion in its three modes, the `default` ServiceAccount,
//! ReplicaSets and Deployments (rollouts, history, undo, pause/resume, restart, scale).
//!
//! Pods are bound to a node that has no agent (`fake-node`) and made Ready through the status
//! subresource by a small fake kubelet in the test, so no root is needed.

mod common;

use common::Cluster;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn exists(c: &Cluster, kind: &str, name: &str) -> bool {
    c.kubectl_output(&["get", kind, name, "-o", "name"], None)
        .status
        .success()
}

fn uid(c: &Cluster, kind: &str, name: &str) -> String {
    c.kubectl(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
}

/// Creates ConfigMap `name` owned by ConfigMap `owner`.
fn dependent(c: &Cluster, name: &str, owner: &str, block: bool) {
    let owner_uid = uid(c, "configmap", owner);
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"{owner}","uid":"{owner_uid}","blockOwnerDeletion":{block}}}]}}}}"#
    );
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
}

#[test]
fn garbage_collection_in_three_propagation_modes() {
    let c = Cluster::start();

    // Background: the owner goes at once, then its dependents (and theirs).
    c.kubectl(&["create", "configmap", "bg"]);
    dependent(&c, "bg-child", "bg", false);
    dependent(&c, "bg-grandchild", "bg-child", false);
    c.kubectl(&["delete", "configmap", "bg", "--cascade=background"]);
    assert!(!exists(&c, "configmap", "bg"));
    c.eventually("background dependents deleted", WAIT, || {
        !exists(&c, "configmap", "bg-child") && !exists(&c, "configmap", "bg-grandchild")
    });

    // A dependent whose owner uid never existed is collected.
    let manifest = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dangling","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"nobody","uid":"00000000-0000-0000-0000-000000000001"}]}}"#;
    c.kubectl_stdin(&["create", "-f", "-"], manifest);
    c.eventually("dangling dependent deleted", WAIT, || {
        !exists(&c, "configmap", "dangling")
    });

    // A dependent with a second, living owner only loses the reference to the gone one.
    c.kubectl(&["create", "configmap", "a"]);
    c.kubectl(&["create", "configmap", "b"]);
    let (a, b) = (uid(&c, "configmap", "a"), uid(&c, "configmap", "b"));
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"shared","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"a","uid":"{a}"}},{{"apiVersion":"v1","kind":"ConfigMap","name":"b","uid":"{b}"}}]}}}}"#
    );
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
    c.kubectl(&["delete", "configmap", "a"]);
    c.eventually("the gone owner's reference removed", WAIT, || {
        c.kubectl(&[
            "get",
            "configmap",
            "shared",
            "-o",
            "jsonpath={.metadata.ownerReferences[*].name}",
        ]) == "b"
    });

    // Foreground: the owner waits (Terminating, with its finalizer) for dependents that
    // block it, and goes once they are gone.
    c.kubectl(&["create", "configmap", "fg"]);
    dependent(&c, "fg-child", "fg", true);
    dependent(&c, "fg-other", "fg", false);
    // A finalizer of ours holds the blocking dependent, so the owner visibly waits.
    c.kubectl(&[
        "patch",
        "configmap",
        "fg-child",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["test.berth.dev/hold"]}}"#,
    ]);
    c.kubectl(&[
        "delete",
        "configmap",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    c.eventually("foreground dependents marked for deletion", WAIT, || {
        !exists(&c, "configmap", "fg-other")
            && !c
                .kubectl(&[
                    "get",
                    "configmap",
                    "fg-child",
                    "-o",
                    "jsonpath={.metadata.deletionTimestamp}",
                ])
                .is_empty()
    });
    let fins = c.kubectl(&[
        "get",
        "configmap",
        "fg",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(fins.contains("foregroundDeletion"), "{fins}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        exists(&c, "configmap", "fg"),
        "owner waits for its blocking dependent"
    );
    c.kubectl(&[
        "patch",
        "configmap",
        "fg-child",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    c.eventually(
        "foreground owner deleted after its dependents",
        WAIT,
        || !exists(&c, "configmap", "fg") && !exists(&c, "configmap", "fg-child"),
    );

    // Orphan: the owner goes, its dependents stay without the reference.
    c.kubectl(&["create", "configmap", "orph"]);
    dependent(&c, "orph-child", "orph", true);
    c.kubectl(&["delete", "configmap", "orph", "--cascade=orphan"]);
    assert!(!exists(&c, "configmap", "orph"));
    assert!(exists(&c, "configmap", "orph-child"));
    let refs = c.kubectl(&[
        "get",
        "configmap",
        "orph-child",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]);
    assert!(
        refs.is_empty(),
        "orphaned dependent keeps no reference: {refs}"
    );
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    let c = Cluster::start();
    c.eventually("default ServiceAccount in default", WAIT, || {
        exists(&c, "serviceaccount", "default")
    });
    c.kubectl(&["create", "namespace", "team"]);
    c.eventually("default ServiceAccount in a new namespace", WAIT, || {
        c.kubectl_output(&["get", "sa", "default", "-n", "team", "-o", "name"], None)
            .status
            .success()
    });
    let first = c.kubectl(&[
        "get",
        "sa",
        "default",
        "-n",
        "team",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    c.kubectl(&["delete", "sa", "default", "-n", "team"]);
    c.eventually("default ServiceAccount recreated", WAIT, || {
        let out = c.kubectl_output(
            &[
                "get",
                "sa",
                "default",
                "-n",
                "team",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout) != first
    });
}
