//! Bad input to the node agent (root): a container killed by its memory limit, a limit too
//! small to start, a mount of an undeclared volume, a probe on a port the container does not
//! name — each pod shows what upstream shows, and a healthy pod beside them keeps serving.

mod common;

use common::pods::PodCluster;
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: healthy}
spec:
  nodeName: fail-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  nodeName: fail-node
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:latest
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    resources: {limits: {memory: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: tiny}
spec:
  nodeName: fail-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    resources: {limits: {memory: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: badprobe}
spec:
  nodeName: fail-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    readinessProbe: {httpGet: {port: web}, periodSeconds: 1}
"#;

#[test]
fn bad_pods_show_their_reasons_and_others_keep_running() {
    let Some(pc) = PodCluster::start("fail-node", 192, "btfail", "crun") else {
        return;
    };
    let c = &pc.c;
    c.kubectl_stdin(&["apply", "-f", "-"], PODS);
    let get = |pod: &str, path: &str| {
        c.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")])
    };
    let events = |pod: &str| {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}|{.message}{\"\\n\"}{end}",
        ])
    };

    // Killed by the memory cgroup: OOMKilled, 137, and the pod fails (restartPolicy Never).
    c.eventually(
        "the oom pod fails OOMKilled",
        Duration::from_secs(30),
        || get("oom", ".status.phase") == "Failed",
    );
    assert_eq!(
        get(
            "oom",
            ".status.containerStatuses[0].state.terminated.reason"
        ),
        "OOMKilled"
    );
    assert_eq!(
        get(
            "oom",
            ".status.containerStatuses[0].state.terminated.exitCode"
        ),
        "137"
    );

    // A limit no process fits in: the runtime's message, as a waiting reason and an Event.
    c.eventually(
        "the tiny pod reports the runtime's error",
        Duration::from_secs(30),
        || get("tiny", ".status.containerStatuses[0].state.waiting.reason") == "RunContainerError",
    );
    let message = get("tiny", ".status.containerStatuses[0].state.waiting.message");
    assert!(message.contains("memory limit"), "{message}");
    assert!(events("tiny").contains("Failed|"), "{}", events("tiny"));

    // A probe on a port name the container does not have: never ready, said in an Event.
    c.eventually(
        "the bad probe's Unhealthy event",
        Duration::from_secs(30),
        || events("badprobe").contains("couldn't find port: web"),
    );
    assert_eq!(
        get("badprobe", ".status.containerStatuses[0].ready"),
        "false"
    );
    assert_eq!(get("badprobe", ".status.phase"), "Running");

    // A mount of a volume the pod does not declare never reaches the node.
    let err = c.kubectl_fails(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"badvol"},
                "spec":{"nodeName":"fail-node","containers":[{"name":"c","image":"busybox:latest",
                "volumeMounts":[{"name":"nope","mountPath":"/x"}]}]}}"#,
        ),
    );
    assert!(
        err.contains(r#"spec.containers[0].volumeMounts[0].name: Not found: "nope""#),
        "{err}"
    );

    // Meanwhile the healthy pod runs, is ready and answers on its IP.
    c.eventually("the healthy pod is ready", Duration::from_secs(30), || {
        get("healthy", ".status.containerStatuses[0].ready") == "true"
    });
    let ip = get("healthy", ".status.podIP");
    let page = std::process::Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/hostname"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), "healthy");
    assert_eq!(
        get("healthy", ".status.containerStatuses[0].restartCount"),
        "0"
    );

    c.kubectl(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
}
