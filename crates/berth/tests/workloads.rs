//! Workload controllers and the garbage collector against a real `berth server`, driven with
//! the real `kubectl`: cascading deletion in its three modes, the `default` ServiceAccount,
//! ReplicaSets and Deployments (rollouts, history, undo, pause/resume, restart, scale).
//!
//! Pods are bound to a node that has no agent (`fake-node`) and made Ready through the status
//! subresource by a small fake kubelet in the test, so no root is needed.

mod common;

use common::pods::{leftovers, PodCluster};
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

/// Stands in for a node agent on `fake-node`: pods bound there become Running and Ready
/// (except those running image `busybox:broken`, which never get Ready). Stops on drop.
struct FakeKubelet {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    fn start(c: &Cluster) -> FakeKubelet {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kubeconfig = c.kubeconfig();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use k8s_openapi::api::core::v1::Pod;
                use kube::api::{Api, ListParams, Patch, PatchParams};
                let _ = rustls::crypto::ring::default_provider().install_default();
                let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .expect("config");
                let client = kube::Client::try_from(cfg).expect("client");
                let pods: Api<Pod> = Api::all(client.clone());
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    let list = pods
                        .list(&ListParams::default().fields("spec.nodeName=fake-node"))
                        .await;
                    for p in list.map(|l| l.items).unwrap_or_default() {
                        let ready = p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
                        let broken = p
                            .spec
                            .as_ref()
                            .is_some_and(|s| s.containers.iter().any(|c| c.image.as_deref() == Some("busybox:broken")));
                        if ready || p.metadata.deletion_timestamp.is_some() {
                            continue;
                        }
                        let now = k8s_openapi::chrono::Utc::now().to_rfc3339();
                        let status = if broken { "False" } else { "True" };
                        let patch = serde_json::json!({"status": {
                            "phase": "Running",
                            "conditions": [
                                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                                {"type": "Ready", "status": status, "lastTransitionTime": now},
                            ],
                        }});
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let _ = api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            });
        });
        FakeKubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn count(c: &Cluster, kind: &str, selector: &str) -> usize {
    c.kubectl(&["get", kind, "-l", selector, "-o", "name"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

fn jsonpath(c: &Cluster, what: &[&str], path: &str) -> String {
    let jp = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", &jp]);
    c.kubectl(&args)
}

fn rollout_status(c: &Cluster) {
    c.kubectl(&["rollout", "status", "deploy/web", "--timeout=60s"]);
}

#[test]
fn replicaset_keeps_its_pods_adopts_and_releases() {
    let c = Cluster::start();
    let rs = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"front"},
      "spec":{"replicas":3,"selector":{"matchLabels":{"app":"front"}},
      "template":{"metadata":{"labels":{"app":"front"}},
      "spec":{"nodeName":"fake-node","terminationGracePeriodSeconds":0,
      "containers":[{"name":"c","image":"busybox:latest"}]}}}}"#;
    c.kubectl_stdin(&["create", "-f", "-"], rs);
    c.eventually("3 pods", WAIT, || count(&c, "pods", "app=front") == 3);
    let names = c.kubectl(&["get", "pods", "-l", "app=front", "-o", "name"]);
    assert!(
        names.lines().all(|n| n.starts_with("pod/front-")),
        "{names}"
    );
    let _kubelet = FakeKubelet::start(&c);
    c.eventually("status counts ready pods", WAIT, || {
        jsonpath(
            &c,
            &["rs", "front"],
            "{.status.readyReplicas}/{.status.availableReplicas}/{.status.fullyLabeledReplicas}",
        ) == "3/3/3"
    });

    // A deleted pod is replaced.
    let first = names.lines().next().unwrap_or_default().to_string();
    c.kubectl(&["delete", &first]);
    c.eventually("pod replaced", WAIT, || {
        count(&c, "pods", "app=front") == 3 && !exists(&c, "pod", first.trim_start_matches("pod/"))
    });

    // A pod that stops matching is released (and replaced); a matching orphan is adopted.
    let one = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=front",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.kubectl(&["label", "pod", &one, "app=other", "--overwrite"]);
    c.eventually("released pod replaced", WAIT, || {
        count(&c, "pods", "app=front") == 3
    });
    c.eventually("released pod has no owner", WAIT, || {
        let refs = jsonpath(&c, &["pod", &one], "{.metadata.ownerReferences}");
        refs.is_empty() || refs == "[]"
    });
    c.kubectl(&["label", "pod", &one, "app=front", "--overwrite"]);
    c.eventually("adopted, then one extra deleted", WAIT, || {
        count(&c, "pods", "app=front") == 3
            && c.kubectl(&[
                "get",
                "pods",
                "-l",
                "app=front",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences[0].name}",
            ])
            .split_whitespace()
            .all(|o| o == "front")
    });

    // Scale down through the scale subresource, then delete: the pods go with it.
    c.kubectl(&["scale", "rs/front", "--replicas=1"]);
    c.eventually("scaled down to 1", WAIT, || {
        count(&c, "pods", "app=front") == 1
    });
    c.kubectl(&["delete", "rs/front"]);
    c.eventually("pods collected with their ReplicaSet", WAIT, || {
        count(&c, "pods", "app=front") == 0
    });
}

#[test]
fn deployment_rollouts_history_undo_pause_restart_scale_delete() {
    let c = Cluster::start();
    let _kubelet = FakeKubelet::start(&c);
    let generated = c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:latest",
        "--replicas=3",
        "--dry-run=client",
        "-o",
        "json",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    let mut d: serde_json::Value = serde_json::from_str(&generated).expect("deployment json");
    d["spec"]["template"]["spec"]["nodeName"] = "fake-node".into();
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0.into();
    c.kubectl_stdin(&["create", "-f", "-"], &d.to_string());
    rollout_status(&c);
    assert_eq!(count(&c, "pods", "app=web"), 3);
    let rs1 = c.kubectl(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let hash = jsonpath(&c, &["rs", &rs1], "{.metadata.labels.pod-template-hash}");
    assert_eq!(rs1, format!("web-{hash}"));
    assert_eq!(
        jsonpath(
            &c,
            &["rs", &rs1],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );
    assert_eq!(
        jsonpath(
            &c,
            &["deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );
    let conditions = jsonpath(&c, &["deploy", "web"], "{.status.conditions[*].reason}");
    assert!(
        conditions.contains("NewReplicaSetAvailable")
            && conditions.contains("MinimumReplicasAvailable"),
        "{conditions}"
    );

    // A new image rolls out to a second ReplicaSet.
    c.kubectl(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=image v2",
    ]);
    c.kubectl(&["set", "image", "deploy/web", "busybox=busybox:v2"]);
    rollout_status(&c);
    assert_eq!(count(&c, "rs", "app=web"), 2);
    assert_eq!(jsonpath(&c, &["rs", &rs1], "{.spec.replicas}"), "0");
    let history = c.kubectl(&["rollout", "history", "deploy/web"]);
    assert!(
        history.contains("image v2") && history.contains('1') && history.contains('2'),
        "{history}"
    );
    assert_eq!(
        jsonpath(
            &c,
            &["deploy", "web"],
            "{.status.updatedReplicas}/{.status.availableReplicas}"
        ),
        "3/3"
    );

    // Undo goes back to the first template (and its ReplicaSet, now revision 3).
    c.kubectl(&["rollout", "undo", "deploy/web"]);
    rollout_status(&c);
    assert_eq!(
        jsonpath(
            &c,
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:latest"
    );
    assert_eq!(jsonpath(&c, &["rs", &rs1], "{.spec.replicas}"), "3");
    assert_eq!(
        jsonpath(
            &c,
            &["rs", &rs1],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    assert_eq!(count(&c, "rs", "app=web"), 2);

    // Paused: template changes wait for resume.
    c.kubectl(&["rollout", "pause", "deploy/web"]);
    c.kubectl(&["set", "image", "deploy/web", "busybox=busybox:v3"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&c, "rs", "app=web"), 2, "no rollout while paused");
    c.eventually("paused condition", WAIT, || {
        jsonpath(
            &c,
            &["deploy", "web"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ) == "DeploymentPaused"
    });
    c.kubectl(&["rollout", "resume", "deploy/web"]);
    rollout_status(&c);
    assert_eq!(count(&c, "rs", "app=web"), 3);

    // Restart: a template annotation, so a new ReplicaSet.
    c.kubectl(&["rollout", "restart", "deploy/web"]);
    rollout_status(&c);
    assert_eq!(count(&c, "rs", "app=web"), 4);

    // Scale.
    c.kubectl(&["scale", "deploy/web", "--replicas=10"]);
    rollout_status(&c);
    c.eventually("10 pods", WAIT, || count(&c, "pods", "app=web") == 10);

    // A rollout whose pods never get Ready stops within maxUnavailable (25% of 10 = 2) and
    // maxSurge (3), then passes its progress deadline.
    c.kubectl(&[
        "patch",
        "deploy/web",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":3}}"#,
    ]);
    c.kubectl(&["set", "image", "deploy/web", "busybox=busybox:broken"]);
    c.eventually("deadline exceeded", WAIT, || {
        jsonpath(
            &c,
            &["deploy", "web"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ) == "ProgressDeadlineExceeded"
    });
    let available: i32 = jsonpath(&c, &["deploy", "web"], "{.status.availableReplicas}")
        .parse()
        .unwrap_or(0);
    assert!(
        available >= 8,
        "availableReplicas {available} below replicas - maxUnavailable"
    );
    let total = count(&c, "pods", "app=web");
    assert!(total <= 13, "{total} pods above replicas + maxSurge");
    let err = c.kubectl_fails(&["rollout", "status", "deploy/web", "--timeout=10s"], None);
    assert!(err.contains("exceeded its progress deadline"), "{err}");

    // Delete: ReplicaSets and pods go too.
    c.kubectl(&["delete", "deploy/web"]);
    c.eventually("ReplicaSets and pods collected", WAIT, || {
        count(&c, "rs", "app=web") == 0 && count(&c, "pods", "app=web") == 0
    });
}

/// As root, with the scheduler and the node agent: the Deployment's pods run as real
/// containers, roll out, scale, and leave nothing behind once the Deployment is deleted.
#[test]
fn deployment_runs_real_pods() {
    let Some(pc) = PodCluster::start("wl-node", 191, "btwl", "crun") else {
        return;
    };
    let c = &pc.c;
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:latest",
        "--replicas=3",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]);
    c.kubectl(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let nodes = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert_eq!(
        nodes.split_whitespace().filter(|n| *n == "wl-node").count(),
        3,
        "{nodes}"
    );
    let mut uids: Vec<String> = Vec::new();
    let mut record = |c: &Cluster| {
        for u in c
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].metadata.uid}",
            ])
            .split_whitespace()
        {
            if !uids.iter().any(|x| x == u) {
                uids.push(u.to_string());
            }
        }
    };
    record(c);
    // A template change (a short grace period) rolls the running pods over.
    c.kubectl(&[
        "patch",
        "deploy/web",
        "-p",
        r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
    ]);
    c.kubectl(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    record(c);
    c.kubectl(&["scale", "deploy/web", "--replicas=5"]);
    c.kubectl(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    record(c);
    assert_eq!(
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}"
        ]),
        "5/5"
    );
    c.kubectl(&["delete", "deploy/web"]);
    c.eventually("pods gone", Duration::from_secs(90), || {
        count(c, "pods", "app=web") == 0 && count(c, "rs", "app=web") == 0
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = leftovers(c.dir.path(), &pc.bridge, &uids);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        left = leftovers(c.dir.path(), &pc.bridge, &uids);
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn recreate_deployment_replaces_all_pods_and_records_events() {
    let c = Cluster::start();
    let _kubelet = FakeKubelet::start(&c);
    let generated = c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:latest",
        "--replicas=2",
        "--dry-run=client",
        "-o",
        "json",
    ]);
    let mut d: serde_json::Value = serde_json::from_str(&generated).expect("deployment json");
    d["spec"]["strategy"] = serde_json::json!({"type": "Recreate"});
    d["spec"]["template"]["spec"]["nodeName"] = "fake-node".into();
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0.into();
    c.kubectl_stdin(&["create", "-f", "-"], &d.to_string());
    rollout_status(&c);
    let old_rs = c.kubectl(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.kubectl(&["set", "image", "deploy/web", "busybox=busybox:v2"]);
    rollout_status(&c);
    assert_eq!(jsonpath(&c, &["rs", &old_rs], "{.spec.replicas}"), "0");
    let images = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, "busybox:v2 busybox:v2");
    // Each scaling step is its own Event, as upstream words it.
    let described = c.kubectl(&["describe", "deploy", "web"]);
    assert!(
        described.contains(&format!("Scaled up replica set {old_rs} from 0 to 2")),
        "{described}"
    );
    assert!(
        described.contains(&format!("Scaled down replica set {old_rs} from 2 to 0")),
        "{described}"
    );
    let described = c.kubectl(&["describe", "rs", &old_rs]);
    assert_eq!(described.matches("Created pod: ").count(), 2, "{described}");
}
