//! Container probes, as upstream's prober: each probe (startup, readiness, liveness) of a
//! running container has a worker on its own schedule (`initialDelaySeconds`,
//! `periodSeconds`, `timeoutSeconds`, `successThreshold`, `failureThreshold`) running exec,
//! tcpSocket or httpGet checks. Every failed check records an `Unhealthy` event
//! ("Readiness probe failed: ..."). Until the startup probe succeeds the others do not run
//! and the container is not `started`; a container that fails its startup or liveness probe
//! `failureThreshold` times is killed (`Killing` event, preStop hook, stop signal) and
//! restarted per the pod's restart policy. A worker whose verdict changes wakes the pod's
//! sync at once, so readiness reaches the pod's status without waiting for a resync.
//!
//! Results live in memory, as upstream's: a restarted agent probes again from scratch, except
//! that a container the API already shows as started stays started.

use crate::pods::{blocking, PodRuntime};
use berth_runtime::ContainerError;
use chrono::{DateTime, Utc};
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most of a command's output or an HTTP body kept for a message (upstream reads 10 KiB
/// of probe output; an Event's message is kept to 1 KiB).
pub(crate) const MAX_MESSAGE: usize = 1024;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`: gates the others; failing it restarts the container.
    Startup,
    /// `readinessProbe`: whether the container is ready for traffic.
    Readiness,
    /// `livenessProbe`: failing it restarts the container.
    Liveness,
}

impl ProbeKind {
    /// The probe's name as the kubelet writes it in events.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Failed, with what the check said (command output, status code, connection error).
    Failure(String),
    /// The check itself could not run (e.g. the runtime could not exec): as upstream, the
    /// result is thrown away and counts neither way.
    Errored(String),
}

/// What the probes decided about one running container.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    /// The startup probe succeeded (or there is none).
    started: bool,
    /// The readiness probe succeeded `successThreshold` times (or there is none).
    readiness: bool,
}

struct Entry {
    pod_uid: String,
    container: String,
    verdict: Arc<Mutex<Verdict>>,
    workers: Vec<tokio::task::AbortHandle>,
}

/// The probe workers of the node's running containers and their verdicts.
pub struct ProbeManager {
    runtime: OnceLock<Weak<PodRuntime>>,
    /// By container runtime id (one per attempt).
    entries: Mutex<HashMap<String, Entry>>,
    wake_tx: mpsc::UnboundedSender<ObjectRef<Pod>>,
    wake_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<Pod>>>>,
}

impl Default for ProbeManager {
    fn default() -> Self {
        let (wake_tx, wake_rx) = mpsc::unbounded();
        Self {
            runtime: OnceLock::new(),
            entries: Mutex::new(HashMap::new()),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
        }
    }
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("ProbeManager")
            .field("containers", &n)
            .finish()
    }
}

/// Whether the pod's status (from the API) already shows container `name` as `id` started.
fn started_before(pod: &Pod, name: &str, id: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .is_some_and(|c| {
            c.started == Some(true)
                && c.container_id
                    .as_deref()
                    .is_some_and(|cid| cid.rsplit("://").next() == Some(id))
        })
}

impl ProbeManager {
    /// Lets workers reach the pod runtime (called once it is shared).
    pub(crate) fn attach(&self, runtime: &Arc<PodRuntime>) {
        let _ = self.runtime.set(Arc::downgrade(runtime));
    }

    /// The pods whose probe verdicts changed, for the pod worker to sync (once).
    pub(crate) fn wakeups(&self) -> mpsc::UnboundedReceiver<ObjectRef<Pod>> {
        match self.wake_rx.lock().ok().and_then(|mut r| r.take()) {
            Some(rx) => rx,
            None => mpsc::unbounded().1,
        }
    }

    fn wake(&self, pod: &Pod) {
        let _ = self.wake_tx.unbounded_send(ObjectRef::from_obj(pod));
    }

    /// `(started, ready)` of running container `id` (attempt of `c` in `pod`), starting its
    /// probe workers the first time it is seen.
    pub(crate) fn observe(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        started_at: &str,
        pod_ip: &str,
    ) -> (bool, bool) {
        let Ok(mut entries) = self.entries.lock() else {
            return (true, c.readiness_probe.is_none());
        };
        if let Some(e) = entries.get(id) {
            let v = e.verdict.lock().map(|v| *v).unwrap_or_default();
            return (v.started, v.started && v.readiness);
        }
        let verdict = Verdict {
            started: c.startup_probe.is_none() || started_before(pod, &c.name, id),
            readiness: c.readiness_probe.is_none(),
        };
        let uid = pod.uid().unwrap_or_default();
        // An older attempt of the same container is done with.
        entries.retain(|_, e| {
            let old = e.pod_uid == uid && e.container == c.name;
            if old {
                e.workers.iter().for_each(|w| w.abort());
            }
            !old
        });
        let shared = Arc::new(Mutex::new(verdict));
        let mut workers = Vec::new();
        if let Some(runtime) = self.runtime.get() {
            let started_at = DateTime::parse_from_rfc3339(started_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now());
            let pod = Arc::new(pod.clone());
            for (kind, probe) in [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
            ] {
                let Some(probe) = probe.clone() else {
                    continue;
                };
                let worker = Worker {
                    kind,
                    probe,
                    pod: pod.clone(),
                    container: c.clone(),
                    id: id.to_string(),
                    started_at,
                    pod_ip: pod_ip.to_string(),
                    verdict: shared.clone(),
                };
                workers.push(tokio::spawn(worker.run(runtime.clone())).abort_handle());
            }
        }
        entries.insert(
            id.to_string(),
            Entry {
                pod_uid: uid,
                container: c.name.clone(),
                verdict: shared,
                workers,
            },
        );
        (verdict.started, verdict.started && verdict.readiness)
    }

    /// Stops probing container `id` (it stopped, or is being killed).
    pub(crate) fn forget_container(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(e) = entries.remove(id) {
                e.workers.iter().for_each(|w| w.abort());
            }
        }
    }

    /// Stops probing the containers of pod `uid` (it is being deleted).
    pub(crate) fn forget_pod(&self, uid: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| {
                let gone = e.pod_uid == uid;
                if gone {
                    e.workers.iter().for_each(|w| w.abort());
                }
                !gone
            });
        }
    }
}

/// One probe of one running container.
struct Worker {
    kind: ProbeKind,
    probe: Probe,
    pod: Arc<Pod>,
    container: Container,
    id: String,
    started_at: DateTime<Utc>,
    pod_ip: String,
    verdict: Arc<Mutex<Verdict>>,
}

impl Worker {
    fn seconds(v: Option<i32>, default: i32) -> u64 {
        v.unwrap_or(default).max(1) as u64
    }

    async fn run(self, runtime: Weak<PodRuntime>) {
        let p = &self.probe;
        let period = Duration::from_secs(Self::seconds(p.period_seconds, 10));
        let success_threshold = Self::seconds(p.success_threshold, 1) as u32;
        let failure_threshold = Self::seconds(p.failure_threshold, 3) as u32;
        let initial_delay =
            chrono::Duration::seconds(i64::from(p.initial_delay_seconds.unwrap_or(0).max(0)));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Consecutive results that agree, and what they are.
        let (mut last, mut run) = (None::<bool>, 0u32);
        loop {
            tick.tick().await;
            let Some(rt) = runtime.upgrade() else {
                return;
            };
            let containers = rt.containers.clone();
            let id = self.id.clone();
            let running = matches!(
                blocking(move || containers.status(&id)).await,
                Ok(Ok(berth_runtime::ContainerStatus::Running { .. }))
            );
            if !running {
                rt.prober.forget_container(&self.id);
                rt.prober.wake(&self.pod);
                return;
            }
            let started = self.verdict.lock().map(|v| v.started).unwrap_or(false);
            match self.kind {
                // Done: the worker stays only to notice the container stopping.
                ProbeKind::Startup if started => continue,
                ProbeKind::Readiness | ProbeKind::Liveness if !started => continue,
                _ => {}
            }
            if Utc::now() < self.started_at + initial_delay {
                continue;
            }
            let outcome = rt
                .run_probe(&self.container, p, &self.id, &self.pod_ip)
                .await;
            let ok = match &outcome {
                Outcome::Success => true,
                Outcome::Failure(output) => {
                    let message = truncate(&format!("{} probe failed: {output}", self.kind.name()));
                    rt.record(
                        &self.pod,
                        &self.container.name,
                        "Warning",
                        "Unhealthy",
                        &message,
                    )
                    .await;
                    false
                }
                Outcome::Errored(error) => {
                    let message = truncate(&format!(
                        "{} probe errored and resulted in unknown state: {error}",
                        self.kind.name()
                    ));
                    rt.record(
                        &self.pod,
                        &self.container.name,
                        "Warning",
                        "Unhealthy",
                        &message,
                    )
                    .await;
                    continue;
                }
            };
            run = if last == Some(ok) { run + 1 } else { 1 };
            last = Some(ok);
            if run
                < if ok {
                    success_threshold
                } else {
                    failure_threshold
                }
            {
                continue;
            }
            match (self.kind, ok) {
                (ProbeKind::Readiness, ok) => {
                    let changed = self
                        .verdict
                        .lock()
                        .map(|mut v| std::mem::replace(&mut v.readiness, ok) != ok)
                        .unwrap_or(false);
                    if changed {
                        rt.prober.wake(&self.pod);
                    }
                }
                (ProbeKind::Startup, true) => {
                    if let Ok(mut v) = self.verdict.lock() {
                        v.started = true;
                    }
                    rt.prober.wake(&self.pod);
                }
                (ProbeKind::Liveness, true) => {}
                (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                    self.restart(&rt).await;
                    return;
                }
            }
        }
    }

    /// Kills the container for a failed liveness or startup probe; the pod's sync restarts
    /// it per the restart policy.
    async fn restart(&self, rt: &PodRuntime) {
        let name = &self.container.name;
        let which = self.kind.name().to_lowercase();
        let restarts = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            != Some("Never");
        let message = if restarts {
            format!("Container {name} failed {which} probe, will be restarted")
        } else {
            format!("Container {name} failed {which} probe")
        };
        tracing::info!(pod = %self.pod.name_any(), container = %name, "{message}");
        // The probe's own grace period wins over the pod's.
        let grace = self.probe.termination_grace_period_seconds.or_else(|| {
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        });
        let grace = Duration::from_secs(grace.unwrap_or(30).max(0) as u64);
        rt.kill_container(
            &self.pod,
            &self.container,
            &self.id,
            &self.pod_ip,
            grace,
            Some(&message),
        )
        .await;
        rt.prober.wake(&self.pod);
        rt.prober.forget_container(&self.id);
    }
}

/// `s` cut to [`MAX_MESSAGE`] bytes (on a character boundary).
pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A probe's or hook's port: a number, or the name of one of the container's ports.
pub(crate) fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(i) => u16::try_from(*i)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {i}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name))
        }
    }
}

/// The command of an exec probe or hook with `$(VAR)` references to the container's plain
/// `env` values expanded (as upstream: values from sources are not known here).
pub(crate) fn exec_command(c: &Container, command: &[String]) -> Vec<String> {
    let env: HashMap<String, String> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    command
        .iter()
        .map(|a| crate::spec::expand(a, &env))
        .collect()
}

/// How a dial failed, in the words of Go's net package (as the kubelet reports it).
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => "connect: no route to host".to_string(),
            Some(libc::ENETUNREACH) => "connect: network is unreachable".to_string(),
            _ => e.to_string(),
        },
    };
    format!("dial tcp {addr}: {why}")
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens a TCP connection to `host:port` within `timeout`.
async fn dial(host: &str, port: u16, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    let addr = host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(dial_error(&addr, &e)),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// An HTTP GET as probes and hooks send it.
pub(crate) struct HttpGet {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Request headers; `Host`, `User-Agent` and `Accept` given here replace the defaults.
    pub headers: Vec<(String, String)>,
    /// `User-Agent` unless a header sets it: `kube-probe/1.33`, `kube-lifecycle/1.33`.
    pub user_agent: &'static str,
}

impl HttpGet {
    /// The request of an httpGet action of container `c` (host defaults to `pod_ip`).
    pub(crate) fn from_action(
        c: &Container,
        h: &HTTPGetAction,
        pod_ip: &str,
        user_agent: &'static str,
    ) -> Result<Self, String> {
        let mut path = h.path.clone().unwrap_or_default();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Ok(Self {
            https: h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https")),
            host: h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(c, &h.port)?,
            path,
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|hd| (hd.name.clone(), hd.value.clone()))
                .collect(),
            user_agent,
        })
    }

    /// The URL, for messages.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!(
            "{scheme}://{}{}",
            host_port(&self.host, self.port),
            self.path
        )
    }

    fn request(&self) -> String {
        let mut headers: Vec<(String, String)> = vec![
            ("Host".into(), host_port(&self.host, self.port)),
            ("User-Agent".into(), self.user_agent.into()),
            ("Accept".into(), "*/*".into()),
        ];
        for (name, value) in &self.headers {
            if let Some(h) = headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                h.1 = value.clone();
            } else {
                headers.push((name.clone(), value.clone()));
            }
        }
        let mut req = format!("GET {} HTTP/1.1\r\n", self.path);
        for (name, value) in headers {
            // Header values cannot carry line breaks into the request.
            let value = value.replace(['\r', '\n'], " ");
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        req
    }

    /// Sends the request and returns the response's status code, or the error in Go's
    /// words (`Get "http://...": dial tcp ...: connect: connection refused`).
    pub(crate) async fn send(&self, timeout: Duration) -> Result<u16, String> {
        let url = self.url();
        let get = async {
            let tcp = dial(&self.host, self.port, timeout).await?;
            if self.https {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| e.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(insecure_tls_config()?)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                self.exchange(tls).await
            } else {
                self.exchange(tcp).await
            }
        };
        match tokio::time::timeout(timeout, get).await {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
            Err(_) => Err(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        }
    }

    async fn exchange(&self, mut s: impl AsyncRead + AsyncWrite + Unpin) -> Result<u16, String> {
        s.write_all(self.request().as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF".into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed HTTP response {:?}", truncate(line.trim())))
    }
}

/// TLS without certificate verification, as upstream's probes and hooks do over https.
fn insecure_tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let config = berth_tls::insecure_client_builder()
                .map_err(|e| format!("failed to set up TLS: {e}"))?
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

impl PodRuntime {
    /// Runs one check of probe `p` against container `id` of `c`.
    pub(crate) async fn run_probe(
        &self,
        c: &Container,
        p: &Probe,
        id: &str,
        pod_ip: &str,
    ) -> Outcome {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        if let Some(e) = &p.exec {
            let args = exec_command(c, e.command.as_deref().unwrap_or_default());
            let containers = self.containers.clone();
            let id = id.to_string();
            let a = args.clone();
            return match blocking(move || containers.exec_output(&id, &a, timeout)).await {
                Ok(Ok(out)) => {
                    if out.exit_code == 0 {
                        Outcome::Success
                    } else {
                        let mut output = out.stdout;
                        output.extend_from_slice(&out.stderr);
                        Outcome::Failure(truncate(&String::from_utf8_lossy(&output)))
                    }
                }
                Ok(Err(ContainerError::ExecTimedOut { .. })) => {
                    Outcome::Failure(format!("command {:?} timed out", args.join(" ")))
                }
                Ok(Err(e)) => Outcome::Errored(e.to_string()),
                Err(e) => Outcome::Errored(e),
            };
        }
        if let Some(t) = &p.tcp_socket {
            let host = t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            return match resolve_port(c, &t.port) {
                Err(e) => Outcome::Errored(e),
                Ok(port) => match dial(&host, port, timeout).await {
                    Ok(_) => Outcome::Success,
                    Err(e) => Outcome::Failure(e),
                },
            };
        }
        if let Some(h) = &p.http_get {
            let get = match HttpGet::from_action(c, h, pod_ip, "kube-probe/1.33") {
                Ok(g) => g,
                Err(e) => return Outcome::Errored(e),
            };
            return match get.send(timeout).await {
                Ok(code) if (200..400).contains(&code) => Outcome::Success,
                Ok(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
                Err(e) => Outcome::Failure(e),
            };
        }
        if p.grpc.is_some() {
            return Outcome::Errored("gRPC probes are not supported by this node yet".into());
        }
        Outcome::Errored("missing probe handler".into())
    }

    /// Records an Event about container `container` of `pod`.
    pub(crate) async fn record(
        &self,
        pod: &Pod,
        container: &str,
        kind: &str,
        reason: &str,
        message: &str,
    ) {
        crate::events::record(
            &self.client,
            &self.node_name,
            pod,
            container,
            kind,
            reason,
            message,
        )
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, HTTPHeader};

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "FILE".into(),
                    value: Some("/tmp/ready".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "FROM".into(),
                    value_from: Some(Default::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn ports_commands_and_messages() {
        let c = container();
        assert_eq!(resolve_port(&c, &IntOrString::Int(81)), Ok(81));
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Ok(8080)
        );
        assert!(resolve_port(&c, &IntOrString::String("nope".into())).is_err());
        assert!(resolve_port(&c, &IntOrString::Int(0)).is_err());
        assert_eq!(
            exec_command(
                &c,
                &[
                    "test".into(),
                    "-f".into(),
                    "$(FILE)".into(),
                    "$(FROM)".into()
                ]
            ),
            vec!["test", "-f", "/tmp/ready", "$(FROM)"]
        );
        let long = "é".repeat(MAX_MESSAGE);
        let t = truncate(&long);
        assert!(t.len() <= MAX_MESSAGE + 3 && t.ends_with("..."));
        assert_eq!(truncate("short"), "short");
        assert_eq!(
            dial_error(
                "10.0.0.1:80",
                &std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
            ),
            "dial tcp 10.0.0.1:80: connect: connection refused"
        );
    }

    #[test]
    fn http_requests() {
        let c = container();
        let action = HTTPGetAction {
            path: Some("healthz?x=1".into()),
            port: IntOrString::String("http".into()),
            http_headers: Some(vec![
                HTTPHeader {
                    name: "host".into(),
                    value: "example.test".into(),
                },
                HTTPHeader {
                    name: "X-Probe".into(),
                    value: "a\r\nb".into(),
                },
            ]),
            ..Default::default()
        };
        let get = HttpGet::from_action(&c, &action, "10.1.2.3", "kube-probe/1.33").unwrap();
        assert_eq!(get.url(), "http://10.1.2.3:8080/healthz?x=1");
        let req = get.request();
        assert!(req.starts_with("GET /healthz?x=1 HTTP/1.1\r\nHost: example.test\r\n"));
        assert!(req.contains("User-Agent: kube-probe/1.33\r\n"));
        assert!(req.contains("X-Probe: a  b\r\n"));
        assert!(req.ends_with("Connection: close\r\n\r\n"));
        let tls = HTTPGetAction {
            scheme: Some("HTTPS".into()),
            host: Some("fd00::1".into()),
            port: IntOrString::Int(443),
            ..Default::default()
        };
        let get = HttpGet::from_action(&c, &tls, "10.1.2.3", "kube-lifecycle/1.33").unwrap();
        assert_eq!(get.url(), "https://[fd00::1]:443/");
        assert!(insecure_tls_config().is_ok());
    }

    #[tokio::test]
    async fn http_status_and_errors() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in [200, 500] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let get = |port| HttpGet {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
            user_agent: "kube-probe/1.33",
        };
        let t = Duration::from_secs(2);
        assert_eq!(get(port).send(t).await, Ok(200));
        assert_eq!(get(port).send(t).await, Ok(500));
        let refused = get(port).send(t).await.unwrap_err();
        assert!(
            refused.starts_with(&format!("Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused")),
            "{refused}"
        );
    }
}
