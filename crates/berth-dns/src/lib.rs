//! berth's cluster DNS (CoreDNS's job, node-local): an authoritative server for the cluster
//! domain, a client of the API that follows Services and EndpointSlices into an in-memory
//! [`index::Index`] and answers from it ([`answer`]); every other name is relayed to the host's
//! resolvers ([`forward`]). Each node runs its own on its bridge's gateway address, port 53,
//! UDP and TCP, so a pod's queries never leave its node.
//!
//! The sockets are bound with `IP_FREEBIND`: the gateway address appears on the bridge only
//! when the first pod is wired, and the server is ready before that.

pub mod answer;
pub mod forward;
pub mod index;

use answer::{respond, Reply, Transport};
use forward::Forwarder;
use futures::{FutureExt, StreamExt};
use index::Index;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};

/// Forwarded questions in flight at once (more are answered SERVFAIL).
const MAX_FORWARDS: usize = 1024;
/// TCP connections served at once (more wait in the backlog).
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Tasks reading the UDP socket (one per runtime worker).
const UDP_WORKERS: usize = 2;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind the DNS server to {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the server serves and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Where it listens (UDP and TCP), e.g. the bridge gateway's port 53.
    pub listen: SocketAddr,
    /// Where other names go.
    pub upstreams: Vec<SocketAddr>,
}

/// The index as the answering tasks see it: swapped whole on every change.
type SharedIndex = Arc<RwLock<Arc<Index>>>;

/// A bound DNS server, not yet answering.
pub struct DnsServer {
    config: Config,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    index: SharedIndex,
    forwarder: Arc<Forwarder>,
}

impl DnsServer {
    /// Binds the UDP and TCP sockets (an address not assigned yet is fine: `IP_FREEBIND`).
    /// Call from within the tokio runtime.
    pub fn bind(config: Config) -> Result<DnsServer, Error> {
        let bind_err = |source| Error::Bind {
            address: config.listen,
            source,
        };
        let udp = UdpSocket::from_std(socket(config.listen, false).map_err(bind_err)?.into())
            .map_err(bind_err)?;
        let tcp = TcpListener::from_std(socket(config.listen, true).map_err(bind_err)?.into())
            .map_err(bind_err)?;
        let listen = udp.local_addr().unwrap_or(config.listen);
        let config = Config { listen, ..config };
        Ok(DnsServer {
            forwarder: Arc::new(Forwarder::new(config.upstreams.clone(), config.listen)),
            index: Arc::new(RwLock::new(Arc::new(Index::not_ready(
                &config.cluster_domain,
            )))),
            udp: Arc::new(udp),
            tcp,
            config,
        })
    }

    /// The address it answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// Follows the API and answers until `stop` turns true.
    pub async fn run(self, client: Client, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            listen = %self.config.listen,
            domain = %self.config.cluster_domain,
            upstreams = ?self.forwarder.upstreams(),
            "cluster DNS serving"
        );
        let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
        let mut tasks = Vec::new();
        for _ in 0..UDP_WORKERS {
            tasks.push(tokio::spawn(udp_loop(
                self.udp.clone(),
                self.index.clone(),
                self.forwarder.clone(),
                forwards.clone(),
            )));
        }
        tasks.push(tokio::spawn(tcp_loop(
            self.tcp,
            self.index.clone(),
            self.forwarder.clone(),
        )));
        tokio::select! {
            _ = follow(client, self.config.cluster_domain.clone(), self.index) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        for t in tasks {
            t.abort();
        }
    }
}

/// A non-blocking socket on `addr` with `IP_FREEBIND` (a listener when `stream`).
fn socket(addr: SocketAddr, stream: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (kind, proto) = if stream {
        (Type::STREAM, Protocol::TCP)
    } else {
        (Type::DGRAM, Protocol::UDP)
    };
    let s = Socket::new(Domain::for_address(addr), kind, Some(proto))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    if !stream {
        // Bursts of queries wait in the kernel rather than being dropped (capped by rmem_max).
        let _ = s.set_recv_buffer_size(4 << 20);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if stream {
        s.listen(1024)?;
    }
    Ok(s)
}

fn current(index: &SharedIndex) -> Arc<Index> {
    index.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Keeps the index in step with Services and EndpointSlices (returns only if the watches end).
async fn follow(client: Client, domain: String, index: SharedIndex) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let mut events = futures::stream::select(svc_events, slice_events).boxed();
    let ready = |s: &Store<Service>, e: &Store<EndpointSlice>| {
        s.wait_until_ready().now_or_never().is_some()
            && e.wait_until_ready().now_or_never().is_some()
    };
    while events.next().await.is_some() {
        // Take every change already waiting, then rebuild once.
        while let Some(Some(())) = events.next().now_or_never() {}
        if !ready(&services, &slices) {
            continue;
        }
        let svcs = services.state();
        let eps = slices.state();
        let built = Index::build(
            &domain,
            svcs.iter().map(|s| s.as_ref()),
            eps.iter().map(|s| s.as_ref()),
        );
        *index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    index: SharedIndex,
    forwarder: Arc<Forwarder>,
    forwards: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::debug!("DNS UDP receive: {e}");
                continue;
            }
        };
        let packet = &buf[..n];
        match respond(&current(&index), packet, Transport::Udp) {
            Reply::Send(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let query = packet.to_vec();
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    let fail =
                        answer::error_header(&query, hickory_proto::op::ResponseCode::ServFail);
                    let _ = socket.send_to(&fail, peer).await;
                    continue;
                };
                let socket = socket.clone();
                let forwarder = forwarder.clone();
                tokio::spawn(async move {
                    let reply = match forwarder.udp(&query).await {
                        Some(r) => r,
                        None => {
                            answer::error_header(&query, hickory_proto::op::ResponseCode::ServFail)
                        }
                    };
                    let _ = socket.send_to(&reply, peer).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn tcp_loop(listener: TcpListener, index: SharedIndex, forwarder: Arc<Forwarder>) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let index = index.clone();
        let forwarder = forwarder.clone();
        tokio::spawn(async move {
            let _ = tcp_connection(stream, index, forwarder).await;
            drop(permit);
        });
    }
}

/// Answers the messages of one TCP connection in turn until it closes or idles.
async fn tcp_connection(
    mut stream: TcpStream,
    index: SharedIndex,
    forwarder: Arc<Forwarder>,
) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let reply = match respond(&current(&index), &query, Transport::Tcp) {
            Reply::Send(bytes) => bytes,
            Reply::Drop => return Ok(()),
            Reply::Forward => match forwarder.tcp(&query).await {
                Some(r) => r,
                None => answer::error_header(&query, hickory_proto::op::ResponseCode::ServFail),
            },
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out).await?;
    }
}
