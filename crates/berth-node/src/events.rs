//! Events the node agent records about pods, as upstream's kubelet does (`Pulled`,
//! `Created`, `Started`, `Killing`, `Failed`, `Unhealthy`, ...), so `kubectl describe pod`
//! shows them. As upstream's event correlator, the same event again within ten minutes
//! bumps the first one's `count` and `lastTimestamp` instead of making a new object
//! (`kubectl describe` shows "(x5 over 2m)").

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// How long a repeated event counts onto the first one.
const AGGREGATE_WINDOW_MINUTES: i64 = 10;

/// An event recorded lately: its object's name, count and last time.
struct Recent {
    name: String,
    count: i32,
    last: DateTime<Utc>,
}

/// The events this process recorded lately, by what they say.
fn recent() -> &'static Mutex<HashMap<String, Recent>> {
    static RECENT: OnceLock<Mutex<HashMap<String, Recent>>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(HashMap::new()))
}

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
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let key = [
        ns.as_str(),
        &pod.uid().unwrap_or_default(),
        container,
        kind,
        reason,
        message,
    ]
    .join("\0");
    let window = chrono::Duration::minutes(AGGREGATE_WINDOW_MINUTES);
    let repeat = recent().lock().ok().and_then(|m| {
        m.get(&key)
            .filter(|r| now - r.last < window)
            .map(|r| (r.name.clone(), r.count + 1))
    });
    if let Some((name, count)) = repeat {
        let patch = json!({"count": count, "lastTimestamp": stamp});
        if api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
        {
            if let Ok(mut m) = recent().lock() {
                m.insert(
                    key,
                    Recent {
                        name,
                        count,
                        last: now,
                    },
                );
            }
            return;
        }
    }
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
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {
            if let Ok(mut m) = recent().lock() {
                if m.len() >= 4096 {
                    m.retain(|_, r| now - r.last < window);
                }
                m.insert(
                    key,
                    Recent {
                        name,
                        count: 1,
                        last: now,
                    },
                );
            }
        }
        Err(e) => tracing::debug!(
            "failed to record event {reason} for pod {}: {e}",
            pod.name_any()
        ),
    }
}
