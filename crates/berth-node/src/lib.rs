//! The berth node agent: registers this machine as a Node, keeps its Lease and status fresh.
//! It is a client of the API server only, so it runs in `berth server` or on another machine
//! with the same code.

mod atomic;
mod cleanup;
pub mod downward;
mod env;
pub mod events;
mod hooks;
pub mod host;
mod images;
mod mounts;
pub mod pods;
pub mod podstatus;
mod probes;
pub mod sources;
pub mod spec;
pub mod status;
mod volumes;

use std::time::Duration;

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
            tokio::join!(
                status::run(client, config, images, stopped()),
                pods::run(rt, stopped())
            );
        }
        None => status::run(client, config, images, stopped()).await,
    }
}
