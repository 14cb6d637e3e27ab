//! The `pods/binding` subresource: a `Binding` assigns a pending pod to a node by setting
//! `spec.nodeName` atomically, only if it is unset, as upstream's `BindingREST` does.

use crate::objects::{self, meta_str, Objects};
use crate::status::{ApiError, Cause};
use berth_api::registry::ResourceInfo;
use berth_store::StoreError;
use serde_json::{json, Value};

/// How many times a binding retries a write that lost a race with another writer of the
/// pod (a status update, a label change) before giving up with a conflict.
const MAX_ATTEMPTS: usize = 16;

impl Objects {
    /// Binds pod `name` to the node named by `binding.target`. Returns the `Status` upstream
    /// answers with (201 Created, `status: Success`).
    pub async fn bind(
        &self,
        pods: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        binding: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if let Some(kind) = binding.get("kind").and_then(Value::as_str) {
            if !kind.is_empty() && kind != "Binding" {
                return Err(ApiError::bad_request(format!(
                    "not a Binding object: kind {kind:?}"
                )));
            }
        }
        if meta_str(binding, "name").unwrap_or("") != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Binding object",
            ));
        }
        if let (Some(ns), Some(body_ns)) = (namespace, meta_str(binding, "namespace")) {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let node = validate(binding, name)?;
        let want_uid = meta_str(binding, "uid").filter(|s| !s.is_empty());
        let want_rv = meta_str(binding, "resourceVersion").filter(|s| !s.is_empty());
        let annotations = binding
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let key = objects::key(pods, namespace, name);
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut pod, rev)) = self.current(pods, namespace, name).await? else {
                return Err(ApiError::not_found(pods, name));
            };
            if let Some(uid) = want_uid {
                if meta_str(&pod, "uid") != Some(uid) {
                    return Err(precondition_failed(
                        pods,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&pod, "uid").unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(rv) = want_rv {
                if rv != rev.to_string() {
                    return Err(precondition_failed(
                        pods,
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {rev}"),
                    ));
                }
            }
            if meta_str(&pod, "deletionTimestamp").is_some() {
                return Err(conflict(
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            if let Some(current) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(conflict(
                    name,
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            if pod
                .pointer("/spec/schedulingGates")
                .and_then(Value::as_array)
                .is_some_and(|g| !g.is_empty())
            {
                return Err(conflict(
                    name,
                    &format!("pod {name} has non-empty .spec.schedulingGates"),
                ));
            }
            assign(&mut pod, node, &annotations, &objects::now());
            if dry_run {
                return Ok(success());
            }
            match self
                .store
                .update(&key, objects::encode(pods, &pod)?, rev)
                .await
            {
                Ok(_) => return Ok(success()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(pods, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(pods, name))
    }
}

/// Checks the Binding as upstream's `ValidatePodBinding` does; returns the node's name.
fn validate<'a>(binding: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    let mut causes = Vec::new();
    let kind = binding
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {kind:?}: supported values: \"Node\", \"<empty>\""
            ),
            field: "target.kind".into(),
        });
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "target.name".into(),
        });
    }
    if causes.is_empty() {
        return Ok(node);
    }
    let mut e = ApiError::invalid(binding_resource(), name, causes);
    e.kind = Some("Binding".into());
    e.message = e.message.replacen("Pod ", "Binding ", 1);
    Err(e)
}

/// Sets the node, merges the Binding's annotations and marks the pod `PodScheduled=True`.
fn assign(pod: &mut Value, node: &str, annotations: &serde_json::Map<String, Value>, now: &str) {
    let Some(obj) = pod.as_object_mut() else {
        return;
    };
    let spec = obj.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("nodeName".into(), json!(node));
    }
    if !annotations.is_empty() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let existing = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(existing) = existing.as_object_mut() {
                for (k, v) in annotations {
                    existing.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(conditions) = conditions.as_array_mut() else {
        return;
    };
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        // As upstream's UpdatePodCondition: the transition time moves only when the status
        // changes; the reason and message of an earlier Unschedulable go.
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {}
        Some(c) => *c = scheduled,
        None => conditions.push(scheduled),
    }
}

/// `Operation cannot be fulfilled on pods/binding "name": why` (409), as upstream words it.
fn conflict(name: &str, why: &str) -> ApiError {
    let mut e = ApiError::new(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
    );
    e.name = Some(name.to_string());
    e.group = Some(String::new());
    e.kind = Some("pods/binding".into());
    e
}

fn precondition_failed(pods: &ResourceInfo, name: &str, why: &str) -> ApiError {
    ApiError::conflict(pods, name, why)
}

/// The `Status` a successful binding answers with.
fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// The pods resource, for messages about the Binding itself.
fn binding_resource() -> &'static ResourceInfo {
    berth_api::registry::find("", "v1", "pods").unwrap_or(&berth_api::registry::RESOURCES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_sets_node_and_condition() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}});
        let mut ann = serde_json::Map::new();
        ann.insert("a".into(), json!("b"));
        assign(&mut pod, "n1", &ann, "2026-01-01T00:00:00Z");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["metadata"]["annotations"]["a"], "b");
        let c = &pod["status"]["conditions"][0];
        assert_eq!(c["status"], "True");
        assert!(c.get("reason").is_none());
        assert_eq!(
            pod["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn validate_requires_target_name_and_node_kind() {
        let ok = json!({"target": {"kind": "Node", "name": "n1"}});
        assert_eq!(validate(&ok, "p").ok(), Some("n1"));
        let bad = json!({"target": {"kind": "Pod", "name": ""}});
        let e = validate(&bad, "p").err();
        assert_eq!(e.as_ref().map(|e| e.code), Some(422));
        assert_eq!(e.map(|e| e.causes.len()), Some(2));
    }
}
