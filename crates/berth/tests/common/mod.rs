//! Test harness: starts the real `berth` binary on a free port with a temporary data
//! directory and drives it with the real `kubectl` (and the `kube` client).
#![allow(dead_code)]

pub mod pods;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `berth server` owned by one test.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The node endpoint's port (`--kubelet-port`): free, so servers of tests running in
    /// parallel do not collide on upstream's default 10250.
    pub kubelet_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// Starts a server with extra `berth server` arguments.
    pub fn start_with(extra: &[&str]) -> Cluster {
        Self::start_prepared(|_| {}, extra)
    }

    /// Prepares the data directory (e.g. drops image tarballs in), then starts a server.
    pub fn start_prepared(prepare: impl FnOnce(&Path), extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        let mut c = Cluster {
            dir,
            port: free_port(),
            kubelet_port: free_port(),
            child: None,
        };
        c.spawn(extra);
        c
    }

    fn spawn(&mut self, extra: &[&str]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--data-dir"])
            .arg(self.dir.path())
            .args([
                "--https-port",
                &self.port.to_string(),
                "--bind-address",
                "127.0.0.1",
                "--kubelet-port",
                &self.kubelet_port.to_string(),
            ])
            .args(extra)
            .env("BERTH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("berth server became ready");
        self.child = Some(child);
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same data directory and port.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Stops and starts the server with `extra` arguments.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.spawn(extra);
    }

    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig());
        cmd.env("KUBECTL_COMMAND_HEADERS", "false");
        cmd
    }

    /// Runs kubectl with `args`, returning its output whatever the exit status.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.kubectl_cmd();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout; panics with stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with stdin, expecting success.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {} unexpectedly succeeded:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Polls `f` until it returns true (bounded).
    pub fn eventually(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}");
    }

    /// A `kube` client for this cluster.
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }
}

impl Cluster {
    /// Deletes every workload and pod (at once: pods bound to nodes without an agent would
    /// never finish a graceful deletion) while the server still runs, so its node agent (as
    /// root the scheduler puts pods on it) removes their containers and sandboxes.
    fn delete_pods(&self) {
        if self.child.is_none() {
            return;
        }
        let kubectl = |args: &[&str]| {
            let _ = self
                .kubectl_cmd()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        kubectl(&[
            "delete",
            "deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs",
            "--all",
            "--all-namespaces",
            "--wait=false",
        ]);
        kubectl(&[
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--force",
            "--grace-period=0",
            "--wait=false",
        ]);
        let leftovers = |sub: &str| {
            std::fs::read_dir(self.dir.path().join(sub)).is_ok_and(|mut d| d.next().is_some())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while (leftovers("containers/containers") || leftovers("pods")) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    /// However the test ended: its pods go, then the server stops.
    fn drop(&mut self) {
        self.delete_pods();
        self.stop();
        // The node's netns directory is bind-mounted onto itself while its network exists;
        // unmount it so the temp dir can go (PodCluster also tears its network down).
        let netns = self.dir.path().join("netns");
        if netns.exists() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&netns)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The repository's `examples/` directory.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}
