//! The `kubernetes` Service in `default`, kept by the API server as upstream's apiserver
//! does: ClusterIP = the first address of the service CIDR, port 443 (`https`) to the API
//! server's address and port, with an EndpointSlice and an Endpoints object pointing there.
//! Recreated or repaired whenever it drifts (checked every few seconds).

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::watch;

/// The Service's namespace and name.
pub const NAMESPACE: &str = "default";
pub const NAME: &str = "kubernetes";
/// How often the objects are checked.
const INTERVAL: Duration = Duration::from_secs(3);

/// Where the `kubernetes` Service points.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first address of the service CIDR.
    pub cluster_ip: IpAddr,
    /// The API server's address as other nodes and pods reach it.
    pub address: IpAddr,
    /// The API server's HTTPS port.
    pub port: u16,
}

/// Errors of one pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {0} the kubernetes {1}: {2}")]
    Api(&'static str, &'static str, kube::Error),
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("component".into(), "apiserver".into()),
        ("provider".into(), "kubernetes".into()),
    ])
}

fn meta(extra: &[(&str, &str)]) -> ObjectMeta {
    let mut l = labels();
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(l),
        ..Default::default()
    }
}

/// The Service as the API server wants it.
pub fn service(c: &Config) -> Service {
    Service {
        metadata: meta(&[]),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(c.cluster_ip.to_string()),
            cluster_ips: Some(vec![c.cluster_ip.to_string()]),
            session_affinity: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(i32::from(c.port))),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The EndpointSlice as the API server wants it.
pub fn endpoint_slice(c: &Config) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(&[(crate::endpointslice::SERVICE_NAME_LABEL, NAME)]),
        address_type: if c.address.is_ipv6() { "IPv6" } else { "IPv4" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![c.address.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: None,
                terminating: None,
            }),
            ..Default::default()
        }],
        ports: Some(vec![SlicePort {
            name: Some("https".into()),
            port: Some(i32::from(c.port)),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

/// The Endpoints as the API server wants them.
pub fn endpoints(c: &Config) -> Endpoints {
    Endpoints {
        metadata: meta(&[]),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: c.address.to_string(),
                ..Default::default()
            }]),
            not_ready_addresses: None,
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: i32::from(c.port),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }]),
    }
}

/// Keeps the three objects until `stop` turns true.
pub async fn run(client: Client, config: Config, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reconcile(&client, &config).await {
            tracing::debug!("{e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass: creates what is missing, repairs what drifted.
pub async fn reconcile(client: &Client, c: &Config) -> Result<(), Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let want = service(c);
    match services
        .get_opt(NAME)
        .await
        .map_err(|e| Error::Api("read", "Service", e))?
    {
        None => {
            services
                .create(&PostParams::default(), &want)
                .await
                .map_err(|e| Error::Api("create", "Service", e))?;
        }
        Some(mut have) => {
            let ports = have.spec.as_ref().and_then(|s| s.ports.clone());
            let want_ports = want.spec.as_ref().and_then(|s| s.ports.clone());
            let stripped = |p: Option<Vec<ServicePort>>| {
                p.map(|v| {
                    v.into_iter()
                        .map(|mut p| {
                            p.node_port = None;
                            p
                        })
                        .collect::<Vec<_>>()
                })
            };
            if stripped(ports) != stripped(want_ports.clone()) {
                if let Some(spec) = have.spec.as_mut() {
                    spec.ports = want_ports;
                }
                services
                    .replace(NAME, &PostParams::default(), &have)
                    .await
                    .map_err(|e| Error::Api("update", "Service", e))?;
            }
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let want = endpoint_slice(c);
    match slices
        .get_opt(NAME)
        .await
        .map_err(|e| Error::Api("read", "EndpointSlice", e))?
    {
        None => {
            slices
                .create(&PostParams::default(), &want)
                .await
                .map_err(|e| Error::Api("create", "EndpointSlice", e))?;
        }
        Some(mut have) => {
            if have.endpoints != want.endpoints
                || have.ports != want.ports
                || have.address_type != want.address_type
            {
                have.endpoints = want.endpoints;
                have.ports = want.ports;
                have.address_type = want.address_type;
                slices
                    .replace(NAME, &PostParams::default(), &have)
                    .await
                    .map_err(|e| Error::Api("update", "EndpointSlice", e))?;
            }
        }
    }
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let want = endpoints(c);
    match eps
        .get_opt(NAME)
        .await
        .map_err(|e| Error::Api("read", "Endpoints", e))?
    {
        None => {
            eps.create(&PostParams::default(), &want)
                .await
                .map_err(|e| Error::Api("create", "Endpoints", e))?;
        }
        Some(mut have) => {
            if have.subsets != want.subsets {
                have.subsets = want.subsets;
                eps.replace(NAME, &PostParams::default(), &have)
                    .await
                    .map_err(|e| Error::Api("update", "Endpoints", e))?;
            }
        }
    }
    Ok(())
}
