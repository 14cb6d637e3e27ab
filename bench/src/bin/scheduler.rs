//! `scheduler`: throughput of berth's scheduler. For each node count (100 and 1000 by
//! default) a fresh release `berth server` gets that many fake Nodes (API objects with
//! allocatable cpu/memory/pods and a Ready condition; no agent behind them, and the server's
//! own node cordoned), then 10k pods (100m cpu, 128Mi each) are created as fast as many
//! concurrent clients can. Two modes, each on its own fresh server:
//! - `create`: nodes open from the start, so scheduling runs while pods are being created
//!   (latency: create → bound);
//! - `backlog`: every fake node carries a NoSchedule taint while the 10k pods are created, so
//!   they all wait as unschedulable (PodScheduled=False seen for each); then the taints are
//!   removed and the scheduler works off the whole backlog (latency: taint removal → bound).
//!
//! A watch on the pods sees each binding; the table shows pods bound per second (first to last
//! binding seen), the create→all-bound time, the p50/p99 latency, and the server's CPU time.
//!
//! A last table runs the scheduling algorithm alone, in process (the scheduler's cache with
//! the same nodes, each pod filtered, scored and assumed, no API), to show what the
//! scheduler itself costs beside the API round trips.
//!
//! Target (issue 4): ≥ 1000 pods bound per second with 1000 nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{ms, rate, BerthServer, Latency, Table};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

#[derive(Parser)]
#[command(about = "berth scheduler throughput: pods bound per second with fake nodes")]
struct Args {
    /// Node counts (one fresh server each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 1000])]
    nodes: Vec<usize>,
    /// Pending pods created per run.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creating tasks.
    #[arg(long, default_value_t = 64)]
    creators: usize,
    /// Separate client connections the creators share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Modes to run: create (schedule while creating) and/or backlog (10k pending first).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["create".to_string(), "backlog".to_string()])]
    modes: Vec<String>,
}

/// The taint holding every fake node closed in backlog mode.
const HOLD_TAINT: &str = "bench.berth.dev/hold";

const NS: &str = "bench-sched";
const NODE_NAME: &str = "bench-sched-self";

struct Outcome {
    nodes: usize,
    mode: String,
    bound: usize,
    create_secs: f64,
    bind_secs: f64,
    total_secs: f64,
    latency: Latency,
    server_cpu: Duration,
    spread: (usize, usize),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::install_crypto();
    println!(
        "scheduler: berth server (release), {} pending pods (100m cpu, 128Mi), {} creators over {} connections; {}",
        args.pods,
        args.creators,
        args.connections,
        berth_bench::machine()
    );
    println!(
        "{}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start tokio")?;
    let mut outcomes = Vec::new();
    for &n in &args.nodes {
        for mode in &args.modes {
            let backlog = match mode.as_str() {
                "create" => false,
                "backlog" => true,
                other => bail!("unknown mode {other:?}: create or backlog"),
            };
            outcomes.push(runtime.block_on(run(n, backlog, &args))?);
        }
    }
    let mut table = Table::new(&[
        "nodes",
        "mode",
        "pods bound",
        "bound/s (first→last bind)",
        "create→all bound",
        "creates/s",
        "latency p50",
        "p99",
        "server CPU",
        "pods per node min..max",
        "target",
    ]);
    for o in &outcomes {
        let target = if o.nodes >= 1000 { "≥ 1000/s" } else { "" };
        table.row(vec![
            o.nodes.to_string(),
            o.mode.clone(),
            o.bound.to_string(),
            rate(o.bound as f64 / o.bind_secs.max(1e-9)),
            format!("{:.2} s", o.total_secs),
            rate(args.pods as f64 / o.create_secs.max(1e-9)),
            format!("{} ms", ms(o.latency.p50)),
            format!("{} ms", ms(o.latency.p99)),
            format!("{:.2} s", o.server_cpu.as_secs_f64()),
            format!("{}..{}", o.spread.0, o.spread.1),
            target.to_string(),
        ]);
    }
    println!("\n{}", table.render());

    let mut table = Table::new(&[
        "nodes",
        "pods",
        "in-process scheduling",
        "pods/s",
        "per pod",
    ]);
    for &n in &args.nodes {
        let (elapsed, placed) = in_process(n, args.pods);
        table.row(vec![
            n.to_string(),
            placed.to_string(),
            format!("{:.3} s", elapsed.as_secs_f64()),
            rate(placed as f64 / elapsed.as_secs_f64().max(1e-9)),
            format!(
                "{:.1} µs",
                elapsed.as_secs_f64() * 1e6 / placed.max(1) as f64
            ),
        ]);
    }
    println!("\n{}", table.render());
    Ok(())
}

/// Schedules `pods` pods onto `nodes` nodes with the scheduler's own code, in process.
fn in_process(nodes: usize, pods: usize) -> (Duration, usize) {
    use berth_scheduler::cache::Cache;
    use berth_scheduler::podinfo::PodInfo;
    let mut cache = Cache::default();
    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    for i in 0..nodes {
        let name = format!("fake-{i:04}");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": resources},
        }))
        .unwrap_or_default();
        cache.set_node(Arc::new(node));
    }
    let infos: Vec<PodInfo> = (0..pods)
        .map(|i| {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i:05}"), "namespace": NS, "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:latest",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            }))
            .unwrap_or_default();
            PodInfo::new(Arc::new(pod))
        })
        .collect();
    let mut next_start = 0;
    let mut placed = 0;
    let started = Instant::now();
    for mut info in infos {
        if let Ok(node) = berth_scheduler::scheduler::find_node(&info, &cache, 0, &mut next_start) {
            info.node_name = node;
            cache.assume(Arc::new(info));
            placed += 1;
        }
    }
    (started.elapsed(), placed)
}

async fn run(nodes: usize, backlog: bool, args: &Args) -> anyhow::Result<Outcome> {
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let log = tmp.path().join("server.log");
    let server = BerthServer::spawn_with(
        &data,
        &log,
        &[
            "--node-name",
            NODE_NAME,
            "--pod-cidr",
            "10.99.0.0/24",
            "--bridge",
            "bbench0",
            // The fake Nodes have no agent renewing their Lease: keep the node lifecycle
            // controller from marking them unreachable (and tainting them) mid-run.
            "--node-monitor-grace-period",
            "1h",
        ],
    )?;
    server.wait_ready_line(Duration::from_secs(20))?;
    let config = berth_bench::kube_config(&server.kubeconfig()).await?;
    let client = berth_bench::kube_client_nodelay(&config)?;
    let clients: Vec<kube::Client> = (0..args.connections.max(1))
        .map(|_| berth_bench::kube_client_nodelay(&config))
        .collect::<anyhow::Result<_>>()?;

    // The server's own node takes no bench pods.
    let node_api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while node_api.get_opt(NODE_NAME).await?.is_none() {
        if Instant::now() > deadline {
            bail!("the server's node did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node_api
        .patch(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .context("failed to cordon the server's node")?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await
        .context("failed to create the namespace")?;

    let started = Instant::now();
    make_nodes(&clients, nodes, backlog).await?;
    println!(
        "{nodes} nodes registered in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Watch the pods from before the first create.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
    let expected = args.pods;
    let watch = tokio::spawn(async move {
        let mut bound: HashMap<String, (Instant, String)> = HashMap::new();
        let mut unschedulable = std::collections::HashSet::new();
        let mut waiting = Some(waiting_tx);
        let mut ready = Some(ready_tx);
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            let pod = match e {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("watch: {e}");
                    continue;
                }
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let name = pod.metadata.name.clone().unwrap_or_default();
            if waiting.is_some() {
                let failed = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                    });
                if failed {
                    unschedulable.insert(name.clone());
                    if unschedulable.len() >= expected {
                        if let Some(tx) = waiting.take() {
                            let _ = tx.send(Instant::now());
                        }
                    }
                }
            }
            if let Some(node) = node {
                bound.entry(name).or_insert((Instant::now(), node));
                if bound.len() >= expected {
                    break;
                }
            }
        }
        bound
    });
    ready_rx.await.context("the watch ended before listing")?;

    let server_cpu0 = berth_bench::cpu_time(server.proc.pid())?;
    let create_started = Instant::now();
    let created = create_pods(&clients, args.pods, args.creators).await?;
    let create_secs = create_started.elapsed().as_secs_f64();
    // Backlog mode: once every pod waits as unschedulable, open the nodes.
    let mut opened = None;
    if backlog {
        let all_waiting = tokio::time::timeout(Duration::from_secs(300), waiting_rx)
            .await
            .context("not every pod was reported unschedulable within 300 s")?
            .context("the watch ended early")?;
        println!(
            "{} pods created in {create_secs:.2} s, all unschedulable after {:.2} s; opening the nodes",
            args.pods,
            all_waiting.duration_since(create_started).as_secs_f64()
        );
        opened = Some(Instant::now());
        open_nodes(&clients, nodes).await?;
    }
    let bound = tokio::time::timeout(Duration::from_secs(300), watch)
        .await
        .context("not every pod was bound within 300 s")?
        .context("the watch task failed")?;
    let server_cpu = berth_bench::cpu_time(server.proc.pid())?.saturating_sub(server_cpu0);
    let total_secs = create_started.elapsed().as_secs_f64();

    let first = bound
        .values()
        .map(|(t, _)| *t)
        .min()
        .unwrap_or(create_started);
    let last = bound
        .values()
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(create_started);
    let mut latencies: Vec<Duration> = bound
        .iter()
        .filter_map(|(name, (t, _))| {
            opened
                .or_else(|| created.get(name).copied())
                .map(|c| t.saturating_duration_since(c))
        })
        .collect();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in bound.values() {
        *per_node.entry(node.as_str()).or_insert(0) += 1;
    }
    if per_node.contains_key(NODE_NAME) {
        bail!("a bench pod landed on the cordoned node");
    }
    let spread = (
        per_node.values().copied().min().unwrap_or(0),
        per_node.values().copied().max().unwrap_or(0),
    );
    drop(server);
    Ok(Outcome {
        nodes,
        mode: if backlog { "backlog" } else { "create" }.to_string(),
        bound: bound.len(),
        create_secs,
        bind_secs: last.duration_since(first).as_secs_f64(),
        total_secs,
        latency: Latency::of(&mut latencies),
        server_cpu,
        spread,
    })
}

/// Registers `n` fake Nodes with allocatable resources and a Ready condition (`hold`: with
/// the NoSchedule taint that keeps pods off them).
async fn make_nodes(clients: &[kube::Client], n: usize, hold: bool) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let client = clients[w % clients.len()].clone();
            let next = next.clone();
            tokio::spawn(async move {
                let api: Api<Node> = Api::all(client);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let name = format!("fake-{i:04}");
                    let taints = if hold {
                        json!([{"key": HOLD_TAINT, "effect": "NoSchedule"}])
                    } else {
                        json!([])
                    };
                    let node: Node = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {
                            "kubernetes.io/hostname": name,
                            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                        }},
                        "spec": {"taints": taints},
                    }))?;
                    api.create(&PostParams::default(), &node).await?;
                    let now = k8s_openapi::chrono::Utc::now()
                        .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true);
                    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                    let status = json!({"status": {
                        "capacity": resources,
                        "allocatable": resources,
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "fake node", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                    }});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("a node task panicked")??;
    }
    Ok(())
}

/// Removes the hold taint from the `n` fake nodes.
async fn open_nodes(clients: &[kube::Client], n: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let client = clients[w % clients.len()].clone();
            let next = next.clone();
            tokio::spawn(async move {
                let api: Api<Node> = Api::all(client);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let patch = json!({"spec": {"taints": null}});
                    api.patch(
                        &format!("fake-{i:04}"),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("a node task panicked")??;
    }
    Ok(())
}

/// Creates `n` pending pods from `creators` concurrent tasks; returns when each was sent.
async fn create_pods(
    clients: &[kube::Client],
    n: usize,
    creators: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..creators.max(1))
        .map(|w| {
            let client = clients[w % clients.len()].clone();
            let next = next.clone();
            tokio::spawn(async move {
                let api: Api<Pod> = Api::namespaced(client, NS);
                let mut sent = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(sent);
                    }
                    let name = format!("pod-{i:05}");
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {"app": "bench"}},
                        "spec": {"containers": [{
                            "name": "c", "image": "busybox:latest",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }]},
                    }))?;
                    let at = Instant::now();
                    api.create(&PostParams::default(), &pod).await?;
                    sent.push((name, at));
                }
            })
        })
        .collect();
    let mut created = HashMap::new();
    for t in tasks {
        created.extend(t.await.context("a create task panicked")??);
    }
    Ok(created)
}
