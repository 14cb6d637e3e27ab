//! The issue's kubectl session, verbatim, against a real `berth server`.

mod common;

use common::{examples, Cluster};
use std::time::Duration;

fn app_yaml() -> String {
    examples().join("app.yaml").display().to_string()
}

#[test]
fn discovery_and_explain() {
    let c = Cluster::start();
    let v = c.kubectl(&["version", "-o", "json"]);
    assert!(v.contains("\"serverVersion\""), "{v}");
    assert!(v.contains("v1.33"), "{v}");
    let res = c.kubectl(&["api-resources"]);
    for want in [
        "deployments",
        "deploy",
        "apps/v1",
        "leases",
        "coordination.k8s.io/v1",
        "clusterroles",
    ] {
        assert!(res.contains(want), "api-resources lacks {want}:\n{res}");
    }
    let explain = c.kubectl(&["explain", "deployment.spec.strategy"]);
    assert!(
        explain.contains("KIND:") && explain.contains("Deployment"),
        "{explain}"
    );
    assert!(explain.contains("rollingUpdate"), "{explain}");
    let err = c.kubectl_fails(&["delete", "ns", "kube-system"], None);
    assert!(err.contains("may not be deleted"), "{err}");
    let nss = c.kubectl(&["get", "ns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(nss.contains(ns), "{nss}");
    }
}

#[test]
fn apply_get_describe_unchanged_configured_server_side() {
    let c = Cluster::start();
    let file = app_yaml();
    let out = c.kubectl(&["apply", "-f", &file]);
    for want in [
        "namespace/demo created",
        "configmap/web-config created",
        "secret/web-secret created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(out.contains(want), "{out}");
    }
    let all = c.kubectl(&["get", "all", "-n", "demo", "-o", "wide"]);
    assert!(all.contains("deployment.apps/web"), "{all}");
    assert!(all.contains("service/web"), "{all}");
    let yaml = c.kubectl(&["get", "deploy", "-n", "demo", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("replicas: 2") && yaml.contains("uid:"),
        "{yaml}"
    );
    assert!(yaml.contains("maxSurge: 25%"), "defaults applied:\n{yaml}");
    let ip = c.kubectl(&[
        "get",
        "svc",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        ip.starts_with("10.43."),
        "cluster IP allocated from the service CIDR: {ip}"
    );
    let describe = c.kubectl(&["describe", "cm", "-n", "demo"]);
    assert!(
        describe.contains("web-config") && describe.contains("greeting"),
        "{describe}"
    );

    let again = c.kubectl(&["apply", "-f", &file]);
    for line in again.lines() {
        assert!(
            line.ends_with("unchanged"),
            "second apply changed something: {again}"
        );
    }
    let edited = std::fs::read_to_string(&file)
        .expect("read app.yaml")
        .replace("replicas: 2", "replicas: 3");
    let configured = c.kubectl_stdin(&["apply", "-f", "-"], &edited);
    assert!(
        configured.contains("deployment.apps/web configured"),
        "{configured}"
    );
    assert!(
        configured.contains("configmap/web-config unchanged"),
        "{configured}"
    );
    let replicas = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "3");

    let ssa = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &edited);
    assert!(
        ssa.contains("deployment.apps/web serverside-applied"),
        "{ssa}"
    );
    let managers = c.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
}

#[test]
fn server_side_apply_conflicts() {
    let c = Cluster::start();
    let cm = |value: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  namespace: default\ndata:\n  key: {value}\n")
    };
    c.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        &cm("a"),
    );
    let err = c.kubectl_fails(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&cm("b")),
    );
    assert!(err.contains("conflict") && err.contains("alice"), "{err}");
    assert!(err.contains(".data.key"), "{err}");
    c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &cm("b"),
    );
    let v = c.kubectl(&["get", "cm", "owned", "-o", "jsonpath={.data.key}"]);
    assert_eq!(v, "b");
    // Same value from another manager: shared ownership, no conflict.
    c.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=carol", "-f", "-"],
        &cm("b"),
    );
}

#[test]
fn label_annotate_scale_set_image_patch_edit() {
    let c = Cluster::start();
    c.kubectl(&["apply", "-f", &app_yaml()]);
    let ns = ["-n", "demo"];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&ns);
        c.kubectl(&all)
    };
    assert!(run(&["label", "deploy", "web", "tier=frontend"]).contains("labeled"));
    assert!(run(&["annotate", "deploy", "web", "owner=team-a"]).contains("annotated"));
    assert!(run(&["scale", "deploy", "web", "--replicas=5"]).contains("scaled"));
    assert_eq!(
        run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    assert!(run(&["set", "image", "deploy/web", "web=busybox:v2"]).contains("image updated"));
    assert_eq!(
        run(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "busybox:v2"
    );
    // A strategic merge patch keeps the other container fields (merge by name).
    run(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#,
    ]);
    let env = run(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    let mut names: Vec<&str> = env.split_whitespace().collect();
    names.sort();
    assert_eq!(names, vec!["EXTRA", "GREETING"], "{env}");
    run(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":null}}}"#,
    ]);
    let labels = run(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert!(!labels.contains("tier"), "{labels}");
    run(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert_eq!(
        run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );
    let bad = c.kubectl_fails(
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "demo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
        ],
        None,
    );
    assert!(bad.contains("test operation failed"), "{bad}");
    let generation = run(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert!(
        generation.parse::<i64>().expect("generation") >= 5,
        "{generation}"
    );

    // kubectl edit through an EDITOR that rewrites the replicas.
    let editor = c.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 1/replicas: 4/' \"$1\"\n",
    )
    .expect("write editor");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    let out = c
        .kubectl_cmd()
        .env("EDITOR", &editor)
        .args(["edit", "deploy", "web", "-n", "demo"])
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        run(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
}

#[test]
fn watch_sees_changes_in_order() {
    let c = Cluster::start();
    let mut watch = c
        .kubectl_cmd()
        .args([
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "custom-columns=T:.type,NAME:.object.metadata.name,V:.object.data.v",
            "--no-headers",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(Duration::from_millis(1500));
    c.kubectl(&["create", "configmap", "w1", "--from-literal=v=1"]);
    c.kubectl(&["patch", "configmap", "w1", "-p", r#"{"data":{"v":"2"}}"#]);
    c.kubectl(&["delete", "configmap", "w1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> = text.lines().filter(|l| l.contains("w1")).collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(
        events[0].starts_with("ADDED") && events[0].ends_with('1'),
        "{text}"
    );
    assert!(
        events[1].starts_with("MODIFIED") && events[1].ends_with('2'),
        "{text}"
    );
    assert!(events[2].starts_with("DELETED"), "{text}");
}

#[test]
fn selectors_and_pagination() {
    let c = Cluster::start();
    let mut manifest = String::new();
    for i in 0..25 {
        manifest.push_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:02}\n  labels:\n    parity: {}\n---\n",
            if i % 2 == 0 { "even" } else { "odd" }
        ));
    }
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["get", "cm", "-o", "name"];
        all.extend_from_slice(args);
        c.kubectl(&all)
            .lines()
            .filter(|l| l.contains("cm-"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&[]).len(), 25);
    assert_eq!(names(&["-l", "parity=even"]).len(), 13);
    assert_eq!(names(&["-l", "parity in (odd)"]).len(), 12);
    assert_eq!(
        names(&["--field-selector", "metadata.name=cm-07"]),
        vec!["configmap/cm-07"]
    );
    assert_eq!(
        names(&[
            "--field-selector",
            "metadata.name!=cm-07",
            "-l",
            "parity=odd"
        ])
        .len(),
        11
    );
    // --chunk-size makes kubectl page with limit/continue; every item still arrives once.
    let out = c.kubectl_output(&["get", "cm", "-o", "name", "--chunk-size=4", "-v=6"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("cm-")).count(),
        25,
        "{stdout}"
    );
    assert!(
        stderr.matches("continue=").count() >= 6,
        "paged requests:\n{stderr}"
    );
    let err = c.kubectl_fails(&["get", "pods", "--field-selector", "spec.bogus=1"], None);
    assert!(err.contains("field label not supported"), "{err}");
}

#[test]
fn stale_resource_version_conflicts() {
    let c = Cluster::start();
    c.kubectl(&["create", "configmap", "cas", "--from-literal=a=1"]);
    let stale = c.kubectl(&["get", "cm", "cas", "-o", "json"]);
    c.kubectl(&["patch", "cm", "cas", "-p", r#"{"data":{"a":"2"}}"#]);
    let err = c.kubectl_fails(&["replace", "-f", "-"], Some(&stale));
    assert!(err.contains("the object has been modified"), "{err}");
}

#[test]
fn delete_app_and_namespace() {
    let c = Cluster::start();
    let file = app_yaml();
    c.kubectl(&["apply", "-f", &file]);
    let out = c.kubectl(&["delete", "-f", &file]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    c.kubectl(&["apply", "-f", &file]);
    c.kubectl(&["delete", "ns", "demo", "--wait=false"]);
    let err = c.kubectl_fails(&["create", "configmap", "late", "-n", "demo"], None);
    assert!(
        err.contains("being terminated") || err.contains("not found"),
        "{err}"
    );
    c.eventually("namespace demo to go away", Duration::from_secs(30), || {
        let out = c.kubectl_output(&["get", "ns", "demo"], None);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    let left = c.kubectl(&["get", "cm,secret,deploy,svc", "-n", "demo", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn restart_keeps_acknowledged_writes() {
    let mut c = Cluster::start();
    c.kubectl(&["apply", "-f", &app_yaml()]);
    c.kubectl(&["create", "configmap", "survivor", "--from-literal=k=v"]);
    let rv_before = c.kubectl(&[
        "get",
        "cm",
        "survivor",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    c.restart();
    assert_eq!(
        c.kubectl(&["get", "cm", "survivor", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert_eq!(
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
    c.kubectl(&["patch", "cm", "survivor", "-p", r#"{"data":{"k":"w"}}"#]);
    let rv_after = c.kubectl(&[
        "get",
        "cm",
        "survivor",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert!(rv_after.parse::<i64>().expect("rv") > rv_before.parse::<i64>().expect("rv"));
    c.restart();
    assert_eq!(
        c.kubectl(&["get", "cm", "survivor", "-o", "jsonpath={.data.k}"]),
        "w"
    );
}
