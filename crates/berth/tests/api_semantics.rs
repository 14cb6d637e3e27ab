//! Object semantics as upstream, seen through the real kubectl and kube-runtime: finalizers,
//! graceful pod deletion, generation, dry-run, deletecollection, streaming-list watches.

mod common;

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher;

#[test]
fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start();
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata: {a: b}\n",
    );
    c.kubectl(&["delete", "cm", "held", "--wait=false"]);
    let ts = c.kubectl(&[
        "get",
        "cm",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !ts.is_empty(),
        "deletionTimestamp set while the finalizer holds it"
    );
    let err = c.kubectl_fails(
        &[
            "patch",
            "cm",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/new"]}}"#,
        ],
        None,
    );
    assert!(
        err.contains("Forbidden") || err.contains("forbidden") || err.contains("invalid"),
        "{err}"
    );
    c.kubectl(&[
        "patch",
        "cm",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = c.kubectl_output(&["get", "cm", "held"], None);
    assert!(
        !out.status.success(),
        "gone once the last finalizer is removed"
    );
}

#[test]
fn bound_pods_are_deleted_gracefully() {
    let c = Cluster::start();
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bound\nspec:\n  nodeName: node-a\n  terminationGracePeriodSeconds: 45\n  containers:\n  - name: c\n    image: busybox:latest\n",
    );
    c.kubectl(&["delete", "pod", "bound", "--wait=false"]);
    let grace = c.kubectl(&[
        "get",
        "pod",
        "bound",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ]);
    assert_eq!(grace, "45");
    let status = c.kubectl(&["get", "pod", "bound"]);
    assert!(status.contains("Terminating"), "{status}");
    // The node agent (or a force delete) finishes it with grace 0.
    c.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"]);
    assert!(!c
        .kubectl_output(&["get", "pod", "bound"], None)
        .status
        .success());
    // An unbound pod goes at once (no scheduler serves its schedulerName, so it stays unbound).
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unbound\nspec:\n  schedulerName: nobody\n  containers:\n  - name: c\n    image: busybox:latest\n",
    );
    c.kubectl(&["delete", "pod", "unbound", "--wait=false"]);
    assert!(!c
        .kubectl_output(&["get", "pod", "unbound"], None)
        .status
        .success());
}

#[test]
fn generation_moves_with_spec_only_and_dry_run_stores_nothing() {
    let c = Cluster::start();
    c.kubectl(&["create", "deployment", "gen", "--image=busybox:latest"]);
    let generation = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "deploy",
            "gen",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
    };
    assert_eq!(generation(&c), "1");
    c.kubectl(&["label", "deploy", "gen", "x=y"]);
    assert_eq!(generation(&c), "1", "metadata changes keep the generation");
    c.kubectl(&["scale", "deploy", "gen", "--replicas=3"]);
    assert_eq!(generation(&c), "2");
    let out = c.kubectl(&["scale", "deploy", "gen", "--replicas=7", "--dry-run=server"]);
    assert!(out.contains("server dry run"), "{out}");
    assert_eq!(
        c.kubectl(&["get", "deploy", "gen", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    c.kubectl(&["create", "configmap", "dry", "--dry-run=server"]);
    assert!(!c
        .kubectl_output(&["get", "cm", "dry"], None)
        .status
        .success());
    let err = c.kubectl_fails(
        &[
            "patch",
            "deploy",
            "gen",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
        ],
        None,
    );
    assert!(err.contains("field is immutable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_and_streaming_list_watch() {
    let c = Cluster::start();
    let client = c.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": {"tier": tier}}}),
        )
        .expect("configmap");
        api.create(&Default::default(), &cm).await.expect("create");
    }
    // kube-runtime's streaming-list watcher: sendInitialEvents + the initial-events-end bookmark.
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("watch ok");
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => initial.extend(o.metadata.name),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, vec!["a", "b", "c"]);
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=x"),
    )
    .await
    .expect("deletecollection");
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("watch ok");
        if let watcher::Event::Delete(o) = ev {
            deleted.extend(o.metadata.name);
        }
    }
    deleted.sort();
    assert_eq!(deleted, vec!["a", "b"]);
}

#[test]
fn events_are_shared_between_core_and_events_api() {
    let c = Cluster::start();
    c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: pulled.1\n  namespace: default\neventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: berth.dev/node\nreportingInstance: node-a\naction: Pulling\nreason: Pulled\nnote: image pulled\ntype: Normal\nregarding:\n  kind: Pod\n  name: web\n  namespace: default\n",
    );
    let core = c.kubectl(&[
        "get",
        "events.v1.",
        "pulled.1",
        "-o",
        "jsonpath={.involvedObject.name}/{.message}/{.reportingComponent}",
    ]);
    assert_eq!(core, "web/image pulled/berth.dev/node");
    let listed = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "name",
    ]);
    assert!(listed.contains("pulled.1"), "{listed}");
    c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: created.1\n  namespace: default\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: default\nreason: Created\nmessage: container created\ntype: Normal\nsource:\n  component: kubelet\n",
    );
    let v1 = c.kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "created.1",
        "-o",
        "jsonpath={.regarding.name}/{.note}/{.deprecatedSource.component}",
    ]);
    assert_eq!(v1, "web/container created/kubelet");
}

#[test]
fn the_server_registers_its_node_with_a_lease() {
    let c = Cluster::start_with(&["--node-name", "berth-test-node"]);
    c.eventually(
        "the node to register",
        std::time::Duration::from_secs(20),
        || {
            c.kubectl_output(&["get", "node", "berth-test-node"], None)
                .status
                .success()
        },
    );
    c.eventually(
        "the node to report its status",
        std::time::Duration::from_secs(20),
        || {
            !c.kubectl(&[
                "get",
                "node",
                "berth-test-node",
                "-o",
                "jsonpath={.status.capacity.cpu}",
            ])
            .is_empty()
        },
    );
    let wide = c.kubectl(&["get", "node", "-o", "wide"]);
    assert!(
        wide.contains("berth-test-node") && wide.contains("v1.33.0-berth"),
        "{wide}"
    );
    let ready = c.kubectl(&[
        "get",
        "node",
        "berth-test-node",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ]);
    assert!(!ready.is_empty(), "Ready condition reported");
    let holder = c.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "berth-test-node",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "berth-test-node");
}
