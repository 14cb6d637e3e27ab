//! The berth node agent: registers this machine as a Node, keeps its Lease and status fresh.
//! It is a client of the API server only, so it runs in `berth server` or on another machine
//! with the same code.

mod atomic;
mod cleanup;
pub mod deregistration;
pub mod dns;
pub mod downward;
mod env;
pub mod events;
mod hooks;
pub mod host;
mod images;
pub mod logs;
mod mounts;
pub mod pods;
pub mod podstatus;
pub mod portforward;
mod probes;
pub mod server;
pub mod sources;
pub mod spdy;
pub mod spec;
pub mod status;
pub mod stream;
mod volumes;
pub mod wsframe;

use server::NodeServer;
use std::time::Duration;

/// Serves the node's HTTPS endpoint until `shutdown`; a port in use or bad TLS material is
/// logged (the node still runs its pods).
async fn serve_endpoint(
    config: &NodeConfig,
    endpoint: std::sync::Arc<NodeServer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Some(tls) = &config.kubelet_tls else {
        return;
    };
    let started = match server::tls_config(tls) {
        Ok(tls) => server::bind(config.kubelet_port).await.map(|l| (l, tls)),
        Err(e) => Err(e),
    };
    match started {
        Ok((listener, tls)) => server::serve(listener, tls, endpoint, shutdown).await,
        Err(e) => tracing::warn!("the node's HTTPS endpoint is not served: {e}"),
    }
}

/// Configuration of the node agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name (default: the host name).
    pub name: String,
    /// Directory whose filesystem holds the node's data (for ephemeral-storage capacity).
    pub data_dir: std::path::PathBuf,
    /// How often the Lease is renewed.
    pub lease_interval: Duration,
    /// How often the Node's status is reported when nothing changes.
    pub status_interval: Duration,
    /// The most pods this node runs.
    pub max_pods: u32,
    /// Whether this agent runs pods (a pod runtime is wired); the node is Ready only then.
    pub runs_pods: bool,
    /// The port of the node's HTTPS endpoint (logs, exec, attach), published in the
    /// Node's `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: u16,
    /// The endpoint's TLS material; without it the endpoint is not served.
    pub kubelet_tls: Option<server::KubeletTls>,
    /// The endpoint's certificate is self-signed (not from the cluster CA): the Node says
    /// so with the [`server::SELF_SIGNED_ANNOTATION`] annotation.
    pub kubelet_self_signed: bool,
    /// Hands the endpoint to an API server in the same process (`berth server`), which
    /// then reaches it in memory; the HTTPS endpoint is served all the same.
    pub in_process: Option<InProcessEndpoint>,
}

/// Receives the node's endpoint when the node agent starts it.
#[derive(Clone)]
pub struct InProcessEndpoint(pub std::sync::Arc<dyn Fn(std::sync::Arc<NodeServer>) + Send + Sync>);

impl std::fmt::Debug for InProcessEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessEndpoint")
    }
}

impl NodeConfig {
    /// Defaults as upstream's kubelet: lease renewed every 10 s, status every minute, 110 pods.
    pub fn new(name: String, data_dir: std::path::PathBuf) -> Self {
        NodeConfig {
            name,
            data_dir,
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            max_pods: 110,
            runs_pods: false,
            kubelet_port: 10250,
            kubelet_tls: None,
            kubelet_self_signed: false,
            in_process: None,
        }
    }
}

/// Runs the node agent until `stop` turns true: heartbeats, and the pod worker when a pod
/// runtime is given.
pub async fn run(
    client: kube::Client,
    mut config: NodeConfig,
    pods: Option<pods::PodRuntime>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    config.runs_pods = pods.is_some();
    let images = pods.as_ref().map(|p| p.images.clone());
    match pods {
        Some(rt) => {
            let endpoint = std::sync::Arc::new(NodeServer {
                client: client.clone(),
                node_name: config.name.clone(),
                containers: rt.containers.clone(),
                logs_dir: rt.logs_dir.clone(),
            });
            if let Some(hand_over) = &config.in_process {
                (hand_over.0)(endpoint.clone());
            }
            tokio::join!(
                status::run(client, config.clone(), images, stopped()),
                pods::run(rt, stopped()),
                serve_endpoint(&config, endpoint, stopped()),
            );
        }
        None => status::run(client, config, images, stopped()).await,
    }
}
