//! `dns` (root): queries per second answered by a node's cluster DNS server (berth-dns, on
//! the pod bridge's gateway address, port 53) for a ClusterIP Service's name and for a
//! headless Service's name (three ready pods), beside dnsmasq on 127.0.0.1 answering the same
//! names from a hosts file (`--addn-hosts`, authoritative local data, no upstream), in one run
//! with the same load client: several UDP sockets, each with many queries in flight, counting
//! answers (NOERROR with records), wrong answers and timeouts (no answer within 500 ms).
//!
//! Target (issue 6): ≥ 20k queries/s on this 2-core machine.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_bench::{ms, rate, ratio, BerthServer, Latency, Proc, Table};
use clap::Parser;

#[derive(Parser)]
#[command(about = "cluster DNS queries/s: berth-dns beside dnsmasq")]
struct Args {
    /// Seconds per run.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Runs per (server, name); medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// UDP sockets of the load client (a thread each).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Queries in flight per socket.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
}

const NODE: &str = "dns-bench";
const CIDR: &str = "10.184.250.0/24";
const SERVICE_CIDR: &str = "10.184.251.0/24";
const BRIDGE: &str = "btbenchdns0";
const SERVICE_NAME: &str = "web.default.svc.cluster.local";
const HEADLESS_NAME: &str = "db.default.svc.cluster.local";
/// How long a query may go unanswered before it counts as a timeout.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

struct NetworkGuard(berth_net::NetworkConfig);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Err(e) = berth_net::Sandbox::teardown_network(&self.0) {
            eprintln!("network teardown: {e}");
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &format!("berth-{BRIDGE}")])
            .output();
        for _ in 0..3 {
            let _ = Command::new("ip")
                .args(["-4", "route", "del", SERVICE_CIDR])
                .output();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    if uid != 0 {
        bail!("the dns benchmark runs a node with pods: run it as root");
    }
    if !Path::new("/usr/sbin/dnsmasq").exists() {
        bail!("dnsmasq is missing: apt-get install dnsmasq-base (scripts/setup.sh does)");
    }
    let tmp = tempfile::tempdir().context("failed to make a temp dir")?;
    println!(
        "dns: UDP queries/s, {} socket(s) x {} in flight, {} run(s) x {} s; {}",
        args.sockets,
        args.in_flight,
        args.runs,
        args.secs,
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
    let _net = NetworkGuard(berth_net::NetworkConfig {
        bridge: BRIDGE.into(),
        pod_cidr: CIDR.into(),
        plugin_dir: "/usr/lib/cni".into(),
        state_dir: data.clone(),
        mtu: None,
    });
    // Nothing is forwarded in this benchmark; an unused loopback port keeps it that way.
    let upstream = format!("127.0.0.1:{}", berth_bench::free_port()?);
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
            CIDR,
            "--bridge",
            BRIDGE,
            "--service-cidr",
            SERVICE_CIDR,
            "--dns-upstream",
            &upstream,
        ],
    )?;
    server.wait_ready_line(Duration::from_secs(30))?;
    let kubeconfig = server.kubeconfig();
    let result = run(&args, &kubeconfig, tmp.path(), server.proc.pid());
    let _ = kubectl(
        &kubeconfig,
        &["delete", "pods", "--all", "--grace-period=1", "--wait=true"],
    );
    server.proc.stop(Duration::from_secs(20))?;
    result
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    kubectl_stdin(kubeconfig, args, None)
}

fn kubectl_stdin(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run kubectl")?;
    if let (Some(mut s), Some(text)) = (child.stdin.take(), stdin) {
        s.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(args: &Args, kubeconfig: &Path, tmp: &Path, berth_pid: u32) -> anyhow::Result<()> {
    let mut manifest = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{name: http, port: 80}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{name: http, port: 8080}]\n",
    );
    for i in 0..3 {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: db-{i}, labels: {{app: db}}}}\nspec:\n  \
             hostname: db-{i}\n  subdomain: db\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  \
             containers: [{{name: c, image: 'busybox:latest', command: [sleep, '3600']}}]\n"
        ));
    }
    kubectl_stdin(kubeconfig, &["apply", "-f", "-"], Some(&manifest))?;
    let cluster_ip = kubectl(
        kubeconfig,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )?;
    let gateway = berth_net::sandbox::gateway_of(CIDR).context("no gateway")?;
    let berth: SocketAddr = (gateway, 53).into();
    // Ready when the headless name answers all three pods.
    let deadline = Instant::now() + Duration::from_secs(120);
    let pod_ips = loop {
        let out = kubectl(
            kubeconfig,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=db",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[0]}",
            ],
        )?;
        let ips: Vec<String> = out.split_whitespace().map(String::from).collect();
        if ips.len() == 3 && answer_count(berth, HEADLESS_NAME) == Some(3) {
            break ips;
        }
        if Instant::now() > deadline {
            bail!("the headless Service never answered three addresses (endpoints: {out:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // dnsmasq with the same names: one hosts file, nothing else.
    let hosts = tmp.join("hosts");
    let mut lines = format!("{} {SERVICE_NAME}\n", cluster_ip.trim());
    for ip in &pod_ips {
        lines.push_str(&format!("{ip} {HEADLESS_NAME}\n"));
    }
    std::fs::write(&hosts, lines)?;
    let port = berth_bench::free_port()?;
    let child = Command::new("/usr/sbin/dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--local-ttl=5",
            &format!("--port={port}"),
            &format!("--addn-hosts={}", hosts.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start dnsmasq")?;
    let mut dnsmasq_proc = Proc::new("dnsmasq", child);
    let dnsmasq: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answer_count(dnsmasq, HEADLESS_NAME) != Some(3) {
        if Instant::now() > deadline {
            bail!("dnsmasq never answered {HEADLESS_NAME} with three addresses");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "berth-dns on {berth} (berth server pid {berth_pid}); dnsmasq {} on {dnsmasq} (pid {})\n",
        dnsmasq_version(),
        dnsmasq_proc.pid()
    );

    let mut table = Table::new(&[
        "server",
        "name",
        "answers/s",
        "p50 ms",
        "p99 ms",
        "answers",
        "wrong",
        "timeouts",
    ]);
    let mut rates = std::collections::BTreeMap::new();
    for (label, name, expect) in [
        ("ClusterIP", SERVICE_NAME, 1u16),
        ("headless", HEADLESS_NAME, 3),
    ] {
        for (server, addr) in [("berth-dns", berth), ("dnsmasq 127.0.0.1", dnsmasq)] {
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                let r = load(addr, name, expect, args)?;
                eprintln!(
                    "{server} {label}: {:.0}/s, {} timeouts, {} wrong",
                    r.per_sec, r.timeouts, r.wrong
                );
                runs.push(r);
            }
            runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
            let mid = &runs[runs.len() / 2];
            rates.insert((label, server), mid.per_sec);
            table.row(vec![
                server.into(),
                format!("{label} ({name})"),
                rate(mid.per_sec),
                ms(mid.lat.p50),
                ms(mid.lat.p99),
                runs.iter().map(|r| r.lat.count).sum::<usize>().to_string(),
                runs.iter().map(|r| r.wrong).sum::<u64>().to_string(),
                runs.iter().map(|r| r.timeouts).sum::<u64>().to_string(),
            ]);
        }
    }
    dnsmasq_proc.stop(Duration::from_secs(5))?;
    print!("{}", table.render());
    println!();
    let mut ratios = Table::new(&["name", "berth-dns", "dnsmasq", "berth/dnsmasq", "target"]);
    for label in ["ClusterIP", "headless"] {
        let b = rates.get(&(label, "berth-dns")).copied().unwrap_or(0.0);
        let d = rates
            .get(&(label, "dnsmasq 127.0.0.1"))
            .copied()
            .unwrap_or(0.0);
        ratios.row(vec![
            label.into(),
            rate(b),
            rate(d),
            ratio(b, d),
            "≥ 20000/s".into(),
        ]);
    }
    print!("{}", ratios.render());
    println!(
        "\nmedians of {} run(s); answers/s counts NOERROR answers with the expected records. \
         The load client shares the 2 cores with the server.\nafter the runs: load average {}",
        args.runs,
        berth_bench::loadavg()
    );
    Ok(())
}

fn dnsmasq_version() -> String {
    Command::new("/usr/sbin/dnsmasq")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2).map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

/// A query for `name` A with id 0 (the load client patches the id).
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer count of one A query (`None`: no reply or an error code).
fn answer_count(server: SocketAddr, name: &str) -> Option<u16> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.send_to(&query(name), server).ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    (n >= 12 && buf[3] & 0x0f == 0).then(|| u16::from_be_bytes([buf[6], buf[7]]))
}

struct LoadRun {
    per_sec: f64,
    lat: Latency,
    wrong: u64,
    timeouts: u64,
}

/// `args.sockets` threads, each keeping `args.in_flight` queries outstanding on its own
/// socket for `args.secs`; a reply is right when it is NOERROR with `expect` answers.
fn load(server: SocketAddr, name: &str, expect: u16, args: &Args) -> anyhow::Result<LoadRun> {
    let query = query(name);
    let duration = Duration::from_secs_f64(args.secs);
    let in_flight = args.in_flight;
    let started = Instant::now();
    let threads: Vec<_> = (0..args.sockets)
        .map(|_| {
            let query = query.clone();
            std::thread::spawn(move || socket_load(server, &query, expect, in_flight, duration))
        })
        .collect();
    let mut lat = Vec::new();
    let (mut wrong, mut timeouts) = (0, 0);
    for t in threads {
        let (l, w, to) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        lat.extend(l);
        wrong += w;
        timeouts += to;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(LoadRun {
        per_sec: lat.len() as f64 / secs,
        lat: Latency::of(&mut lat),
        wrong,
        timeouts,
    })
}

/// One socket's load: latencies of right answers, wrong answers, timeouts.
fn socket_load(
    server: SocketAddr,
    query: &[u8],
    expect: u16,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(server)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut q = query.to_vec();
    let mut sent: Vec<Option<Instant>> = vec![None; 65536];
    let mut order: VecDeque<(u16, Instant)> = VecDeque::new();
    let mut next_id: u16 = 0;
    let mut lat = Vec::new();
    let (mut wrong, mut timeouts) = (0u64, 0u64);
    let mut send = |q: &mut Vec<u8>,
                    sent: &mut Vec<Option<Instant>>,
                    order: &mut VecDeque<(u16, Instant)>|
     -> anyhow::Result<()> {
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        q[..2].copy_from_slice(&id.to_be_bytes());
        let now = Instant::now();
        sent[usize::from(id)] = Some(now);
        order.push_back((id, now));
        s.send(q)?;
        Ok(())
    };
    let started = Instant::now();
    for _ in 0..in_flight {
        send(&mut q, &mut sent, &mut order)?;
    }
    let mut buf = [0u8; 1500];
    while started.elapsed() < duration {
        match s.recv(&mut buf) {
            Ok(n) if n >= 12 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let Some(t) = sent[usize::from(id)].take() else {
                    continue;
                };
                let answers = u16::from_be_bytes([buf[6], buf[7]]);
                if buf[3] & 0x0f == 0 && answers == expect {
                    lat.push(t.elapsed());
                } else {
                    wrong += 1;
                }
                send(&mut q, &mut sent, &mut order)?;
            }
            _ => {}
        }
        // Expire what waited too long, and send replacements.
        while let Some(&(id, t)) = order.front() {
            if sent[usize::from(id)] != Some(t) {
                order.pop_front();
                continue;
            }
            if t.elapsed() < QUERY_TIMEOUT {
                break;
            }
            order.pop_front();
            sent[usize::from(id)] = None;
            timeouts += 1;
            send(&mut q, &mut sent, &mut order)?;
        }
    }
    Ok((lat, wrong, timeouts))
}
