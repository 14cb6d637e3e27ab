//! Jobs and CronJobs run real containers (root): a Job to completion with its logs, a Job
//! failing past its backoffLimit, an Indexed Job, a Job removed by its TTL, and a CronJob
//! firing on its schedule — all in one cluster, concurrently — and nothing left behind.

mod common;

use common::pods::{leftovers, PodCluster};
use common::Cluster;
use std::time::Duration;

fn jsonpath(c: &Cluster, what: &str, path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what.split_whitespace());
    let path = format!("jsonpath={path}");
    args.extend(["-o", &path]);
    c.kubectl_output(&args, None)
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect()
}

#[test]
fn jobs_and_cronjobs_run_to_completion() {
    let Some(pc) = PodCluster::start("job-node", 189, "btjob", "crun") else {
        return;
    };
    let c = &pc.c;
    c.kubectl(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox:latest",
        "--schedule=*/1 * * * *",
        "--",
        "date",
    ]);
    c.kubectl(&[
        "create",
        "job",
        "once",
        "--image=busybox:latest",
        "--",
        "sh",
        "-c",
        "echo done",
    ]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: fail}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox:latest, command: ["sh", "-c", "exit 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox:latest
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname)"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: brief}
spec:
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:latest, command: ["true"]}]
"#,
    );

    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert_eq!(c.kubectl(&["logs", "job/once"]).trim(), "done");
    assert_eq!(jsonpath(c, "job/once", "{.status.succeeded}"), "1");
    assert!(!jsonpath(c, "job/once", "{.status.completionTime}").is_empty());
    let conditions = jsonpath(c, "job/once", "{.status.conditions[*].type}");
    assert!(conditions.contains("SuccessCriteriaMet"), "{conditions}");
    // The finished pod is kept, with the Job's labels.
    assert_eq!(
        jsonpath(c, "pods -l job-name=once", "{.items[*].status.phase}"),
        "Succeeded"
    );
    let events = c.kubectl(&["get", "events", "--field-selector=involvedObject.name=once"]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Completed"),
        "{events}"
    );

    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]);
    assert_eq!(
        jsonpath(c, "job/indexed", "{.status.completedIndexes}"),
        "0-2"
    );
    let logs = c.kubectl(&[
        "logs",
        "-l",
        "batch.kubernetes.io/job-completion-index=1,job-name=indexed",
    ]);
    assert_eq!(logs.trim(), "index=1 host=indexed-1");

    c.eventually(
        "the brief Job deleted by its TTL",
        Duration::from_secs(30),
        || {
            !c.kubectl_output(&["get", "job/brief"], None)
                .status
                .success()
        },
    );

    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=90s",
    ]);
    assert_eq!(
        jsonpath(
            c,
            "job/fail",
            r#"{.status.conditions[?(@.type=="Failed")].reason}"#
        ),
        "BackoffLimitExceeded"
    );
    assert_eq!(jsonpath(c, "job/fail", "{.status.failed}"), "2");
    let events = c.kubectl(&["get", "events", "--field-selector=involvedObject.name=fail"]);
    assert!(events.contains("BackoffLimitExceeded"), "{events}");

    c.eventually(
        "the CronJob's Job completes",
        Duration::from_secs(90),
        || !jsonpath(c, "cronjob/tick", "{.status.lastSuccessfulTime}").is_empty(),
    );
    let job = jsonpath(c, "jobs", "{.items[*].metadata.name}")
        .split_whitespace()
        .find(|n| n.starts_with("tick-"))
        .map(str::to_string)
        .unwrap_or_default();
    let minutes: i64 = job.trim_start_matches("tick-").parse().unwrap_or(0);
    let stamp = jsonpath(
        c,
        &format!("job/{job}"),
        r#"{.metadata.annotations.batch\.kubernetes\.io/cronjob-scheduled-timestamp}"#,
    );
    let scheduled = k8s_openapi::chrono::DateTime::parse_from_rfc3339(&stamp)
        .map(|t| t.timestamp())
        .unwrap_or(-1);
    assert_eq!(scheduled, minutes * 60, "{job} {stamp}");
    assert!(!jsonpath(c, "cronjob/tick", "{.status.lastScheduleTime}").is_empty());
    let events = c.kubectl(&["get", "events", "--field-selector=involvedObject.name=tick"]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SawCompletedJob"),
        "{events}"
    );

    // Everything goes away with the owners.
    let uids: Vec<String> = jsonpath(c, "pods", "{.items[*].metadata.uid}")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    c.kubectl(&[
        "delete",
        "cronjob/tick",
        "job/once",
        "job/fail",
        "job/indexed",
    ]);
    c.eventually("pods gone", Duration::from_secs(90), || {
        jsonpath(c, "pods", "{.items[*].metadata.name}").is_empty()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = leftovers(c.dir.path(), &pc.bridge, &uids);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        left = leftovers(c.dir.path(), &pc.bridge, &uids);
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}
