//! The shared cache of watched objects (informers): one watch per resource type for every
//! controller in the process. Each informer keeps the current objects of its type in memory
//! and tells its subscribers about every change; controllers read the cache instead of the
//! API, and the garbage collector sees every type through one type-erased view.

use berth_api::registry::ResourceInfo;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// A change an informer saw.
pub enum Change<K> {
    /// An object was added (`old` is `None`) or modified.
    Applied { old: Option<Arc<K>>, new: Arc<K> },
    /// An object was deleted (its last known state).
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it is now (or was last seen, for a deletion).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(o) => o,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// The cache key of an object: namespace (empty for cluster-scoped) and name.
pub type Key = (String, String);

/// The watched objects of one resource type.
pub struct Informer<K: 'static> {
    api: Api<K>,
    objects: RwLock<BTreeMap<Key, Arc<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
    strip: fn(&mut K),
}

fn key_of<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new(api: Api<K>, strip: fn(&mut K)) -> Self {
        Informer {
            api,
            objects: RwLock::new(BTreeMap::new()),
            handlers: RwLock::new(Vec::new()),
            synced: watch::channel(false).0,
            strip,
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The object named `name` in `namespace` (`""` for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .range((namespace.to_string(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.values().cloned().collect()
    }

    /// Calls `handler` for every change from now on, after replaying the current objects as
    /// additions. Handlers run on the informer's task: they must be quick and must not call
    /// back into this informer's subscribe.
    pub fn subscribe(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        let mut handlers = self.handlers.write().unwrap_or_else(|e| e.into_inner());
        for o in self.list() {
            handler(&Change::Applied { old: None, new: o });
        }
        handlers.push(Box::new(handler));
    }

    /// Whether the first full list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full list has arrived.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn notify(&self, changes: &[Change<K>]) {
        let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            for h in handlers.iter() {
                h(c);
            }
        }
    }

    fn apply(&self, mut o: K) {
        (self.strip)(&mut o);
        let new = Arc::new(o);
        let old = {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            objects.insert(key_of(new.as_ref()), new.clone())
        };
        self.notify(&[Change::Applied { old, new }]);
    }

    fn delete(&self, o: K) {
        let key = key_of(&o);
        let last = {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            objects.remove(&key)
        };
        let mut o = o;
        (self.strip)(&mut o);
        self.notify(&[Change::Deleted(last.unwrap_or_else(|| Arc::new(o)))]);
    }

    /// Replaces the whole content after a (re)list: objects missing from it were deleted
    /// while the watch was down.
    fn replace(&self, listed: BTreeMap<Key, Arc<K>>) {
        let mut changes = Vec::new();
        {
            let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::replace(&mut *objects, listed);
            for (k, new) in objects.iter() {
                let prev = old.get(k).cloned();
                let same = prev
                    .as_ref()
                    .is_some_and(|p| p.resource_version() == new.resource_version());
                if !same {
                    changes.push(Change::Applied {
                        old: prev,
                        new: new.clone(),
                    });
                }
            }
            for (k, gone) in old {
                if !objects.contains_key(&k) {
                    changes.push(Change::Deleted(gone));
                }
            }
        }
        self.notify(&changes);
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut events = watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Option<BTreeMap<Key, Arc<K>>> = None;
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(event) = event else { return };
            match event {
                Ok(Event::Apply(o)) => self.apply(o),
                Ok(Event::Delete(o)) => self.delete(o),
                Ok(Event::Init) => listing = Some(BTreeMap::new()),
                Ok(Event::InitApply(mut o)) => {
                    (self.strip)(&mut o);
                    listing
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key_of(&o), Arc::new(o));
                }
                Ok(Event::InitDone) => {
                    self.replace(listing.take().unwrap_or_default());
                    self.synced.send_replace(true);
                }
                Err(e) => tracing::debug!("watch of {}: {e}", self.api.resource_url()),
            }
        }
    }
}

/// What the garbage collector needs of any object.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaView {
    pub uid: String,
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: String,
    pub owner_references: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl MetaView {
    fn of(meta: &ObjectMeta) -> Self {
        MetaView {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            owner_references: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// An informer seen through object metadata only, whatever its type.
pub trait MetaInformer: Send + Sync {
    /// Calls `handler(meta, deleted)` for every current object and every change.
    fn subscribe_meta(&self, handler: Box<dyn Fn(MetaView, bool) + Send + Sync>);
    /// Whether the first full list has arrived.
    fn synced(&self) -> bool;
    /// Runs the watch on a task until `stop` turns true.
    fn spawn(self: Arc<Self>, stop: watch::Receiver<bool>);
}

impl<K> MetaInformer for Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn subscribe_meta(&self, handler: Box<dyn Fn(MetaView, bool) + Send + Sync>) {
        self.subscribe(move |c| match c {
            Change::Applied { new, .. } => handler(MetaView::of(new.meta()), false),
            Change::Deleted(o) => handler(MetaView::of(o.meta()), true),
        });
    }

    fn synced(&self) -> bool {
        self.is_synced()
    }

    fn spawn(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tokio::spawn(self.run(stop));
    }
}

struct Entry {
    typed: Arc<dyn Any + Send + Sync>,
    meta: Arc<dyn MetaInformer>,
}

/// The process-wide set of informers, created on first use and started together.
pub struct Cache {
    client: Client,
    informers: Mutex<HashMap<String, Entry>>,
    started: Mutex<Option<watch::Receiver<bool>>>,
}

fn strip_typed<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

fn strip_dynamic(o: &mut DynamicObject) {
    // The garbage collector only reads metadata: keep nothing else of other types.
    o.data = serde_json::Value::Null;
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
    o.metadata.labels = None;
}

impl Cache {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Cache {
            client,
            informers: Mutex::new(HashMap::new()),
            started: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The informer of a typed resource (cluster-wide), created on first use.
    pub fn informer<K>(&self) -> Arc<Informer<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let key = format!("{}.{}", K::plural(&()), K::group(&()));
        let mut informers = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = informers.get(&key) {
            if let Ok(i) = e.typed.clone().downcast::<Informer<K>>() {
                return i;
            }
        }
        let informer = Arc::new(Informer::new(
            Api::all(self.client.clone()),
            strip_typed::<K>,
        ));
        self.start_if_running(&informer);
        informers.insert(
            key,
            Entry {
                typed: informer.clone(),
                meta: informer.clone(),
            },
        );
        informer
    }

    /// The metadata view of any served resource: the typed informer for the types
    /// controllers read, a metadata-only dynamic one for the rest.
    pub fn meta_informer(&self, r: &ResourceInfo) -> Arc<dyn MetaInformer> {
        match (r.group, r.kind) {
            ("", "Pod") => return self.informer::<Pod>(),
            ("", "Namespace") => return self.informer::<Namespace>(),
            ("", "ServiceAccount") => return self.informer::<ServiceAccount>(),
            ("apps", "ReplicaSet") => return self.informer::<ReplicaSet>(),
            ("apps", "Deployment") => return self.informer::<Deployment>(),
            ("apps", "StatefulSet") => return self.informer::<StatefulSet>(),
            ("apps", "DaemonSet") => return self.informer::<DaemonSet>(),
            ("apps", "ControllerRevision") => return self.informer::<ControllerRevision>(),
            ("", "Service") => return self.informer::<Service>(),
            ("", "Endpoints") => return self.informer::<Endpoints>(),
            ("", "Node") => return self.informer::<Node>(),
            ("discovery.k8s.io", "EndpointSlice") => return self.informer::<EndpointSlice>(),
            _ => {}
        }
        let key = format!("{}.{}", r.plural, r.group);
        let mut informers = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = informers.get(&key) {
            return e.meta.clone();
        }
        let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, r.plural);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let informer = Arc::new(Informer::new(api, strip_dynamic));
        self.start_if_running(&informer);
        informers.insert(
            key,
            Entry {
                typed: informer.clone(),
                meta: informer.clone(),
            },
        );
        informer
    }

    fn start_if_running<K>(&self, informer: &Arc<Informer<K>>)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stop) = started.as_ref() {
            informer.clone().spawn(stop.clone());
        }
    }

    /// Starts every informer created so far (and any created later) until `stop` turns true.
    pub fn start(&self, stop: watch::Receiver<bool>) {
        let informers = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_some() {
            return;
        }
        for e in informers.values() {
            e.meta.clone().spawn(stop.clone());
        }
        *started = Some(stop);
    }
}
