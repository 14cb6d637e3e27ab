//! The namespace controller: empties a Terminating namespace of every namespaced resource,
//! then removes the `kubernetes` finalizer so the API server deletes the namespace.

use crate::cache::{Cache, Change, Informer};
use crate::queue::{run_workers, Queue, ReconcileError};
use berth_api::registry::RESOURCES;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what} in namespace {namespace}: {source}")]
    Api {
        what: String,
        namespace: String,
        source: kube::Error,
    },
    #[error("failed to encode namespace {0}: {1}")]
    Encode(String, serde_json::Error),
}

impl ReconcileError for Error {}

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";

/// How long after a namespace starts terminating its contents are deleted. Clients such as
/// `kubectl delete -f` delete a namespace and then the objects listed after it; upstream's
/// controller is slow enough (discovery first) that those deletes find their objects, and
/// so must ours.
const CONTENT_DELETION_DELAY: Duration = Duration::from_secs(2);

struct Context {
    client: Client,
}

/// The controller's state: namespaces come from the shared cache.
pub struct Controller {
    namespaces: Arc<Informer<Namespace>>,
    queue: Arc<Queue<String>>,
    ctx: Arc<Context>,
}

/// Registers the controller's informer on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        namespaces: cache.informer(),
        queue: Queue::new(),
        ctx: Arc::new(Context {
            client: cache.client().clone(),
        }),
    });
    let q = c.queue.clone();
    c.namespaces.subscribe(move |change| {
        if let Change::Applied { new, .. } = change {
            q.add(new.name_any());
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.namespaces.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "namespace",
        queue,
        2,
        move |name: String| {
            let (namespaces, ctx) = (c.namespaces.clone(), c.ctx.clone());
            async move {
                let Some(ns) = namespaces.get("", &name) else {
                    return Ok(None);
                };
                reconcile(ns, ctx).await.map(|a| a.requeue_after)
            }
        },
        stop,
    )
    .await;
}

/// What a reconcile asks for next.
struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    fn requeue(after: Duration) -> Self {
        Action {
            requeue_after: Some(after),
        }
    }

    fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let pending = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    if !pending {
        return Ok(Action::await_change());
    }
    if let Some(since) = ns.metadata.deletion_timestamp.as_ref() {
        let age = k8s_openapi::chrono::Utc::now().signed_duration_since(since.0);
        let age = age.to_std().unwrap_or(Duration::ZERO);
        if age < CONTENT_DELETION_DELAY {
            return Ok(Action::requeue(CONTENT_DELETION_DELAY - age));
        }
    }
    let api_err = |what: String, namespace: &str| {
        let namespace = namespace.to_string();
        move |source| Error::Api {
            what,
            namespace,
            source,
        }
    };
    let mut remaining = 0;
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, r.plural);
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, &ar);
        api.delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
            .map_err(api_err(format!("delete {}", r.plural), &name))?;
        let left = api
            .list(&ListParams::default().limit(1))
            .await
            .map_err(api_err(format!("list {}", r.plural), &name))?;
        remaining += left.items.len();
    }
    if remaining > 0 {
        // Objects with finalizers or grace periods are still going away.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|x| x != FINALIZER);
        }
    }
    let body = serde_json::to_vec(&finalized).map_err(|e| Error::Encode(name.clone(), e))?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    namespaces
        .replace_subresource("finalize", &name, &PostParams::default(), body)
        .await
        .map_err(api_err("finalize".into(), &name))?;
    Ok(Action::await_change())
}
