//! What a service proxy has programmed, published through the API for endpoint-first
//! termination: the EndpointSlice watermark (the highest EndpointSlice resourceVersion R such
//! that the kernel table reflects every EndpointSlice event up to R), kept by [`Watermark`]
//! from the proxy's watch, and published by [`publish`] as an annotation of the proxy's
//! `coordination.k8s.io/v1` Lease `berth-proxy-<node>` in `kube-node-lease`, renewed like a
//! node's Lease. Node agents read these Leases before they stop a deleted pod.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;

/// The namespace of the proxies' Leases (beside the nodes' own).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The prefix of a proxy's Lease name (`berth-proxy-<node>`).
pub const LEASE_PREFIX: &str = "berth-proxy-";
/// The label marking a Lease as a service proxy's (its value is the node name).
pub const PROXY_LABEL: &str = "berth.dev/service-proxy";
/// The annotation carrying the proxy's EndpointSlice watermark.
pub const PROGRAMMED_ANNOTATION: &str = "berth.dev/endpointslices-programmed";
/// How long a proxy's Lease is valid without renewal.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Lease is renewed when nothing was programmed meanwhile.
const RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// Errors publishing the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("failed to {what} the service proxy's Lease {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        source: kube::Error,
    },
}

/// A resourceVersion as the number berth's single revision counter makes it.
pub fn resource_version(obj: &impl ResourceExt) -> Option<u64> {
    obj.resource_version()?.parse().ok()
}

/// An EndpointSlice's namespace and name.
pub type SliceKey = (String, String);

/// Follows the proxy's EndpointSlice watch: the highest resourceVersion whose events (and
/// all before it) are in the proxy's store, and which events take a ready endpoint away
/// (those are programmed at once, without waiting for the sync batching).
#[derive(Debug, Default)]
pub struct Watermark {
    /// Every slice event up to this resourceVersion is in the store.
    seen: u64,
    /// During a re-list: the highest resourceVersion listed so far (the store is replaced
    /// only when the list is complete).
    listing: Option<u64>,
    /// Per slice: endpoint address → ready, as last seen.
    ready: HashMap<SliceKey, BTreeMap<String, bool>>,
    /// The same, being rebuilt during a re-list.
    listed: HashMap<SliceKey, BTreeMap<String, bool>>,
}

fn key_of(s: &EndpointSlice) -> SliceKey {
    (s.namespace().unwrap_or_default(), s.name_any())
}

/// A slice's endpoints: first address → ready (unset conditions mean ready, as the API says).
fn readiness(s: &EndpointSlice) -> BTreeMap<String, bool> {
    s.endpoints
        .iter()
        .filter_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some((e.addresses.first()?.clone(), ready))
        })
        .collect()
}

/// Whether an endpoint ready in `old` is not ready (or gone) in `new`.
fn loses_ready(old: Option<&BTreeMap<String, bool>>, new: &BTreeMap<String, bool>) -> bool {
    old.into_iter()
        .flatten()
        .any(|(addr, ready)| *ready && new.get(addr) != Some(&true))
}

impl Watermark {
    /// The watermark: every EndpointSlice event up to it is in the store.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Takes in one event that the reflector has applied to the store; true when it takes
    /// traffic away from a ready endpoint (the proxy then syncs at once).
    pub fn observe(&mut self, event: &watcher::Event<EndpointSlice>) -> bool {
        match event {
            watcher::Event::Apply(s) => {
                self.advance(resource_version(s));
                let new = readiness(s);
                let urgent = loses_ready(self.ready.get(&key_of(s)), &new);
                self.ready.insert(key_of(s), new);
                urgent
            }
            watcher::Event::Delete(s) => {
                self.advance(resource_version(s));
                let old = self.ready.remove(&key_of(s));
                loses_ready(old.as_ref(), &BTreeMap::new())
            }
            watcher::Event::Init => {
                self.listing = Some(0);
                self.listed.clear();
                false
            }
            watcher::Event::InitApply(s) => {
                let rv = resource_version(s).unwrap_or(0);
                self.listing = Some(self.listing.unwrap_or(0).max(rv));
                self.listed.insert(key_of(s), readiness(s));
                false
            }
            watcher::Event::InitDone => {
                // The listed objects are all at or below the list's resourceVersion, which
                // covers every event before it: their highest version is a safe watermark.
                let listed = self.listing.take();
                self.advance(listed);
                let listed = std::mem::take(&mut self.listed);
                let urgent = self.ready.iter().any(|(k, old)| {
                    loses_ready(Some(old), listed.get(k).unwrap_or(&BTreeMap::new()))
                });
                self.ready = listed;
                urgent
            }
        }
    }

    fn advance(&mut self, rv: Option<u64>) {
        if let Some(rv) = rv {
            self.seen = self.seen.max(rv);
        }
    }
}

/// The Lease name of the proxy on `node`.
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Writes the Lease with `programmed` as its annotation (merge patch; created when missing).
async fn write(leases: &Api<Lease>, node: &str, programmed: u64) -> Result<(), LeaseError> {
    let name = lease_name(node);
    let err = |what| {
        let name = name.clone();
        move |source| LeaseError::Api { what, name, source }
    };
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "labels": {PROXY_LABEL: node},
            "annotations": {PROGRAMMED_ANNOTATION: programmed.to_string()},
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now_micro(),
        },
    });
    match leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(body)
                .map_err(|e| err("build")(kube::Error::SerdeError(e)))?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                // Created meanwhile: the next write patches it.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(err("create")(e)),
            }
        }
        Err(e) => Err(err("renew")(e)),
    }
}

/// Publishes the watermark in `programmed` (None until the first sync) on the proxy's Lease
/// right after it advances, and renews the Lease every 10 s, until the task is dropped.
pub async fn publish(
    client: kube::Client,
    node: String,
    mut programmed: watch::Receiver<Option<u64>>,
) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut published: Option<u64> = None;
    let mut renew = tokio::time::interval(RENEW_INTERVAL);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = programmed.changed() => if changed.is_err() { return },
            _ = renew.tick() => published = None,
        }
        let Some(rv) = *programmed.borrow_and_update() else {
            continue;
        };
        if published == Some(rv) {
            continue;
        }
        match write(&leases, &node, rv).await {
            Ok(()) => {
                published = Some(rv);
                renew.reset();
            }
            Err(e) => tracing::warn!("service proxy: {e}"),
        }
    }
}

/// Removes the proxy's Lease (clean shutdown: node agents stop waiting for this proxy).
pub async fn remove(client: kube::Client, node: &str) -> Result<(), LeaseError> {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    match leases
        .delete(&lease_name(node), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(LeaseError::Api {
            what: "delete",
            name: lease_name(node),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::ObjectMeta;

    fn slice(name: &str, rv: u64, eps: &[(&str, bool)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(!*ready),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: None,
        }
    }

    #[test]
    fn watermark_follows_applied_events_and_completed_lists() {
        let mut w = Watermark::default();
        assert!(!w.observe(&watcher::Event::Init));
        w.observe(&watcher::Event::InitApply(slice(
            "a",
            7,
            &[("10.0.0.1", true)],
        )));
        w.observe(&watcher::Event::InitApply(slice("b", 5, &[])));
        // Listed objects are not in the store until the list is complete.
        assert_eq!(w.seen(), 0);
        assert!(!w.observe(&watcher::Event::InitDone));
        assert_eq!(w.seen(), 7);
        // A new endpoint is not urgent; a ready one turning terminating is.
        let added = slice("a", 9, &[("10.0.0.1", true), ("10.0.0.2", true)]);
        assert!(!w.observe(&watcher::Event::Apply(added)));
        assert_eq!(w.seen(), 9);
        let dying = slice("a", 12, &[("10.0.0.1", true), ("10.0.0.2", false)]);
        assert!(w.observe(&watcher::Event::Apply(dying)));
        assert_eq!(w.seen(), 12);
        // Already not ready: not urgent again.
        let again = slice("a", 13, &[("10.0.0.1", true), ("10.0.0.2", false)]);
        assert!(!w.observe(&watcher::Event::Apply(again)));
        // An endpoint removed while ready, and a deleted slice with a ready one, are.
        let removed = slice("a", 15, &[("10.0.0.2", false)]);
        assert!(w.observe(&watcher::Event::Apply(removed)));
        assert!(!w.observe(&watcher::Event::Delete(slice("b", 16, &[]))));
        assert_eq!(w.seen(), 16);
        w.observe(&watcher::Event::Apply(slice(
            "c",
            17,
            &[("10.0.0.3", true)],
        )));
        assert!(w.observe(&watcher::Event::Delete(slice(
            "c",
            18,
            &[("10.0.0.3", true)]
        ))));
        // A re-list never moves the watermark back, and notices endpoints that went away.
        w.observe(&watcher::Event::Apply(slice(
            "d",
            19,
            &[("10.0.0.4", true)],
        )));
        w.observe(&watcher::Event::Init);
        w.observe(&watcher::Event::InitApply(slice(
            "a",
            15,
            &[("10.0.0.2", false)],
        )));
        assert_eq!(w.seen(), 19);
        assert!(w.observe(&watcher::Event::InitDone), "d is gone");
        assert_eq!(w.seen(), 19);
    }

    #[test]
    fn resource_versions_are_numbers() {
        assert_eq!(resource_version(&slice("a", 42, &[])), Some(42));
        let mut s = slice("a", 1, &[]);
        s.metadata.resource_version = Some("x".into());
        assert_eq!(resource_version(&s), None);
    }
}
