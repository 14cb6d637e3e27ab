//! berth's service proxy (kube-proxy's job, nftables mode): a client of the API that follows
//! Services and EndpointSlices and programs an nftables table of its own (`rules`), one
//! atomic `nft` transaction per change, rewriting only the service ports that changed. On
//! start the table is reconciled in place (never flushed), so a server that died and comes
//! back keeps traffic flowing throughout; a clean shutdown removes the table and the
//! service CIDR's routes ([`cleanup`]).
//!
//! What the proxy has programmed is published for endpoint-first termination: after each
//! sync, the EndpointSlice watermark goes to [`Programmed`] and to the proxy's Lease
//! ([`programmed`]); a change that takes traffic away from a ready endpoint is programmed at
//! once, without the sync batching, and counts as programmed only once the endpoints that
//! left have no half-open connections the kernel would still send to them ([`conntrack`]).

pub mod conntrack;
pub mod programmed;
pub mod rules;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use programmed::Watermark;
use rules::{Endpoint, KernelTable, Ruleset, ServicePort};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// The shortest time between two syncs (changes arriving meanwhile are batched).
const MIN_SYNC_PERIOD: Duration = Duration::from_millis(100);
/// A full resync of the table, to repair anything changed behind the proxy's back.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(300);
/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to run nft: {0}")]
    Spawn(std::io::Error),
    #[error("failed to apply the nftables rules: {0}")]
    Nft(String),
    #[error("failed to set up the service CIDR route: {0}")]
    Route(#[from] berth_net::RoutingError),
}

/// What the proxy needs to know about its node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The nftables table (`ip` family) this proxy owns.
    pub table: String,
    pub node_name: String,
    /// The addresses NodePorts answer on.
    pub node_ips: Vec<Ipv4Addr>,
    /// This node's pod CIDR (traffic from elsewhere is masqueraded).
    pub pod_cidr: String,
    /// The service CIDR, routed through `bridge` so it never leaks to the default gateway.
    pub service_cidr: String,
    pub bridge: String,
}

/// What the proxy has programmed: its EndpointSlice watermark (see [`programmed`]), `None`
/// until the first sync.
#[derive(Debug, Clone)]
pub struct Programmed(watch::Receiver<Option<u64>>);

impl Programmed {
    /// The highest EndpointSlice resourceVersion whose events (and all before it) the kernel
    /// table reflects.
    pub fn resource_version(&self) -> Option<u64> {
        *self.0.borrow()
    }

    /// A receiver that sees every advance.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.0.clone()
    }
}

/// Runs `nft` with a script on stdin (`-f -`), or with arguments.
async fn nft(args: &[&str], script: Option<&str>) -> Result<String, Error> {
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(s) = script {
            stdin.write_all(s.as_bytes()).await.map_err(Error::Spawn)?;
        }
    }
    let out = child.wait_with_output().await.map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The table as it is in the kernel (empty when missing).
async fn kernel_table(table: &str) -> KernelTable {
    match nft(&["list", "table", "ip", table], None).await {
        Ok(listing) => KernelTable::parse(&listing),
        Err(_) => KernelTable::default(),
    }
}

/// Applies a script atomically.
pub async fn apply(script: &str) -> Result<(), Error> {
    if script.is_empty() {
        return Ok(());
    }
    nft(&["-f", "-"], Some(script)).await.map(drop)
}

/// Routes the service CIDR through the bridge once it exists (the pod network creates it),
/// with a blackhole fallback before and after: a ClusterIP whose rules are missing never
/// follows the default route off the machine.
pub fn ensure_routes(config: &Config) -> Result<(), Error> {
    berth_net::routing::ensure_fallback_route(&config.service_cidr)?;
    let routes = berth_net::routing::routes_for(&config.service_cidr)?;
    let via_bridge = format!("dev {} ", config.bridge);
    if routes.iter().any(|r| format!("{r} ").contains(&via_bridge)) {
        return Ok(());
    }
    if berth_net::routing::ip(&["link", "show", "dev", &config.bridge]).is_ok() {
        berth_net::routing::ip(&[
            "-4",
            "route",
            "replace",
            &config.service_cidr,
            "dev",
            &config.bridge,
        ])?;
    }
    Ok(())
}

/// Removes the proxy's table and the service CIDR's routes (on a clean shutdown; a proxy
/// that died leaves them, and its successor reconciles them without a gap).
pub async fn cleanup(config: &Config) -> Result<(), Error> {
    if kernel_table(&config.table).await.exists {
        nft(&["delete", "table", "ip", &config.table], None).await?;
    }
    let _ = berth_net::routing::ip(&[
        "-4",
        "route",
        "del",
        &config.service_cidr,
        "dev",
        &config.bridge,
    ]);
    berth_net::routing::remove_fallback_route(&config.service_cidr)?;
    Ok(())
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// The service ports of `svc` with their endpoints from `slices`.
pub fn service_ports(svc: &Service, slices: &[Arc<EndpointSlice>], node: &str) -> Vec<ServicePort> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(ipv4) else {
        return Vec::new();
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    let node_ports = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        let mut endpoints: BTreeMap<Ipv4Addr, Endpoint> = BTreeMap::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let Some(sp) = slice.ports.iter().flatten().find(|sp| {
                sp.name.as_deref().unwrap_or("") == port_name
                    && sp
                        .protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .eq_ignore_ascii_case(&protocol)
            }) else {
                continue;
            };
            let Some(target) = sp.port.and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            for e in &slice.endpoints {
                let Some(ip) = e.addresses.first().and_then(|a| ipv4(a)) else {
                    continue;
                };
                let c = e.conditions.clone().unwrap_or_default();
                // Unset conditions mean ready/serving (the API's documented defaults).
                let ready = c.ready.unwrap_or(true);
                endpoints.entry(ip).or_insert(Endpoint {
                    ip,
                    port: target,
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    local: e.node_name.as_deref() == Some(node),
                });
            }
        }
        out.push(ServicePort {
            namespace: svc.namespace().unwrap_or_default(),
            name: svc.name_any(),
            port_name,
            protocol,
            cluster_ip,
            port,
            node_port: p
                .node_port
                .filter(|_| node_ports)
                .and_then(|n| u16::try_from(n).ok()),
            affinity_timeout,
            external_local,
            endpoints: endpoints.into_values().collect(),
        });
    }
    out
}

/// The service proxy.
pub struct Proxy {
    config: Config,
    programmed: watch::Sender<Option<u64>>,
}

/// One item of the proxy's merged watches.
enum Change {
    /// A Service changed (the store is updated).
    Service,
    /// An EndpointSlice event the reflector applied to the store.
    Slice(Box<watcher::Event<EndpointSlice>>),
    /// A watch error (the watcher retries with back-off).
    Error,
}

/// What the proxy knows it must do next.
#[derive(Default)]
struct Pending {
    watermark: Watermark,
    /// The stores changed since the last successful sync.
    dirty: bool,
    /// A ready endpoint lost its traffic: sync without waiting for the batching period.
    urgent: bool,
}

impl Pending {
    fn take(&mut self, change: Change) {
        match change {
            Change::Slice(e) => {
                self.dirty = true;
                self.urgent |= self.watermark.observe(&e);
            }
            Change::Service => self.dirty = true,
            Change::Error => {}
        }
    }
}

impl Proxy {
    pub fn new(config: Config) -> Self {
        Proxy {
            config,
            programmed: watch::Sender::new(None),
        }
    }

    /// What has been programmed, shared with the rest of the node.
    pub fn programmed(&self) -> Programmed {
        Programmed(self.programmed.subscribe())
    }

    /// The proxy's configuration (for [`cleanup`] once it has stopped).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Follows Services and EndpointSlices and keeps the table in step until `stop`
    /// turns true, publishing what it programmed on its Lease (removed when it stops). A
    /// clean shutdown then calls [`cleanup`].
    pub async fn run(self, client: Client, mut stop: watch::Receiver<bool>) {
        let publisher = tokio::spawn(programmed::publish(
            client.clone(),
            self.config.node_name.clone(),
            self.programmed.subscribe(),
        ));
        self.follow(client.clone(), &mut stop).await;
        publisher.abort();
        let _ = publisher.await;
        if let Err(e) = programmed::remove(client, &self.config.node_name).await {
            tracing::warn!("service proxy: {e}");
        }
    }

    async fn follow(&self, client: Client, stop: &mut watch::Receiver<bool>) {
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
        .map(|e| match e {
            Ok(_) => Change::Service,
            Err(_) => Change::Error,
        });
        let slice_events = reflector::reflector(
            slice_writer,
            watcher(
                Api::<EndpointSlice>::all(client),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .map(|e| match e {
            Ok(e) => Change::Slice(Box::new(e)),
            Err(_) => Change::Error,
        });
        let mut events = futures::stream::select(svc_events, slice_events).boxed();
        let mut pending = Pending::default();
        // The stores fill as the watch streams are polled.
        while services.wait_until_ready().now_or_never().is_none()
            || slices.wait_until_ready().now_or_never().is_none()
        {
            tokio::select! {
                e = events.next() => match e {
                    Some(c) => pending.take(c),
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let mut programmed: Option<Ruleset> = None;
        let mut last_full = tokio::time::Instant::now();
        let mut next_sync = tokio::time::Instant::now();
        pending.dirty = true;
        loop {
            if pending.dirty && (pending.urgent || tokio::time::Instant::now() >= next_sync) {
                if last_full.elapsed() >= FULL_SYNC_PERIOD {
                    programmed = None;
                    last_full = tokio::time::Instant::now();
                }
                // The stores change only while the streams are polled: this is what the sync
                // programs.
                let watermark = pending.watermark.seen();
                pending.urgent = false;
                next_sync = tokio::time::Instant::now() + MIN_SYNC_PERIOD;
                match self.sync(&services, &slices, programmed.as_ref()).await {
                    Ok(r) => {
                        programmed = Some(r);
                        pending.dirty = false;
                        self.programmed.send_if_modified(|p| {
                            let advanced = *p != Some(watermark);
                            *p = Some(watermark);
                            advanced
                        });
                    }
                    Err(e) => {
                        tracing::warn!("service proxy: {e}");
                        // Unknown state now: the next sync rewrites everything.
                        programmed = None;
                    }
                }
            }
            // Wait for a change (or the batching period once one is pending, or the full
            // resync), then take in whatever else has arrived.
            let until = if pending.dirty {
                next_sync
            } else {
                last_full + FULL_SYNC_PERIOD
            };
            tokio::select! {
                e = events.next() => match e {
                    Some(c) => pending.take(c),
                    None => return,
                },
                _ = tokio::time::sleep_until(until) => pending.dirty = true,
                _ = stop.wait_for(|s| *s) => return,
            }
            while let Some(next) = events.next().now_or_never() {
                match next {
                    Some(c) => pending.take(c),
                    None => return,
                }
            }
        }
    }

    async fn sync(
        &self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        programmed: Option<&Ruleset>,
    ) -> Result<Ruleset, Error> {
        let mut by_service: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in &slices.state() {
            if let Some(name) = s.labels().get(SERVICE_NAME_LABEL) {
                by_service
                    .entry((s.namespace().unwrap_or_default(), name.clone()))
                    .or_default()
                    .push(s.clone());
            }
        }
        let mut ports = Vec::new();
        for svc in services.state() {
            let k = (svc.namespace().unwrap_or_default(), svc.name_any());
            let slices = by_service.get(&k).map(Vec::as_slice).unwrap_or_default();
            ports.extend(service_ports(&svc, slices, &self.config.node_name));
        }
        let config = self.config.clone();
        match tokio::task::spawn_blocking(move || ensure_routes(&config)).await {
            Ok(Err(e)) => tracing::warn!("service proxy: {e}"),
            Err(e) => tracing::warn!("service proxy: failed to check routes: {e}"),
            Ok(Ok(())) => {}
        }
        let desired = Ruleset::build(&ports, &self.config.node_ips, &self.config.pod_cidr);
        let existing = if programmed.is_none() {
            kernel_table(&self.config.table).await
        } else {
            KernelTable::default()
        };
        let script = desired.script(&self.config.table, programmed, &existing);
        apply(&script).await?;
        // Part of the change: flows the kernel would still send to endpoints that left.
        let gone = programmed
            .into_iter()
            .flat_map(|p| p.targets.difference(&desired.targets));
        for result in futures::future::join_all(gone.map(conntrack::clear)).await {
            if let Err(e) = result {
                tracing::warn!("service proxy: {e}");
            }
        }
        Ok(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as SvcPort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use kube::api::ObjectMeta;

    fn slice(
        port_name: &str,
        port: i32,
        eps: &[(&str, bool, bool, bool, &str)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta::default(),
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, serving, terminating, node)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    node_name: Some(node.to_string()),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        })
    }

    #[test]
    fn service_ports_take_endpoints_by_port_name() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("NodePort".into()),
                cluster_ip: Some("10.43.0.10".into()),
                session_affinity: Some("ClientIP".into()),
                external_traffic_policy: Some("Local".into()),
                ports: Some(vec![
                    SvcPort {
                        name: Some("http".into()),
                        port: 80,
                        node_port: Some(30080),
                        ..Default::default()
                    },
                    SvcPort {
                        name: Some("dns".into()),
                        port: 53,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let slices = [
            slice(
                "http",
                8080,
                &[
                    ("10.42.0.2", true, true, false, "n1"),
                    ("10.42.1.2", false, true, true, "n2"),
                ],
            ),
            slice("other", 9090, &[("10.42.0.9", true, true, false, "n1")]),
        ];
        let ports = service_ports(&svc, &slices, "n1");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(
            (http.port, http.node_port, http.protocol.as_str()),
            (80, Some(30080), "tcp")
        );
        assert_eq!(http.affinity_timeout, Some(10800));
        assert!(http.external_local);
        assert_eq!(http.endpoints.len(), 2);
        assert!(
            http.endpoints[0].local && http.endpoints[0].ready && http.endpoints[0].port == 8080
        );
        assert!(!http.endpoints[1].local && http.endpoints[1].terminating);
        let dns = &ports[1];
        assert_eq!((dns.protocol.as_str(), dns.node_port), ("udp", None));
        assert!(
            dns.endpoints.is_empty(),
            "no slice has a udp port named dns"
        );
    }
}
