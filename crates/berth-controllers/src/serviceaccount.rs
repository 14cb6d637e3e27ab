//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount,
//! recreated if it is deleted.

use crate::cache::{Cache, Change, Informer};
use crate::queue::{run_workers, Queue, ReconcileError, Requeue};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use std::sync::Arc;
use tokio::sync::watch;

/// The ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to create the default ServiceAccount in namespace {0}: {1}")]
    Create(String, kube::Error),
}

impl ReconcileError for Error {}

/// The controller's state.
pub struct Controller {
    cache: Arc<Cache>,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    queue: Arc<Queue<String>>,
}

/// Registers the controller's informers on `cache`.
pub fn new(cache: &Arc<Cache>) -> Arc<Controller> {
    let c = Arc::new(Controller {
        cache: cache.clone(),
        namespaces: cache.informer(),
        accounts: cache.informer(),
        queue: Queue::new(),
    });
    let q = c.queue.clone();
    c.namespaces.subscribe(move |change| {
        if let Change::Applied { new, .. } = change {
            q.add(new.name_any());
        }
    });
    let q = c.queue.clone();
    c.accounts.subscribe(move |change| {
        if let Change::Deleted(sa) = change {
            if sa.name_any() == DEFAULT {
                q.add(sa.namespace().unwrap_or_default());
            }
        }
    });
    c
}

/// Runs the controller until `stop` turns true.
pub async fn run(c: Arc<Controller>, stop: watch::Receiver<bool>) {
    c.namespaces.wait_synced().await;
    c.accounts.wait_synced().await;
    let queue = c.queue.clone();
    run_workers(
        "serviceaccount",
        queue,
        1,
        move |ns: String| c.clone().reconcile(ns),
        stop,
    )
    .await;
}

impl Controller {
    async fn reconcile(self: Arc<Self>, namespace: String) -> Result<Requeue, Error> {
        let Some(ns) = self.namespaces.get("", &namespace) else {
            return Ok(None);
        };
        let active = ns.metadata.deletion_timestamp.is_none()
            && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
        if !active || self.accounts.get(&namespace, DEFAULT).is_some() {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.cache.client().clone(), &namespace);
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(DEFAULT.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(None),
            // Already there (the cache lags), or the namespace started terminating.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(None),
            Err(e) => Err(Error::Create(namespace, e)),
        }
    }
}
