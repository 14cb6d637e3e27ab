//! Container probes: tcpSocket and httpGet checks against the pod IP, and the liveness
//! prober that restarts a container after `failureThreshold` failures in a row.

use crate::pods::{blocking, PodRuntime};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use std::collections::HashMap;
use std::time::Duration;

/// Per container id: liveness failures in a row and when it was last probed (in memory, as
/// upstream's prober: a restarted agent starts counting again).
#[derive(Debug, Default)]
pub struct LivenessState(std::sync::Mutex<HashMap<String, (u32, DateTime<Utc>)>>);

impl PodRuntime {
    /// Runs a liveness probe when due; after `failureThreshold` failures in a row the
    /// container is stopped (and restarted per the pod's restart policy, with back-off).
    pub(crate) async fn check_liveness(
        &self,
        pod: &Pod,
        c: &Container,
        p: &k8s_openapi::api::core::v1::Probe,
        id: &str,
        started_at: &str,
        pod_ip: &str,
    ) {
        let now = Utc::now();
        let started = DateTime::parse_from_rfc3339(started_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        if now
            < started + chrono::Duration::seconds(i64::from(p.initial_delay_seconds.unwrap_or(0)))
        {
            return;
        }
        let period = chrono::Duration::seconds(i64::from(p.period_seconds.unwrap_or(10).max(1)));
        let threshold = p.failure_threshold.unwrap_or(3).max(1) as u32;
        let due = match self.liveness.0.lock() {
            Ok(m) => m.get(id).is_none_or(|(_, last)| now >= *last + period),
            Err(_) => false,
        };
        if !due || (p.tcp_socket.is_none() && p.http_get.is_none()) {
            return;
        }
        let ok = probe(c, p, pod_ip).await;
        let failures = match self.liveness.0.lock() {
            Ok(mut m) => {
                let entry = m.entry(id.to_string()).or_insert((0, now));
                entry.0 = if ok { 0 } else { entry.0 + 1 };
                entry.1 = now;
                entry.0
            }
            Err(_) => 0,
        };
        if failures >= threshold {
            tracing::info!(pod = %pod.name_any(), container = %c.name, "liveness probe failed {failures} times: restarting the container");
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64;
            let containers = self.containers.clone();
            let id = id.to_string();
            if let Ok(mut m) = self.liveness.0.lock() {
                m.remove(&id);
            }
            let _ =
                blocking(move || containers.stop(&id, libc::SIGTERM, Duration::from_secs(grace)))
                    .await;
        }
    }
}

/// A readiness probe's verdict: tcpSocket connects, httpGet answers 200–399; exec probes
/// need exec into the container, which this node does not have yet (never ready).
pub(crate) async fn probe(
    c: &Container,
    p: &k8s_openapi::api::core::v1::Probe,
    pod_ip: &str,
) -> bool {
    let port_of =
        |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| -> Option<u16> {
            use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
            match port {
                IntOrString::Int(i) => u16::try_from(*i).ok(),
                IntOrString::String(name) => c
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .and_then(|cp| u16::try_from(cp.container_port).ok()),
            }
        };
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port_of(&t.port) else {
            return false;
        };
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((pod_ip, port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port) else {
            return false;
        };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let get = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect((pod_ip, port)).await.ok()?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: {pod_ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = [0u8; 32];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            line.split_whitespace().nth(1)?.parse::<u16>().ok()
        };
        return matches!(tokio::time::timeout(timeout, get).await, Ok(Some(code)) if (200..400).contains(&code));
    }
    false
}
