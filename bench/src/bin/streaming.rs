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
    let kubelet_port = berth_bench::free_port()?.to_string();
    let mut server = BerthServer::spawn_with(
        &data,
        &tmp.path().join("server.log"),
        &[
            "--kubelet-port",
            &kubelet_port,
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
    let ports = Ports {
        api: server.port,
        kubelet: kubelet_port.parse()?,
        server_pid: server.proc.pid(),
    };
    let result = run(&args, &data, &kubeconfig, ports);
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

/// The server's API port, its node endpoint's port and its pid.
#[derive(Clone, Copy)]
struct Ports {
    api: u16,
    kubelet: u16,
    server_pid: u32,
}

fn run(args: &Args, data: &Path, kubeconfig: &Path, ports: Ports) -> anyhow::Result<()> {
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
    let kubectl_spdy_exec = || {
        let mut c = kubectl_exec();
        c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        c
    };
    let kubectl_get = || {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", kubeconfig).args(["get", "pod", "web"]);
        c
    };
    let kubectl_version = || {
        let mut c = Command::new("kubectl");
        c.args(["version", "--client"]);
        c
    };
    // The same exec done by hand (no kubectl): through the API server, and straight to the
    // node's endpoint with the API server's client certificate.
    let pki = data.join("pki");
    let admin =
        berth_bench::insecure_tls_client_auth(&pki.join("admin.crt"), &pki.join("admin.key"))?;
    let kubelet_client = berth_bench::insecure_tls_client_auth(
        &pki.join("apiserver-kubelet-client.crt"),
        &pki.join("apiserver-kubelet-client.key"),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let api_path = "/api/v1/namespaces/default/pods/web/exec?command=true&container=web&stderr=true&stdout=true";
    let node_path = "/exec/default/web/web?command=true&container=web&stderr=true&stdout=true";
    let via_api = || rt.block_on(raw_exec(&admin, ports.api, api_path));
    let via_node = || rt.block_on(raw_exec(&kubelet_client, ports.kubelet, node_path));

    time(&mut kubectl_exec())?;
    time(&mut crun_exec())?;
    let spdy_works = match time(&mut kubectl_spdy_exec()) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SPDY exec not measured: {e:#}");
            false
        }
    };
    via_api()?;
    via_node()?;
    let (mut via_kubectl, mut via_crun, mut via_spdy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut get, mut version) = (Vec::new(), Vec::new());
    let (mut api_phases, mut node_phases) = (Vec::new(), Vec::new());
    for _ in 0..args.execs {
        via_kubectl.push(time(&mut kubectl_exec())?);
        via_crun.push(time(&mut crun_exec())?);
        if spdy_works {
            via_spdy.push(time(&mut kubectl_spdy_exec())?);
        }
        get.push(time(&mut kubectl_get())?);
        version.push(time(&mut kubectl_version())?);
        api_phases.push(via_api()?);
        node_phases.push(via_node()?);
    }
    let k = Latency::of(&mut via_kubectl);
    let r = Latency::of(&mut via_crun);
    let spdy = Latency::of(&mut via_spdy);
    let get = Latency::of(&mut get);
    let version = Latency::of(&mut version);
    let phase = |v: &[ExecPhases], f: fn(&ExecPhases) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(f).collect();
        Latency::of(&mut d)
    };
    let raw_api = phase(&api_phases, |p| p.closed);
    let raw_node = phase(&node_phases, |p| p.closed);

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
    // CPU seconds kubectl and the server spend on the forwarded downloads (who is the limit).
    let (mut kubectl_cpu, mut server_cpu, mut forwarded_secs) =
        (Duration::ZERO, Duration::ZERO, 0.0);
    for _ in 0..args.downloads {
        let cpu = || -> anyhow::Result<(Duration, Duration)> {
            Ok((
                berth_bench::cpu_time(pf.id())?,
                berth_bench::cpu_time(ports.server_pid)?,
            ))
        };
        let before = cpu()?;
        let a = download(("127.0.0.1", local), want);
        let after = cpu()?;
        kubectl_cpu += after.0.saturating_sub(before.0);
        server_cpu += after.1.saturating_sub(before.1);
        match (a, download((pod_ip.as_str(), 8080), want)) {
            (Ok(a), Ok(b)) => {
                forwarded_secs += want as f64 / 1e6 / a;
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

    let target = |raw: Duration| format!("≤ {}", ms(raw * 2 + Duration::from_millis(20)));
    let mut t = Table::new(&["measure", "berth", "raw", "ratio", "target"]);
    let mut exec_row = |what: &str, l: Latency| {
        t.row(vec![
            format!("{what}, p50 (raw: crun exec)"),
            ms(l.p50),
            ms(r.p50),
            ratio(l.p50.as_secs_f64(), r.p50.as_secs_f64()),
            target(r.p50),
        ]);
        t.row(vec![
            format!("{what}, p99"),
            ms(l.p99),
            ms(r.p99),
            ratio(l.p99.as_secs_f64(), r.p99.as_secs_f64()),
            target(r.p99),
        ]);
    };
    exec_row("kubectl exec web -- true", k);
    if spdy_works {
        exec_row("same, SPDY (KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false)", spdy);
    }
    exec_row(
        "raw WebSocket exec via the API server (no kubectl)",
        raw_api,
    );
    exec_row("raw WebSocket exec straight to the node endpoint", raw_node);
    t.row(vec![
        format!("{} MiB download, port-forward (raw: pod IP)", args.mib),
        format!("{fwd:.0} MB/s"),
        format!("{dir:.0} MB/s"),
        ratio(fwd, dir),
        "≥ 0.5x".into(),
    ]);
    println!("{}", t.render());

    // Where an exec's time goes.
    let mut b = Table::new(&["exec round trip, p50", "ms"]);
    b.row(vec![
        "kubectl version --client (kubectl's own start)".into(),
        ms(version.p50),
    ]);
    b.row(vec![
        "kubectl get pod web (start + one GET)".into(),
        ms(get.p50),
    ]);
    b.row(vec!["kubectl exec web -- true".into(), ms(k.p50)]);
    b.row(vec![
        "  of which beyond kubectl get pod".into(),
        ms(k.p50.saturating_sub(get.p50)),
    ]);
    for (name, v) in [
        ("via the API server", &api_phases),
        ("straight to the node", &node_phases),
    ] {
        let c = phase(v, |p| p.connected).p50;
        let u = phase(v, |p| p.upgraded).p50;
        let st = phase(v, |p| p.status).p50;
        let cl = phase(v, |p| p.closed).p50;
        b.row(vec![format!("raw exec {name}: TCP + TLS handshake"), ms(c)]);
        b.row(vec![
            format!("raw exec {name}: + request → 101 upgrade"),
            ms(u.saturating_sub(c)),
        ]);
        b.row(vec![
            format!("raw exec {name}: + 101 → exit status"),
            ms(st.saturating_sub(u)),
        ]);
        b.row(vec![
            format!("raw exec {name}: + status → close"),
            ms(cl.saturating_sub(st)),
        ]);
        b.row(vec![format!("raw exec {name}: total"), ms(cl)]);
    }
    b.row(vec!["crun exec <container> true".into(), ms(r.p50)]);
    println!("{}", b.render());
    println!(
        "port-forward downloads: {forwarded_secs:.2} s in all; CPU meanwhile: kubectl \
         port-forward {:.2} s, berth server (API server + node) {:.2} s (2 cores).",
        kubectl_cpu.as_secs_f64(),
        server_cpu.as_secs_f64()
    );
    // Each process's own ceiling: the rate it could carry with a core to itself.
    let forwarded_mb = (want * forwarded.len()) as f64 / 1e6;
    let ceiling = |cpu: Duration| {
        let ms_per_mb = cpu.as_secs_f64() * 1e3 / forwarded_mb;
        format!(
            "{ms_per_mb:.2} ms of CPU per MB → at most {:.0} MB/s",
            1e3 / ms_per_mb
        )
    };
    println!(
        "per MB forwarded: kubectl {}; berth {} (a core each; direct was {dir:.0} MB/s).\n",
        ceiling(kubectl_cpu),
        ceiling(server_cpu)
    );
    println!(
        "{} exec round trips each, interleaved; {} downloads each (median), HTTP/1.0 from busybox \
         httpd; port-forward is kubectl's default (SPDY tunnelled in a WebSocket) through the \
         API server to the node's endpoint (in memory: the node runs in the server's \
         process). Raw execs: a hand-written WebSocket client on a fresh TLS connection per \
         exec. load average after: {}",
        args.execs,
        args.downloads,
        berth_bench::loadavg()
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

/// When each phase of one raw exec ended, from its start.
#[derive(Clone, Copy, Default)]
struct ExecPhases {
    /// TCP connected and TLS handshake done.
    connected: Duration,
    /// The `101 Switching Protocols` read.
    upgraded: Duration,
    /// The final status on the error channel read.
    status: Duration,
    /// The server's close frame read (what a client waits for to exit).
    closed: Duration,
}

/// One `exec` over the WebSocket remote command protocol (`v5.channel.k8s.io`) done by hand
/// on a fresh TLS connection, as kubectl does it but without kubectl's own start: `path` is
/// the request path on 127.0.0.1:`port`. Fails unless the status is Success.
async fn raw_exec(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
) -> anyhow::Result<ExecPhases> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let mut phases = ExecPhases::default();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    phases.connected = start.elapsed();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed before answering the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        bail!("no upgrade: {head}");
    }
    phases.upgraded = start.elapsed();
    buf.drain(..head_end);
    let mut status = None;
    loop {
        // A server frame: FIN+opcode, unmasked length (7 bits, or 16/64 more), payload.
        let frame = if buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (usize::try_from(u64::from_be_bytes(b))?, 10)
                }
                126 | 127 => (usize::MAX, 0),
                n => (n as usize, 2),
            };
            (len != usize::MAX && buf.len() >= at + len).then(|| {
                let payload = buf[at..at + len].to_vec();
                let opcode = buf[0] & 0x0f;
                buf.drain(..at + len);
                (opcode, payload)
            })
        } else {
            None
        };
        match frame {
            Some((2, payload)) if payload.first() == Some(&3) => {
                status = Some(String::from_utf8_lossy(&payload[1..]).into_owned());
                phases.status = start.elapsed();
            }
            Some((8, _)) => {
                phases.closed = start.elapsed();
                // Answer the close (masked, as a client must) and go.
                let _ = s.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await;
                let _ = s.shutdown().await;
                break;
            }
            Some(_) => {}
            None => {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    phases.closed = start.elapsed();
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    match status {
        Some(s) if s.contains("\"Success\"") => Ok(phases),
        Some(s) => bail!("exec failed: {s}"),
        None => bail!("exec ended without a status"),
    }
}
