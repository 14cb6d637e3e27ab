//! Probes and lifecycle hooks (root): exec readiness gating a pod's readiness with upstream
//! timing, a startup probe holding off liveness, failing liveness and startup probes
//! restarting their containers with `Unhealthy`/`Killing` events, an httpGet probe's status
//! code and an exec probe's timeout in their events, postStart hooks (one the container sees,
//! one that fails and restarts it) and preStop hooks (exec and sleep) on deletion within the
//! grace period. The pods run side by side in one cluster.

mod common;

use common::pods::PodCluster;
use common::Cluster;
use std::time::{Duration, Instant};

fn get(c: &Cluster, pod: &str, path: &str) -> String {
    c.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// `reason|message|count` of each Event about `pod`.
fn events(c: &Cluster, pod: &str) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ]))
    .expect("event list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}|{}|{}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default(),
                e["count"]
            )
        })
        .collect()
}

fn has_event(c: &Cluster, pod: &str, reason: &str, message: &str) -> bool {
    events(c, pod)
        .iter()
        .any(|e| e.starts_with(&format!("{reason}|")) && e.contains(message))
}

/// The CRI log of container `container` of `pod` (first attempt).
fn log(c: &Cluster, pod: &str, container: &str) -> String {
    let uid = get(c, pod, "{.metadata.uid}");
    std::fs::read_to_string(format!(
        "/var/log/pods/default_{pod}_{uid}/{container}/0.log"
    ))
    .unwrap_or_default()
}

#[test]
fn probes_and_lifecycle_hooks() {
    let Some(pc) = PodCluster::start("probe-node", 196, "btprobe", "crun") else {
        return;
    };
    let c = &pc.c;
    let host = tempfile::Builder::new()
        .prefix("berth-probes")
        .tempdir()
        .expect("host dir");
    let toggle = host.path().join("toggle");
    let out = host.path().join("out");
    std::fs::create_dir_all(&toggle).expect("toggle dir");
    std::fs::create_dir_all(&out).expect("out dir");
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ready-exec}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "/toggle/ready"]}}
      periodSeconds: 1
      successThreshold: 2
      failureThreshold: 2
    volumeMounts: [{{name: toggle, mountPath: /toggle}}]
  volumes: [{{name: toggle, hostPath: {{path: "{toggle}", type: Directory}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: startup}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "sleep 5; touch /tmp/started; exec sleep 3600"]
    startupProbe:
      exec: {{command: ["test", "-f", "/tmp/started"]}}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {{command: ["test", "-f", "/tmp/started"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: liveness-exec}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    livenessProbe:
      exec: {{command: ["sh", "-c", "echo unhealthy; exit 1"]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: http-404}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/tmp"]
    ports: [{{name: web, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /missing, port: web}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: startup-fail}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    startupProbe:
      exec: {{command: ["sh", "-c", "echo not yet >&2; exit 1"]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: exec-timeout}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    readinessProbe: {{exec: {{command: ["sleep", "5"]}}, timeoutSeconds: 1, periodSeconds: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: poststart}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "while [ ! -f /tmp/hook ]; do sleep 0.1; done; cat /tmp/hook; exec sleep 3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo from-poststart > /tmp/hook"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: poststart-fail}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo boom; exit 7"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: prestop}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "trap 'cat /out/prestop > /out/order; exit 0' TERM; while :; do sleep 0.1; done"]
    lifecycle:
      preStop: {{exec: {{command: ["sh", "-c", "sleep 2; echo prestop-ran > /out/prestop"]}}}}
    volumeMounts: [{{name: out, mountPath: /out}}]
  volumes: [{{name: out, hostPath: {{path: "{out}", type: Directory}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: prestop-sleep}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
    lifecycle:
      preStop: {{sleep: {{seconds: 3}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: prestop-long}}
spec:
  nodeName: probe-node
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
    lifecycle:
      preStop: {{sleep: {{seconds: 60}}}}
"#,
        toggle = toggle.display(),
        out = out.display(),
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    let t0 = Instant::now();

    // A startup probe holds off the liveness probe (which would fail at once) and keeps the
    // container not `started` until it succeeds.
    c.eventually(
        "startup to run without being started",
        Duration::from_secs(30),
        || {
            get(
                c,
                "startup",
                "{.status.phase}/{.status.containerStatuses[0].started}/{.status.containerStatuses[0].ready}",
            ) == "Running/false/false"
        },
    );
    // Readiness: running and started, but not ready while the exec probe fails.
    c.eventually(
        "ready-exec to run, started and unready",
        Duration::from_secs(30),
        || {
            get(
                c,
                "ready-exec",
                "{.status.phase}/{.status.containerStatuses[0].started}/{.status.containerStatuses[0].ready}",
            ) == "Running/true/false"
        },
    );
    c.eventually(
        "an Unhealthy event for the failing readiness probe",
        Duration::from_secs(10),
        || has_event(c, "ready-exec", "Unhealthy", "Readiness probe failed"),
    );
    std::fs::write(toggle.join("ready"), "").expect("write toggle");
    let t = Instant::now();
    c.eventually("ready-exec to become ready", Duration::from_secs(10), || {
        get(c, "ready-exec", "{.status.containerStatuses[0].ready}/{.status.conditions[?(@.type==\"Ready\")].status}") == "true/True"
    });
    // successThreshold 2 at 1 s: not before the second success.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "ready after {:?}",
        t.elapsed()
    );
    std::fs::remove_file(toggle.join("ready")).expect("remove toggle");
    c.eventually("ready-exec to become unready", Duration::from_secs(10), || {
        get(c, "ready-exec", "{.status.containerStatuses[0].ready}/{.status.conditions[?(@.type==\"Ready\")].status}") == "false/False"
    });

    c.eventually(
        "startup to be started and ready",
        Duration::from_secs(20),
        || {
            get(
                c,
                "startup",
                "{.status.containerStatuses[0].started}/{.status.containerStatuses[0].ready}",
            ) == "true/true"
        },
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "started before the startup probe could pass"
    );
    assert_eq!(
        get(c, "startup", "{.status.containerStatuses[0].restartCount}"),
        "0",
        "the liveness probe did not run before the container started: {:?}",
        events(c, "startup")
    );

    // An httpGet probe on a named port; the status code is in the event.
    c.eventually(
        "the 404 in an Unhealthy event",
        Duration::from_secs(20),
        || {
            has_event(
                c,
                "http-404",
                "Unhealthy",
                "Readiness probe failed: HTTP probe failed with statuscode: 404",
            )
        },
    );
    assert_eq!(
        get(c, "http-404", "{.status.containerStatuses[0].ready}"),
        "false"
    );

    // An exec probe past its timeoutSeconds fails (its process killed).
    c.eventually(
        "the exec probe to time out",
        Duration::from_secs(20),
        || {
            has_event(
                c,
                "exec-timeout",
                "Unhealthy",
                "Readiness probe failed: command \"sleep 5\" timed out",
            )
        },
    );
    assert_eq!(
        get(c, "exec-timeout", "{.status.containerStatuses[0].ready}"),
        "false"
    );

    // postStart: done before the container counts as running; the container sees its work.
    c.eventually("poststart to run", Duration::from_secs(20), || {
        get(c, "poststart", "{.status.phase}") == "Running"
    });
    c.eventually(
        "the container to see what postStart wrote",
        Duration::from_secs(5),
        || log(c, "poststart", "c").contains(" stdout F from-poststart"),
    );

    // A failing postStart hook kills the container (PostStartHookError, then the crash
    // back-off), which is restarted.
    c.eventually(
        "FailedPostStartHook and Killing events",
        Duration::from_secs(20),
        || {
            let ev = events(c, "poststart-fail");
            ev.iter().any(|e| {
                e.starts_with("FailedPostStartHook|")
                    && e.contains(
                        "Exec lifecycle hook ([sh -c echo boom; exit 7]) for Container \"c\"",
                    )
                    && e.contains("exited with 7")
                    && e.contains("boom")
            }) && ev
                .iter()
                .any(|e| e.starts_with("Killing|FailedPostStartHook|"))
        },
    );
    c.eventually(
        "poststart-fail to wait for its restart",
        Duration::from_secs(20),
        || {
            let w = get(c, "poststart-fail", "{.status.containerStatuses[0].state.waiting.reason}/{.status.containerStatuses[0].lastState.terminated.exitCode}");
            w == "PostStartHookError/137" || w == "CrashLoopBackOff/137"
        },
    );

    // A failing liveness probe restarts the container; kubectl describe tells why.
    c.eventually(
        "liveness-exec to be restarted",
        Duration::from_secs(40),
        || {
            get(
                c,
                "liveness-exec",
                "{.status.containerStatuses[0].restartCount}",
            )
            .parse::<i32>()
            .is_ok_and(|r| r >= 1)
        },
    );
    let described = c.kubectl(&["describe", "pod", "liveness-exec"]);
    for text in [
        "Liveness probe failed: unhealthy",
        "Container c failed liveness probe, will be restarted",
    ] {
        assert!(described.contains(text), "{text} in:\n{described}");
    }
    // Repeats are counted on one Event, as upstream's event correlator does.
    let ev = events(c, "liveness-exec");
    assert!(
        ev.iter().any(
            |e| e.starts_with("Unhealthy|Liveness probe failed: unhealthy")
                && e.rsplit('|').next().and_then(|n| n.parse::<i32>().ok()) >= Some(2)
        ),
        "{ev:#?}"
    );
    // So does a failing startup probe.
    c.eventually(
        "startup-fail to be restarted",
        Duration::from_secs(30),
        || {
            get(
                c,
                "startup-fail",
                "{.status.containerStatuses[0].restartCount}",
            )
            .parse::<i32>()
            .is_ok_and(|r| r >= 1)
        },
    );
    let ev = events(c, "startup-fail");
    for text in [
        "Unhealthy|Startup probe failed: not yet",
        "Killing|Container c failed startup probe, will be restarted",
    ] {
        assert!(ev.iter().any(|e| e.starts_with(text)), "{text} in {ev:#?}");
    }
    c.eventually(
        "poststart-fail to be restarted",
        Duration::from_secs(30),
        || {
            get(
                c,
                "poststart-fail",
                "{.status.containerStatuses[0].restartCount}",
            )
            .parse::<i32>()
            .is_ok_and(|r| r >= 1)
        },
    );

    // preStop hooks run on deletion before the stop signal, within the grace period.
    for pod in ["prestop", "prestop-sleep", "prestop-long"] {
        c.eventually(&format!("{pod} to run"), Duration::from_secs(20), || {
            get(c, pod, "{.status.phase}") == "Running"
        });
    }
    let deletes: Vec<_> = ["prestop", "prestop-sleep", "prestop-long"]
        .into_iter()
        .map(|pod| {
            let kubeconfig = c.kubeconfig();
            std::thread::spawn(move || {
                let t = Instant::now();
                let out = std::process::Command::new("kubectl")
                    .env("KUBECONFIG", kubeconfig)
                    .args(["delete", "pod", pod, "--timeout=60s"])
                    .output()
                    .expect("kubectl delete");
                assert!(out.status.success(), "delete {pod}: {out:?}");
                (pod, t.elapsed())
            })
        })
        .collect();
    for d in deletes {
        let (pod, took) = d.join().expect("delete thread");
        println!("    deleting {pod} took {took:?}");
        let (min, max) = match pod {
            // The exec hook sleeps 2 s; then the container exits on SIGTERM.
            "prestop" => (2, 8),
            // The sleep hook's 3 s; then SIGTERM.
            "prestop-sleep" => (3, 8),
            // The hook is cut at the 3 s grace period, the container gets 2 s more, then SIGKILL.
            _ => (3, 10),
        };
        assert!(
            took >= Duration::from_secs(min) && took < Duration::from_secs(max),
            "deleting {pod} took {took:?}, expected {min}-{max} s"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("prestop")).unwrap_or_default(),
        "prestop-ran\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("order")).unwrap_or_default(),
        "prestop-ran\n",
        "the stop signal came after the preStop hook"
    );

    c.kubectl(&[
        "delete",
        "pod",
        "ready-exec",
        "startup",
        "liveness-exec",
        "http-404",
        "startup-fail",
        "exec-timeout",
        "poststart",
        "poststart-fail",
        "--grace-period=1",
    ]);
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
    println!("    whole test took {:?}", t0.elapsed());
}
