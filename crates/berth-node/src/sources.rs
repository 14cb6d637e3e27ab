//! The ConfigMaps and Secrets pods on this node read (env and volumes): one watch of each kind
//! shared by the whole node (kube-runtime reflector stores) instead of a GET per pod and sync,
//! so running pods' volumes can be compared with their sources every second at no API cost.
//! A miss in a store is confirmed with one GET, so an object created just before its pod is
//! never reported missing while the watch catches up. Also what was last written to each
//! volume (a content hash), so unchanged volumes are not rewritten.

use crate::atomic::Payload;
use crate::downward::Allocatable;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use std::collections::HashMap;
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

/// The node's shared view of ConfigMaps and Secrets, and of the volumes written from them.
pub struct Sources {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    writers: Mutex<Option<Writers>>,
    /// Content hash of each volume as last written, by `<pod uid>/<volume name>`.
    written: Mutex<HashMap<String, u64>>,
    allocatable: OnceLock<Allocatable>,
}

impl Default for Sources {
    fn default() -> Self {
        let (config_maps, cm_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        Sources {
            config_maps,
            secrets,
            writers: Mutex::new(Some((cm_writer, secret_writer))),
            written: Mutex::default(),
            allocatable: OnceLock::new(),
        }
    }
}

/// Keeps `writer` filled from a watch of every `K`.
async fn reflect<K: Source>(client: kube::Client, writer: reflector::store::Writer<K>) {
    reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    )
    .for_each(|r| {
        if let Err(e) = r {
            tracing::debug!("failed to watch {}s: {e}", K::KIND);
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
        async move {
            let Some((cm_writer, secret_writer)) = writers else {
                return;
            };
            tokio::join!(
                reflect(client.clone(), cm_writer),
                reflect(client, secret_writer),
            );
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
