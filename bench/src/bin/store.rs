//! `store`: durable write throughput of berth's `SqliteStore` (default options: WAL,
//! `synchronous=FULL`, group commit) with 1, 10 and 100 concurrent writers creating distinct
//! keys with ~1 KiB values, beside raw SQLite inserts with the same durability (rusqlite, one
//! insert per committed transaction; 1 writer, and N threads with their own connections
//! contending) and etcd (`/usr/bin/etcd`, started here, written through its v3 JSON gateway
//! over keep-alive HTTP/1.1 connections, one per writer).
//!
//! Each configuration runs `--runs` times for `--secs` seconds (runs of the systems are
//! interleaved to spread machine noise); the tables show medians over the runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use berth_bench::{free_port, median, ms, rate, ratio, Latency, Proc, Table};
use berth_store::{SqliteOptions, SqliteStore, Store};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "Durable write throughput: berth SqliteStore vs raw SQLite vs etcd")]
struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Runs per configuration (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent writer counts.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 10, 100])]
    writers: Vec<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Skip etcd.
    #[arg(long)]
    no_etcd: bool,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Run {
    writes_per_sec: f64,
    lat: Latency,
    /// Writes per committed transaction (berth's group commit), when known.
    per_commit: Option<f64>,
    errors: usize,
}

/// Medians over runs of one configuration.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    writes_per_sec: f64,
    p50: Duration,
    p99: Duration,
    per_commit: Option<f64>,
    errors: usize,
    ops: usize,
}

fn summarize(runs: &[Run]) -> Summary {
    let per_commit: Vec<f64> = runs.iter().filter_map(|r| r.per_commit).collect();
    Summary {
        writes_per_sec: median(&runs.iter().map(|r| r.writes_per_sec).collect::<Vec<_>>()),
        p50: berth_bench::median_duration(&runs.iter().map(|r| r.lat.p50).collect::<Vec<_>>()),
        p99: berth_bench::median_duration(&runs.iter().map(|r| r.lat.p99).collect::<Vec<_>>()),
        per_commit: (!per_commit.is_empty()).then(|| median(&per_commit)),
        errors: runs.iter().map(|r| r.errors).sum(),
        ops: runs.iter().map(|r| r.lat.count).sum(),
    }
}

fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// berth's `SqliteStore` with default options on a fresh database.
async fn run_berth(writers: usize, secs: f64, value_size: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir().context("failed to create a temp dir")?;
    let store = SqliteStore::open_async(&dir.path().join("state.db"), SqliteOptions::default())
        .await
        .context("failed to open the SqliteStore")?;
    let value = value(value_size);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("/registry/configmaps/bench/w{w}-{i}");
                let t0 = Instant::now();
                store
                    .create(&key, value.clone())
                    .await
                    .with_context(|| format!("create {key} failed"))?;
                lat.push(t0.elapsed());
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("writer task panicked")??);
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    store.close().await;
    let lat = Latency::of(&mut all);
    Ok(Run {
        writes_per_sec: lat.count as f64 / elapsed.as_secs_f64(),
        lat,
        per_commit: (stats.commits > 0).then(|| stats.writes as f64 / stats.commits as f64),
        errors: 0,
    })
}

fn open_raw(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(60))?;
    Ok(conn)
}

/// Raw SQLite: `writers` threads, each with its own connection, each insert its own
/// `BEGIN IMMEDIATE ... COMMIT` transaction (WAL, `synchronous=FULL`).
fn run_raw(writers: usize, secs: f64, value_size: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir().context("failed to create a temp dir")?;
    let path = dir.path().join("raw.db");
    open_raw(&path)
        .and_then(|c| {
            c.execute_batch("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        })
        .context("failed to create the raw SQLite database")?;
    let value = value(value_size);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let results: Vec<anyhow::Result<(Vec<Duration>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let path = &path;
                let value = &value;
                s.spawn(move || {
                    let mut conn = open_raw(path).context("failed to open raw SQLite")?;
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let key = format!("/registry/configmaps/bench/w{w}-{i}");
                        let t0 = Instant::now();
                        let res = conn
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .and_then(|tx| {
                                tx.execute(
                                    "INSERT INTO kv (key, value) VALUES (?1, ?2)",
                                    rusqlite::params![key, value],
                                )?;
                                tx.commit()
                            });
                        match res {
                            Ok(()) => lat.push(t0.elapsed()),
                            Err(_) => errors += 1,
                        }
                        i += 1;
                    }
                    anyhow::Ok((lat, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("raw writer panicked")))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut all = Vec::new();
    let mut errors = 0;
    for r in results {
        let (lat, e) = r?;
        all.extend(lat);
        errors += e;
    }
    let lat = Latency::of(&mut all);
    Ok(Run {
        writes_per_sec: lat.count as f64 / elapsed.as_secs_f64(),
        lat,
        per_commit: Some(1.0),
        errors,
    })
}

/// An etcd started for the benchmark, killed by PID and its data dir removed on drop.
struct Etcd {
    proc: Proc,
    port: u16,
    put_path: &'static str,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start(bin: &Path) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "{} not found: `apt-get install -y etcd-server` or pass --no-etcd",
                bin.display()
            );
        }
        let dir = tempfile::tempdir().context("failed to create a temp dir")?;
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .context("failed to create the etcd log")?;
        let child = std::process::Command::new(bin)
            .arg("--name")
            .arg("bench")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("bench={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("failed to clone the log handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", bin.display()))?;
        let mut etcd = Etcd {
            proc: Proc::new("etcd", child),
            port: client_port,
            put_path: "/v3/kv/put",
            _dir: dir,
        };
        let started = Instant::now();
        let mut conn = loop {
            if let Ok(c) = EtcdConn::connect(client_port).await {
                break c;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("etcd did not accept connections within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Wait until a put succeeds, and find the gateway's path (etcd 3.4 serves /v3 and
        // /v3beta; older ones only /v3beta).
        loop {
            let mut found = None;
            for path in ["/v3/kv/put", "/v3beta/kv/put"] {
                if let Ok(200) = conn.put(path, b"/bench/probe", b"x").await {
                    found = Some(path);
                    break;
                }
            }
            if let Some(path) = found {
                etcd.put_path = path;
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("etcd did not accept a put within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn = EtcdConn::connect(client_port).await?;
        }
        Ok(etcd)
    }
}

/// One keep-alive HTTP/1.1 connection to etcd's JSON gateway.
struct EtcdConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    port: u16,
}

impl EtcdConn {
    async fn connect(port: u16) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, port })
    }

    /// One put; the HTTP status (the body is read to keep the connection reusable).
    async fn put(&mut self, path: &str, key: &[u8], value: &[u8]) -> anyhow::Result<u16> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64.encode(key),
            b64.encode(value)
        );
        let req = http::Request::post(path)
            .header(http::header::HOST, format!("127.0.0.1:{}", self.port))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        if status == 200 && !body.starts_with(b"{") {
            bail!("unexpected etcd answer: {}", String::from_utf8_lossy(&body));
        }
        Ok(status)
    }
}

async fn run_etcd(
    etcd: &Etcd,
    run: usize,
    writers: usize,
    secs: f64,
    value_size: usize,
) -> anyhow::Result<Run> {
    let value = Arc::new(value(value_size));
    let mut conns = Vec::with_capacity(writers);
    for _ in 0..writers {
        conns.push(EtcdConn::connect(etcd.port).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(writers);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let value = value.clone();
        let path = etcd.put_path;
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = 0u64;
            while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                let key = format!("/registry/configmaps/bench/r{run}-n{writers}-w{w}-{i}");
                let t0 = Instant::now();
                match conn.put(path, key.as_bytes(), &value).await {
                    Ok(200) => lat.push(t0.elapsed()),
                    Ok(_) => errors += 1,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e.context("etcd put failed"));
                    }
                }
                i += 1;
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.context("etcd writer panicked")??;
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed();
    let lat = Latency::of(&mut all);
    Ok(Run {
        writes_per_sec: lat.count as f64 / elapsed.as_secs_f64(),
        lat,
        per_commit: None,
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "store: durable creates of distinct keys, {} B values, {} run(s) x {} s per row, {}",
        args.value_size,
        args.runs,
        args.secs,
        berth_bench::machine()
    );
    println!(
        "{}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    let etcd = if args.no_etcd {
        None
    } else {
        let e = Etcd::start(&args.etcd).await?;
        println!(
            "etcd: {} (pid {}) on 127.0.0.1:{}, gateway {}",
            args.etcd.display(),
            e.proc.pid(),
            e.port,
            e.put_path
        );
        Some(e)
    };

    let n = args.writers.len();
    let mut berth: Vec<Vec<Run>> = vec![Vec::new(); n];
    let mut raw: Vec<Vec<Run>> = vec![Vec::new(); n];
    let mut etcd_runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    for run in 0..args.runs {
        for (i, &w) in args.writers.iter().enumerate() {
            let b = run_berth(w, args.secs, args.value_size).await?;
            eprintln!(
                "  run {run} berth  {w:>3} writers: {:>8} writes/s",
                rate(b.writes_per_sec)
            );
            berth[i].push(b);
            let (secs, size) = (args.secs, args.value_size);
            let r = tokio::task::spawn_blocking(move || run_raw(w, secs, size))
                .await
                .context("raw SQLite run panicked")??;
            eprintln!(
                "  run {run} sqlite {w:>3} writers: {:>8} writes/s",
                rate(r.writes_per_sec)
            );
            raw[i].push(r);
            if let Some(e) = &etcd {
                let r = run_etcd(e, run, w, args.secs, args.value_size).await?;
                eprintln!(
                    "  run {run} etcd   {w:>3} writers: {:>8} writes/s",
                    rate(r.writes_per_sec)
                );
                etcd_runs[i].push(r);
            }
        }
    }
    if let Some(mut e) = etcd {
        e.proc.stop(Duration::from_secs(10))?;
        // Dropping `e` removes its data dir.
    }

    let mut table = Table::new(&[
        "system",
        "writers",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "writes/commit",
        "ops",
        "errors",
    ]);
    let b: Vec<Summary> = berth.iter().map(|r| summarize(r)).collect();
    let s: Vec<Summary> = raw.iter().map(|r| summarize(r)).collect();
    let e: Vec<Option<Summary>> = etcd_runs
        .iter()
        .map(|r| (!r.is_empty()).then(|| summarize(r)))
        .collect();
    let mut add = |name: &str, w: usize, x: &Summary| {
        table.row(vec![
            name.to_string(),
            w.to_string(),
            rate(x.writes_per_sec),
            ms(x.p50),
            ms(x.p99),
            x.per_commit
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            x.ops.to_string(),
            x.errors.to_string(),
        ]);
    };
    for (i, &w) in args.writers.iter().enumerate() {
        add("berth SqliteStore", w, &b[i]);
    }
    for (i, &w) in args.writers.iter().enumerate() {
        let name = if w == 1 {
            "raw SQLite".to_string()
        } else {
            format!("raw SQLite ({w} conns)")
        };
        add(&name, w, &s[i]);
    }
    for (i, &w) in args.writers.iter().enumerate() {
        if let Some(x) = &e[i] {
            add("etcd 3.4 (JSON gateway)", w, x);
        }
    }
    println!();
    println!("{}", table.render());

    // Ratios: berth against etcd and raw SQLite at the same concurrency, and against the
    // single raw SQLite writer (SQLite serializes writers; that is its durable ceiling
    // without batching).
    let raw1 = args
        .writers
        .iter()
        .position(|&w| w == 1)
        .map(|i| s[i].writes_per_sec)
        .unwrap_or(0.0);
    let mut ratios = Table::new(&[
        "writers",
        "berth/etcd",
        "berth/raw SQLite (1 writer)",
        "berth/raw SQLite (same conns)",
        "p50 berth/etcd",
    ]);
    for (i, &w) in args.writers.iter().enumerate() {
        ratios.row(vec![
            w.to_string(),
            e[i].map(|x| ratio(b[i].writes_per_sec, x.writes_per_sec))
                .unwrap_or_else(|| "-".into()),
            ratio(b[i].writes_per_sec, raw1),
            ratio(b[i].writes_per_sec, s[i].writes_per_sec),
            e[i].map(|x| ratio(b[i].p50.as_secs_f64(), x.p50.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{}", ratios.render());
    println!(
        "throughput ratios > 1: berth is faster; p50 ratio < 1: berth answers sooner. Medians of {} run(s).",
        args.runs
    );
    println!(
        "after the runs: {}; load average {}",
        berth_bench::fsync_note(),
        berth_bench::loadavg()
    );
    Ok(())
}
