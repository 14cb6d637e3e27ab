//! The built-in service load balancer: every Service of `type: LoadBalancer` is answered
//! with the node's address in `status.loadBalancer.ingress` (its NodePorts carry the
//! traffic, as the service proxy programs them); a Service that stops being one has the
//! ingress cleared.

use crate::cache::{Cache, Informer};
use crate::queue::{run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to update the load balancer status of Service {0}: {1}")]
    Status(String, kube::Error),
}

impl ReconcileError for Error {}

/// The ingress a Service should report.
pub fn wanted(svc: &Service, address: IpAddr) -> Vec<LoadBalancerIngress> {
    let lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if !lb {
        return Vec::new();
    }
    vec![LoadBalancerIngress {
        ip: Some(address.to_string()),
        ip_mode: Some("VIP".into()),
        ..Default::default()
    }]
}

fn current(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
}

/// Runs the controller (with a watch of Services of its own) until `stop` turns true.
pub async fn run(client: kube::Client, address: IpAddr, stop: watch::Receiver<bool>) {
    let cache = Cache::new(client.clone());
    let services: Arc<Informer<Service>> = cache.informer();
    let queue: Arc<Queue<String>> = Queue::new();
    let q = queue.clone();
    services.subscribe(move |change| {
        let s = change.object();
        if current(s) != wanted(s, address) {
            q.add(format!(
                "{}/{}",
                s.namespace().unwrap_or_default(),
                s.name_any()
            ));
        }
    });
    cache.start(stop.clone());
    services.wait_synced().await;
    run_workers(
        "loadbalancer",
        queue,
        1,
        move |k: String| {
            let (services, client) = (services.clone(), client.clone());
            async move { reconcile(&client, &services, address, k).await }
        },
        stop,
    )
    .await;
}

async fn reconcile(
    client: &kube::Client,
    services: &Informer<Service>,
    address: IpAddr,
    k: String,
) -> Result<Requeue, Error> {
    let (ns, name) = k.split_once('/').unwrap_or(("", &k));
    let Some(svc) = services.get(ns, name) else {
        return Ok(None);
    };
    let want = wanted(&svc, address);
    if current(&svc) == want {
        return Ok(None);
    }
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let status = LoadBalancerStatus {
        ingress: Some(want),
    };
    let patch = serde_json::json!({"status": {"loadBalancer": status}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(Error::Status(k.clone(), e)),
    }
}
