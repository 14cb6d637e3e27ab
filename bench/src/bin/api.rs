//! `api`: throughput and latency (p50/p99) of a real `berth server` (started here on a temp
//! data dir and a free port) for ConfigMap create, get, list (of 100 ConfigMaps) and watch
//! (time from sending a create to its ADDED event arriving on a watch) with 1, 10 and 100
//! concurrent clients. Every client is its own `kube::Client` (own connection pool, own TLS
//! connections), built from the kubeconfig the server writes.
//!
//! Each (operation, clients) pair runs `--runs` times for `--secs` seconds; the table shows
//! medians over the runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{median, ms, rate, ratio, BerthServer, Latency, Run, Summary, Table};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

#[derive(Parser)]
#[command(about = "berth API server throughput and latency (create, get, list, watch)")]
struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 1.5)]
    secs: f64,
    /// Runs per (operation, clients) pair (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent client counts.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 10, 100])]
    clients: Vec<usize>,
    /// ConfigMaps in the listed namespace.
    #[arg(long, default_value_t = 100)]
    list_size: usize,
    /// Bytes of data per ConfigMap.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Clients set TCP_NODELAY (kube's default connector does not; see the README).
    #[arg(long)]
    nodelay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Get,
    List,
    Watch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::List => "list",
            Op::Watch => "watch (create→event)",
        }
    }
}

const NS_CREATE: &str = "bench-create";
const NS_LIST: &str = "bench-list";
const NS_WATCH: &str = "bench-watch";

fn config_map(name: &str, labels: Option<(&str, &str)>, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: labels.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

/// One worker's task: an operation repeated until `deadline`.
struct Job {
    op: Op,
    /// Unique per run and concurrency, part of created names.
    tag: String,
    w: usize,
    list_size: usize,
    value: Arc<String>,
    secs: f64,
    /// Passed once the worker is set up (its watch open); the clock starts then.
    start: Arc<tokio::sync::Barrier>,
    first_error: Arc<Mutex<Option<String>>>,
}

/// What one worker does for one operation until the deadline; its latencies and errors.
async fn worker(client: kube::Client, job: Job) -> (Vec<Duration>, usize) {
    let Job {
        op,
        tag,
        w,
        list_size,
        value,
        secs,
        start,
        first_error,
    } = job;
    let begin = || async {
        start.wait().await;
        Instant::now() + Duration::from_secs_f64(secs)
    };
    let mut lat = Vec::new();
    let mut errors = 0usize;
    let note = |e: String| {
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };
    match op {
        Op::Create => {
            let api: Api<ConfigMap> = Api::namespaced(client, NS_CREATE);
            let deadline = begin().await;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let cm = config_map(&format!("{tag}-w{w}-{i}"), None, &value);
                let t0 = Instant::now();
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => lat.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        note(format!("create: {e}"));
                    }
                }
                i += 1;
            }
        }
        Op::Get => {
            let api: Api<ConfigMap> = Api::namespaced(client, NS_LIST);
            let deadline = begin().await;
            let mut i = w;
            while Instant::now() < deadline {
                let name = format!("cm-{}", i % list_size.max(1));
                let t0 = Instant::now();
                match api.get(&name).await {
                    Ok(_) => lat.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        note(format!("get {name}: {e}"));
                    }
                }
                i += 7;
            }
        }
        Op::List => {
            let api: Api<ConfigMap> = Api::namespaced(client, NS_LIST);
            let deadline = begin().await;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match api.list(&ListParams::default()).await {
                    Ok(list) if list.items.len() == list_size => lat.push(t0.elapsed()),
                    Ok(list) => {
                        errors += 1;
                        note(format!(
                            "list: {} items, expected {list_size}",
                            list.items.len()
                        ));
                    }
                    Err(e) => {
                        errors += 1;
                        note(format!("list: {e}"));
                    }
                }
            }
        }
        Op::Watch => {
            let api: Api<ConfigMap> = Api::namespaced(client, NS_WATCH);
            let label = format!("{tag}-w{w}");
            let selector = format!("bench={label}");
            let rv = match api
                .list_metadata(&ListParams::default().labels(&selector))
                .await
            {
                Ok(l) => l.metadata.resource_version.unwrap_or_else(|| "0".into()),
                Err(e) => {
                    note(format!("watch: initial list: {e}"));
                    begin().await;
                    return (lat, 1);
                }
            };
            let stream = match api
                .watch(&WatchParams::default().labels(&selector).timeout(290), &rv)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    note(format!("watch: {e}"));
                    begin().await;
                    return (lat, 1);
                }
            };
            let mut stream = Box::pin(stream);
            let deadline = begin().await;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let name = format!("{label}-{i}");
                i += 1;
                let cm = config_map(&name, Some(("bench", &label)), &value);
                let t0 = Instant::now();
                if let Err(e) = api.create(&PostParams::default(), &cm).await {
                    errors += 1;
                    note(format!("watch: create: {e}"));
                    continue;
                }
                let seen = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(WatchEvent::Added(o))
                                if o.metadata.name.as_deref() == Some(&name) =>
                            {
                                return Ok(());
                            }
                            Ok(WatchEvent::Error(e)) => return Err(format!("watch error: {e:?}")),
                            Ok(_) => {}
                            Err(e) => return Err(format!("watch stream: {e}")),
                        }
                    }
                    Err("watch stream ended".to_string())
                })
                .await;
                match seen {
                    Ok(Ok(())) => lat.push(t0.elapsed()),
                    Ok(Err(e)) => {
                        note(e);
                        return (lat, errors + 1);
                    }
                    Err(_) => {
                        note("watch: no event within 10 s".into());
                        return (lat, errors + 1);
                    }
                }
            }
        }
    }
    (lat, errors)
}

/// CPU used during a run, per completed operation.
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerOp {
    server: Duration,
    client: Duration,
}

async fn run_op(
    clients: &[kube::Client],
    server_pid: u32,
    op: Op,
    n: usize,
    run: usize,
    args: &Args,
    value: &Arc<String>,
) -> anyhow::Result<(Run, CpuPerOp, Option<String>)> {
    let first_error = Arc::new(Mutex::new(None));
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let tasks: Vec<_> = clients[..n]
        .iter()
        .enumerate()
        .map(|(w, c)| {
            tokio::spawn(worker(
                c.clone(),
                Job {
                    op,
                    tag: format!("r{run}-n{n}"),
                    w,
                    list_size: args.list_size,
                    value: value.clone(),
                    secs: args.secs,
                    start: start.clone(),
                    first_error: first_error.clone(),
                },
            ))
        })
        .collect();
    start.wait().await;
    let started = Instant::now();
    let server_cpu0 = berth_bench::cpu_time(server_pid)?;
    let client_cpu0 = berth_bench::cpu_time(0)?;
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.context("client task panicked")?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed();
    let server_cpu = berth_bench::cpu_time(server_pid)?.saturating_sub(server_cpu0);
    let client_cpu = berth_bench::cpu_time(0)?.saturating_sub(client_cpu0);
    let lat = Latency::of(&mut all);
    let per = |d: Duration| d.checked_div(lat.count.max(1) as u32).unwrap_or_default();
    let cpu = CpuPerOp {
        server: per(server_cpu),
        client: per(client_cpu),
    };
    let err = first_error.lock().ok().and_then(|mut e| e.take());
    Ok((
        Run {
            per_sec: lat.count as f64 / elapsed.as_secs_f64(),
            lat,
            errors,
        },
        cpu,
        err,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::install_crypto();
    let Some(&max_clients) = args.clients.iter().max() else {
        bail!("no client counts given");
    };
    println!(
        "api: berth server, ConfigMaps with {} B data, kube clients {}, {} run(s) x {} s per row, {}",
        args.value_size,
        if args.nodelay {
            "with TCP_NODELAY"
        } else {
            "as kube builds them (Nagle on)"
        },
        args.runs,
        args.secs,
        berth_bench::machine()
    );
    println!(
        "{}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    let dir = tempfile::tempdir().context("failed to create a temp dir")?;
    let data = dir.path().join("data");
    let mut server = BerthServer::start(
        &data,
        &dir.path().join("berth.log"),
        Duration::from_secs(60),
    )?;
    println!(
        "berth: pid {} on 127.0.0.1:{}, data dir {}",
        server.proc.pid(),
        server.port,
        data.display()
    );
    let result = bench(&args, &server, max_clients).await;
    let rss = server.rss_kib().unwrap_or(0);
    let hwm = berth_bench::status_field_kib(server.proc.pid(), "VmHWM:").unwrap_or(0);
    server.proc.stop(Duration::from_secs(15))?;
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    let log_lines = log.lines().count();
    match result {
        Ok(()) => {
            println!(
                "server memory after the benchmark: VmRSS {:.1} MB, VmHWM (peak) {:.1} MB",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            if log.contains("ERROR") || log.contains("WARN") {
                println!(
                    "server log ({log_lines} lines) has warnings/errors; first ones:\n{}",
                    log.lines()
                        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                        .take(5)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "server log tail:\n{}",
                log.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Err(e)
        }
    }
}

async fn bench(args: &Args, server: &BerthServer, max_clients: usize) -> anyhow::Result<()> {
    let config = berth_bench::kube_config(&server.kubeconfig()).await?;
    let admin = kube::Client::try_from(config.clone()).context("failed to build a client")?;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in [NS_CREATE, NS_LIST, NS_WATCH] {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("failed to create namespace {ns}"))?;
    }
    let value: Arc<String> = Arc::new("x".repeat(args.value_size));
    let listed: Api<ConfigMap> = Api::namespaced(admin.clone(), NS_LIST);
    for i in 0..args.list_size {
        listed
            .create(
                &PostParams::default(),
                &config_map(&format!("cm-{i}"), None, &value),
            )
            .await
            .with_context(|| format!("failed to create cm-{i}"))?;
    }

    // One client per simulated client, each with its own connections; warm them up (TLS
    // handshake, connection in the pool) before measuring.
    let mut clients = Vec::with_capacity(max_clients);
    for _ in 0..max_clients {
        clients.push(if args.nodelay {
            berth_bench::kube_client_nodelay(&config)?
        } else {
            kube::Client::try_from(config.clone()).context("failed to build a client")?
        });
    }
    let warm = futures::future::join_all(clients.iter().map(|c| {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), NS_LIST);
        async move { api.get("cm-0").await }
    }))
    .await;
    if let Some(Err(e)) = warm.into_iter().find(Result::is_err) {
        bail!("warm-up get failed: {e}");
    }

    let ops = [Op::Create, Op::Get, Op::List, Op::Watch];
    let mut runs: BTreeMap<(Op, usize), Vec<Run>> = BTreeMap::new();
    let mut errors: BTreeMap<(Op, usize), String> = BTreeMap::new();
    let mut cpu: BTreeMap<(Op, usize), Vec<CpuPerOp>> = BTreeMap::new();
    for run in 0..args.runs {
        for op in ops {
            for &n in &args.clients {
                let (r, c, err) =
                    run_op(&clients, server.proc.pid(), op, n, run, args, &value).await?;
                eprintln!(
                    "  run {run} {:<21} {n:>3} clients: {:>7} ops/s, p50 {} ms, p99 {} ms{}",
                    op.name(),
                    rate(r.per_sec),
                    ms(r.lat.p50),
                    ms(r.lat.p99),
                    if r.errors > 0 {
                        format!(", {} errors", r.errors)
                    } else {
                        String::new()
                    }
                );
                runs.entry((op, n)).or_default().push(r);
                cpu.entry((op, n)).or_default().push(c);
                if let Some(e) = err {
                    errors.entry((op, n)).or_insert(e);
                }
            }
        }
    }

    let mut table = Table::new(&[
        "operation",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "ops/s vs 1 client",
        "server CPU µs/op",
        "client CPU µs/op",
        "ops",
        "errors",
    ]);
    for op in ops {
        let base = runs
            .get(&(op, 1))
            .map(|r| Summary::of(r).per_sec)
            .unwrap_or(0.0);
        for &n in &args.clients {
            let Some(r) = runs.get(&(op, n)) else {
                continue;
            };
            let s = Summary::of(r);
            let c = cpu.get(&(op, n)).map(Vec::as_slice).unwrap_or(&[]);
            let us = |f: fn(&CpuPerOp) -> Duration| {
                format!(
                    "{:.0}",
                    median(
                        &c.iter()
                            .map(|x| f(x).as_secs_f64() * 1e6)
                            .collect::<Vec<_>>()
                    )
                )
            };
            table.row(vec![
                op.name().to_string(),
                n.to_string(),
                rate(s.per_sec),
                ms(s.p50),
                ms(s.p99),
                ratio(s.per_sec, base),
                us(|x| x.server),
                us(|x| x.client),
                s.ops.to_string(),
                s.errors.to_string(),
            ]);
        }
    }
    println!();
    println!("{}", table.render());

    // Ratios between operations at the same concurrency: how much a create costs next to a
    // read, and what the watch adds on top of the create.
    let per_sec = |op: Op, n: usize| {
        runs.get(&(op, n))
            .map(|r| median(&r.iter().map(|x| x.per_sec).collect::<Vec<_>>()))
            .unwrap_or(0.0)
    };
    let p50 = |op: Op, n: usize| {
        runs.get(&(op, n))
            .map(|r| Summary::of(r).p50.as_secs_f64())
            .unwrap_or(0.0)
    };
    let mut ratios = Table::new(&[
        "clients",
        "get/create ops/s",
        "list(100)/get ops/s",
        "watch p50 / create p50",
    ]);
    for &n in &args.clients {
        ratios.row(vec![
            n.to_string(),
            ratio(per_sec(Op::Get, n), per_sec(Op::Create, n)),
            ratio(per_sec(Op::List, n), per_sec(Op::Get, n)),
            ratio(p50(Op::Watch, n), p50(Op::Create, n)),
        ]);
    }
    println!("{}", ratios.render());
    for ((op, n), e) in &errors {
        println!("first error of {} with {n} clients: {e}", op.name());
    }
    println!(
        "after the runs: {}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    Ok(())
}
