//! The `pods/eviction` subresource: an `Eviction` (policy/v1 or policy/v1beta1) deletes a pod
//! only if the PodDisruptionBudget selecting it allows one more disruption, as upstream's
//! `EvictionREST`: it takes the disruption from the budget's status (recording the pod in
//! `disruptedPods`, guarded by the budget's resourceVersion) and then deletes the pod with
//! the Eviction's `deleteOptions`.

use crate::objects::{self, meta_str, DeleteOptions, Objects};
use crate::status::ApiError;
use berth_api::registry::ResourceInfo;
use berth_store::{ListOptions, StoreError};
use serde_json::{json, Map, Value};

/// How many times an eviction retries taking a disruption from a budget that another
/// eviction or the disruption controller changed meanwhile.
const MAX_ATTEMPTS: usize = 16;

/// Upstream's limit on evictions the disruption controller has not yet confirmed.
const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of every eviction a budget refuses (upstream's wording).
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

impl Objects {
    /// Evicts pod `name` as `eviction` asks. Returns the `Status` upstream answers with
    /// (201 Created, `status: Success`).
    pub async fn evict(
        &self,
        pods: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        eviction: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if let Some(kind) = eviction.get("kind").and_then(Value::as_str) {
            if !kind.is_empty() && kind != "Eviction" {
                return Err(ApiError::bad_request(format!(
                    "not an Eviction object: kind {kind:?}"
                )));
            }
        }
        if meta_str(eviction, "name").unwrap_or("") != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let ns = namespace.unwrap_or("default");
        let mut opts = delete_options(eviction.get("deleteOptions"))?;
        opts.dry_run |= dry_run;
        let pdbs = berth_api::registry::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::internal("PodDisruptionBudgets are not served"))?;
        for _ in 0..MAX_ATTEMPTS {
            let Some((pod, pod_rev)) = self.current(pods, namespace, name).await? else {
                return Err(ApiError::not_found(pods, name));
            };
            if can_ignore_budget(&pod) {
                return self.delete_evicted(pods, namespace, name, &opts).await;
            }
            let budgets = self.budgets_of(pdbs, ns, &pod).await?;
            let (mut pdb, pdb_rev) = match budgets.len() {
                0 => return self.delete_evicted(pods, namespace, name, &opts).await,
                1 => budgets.into_iter().next().ok_or_else(|| {
                    ApiError::internal("the pod's PodDisruptionBudget disappeared")
                })?,
                _ => {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ))
                }
            };
            if !is_ready(&pod) && unhealthy_may_go(&pdb) {
                // An unready pod does not count as healthy, so its eviction takes nothing
                // from the budget; it must still be the same unready pod when deleted.
                let mut opts = opts.clone();
                opts.precondition_resource_version
                    .get_or_insert_with(|| pod_rev.to_string());
                return self.delete_evicted(pods, namespace, name, &opts).await;
            }
            take_disruption(&mut pdb, name, &objects::now())?;
            if !opts.dry_run {
                let pdb_name = meta_str(&pdb, "name").unwrap_or("").to_string();
                match self
                    .store
                    .update(
                        &objects::key(pdbs, Some(ns), &pdb_name),
                        objects::encode(pdbs, &pdb)?,
                        pdb_rev,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return self.delete_evicted(pods, namespace, name, &opts).await;
        }
        Err(ApiError::new(
            429,
            "TooManyRequests",
            "too many concurrent changes to the pod's disruption budget; try again",
        ))
    }

    /// Marks the pod with the `DisruptionTarget` condition (as upstream's
    /// `addConditionAndDeletePod`), then deletes it with `opts`.
    async fn delete_evicted(
        &self,
        pods: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut opts = opts.clone();
        if !opts.dry_run {
            let rev = self
                .mark_disruption_target(pods, namespace, name, &opts)
                .await?;
            // The condition is this eviction's own change: a resourceVersion precondition
            // now names the version it wrote.
            if opts.precondition_resource_version.is_some() {
                opts.precondition_resource_version = Some(rev.to_string());
            }
        }
        self.delete(pods, namespace, name, &opts).await?;
        Ok(success())
    }

    /// Adds `DisruptionTarget=True` (`EvictionByEvictionAPI`) to the pod's conditions after
    /// checking the delete preconditions; returns the pod's new revision.
    async fn mark_disruption_target(
        &self,
        pods: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<berth_store::Revision, ApiError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut pod, rev)) = self.current(pods, namespace, name).await? else {
                return Err(ApiError::not_found(pods, name));
            };
            if let Some(uid) = &opts.precondition_uid {
                let have = meta_str(&pod, "uid").unwrap_or("");
                if have != uid {
                    return Err(ApiError::conflict(pods, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    )));
                }
            }
            if let Some(want) = &opts.precondition_resource_version {
                if *want != rev.to_string() {
                    return Err(ApiError::conflict(pods, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
                    )));
                }
            }
            if !set_disruption_target(&mut pod, &objects::now()) {
                return Ok(rev);
            }
            match self
                .store
                .update(
                    &objects::key(pods, namespace, name),
                    objects::encode(pods, &pod)?,
                    rev,
                )
                .await
            {
                Ok(kv) => return Ok(kv.mod_revision),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(pods, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(pods, name))
    }

    /// The PodDisruptionBudgets in `namespace` whose selector matches the pod's labels,
    /// with their revisions. A budget with an empty selector matches nothing here (upstream).
    async fn budgets_of(
        &self,
        pdbs: &ResourceInfo,
        namespace: &str,
        pod: &Value,
    ) -> Result<Vec<(Value, berth_store::Revision)>, ApiError> {
        let listed = self
            .store
            .list(
                &objects::prefix(pdbs, Some(namespace)),
                ListOptions::default(),
            )
            .await?;
        let empty = Map::new();
        let labels = pod
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut out = Vec::new();
        for kv in listed.items {
            let pdb = objects::decode(pdbs, &kv.value, kv.mod_revision)?;
            let selector = pdb.pointer("/spec/selector").unwrap_or(&Value::Null);
            if selector_matches(selector, labels) == Some(true) {
                out.push((pdb, kv.mod_revision));
            }
        }
        Ok(out)
    }
}

/// Sets the pod's `DisruptionTarget` condition; false if it already said so.
fn set_disruption_target(pod: &mut Value, now: &str) -> bool {
    let Some(obj) = pod.as_object_mut() else {
        return false;
    };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return false;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(conditions) = conditions.as_array_mut() else {
        return false;
    };
    let target = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionTarget"))
    {
        Some(c)
            if c.get("status").and_then(Value::as_str) == Some("True")
                && c.get("reason").and_then(Value::as_str) == Some("EvictionByEvictionAPI") =>
        {
            false
        }
        Some(c) => {
            let same_status = c.get("status").and_then(Value::as_str) == Some("True");
            let transition = c.get("lastTransitionTime").cloned();
            *c = target;
            if let (true, Some(t)) = (same_status, transition) {
                c["lastTransitionTime"] = t;
            }
            true
        }
        None => {
            conditions.push(target);
            true
        }
    }
}

/// Pods that are not running (pending or finished) or already being deleted go without
/// asking their budget (upstream's `canIgnorePDB`).
fn can_ignore_budget(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    matches!(phase, "Pending" | "Succeeded" | "Failed")
        || meta_str(pod, "deletionTimestamp").is_some()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn status_int(pdb: &Value, field: &str) -> i64 {
    pdb.pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Whether an unready pod may be evicted without taking a disruption: always with the
/// `AlwaysAllow` policy, and with the default `IfHealthyBudget` while the budget is met.
fn unhealthy_may_go(pdb: &Value) -> bool {
    let policy = pdb
        .pointer("/spec/unhealthyPodEvictionPolicy")
        .and_then(Value::as_str);
    if policy == Some("AlwaysAllow") {
        return true;
    }
    let desired = status_int(pdb, "desiredHealthy");
    status_int(pdb, "currentHealthy") >= desired && desired > 0
}

/// Takes one disruption from the budget's status for pod `pod` at time `now`, or says why
/// the budget refuses (upstream's `checkAndDecrement`).
fn take_disruption(pdb: &mut Value, pod: &str, now: &str) -> Result<(), ApiError> {
    let name = meta_str(pdb, "name").unwrap_or("").to_string();
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let observed = status_int(pdb, "observedGeneration");
    if observed < generation {
        return Err(too_many_requests(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = status_int(pdb, "disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            status_int(pdb, "desiredHealthy"),
            status_int(pdb, "currentHealthy")
        )));
    }
    let Some(obj) = pdb.as_object_mut() else {
        return Err(ApiError::internal(
            "the PodDisruptionBudget is not an object",
        ));
    };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return Err(ApiError::internal(
            "the PodDisruptionBudget's status is not an object",
        ));
    };
    status.insert("disruptionsAllowed".into(), json!(allowed - 1));
    let pods = status.entry("disruptedPods").or_insert_with(|| json!({}));
    if !pods.is_object() {
        *pods = json!({});
    }
    if let Some(pods) = pods.as_object_mut() {
        pods.insert(pod.to_string(), json!(now));
    }
    if allowed - 1 == 0 {
        let conditions = status.entry("conditions").or_insert_with(|| json!([]));
        if !conditions.is_array() {
            *conditions = json!([]);
        }
        if let Some(conditions) = conditions.as_array_mut() {
            let generation = json!(generation);
            let insufficient = json!({
                "type": "DisruptionAllowed",
                "status": "False",
                "reason": "InsufficientPods",
                "message": "",
                "observedGeneration": generation,
                "lastTransitionTime": now,
            });
            match conditions
                .iter_mut()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"))
            {
                Some(c) if c.get("status").and_then(Value::as_str) == Some("False") => {}
                Some(c) => *c = insufficient,
                None => conditions.push(insufficient),
            }
        }
    }
    Ok(())
}

/// Upstream's refusal: 429 with a `DisruptionBudget` cause saying why.
fn too_many_requests(why: String) -> ApiError {
    ApiError::new(429, "TooManyRequests", VIOLATION).with_cause("DisruptionBudget", &why, "")
}

/// The Eviction's `deleteOptions`.
fn delete_options(body: Option<&Value>) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    let Some(body) = body.filter(|b| !b.is_null()) else {
        return Ok(opts);
    };
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "failed to decode the Eviction's deleteOptions: not an object",
        ));
    }
    opts.merge_body(body);
    Ok(opts)
}

/// Whether a `metav1.LabelSelector` matches `labels`; `None` for an empty or invalid
/// selector (which selects nothing for a budget).
fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> Option<bool> {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    if match_labels.is_none_or(Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
        return None;
    }
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    for (k, v) in match_labels.into_iter().flatten() {
        if label(k) != Some(v.as_str()?) {
            return Some(false);
        }
    }
    for e in expressions.into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str)?;
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ok = match e.get("operator").and_then(Value::as_str)? {
            "In" => label(key).is_some_and(|l| values.contains(&l)),
            "NotIn" => label(key).is_none_or(|l| !values.contains(&l)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => return None,
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// The `Status` a successful eviction answers with.
fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": allowed, "desiredHealthy": 1, "currentHealthy": 1 + allowed,
                       "expectedPods": 1 + allowed, "observedGeneration": observed},
        })
    }

    #[test]
    fn a_disruption_is_taken_and_recorded() {
        let mut p = pdb(1, 1, 1);
        assert!(take_disruption(&mut p, "web-1", "2026-01-01T00:00:00Z").is_ok());
        assert_eq!(p["status"]["disruptionsAllowed"], 0);
        assert_eq!(
            p["status"]["disruptedPods"]["web-1"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(p["status"]["conditions"][0]["reason"], "InsufficientPods");
    }

    #[test]
    fn a_spent_budget_refuses_with_upstreams_status() {
        let mut p = pdb(0, 1, 1);
        let e = take_disruption(&mut p, "web-1", "t").err();
        let status = e.map(|e| e.to_status()).unwrap_or_default();
        assert_eq!(status["code"], 429);
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["message"], VIOLATION);
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "The disruption budget web needs 1 healthy pods and has 1 currently"
        );
        // A budget the controller has not seen yet refuses too.
        let mut p = pdb(3, 2, 1);
        let e = take_disruption(&mut p, "web-1", "t").err();
        assert_eq!(e.map(|e| e.code), Some(429));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = json!({"app": "web", "tier": "front"});
        let labels = labels.as_object().cloned().unwrap_or_default();
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]});
        assert_eq!(selector_matches(&s, &labels), Some(true));
        let s = json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]});
        assert_eq!(selector_matches(&s, &labels), Some(false));
        assert_eq!(selector_matches(&json!({}), &labels), None);
    }

    #[test]
    fn evicted_pods_are_marked_as_disruption_targets() {
        let mut pod = json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(set_disruption_target(&mut pod, "t1"));
        let c = &pod["status"]["conditions"][1];
        assert_eq!(c["type"], "DisruptionTarget");
        assert_eq!(c["reason"], "EvictionByEvictionAPI");
        assert_eq!(c["message"], "Eviction API: evicting");
        assert!(!set_disruption_target(&mut pod, "t2"));
        assert_eq!(pod["status"]["conditions"][1]["lastTransitionTime"], "t1");
    }

    #[test]
    fn unready_pods_go_while_the_budget_is_met() {
        let p = pdb(0, 1, 1);
        assert!(unhealthy_may_go(&p));
        let mut p = pdb(0, 1, 1);
        p["status"]["currentHealthy"] = json!(0);
        assert!(!unhealthy_may_go(&p));
        p["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(unhealthy_may_go(&p));
    }
}
