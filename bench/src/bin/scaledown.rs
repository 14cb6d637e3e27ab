//! The acceptance benchmark of issue 6 (root): scaling a Deployment down under load.
//!
//! For each pod termination mode (`--pod-termination endpoints-first`, berth's default, and
//! `upstream`), a fresh `berth server` with its own data dir, bridge, pod CIDR (10.182.x),
//! service CIDR and nftables table runs 10 nginx pods (an image built from the host's Debian
//! nginx, `STOPSIGNAL SIGQUIT`, no preStop hook) behind a NodePort Service; this process
//! serves a slow upstream on the bridge's gateway that nginx proxies `/slow` to, so requests
//! are in flight when pods stop. A constant load of new connections goes through the
//! ClusterIP and through the NodePort while the Deployment is scaled to 1 and back to 10,
//! five times; every failed request (non-2xx, refused, reset, timeout) is counted.
//! Then requests/s through the ClusterIP (one endpoint) beside the same pod's IP (wrk).
//! Everything (workloads, server, network, nft table, routes) is removed at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::load::{Load, Stats};
use berth_bench::{ms, BerthServer, Table};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[derive(Parser)]
#[command(about = "berth scale-down under load: failed requests per pod termination mode")]
struct Args {
    /// Replicas of the nginx Deployment while scaled up.
    #[arg(long, default_value_t = 10)]
    replicas: u32,
    /// Scale-downs (to 1) and scale-ups per mode.
    #[arg(long, default_value_t = 5)]
    iterations: u32,
    /// Requests per second on each path (ClusterIP, NodePort), each on a new connection.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long the upstream takes to answer `/slow`, in milliseconds.
    #[arg(long, default_value_t = 100)]
    upstream_delay_ms: u64,
    /// Seconds the load keeps running after one pod remains, before scaling up.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// Pod termination modes to compare (`--pod-termination` of `berth server`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "endpoints-first,upstream"
    )]
    modes: Vec<String>,
    /// The OCI runtime: crun or runc.
    #[arg(long, default_value = "crun")]
    runtime: String,
    /// Seconds of each wrk run of the ClusterIP / pod IP throughput comparison (0: skip).
    #[arg(long, default_value_t = 5)]
    throughput_secs: u32,
    /// Alternating ClusterIP / pod IP wrk runs (medians are reported).
    #[arg(long, default_value_t = 3)]
    throughput_rounds: u32,
    /// The Service's nodePort.
    #[arg(long, default_value_t = 31820)]
    node_port: u16,
    /// Keep the data directories (server logs) after the run.
    #[arg(long)]
    keep: bool,
}

/// This benchmark's network: pod CIDR 10.182.1.0/24 (its gateway .1 on the bridge), service
/// CIDR 10.182.128.0/24, its own bridge and nftables table. One server at a time uses it.
const POD_CIDR: &str = "10.182.1.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 182, 1, 1);
const SERVICE_CIDR: &str = "10.182.128.0/24";
const BRIDGE: &str = "btsd182";
const PROXY_TABLE: &str = "berth-bench-sd182";
const NODE: &str = "bench-scaledown";
const APP: &str = "web";

/// Removes the bench's bridge, routes and netns mounts however the run ended.
struct NetworkGuard(berth_net::NetworkConfig);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Err(e) = berth_net::Sandbox::teardown_network(&self.0) {
            eprintln!("network teardown: {e}");
        }
    }
}

/// Removes the proxy's nftables table and the service CIDR's routes however the run ended
/// (a server stopped cleanly has removed them already).
struct ProxyGuard;

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", PROXY_TABLE])
            .output();
        for _ in 0..3 {
            let _ = Command::new("ip")
                .args(["-4", "route", "del", SERVICE_CIDR])
                .output();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one mode's run saw on one path.
struct PathResult {
    stats: Stats,
    /// Failed requests sent while pods were being removed (scale to 1 until one remains,
    /// plus the settle time) and while pods were being added (scale to 10 until ready).
    failed_down: u64,
    failed_up: u64,
}

struct ModeResult {
    mode: String,
    cluster_ip: PathResult,
    node_port: PathResult,
    /// Seconds from `kubectl scale --replicas=1` until one pod remained, per iteration.
    scale_down_secs: Vec<f64>,
    throughput: Option<Throughput>,
}

struct Throughput {
    cluster_ip: f64,
    pod_ip: f64,
    cluster_ip_close: f64,
    pod_ip_close: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !berth_bench::is_root() {
        bail!("the scale-down benchmark runs pods and programs nftables: run it as root");
    }
    berth_bench::install_crypto();
    let bin = berth_bench::berth_binary()?;
    let help = Command::new(&bin).args(["server", "--help"]).output()?;
    let has_flag = String::from_utf8_lossy(&help.stdout).contains("--pod-termination");
    let modes: Vec<Option<String>> = if has_flag {
        args.modes.iter().cloned().map(Some).collect()
    } else {
        eprintln!(
            "note: {} has no --pod-termination flag yet; measuring its one behaviour",
            bin.display()
        );
        vec![None]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let r = rt.block_on(run_mode(&args, mode.as_deref(), i == 0))?;
        results.push(r);
    }
    print_results(&args, &results);
    Ok(())
}

fn print_results(args: &Args, results: &[ModeResult]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n## Scale {} → 1 → {} under load, {} times; {:.0} req/s per path, each on a new connection; upstream {} ms\n",
        args.replicas, args.replicas, args.iterations, args.rate, args.upstream_delay_ms
    );
    let mut t = Table::new(&[
        "mode",
        "path",
        "failed / total",
        "failed while scaling down",
        "failed while scaling up",
        "failures by kind",
        "p50 ms",
        "p99 ms",
    ]);
    for r in results {
        for (path, p) in [("ClusterIP", &r.cluster_ip), ("NodePort", &r.node_port)] {
            let lat = p.stats.latency();
            t.row(vec![
                r.mode.clone(),
                path.into(),
                format!("{} / {}", p.stats.failed(), p.stats.total()),
                p.failed_down.to_string(),
                p.failed_up.to_string(),
                p.stats.failure_kinds(),
                ms(lat.p50),
                ms(lat.p99),
            ]);
        }
    }
    println!("{}", t.render());
    for r in results {
        let s: Vec<String> = r
            .scale_down_secs
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect();
        println!(
            "{}: seconds from `kubectl scale --replicas=1` until one pod remained: {}",
            r.mode,
            s.join(", ")
        );
    }
    for r in results {
        let Some(tp) = &r.throughput else { continue };
        println!(
            "\n## Requests/s for `/` (nginx, 1 pod, wrk from the host), {} s runs, medians of {}; mode {}\n",
            args.throughput_secs, args.throughput_rounds, r.mode
        );
        let mut t = Table::new(&["connections", "ClusterIP", "pod IP", "ClusterIP / pod IP"]);
        t.row(vec![
            "keep-alive".into(),
            format!("{:.0}", tp.cluster_ip),
            format!("{:.0}", tp.pod_ip),
            format!("{:.2}", tp.cluster_ip / tp.pod_ip.max(1e-9)),
        ]);
        t.row(vec![
            "one per request".into(),
            format!("{:.0}", tp.cluster_ip_close),
            format!("{:.0}", tp.pod_ip_close),
            format!("{:.2}", tp.cluster_ip_close / tp.pod_ip_close.max(1e-9)),
        ]);
        println!("{}", t.render());
    }
    println!("load average at the end: {}", load.trim());
}

/// kubectl with the server's kubeconfig; fails with its stderr.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("failed to run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn run_mode(args: &Args, mode: Option<&str>, throughput: bool) -> anyhow::Result<ModeResult> {
    let label = mode.unwrap_or("(no flag)").to_string();
    eprintln!("== mode {label}");
    // A short path: a container's attach socket lives under the data dir and a socket path
    // must fit in 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("bsd")
        .tempdir()
        .context("failed to create a temp dir")?;
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("images"))?;
    // The upstream's port, free a moment ago on every address.
    let upstream_port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    let upstream = SocketAddr::from((GATEWAY, upstream_port));
    berth_bench::nginx::build_nginx_oci_tar(
        &data.join("images/nginx.tar"),
        "bench/nginx:latest",
        upstream,
    )?;

    // Dropped last: the network and the proxy's table outlive the server.
    let _proxy = ProxyGuard;
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: BRIDGE.into(),
        pod_cidr: POD_CIDR.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    let kubelet_port = berth_bench::free_port()?.to_string();
    let mut server_args = vec![
        "--node-name",
        NODE,
        "--pod-cidr",
        POD_CIDR,
        "--service-cidr",
        SERVICE_CIDR,
        "--bridge",
        BRIDGE,
        "--proxy-table",
        PROXY_TABLE,
        "--kubelet-port",
        &kubelet_port,
        "--container-runtime",
        &args.runtime,
    ];
    if let Some(m) = mode {
        server_args.extend(["--pod-termination", m]);
    }
    let mut server = BerthServer::spawn_with(&data, &dir.path().join("server.log"), &server_args)?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let client = berth_bench::kube_client(&server.kubeconfig()).await?;
    let result = measure(
        args,
        &label,
        &client,
        &server.kubeconfig(),
        upstream,
        throughput,
    )
    .await;
    if result.is_err() {
        // What a user would look at first.
        let kc = server.kubeconfig();
        for cmd in [
            &["get", "pods,endpointslices", "-o", "wide"][..],
            &["describe", "pods", "-l", "app=web"],
            &["logs", "-l", "app=web", "--prefix", "--tail", "5"],
        ] {
            match kubectl(&kc, cmd) {
                Ok(out) => eprintln!("$ kubectl {}\n{out}", cmd.join(" ")),
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
    // However the measurement ended: workloads and pods go before the server stops.
    if let Err(e) = delete_workloads(&client).await {
        eprintln!("cleanup: {e:#}");
    }
    server.proc.stop(Duration::from_secs(30))?;
    if args.keep || result.is_err() {
        let kept = dir.keep();
        eprintln!("server log kept in {}", kept.join("server.log").display());
    }
    result
}

async fn measure(
    args: &Args,
    label: &str,
    client: &kube::Client,
    kubeconfig: &Path,
    upstream: SocketAddr,
    throughput: bool,
) -> anyhow::Result<ModeResult> {
    berth_bench::wait_node_ready(client, NODE).await?;
    let node_ip = node_address(client).await?;

    // The slow upstream, on the gateway once the first pod's network has put it on the bridge.
    let delay = Duration::from_millis(args.upstream_delay_ms);
    let _upstream = AbortOnDrop(tokio::spawn(async move {
        loop {
            match tokio::net::TcpListener::bind(upstream).await {
                Ok(l) => {
                    let _ = berth_bench::load::slow_upstream(l, delay).await;
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment(args.replicas)?)
        .await
        .context("failed to create the Deployment")?;
    let svc = services
        .create(&PostParams::default(), &service(args.node_port)?)
        .await
        .context("failed to create the Service")?;
    let cluster_ip: IpAddr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no clusterIP")?
        .parse()?;
    let started = Instant::now();
    wait_scaled(client, args.replicas as usize, Duration::from_secs(180)).await?;
    eprintln!(
        "{} pods ready behind {cluster_ip} in {:.1} s",
        args.replicas,
        started.elapsed().as_secs_f64()
    );
    let via_cluster_ip = SocketAddr::from((cluster_ip, 80));
    let via_node_port = SocketAddr::from((node_ip, args.node_port));
    for addr in [via_cluster_ip, via_node_port] {
        wait_answers(addr, "/slow").await?;
    }

    let timeout = Duration::from_secs(10);
    let loads = [
        Load::start(via_cluster_ip, "/slow", args.rate, 2000, timeout),
        Load::start(via_node_port, "/slow", args.rate, 2000, timeout),
    ];
    let t0 = loads[0].started;
    // Windows (since the load started) of scaling down and of scaling up.
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut scale_down_secs = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..args.iterations {
        let begin = t0.elapsed();
        let s = Instant::now();
        kubectl(kubeconfig, &["scale", "deploy/web", "--replicas=1"])?;
        wait_scaled(client, 1, Duration::from_secs(120)).await?;
        scale_down_secs.push(s.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        let mid = t0.elapsed();
        down.push(begin..mid);
        let replicas = format!("--replicas={}", args.replicas);
        kubectl(kubeconfig, &["scale", "deploy/web", &replicas])?;
        wait_scaled(client, args.replicas as usize, Duration::from_secs(180)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        up.push(mid..t0.elapsed());
        let (cf, ct) = loads[0].counts();
        let (nf, nt) = loads[1].counts();
        eprintln!(
            "{label} iteration {}: scaled down in {:.1} s; failed so far: ClusterIP {cf}/{ct}, NodePort {nf}/{nt}",
            i + 1,
            scale_down_secs.last().copied().unwrap_or_default()
        );
    }
    let [a, b] = loads;
    let (cluster_stats, node_stats) = (a.stop().await, b.stop().await);
    let split = |stats: Stats| {
        let within = |ws: &[std::ops::Range<Duration>]| {
            stats
                .failures
                .iter()
                .filter(|(t, _)| ws.iter().any(|w| w.contains(t)))
                .count() as u64
        };
        PathResult {
            failed_down: within(&down),
            failed_up: within(&up),
            stats,
        }
    };
    let throughput = if throughput && args.throughput_secs > 0 {
        Some(measure_throughput(args, client, kubeconfig, via_cluster_ip).await?)
    } else {
        None
    };
    Ok(ModeResult {
        mode: label.to_string(),
        cluster_ip: split(cluster_stats),
        node_port: split(node_stats),
        scale_down_secs,
        throughput,
    })
}

/// Scales to one pod and compares wrk's requests/s through the ClusterIP with the pod IP's,
/// alternating, with keep-alive connections and with one connection per request.
async fn measure_throughput(
    args: &Args,
    client: &kube::Client,
    kubeconfig: &Path,
    via_cluster_ip: SocketAddr,
) -> anyhow::Result<Throughput> {
    kubectl(kubeconfig, &["scale", "deploy/web", "--replicas=1"])?;
    wait_scaled(client, 1, Duration::from_secs(120)).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = pods
        .list(&ListParams::default().labels(&format!("app={APP}")))
        .await?
        .items
        .into_iter()
        .next()
        .context("no pod left")?;
    let pod_ip: IpAddr = pod
        .status
        .and_then(|s| s.pod_ip)
        .context("the pod has no IP")?
        .parse()?;
    let via_pod = SocketAddr::from((pod_ip, 80));
    let (mut c, mut p, mut cc, mut pc) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.throughput_rounds {
        c.push(wrk(via_cluster_ip, args.throughput_secs, false)?);
        p.push(wrk(via_pod, args.throughput_secs, false)?);
        cc.push(wrk(via_cluster_ip, args.throughput_secs, true)?);
        pc.push(wrk(via_pod, args.throughput_secs, true)?);
    }
    Ok(Throughput {
        cluster_ip: berth_bench::median(&c),
        pod_ip: berth_bench::median(&p),
        cluster_ip_close: berth_bench::median(&cc),
        pod_ip_close: berth_bench::median(&pc),
    })
}

/// `wrk` requests/s for `/` at `addr` (2 threads, 32 connections); with `close`, a new
/// connection per request. Fails if any request failed.
fn wrk(addr: SocketAddr, secs: u32, close: bool) -> anyhow::Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{secs}s")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    let out = cmd
        .output()
        .context("failed to run wrk (Debian package `wrk`, scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Latency spread and errors, for reading the figure.
    for l in text.lines().filter(|l| {
        let l = l.trim_start();
        l.starts_with("Latency") || l.contains("Non-2xx") || l.contains("Socket errors")
    }) {
        eprintln!("wrk {addr} (close: {close}): {}", l.trim());
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// Waits until one request to `addr` succeeds (the upstream is bound, the rules are in).
async fn wait_answers(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o =
            berth_bench::load::request(addr, path, Duration::from_secs(2), Duration::from_secs(5))
                .await;
        if o.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} did not answer within 30 s: {}", o.label());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Deployment: nginx pods ready when `/healthz` answers, no preStop hook.
fn deployment(replicas: u32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "bench/nginx:latest",
                        "imagePullPolicy": "Never",
                        "ports": [{"containerPort": 80, "name": "http"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": 80},
                            "periodSeconds": 1
                        }
                    }]
                }
            }
        }
    }))?)
}

/// A NodePort Service (so also a ClusterIP) on port 80.
fn service(node_port: u16) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": APP},
        "spec": {
            "type": "NodePort",
            "selector": {"app": APP},
            "ports": [{"port": 80, "targetPort": "http", "nodePort": node_port}]
        }
    }))?)
}

/// Waits until exactly `n` pods of the app exist (terminating ones count) and the Service's
/// EndpointSlices hold `n` ready endpoints and nothing else.
async fn wait_scaled(client: &kube::Client, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        let p = pods
            .list_metadata(&ListParams::default().labels(&format!("app={APP}")))
            .await?
            .items
            .len();
        let (mut ready, mut all) = (0, 0);
        for s in slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={APP}")))
            .await?
            .items
        {
            for e in s.endpoints {
                all += 1;
                if e.conditions.and_then(|c| c.ready).unwrap_or(false) {
                    ready += 1;
                }
            }
        }
        if p == n && ready == n && all == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not scaled to {n} within {timeout:?}: {p} pods, {ready} ready of {all} endpoints"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node's InternalIP, where NodePorts answer.
async fn node_address(client: &kube::Client) -> anyhow::Result<IpAddr> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(NODE).await?;
    let addr = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .context("the node has no InternalIP")?;
    Ok(addr.address.parse()?)
}

/// Deletes the Deployment (its pods with it) and the Service; waits until no pod is left.
async fn delete_workloads(client: &kube::Client) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let _ = deployments.delete(APP, &DeleteParams::foreground()).await;
    let _ = services.delete(APP, &DeleteParams::default()).await;
    let _ = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = pods
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} pods still there 120 s after the delete");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
