//! Shared pieces of the berth benchmarks: latency statistics, table printing, free ports,
//! child processes killed by PID, starting a `berth server`, an unverified TLS `/readyz` probe,
//! a `kube` client from the generated kubeconfig and reading a process's resident memory.
//! [`load`]: an HTTP load client and a slow upstream; [`nginx`]: an nginx image from the
//! host's Debian nginx.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod load;
pub mod nginx;

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub count: usize,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place). Empty input gives zeros.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
            count: samples.len(),
        }
    }
}

/// One measured run of an operation: rate, latencies, failed operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub per_sec: f64,
    pub lat: Latency,
    pub errors: usize,
}

/// Medians over runs: rate, p50 and p99; total operations and errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub ops: usize,
    pub errors: usize,
}

impl Summary {
    pub fn of(runs: &[Run]) -> Self {
        Self {
            per_sec: median(&runs.iter().map(|r| r.per_sec).collect::<Vec<_>>()),
            p50: median_duration(&runs.iter().map(|r| r.lat.p50).collect::<Vec<_>>()),
            p99: median_duration(&runs.iter().map(|r| r.lat.p99).collect::<Vec<_>>()),
            ops: runs.iter().map(|r| r.lat.count).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

/// The `q` quantile (nearest rank) of sorted samples; zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of `values` (mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of durations.
pub fn median_duration(values: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(
        &values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
    ))
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A rate with no decimals.
pub fn rate(per_sec: f64) -> String {
    format!("{per_sec:.0}")
}

/// `a / b` as `1.23x`, or `-` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// A text table with right-aligned columns except the first.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown-compatible text.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                if i == 0 {
                    s.push_str(&format!(" {cell:<w$} |"));
                } else {
                    s.push_str(&format!(" {cell:>w$} |"));
                }
            }
            s
        };
        let mut out = line(&self.headers);
        out.push('\n');
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if i == 0 {
                out.push_str(&format!(":{}|", "-".repeat(w + 1)));
            } else {
                out.push_str(&format!("{}:|", "-".repeat(w + 1)));
            }
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("failed to bind a free port")?;
    Ok(listener.local_addr().context("no local address")?.port())
}

/// A child process that is ended by its PID (`kill -TERM PID`, then SIGKILL after a grace
/// period) when [`Proc::stop`] is called or the guard is dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, child: Child) -> Self {
        Self {
            name: name.to_string(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM to the PID and waits up to `grace` for the exit, then SIGKILLs it.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let pid = child.id();
        let started = Instant::now();
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        while started.elapsed() < grace {
            if child.try_wait().ok().flatten().is_some() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!(
            "warning: {} (pid {pid}) did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
        Ok(started.elapsed())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(10));
    }
}

/// The `berth` binary: `$BERTH_BIN`, else `berth` next to this benchmark's executable
/// (both live in `target/release`).
pub fn berth_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("no current executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    let bin = dir.join("berth");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p berth` or set BERTH_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `berth server`.
pub struct BerthServer {
    pub proc: Proc,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// When the process was spawned.
    pub spawned: Instant,
    ready_rx: std::sync::mpsc::Receiver<Instant>,
}

impl BerthServer {
    /// Spawns `berth server` on 127.0.0.1 and a free port with `data_dir`; stderr goes to
    /// `log`. Does not wait for readiness (see [`BerthServer::wait_ready_line`]).
    pub fn spawn(data_dir: &Path, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(data_dir, log, &[])
    }

    /// [`BerthServer::spawn`] with extra `berth server` arguments.
    pub fn spawn_with(data_dir: &Path, log: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = berth_binary()?;
        let port = free_port()?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        let spawned = Instant::now();
        let mut child = Command::new(&bin)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--https-port")
            .arg(port.to_string())
            .arg("--bind-address")
            .arg("127.0.0.1")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("failed to start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("ready") {
                    let _ = tx.send(Instant::now());
                    sent = true;
                }
            }
        });
        Ok(Self {
            proc: Proc::new("berth server", child),
            port,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            spawned,
            ready_rx,
        })
    }

    /// Spawns the server and waits for its "ready" line (at most `timeout`).
    pub fn start(data_dir: &Path, log: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let server = Self::spawn(data_dir, log)?;
        server.wait_ready_line(timeout)?;
        Ok(server)
    }

    /// Waits for the "ready" line on stdout; returns when it was printed.
    pub fn wait_ready_line(&self, timeout: Duration) -> anyhow::Result<Instant> {
        self.ready_rx.recv_timeout(timeout).map_err(|_| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow!(
                "berth server did not print \"ready\" within {timeout:?}; log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Resident memory of the server process.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.proc.pid())
    }
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field_kib(pid, "VmRSS:")
}

/// A `kB` field (`VmRSS:`, `VmHWM:`...) of `/proc/PID/status`.
pub fn status_field_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in {path}"))?;
    line.split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()
        .with_context(|| format!("malformed {field} value in {path}"))
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`
/// (`pid == 0`: this process). Resolution: one clock tick (usually 10 ms).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    // Fields after the parenthesized command name: state is the first, utime the 12th and
    // stime the 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("short {path}"))?
            .parse::<u64>()
            .with_context(|| format!("malformed {path}"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_sec() as f64,
    ))
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks_per_sec() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Installs the ring crypto provider for rustls (once per process).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A `kube` client built from a kubeconfig file.
pub async fn kube_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube::Client::try_from(config).context("failed to build the kube client")
}

/// A `kube` client configuration from a kubeconfig file.
pub async fn kube_config(kubeconfig: &Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read {}", kubeconfig.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("failed to load the kubeconfig")
}

/// A `kube` client like `kube::Client::try_from(config)` but whose TCP connections set
/// `TCP_NODELAY` (kube's default connector leaves Nagle's algorithm on, so a request written
/// in two segments waits for the server's delayed ACK). Same TLS (client certificate) and
/// base URI; without kube's tracing and gzip layers; client-certificate auth only.
pub fn kube_client_nodelay(config: &kube::Config) -> anyhow::Result<kube::Client> {
    use kube::client::ConfigExt;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config
        .rustls_https_connector_with_connector(http)
        .context("failed to build the TLS connector")?;
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    // berth's kubeconfig authenticates with a client certificate (in the TLS config); no
    // header-based auth layer to add.
    if config
        .auth_layer()
        .context("failed to build the auth layer")?
        .is_some()
    {
        bail!("the TCP_NODELAY client supports client-certificate kubeconfigs only");
    }
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// A TLS client configuration that accepts any server certificate (benchmark probes only).
pub fn insecure_tls() -> Arc<rustls::ClientConfig> {
    let config = berth_tls::insecure_client_builder()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth();
    Arc::new(config)
}

/// Like [`insecure_tls`], presenting the client certificate and key in the PEM files.
pub fn insecure_tls_client_auth(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("failed to read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("failed to parse {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("failed to read {}", key.display()))?;
    let config = berth_tls::insecure_client_builder()
        .context("TLS versions")?
        .with_client_auth_cert(certs, key)
        .context("failed to use the client certificate")?;
    Ok(Arc::new(config))
}

/// One `GET path` over TLS (unverified) to 127.0.0.1:`port`; the HTTP status code.
pub async fn https_get_status(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
) -> anyhow::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .context("no HTTP status line")?
        .parse()
        .context("malformed HTTP status")?;
    Ok(status)
}

/// Polls `GET /readyz` every `every` until it answers 200 or `timeout` passes; returns when.
pub async fn poll_readyz(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        if let Ok(200) = https_get_status(tls, port, "/readyz").await {
            return Ok(Instant::now());
        }
        if started.elapsed() > timeout {
            bail!("/readyz did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Latency of appending 1 KiB to a file and `fsync`ing it, `n` times, in a temp dir (where
/// the benchmarks keep their databases). On shared VMs this swings by 40x with other disk
/// traffic, so the benchmarks print it beside their figures.
pub fn fsync_probe(n: usize) -> anyhow::Result<Latency> {
    use std::io::Write;
    let dir = tempfile::tempdir().context("failed to create a temp dir")?;
    let mut f = std::fs::File::create(dir.path().join("probe")).context("failed to create")?;
    let mut lat = Vec::with_capacity(n);
    let block = [b'x'; 1024];
    for _ in 0..n {
        f.write_all(&block).context("failed to write")?;
        let t0 = Instant::now();
        f.sync_all().context("failed to fsync")?;
        lat.push(t0.elapsed());
    }
    Ok(Latency::of(&mut lat))
}

/// `fsync p50 X ms, p99 Y ms` of a short probe (or why it failed).
pub fn fsync_note() -> String {
    match fsync_probe(100) {
        Ok(l) => format!("disk fsync p50 {} ms, p99 {} ms", ms(l.p50), ms(l.p99)),
        Err(e) => format!("disk fsync probe failed: {e:#}"),
    }
}

/// Load average (1, 5, 15 min) from `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Machine description for the report: CPU count and model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores, {model}")
}

/// Whether this process runs as root (the benchmarks that run pods need it).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Waits up to 30 s for Node `name` to report `Ready=True`.
pub async fn wait_node_ready(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = nodes.get_opt(name).await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {name} did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&mut v);
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(rate(1234567.4), "1234567");
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[test]
    fn table_renders_aligned() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["x".into(), "1".into()]);
        let s = t.render();
        assert!(s.contains("| a |"));
        assert!(s.contains("| x |  1 |"));
    }
}
