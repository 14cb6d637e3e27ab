//! Events the scheduler records about pods (`Scheduled`, `FailedScheduling`), from
//! `default-scheduler`, as upstream's scheduler records them. A repeat of the same event
//! within ten minutes bumps the first one's `count` and `lastTimestamp` (`kubectl describe`
//! shows "(x3 over 20s)").

use crate::podinfo::PodInfo;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a repeated event counts onto the first one.
const AGGREGATE_WINDOW_MINUTES: i64 = 10;
/// How many recent events are remembered for aggregation.
const MAX_RECENT: usize = 4096;

struct Recent {
    name: String,
    count: i32,
    last: DateTime<Utc>,
}

/// Records Events as one reporting instance of the scheduler.
pub struct Recorder {
    client: kube::Client,
    instance: String,
    recent: Mutex<HashMap<String, Recent>>,
}

impl Recorder {
    /// A recorder reporting as `default-scheduler` from `instance` (the host name).
    pub fn new(client: kube::Client, instance: String) -> Self {
        Recorder {
            client,
            instance,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Records one Event about `pod` (best effort: a failure is only logged).
    pub async fn record(
        &self,
        pod: &PodInfo,
        kind: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let now = Utc::now();
        let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let key = [pod.namespace.as_str(), &pod.uid, reason, message].join("\0");
        let window = chrono::Duration::minutes(AGGREGATE_WINDOW_MINUTES);
        let repeat = self.recent.lock().ok().and_then(|m| {
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
                self.remember(key, name, count, now);
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            pod.name,
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let event = json!({
            "metadata": {"name": name, "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "action": action,
            "source": {"component": crate::SCHEDULER_NAME},
            "reportingComponent": crate::SCHEDULER_NAME,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        match api.create(&PostParams::default(), &event).await {
            // Only warnings repeat (a pod is scheduled once).
            Ok(_) if kind == "Warning" => self.remember(key, name, 1, now),
            Ok(_) => {}
            Err(e) => tracing::debug!(
                "failed to record event {reason} for pod {}/{}: {e}",
                pod.namespace,
                pod.name
            ),
        }
    }

    fn remember(&self, key: String, name: String, count: i32, now: DateTime<Utc>) {
        let window = chrono::Duration::minutes(AGGREGATE_WINDOW_MINUTES);
        if let Ok(mut m) = self.recent.lock() {
            if m.len() >= MAX_RECENT {
                m.retain(|_, r| now - r.last < window);
                if m.len() >= MAX_RECENT {
                    m.clear();
                }
            }
            m.insert(
                key,
                Recent {
                    name,
                    count,
                    last: now,
                },
            );
        }
    }
}
