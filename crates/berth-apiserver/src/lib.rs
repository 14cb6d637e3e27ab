//! The berth API server: the Kubernetes REST API over HTTPS, backed by a [`berth_store::Store`].
//!
//! [`start`] makes or loads the cluster's certificates, writes the admin kubeconfig, creates
//! the built-in namespaces, and serves until the returned [`ApiServer`] is shut down.

// API errors carry a whole Status (message, causes); they are built on the error path only.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod binding;
pub mod discovery;
pub mod eviction;
pub mod handlers;
pub mod memory;
pub mod node_ports;
pub mod objects;
pub mod pki;
pub mod proxy;
pub mod request;
pub mod selector;
pub mod server;
pub mod service_ips;
pub mod status;
pub mod watch;

use berth_store::Store;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch as signal;

/// Configuration of the API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `pki/` and `kubeconfig.yaml`.
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_port: u16,
    /// Upstream-format CSV of static bearer tokens.
    pub token_auth_file: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// The CIDR Services get their cluster IPs from.
    pub service_cidr: service_ips::ServiceCidr,
}

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    TokenFile(#[from] auth::TokenFileError),
    #[error(transparent)]
    NodeDialer(#[from] proxy::DialerError),
    #[error("failed to create the built-in namespaces: {0}")]
    Bootstrap(status::ApiError),
}

/// A running API server.
pub struct ApiServer {
    pub address: SocketAddr,
    /// The URL clients use (the one in the kubeconfig).
    pub url: String,
    pub kubeconfig: PathBuf,
    /// Node endpoints served by this process (reached in memory, not over TLS).
    pub local_nodes: proxy::LocalNodes,
    shutdown: signal::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Stops accepting, lets open requests finish (bounded), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

fn host_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    // The address used to reach the outside is the node's primary address.
    if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if sock.connect("10.255.255.255:9").is_ok() {
            if let Ok(addr) = sock.local_addr() {
                ips.push(addr.ip());
            }
        }
    }
    ips
}

/// Starts the API server.
pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<ApiServer, StartError> {
    let pki_dir = config.data_dir.join("pki");
    let ca = pki::ClusterCa::load_or_create(&pki_dir)?;
    let mut dns: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut ips = host_addresses();
    ips.push(IpAddr::V4(config.service_cidr.first()));
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !dns.iter().any(|d| d == h) {
            dns.push(h.to_string());
        }
    }
    for san in &config.tls_san {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    let serving = ca.server_cert(&dns, &ips)?;
    let admin = pki::load_or_create_client(&ca, &pki_dir, "admin", "admin", &["system:masters"])?;
    // What the API server presents to nodes when it proxies logs, exec and attach.
    let kubelet_client = pki::load_or_create_client(
        &ca,
        &pki_dir,
        "apiserver-kubelet-client",
        proxy::KUBELET_CLIENT_USER,
        &["system:masters"],
    )?;
    let node_dialer = proxy::NodeDialer::new(
        &ca.cert_pem,
        &kubelet_client.cert_pem,
        &kubelet_client.key_pem,
    )?;
    let tokens = match &config.token_auth_file {
        Some(p) => auth::TokenAuthenticator::load(p)?,
        None => auth::TokenAuthenticator::default(),
    };
    let tls = server::tls_config(&serving.cert_pem, &serving.key_pem, &ca.cert_pem)?;
    let bind = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| server::ServeError::Listen {
            addr: bind.to_string(),
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| server::ServeError::Listen {
            addr: bind.to_string(),
            source,
        })?;
    let host = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let url = format!("https://{}", SocketAddr::new(host, address.port()));
    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    pki::write_private(
        &kubeconfig,
        &pki::kubeconfig(&url, &ca.cert_pem, &admin, "admin"),
    )?;

    let objects = objects::Objects::new(store, config.service_cidr);
    objects::bootstrap(&objects)
        .await
        .map_err(StartError::Bootstrap)?;
    let ready = Arc::new(AtomicBool::new(false));
    let local_nodes = node_dialer.local.clone();
    let api = handlers::Api {
        objects,
        advertise: SocketAddr::new(host, address.port()).to_string(),
        ready: ready.clone(),
        node_dialer: Arc::new(node_dialer),
    };
    let (tx, rx) = signal::channel(false);
    let trim = tokio::spawn(memory::trim_periodically(std::time::Duration::from_secs(
        30,
    )));
    let serve = server::serve(listener, tls, api, Arc::new(tokens), rx);
    let task = tokio::spawn(async move {
        serve.await;
        trim.abort();
    });
    ready.store(true, Ordering::Release);
    Ok(ApiServer {
        address,
        url,
        kubeconfig,
        local_nodes,
        shutdown: tx,
        task,
    })
}
