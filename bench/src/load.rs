//! The benchmarks' HTTP load client and slow upstream: an open-loop client sending requests
//! at a constant rate, one request per new TCP connection (so every request is routed anew
//! by the service proxy), counting every 2xx, every other status, every connection error,
//! reset and timeout, with latency percentiles and when each failure happened; and a tiny
//! HTTP server that answers after a fixed delay, so requests are in flight in a proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Latency;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A 2xx status.
    Ok,
    /// Any other status.
    Status(u16),
    /// The connection was refused (RST to the SYN).
    Refused,
    /// The connection was not set up within the connect timeout.
    ConnectTimeout,
    /// The connection was reset after it was set up.
    Reset,
    /// No full response within the request timeout.
    Timeout,
    /// The peer closed the connection before a status line.
    Closed,
    /// Any other I/O error (its kind).
    Io(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }

    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "2xx".into(),
            Outcome::Status(s) => s.to_string(),
            Outcome::Refused => "refused".into(),
            Outcome::ConnectTimeout => "connect timeout".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Closed => "closed early".into(),
            Outcome::Io(k) => k.clone(),
        }
    }
}

/// One request: a new connection, `GET path` with `Connection: close`, the response read to
/// the server's close (so the server, not us, keeps the TIME_WAIT).
pub async fn request(
    addr: SocketAddr,
    path: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Outcome {
    let io_outcome = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
            Outcome::Reset
        }
        std::io::ErrorKind::UnexpectedEof => Outcome::Closed,
        k => Outcome::Io(format!("{k:?}")),
    };
    let mut stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Outcome::ConnectTimeout,
        Ok(Err(e)) => return io_outcome(e),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => io_outcome(e),
        Ok(Ok(buf)) => status_of(&buf),
    }
}

/// The outcome of a whole response.
fn status_of(buf: &[u8]) -> Outcome {
    if buf.is_empty() {
        return Outcome::Closed;
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let code = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..300).contains(&c) => Outcome::Ok,
        Some(c) => Outcome::Status(c),
        None => Outcome::Io("malformed response".into()),
    }
}

/// What a load run saw so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Outcome → count.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Latencies of successful requests.
    pub latencies: Vec<Duration>,
    /// When each failed request was sent (since the load started) and how it ended.
    pub failures: Vec<(Duration, Outcome)>,
}

impl Stats {
    pub fn total(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub fn failed(&self) -> u64 {
        self.total() - self.outcomes.get(&Outcome::Ok).copied().unwrap_or(0)
    }

    /// Failures by kind, e.g. `refused 12, 502 3`; `-` when none.
    pub fn failure_kinds(&self) -> String {
        let kinds: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(o, _)| !o.is_ok())
            .map(|(o, n)| format!("{} {n}", o.label()))
            .collect();
        if kinds.is_empty() {
            "-".into()
        } else {
            kinds.join(", ")
        }
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&mut self.latencies.clone())
    }
}

/// A constant-rate load on one address and path, running until [`Load::stop`].
pub struct Load {
    pub started: Instant,
    stats: Arc<Mutex<Stats>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Sends `rate` requests per second to `addr` (open loop: a request is sent on time even
    /// when earlier ones are still in flight, at most `max_in_flight` at once; requests that
    /// would exceed it count as failures, `Io("client overloaded")`).
    pub fn start(
        addr: SocketAddr,
        path: &str,
        rate: f64,
        max_in_flight: usize,
        timeout: Duration,
    ) -> Load {
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let path = path.to_string();
        let task = {
            let stats = stats.clone();
            tokio::spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
                let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut inflight = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    while inflight.try_join_next().is_some() {}
                    let sent = started.elapsed();
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        record(&stats, sent, Outcome::Io("client overloaded".into()), None);
                        continue;
                    };
                    let (stats, path) = (stats.clone(), path.clone());
                    inflight.spawn(async move {
                        let t = Instant::now();
                        let outcome = request(addr, &path, Duration::from_secs(3), timeout).await;
                        record(&stats, sent, outcome, Some(t.elapsed()));
                        drop(permit);
                    });
                }
                // Requests already sent finish and are counted.
                while inflight.join_next().await.is_some() {}
            })
        };
        Load {
            started,
            stats,
            stop,
            task,
        }
    }

    /// Stops sending, waits for requests in flight and returns what was seen.
    pub async fn stop(self) -> Stats {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        match self.stats.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => Stats::default(),
        }
    }

    /// Failed and total requests so far.
    pub fn counts(&self) -> (u64, u64) {
        self.stats
            .lock()
            .map(|s| (s.failed(), s.total()))
            .unwrap_or_default()
    }
}

fn record(stats: &Mutex<Stats>, sent: Duration, outcome: Outcome, took: Option<Duration>) {
    let Ok(mut s) = stats.lock() else { return };
    if outcome.is_ok() {
        if let Some(t) = took {
            s.latencies.push(t);
        }
    } else {
        s.failures.push((sent, outcome.clone()));
    }
    *s.outcomes.entry(outcome).or_default() += 1;
}

/// Requests per second of `workers` connections each sending requests one after another,
/// one request per new connection, for `duration`; and how many failed.
pub async fn closed_loop_rate(
    addr: SocketAddr,
    path: &str,
    workers: usize,
    duration: Duration,
) -> (f64, u64) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let path = path.to_string();
        set.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match request(addr, &path, Duration::from_secs(3), Duration::from_secs(5)).await {
                    Outcome::Ok => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        if let Ok((o, f)) = r {
            ok += o;
            failed += f;
        }
    }
    (ok as f64 / started.elapsed().as_secs_f64(), failed)
}

/// An HTTP/1.x server answering every request with `200 slow` after `delay`; connections
/// may be kept alive. Runs until the returned task is aborted.
pub fn slow_upstream(listener: TcpListener, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_slow(stream, delay));
        }
    })
}

async fn serve_slow(mut stream: TcpStream, delay: Duration) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        // One request head (nginx sends no body for GET).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = (head.contains("http/1.0") && !head.contains("connection: keep-alive"))
            || head.contains("connection: close");
        buf.drain(..end);
        tokio::time::sleep(delay).await;
        let connection = if close { "close" } else { "keep-alive" };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: {connection}\r\n\r\nslow\n"
        );
        if stream.write_all(resp.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
