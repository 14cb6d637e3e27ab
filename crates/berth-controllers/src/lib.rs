//! berth's controllers. Each is a client of the API server (never of the datastore), so it
//! can run in the server process or anywhere else with the same code. They share one cache
//! of watched objects (`cache`: one watch per resource type) and run on rate-limited work
//! queues (`queue`); `pods` holds what every workload controller does with the pods it owns.

pub mod cache;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod job;
pub mod kubernetes_service;
pub mod loadbalancer;
pub mod namespace;
pub mod nodelifecycle;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod schedule;
pub mod serviceaccount;
pub mod statefulset;

use tokio::sync::watch;

/// Settings of the controllers.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub node_lifecycle: nodelifecycle::Config,
}

/// Runs every controller (namespaces, garbage collector, ServiceAccounts, workloads, ...)
/// on one shared cache until `stop` turns true.
pub async fn run(client: kube::Client, config: Config, stop: watch::Receiver<bool>) {
    let cache = cache::Cache::new(client);
    let namespaces = namespace::new(&cache);
    let serviceaccounts = serviceaccount::new(&cache);
    let endpointslices = endpointslice::new(&cache);
    let replicasets = replicaset::new(&cache);
    let deployments = deployment::new(&cache);
    let jobs = job::new(&cache);
    let cronjobs = cronjob::new(&cache);
    let node_lifecycle = nodelifecycle::new(&cache, &config.node_lifecycle);
    let disruption = disruption::new(&cache);
    let statefulsets = statefulset::new(&cache);
    let daemonsets = daemonset::new(&cache);
    // The collector registers last: it watches every resource, reusing the typed watches
    // the other controllers asked for.
    let gc = gc::new(&cache);
    cache.start(stop.clone());
    let parts = vec![
        tokio::spawn(namespace::run(namespaces, stop.clone())),
        tokio::spawn(serviceaccount::run(serviceaccounts, stop.clone())),
        tokio::spawn(endpointslice::run(endpointslices, stop.clone())),
        tokio::spawn(replicaset::run(replicasets, stop.clone())),
        tokio::spawn(deployment::run(deployments, stop.clone())),
        tokio::spawn(job::run(jobs, stop.clone())),
        tokio::spawn(cronjob::run(cronjobs, stop.clone())),
        tokio::spawn(nodelifecycle::run(node_lifecycle, stop.clone())),
        tokio::spawn(disruption::run(disruption, stop.clone())),
        tokio::spawn(statefulset::run(statefulsets, stop.clone())),
        tokio::spawn(daemonset::run(daemonsets, stop.clone())),
        tokio::spawn(gc::run(gc, cache.clone(), stop.clone())),
    ];
    for p in parts {
        let _ = p.await;
    }
}
