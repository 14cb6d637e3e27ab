//! The ConfigMaps and Secrets pods on this node read (env and volumes): one watch of each kind
//! shared by the whole node (kube-runtime reflector stores) instead of a GET per pod and sync.
//! A miss in a store is confirmed with one GET, so an object created just before its pod is
//! never reported missing while the watch catches up. Every change the watches see is
//! announced ([`Sources::changes`]) so the pod worker refreshes the volumes of the pods that
//! mount the object — volumes follow their sources from events, not by polling. Also what was
//! last written to each volume (a content hash), so unchanged volumes are not rewritten, and
//! which pods' volumes are due a refresh.

use crate::atomic::Payload;
use crate::downward::Allocatable;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

type Writers = (
    reflector::store::Writer<ConfigMap>,
    reflector::store::Writer<Secret>,
);

/// A kind pods read from the node's shared watches: ConfigMap or Secret.
pub trait Source:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + k8s_openapi::serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind as upstream's messages name it (`configmap`, `secret`).
    const KIND: &'static str;

    /// The store of this kind in `sources`.
    fn store(sources: &Sources) -> &Store<Self>;

    /// The object's keys and values (a ConfigMap's `data` and `binaryData`, a Secret's `data`).
    fn entries(&self) -> HashMap<String, Vec<u8>>;
}

impl Source for ConfigMap {
    const KIND: &'static str = "configmap";

    fn store(sources: &Sources) -> &Store<Self> {
        &sources.config_maps
    }

    fn entries(&self) -> HashMap<String, Vec<u8>> {
        let text = self.data.iter().flatten().map(|(k, v)| (k, v.as_bytes()));
        let binary = self
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k, &v.0[..]));
        text.chain(binary)
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect()
    }
}

impl Source for Secret {
    const KIND: &'static str = "secret";

    fn store(sources: &Sources) -> &Store<Self> {
        &sources.secrets
    }

    fn entries(&self) -> HashMap<String, Vec<u8>> {
        self.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }
}

/// A ConfigMap or Secret the node's watch saw change (made, updated or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChange {
    /// [`Source::KIND`] of the object.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl SourceChange {
    fn of<K: Source>(object: &K) -> Self {
        SourceChange {
            kind: K::KIND,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }
}

/// The node's shared view of ConfigMaps and Secrets, and of the volumes written from them.
pub struct Sources {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    writers: Mutex<Option<Writers>>,
    changes_tx: mpsc::UnboundedSender<SourceChange>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<SourceChange>>>,
    /// Content hash of each volume as last written, by `<pod uid>/<volume name>`.
    written: Mutex<HashMap<String, u64>>,
    /// Pods (by uid) whose volumes' sources changed since their last refresh.
    stale: Mutex<HashSet<String>>,
    /// A hash of each pod's labels and annotations (what downwardAPI volumes show) as its
    /// volumes were last refreshed with, by pod uid.
    pod_metadata: Mutex<HashMap<String, u64>>,
    allocatable: OnceLock<Allocatable>,
}

impl Default for Sources {
    fn default() -> Self {
        let (config_maps, cm_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        let (changes_tx, changes_rx) = mpsc::unbounded();
        Sources {
            config_maps,
            secrets,
            writers: Mutex::new(Some((cm_writer, secret_writer))),
            changes_tx,
            changes_rx: Mutex::new(Some(changes_rx)),
            written: Mutex::default(),
            stale: Mutex::default(),
            pod_metadata: Mutex::default(),
            allocatable: OnceLock::new(),
        }
    }
}

/// Keeps `writer` filled from a watch of every `K` and announces each change on `changes`.
async fn reflect<K: Source>(
    client: kube::Client,
    writer: reflector::store::Writer<K>,
    changes: mpsc::UnboundedSender<SourceChange>,
) {
    reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    )
    .touched_objects()
    .for_each(|r| {
        match r {
            Ok(object) => {
                let _ = changes.unbounded_send(SourceChange::of(&object));
            }
            Err(e) => tracing::debug!("failed to watch {}s: {e}", K::KIND),
        }
        futures::future::ready(())
    })
    .await
}

impl Sources {
    /// Keeps the stores filled from watches of all namespaces; runs until dropped (only the
    /// first call does anything).
    pub fn watch(&self, client: kube::Client) -> impl std::future::Future<Output = ()> {
        let writers = self.writers.lock().ok().and_then(|mut w| w.take());
        let changes = self.changes_tx.clone();
        async move {
            let Some((cm_writer, secret_writer)) = writers else {
                return;
            };
            tokio::join!(
                reflect(client.clone(), cm_writer, changes.clone()),
                reflect(client, secret_writer, changes),
            );
        }
    }

    /// The ConfigMaps and Secrets that change, as the watches see them (once: later calls
    /// get a stream that ends at once).
    pub fn changes(&self) -> mpsc::UnboundedReceiver<SourceChange> {
        match self.changes_rx.lock().ok().and_then(|mut r| r.take()) {
            Some(rx) => rx,
            None => mpsc::unbounded().1,
        }
    }

    /// A ConfigMap or Secret from its store; a miss is confirmed from the API when
    /// `confirm_miss` or while the store is still loading (`None`: it does not exist).
    pub async fn get<K: Source>(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        confirm_miss: bool,
    ) -> Result<Option<Arc<K>>, kube::Error> {
        let store = K::store(self);
        if let Some(object) = store.get(&ObjectRef::new(name).within(ns)) {
            return Ok(Some(object));
        }
        if !confirm_miss && is_ready(store) {
            return Ok(None);
        }
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

    /// Marks `pod`'s volumes as due a refresh (a source they read changed).
    pub fn mark_stale(&self, pod_uid: &str) {
        if let Ok(mut s) = self.stale.lock() {
            s.insert(pod_uid.to_string());
        }
    }

    /// Whether `pod`'s volumes are due a refresh: a source changed since the last time, its
    /// labels or annotations changed, or they were never refreshed by this agent. Clears the
    /// mark (a change that comes later marks it again).
    pub fn take_stale(&self, pod: &Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        let marked = self.stale.lock().is_ok_and(|mut s| s.remove(&uid));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (pod.labels(), pod.annotations()).hash(&mut h);
        let metadata = h.finish();
        let changed = self
            .pod_metadata
            .lock()
            .is_ok_and(|mut m| m.insert(uid, metadata) != Some(metadata));
        marked || changed
    }

    /// The node's allocatable amounts (read from the host once).
    pub fn allocatable(&self, data_dir: &std::path::Path) -> &Allocatable {
        self.allocatable
            .get_or_init(|| Allocatable::of_host(data_dir))
    }

    /// Whether `payload` is what was last written to the volume `key`.
    pub fn is_written(&self, key: &str, payload: &Payload) -> bool {
        let h = hash(payload);
        self.written.lock().is_ok_and(|w| w.get(key) == Some(&h))
    }

    /// Whether anything was written to the volume `key` by this agent.
    pub fn was_written(&self, key: &str) -> bool {
        self.written.lock().is_ok_and(|w| w.contains_key(key))
    }

    /// Remembers that `payload` is now the content of the volume `key`.
    pub fn record_written(&self, key: &str, payload: &Payload) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(key.to_string(), hash(payload));
        }
    }

    /// Forgets the volumes of pods that are gone (`keep` says which pod uids remain).
    pub fn forget_pods(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut w) = self.written.lock() {
            w.retain(|k, _| keep(k.split('/').next().unwrap_or_default()));
        }
        if let Ok(mut s) = self.stale.lock() {
            s.retain(|uid| keep(uid));
        }
        if let Ok(mut m) = self.pod_metadata.lock() {
            m.retain(|uid, _| keep(uid));
        }
    }
}

/// Whether a store has loaded its initial list.
fn is_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

fn hash(payload: &Payload) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}
