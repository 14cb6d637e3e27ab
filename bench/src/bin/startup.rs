//! `startup`: cold start of `berth server` (process spawn → `GET /readyz` answering 200, polled
//! over TLS without verification) over `--runs` fresh data dirs and over an existing data dir
//! holding 1000 ConfigMaps; idle resident memory (VmRSS) after `--idle-secs` of idling, after
//! creating 1000 ConfigMaps and idling again, and after a restart on that data dir. Printed
//! beside the targets: cold start ≤ 0.5 s, idle RSS ≤ 30 MB.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_bench::{ms, ratio, BerthServer, Table};
use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

const START_TARGET: Duration = Duration::from_millis(500);
const RSS_TARGET_MB: f64 = 30.0;

#[derive(Parser)]
#[command(about = "berth cold start time and idle memory")]
struct Args {
    /// Cold starts per data-dir kind.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Seconds of idling before reading VmRSS.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,
    /// ConfigMaps created for the loaded measurements.
    #[arg(long, default_value_t = 1000)]
    configmaps: usize,
    /// Bytes of data per ConfigMap.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Milliseconds between `/readyz` polls.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
}

/// One start: spawn → /readyz 200, spawn → "ready" line, SIGTERM → exit.
struct Start {
    readyz: Duration,
    ready_line: Duration,
    stop: Duration,
}

/// Starts a server on `data`, measures readiness, runs `while_up`, then stops it.
async fn start_once<F, Fut>(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    data: &Path,
    log: &Path,
    poll: Duration,
    while_up: F,
) -> anyhow::Result<Start>
where
    F: FnOnce(BerthServerRef) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut server = BerthServer::spawn(data, log)?;
    let ready = berth_bench::poll_readyz(tls, server.port, poll, Duration::from_secs(30)).await;
    let ready = match ready {
        Ok(t) => t,
        Err(e) => {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(e.context(format!("server log:\n{tail}")));
        }
    };
    let line = server.wait_ready_line(Duration::from_secs(10))?;
    let started = Start {
        readyz: ready - server.spawned,
        ready_line: line.saturating_duration_since(server.spawned),
        stop: Duration::ZERO,
    };
    let up = while_up(BerthServerRef {
        pid: server.proc.pid(),
        kubeconfig: server.kubeconfig(),
    })
    .await;
    let stop = server.proc.stop(Duration::from_secs(15))?;
    up?;
    Ok(Start { stop, ..started })
}

/// What a measurement running while the server is up may use.
struct BerthServerRef {
    pid: u32,
    kubeconfig: std::path::PathBuf,
}

fn stats(label: &str, xs: &[Duration], target: Option<Duration>, t: &mut Table) {
    let Some(min) = xs.iter().min().copied() else {
        return;
    };
    let max = xs.iter().max().copied().unwrap_or_default();
    let med = berth_bench::median_duration(xs);
    let (tgt, vs, verdict) = match target {
        Some(tg) => (
            format!("≤ {} ms", ms(tg)),
            ratio(med.as_secs_f64(), tg.as_secs_f64()),
            if med <= tg { "PASS" } else { "FAIL" }.to_string(),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    t.row(vec![
        label.to_string(),
        xs.len().to_string(),
        format!("{} ms", ms(med)),
        format!("{} ms", ms(min)),
        format!("{} ms", ms(max)),
        tgt,
        vs,
        verdict,
    ]);
}

fn mem_row(label: &str, kib: u64, target: bool, t: &mut Table) {
    let mb = kib as f64 / 1024.0;
    let (tgt, vs, verdict) = if target {
        (
            format!("≤ {RSS_TARGET_MB} MB"),
            ratio(mb, RSS_TARGET_MB),
            if mb <= RSS_TARGET_MB { "PASS" } else { "FAIL" }.to_string(),
        )
    } else {
        ("-".into(), "-".into(), "-".into())
    };
    t.row(vec![
        label.to_string(),
        format!("{mb:.1} MB"),
        tgt,
        vs,
        verdict,
    ]);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    berth_bench::install_crypto();
    let tls = berth_bench::insecure_tls();
    let poll = Duration::from_millis(args.poll_ms);
    let idle = Duration::from_secs_f64(args.idle_secs);
    println!(
        "startup: {} cold starts per kind, /readyz polled every {} ms, {} s idle, {}",
        args.runs,
        args.poll_ms,
        args.idle_secs,
        berth_bench::machine()
    );
    println!(
        "{}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    let root = tempfile::tempdir().context("failed to create a temp dir")?;
    let log = root.path().join("berth.log");

    // 1. Cold starts on fresh data dirs (certificates, kubeconfig and database created).
    let mut fresh = Vec::new();
    for i in 0..args.runs {
        let data = root.path().join(format!("fresh-{i}"));
        let s = start_once(&tls, &data, &log, poll, |_| async { Ok(()) }).await?;
        eprintln!(
            "  fresh start {i}: /readyz 200 after {} ms, stopped in {} ms",
            ms(s.readyz),
            ms(s.stop)
        );
        fresh.push(s);
        std::fs::remove_dir_all(&data).context("failed to remove a data dir")?;
    }

    // 2. Memory: idle, then with ConfigMaps created, on one data dir kept for step 3.
    let data = root.path().join("loaded");
    let mut mem: BTreeMap<&str, u64> = BTreeMap::new();
    let configmaps = args.configmaps;
    let value = "x".repeat(args.value_size);
    let mut create_time = Duration::ZERO;
    let loaded = start_once(&tls, &data, &log, poll, |srv| {
        let mem = &mut mem;
        let create_time = &mut create_time;
        let value = &value;
        async move {
            tokio::time::sleep(idle).await;
            mem.insert("idle", berth_bench::rss_kib(srv.pid)?);
            let client = berth_bench::kube_client(&srv.kubeconfig).await?;
            let api: Api<ConfigMap> = Api::namespaced(client, "default");
            let t0 = Instant::now();
            // 10 concurrent creators.
            let creators = (0..10).map(|w| {
                let api = api.clone();
                async move {
                    for i in (w..configmaps).step_by(10) {
                        let cm = ConfigMap {
                            metadata: ObjectMeta {
                                name: Some(format!("cm-{i}")),
                                ..Default::default()
                            },
                            data: Some(BTreeMap::from([("v".to_string(), value.clone())])),
                            ..Default::default()
                        };
                        api.create(&PostParams::default(), &cm)
                            .await
                            .with_context(|| format!("failed to create cm-{i}"))?;
                    }
                    anyhow::Ok(())
                }
            });
            for r in futures::future::join_all(creators).await {
                r?;
            }
            *create_time = t0.elapsed();
            mem.insert("loaded-busy", berth_bench::rss_kib(srv.pid)?);
            tokio::time::sleep(idle).await;
            mem.insert("loaded", berth_bench::rss_kib(srv.pid)?);
            mem.insert("hwm", berth_bench::status_field_kib(srv.pid, "VmHWM:")?);
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "  created {configmaps} ConfigMaps in {} ms; that server stopped in {} ms",
        ms(create_time),
        ms(loaded.stop)
    );

    // 3. Cold starts on the existing data dir (reopen the database, reuse certificates).
    let mut existing = Vec::new();
    for i in 0..args.runs {
        let last = i + 1 == args.runs;
        let mem = &mut mem;
        let s = start_once(&tls, &data, &log, poll, |srv| async move {
            if last {
                tokio::time::sleep(idle).await;
                mem.insert("restarted", berth_bench::rss_kib(srv.pid)?);
            }
            Ok(())
        })
        .await?;
        eprintln!(
            "  existing-dir start {i}: /readyz 200 after {} ms, stopped in {} ms",
            ms(s.readyz),
            ms(s.stop)
        );
        existing.push(s);
    }

    let mut t = Table::new(&[
        "cold start",
        "runs",
        "median",
        "min",
        "max",
        "target",
        "median/target",
        "verdict",
    ]);
    let col = |xs: &[Start], f: fn(&Start) -> Duration| xs.iter().map(f).collect::<Vec<_>>();
    stats(
        "fresh data dir: spawn → /readyz 200",
        &col(&fresh, |s| s.readyz),
        Some(START_TARGET),
        &mut t,
    );
    stats(
        "fresh data dir: spawn → \"ready\" printed",
        &col(&fresh, |s| s.ready_line),
        None,
        &mut t,
    );
    stats(
        &format!("existing data dir ({configmaps} ConfigMaps): spawn → /readyz 200"),
        &col(&existing, |s| s.readyz),
        Some(START_TARGET),
        &mut t,
    );
    let mut stops = col(&fresh, |s| s.stop);
    stops.extend(col(&existing, |s| s.stop));
    stats("shutdown: SIGTERM → exit", &stops, None, &mut t);
    println!();
    println!("{}", t.render());

    let mut m = Table::new(&[
        "memory (VmRSS)",
        "value",
        "target",
        "value/target",
        "verdict",
    ]);
    let get = |k: &str| mem.get(k).copied().unwrap_or(0);
    mem_row(
        &format!("idle {} s after a fresh start", args.idle_secs),
        get("idle"),
        true,
        &mut m,
    );
    mem_row(
        &format!("right after creating {configmaps} ConfigMaps"),
        get("loaded-busy"),
        false,
        &mut m,
    );
    mem_row(
        &format!(
            "idle {} s after creating {configmaps} ConfigMaps",
            args.idle_secs
        ),
        get("loaded"),
        true,
        &mut m,
    );
    mem_row("peak (VmHWM) of that run", get("hwm"), false, &mut m);
    mem_row(
        &format!("idle {} s after a restart on that data dir", args.idle_secs),
        get("restarted"),
        true,
        &mut m,
    );
    println!("{}", m.render());
    Ok(())
}
