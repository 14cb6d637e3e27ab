//! The EndpointSlice and Endpoints controllers: for every Service with a selector, the
//! EndpointSlices (`discovery.k8s.io/v1`) and the legacy `v1/Endpoints` object listing the
//! pods it selects, with upstream's `ready`/`serving`/`terminating` conditions, target
//! ports resolved per pod (numbers and named container ports), one slice per distinct port
//! set and at most 100 endpoints per slice. Services without a selector are left to their
//! users.

use crate::cache::{Cache, Change, Informer};
use crate::queue::{key, run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The most endpoints one slice holds (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The node label giving an endpoint's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The label upstream puts on the slices and Endpoints of headless Services.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} for Service {key}: {source}")]
    Api {
        what: &'static str,
        key: String,
        source: kube::Error,
    },
}

impl ReconcileError for Error {}

/// A pod as an endpoint of one Service, with the ports it resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    pub endpoint: Endpoint,
    pub ports: Vec<SlicePort>,
}

/// The Service's selector, when it has a non-empty one.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the pod's Ready condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

/// Upstream's ShouldPodBeInEndpoints: has an IP, has not finished, and is not being
/// deleted unless `include_terminating`.
fn in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod_ip(pod).is_none() || phase == Some("Succeeded") || phase == Some("Failed") {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Resolves a Service port's targetPort on a pod: a number as is, a name through the pod's
/// container ports of the same protocol. `None` when the pod has no such named port.
pub fn resolve_target_port(
    port: &k8s_openapi::api::core::v1::ServicePort,
    pod: &Pod,
) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn hostname_of(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then_some(hostname)
}

/// The endpoint of `pod` in the Service's slices, as upstream's podToEndpoint builds it.
pub fn pod_endpoint(svc: &Service, pod: &Pod, zone: Option<String>) -> Option<PodEndpoint> {
    if !in_endpoints(pod, true) {
        return None;
    }
    let ip = pod_ip(pod)?;
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // A terminating pod is never "ready", unless the Service publishes every address.
    let ready = publish || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_of(pod, svc),
        node_name: node_name.clone(),
        target_ref: Some(pod_ref(pod)),
        zone: node_name.and(zone),
        ..Default::default()
    };
    let mut ports = Vec::new();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(n) = resolve_target_port(p, pod) {
            ports.push(SlicePort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            });
        }
    }
    Some(PodEndpoint { endpoint, ports })
}

/// A port set as a sortable key: (name, port, protocol) of each port, sorted.
type PortKey = Vec<(String, i32, String)>;

fn port_key(ports: &[SlicePort]) -> PortKey {
    let mut k: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    k.sort();
    k
}

/// The desired slice contents: endpoints grouped by port set, each group cut into chunks of
/// at most [`MAX_ENDPOINTS_PER_SLICE`], endpoints sorted by address. A Service selecting
/// nothing gets one empty slice (upstream's placeholder).
pub fn desired_slices(endpoints: Vec<PodEndpoint>) -> Vec<(Vec<SlicePort>, Vec<Endpoint>)> {
    let mut groups: BTreeMap<PortKey, (Vec<SlicePort>, Vec<Endpoint>)> = BTreeMap::new();
    for pe in endpoints {
        let mut ports = pe.ports;
        ports.sort_by_key(|p| (p.name.clone(), p.port, p.protocol.clone()));
        groups
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(pe.endpoint);
    }
    let mut out = Vec::new();
    for (_, (ports, mut eps)) in groups {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((Vec::new(), Vec::new()));
    }
    out
}

/// The legacy Endpoints subsets: ready (or published) addresses and not-ready ones, grouped
/// by port set as upstream's RepackSubsets does.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    type Subset = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<PortKey, Subset> = BTreeMap::new();
    for pod in pods {
        if !in_endpoints(pod, publish) {
            continue;
        }
        let Some(pe) = pod_endpoint(svc, pod, None) else {
            continue;
        };
        let Some(ip) = pod_ip(pod) else { continue };
        let addr = EndpointAddress {
            ip,
            hostname: pe.endpoint.hostname.clone(),
            node_name: pe.endpoint.node_name.clone(),
            target_ref: Some(pod_ref(pod)),
        };
        let mut ports = pe.ports;
        ports.sort_by_key(|p| (p.name.clone(), p.port, p.protocol.clone()));
        let entry = groups.entry(port_key(&ports)).or_insert_with(|| {
            let ports = ports
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port.unwrap_or(0),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect();
            (ports, Vec::new(), Vec::new())
        });
        if publish || pod_ready(pod) {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
    }
    groups
        .into_values()
        .filter(|(ports, _, _)| !ports.is_empty())
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(ports),
            }
        })
        .collect()
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn managed(slice: &EndpointSlice) -> bool {
    slice.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    endpoints: Arc<Informer<Endpoints>>,
    queue: Arc<Queue<String>>,
}

fn services_selecting(services: &Informer<Service>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    services
        .list_namespace(&ns)
        .into_iter()
        .filter(|s| selector(s).is_some_and(|sel| selects(sel, pod)))
        .map(|s| key(&ns, &s.name_any()))
        .collect()
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        services: cache.informer(),
        pods: cache.informer(),
        nodes: cache.informer(),
        slices: cache.informer(),
        endpoints: cache.informer(),
        queue: Queue::new(),
    });
    let q = c.queue.clone();
    c.services.subscribe(move |change| {
        let s = change.object();
        q.add(key(&s.namespace().unwrap_or_default(), &s.name_any()));
    });
    let (q, services) = (c.queue.clone(), c.services.clone());
    c.pods.subscribe(move |change| {
        let mut keys = services_selecting(&services, change.object());
        if let Change::Applied { old: Some(old), .. } = change {
            keys.extend(services_selecting(&services, old));
        }
        for k in keys {
            q.add(k);
        }
    });
    let q = c.queue.clone();
    c.slices.subscribe(move |change| {
        let s = change.object();
        if let Some(name) = s.labels().get(SERVICE_NAME_LABEL) {
            q.add(key(&s.namespace().unwrap_or_default(), name));
        }
    });
    let q = c.queue.clone();
    c.endpoints.subscribe(move |change| {
        let e = change.object();
        q.add(key(&e.namespace().unwrap_or_default(), &e.name_any()));
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.services.wait_synced().await;
    c.pods.wait_synced().await;
    c.nodes.wait_synced().await;
    c.slices.wait_synced().await;
    c.endpoints.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "endpointslice",
        queue,
        2,
        move |k: String| c.clone().reconcile(k),
        stop,
    )
    .await;
}

fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels of the Service's slices: its own labels plus the controller's.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

impl Controller {
    fn api_err(what: &'static str, key: &str) -> impl FnOnce(kube::Error) -> Error {
        let key = key.to_string();
        move |source| Error::Api { what, key, source }
    }

    async fn reconcile(self: Arc<Self>, k: String) -> Result<Requeue, Error> {
        let (ns, name) = split(&k);
        let client = self.cache.client().clone();
        let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        let ep_api: Api<Endpoints> = Api::namespaced(client, ns);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(ns)
            .into_iter()
            .filter(|s| {
                managed(s) && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
            })
            .collect();
        let svc = self.services.get(ns, name);
        let Some(svc) =
            svc.filter(|s| selector(s).is_some() && s.metadata.deletion_timestamp.is_none())
        else {
            // Gone or without a selector: our slices go (the users own them from now on);
            // the Endpoints of a deleted Service go too.
            for s in existing {
                delete_ignoring_missing(&slice_api, &s.name_any())
                    .await
                    .map_err(Self::api_err("delete an EndpointSlice", &k))?;
            }
            if self.services.get(ns, name).is_none() && self.endpoints.get(ns, name).is_some() {
                delete_ignoring_missing(&ep_api, name)
                    .await
                    .map_err(Self::api_err("delete the Endpoints", &k))?;
            }
            return Ok(None);
        };
        let Some(sel) = selector(&svc) else {
            return Ok(None);
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| selects(sel, p))
            .collect();
        let endpoints: Vec<PodEndpoint> = pods
            .iter()
            .filter_map(|p| {
                let zone = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .and_then(|n| self.nodes.get("", n))
                    .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
                pod_endpoint(&svc, p, zone)
            })
            .collect();
        self.sync_slices(&k, &svc, &slice_api, existing, desired_slices(endpoints))
            .await?;
        self.sync_endpoints(&k, &svc, &ep_api, desired_subsets(&svc, &pods))
            .await?;
        Ok(None)
    }

    async fn sync_slices(
        &self,
        k: &str,
        svc: &Service,
        api: &Api<EndpointSlice>,
        existing: Vec<Arc<EndpointSlice>>,
        desired: Vec<(Vec<SlicePort>, Vec<Endpoint>)>,
    ) -> Result<(), Error> {
        let labels = slice_labels(svc);
        let owner = owner_ref(svc);
        // Reuse existing slices with the same port set first, so unchanged ones stay.
        let mut unused: Vec<Arc<EndpointSlice>> = existing;
        for (ports, endpoints) in desired {
            let want_key = port_key(&ports);
            let pos = unused
                .iter()
                .position(|s| port_key(s.ports.as_deref().unwrap_or_default()) == want_key)
                .or_else(|| (!unused.is_empty()).then_some(0));
            let ports = (!ports.is_empty()).then_some(ports);
            match pos.map(|i| unused.remove(i)) {
                Some(old) => {
                    let same = old.endpoints == endpoints
                        && old.ports == ports
                        && old.address_type == "IPv4"
                        && old.labels() == &labels
                        && old.metadata.owner_references.as_deref()
                            == Some(std::slice::from_ref(&owner));
                    if same {
                        continue;
                    }
                    let mut new = (*old).clone();
                    new.endpoints = endpoints;
                    new.ports = ports;
                    new.address_type = "IPv4".into();
                    new.metadata.labels = Some(labels.clone());
                    new.metadata.owner_references = Some(vec![owner.clone()]);
                    match api
                        .replace(&old.name_any(), &PostParams::default(), &new)
                        .await
                    {
                        Ok(_) => {}
                        // The cache lags: the newer object's event brings the key back.
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(Self::api_err("update an EndpointSlice", k)(e)),
                    }
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{}-", svc.name_any())),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints,
                        ports,
                    };
                    api.create(&PostParams::default(), &slice)
                        .await
                        .map_err(Self::api_err("create an EndpointSlice", k))?;
                }
            }
        }
        for s in unused {
            delete_ignoring_missing(api, &s.name_any())
                .await
                .map_err(Self::api_err("delete an EndpointSlice", k))?;
        }
        Ok(())
    }

    async fn sync_endpoints(
        &self,
        k: &str,
        svc: &Service,
        api: &Api<Endpoints>,
        subsets: Vec<EndpointSubset>,
    ) -> Result<(), Error> {
        let mut labels = svc.labels().clone();
        if headless(svc) {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match self
            .endpoints
            .get(&svc.namespace().unwrap_or_default(), &svc.name_any())
        {
            Some(old) => {
                if old.subsets == subsets && old.labels() == &labels {
                    return Ok(());
                }
                let mut new = (*old).clone();
                new.subsets = subsets;
                new.metadata.labels = Some(labels);
                match api
                    .replace(&svc.name_any(), &PostParams::default(), &new)
                    .await
                {
                    Ok(_) => {}
                    // The cache lags: the newer object's event brings the key back.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(Self::api_err("update the Endpoints", k)(e)),
                }
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(svc.name_any()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => {}
                    // The cache lags: the next event brings it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(Self::api_err("create the Endpoints", k)(e)),
                }
            }
        }
        Ok(())
    }
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The ports of a slice, sorted, for comparisons in tests and callers.
pub fn port_set(slice: &EndpointSlice) -> BTreeSet<(String, i32, String)> {
    port_key(slice.ports.as_deref().unwrap_or_default())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc(target: IntOrString, publish: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                publish_not_ready_addresses: Some(publish),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, port: (&str, i32)) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port.0.into()),
                        container_port: port.1,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn conditions(e: &Endpoint) -> (bool, bool, bool) {
        let c = e.conditions.clone().unwrap_or_default();
        (
            c.ready.unwrap_or(false),
            c.serving.unwrap_or(false),
            c.terminating.unwrap_or(false),
        )
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let s = svc(IntOrString::Int(8080), false);
        let ready =
            pod_endpoint(&s, &pod("a", "10.0.0.1", true, ("web", 8080)), None).expect("endpoint");
        assert_eq!(conditions(&ready.endpoint), (true, true, false));
        let unready =
            pod_endpoint(&s, &pod("b", "10.0.0.2", false, ("web", 8080)), None).expect("endpoint");
        assert_eq!(conditions(&unready.endpoint), (false, false, false));
        let mut dying = pod("c", "10.0.0.3", true, ("web", 8080));
        dying.metadata.deletion_timestamp = Some(Time(k8s_openapi::chrono::Utc::now()));
        let dying = pod_endpoint(&s, &dying, None).expect("endpoint");
        assert_eq!(conditions(&dying.endpoint), (false, true, true));
        assert_eq!(
            ready.endpoint.target_ref.and_then(|r| r.name).as_deref(),
            Some("a")
        );
        assert_eq!(ready.endpoint.node_name.as_deref(), Some("n1"));
        // No IP yet: not an endpoint.
        let mut pending = pod("d", "", false, ("web", 8080));
        if let Some(s) = pending.status.as_mut() {
            s.pod_ip = None;
        }
        assert!(pod_endpoint(&s, &pending, None).is_none());
    }

    #[test]
    fn publish_not_ready_addresses_marks_every_endpoint_ready() {
        let s = svc(IntOrString::Int(8080), true);
        let e =
            pod_endpoint(&s, &pod("b", "10.0.0.2", false, ("web", 8080)), None).expect("endpoint");
        assert_eq!(conditions(&e.endpoint), (true, false, false));
        let subsets = desired_subsets(&s, &[Arc::new(pod("b", "10.0.0.2", false, ("web", 8080)))]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].not_ready_addresses.is_none());
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn named_ports_split_slices_by_port_set() {
        let s = svc(IntOrString::String("web".into()), false);
        let pods = [
            pod("a", "10.0.0.1", true, ("web", 8080)),
            pod("b", "10.0.0.2", true, ("web", 9090)),
            pod("c", "10.0.0.3", true, ("web", 8080)),
            pod("d", "10.0.0.4", true, ("other", 8080)),
        ];
        let eps: Vec<_> = pods
            .iter()
            .filter_map(|p| pod_endpoint(&s, p, None))
            .collect();
        let slices = desired_slices(eps);
        // 8080 (a, c), 9090 (b), and d without a port of that name.
        assert_eq!(slices.len(), 3, "{slices:?}");
        let by_port: BTreeMap<Option<i32>, usize> = slices
            .iter()
            .map(|(ports, eps)| (ports.first().and_then(|p| p.port), eps.len()))
            .collect();
        assert_eq!(by_port.get(&Some(8080)), Some(&2));
        assert_eq!(by_port.get(&Some(9090)), Some(&1));
        assert_eq!(by_port.get(&None), Some(&1));
        let subsets = desired_subsets(
            &s,
            &[
                Arc::new(pods[0].clone()),
                Arc::new(pod("e", "10.0.0.5", false, ("web", 8080))),
            ],
        );
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            subsets[0].not_ready_addresses.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn slices_hold_at_most_100_endpoints_and_nothing_gets_a_placeholder() {
        let s = svc(IntOrString::Int(8080), false);
        let eps: Vec<_> = (0..250)
            .filter_map(|i| {
                pod_endpoint(
                    &s,
                    &pod(
                        &format!("p{i}"),
                        &format!("10.0.{}.{}", i / 200, i % 200),
                        true,
                        ("web", 8080),
                    ),
                    None,
                )
            })
            .collect();
        let slices = desired_slices(eps);
        assert_eq!(
            slices.iter().map(|(_, e)| e.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let empty = desired_slices(Vec::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].0.is_empty() && empty[0].1.is_empty());
    }
}
