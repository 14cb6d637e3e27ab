//! berth's scheduler: binds pending pods to nodes as kube-scheduler does, as a client of the
//! API (watches through kube-runtime, bindings through the `pods/binding` subresource).
//!
//! [`run`] starts it; [`scheduler`] is the loop, [`cache`] its view of the cluster,
//! [`queue`] the pending pods, [`filters`] and [`scores`] upstream's default plugins.

pub mod cache;
pub mod events;
pub mod filters;
pub mod podinfo;
pub mod quantity;
pub mod queue;
pub mod scheduler;
pub mod scores;
pub mod selectors;

pub use scheduler::{run, Config};

/// The scheduler name this scheduler serves (pods with `schedulerName` unset or this).
pub const SCHEDULER_NAME: &str = "default-scheduler";

#[cfg(test)]
pub(crate) mod testing {
    //! Objects for unit tests, built from JSON.

    use crate::podinfo::PodInfo;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::Value;
    use std::sync::Arc;

    /// A pod's scheduling facts (namespace `default` unless given).
    pub fn pod(mut v: Value) -> Arc<PodInfo> {
        if v.pointer("/metadata/namespace").is_none() {
            v["metadata"]["namespace"] = "default".into();
        }
        let pod: Pod = serde_json::from_value(v).unwrap_or_default();
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    /// A pod bound to `node`.
    pub fn bound(node: &str, mut v: Value) -> Arc<PodInfo> {
        if v.get("spec").is_none() {
            v["spec"] = serde_json::json!({"containers": []});
        }
        v["spec"]["nodeName"] = node.into();
        pod(v)
    }

    /// A Node.
    pub fn node(v: Value) -> Arc<Node> {
        Arc::new(serde_json::from_value(v).unwrap_or_default())
    }
}
