//! `berth agent`: the node agent alone joins a running server as a client of its API (token
//! authentication, the cluster CA), registers its Node and runs the pods bound to it.

mod common;

use common::pods::NetworkGuard;
use common::Cluster;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `berth agent` child process, stopped with SIGTERM when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_command(c: &Cluster, data_dir: &std::path::Path, token: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["agent", "--server"])
        .arg(format!("https://127.0.0.1:{}", c.port))
        .args(["--token", token, "--certificate-authority"])
        .arg(c.dir.path().join("pki/ca.crt"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("BERTH_LOG", "warn");
    cmd
}

#[test]
fn an_agent_joins_with_a_token_and_runs_pods() {
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(
        tokens.path(),
        "node-token-1,system:node:worker,,system:nodes\n",
    )
    .expect("write tokens");
    let n = std::process::id() % 200 + 20;
    let (server_cidr, agent_cidr) = (format!("10.194.{n}.0/24"), format!("10.193.{n}.0/24"));
    let (server_bridge, agent_bridge) = (format!("btasrv{n}"), format!("btagt{n}"));
    let token_file = tokens.path().display().to_string();
    let c = Cluster::start_with(&[
        "--token-auth-file",
        &token_file,
        "--node-name",
        "agent-test-server",
        "--pod-cidr",
        &server_cidr,
        "--bridge",
        &server_bridge,
    ]);
    let agent_dir = tempfile::tempdir().expect("agent dir");

    // A token the server does not know: a clear error, and the agent exits.
    let refused = agent_command(&c, agent_dir.path(), "wrong-token")
        .args(["--node-name", "worker"])
        .output()
        .expect("run berth agent");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("failed to reach the API server") && err.contains("Unauthorized"),
        "{err}"
    );

    let root = berth_node::host::is_root();
    if root {
        std::fs::create_dir_all(agent_dir.path().join("images")).expect("images dir");
        berth_images::testing::build_busybox_oci_tar(
            &agent_dir.path().join("images/busybox.tar"),
            "busybox:latest",
        )
        .expect("busybox image");
    }
    let _nets: Vec<NetworkGuard> = [
        (&server_bridge, &server_cidr, c.dir.path()),
        (&agent_bridge, &agent_cidr, agent_dir.path()),
    ]
    .into_iter()
    .map(|(bridge, cidr, dir)| {
        NetworkGuard(berth_net::NetworkConfig {
            bridge: bridge.clone(),
            pod_cidr: cidr.clone(),
            plugin_dir: "/usr/lib/cni".into(),
            state_dir: dir.to_path_buf(),
            mtu: None,
        })
    })
    .collect();
    let agent = Agent(
        agent_command(&c, agent_dir.path(), "node-token-1")
            .args([
                "--node-name",
                "worker",
                "--pod-cidr",
                &agent_cidr,
                "--bridge",
                &agent_bridge,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start berth agent"),
    );

    // The node registers; as root it runs pods and is Ready.
    let want = if root { "True" } else { "False" };
    c.eventually(
        "the agent's node reports Ready",
        Duration::from_secs(30),
        || {
            let out = c.kubectl_output(
                &[
                    "get",
                    "node",
                    "worker",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout) == want
        },
    );
    let lease = c.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "worker",
        "-o",
        "name",
    ]);
    assert_eq!(lease.trim(), "lease.coordination.k8s.io/worker");
    if !root {
        eprintln!("skipped running pods on the agent: needs root");
        return;
    }

    c.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-worker"},
            "spec":{"nodeName":"worker","terminationGracePeriodSeconds":1,
              "containers":[{"name":"web","image":"busybox:latest",
                "command":["httpd","-f","-p","8080","-h","/etc"]}]}}"#,
    );
    c.eventually("the pod runs on the agent", Duration::from_secs(30), || {
        c.kubectl(&["get", "pod", "on-worker", "-o", "jsonpath={.status.phase}"]) == "Running"
    });
    let ip = c.kubectl(&["get", "pod", "on-worker", "-o", "jsonpath={.status.podIP}"]);
    let prefix = agent_cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} in {agent_cidr}");
    let host_ip = c.kubectl(&["get", "pod", "on-worker", "-o", "jsonpath={.status.hostIP}"]);
    assert!(!host_ip.is_empty());
    let page = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/hostname"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), "on-worker");
    // The API server reaches a node in another process over the node's HTTPS endpoint (its
    // own node in memory): exec through it works.
    let exec = c.kubectl(&["exec", "on-worker", "--", "cat", "/etc/hostname"]);
    assert_eq!(exec.trim(), "on-worker");

    c.kubectl(&["delete", "pod", "on-worker", "--wait=true", "--timeout=30s"]);
    // The agent removed what it made for the pod.
    for sub in ["containers/containers", "pods"] {
        let left: Vec<_> = std::fs::read_dir(agent_dir.path().join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {sub}: {left:?}");
    }
    drop(agent);
}
