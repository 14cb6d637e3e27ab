//! `scaleup` (root): time from `kubectl scale deploy/X --replicas=N` to N pods Running on one
//! node, for N = 100 and 500 by default. A real `berth server` (its own data dir, bridge
//! `btsu0`, pod CIDR 10.181.0.0/22, node agent with `--max-pods 1000`, busybox imported)
//! runs a Deployment of busybox `sleep 3600` pods (`imagePullPolicy: Never`, grace period
//! 1 s) created at 0 replicas; the real `kubectl` scales it; a label-selected watch sees each
//! pod's `Running` status. After each N the Deployment goes back to 0 and the bench waits
//! for every pod to be gone before the next N (that time is printed too).
//!
//! Beside it, the same number of bare `crun run -d` of the busybox root filesystem one after
//! another (no API, no network), for a ratio.
//!
//! Target (issue 4): 100 replicas Running within 10 s on one node.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{BerthServer, Table};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

#[derive(Parser)]
#[command(about = "berth scale-up: kubectl scale --replicas=N → N pods Running on one node")]
struct Args {
    /// Replica counts, each scaled up from 0.
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 500])]
    replicas: Vec<usize>,
    /// The OCI runtime berth uses (and the bare runs use): crun or runc.
    #[arg(long, default_value = "crun")]
    runtime: String,
    /// Skip the bare runtime comparison.
    #[arg(long)]
    no_bare: bool,
}

const NAME: &str = "scaleup";
const NODE: &str = "bench-scaleup";
const BRIDGE: &str = "btsu0";
const CIDR: &str = "10.181.0.0/22";

struct Outcome {
    replicas: usize,
    all_running: Duration,
    first_running: Duration,
    half_running: Duration,
    server_cpu: Duration,
    rss_kib: u64,
    all_gone: Duration,
}

/// Removes the bench's bridge, routes and netns mounts however the run ended.
struct NetworkGuard(berth_net::NetworkConfig);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Err(e) = berth_net::Sandbox::teardown_network(&self.0) {
            eprintln!("network teardown: {e}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !berth_bench::is_root() {
        bail!("the scaleup benchmark runs containers: run it as root");
    }
    berth_bench::install_crypto();
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    println!(
        "scaleup: kubectl scale deploy/{NAME} --replicas=N → N busybox pods Running on one node ({}); {}",
        args.runtime,
        berth_bench::machine()
    );
    println!(
        "{}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    let busybox_tar = tmp.path().join("busybox.tar");
    berth_images::testing::build_busybox_oci_tar(&busybox_tar, "busybox:latest")
        .context("failed to build the busybox image")?;
    let rt = tokio::runtime::Runtime::new().context("failed to start tokio")?;
    let outcomes = rt.block_on(scale_bench(&args, tmp.path(), &busybox_tar))?;
    let mut bare = HashMap::new();
    if !args.no_bare {
        for &n in &args.replicas {
            bare.insert(n, bare_starts(&args, tmp.path(), n)?);
        }
    }

    let mut t = Table::new(&[
        "replicas",
        "scale → all Running",
        "first Running",
        "half Running",
        "pods/s",
        "bare crun run -d x N",
        "berth/bare",
        "server CPU",
        "server RSS",
        "scale to 0 → all gone",
        "target",
    ]);
    for o in &outcomes {
        let b = bare.get(&o.replicas).copied();
        t.row(vec![
            o.replicas.to_string(),
            format!("{:.2} s", o.all_running.as_secs_f64()),
            format!("{:.2} s", o.first_running.as_secs_f64()),
            format!("{:.2} s", o.half_running.as_secs_f64()),
            berth_bench::rate(o.replicas as f64 / o.all_running.as_secs_f64().max(1e-9)),
            b.map(|b| format!("{:.2} s", b.as_secs_f64()))
                .unwrap_or_default(),
            b.map(|b| berth_bench::ratio(o.all_running.as_secs_f64(), b.as_secs_f64()))
                .unwrap_or_default(),
            format!("{:.2} s", o.server_cpu.as_secs_f64()),
            format!("{:.1} MB", o.rss_kib as f64 / 1024.0),
            format!("{:.2} s", o.all_gone.as_secs_f64()),
            if o.replicas == 100 { "≤ 10 s" } else { "" }.into(),
        ]);
    }
    println!("\n{}", t.render());
    println!(
        "berth: `kubectl scale` started → the N-th pod's Running status seen on a watch; server \
         CPU and VmRSS of the server process (API, controllers, scheduler, node agent) at that \
         moment. bare: N × `{} run -d` of the same busybox rootfs, one after another, then \
         deleted. Load average after: {}",
        args.runtime,
        berth_bench::loadavg()
    );
    Ok(())
}

async fn scale_bench(args: &Args, dir: &Path, busybox_tar: &Path) -> anyhow::Result<Vec<Outcome>> {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images"))?;
    std::fs::copy(busybox_tar, data.join("images/busybox.tar"))?;
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: BRIDGE.into(),
        pod_cidr: CIDR.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    let kubelet_port = berth_bench::free_port()?.to_string();
    let mut server = BerthServer::spawn_with(
        &data,
        &dir.join("server.log"),
        &[
            "--node-name",
            NODE,
            "--pod-cidr",
            CIDR,
            "--bridge",
            BRIDGE,
            "--container-runtime",
            &args.runtime,
            "--max-pods",
            "1000",
            "--kubelet-port",
            &kubelet_port,
        ],
    )?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let kubeconfig = server.kubeconfig();
    let client = berth_bench::kube_client(&kubeconfig).await?;
    berth_bench::wait_node_ready(&client, NODE).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox:latest",
                        "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
                },
            },
        },
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .context("failed to create the Deployment")?;

    // One watch: which pods exist, and when each was first seen Running.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let notify = Arc::new(tokio::sync::Notify::new());
    let watch = {
        let (seen, notify) = (seen.clone(), notify.clone());
        let stream = watcher(
            pods,
            watcher::Config::default().labels(&format!("app={NAME}")),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                if let Ok(mut s) = seen.lock() {
                    s.apply(event);
                }
                notify.notify_waiters();
            }
        })
    };

    let mut outcomes = Vec::new();
    let result = async {
        for &n in &args.replicas {
            outcomes.push(scale_once(&kubeconfig, &server, &seen, &notify, n).await?);
        }
        anyhow::Ok(())
    }
    .await;
    watch.abort();
    // Leave nothing running: the Deployment goes, then its pods.
    let _ = kubectl(
        &kubeconfig,
        &["scale", &format!("deploy/{NAME}"), "--replicas=0"],
    );
    let _ = deployments.delete(NAME, &DeleteParams::default()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let left = pods
            .list_metadata(&kube::api::ListParams::default().labels(&format!("app={NAME}")))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.proc.stop(Duration::from_secs(30))?;
    result?;
    Ok(outcomes)
}

/// The pods the watch knows and when each was first seen Running.
#[derive(Default)]
struct Seen {
    pods: HashSet<String>,
    running: HashMap<String, Instant>,
}

impl Seen {
    fn apply(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running && p.metadata.deletion_timestamp.is_none() {
                    self.running
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                }
                self.pods.insert(name);
            }
            watcher::Event::Delete(p) => {
                let name = p.metadata.name.unwrap_or_default();
                self.pods.remove(&name);
                self.running.remove(&name);
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

async fn scale_once(
    kubeconfig: &Path,
    server: &BerthServer,
    seen: &Arc<Mutex<Seen>>,
    notify: &Arc<tokio::sync::Notify>,
    n: usize,
) -> anyhow::Result<Outcome> {
    let pid = server.proc.pid();
    let cpu0 = berth_bench::cpu_time(pid)?;
    let started = Instant::now();
    kubectl(
        kubeconfig,
        &[
            "scale",
            &format!("deploy/{NAME}"),
            &format!("--replicas={n}"),
        ],
    )?;
    let deadline = started + Duration::from_secs(600);
    let times = loop {
        let wake = notify.notified();
        {
            let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if s.running.len() >= n {
                let mut times: Vec<Duration> = s
                    .running
                    .values()
                    .map(|t| t.saturating_duration_since(started))
                    .collect();
                times.sort();
                break times;
            }
        }
        if tokio::time::timeout_at(deadline.into(), wake)
            .await
            .is_err()
        {
            let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            bail!(
                "only {} of {n} pods Running after 600 s ({} pods exist)",
                s.running.len(),
                s.pods.len()
            );
        }
    };
    let all_running = times.last().copied().unwrap_or_default();
    let server_cpu = berth_bench::cpu_time(pid)?.saturating_sub(cpu0);
    let rss_kib = server.rss_kib()?;
    println!(
        "{n} replicas Running after {:.2} s (server CPU {:.2} s)",
        all_running.as_secs_f64(),
        server_cpu.as_secs_f64()
    );

    // Back to 0, and every pod gone, before the next count.
    let down = Instant::now();
    kubectl(
        kubeconfig,
        &["scale", &format!("deploy/{NAME}"), "--replicas=0"],
    )?;
    let deadline = down + Duration::from_secs(600);
    loop {
        let wake = notify.notified();
        if seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .pods
            .is_empty()
        {
            break;
        }
        if tokio::time::timeout_at(deadline.into(), wake)
            .await
            .is_err()
        {
            bail!("pods still there 600 s after scaling to 0");
        }
    }
    let all_gone = down.elapsed();
    println!(
        "scaled to 0: every pod gone after {:.2} s",
        all_gone.as_secs_f64()
    );
    Ok(Outcome {
        replicas: n,
        all_running,
        first_running: times.first().copied().unwrap_or_default(),
        half_running: times.get(n / 2).copied().unwrap_or_default(),
        server_cpu,
        rss_kib,
        all_gone,
    })
}

/// Runs the real kubectl against the bench's server.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("failed to run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `n` × `<runtime> run -d` of a busybox bundle one after another, then deleted: the time
/// of the runs.
fn bare_starts(args: &Args, dir: &Path, n: usize) -> anyhow::Result<Duration> {
    let bundle = dir.join(format!("bare-bundle-{n}"));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let layer_tar = dir.join("busybox-layer.tar");
    std::fs::write(&layer_tar, berth_images::testing::busybox_layer()?)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&layer_tar)
        .arg("-C")
        .arg(&rootfs))?;
    run(Command::new(&args.runtime).arg("spec").current_dir(&bundle))?;
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = json!(["sleep", "3600"]);
    let root = dir.join(format!("bare-root-{n}"));
    let ids: Vec<String> = (0..n)
        .map(|i| format!("berth-bench-su-{}-{i}", std::process::id()))
        .collect();
    let mut started_ids = Vec::new();
    let started = Instant::now();
    let mut result = Ok(());
    for id in &ids {
        spec["linux"]["cgroupsPath"] = format!("/{id}").into();
        std::fs::write(&path, serde_json::to_vec(&spec)?)?;
        let status = Command::new(&args.runtime)
            .arg("--root")
            .arg(&root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => started_ids.push(id.clone()),
            Ok(s) => {
                result = Err(anyhow::anyhow!("`{} run -d` failed: {s}", args.runtime));
                break;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    for id in &started_ids {
        let _ = run(Command::new(&args.runtime)
            .arg("--root")
            .arg(&root)
            .args(["delete", "-f", id]));
    }
    result?;
    Ok(elapsed)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
