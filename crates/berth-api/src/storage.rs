//! Where each resource is stored, and the conversions between a resource's API form and its
//! stored form. Upstream keeps one copy of objects served under two APIs: `events.k8s.io/v1`
//! Events are `core/v1` Events seen through another schema, so both APIs show every event.

use crate::registry::{self, ResourceInfo};
use serde_json::{Map, Value};

/// `(events.k8s.io/v1 field, core/v1 field)` pairs that differ in name.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(resource: &ResourceInfo) -> bool {
    resource.group == "events.k8s.io" && resource.kind == "Event"
}

/// The resource whose storage holds `resource`'s objects (itself for almost every resource).
pub fn storage_of(resource: &ResourceInfo) -> &ResourceInfo {
    if is_events_v1(resource) {
        if let Some(core) = registry::find("", "v1", "events") {
            return core;
        }
    }
    resource
}

fn rename(
    obj: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
    api_version: &str,
    kind: &str,
) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let pairs: Vec<(&str, &str)> = pairs.collect();
    let mut out = Map::new();
    for (k, v) in map {
        let name = match k.as_str() {
            "apiVersion" => {
                out.insert(k.clone(), Value::from(api_version));
                continue;
            }
            "kind" => {
                out.insert(k.clone(), Value::from(kind));
                continue;
            }
            other => pairs
                .iter()
                .find(|(from, _)| *from == other)
                .map_or(other, |(_, to)| to),
        };
        out.insert(name.to_string(), v.clone());
    }
    Value::Object(out)
}

/// The stored form of an object given in `resource`'s API form.
pub fn to_storage(resource: &ResourceInfo, obj: &Value) -> Value {
    if is_events_v1(resource) {
        rename(obj, EVENT_FIELDS.iter().copied(), "v1", "Event")
    } else {
        obj.clone()
    }
}

/// `resource`'s API form of a stored object.
pub fn from_storage(resource: &ResourceInfo, obj: Value) -> Value {
    if is_events_v1(resource) {
        rename(
            &obj,
            EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)),
            "events.k8s.io/v1",
            "Event",
        )
    } else {
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_the_two_apis() {
        let events_v1 = registry::find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        let core = storage_of(events_v1);
        assert_eq!((core.group, core.plural), ("", "events"));
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "web"}, "note": "pulled", "reason": "Pulled",
            "reportingController": "kubelet", "type": "Normal"});
        let stored = to_storage(events_v1, &new);
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "pulled");
        assert_eq!(stored["reportingComponent"], "kubelet");
        assert_eq!(from_storage(events_v1, stored), new);
        let pods = registry::find("", "v1", "pods").expect("pods");
        assert!(std::ptr::eq(storage_of(pods), pods));
    }
}
