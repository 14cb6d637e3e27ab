//! Events the node agent records about pods, as upstream's kubelet does (`Pulled`,
//! `Created`, `Started`, `Killing`, `Failed`), so `kubectl describe pod` shows them.

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// Records one Event about `container` of `pod` (best effort: a failure is only logged).
pub async fn record(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    container: &str,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let now = Utc::now();
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let name = format!(
        "{}.{:x}",
        pod.name_any(),
        now.timestamp_nanos_opt().unwrap_or_default()
    );
    let event = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.name_any(),
            "namespace": ns,
            "uid": pod.uid(),
            "fieldPath": format!("spec.containers{{{container}}}"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(
            "failed to record event {reason} for pod {}: {e}",
            pod.name_any()
        );
    }
}
