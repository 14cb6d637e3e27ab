//! Endpoint-first termination: before a deleted pod's containers run preStop and get their
//! stop signal, the node agent waits until the pod's endpoints are marked terminating (or
//! not serving, or gone) in their EndpointSlices, and until every live service proxy's Lease
//! reports that it has programmed that change (its `berth.dev/endpointslices-programmed`
//! watermark has reached the slices' resourceVersion). Both waits follow watches; the whole
//! wait is bounded by the deregistration timeout and the pod's grace period, and counts
//! inside the grace period. `--pod-termination upstream` skips it (upstream's behaviour:
//! endpoints are removed while the containers are already stopping).

use crate::pods::PodRuntime;
use berth_proxy::programmed::{
    resource_version, LEASE_NAMESPACE, LEASE_PREFIX, PROGRAMMED_ANNOTATION, PROXY_LABEL,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// When a deleted pod's containers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodTermination {
    /// As upstream's kubelet: preStop and the stop signal as soon as the deletion arrives.
    Upstream,
    /// First wait until every service proxy stopped sending the pod new connections.
    EndpointsFirst,
}

impl std::str::FromStr for PodTermination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "upstream" => Ok(PodTermination::Upstream),
            "endpoints-first" => Ok(PodTermination::EndpointsFirst),
            other => Err(format!(
                "unknown pod termination {other:?}: upstream or endpoints-first"
            )),
        }
    }
}

impl std::fmt::Display for PodTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PodTermination::Upstream => "upstream",
            PodTermination::EndpointsFirst => "endpoints-first",
        })
    }
}

/// How the node agent stops deleted pods.
#[derive(Debug, Clone)]
pub struct TerminationConfig {
    pub mode: PodTermination,
    /// The longest wait for the service proxies (never longer than the grace period).
    pub deregistration_timeout: Duration,
}

impl Default for TerminationConfig {
    fn default() -> Self {
        TerminationConfig {
            mode: PodTermination::EndpointsFirst,
            deregistration_timeout: Duration::from_secs(10),
        }
    }
}

/// A duration flag: `10s`, `1500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: e.g. 10s, 500ms, 1m"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration {s:?}: e.g. 10s, 500ms, 1m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Whether a pod can be in EndpointSlices at all (upstream's ShouldPodBeInEndpoints): it has
/// an IP and has not finished. Others are stopped without looking.
fn may_have_endpoints(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    has_ip && !finished
}

/// How long the wait may last: the timeout, never more than the grace period.
pub fn budget(config: &TerminationConfig, grace: Duration) -> Duration {
    match config.mode {
        PodTermination::Upstream => Duration::ZERO,
        PodTermination::EndpointsFirst => config.deregistration_timeout.min(grace),
    }
}

/// Whether an endpoint no longer takes new connections from proxies: terminating, or not
/// serving (unset `serving` means `ready`, unset `ready` means ready, as the API says).
fn deregistered(e: &Endpoint) -> bool {
    let c = e.conditions.clone().unwrap_or_default();
    let serving = c.serving.or(c.ready).unwrap_or(true);
    c.terminating == Some(true) || !serving
}

fn targets(e: &Endpoint, uid: &str) -> bool {
    e.target_ref.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid)
}

/// The EndpointSlices holding one pod's endpoints, as a watch sees them: name →
/// (resourceVersion, whether an endpoint of the pod there still takes traffic).
#[derive(Debug, Default)]
pub struct PodEndpoints {
    uid: String,
    slices: BTreeMap<String, (u64, bool)>,
}

impl PodEndpoints {
    pub fn new(uid: &str) -> Self {
        PodEndpoints {
            uid: uid.to_string(),
            slices: BTreeMap::new(),
        }
    }

    /// A slice added or changed: tracked when it holds the pod or was holding it.
    pub fn apply(&mut self, s: &EndpointSlice) {
        let mine: Vec<&Endpoint> = s
            .endpoints
            .iter()
            .filter(|e| targets(e, &self.uid))
            .collect();
        if mine.is_empty() && !self.slices.contains_key(&s.name_any()) {
            return;
        }
        let live = mine.iter().any(|e| !deregistered(e));
        let rv = resource_version(s).unwrap_or(0);
        self.slices.insert(s.name_any(), (rv, live));
    }

    /// A slice deleted (the event carries the deletion's resourceVersion).
    pub fn delete(&mut self, s: &EndpointSlice) {
        if let Some(entry) = self.slices.get_mut(&s.name_any()) {
            *entry = (resource_version(s).unwrap_or(entry.0), false);
        }
    }

    /// A complete (re-)list: tracked slices that are missing are gone.
    pub fn relisted(&mut self, listed: &[EndpointSlice]) {
        for entry in self.slices.values_mut() {
            entry.1 = false;
        }
        for s in listed {
            self.apply(s);
        }
    }

    /// Whether any slice holds (or held) the pod.
    pub fn found(&self) -> bool {
        !self.slices.is_empty()
    }

    /// The slices where the pod still takes traffic.
    pub fn serving_in(&self) -> Vec<String> {
        self.slices
            .iter()
            .filter(|(_, (_, live))| *live)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The resourceVersion every proxy must have programmed: the newest of the slices.
    pub fn resource_version(&self) -> u64 {
        self.slices.values().map(|(rv, _)| *rv).max().unwrap_or(0)
    }
}

/// When a Lease runs out (renewTime + leaseDurationSeconds); None without a renewal.
fn expiry(lease: &Lease) -> Option<DateTime<Utc>> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    Some(renewed + chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(0).into()))
}

/// What a proxy's Lease says it has programmed.
fn programmed(lease: &Lease) -> Option<u64> {
    lease.annotations().get(PROGRAMMED_ANNOTATION)?.parse().ok()
}

/// A proxy (by node) and the watermark it published, if any.
pub type Lagging = (String, Option<u64>);

/// The live proxies (Lease not expired at `now`) that have not programmed `rv` yet, with
/// what they have programmed, and the soonest of their Leases' expiries.
pub fn lagging<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    rv: u64,
    now: DateTime<Utc>,
) -> (Vec<Lagging>, Option<DateTime<Utc>>) {
    let mut out = Vec::new();
    let mut soonest: Option<DateTime<Utc>> = None;
    for lease in leases {
        let Some(expires) = expiry(lease).filter(|e| *e > now) else {
            continue;
        };
        let done = programmed(lease);
        if done.is_some_and(|d| d >= rv) {
            continue;
        }
        let name = lease.name_any();
        let proxy = name.strip_prefix(LEASE_PREFIX).unwrap_or(&name).to_string();
        out.push((proxy, done));
        soonest = Some(soonest.map_or(expires, |s| s.min(expires)));
    }
    (out, soonest)
}

/// What the wait is at, for the log when it times out.
#[derive(Debug, Default)]
enum Progress {
    #[default]
    Listing,
    /// The slices where the pod's endpoint still takes traffic.
    Slices(Vec<String>),
    /// The resourceVersion to reach and the proxies that have not.
    Proxies(u64, Vec<Lagging>),
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Listing => f.write_str("the pod's EndpointSlices were not listed yet"),
            Progress::Slices(s) => write!(
                f,
                "the pod's endpoint still serves in EndpointSlices {}",
                s.join(", ")
            ),
            Progress::Proxies(rv, lagging) => {
                let who: Vec<String> = lagging
                    .iter()
                    .map(|(p, done)| match done {
                        Some(d) => format!("{p} (at {d})"),
                        None => format!("{p} (nothing published)"),
                    })
                    .collect();
                write!(
                    f,
                    "service proxies that have not programmed EndpointSlice resourceVersion {rv}: {}",
                    who.join(", ")
                )
            }
        }
    }
}

/// Waits until the pod's endpoints no longer take traffic; the resourceVersion of that
/// change, or None when no EndpointSlice holds the pod.
async fn endpoints_deregistered(
    client: kube::Client,
    namespace: &str,
    uid: &str,
    progress: &mut Progress,
) -> Option<u64> {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut endpoints = PodEndpoints::new(uid);
    let mut listing = Vec::new();
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(s)) => listing.push(s),
            Ok(watcher::Event::InitDone) => {
                endpoints.relisted(&std::mem::take(&mut listing));
                if !listed && !endpoints.found() {
                    return None;
                }
                listed = true;
            }
            Ok(watcher::Event::Apply(s)) => endpoints.apply(&s),
            Ok(watcher::Event::Delete(s)) => endpoints.delete(&s),
            // The watcher retries with back-off.
            Err(_) => continue,
        }
        if listed {
            let serving = endpoints.serving_in();
            if serving.is_empty() {
                return Some(endpoints.resource_version());
            }
            *progress = Progress::Slices(serving);
        }
    }
    None
}

/// Waits until every live service proxy has programmed EndpointSlice resourceVersion `rv`.
async fn proxies_programmed(client: kube::Client, rv: u64, progress: &mut Progress) {
    let api: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut events = watcher(api, watcher::Config::default().labels(PROXY_LABEL))
        .default_backoff()
        .boxed();
    let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
    let mut listing = BTreeMap::new();
    let mut listed = false;
    let mut recheck: Option<Duration> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Init)) => listing.clear(),
                Some(Ok(watcher::Event::InitApply(l))) => {
                    listing.insert(l.name_any(), l);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    leases = std::mem::take(&mut listing);
                    listed = true;
                }
                Some(Ok(watcher::Event::Apply(l))) => {
                    leases.insert(l.name_any(), l);
                }
                Some(Ok(watcher::Event::Delete(l))) => {
                    leases.remove(&l.name_any());
                }
                Some(Err(_)) => continue,
                None => return,
            },
            // A lagging proxy whose Lease runs out no longer counts.
            _ = tokio::time::sleep(recheck.unwrap_or(Duration::MAX)), if recheck.is_some() => {}
        }
        if !listed {
            continue;
        }
        let now = Utc::now();
        let (behind, soonest) = lagging(leases.values(), rv, now);
        if behind.is_empty() {
            return;
        }
        recheck =
            soonest.map(|s| (s - now).to_std().unwrap_or_default() + Duration::from_millis(10));
        *progress = Progress::Proxies(rv, behind);
    }
}

impl PodRuntime {
    /// Waits, within `grace`, until the deleted pod's endpoints are out of every live service
    /// proxy (endpoint-first termination); returns how long it waited.
    pub(crate) async fn wait_for_deregistration(&self, pod: &Pod, grace: Duration) -> Duration {
        let budget = budget(&self.termination, grace);
        if budget.is_zero() || !may_have_endpoints(pod) {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let uid = pod.uid().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_default();
        let mut progress = Progress::default();
        let wait = async {
            let rv = endpoints_deregistered(self.client.clone(), &namespace, &uid, &mut progress)
                .await?;
            proxies_programmed(self.client.clone(), rv, &mut progress).await;
            Some(rv)
        };
        let outcome = tokio::time::timeout(budget, wait).await;
        let waited = started.elapsed();
        let waited_ms = waited.as_millis() as u64;
        match outcome {
            Ok(None) => {
                tracing::debug!(pod = %pod.name_any(), waited_ms, "no endpoints to deregister")
            }
            Ok(Some(rv)) => tracing::info!(
                pod = %pod.name_any(),
                namespace = %namespace,
                waited_ms,
                resource_version = rv,
                "endpoints deregistered from every service proxy"
            ),
            Err(_) => tracing::warn!(
                pod = %pod.name_any(),
                namespace = %namespace,
                waited_ms,
                "endpoint deregistration timed out: {progress}"
            ),
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proxy::programmed::lease_name;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::EndpointConditions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::ObjectMeta;

    fn endpoint(uid: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                uid: Some(uid.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(name: &str, rv: u64, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: None,
        }
    }

    fn lease(node: &str, programmed: Option<u64>, renewed_ago: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(node)),
                annotations: programmed
                    .map(|p| [(PROGRAMMED_ANNOTATION.to_string(), p.to_string())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.into()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(
                    Utc::now() - chrono::Duration::seconds(renewed_ago),
                )),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn no_slices_holding_the_pod_means_no_wait() {
        let mut e = PodEndpoints::new("pod-a");
        e.relisted(&[slice(
            "web-1",
            5,
            vec![endpoint("pod-b", true, true, false)],
        )]);
        assert!(!e.found());
        // A slice that never held the pod is not tracked.
        e.apply(&slice(
            "web-2",
            6,
            vec![endpoint("pod-c", true, true, false)],
        ));
        assert!(!e.found());
    }

    #[test]
    fn the_pod_is_deregistered_once_terminating_everywhere() {
        let mut e = PodEndpoints::new("pod-a");
        e.relisted(&[
            slice("web-1", 5, vec![endpoint("pod-a", true, true, false)]),
            slice("api-1", 4, vec![endpoint("pod-a", true, true, false)]),
        ]);
        assert!(e.found());
        assert_eq!(e.serving_in(), vec!["api-1", "web-1"]);
        e.apply(&slice(
            "web-1",
            9,
            vec![endpoint("pod-a", false, true, true)],
        ));
        assert_eq!(e.serving_in(), vec!["api-1"]);
        // Gone from its slice counts too; the newest version is what proxies must reach.
        e.apply(&slice(
            "api-1",
            11,
            vec![endpoint("pod-b", true, true, false)],
        ));
        assert!(e.serving_in().is_empty());
        assert_eq!(e.resource_version(), 11);
        // Not serving (an unready pod) is out of the proxies' rotation as well.
        let mut u = PodEndpoints::new("pod-a");
        u.relisted(&[slice(
            "web-1",
            5,
            vec![endpoint("pod-a", false, false, false)],
        )]);
        assert!(u.found() && u.serving_in().is_empty());
        // A deleted slice carries its deletion's version.
        let mut d = PodEndpoints::new("pod-a");
        d.relisted(&[slice(
            "web-1",
            5,
            vec![endpoint("pod-a", true, true, false)],
        )]);
        d.delete(&slice(
            "web-1",
            14,
            vec![endpoint("pod-a", true, true, false)],
        ));
        assert!(d.serving_in().is_empty());
        assert_eq!(d.resource_version(), 14);
    }

    #[test]
    fn lagging_proxies_are_waited_for_and_dead_ones_ignored() {
        let now = Utc::now();
        let leases = [
            lease("n1", Some(20), 1),
            lease("n2", Some(12), 5),
            lease("n3", None, 2),
            // Renewed 60 s ago with a 40 s duration: a dead proxy does not hold anyone up.
            lease("n4", Some(3), 60),
        ];
        let (behind, soonest) = lagging(&leases, 15, now);
        assert_eq!(
            behind,
            vec![("n2".to_string(), Some(12)), ("n3".to_string(), None)]
        );
        // The wait re-checks when the first lagging Lease would run out (n2's: 35 s).
        let soonest = soonest.expect("an expiry");
        assert!((soonest - now).num_seconds() >= 34 && (soonest - now).num_seconds() <= 35);
        let (behind, soonest) = lagging(&leases, 12, now);
        assert_eq!(behind, vec![("n3".to_string(), None)]);
        assert!(soonest.is_some());
        assert!(lagging(&leases[..2], 12, now).0.is_empty());
        // No proxies at all: nothing to wait for.
        assert!(lagging(&[], 12, now).0.is_empty());
    }

    #[test]
    fn the_wait_is_bounded_by_the_timeout_and_the_grace_period() {
        let config = TerminationConfig::default();
        assert_eq!(
            budget(&config, Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            budget(&config, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(budget(&config, Duration::ZERO), Duration::ZERO);
        let upstream = TerminationConfig {
            mode: PodTermination::Upstream,
            ..config
        };
        assert_eq!(budget(&upstream, Duration::from_secs(30)), Duration::ZERO);
    }

    #[test]
    fn pods_without_an_ip_or_finished_have_no_endpoints() {
        use k8s_openapi::api::core::v1::PodStatus;
        let pod = |ip: Option<&str>, phase: &str| Pod {
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_string),
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(may_have_endpoints(&pod(Some("10.42.0.5"), "Running")));
        assert!(!may_have_endpoints(&pod(None, "Pending")));
        assert!(!may_have_endpoints(&pod(Some(""), "Pending")));
        assert!(!may_have_endpoints(&pod(Some("10.42.0.5"), "Succeeded")));
        assert!(!may_have_endpoints(&pod(Some("10.42.0.5"), "Failed")));
    }

    #[test]
    fn flags_parse() {
        assert_eq!(
            "endpoints-first".parse::<PodTermination>(),
            Ok(PodTermination::EndpointsFirst)
        );
        assert_eq!(
            "upstream".parse::<PodTermination>(),
            Ok(PodTermination::Upstream)
        );
        assert!("kubelet".parse::<PodTermination>().is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
