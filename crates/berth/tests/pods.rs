//! Pods run as real containers (root): a busybox image imported from an OCI tarball, CNI
//! networking, configMap volumes, readiness, restarts with back-off, completion, graceful
//! deletion — and nothing left behind.

mod common;

use common::pods::{leftovers, PodCluster};
use std::time::Duration;

#[test]
fn pods_run_as_containers() {
    let Some(mut pc) = PodCluster::start("pod-node", 199, "btpod", "crun") else {
        return;
    };
    let n = std::process::id() % 200 + 20;
    let c = &pc.c;
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: www}
data: {index.html: "hello from a berth pod\n"}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: pod-node
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
    volumeMounts: [{name: www, mountPath: /www}]
  volumes: [{name: www, configMap: {name: www}}]
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: pod-node
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox:latest, command: ["sh", "-c", "echo dying; exit 3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  nodeName: pod-node
  restartPolicy: Never
  initContainers: [{name: init, image: busybox:latest, command: ["true"]}]
  containers: [{name: c, image: busybox:latest, command: ["sh", "-c", "exit 0"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: unwell}
spec:
  nodeName: pod-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: nocmd}
spec:
  nodeName: pod-node
  containers: [{name: c, image: busybox:latest, command: ["/nope"]}]
"#;
    c.kubectl_stdin(&["apply", "-f", "-"], manifest);
    c.eventually("the node to be Ready", Duration::from_secs(20), || {
        c.kubectl(&[
            "get",
            "node",
            "pod-node",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "True"
    });
    c.eventually(
        "web to be Running and Ready",
        Duration::from_secs(30),
        || {
            c.kubectl(&[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.status.phase}/{.status.containerStatuses[0].ready}",
            ]) == "Running/true"
        },
    );
    let described = c.kubectl(&["describe", "pod", "web"]);
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            described.contains(reason),
            "event {reason} in describe:\n{described}"
        );
    }
    let images = c.kubectl(&[
        "get",
        "node",
        "pod-node",
        "-o",
        "jsonpath={.status.images[*].names}",
    ]);
    assert!(
        images.contains("docker.io/library/busybox:latest"),
        "node reports its images: {images}"
    );
    let ip = c.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    assert!(
        ip.starts_with(&format!("10.199.{n}.")),
        "pod IP from the pod CIDR: {ip}"
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:8080/")])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a berth pod\n"
    );
    // The agent restarts; the container keeps running and is adopted, not restarted.
    let id = c.kubectl(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    pc.restart();
    let c = &pc.c;
    c.eventually(
        "web to be reported again after the agent restart",
        Duration::from_secs(30),
        || {
            c.kubectl(&[
                "get",
                "pod",
                "web",
                "-o",
                "jsonpath={.status.phase}/{.status.containerStatuses[0].ready}",
            ]) == "Running/true"
        },
    );
    let after = c.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].containerID}/{.status.containerStatuses[0].restartCount}"]);
    assert_eq!(after, format!("{id}/0"), "same container, no restart");
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:8080/")])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a berth pod\n"
    );
    c.eventually("nocmd to report the runtime's error", Duration::from_secs(30), || {
        let w = c.kubectl(&["get", "pod", "nocmd", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}"]);
        w.starts_with("RunContainerError") && w.contains("nope")
    });
    c.eventually(
        "the failing liveness probe to restart unwell",
        Duration::from_secs(40),
        || {
            c.kubectl(&[
                "get",
                "pod",
                "unwell",
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ])
            .parse::<i32>()
            .is_ok_and(|r| r >= 1)
        },
    );
    c.eventually("once to succeed", Duration::from_secs(30), || {
        c.kubectl(&["get", "pod", "once", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
    });
    c.eventually("crash to restart after its back-off", Duration::from_secs(40), || {
        let s = c.kubectl(&["get", "pod", "crash", "-o", "jsonpath={.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].lastState.terminated.exitCode}"]);
        s.split('/').next().and_then(|r| r.parse::<i32>().ok()).is_some_and(|r| r >= 1) && s.ends_with("/3")
    });
    // Crashing again, it waits out a longer back-off, as upstream shows it: the
    // CrashLoopBackOff reason and a BackOff event whose repeats are counted.
    c.eventually(
        "crash to wait in CrashLoopBackOff",
        Duration::from_secs(20),
        || {
            c.kubectl(&[
                "get",
                "pod",
                "crash",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
            ]) == "CrashLoopBackOff"
        },
    );
    c.eventually("crash's BackOff event, counted", Duration::from_secs(20), || {
        let e = c.kubectl(&["get", "events", "-o", r#"jsonpath={range .items[?(@.reason=="BackOff")]}{.involvedObject.name}|{.type}|{.count}|{.message}{"\n"}{end}"#]);
        e.lines().any(|l| {
            let f: Vec<&str> = l.splitn(4, '|').collect();
            f.len() == 4
                && f[0] == "crash"
                && f[1] == "Warning"
                && f[2].parse::<i32>().is_ok_and(|n| n >= 2)
                && f[3].starts_with("Back-off restarting failed container c in pod crash_default(")
        })
    });
    let log_dir = std::path::Path::new("/var/log/pods");
    let uid = c.kubectl(&["get", "pod", "crash", "-o", "jsonpath={.metadata.uid}"]);
    let log = std::fs::read_to_string(log_dir.join(format!("default_crash_{uid}/c/0.log")))
        .expect("crash log");
    assert!(log.contains(" stdout F dying"), "CRI-format log: {log}");

    c.kubectl(&[
        "delete",
        "pod",
        "web",
        "crash",
        "once",
        "nocmd",
        "unwell",
        "--grace-period=1",
    ]);
    assert!(c.kubectl(&["get", "pods", "-o", "name"]).trim().is_empty());
    // Finished pods go from the API at once; the node removes what they left within a scan.
    let entries = |sub: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(c.dir.path().join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    c.eventually(
        "every container and sandbox to be removed",
        Duration::from_secs(20),
        || {
            entries("containers/containers").is_empty()
                && entries("netns").is_empty()
                && entries("pods").is_empty()
        },
    );
}

#[test]
fn a_hundred_pod_cycles_leave_nothing_behind() {
    let Some(pc) = PodCluster::start("leak-node", 198, "btleak", "runc") else {
        return;
    };
    let (c, bridge) = (&pc.c, &pc.bridge);
    let mut uids: Vec<String> = Vec::new();
    for round in 0..10 {
        let mut manifest = String::new();
        for i in 0..10 {
            manifest.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{cycle: x}}}}\nspec:\n  nodeName: leak-node\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: busybox:latest, command: [sleep, '3600']}}]\n---\n"
            ));
        }
        c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
        c.eventually("10 pods Running", Duration::from_secs(60), || {
            c.kubectl(&[
                "get",
                "pods",
                "-l",
                "cycle=x",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ])
            .split_whitespace()
            .filter(|p| *p == "Running")
            .count()
                == 10
        });
        let round_uids = c.kubectl(&[
            "get",
            "pods",
            "-l",
            "cycle=x",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ]);
        uids.extend(round_uids.split_whitespace().map(str::to_string));
        // Half the rounds delete gracefully (the agent stops them), half by force (the
        // agent finds the leftovers of pods that are gone).
        if round % 2 == 0 {
            c.kubectl(&["delete", "pods", "-l", "cycle=x", "--grace-period=1"]);
        } else {
            c.kubectl(&[
                "delete",
                "pods",
                "-l",
                "cycle=x",
                "--grace-period=0",
                "--force",
            ]);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = leftovers(c.dir.path(), bridge, &uids);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        left = leftovers(c.dir.path(), bridge, &uids);
    }
    assert!(left.is_empty(), "left behind after 100 pods: {left:#?}");
    let ipam = c.dir.path().join("cni/ipam");
    let allocated: Vec<String> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .flat_map(|net| {
                    std::fs::read_dir(net.path())
                        .map(|x| x.flatten().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        allocated.is_empty(),
        "pod IPs still allocated: {allocated:?}"
    );
}
