//! The garbage collector: follows `ownerReferences` across every served resource. It keeps
//! an owner → dependents graph from the shared informers and deletes dependents whose
//! owners are gone (background), deletes the dependents of an owner in `foregroundDeletion`
//! and waits for those with `blockOwnerDeletion` before releasing the owner, and releases
//! the dependents of an owner with the `orphan` finalizer.

use crate::cache::{Cache, MetaView};
use crate::queue::{run_workers, Queue, ReconcileError, Requeue};
use berth_api::registry::{ResourceInfo, RESOURCES};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The finalizer asking for dependents to be deleted before their owner.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer asking for dependents to be released from their owner.
pub const ORPHAN: &str = "orphan";

/// How many known-absent owner uids are remembered (uids are never reused).
const ABSENT_CACHE: usize = 10_000;

/// Errors of one garbage collection step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} {kind} {name}: {source}")]
    Api {
        what: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

impl ReconcileError for Error {}

#[derive(Debug, Clone)]
struct Node {
    resource: &'static ResourceInfo,
    meta: MetaView,
}

impl Node {
    fn has_finalizer(&self, f: &str) -> bool {
        self.meta.finalizers.iter().any(|x| x == f)
    }

    fn deleting_dependents(&self) -> bool {
        self.meta.deleting && self.has_finalizer(FOREGROUND)
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of objects naming it in their ownerReferences (the owner may be
    /// unknown: not yet seen, or gone).
    dependents: HashMap<String, HashSet<String>>,
    absent: HashSet<String>,
    absent_order: VecDeque<String>,
}

impl Graph {
    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(d) = self.dependents.get_mut(owner) {
            d.remove(dependent);
            if d.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    fn remember_absent(&mut self, uid: &str) {
        if self.absent.insert(uid.to_string()) {
            self.absent_order.push_back(uid.to_string());
            if self.absent_order.len() > ABSENT_CACHE {
                if let Some(old) = self.absent_order.pop_front() {
                    self.absent.remove(&old);
                }
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents
            .get(uid)
            .map(|d| {
                d.iter()
                    .filter_map(|u| self.nodes.get(u).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The garbage collector.
pub struct GarbageCollector {
    client: Client,
    graph: Mutex<Graph>,
    queue: Arc<Queue<String>>,
}

fn owner_uids(m: &MetaView) -> HashSet<&str> {
    m.owner_references.iter().map(|o| o.uid.as_str()).collect()
}

impl GarbageCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one object change in the graph and queues what it affects.
    fn observe(&self, resource: &'static ResourceInfo, meta: MetaView, deleted: bool) {
        if meta.uid.is_empty() {
            return;
        }
        let uid = meta.uid.clone();
        let mut g = self.lock();
        let mut queue = Vec::new();
        if deleted {
            let Some(old) = g.nodes.remove(&uid) else {
                g.remember_absent(&uid);
                return;
            };
            g.remember_absent(&uid);
            for o in owner_uids(&old.meta) {
                g.unlink(o, &uid);
                if g.nodes.get(o).is_some_and(Node::deleting_dependents) {
                    queue.push(o.to_string());
                }
            }
            // Its dependents now point at a missing owner.
            if let Some(d) = g.dependents.get(&uid) {
                queue.extend(d.iter().cloned());
            }
        } else {
            let node = Node { resource, meta };
            let old = g.nodes.insert(uid.clone(), node.clone());
            let new_owners = owner_uids(&node.meta);
            let old_owners = old
                .as_ref()
                .map(|o| owner_uids(&o.meta))
                .unwrap_or_default();
            for o in old_owners.difference(&new_owners) {
                g.unlink(o, &uid);
                if g.nodes.get(*o).is_some_and(Node::deleting_dependents) {
                    queue.push(o.to_string());
                }
            }
            for o in new_owners.difference(&old_owners) {
                g.dependents
                    .entry(o.to_string())
                    .or_default()
                    .insert(uid.clone());
            }
            let changed = old.as_ref().is_none_or(|o| {
                o.meta.owner_references != node.meta.owner_references
                    || o.meta.deleting != node.meta.deleting
                    || o.meta.finalizers != node.meta.finalizers
            });
            let gc_finalizer = node.has_finalizer(FOREGROUND) || node.has_finalizer(ORPHAN);
            if changed && (!new_owners.is_empty() || (node.meta.deleting && gc_finalizer)) {
                queue.push(uid.clone());
            }
            // A blocking dependent that starts being deleted may be the last one an owner
            // waits for only once gone; nothing to do until then.
        }
        drop(g);
        for k in queue {
            self.queue.add(k);
        }
    }

    async fn process(self: Arc<Self>, uid: String) -> Result<Requeue, Error> {
        let (node, dependents) = {
            let g = self.lock();
            let Some(node) = g.nodes.get(&uid).cloned() else {
                return Ok(None);
            };
            let deps = g.dependents_of(&uid);
            (node, deps)
        };
        if node.meta.deleting {
            if node.has_finalizer(ORPHAN) {
                return self.orphan_dependents(&node, &dependents).await;
            }
            if node.has_finalizer(FOREGROUND) {
                return self.delete_dependents(&node, &dependents).await;
            }
            return Ok(None);
        }
        self.attempt_to_delete(&node, !dependents.is_empty()).await
    }

    /// `orphan`: remove the owner from its dependents' ownerReferences, then the finalizer.
    async fn orphan_dependents(&self, owner: &Node, dependents: &[Node]) -> Result<Requeue, Error> {
        for d in dependents {
            let keep: Vec<OwnerReference> = d
                .meta
                .owner_references
                .iter()
                .filter(|r| r.uid != owner.meta.uid)
                .cloned()
                .collect();
            self.patch_owner_references(d, keep).await?;
        }
        self.remove_finalizer(owner, ORPHAN).await?;
        Ok(None)
    }

    /// `foregroundDeletion`: delete every dependent, and release the owner once no
    /// dependent with `blockOwnerDeletion` is left.
    async fn delete_dependents(&self, owner: &Node, dependents: &[Node]) -> Result<Requeue, Error> {
        let blocking = dependents.iter().filter(|d| {
            d.meta
                .owner_references
                .iter()
                .any(|r| r.uid == owner.meta.uid && r.block_owner_deletion == Some(true))
        });
        if blocking.count() == 0 {
            self.remove_finalizer(owner, FOREGROUND).await?;
            return Ok(None);
        }
        for d in dependents {
            if !d.meta.deleting {
                self.queue.add(d.meta.uid.clone());
            }
        }
        // Dependents going away queue the owner again; this is only a safety net.
        Ok(Some(Duration::from_secs(60)))
    }

    /// An object with owners: delete it when none of them is left, or drop the references
    /// to owners that are gone (or waiting for their dependents) when some still are.
    async fn attempt_to_delete(&self, node: &Node, has_dependents: bool) -> Result<Requeue, Error> {
        if node.meta.owner_references.is_empty() {
            return Ok(None);
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &node.meta.owner_references {
            match self.owner_state(node, r).await? {
                OwnerState::Present => solid.push(r),
                OwnerState::Absent => dangling.push(r),
                OwnerState::WaitingForDependents => waiting.push(r),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(None);
            }
            let gone: HashSet<&str> = dangling
                .iter()
                .chain(waiting.iter())
                .map(|r| r.uid.as_str())
                .collect();
            let keep = node
                .meta
                .owner_references
                .iter()
                .filter(|r| !gone.contains(r.uid.as_str()))
                .cloned()
                .collect();
            self.patch_owner_references(node, keep).await?;
            return Ok(None);
        }
        let policy = if !waiting.is_empty() && has_dependents {
            "Foreground"
        } else if node.has_finalizer(ORPHAN) {
            "Orphan"
        } else if node.has_finalizer(FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        tracing::debug!(
            kind = node.resource.kind,
            name = %node.meta.name,
            policy,
            "garbage collecting an object whose owners are gone"
        );
        let dp = DeleteParams {
            propagation_policy: Some(match policy {
                "Foreground" => kube::api::PropagationPolicy::Foreground,
                "Orphan" => kube::api::PropagationPolicy::Orphan,
                _ => kube::api::PropagationPolicy::Background,
            }),
            preconditions: Some(Preconditions {
                uid: Some(node.meta.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(node.resource, node.meta.namespace.as_deref())
            .delete(&node.meta.name, &dp)
            .await
        {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(source) => Err(Error::Api {
                what: "delete",
                kind: node.resource.kind,
                name: node.meta.name.clone(),
                source,
            }),
        }
    }

    async fn owner_state(&self, node: &Node, r: &OwnerReference) -> Result<OwnerState, Error> {
        {
            let g = self.lock();
            if let Some(owner) = g.nodes.get(&r.uid) {
                return Ok(if owner.deleting_dependents() {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Present
                });
            }
            if g.absent.contains(&r.uid) {
                return Ok(OwnerState::Absent);
            }
        }
        // Not seen (yet): ask the API, as the owner's watch may lag behind this one.
        let Some(resource) = RESOURCES
            .iter()
            .find(|x| x.kind == r.kind && x.api_version() == r.api_version)
        else {
            // An owner of a kind we do not serve cannot be checked: leave the object alone.
            return Ok(OwnerState::Present);
        };
        let namespace = match (resource.namespaced, node.meta.namespace.as_deref()) {
            (true, Some(ns)) => Some(ns),
            (true, None) => {
                // A cluster-scoped object cannot be owned by a namespaced one.
                return Ok(OwnerState::Absent);
            }
            (false, _) => None,
        };
        match self.api(resource, namespace).get_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let deleting = o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| f.iter().any(|x| x == FOREGROUND));
                Ok(if deleting {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Present
                })
            }
            Ok(_) => {
                self.lock().remember_absent(&r.uid);
                Ok(OwnerState::Absent)
            }
            Err(source) => Err(Error::Api {
                what: "get owner",
                kind: resource.kind,
                name: r.name.clone(),
                source,
            }),
        }
    }

    fn api(&self, r: &ResourceInfo, namespace: Option<&str>) -> Api<DynamicObject> {
        api_for(&self.client, r, namespace)
    }

    async fn patch_owner_references(
        &self,
        node: &Node,
        keep: Vec<OwnerReference>,
    ) -> Result<(), Error> {
        let set = if keep.is_empty() {
            serde_json::json!({"op": "remove", "path": "/metadata/ownerReferences"})
        } else {
            serde_json::json!({"op": "replace", "path": "/metadata/ownerReferences", "value": keep})
        };
        self.patch_meta(node, set, "update the ownerReferences of")
            .await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let keep: Vec<&String> = node
            .meta
            .finalizers
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let set = if keep.is_empty() {
            serde_json::json!({"op": "remove", "path": "/metadata/finalizers"})
        } else {
            serde_json::json!({"op": "replace", "path": "/metadata/finalizers", "value": keep})
        };
        self.patch_meta(node, set, "remove a finalizer of").await
    }

    /// A JSON patch guarded by the resourceVersion the decision was made on.
    async fn patch_meta(
        &self,
        node: &Node,
        op: serde_json::Value,
        what: &'static str,
    ) -> Result<(), Error> {
        let patch = serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": node.meta.resource_version},
            op,
        ]);
        let patch: json_patch::Patch = match serde_json::from_value(patch) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        match self
            .api(node.resource, node.meta.namespace.as_deref())
            .patch(
                &node.meta.name,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::Api {
                what,
                kind: node.resource.kind,
                name: node.meta.name.clone(),
                source,
            }),
        }
    }
}

enum OwnerState {
    Present,
    Absent,
    WaitingForDependents,
}

/// A dynamic API handle for one served resource.
pub(crate) fn api_for(
    client: &Client,
    r: &ResourceInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, r.plural);
    match namespace {
        Some(ns) if r.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// The resources the collector watches: every served one, except second views of a
/// stored resource (`events.k8s.io` Events are the core Events).
fn collected_resources() -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES.iter().filter(|r| r.group != "events.k8s.io")
}

/// Registers the collector's informers on `cache`; call `run` once the cache is started.
pub fn new(cache: &Arc<Cache>) -> Arc<GarbageCollector> {
    let gc = Arc::new(GarbageCollector {
        client: cache.client().clone(),
        graph: Mutex::new(Graph::default()),
        queue: Queue::new(),
    });
    for r in collected_resources() {
        let informer = cache.meta_informer(r);
        let weak = Arc::downgrade(&gc);
        informer.subscribe_meta(Box::new(move |meta, deleted| {
            if let Some(gc) = weak.upgrade() {
                gc.observe(r, meta, deleted);
            }
        }));
    }
    gc
}

/// Runs the collector until `stop` turns true: it acts only once every watched resource
/// has been listed, so the graph is whole.
pub async fn run(gc: Arc<GarbageCollector>, cache: Arc<Cache>, stop: watch::Receiver<bool>) {
    let informers: Vec<_> = collected_resources()
        .map(|r| cache.meta_informer(r))
        .collect();
    let mut stop_wait = stop.clone();
    loop {
        if informers.iter().all(|i| i.synced()) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop_wait.wait_for(|s| *s) => return,
        }
    }
    let queue = gc.queue.clone();
    run_workers(
        "garbage collector",
        queue,
        2,
        move |uid: String| gc.clone().process(uid),
        stop,
    )
    .await;
}
