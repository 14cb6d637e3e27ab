//! `streaming` (root): kubectl's streaming paths through berth beside the raw parts under
//! them, in the same run against the same busybox pod:
//! - `kubectl exec web -- true` round trip (kubectl → API server → node endpoint → `crun
//!   exec`) beside `crun --root <berth's runtime root> exec <container> true`.
//! - `kubectl port-forward` download throughput of a 100 MiB file from busybox httpd beside
//!   the same download straight from the pod IP.
//!
//! Targets (issue 5): exec within 2× crun exec + 20 ms; port-forward ≥ 0.5× direct.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{ms, ratio, BerthServer, Latency, Table};
use clap::Parser;

#[derive(Parser)]
#[command(about = "berth kubectl exec round trip and port-forward throughput")]
struct Args {
    /// Exec round trips (each of kubectl exec and crun exec).
    #[arg(long, default_value_t = 30)]
    execs: usize,
    /// Downloads per path (median throughput).
    #[arg(long, default_value_t = 3)]
    downloads: usize,
    /// MiB served by httpd for the throughput runs.
    #[arg(long, default_value_t = 100)]
    mib: usize,
}

const NODE: &str = "stream-bench";

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
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    if uid != 0 {
        bail!("the streaming benchmark runs containers: run it as root");
    }
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    println!(
        "streaming: kubectl exec and port-forward through berth (crun); {}",
        berth_bench::machine()
    );
    println!("load average {}\n", berth_bench::loadavg());
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("images"))?;
    berth_images::testing::build_busybox_oci_tar(
        &data.join("images/busybox.tar"),
        "busybox:latest",
    )
    .context("failed to build the busybox image")?;
    let cidr = "10.197.251.0/24";
    let bridge = "btbenchst0";
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: bridge.into(),
        pod_cidr: cidr.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    let mut server = BerthServer::spawn_with(
        &data,
        &tmp.path().join("server.log"),
        &[
            "--node-name",
            NODE,
            "--pod-cidr",
            cidr,
            "--bridge",
            bridge,
            "--container-runtime",
            "crun",
        ],
    )?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let kubeconfig = server.kubeconfig();
    let result = run(&args, &data, &kubeconfig);
    let _ = kubectl(
        &kubeconfig,
        &["delete", "pod", "web", "--grace-period=1", "--wait=true"],
    );
    server.proc.stop(Duration::from_secs(20))?;
    result
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .context("failed to run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(args: &Args, data: &Path, kubeconfig: &Path) -> anyhow::Result<()> {
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /www; head -c {} /dev/zero > /www/big; touch /www/ready; exec httpd -f -p 8080 -h /www"]
    readinessProbe: {{exec: {{command: ["test", "-f", "/www/ready"]}}, periodSeconds: 1}}
"#,
        args.mib * 1024 * 1024
    );
    let mut apply = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("failed to run kubectl apply")?;
    apply
        .stdin
        .take()
        .context("no stdin")?
        .write_all(pod.as_bytes())?;
    if !apply.wait()?.success() {
        bail!("kubectl apply failed");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while kubectl(
        kubeconfig,
        &["wait", "--for=condition=Ready", "pod/web", "--timeout=10s"],
    )
    .is_err()
    {
        if Instant::now() > deadline {
            bail!("pod web did not become Ready");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let uid = kubectl(
        kubeconfig,
        &["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"],
    )?;
    let pod_ip = kubectl(
        kubeconfig,
        &["get", "pod", "web", "-o", "jsonpath={.status.podIP}"],
    )?;
    let root = data.join("containers/runtime/crun");
    let container = std::fs::read_dir(data.join("containers/containers"))
        .context("failed to list berth's containers")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with(&format!("{uid}-web-")))
        .context("the pod's container is not in berth's state directory")?;

    // Exec round trips, alternating so both see the same machine.
    let time = |cmd: &mut Command| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            bail!(
                "{cmd:?} failed: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(t.elapsed())
    };
    let kubectl_exec = || {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", kubeconfig)
            .args(["exec", "web", "--", "true"]);
        c
    };
    let crun_exec = || {
        let mut c = Command::new("crun");
        c.arg("--root")
            .arg(&root)
            .args(["exec", &container, "true"]);
        c
    };
    time(&mut kubectl_exec())?;
    time(&mut crun_exec())?;
    let (mut via_kubectl, mut via_crun) = (Vec::new(), Vec::new());
    for _ in 0..args.execs {
        via_kubectl.push(time(&mut kubectl_exec())?);
        via_crun.push(time(&mut crun_exec())?);
    }
    let k = Latency::of(&mut via_kubectl);
    let r = Latency::of(&mut via_crun);

    // Port-forward throughput beside the pod IP.
    let mut pf = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["port-forward", "pod/web", "0:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to run kubectl port-forward")?;
    let mut lines = BufReader::new(pf.stdout.take().context("no stdout")?).lines();
    let local: u16 = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = pf.kill();
            bail!("kubectl port-forward ended early");
        };
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            break rest
                .split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .context("no local port")?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let want = args.mib * 1024 * 1024;
    let (mut forwarded, mut direct) = (Vec::new(), Vec::new());
    let mut failure = None;
    for _ in 0..args.downloads {
        match (
            download(("127.0.0.1", local), want),
            download((pod_ip.as_str(), 8080), want),
        ) {
            (Ok(a), Ok(b)) => {
                forwarded.push(a);
                direct.push(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                failure = Some(e);
                break;
            }
        }
    }
    let _ = pf.kill();
    let _ = pf.wait();
    if let Some(e) = failure {
        return Err(e);
    }
    let fwd = berth_bench::median(&forwarded);
    let dir = berth_bench::median(&direct);

    let mut t = Table::new(&["measure", "berth", "raw", "ratio", "target"]);
    t.row(vec![
        "kubectl exec web -- true, p50 (raw: crun exec)".into(),
        ms(k.p50),
        ms(r.p50),
        ratio(k.p50.as_secs_f64(), r.p50.as_secs_f64()),
        format!("≤ {}", ms(r.p50 * 2 + Duration::from_millis(20))),
    ]);
    t.row(vec![
        "kubectl exec web -- true, p99".into(),
        ms(k.p99),
        ms(r.p99),
        ratio(k.p99.as_secs_f64(), r.p99.as_secs_f64()),
        format!("≤ {}", ms(r.p99 * 2 + Duration::from_millis(20))),
    ]);
    t.row(vec![
        format!("{} MiB download, port-forward (raw: pod IP)", args.mib),
        format!("{fwd:.0} MB/s"),
        format!("{dir:.0} MB/s"),
        ratio(fwd, dir),
        "≥ 0.5x".into(),
    ]);
    println!("{}", t.render());
    println!(
        "{} exec round trips each, alternating; {} downloads each (median), HTTP/1.0 from busybox \
         httpd; port-forward is kubectl's default (SPDY tunnelled in a WebSocket) through the \
         API server to the node's endpoint.",
        args.execs, args.downloads
    );
    Ok(())
}

/// Downloads /big over HTTP/1.0; MB/s.
fn download(addr: (&str, u16), want: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).context("failed to connect")?;
    write!(s, "GET /big HTTP/1.0\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    if total < want {
        bail!("short download from {addr:?}: {total} of {want} bytes");
    }
    Ok(total as f64 / 1e6 / t.elapsed().as_secs_f64())
}
