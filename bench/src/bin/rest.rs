//! `rest`: the server's CPU and memory at rest with many objects. A fresh release
//! `berth server` (own data dir, free port, no root needed) gets 10k ConfigMaps (1 KiB of data
//! each) and 1k Deployments scaled to 0 (so the controllers track them, with no pods), created
//! by 64 concurrent tasks; after a settling pause the server's CPU time and VmRSS are read over
//! 30 s of idling (no client requests), beside the same server idle with no objects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_bench::{BerthServer, Table};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Parser)]
#[command(about = "berth server CPU and memory at rest with 10k ConfigMaps and 1k Deployments")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    configmaps: usize,
    #[arg(long, default_value_t = 1_000)]
    deployments: usize,
    /// Seconds idled before measuring (controllers settle).
    #[arg(long, default_value_t = 10.0)]
    settle_secs: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30.0)]
    idle_secs: f64,
}

const BRIDGE: &str = "btsu1";
const CIDR: &str = "10.181.8.0/24";

/// Removes the bench's bridge, routes and netns mounts however the run ended.
struct NetworkGuard(berth_net::NetworkConfig);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Err(e) = berth_net::Sandbox::teardown_network(&self.0) {
            eprintln!("network teardown: {e}");
        }
    }
}

struct Idle {
    cpu_percent: f64,
    rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::install_crypto();
    println!(
        "rest: berth server at rest, {} ConfigMaps (1 KiB) + {} Deployments at 0 replicas; {}",
        args.configmaps,
        args.deployments,
        berth_bench::machine()
    );
    println!("load average {}", berth_bench::loadavg());
    let rt = tokio::runtime::Runtime::new().context("failed to start tokio")?;
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    // As root the server's node agent makes a bridge; it goes when the bench ends.
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: BRIDGE.into(),
        pod_cidr: CIDR.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    let server = BerthServer::spawn_with(
        &data,
        &tmp.path().join("server.log"),
        &["--pod-cidr", CIDR, "--bridge", BRIDGE],
    )?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let (empty, full, created) = rt.block_on(async {
        let config = berth_bench::kube_config(&server.kubeconfig()).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        let empty = idle(&server, args.idle_secs).await?;
        let started = Instant::now();
        create(&config, &args).await?;
        let created = started.elapsed();
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
        let full = idle(&server, args.idle_secs).await?;
        anyhow::Ok((empty, full, created))
    })?;
    drop(server);
    let mut t = Table::new(&["server at rest", "CPU (% of one core)", "VmRSS"]);
    for (what, i) in [
        ("no objects".to_string(), &empty),
        (
            format!(
                "{} ConfigMaps + {} Deployments",
                args.configmaps, args.deployments
            ),
            &full,
        ),
    ] {
        t.row(vec![
            what,
            format!("{:.2} %", i.cpu_percent),
            format!("{:.1} MB", i.rss_kib as f64 / 1024.0),
        ]);
    }
    println!("\n{}", t.render());
    println!(
        "objects created in {:.1} s; CPU over {} s of idling after {} s of settling; load average after: {}",
        created.as_secs_f64(),
        args.idle_secs,
        args.settle_secs,
        berth_bench::loadavg()
    );
    Ok(())
}

async fn idle(server: &BerthServer, secs: f64) -> anyhow::Result<Idle> {
    let pid = server.proc.pid();
    let cpu0 = berth_bench::cpu_time(pid)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let cpu = berth_bench::cpu_time(pid)?.saturating_sub(cpu0);
    Ok(Idle {
        cpu_percent: 100.0 * cpu.as_secs_f64() / started.elapsed().as_secs_f64(),
        rss_kib: server.rss_kib()?,
    })
}

async fn create(config: &kube::Config, args: &Args) -> anyhow::Result<()> {
    let clients: Vec<kube::Client> = (0..8)
        .map(|_| berth_bench::kube_client_nodelay(config))
        .collect::<anyhow::Result<_>>()?;
    let next = Arc::new(AtomicUsize::new(0));
    let total = args.configmaps + args.deployments;
    let configmaps = args.configmaps;
    let data = "x".repeat(1024);
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let client = clients[w % clients.len()].clone();
            let (next, data) = (next.clone(), data.clone());
            tokio::spawn(async move {
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
                let deps: Api<Deployment> = Api::namespaced(client, "default");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok(());
                    }
                    if i < configmaps {
                        let cm: ConfigMap = serde_json::from_value(json!({
                            "metadata": {"name": format!("cm-{i:05}")},
                            "data": {"payload": data},
                        }))?;
                        cms.create(&PostParams::default(), &cm).await?;
                    } else {
                        let name = format!("dep-{:04}", i - configmaps);
                        let d: Deployment = serde_json::from_value(json!({
                            "metadata": {"name": name},
                            "spec": {
                                "replicas": 0,
                                "selector": {"matchLabels": {"app": name}},
                                "template": {
                                    "metadata": {"labels": {"app": name}},
                                    "spec": {"containers": [{"name": "main", "image": "busybox:latest"}]},
                                },
                            },
                        }))?;
                        deps.create(&PostParams::default(), &d).await?;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("a create task panicked")??;
    }
    Ok(())
}
