//! Node lifecycle, PodDisruptionBudgets, the Eviction subresource and `kubectl drain`
//! (root): a `berth server` running pods on its own node plus a second node run by a real
//! `berth agent`. The Eviction API answers as upstream (404, 429 with the budget's cause,
//! 500 for two budgets); `kubectl drain` evicts a Deployment's pods within its budget and
//! fails while a budget allows nothing; and when the agent is killed its node goes
//! NotReady (Unknown) with the unreachable taint, its pod is evicted after its
//! tolerationSeconds and stays Terminating, and the Deployment replaces it elsewhere.

mod common;

use common::pods::{NetworkGuard, PodCluster};
use common::Cluster;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_NODE: &str = "dr-server";
const AGENT_NODE: &str = "dr-worker";
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A `berth agent` joined to the test's server. When dropped, it first lets the server's
/// pods on its node go (so it removes their containers), then stops with SIGTERM.
struct Agent {
    child: Option<Child>,
    args: Vec<String>,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Agent {
    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("agent")
            .args(&self.args)
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start berth agent");
        self.child = Some(child);
    }

    /// Kills the agent at once (SIGKILL): its containers keep running, it stops reporting.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn has_containers(&self) -> bool {
        ["containers/containers", "pods"]
            .iter()
            .any(|sub| std::fs::read_dir(self.dir.join(sub)).is_ok_and(|mut d| d.next().is_some()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_none() {
            // Killed and never restarted: start it again so it can clean up.
            self.spawn();
        }
        let _ = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "delete",
                "pods",
                "--all-namespaces",
                "--field-selector",
                &format!("spec.nodeName={AGENT_NODE}"),
                "--force",
                "--grace-period=0",
                "--wait=false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.has_containers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let mut child = child;
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    let out = c.kubectl_output(&all, None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready_status(c: &Cluster, node: &str) -> String {
    jsonpath(
        c,
        &["get", "node", node],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    )
}

fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.kubectl(&all)).expect("kubectl json")
}

/// The pods of `app` (name, node, being deleted, phase).
fn pods_of(c: &Cluster, app: &str) -> Vec<(String, String, bool, String)> {
    let list = get_json(c, &["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    (
                        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                        p["metadata"].get("deletionTimestamp").is_some(),
                        p["status"]["phase"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn running_on(c: &Cluster, app: &str, node: &str) -> usize {
    pods_of(c, app)
        .iter()
        .filter(|(_, n, deleting, phase)| n == node && !deleting && phase == "Running")
        .count()
}

fn pdb_status(c: &Cluster, name: &str) -> (i64, i64, i64, i64) {
    let pdb = get_json(c, &["get", "pdb", name]);
    let s = &pdb["status"];
    let n = |f: &str| s[f].as_i64().unwrap_or(-1);
    (
        n("currentHealthy"),
        n("desiredHealthy"),
        n("expectedPods"),
        n("disruptionsAllowed"),
    )
}

fn deployment(name: &str, replicas: u32, spec_extra: Value) -> String {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "web", "image": "busybox:latest",
                        "command": ["httpd", "-f", "-p", "8080", "-h", "/etc"]}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
    .to_string()
}

fn pdb(name: &str, app: &str, rule: Value) -> String {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    if let (Some(s), Some(r)) = (spec.as_object_mut(), rule.as_object()) {
        for (k, v) in r {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": name}, "spec": spec})
    .to_string()
}

/// POSTs an Eviction for `pod` (named `body_name` in the body); the status code and body.
fn evict(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    pod: &str,
    body_name: &str,
) -> (u16, Value) {
    rt.block_on(async {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": body_name, "namespace": "default"}});
        let req = http::Request::post(format!("/api/v1/namespaces/default/pods/{pod}/eviction"))
            .header("content-type", "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(&body).expect("encode"),
            ))
            .expect("request");
        let resp = client.send(req).await.expect("send the eviction");
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect_bytes()
            .await
            .expect("read the answer");
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    })
}

fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn evictions_drains_and_lost_nodes() {
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(
        tokens.path(),
        format!("drain-token,system:node:{AGENT_NODE},,system:nodes\n"),
    )
    .expect("write tokens");
    let token_file = tokens.path().display().to_string();
    let Some(pc) = PodCluster::start_with_args(
        SERVER_NODE,
        187,
        "btdr",
        "crun",
        &[
            "--token-auth-file",
            &token_file,
            "--node-monitor-grace-period",
            "15s",
        ],
    ) else {
        return;
    };
    let c = &pc.c;

    // The second node: a real agent with its own bridge and pod CIDR.
    let n = std::process::id() % 200 + 20;
    let agent_cidr = format!("10.186.{n}.0/24");
    let agent_bridge = format!("btda{n}");
    let agent_dir = tempfile::tempdir().expect("agent dir");
    std::fs::create_dir_all(agent_dir.path().join("images")).expect("images dir");
    berth_images::testing::build_busybox_oci_tar(
        &agent_dir.path().join("images/busybox.tar"),
        "busybox:latest",
    )
    .expect("busybox image");
    let _agent_net = NetworkGuard(berth_net::NetworkConfig {
        bridge: agent_bridge.clone(),
        pod_cidr: agent_cidr.clone(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: agent_dir.path().to_path_buf(),
        mtu: None,
    });
    let args: Vec<String> = [
        "--server",
        &format!("https://127.0.0.1:{}", c.port),
        "--token",
        "drain-token",
        "--certificate-authority",
        &c.dir.path().join("pki/ca.crt").display().to_string(),
        "--data-dir",
        &agent_dir.path().display().to_string(),
        "--node-name",
        AGENT_NODE,
        "--pod-cidr",
        &agent_cidr,
        "--bridge",
        &agent_bridge,
        "--kubelet-port",
        &free_port().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent {
        child: None,
        args,
        dir: agent_dir.path().to_path_buf(),
        kubeconfig: c.kubeconfig(),
    };
    agent.spawn();
    for node in [SERVER_NODE, AGENT_NODE] {
        c.eventually(&format!("{node} is Ready"), Duration::from_secs(60), || {
            ready_status(c, node) == "True"
        });
    }
    // Discovery lists the subresource the way kubectl drain looks for it.
    let resources = c.kubectl(&["get", "--raw", "/api/v1"]);
    let resources: Value = serde_json::from_str(&resources).expect("discovery");
    let eviction = resources["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "pods/eviction"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(eviction["group"], "policy", "{resources}");
    assert_eq!(eviction["version"], "v1");
    assert_eq!(eviction["kind"], "Eviction");

    eviction_api_errors(c);
    drain_honours_budgets(c);
    lost_node_evicts_after_toleration(c, &mut agent);
    drop(agent);
    assert!(!Path::new(&agent_dir.path().join("pods"))
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
}

/// (c) The Eviction subresource's answers: 404, 400, 429 with the budget's cause, 500 with
/// two budgets, 201 when the budget allows it. The pod is bound to a node nobody runs, its
/// status set to Running and Ready by hand.
fn eviction_api_errors(c: &Cluster) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(c.client());
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "solo", "labels": {"app": "solo"}},
                "spec": {"nodeName": "ghost", "containers": [{"name": "c", "image": "busybox:latest"}]}})
        .to_string(),
    );
    c.kubectl(&[
        "patch",
        "pod",
        "solo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pdb("solo", "solo", json!({"minAvailable": 1})),
    );
    c.eventually("the budget counts the pod", Duration::from_secs(20), || {
        pdb_status(c, "solo") == (1, 1, 1, 0)
    });
    let pdb_json = get_json(c, &["get", "pdb", "solo"]);
    assert_eq!(pdb_json["status"]["observedGeneration"], 1);
    let cond = &pdb_json["status"]["conditions"][0];
    assert_eq!(cond["type"], "DisruptionAllowed");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "InsufficientPods");

    let (code, body) = evict(&rt, &client, "missing", "missing");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "pods \"missing\" not found");

    let (code, body) = evict(&rt, &client, "solo", "other");
    assert_eq!(code, 400, "{body}");

    let (code, body) = evict(&rt, &client, "solo", "solo");
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["message"], VIOLATION);
    assert_eq!(body["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget solo needs 1 healthy pods and has 1 currently"
    );
    // kubectl says the same.
    let out = c.kubectl_fails(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/solo/eviction",
            "-f",
            "-",
        ],
        Some(r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"solo"}}"#),
    );
    assert!(out.contains(VIOLATION), "{out}");

    // Two budgets for one pod: upstream refuses with 500.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pdb("solo-too", "solo", json!({"maxUnavailable": 1})),
    );
    let (code, body) = evict(&rt, &client, "solo", "solo");
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        body["message"],
        "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    c.kubectl(&["delete", "pdb", "solo-too"]);

    // A budget that allows one: the eviction is recorded on it and the pod is deleted (it
    // stays Terminating: its node has no agent to confirm).
    c.kubectl(&[
        "patch",
        "pdb",
        "solo",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":0}}"#,
    ]);
    c.eventually(
        "the budget allows one disruption",
        Duration::from_secs(20),
        || pdb_status(c, "solo") == (1, 0, 1, 1),
    );
    let (code, body) = evict(&rt, &client, "solo", "solo");
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], "Success");
    let pod = get_json(c, &["get", "pod", "solo"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    let target = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(target["status"], "True", "{pod}");
    assert_eq!(target["reason"], "EvictionByEvictionAPI");
    assert_eq!(target["message"], "Eviction API: evicting");
    c.eventually(
        "the budget no longer counts the evicted pod",
        Duration::from_secs(20),
        || pdb_status(c, "solo") == (0, 0, 1, 0),
    );
    c.kubectl(&["delete", "pod", "solo", "--force", "--grace-period=0"]);
    c.kubectl(&["delete", "pdb", "solo"]);
}

/// (b) `kubectl drain` evicts a Deployment's two pods one at a time within its budget, and
/// fails (leaving the pod) while a budget with maxUnavailable 0 allows nothing.
fn drain_honours_budgets(c: &Cluster) {
    // Both pods on the agent's node: the server's node is cordoned while they start.
    c.kubectl(&["cordon", SERVER_NODE]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment(
            "web",
            2,
            json!({"volumes": [{"name": "scratch", "emptyDir": {}}]}),
        ),
    );
    c.eventually(
        "two web pods run on the agent's node",
        Duration::from_secs(60),
        || running_on(c, "web", AGENT_NODE) == 2,
    );
    c.kubectl(&["uncordon", SERVER_NODE]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pdb("web", "web", json!({"minAvailable": 1})),
    );
    c.eventually(
        "the web budget allows one disruption",
        Duration::from_secs(30),
        || pdb_status(c, "web") == (2, 1, 2, 1),
    );

    let started = Instant::now();
    let out = c.kubectl_output(
        &[
            "drain",
            AGENT_NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
        None,
    );
    let text = combined(&out);
    assert!(out.status.success(), "drain failed:\n{text}");
    eprintln!(
        "kubectl drain of two pods under minAvailable 1 took {:?}",
        started.elapsed()
    );
    assert!(text.contains("evicting pod default/web-"), "{text}");
    // The two evictions go at once: the budget lets one through and holds the other back
    // until the replacement is Ready.
    assert!(text.contains(VIOLATION), "{text}");
    assert!(
        text.contains(&format!("node/{AGENT_NODE} drained")),
        "{text}"
    );
    let unschedulable = jsonpath(c, &["get", "node", AGENT_NODE], "{.spec.unschedulable}");
    assert_eq!(unschedulable, "true");
    let taints = jsonpath(c, &["get", "node", AGENT_NODE], "{.spec.taints[*].key}");
    assert!(
        taints.contains("node.kubernetes.io/unschedulable"),
        "{taints}"
    );
    c.eventually(
        "both web pods run on the server's node",
        Duration::from_secs(60),
        || running_on(c, "web", SERVER_NODE) == 2 && pods_of(c, "web").len() == 2,
    );
    c.eventually(
        "the web budget shows the moved pods",
        Duration::from_secs(30),
        || pdb_status(c, "web") == (2, 1, 2, 1),
    );
    c.kubectl(&["uncordon", AGENT_NODE]);

    // maxUnavailable 0: nothing may go, so the drain gives up and the pod stays.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment(
            "pinned",
            1,
            json!({"nodeSelector": {"kubernetes.io/hostname": AGENT_NODE}}),
        ),
    );
    c.eventually(
        "the pinned pod runs on the agent's node",
        Duration::from_secs(60),
        || running_on(c, "pinned", AGENT_NODE) == 1,
    );
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pdb("pinned", "pinned", json!({"maxUnavailable": 0})),
    );
    c.eventually(
        "the pinned budget allows nothing",
        Duration::from_secs(30),
        || pdb_status(c, "pinned") == (1, 1, 1, 0),
    );
    let before = pods_of(c, "pinned");
    let out = c.kubectl_output(
        &[
            "drain",
            AGENT_NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=5s",
        ],
        None,
    );
    let text = combined(&out);
    assert!(!out.status.success(), "drain succeeded:\n{text}");
    assert!(text.contains(VIOLATION), "{text}");
    assert_eq!(pods_of(c, "pinned"), before);
    c.kubectl(&["uncordon", AGENT_NODE]);
    c.kubectl(&["delete", "pdb", "web", "pinned"]);
    c.kubectl(&["delete", "deployment", "web", "pinned"]);
    c.eventually(
        "the drain test's pods are gone",
        Duration::from_secs(60),
        || pods_of(c, "web").is_empty() && pods_of(c, "pinned").is_empty(),
    );
}

/// (a) The agent dies: its node turns Unknown and unreachable within the grace period, the
/// pod tolerating that for 5 s is evicted after them and stays Terminating, and the
/// Deployment's replacement runs on the server's node. The agent comes back and the node
/// recovers.
fn lost_node_evicts_after_toleration(c: &Cluster, agent: &mut Agent) {
    c.kubectl(&["cordon", SERVER_NODE]);
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment(
            "tolerant",
            1,
            json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                    "effect": "NoExecute", "tolerationSeconds": 5}]}),
        ),
    );
    c.eventually(
        "the tolerant pod runs on the agent's node",
        Duration::from_secs(60),
        || running_on(c, "tolerant", AGENT_NODE) == 1,
    );
    c.kubectl(&["uncordon", SERVER_NODE]);
    let (victim, ..) = pods_of(c, "tolerant").remove(0);

    let killed = Instant::now();
    agent.kill();
    // Lease renewed every 10 s, grace 15 s: Unknown within 25 s of the kill (and some slack).
    c.eventually(
        "the agent's node turns Unknown",
        Duration::from_secs(45),
        || ready_status(c, AGENT_NODE) == "Unknown",
    );
    let unknown_after = killed.elapsed();
    let node = get_json(c, &["get", "node", AGENT_NODE]);
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let table = c.kubectl(&["get", "node", AGENT_NODE, "--no-headers"]);
    assert!(table.contains("NotReady"), "{table}");
    c.eventually(
        "the unreachable NoExecute taint",
        Duration::from_secs(10),
        || {
            jsonpath(
                c,
                &["get", "node", AGENT_NODE],
                "{.spec.taints[?(@.effect==\"NoExecute\")].key}",
            ) == "node.kubernetes.io/unreachable"
        },
    );
    let added = jsonpath(
        c,
        &["get", "node", AGENT_NODE],
        "{.spec.taints[?(@.effect==\"NoExecute\")].timeAdded}",
    );
    let added = k8s_openapi::chrono::DateTime::parse_from_rfc3339(&added).expect("timeAdded");

    c.eventually(
        "the tolerant pod is marked for deletion",
        Duration::from_secs(30),
        || {
            pods_of(c, "tolerant")
                .iter()
                .any(|(name, _, deleting, _)| *name == victim && *deleting)
        },
    );
    let pod = get_json(c, &["get", "pod", &victim]);
    let conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(condition("Ready")["status"], "False", "{pod}");
    let target = condition("DisruptionTarget");
    assert_eq!(target["reason"], "DeletionByTaintManager", "{pod}");
    let evicted = target["lastTransitionTime"]
        .as_str()
        .and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("DisruptionTarget time");
    let waited = (evicted - added).num_seconds();
    assert!(
        (4..=12).contains(&waited),
        "evicted {waited} s after the taint"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={victim}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
        "--no-headers",
    ]);
    assert!(
        events.contains(&format!(
            "TaintManagerEviction   Marking for deletion Pod default/{victim}"
        )),
        "{events}"
    );
    assert!(events.contains("NodeNotReady"), "{events}");

    // The replacement runs on the healthy node; the evicted pod stays Terminating.
    c.eventually(
        "the replacement runs on the server's node",
        Duration::from_secs(60),
        || running_on(c, "tolerant", SERVER_NODE) == 1,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pods_of(c, "tolerant")
            .iter()
            .any(|(name, _, deleting, _)| *name == victim && *deleting),
        "the evicted pod on the lost node stays Terminating"
    );
    let table = c.kubectl(&["get", "pod", &victim, "--no-headers"]);
    assert!(table.contains("Terminating"), "{table}");
    eprintln!("node Unknown {unknown_after:?} after the agent was killed; pod evicted {waited} s after the taint");

    // The agent comes back: the node is Ready and untainted, and the evicted pod goes.
    agent.spawn();
    c.eventually(
        "the agent's node is Ready again",
        Duration::from_secs(60),
        || ready_status(c, AGENT_NODE) == "True",
    );
    c.eventually("the taints go", Duration::from_secs(20), || {
        jsonpath(c, &["get", "node", AGENT_NODE], "{.spec.taints[*].key}").is_empty()
    });
    c.eventually(
        "the evicted pod finishes deleting",
        Duration::from_secs(60),
        || {
            !pods_of(c, "tolerant")
                .iter()
                .any(|(name, ..)| *name == victim)
        },
    );
    c.kubectl(&["delete", "deployment", "tolerant"]);
    c.eventually(
        "the tolerant pods are gone",
        Duration::from_secs(60),
        || pods_of(c, "tolerant").is_empty(),
    );
}
