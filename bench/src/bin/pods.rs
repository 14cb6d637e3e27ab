//! `pods` (root): what running pods costs on berth's node agent, beside the raw parts under it.
//! - Pod start latency: create → `Running` seen by a watch, one pod at a time, busybox image
//!   present; beside a bare `crun run -d` of the same busybox root filesystem (no network, no
//!   API) in the same run, with the ratio.
//! - Per-pod overhead of the container shim (RSS and PSS of every `berth shim` with the pods
//!   running) and the server's RSS idle, with those pods, and after they are deleted.
//! - Image import + unpack time and peak memory (a child process) beside `tar -xzf` of the
//!   same layers, for busybox and a 64 MiB image.
//!
//! Targets (issue 3): start p50 ≤ 150 ms, p99 ≤ 300 ms, ≤ 10× bare crun; shim ≤ 2 MB RSS;
//! server with its node agent idle ≤ 50 MB RSS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{ms, ratio, BerthServer, Latency, Table};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

#[derive(Parser)]
#[command(about = "berth pod start latency, shim overhead, node agent memory, image import")]
struct Args {
    /// Pods started one after another (and bare crun containers).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Seconds of idling before reading the server's memory.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,
    /// Image imports per image (medians).
    #[arg(long, default_value_t = 5)]
    imports: usize,
    /// The OCI runtime berth uses (and the bare runs use): crun or runc.
    #[arg(long, default_value = "crun")]
    runtime: String,
    /// Internal: import and unpack TARBALL into STORE, then exit (run as a child to measure).
    #[arg(long, hide = true, num_args = 2, value_names = ["TARBALL", "STORE"])]
    child_import: Option<Vec<PathBuf>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(paths) = &args.child_import {
        return child_import(&paths[0], &paths[1]);
    }
    if !berth_bench::is_root() {
        bail!("the pods benchmark runs containers: run it as root");
    }
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    println!(
        "pods: berth node agent ({}), {} pod(s), busybox image present; {}",
        args.runtime,
        args.pods,
        berth_bench::machine()
    );
    println!("load average {}\n", berth_bench::loadavg());

    let busybox_tar = tmp.path().join("busybox.tar");
    berth_images::testing::build_busybox_oci_tar(&busybox_tar, "busybox:latest")
        .context("failed to build the busybox image")?;

    let imports = import_bench(&args, tmp.path(), &busybox_tar)?;
    let bare = bare_runtime_starts(&args, tmp.path())?;
    let rt = tokio::runtime::Runtime::new().context("failed to start tokio")?;
    let pods = rt.block_on(pod_bench(&args, tmp.path(), &busybox_tar))?;

    let mut t = Table::new(&["measure", "berth", "bare runtime", "ratio", "target"]);
    t.row(vec![
        "pod start p50 (create → Running watched)".into(),
        ms(pods.start.p50),
        ms(bare.p50),
        ratio(pods.start.p50.as_secs_f64(), bare.p50.as_secs_f64()),
        "≤ 150 ms, ≤ 10x".into(),
    ]);
    t.row(vec![
        "pod start p99".into(),
        ms(pods.start.p99),
        ms(bare.p99),
        ratio(pods.start.p99.as_secs_f64(), bare.p99.as_secs_f64()),
        "≤ 300 ms".into(),
    ]);
    t.row(vec![
        "pod start max".into(),
        ms(pods.start.max),
        ms(bare.max),
        "".into(),
        "".into(),
    ]);
    t.row(vec![
        "all pods deleted → gone from the API and no shim left".into(),
        format!("{:.2} s", pods.delete_all.as_secs_f64()),
        "".into(),
        "".into(),
        "".into(),
    ]);
    println!("\n{}", t.render());
    println!(
        "bare runtime: `{} run -d` of the busybox rootfs unpacked to a directory (`{} spec` \
         defaults, no network), timed to its return; berth: `POST` of the pod → its `Running` \
         status arriving on a watch, one pod at a time.\n",
        args.runtime, args.runtime
    );

    let mb = |kib: u64| format!("{:.1} MB", kib as f64 / 1024.0);
    let mut m = Table::new(&["memory", "value", "target"]);
    m.row(vec![
        "server + node agent idle, no pods (VmRSS)".into(),
        mb(pods.idle_rss_kib),
        "≤ 50 MB".into(),
    ]);
    m.row(vec![
        format!("server + node agent with {} pods (VmRSS)", args.pods),
        mb(pods.loaded_rss_kib),
        "".into(),
    ]);
    m.row(vec![
        "server + node agent idle after deleting them".into(),
        mb(pods.after_rss_kib),
        "".into(),
    ]);
    m.row(vec![
        format!("shim per container, mean of {} (VmRSS)", pods.shims),
        mb(pods.shim_rss_kib),
        "≤ 2 MB".into(),
    ]);
    m.row(vec![
        "shim per container (PSS: shared pages split)".into(),
        mb(pods.shim_pss_kib),
        "".into(),
    ]);
    println!("{}", m.render());

    let mut i = Table::new(&[
        "image",
        "compressed",
        "berth import+unpack",
        "peak RSS",
        "tar -xzf layers",
        "peak RSS",
        "time ratio",
    ]);
    for r in &imports {
        i.row(vec![
            r.name.clone(),
            format!("{:.1} MB", r.bytes as f64 / 1e6),
            ms(r.berth),
            mb(r.berth_rss_kib),
            ms(r.tar),
            mb(r.tar_rss_kib),
            ratio(r.berth.as_secs_f64(), r.tar.as_secs_f64()),
        ]);
    }
    println!("{}", i.render());
    println!(
        "import+unpack: `berth` store code in a child process (digest-verified import, then \
         every layer unpacked); tar: `tar -xzf` of each layer blob into a fresh directory. \
         Medians of {} run(s); peak RSS is the child's ru_maxrss.",
        args.imports
    );
    println!("\nafter the runs: load average {}", berth_bench::loadavg());
    Ok(())
}

/// Runs `cmd` under `/usr/bin/time -f %M`, returning its wall time and peak RSS in KiB.
/// (A child's own rusage is no good here: it inherits this process's high-water mark when
/// spawned from it.)
fn timed_child(cmd: &Command) -> anyhow::Result<(Duration, u64)> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let started = Instant::now();
    let out = timed
        .stdin(Stdio::null())
        .output()
        .context("failed to run /usr/bin/time (Debian package `time`)")?;
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", stderr.trim());
    }
    let kib = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no peak RSS from /usr/bin/time in {stderr:?}"))?;
    Ok((elapsed, kib))
}

/// The hidden child mode: import a tarball into a fresh store and unpack all its layers.
fn child_import(tarball: &Path, store: &Path) -> anyhow::Result<()> {
    let images = berth_images::ImageStore::open(store).context("failed to open the store")?;
    for r in images.import(tarball).context("failed to import")? {
        let image = images
            .resolve(&r.id.to_string())?
            .context("imported image not found")?;
        images.unpack(&image).context("failed to unpack")?;
    }
    Ok(())
}

struct ImportResult {
    name: String,
    bytes: u64,
    berth: Duration,
    berth_rss_kib: u64,
    tar: Duration,
    tar_rss_kib: u64,
}

/// A 64 MiB image: busybox plus a layer of 64 files of 1 MiB of pseudo-random bytes.
fn big_image(out: &Path) -> anyhow::Result<()> {
    let mut image = berth_images::testing::busybox_image()?;
    let mut layer = berth_images::testing::LayerBuilder::new();
    layer.dir("data", 0o755)?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for f in 0..64 {
        let mut data = Vec::with_capacity(1 << 20);
        while data.len() < 1 << 20 {
            // xorshift64: incompressible like real binaries, cheap to make.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        layer.file(&format!("data/blob{f}"), 0o644, &data)?;
    }
    image.layers.push(layer.finish()?);
    image.write_oci(out, Some("bench/big:latest"))?;
    Ok(())
}

fn import_bench(args: &Args, dir: &Path, busybox_tar: &Path) -> anyhow::Result<Vec<ImportResult>> {
    let big_tar = dir.join("big.tar");
    big_image(&big_tar)?;
    let me = std::env::current_exe().context("no current executable")?;
    let mut out = Vec::new();
    for (name, tar) in [
        ("busybox", busybox_tar),
        ("64 MiB (busybox + 64 x 1 MiB)", &big_tar),
    ] {
        let (mut berth, mut berth_rss, mut raw, mut raw_rss) = (vec![], vec![], vec![], vec![]);
        // The layer blobs, for the raw comparison: unpack the OCI layout once.
        let layout = dir.join(format!("layout-{}", out.len()));
        std::fs::create_dir_all(&layout)?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&layout))?;
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .context("no manifest in index.json")?;
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(manifest_digest))?)?;
        let layers: Vec<PathBuf> = manifest["layers"]
            .as_array()
            .context("no layers")?
            .iter()
            .filter_map(|l| l["digest"].as_str().map(blob))
            .collect();
        for i in 0..args.imports {
            let store = dir.join(format!("store-{}-{i}", out.len()));
            let (t, rss) =
                timed_child(Command::new(&me).arg("--child-import").arg(tar).arg(&store))?;
            berth.push(t);
            berth_rss.push(rss as f64);
            std::fs::remove_dir_all(&store)?;
            let target = dir.join(format!("tar-{}-{i}", out.len()));
            let started = Instant::now();
            let mut peak = 0u64;
            for (n, l) in layers.iter().enumerate() {
                let d = target.join(n.to_string());
                std::fs::create_dir_all(&d)?;
                let (_, rss) =
                    timed_child(Command::new("tar").arg("-xzf").arg(l).arg("-C").arg(&d))?;
                peak = peak.max(rss);
            }
            raw.push(started.elapsed());
            raw_rss.push(peak as f64);
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::remove_dir_all(&layout)?;
        out.push(ImportResult {
            name: name.to_string(),
            bytes: std::fs::metadata(tar)?.len(),
            berth: berth_bench::median_duration(&berth),
            berth_rss_kib: berth_bench::median(&berth_rss) as u64,
            tar: berth_bench::median_duration(&raw),
            tar_rss_kib: berth_bench::median(&raw_rss) as u64,
        });
    }
    Ok(out)
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

/// `crun run -d` (or runc) of a busybox bundle, one container at a time, each removed after.
fn bare_runtime_starts(args: &Args, dir: &Path) -> anyhow::Result<Latency> {
    let bundle = dir.join("bare-bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let layer = berth_images::testing::busybox_layer()?;
    let layer_tar = dir.join("busybox-layer.tar");
    std::fs::write(&layer_tar, layer)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&layer_tar)
        .arg("-C")
        .arg(&rootfs))?;
    run(Command::new(&args.runtime).arg("spec").current_dir(&bundle))?;
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", "3600"]);
    spec["linux"]["cgroupsPath"] = "/berth-bench-bare".into();
    std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    let root = dir.join("bare-root");
    let mut samples = Vec::new();
    for i in 0..args.pods {
        let id = format!("berth-bench-bare-{}-{i}", std::process::id());
        let started = Instant::now();
        // The detached container keeps its stdio: give it none, so nothing waits on a pipe.
        let status = Command::new(&args.runtime)
            .arg("--root")
            .arg(&root)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("failed to run {}", args.runtime))?;
        samples.push(started.elapsed());
        if !status.success() {
            bail!("`{} run -d` failed: {status}", args.runtime);
        }
        run(Command::new(&args.runtime)
            .arg("--root")
            .arg(&root)
            .args(["delete", "-f", &id]))?;
    }
    Ok(Latency::of(&mut samples))
}

struct PodResults {
    start: Latency,
    delete_all: Duration,
    idle_rss_kib: u64,
    loaded_rss_kib: u64,
    after_rss_kib: u64,
    shims: usize,
    shim_rss_kib: u64,
    shim_pss_kib: u64,
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

async fn pod_bench(args: &Args, dir: &Path, busybox_tar: &Path) -> anyhow::Result<PodResults> {
    berth_bench::install_crypto();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images"))?;
    std::fs::copy(busybox_tar, data.join("images/busybox.tar"))?;
    let cidr = "10.197.250.0/24";
    let bridge = "btbench0";
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: bridge.into(),
        pod_cidr: cidr.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    let mut server = BerthServer::spawn_with(
        &data,
        &dir.join("server.log"),
        &[
            "--node-name",
            "bench-node",
            "--pod-cidr",
            cidr,
            "--bridge",
            bridge,
            "--container-runtime",
            &args.runtime,
        ],
    )?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let client = berth_bench::kube_client(&server.kubeconfig()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = nodes.get_opt("bench-node").await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let idle_rss_kib = server.rss_kib()?;

    // One watch records when each pod is first seen Running.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let watch = {
        let (running, notify) = (running.clone(), notify.clone());
        let stream = watcher(
            pods.clone(),
            watcher::Config::default().labels("bench=pod-start"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event else {
                    continue;
                };
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                if phase == Some("Running") {
                    if let (Some(name), Ok(mut m)) = (p.metadata.name, running.lock()) {
                        m.entry(name).or_insert_with(Instant::now);
                    }
                    notify.notify_waiters();
                }
            }
        })
    };
    let mut samples = Vec::new();
    for i in 0..args.pods {
        let name = format!("start-{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"bench": "pod-start"}},
            "spec": {
                "nodeName": "bench-node",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox:latest",
                                "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]
            }
        }))?;
        let started = Instant::now();
        pods.create(&PostParams::default(), &pod).await?;
        let deadline = started + Duration::from_secs(60);
        loop {
            let seen = notify.notified();
            if let Some(at) = running.lock().ok().and_then(|m| m.get(&name).copied()) {
                samples.push(at - started);
                break;
            }
            if tokio::time::timeout_at(deadline.into(), seen)
                .await
                .is_err()
            {
                bail!("pod {name} was not Running within 60 s");
            }
        }
    }
    watch.abort();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let loaded_rss_kib = server.rss_kib()?;
    let (shims, shim_rss_kib, shim_pss_kib) = shim_memory(&data)?;

    let started = Instant::now();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=pod-start"),
    )
    .await?;
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels("bench=pod-start"))
            .await?;
        if left.items.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{} pods still there after 120 s", left.items.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Gone from the API; then every container's shim has exited too.
    while shim_memory(&data)?.0 > 0 {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("containers still running 120 s after the delete");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delete_all = started.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let after_rss_kib = server.rss_kib()?;
    server.proc.stop(Duration::from_secs(20))?;
    Ok(PodResults {
        start: Latency::of(&mut samples),
        delete_all,
        idle_rss_kib,
        loaded_rss_kib,
        after_rss_kib,
        shims,
        shim_rss_kib,
        shim_pss_kib,
    })
}

/// The shims of containers under `data`: how many, and their mean VmRSS and Pss in KiB.
fn shim_memory(data: &Path) -> anyhow::Result<(usize, u64, u64)> {
    let needle = data.display().to_string();
    let (mut n, mut rss, mut pss) = (0u64, 0u64, 0u64);
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some("shim")
            || !args.iter().any(|a| a.contains(&needle))
        {
            continue;
        }
        let Ok(r) = berth_bench::rss_kib(pid) else {
            continue;
        };
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let p = rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        n += 1;
        rss += r;
        pss += p;
    }
    Ok((n as usize, rss / n.max(1), pss / n.max(1)))
}
