//! Node registration and heartbeats: creates this machine's Node, renews its Lease in
//! `kube-node-lease`, and reports capacity, addresses, system info and conditions.

use crate::host::HostInfo;
use crate::NodeConfig;
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// Errors of one registration or heartbeat (retried at the next tick).
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("failed to {what} node {node}: {source}")]
    Api {
        what: &'static str,
        node: String,
        source: kube::Error,
    },
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The Node object this agent registers.
pub fn node_object(config: &NodeConfig, host: &HostInfo) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.name,
            "labels": {
                "kubernetes.io/hostname": config.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": host.architecture,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": host.architecture,
            }
        },
        "spec": {}
    });
    if config.kubelet_self_signed {
        node["metadata"]["annotations"] =
            json!({crate::server::SELF_SIGNED_ANNOTATION: "self-signed"});
    }
    node
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: Option<&Value>,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    // The transition time only moves when the status does.
    let transition = previous
        .filter(|p| p.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|p| p.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({
        "type": kind,
        "status": status,
        "lastHeartbeatTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    })
}

/// The Node status this agent reports, keeping transition times from `previous`.
pub fn node_status(config: &NodeConfig, host: &HostInfo, previous: Option<&Value>) -> Value {
    let now = now();
    let prev = |kind: &str| {
        previous
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            })
    };
    let capacity = host.capacity(config.max_pods);
    let mut addresses = Vec::new();
    if let Some(ip) = host.internal_ip {
        addresses.push(json!({"type": "InternalIP", "address": ip.to_string()}));
    }
    addresses.push(json!({"type": "Hostname", "address": config.name}));
    // Without a pod runtime the node says it cannot run pods, as upstream's kubelet does
    // while its container runtime is not ready.
    let (ready_reason, ready_message) = if config.runs_pods {
        ("KubeletReady", "berth node agent is posting ready status")
    } else {
        (
            "KubeletNotReady",
            "container runtime is not ready: the pod lifecycle is not wired yet",
        )
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", false, "KubeletHasSufficientMemory", "berth node agent has sufficient memory available", prev("MemoryPressure"), &now),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "berth node agent has no disk pressure", prev("DiskPressure"), &now),
            condition("PIDPressure", false, "KubeletHasSufficientPID", "berth node agent has sufficient PID available", prev("PIDPressure"), &now),
            condition("Ready", config.runs_pods, ready_reason, ready_message, prev("Ready"), &now),
        ],
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": host.machine_id,
            "systemUUID": host.machine_id,
            "bootID": host.boot_id,
            "kernelVersion": host.kernel_version,
            "osImage": host.os_image,
            "containerRuntimeVersion": "crun://1.8.1",
            "kubeletVersion": "v1.33.0-berth",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": host.architecture,
        },
    })
}

/// Creates the Node if it does not exist; returns its uid.
async fn register(
    nodes: &Api<Node>,
    config: &NodeConfig,
    host: &HostInfo,
) -> Result<String, HeartbeatError> {
    let err = |what| {
        let node = config.name.clone();
        move |source| HeartbeatError::Api { what, node, source }
    };
    if let Some(existing) = nodes.get_opt(&config.name).await.map_err(err("read"))? {
        return Ok(existing.metadata.uid.unwrap_or_default());
    }
    let node: Node =
        serde_json::from_value(node_object(config, host)).map_err(|e| HeartbeatError::Api {
            what: "build",
            node: config.name.clone(),
            source: kube::Error::SerdeError(e),
        })?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => Ok(created.metadata.uid.unwrap_or_default()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let n = nodes.get(&config.name).await.map_err(err("read"))?;
            Ok(n.metadata.uid.unwrap_or_default())
        }
        Err(e) => Err(err("create")(e)),
    }
}

/// The node's images as `status.images` lists them: names (with the digest form) and size.
async fn node_images(store: &Option<berth_images::ImageStore>) -> Vec<Value> {
    let Some(store) = store.clone() else {
        return Vec::new();
    };
    let listed = tokio::task::spawn_blocking(move || store.list()).await;
    let Ok(Ok(images)) = listed else {
        return Vec::new();
    };
    images
        .into_iter()
        .map(|i| {
            let mut names: Vec<String> = i
                .names
                .iter()
                .map(|n| {
                    format!(
                        "{}@{}",
                        n.rsplit_once(':').map_or(n.as_str(), |(repo, _)| repo),
                        i.manifest_digest
                    )
                })
                .collect();
            names.extend(i.names.iter().cloned());
            json!({"names": names, "sizeBytes": i.size})
        })
        .collect()
}

async fn report_status(
    nodes: &Api<Node>,
    config: &NodeConfig,
    host: &HostInfo,
    images: &Option<berth_images::ImageStore>,
) -> Result<(), HeartbeatError> {
    let current = nodes
        .get_status(&config.name)
        .await
        .map_err(|source| HeartbeatError::Api {
            what: "read the status of",
            node: config.name.clone(),
            source,
        })?;
    let previous = current
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    let mut status = node_status(config, host, previous.as_ref());
    status["images"] = Value::Array(node_images(images).await);
    nodes
        .patch_status(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(|source| HeartbeatError::Api {
            what: "report the status of",
            node: config.name.clone(),
            source,
        })?;
    Ok(())
}

async fn renew_lease(
    leases: &Api<Lease>,
    config: &NodeConfig,
    node_uid: &str,
) -> Result<(), HeartbeatError> {
    let err = |what| {
        let node = config.name.clone();
        move |source| HeartbeatError::Api { what, node, source }
    };
    let renew = json!({"spec": {"holderIdentity": config.name, "leaseDurationSeconds": 40, "renewTime": now_micro()}});
    match leases
        .patch(&config.name, &PatchParams::default(), &Patch::Merge(&renew))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {
                    "name": config.name,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": config.name, "uid": node_uid}],
                },
                "spec": renew["spec"],
            }))
            .map_err(|e| err("build the lease of")(kube::Error::SerdeError(e)))?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
                .map_err(err("create the lease of"))
        }
        Err(e) => Err(err("renew the lease of")(e)),
    }
}

/// Registers the node, then renews its Lease and reports its status until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: NodeConfig,
    images: Option<berth_images::ImageStore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let host = HostInfo::read(&config.data_dir);
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    tokio::pin!(shutdown);
    let mut lease_tick = tokio::time::interval(config.lease_interval);
    let mut status_tick = tokio::time::interval(config.status_interval);
    let mut node_uid: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = lease_tick.tick() => {
                let uid = match &node_uid {
                    Some(uid) => uid.clone(),
                    None => match register(&nodes, &config, &host).await {
                        Ok(uid) => {
                            if let Err(e) = report_status(&nodes, &config, &host, &images).await {
                                tracing::warn!("{e}");
                            }
                            node_uid = Some(uid.clone());
                            uid
                        }
                        Err(e) => {
                            tracing::warn!("{e}");
                            continue;
                        }
                    },
                };
                if let Err(e) = renew_lease(&leases, &config, &uid).await {
                    tracing::warn!("{e}");
                }
            }
            _ = status_tick.tick(), if node_uid.is_some() => {
                if let Err(e) = report_status(&nodes, &config, &host, &images).await {
                    tracing::warn!("{e}");
                    // The Node may have been deleted: register again at the next tick.
                    node_uid = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_transition_times_while_status_holds() {
        let config = NodeConfig::new("n1".into(), "/".into());
        let host = HostInfo::read(std::path::Path::new("/"));
        let first = node_status(&config, &host, None);
        let mut aged = first.clone();
        aged["conditions"][3]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        let second = node_status(&config, &host, Some(&aged));
        assert_eq!(
            second["conditions"][3]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(second["conditions"][3]["type"], "Ready");
        assert!(second["capacity"]["cpu"].as_str().is_some());
        let node: Result<Node, _> = serde_json::from_value(node_object(&config, &host));
        assert!(node.is_ok());
    }
}
