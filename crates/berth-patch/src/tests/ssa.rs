//! Server-side apply and managedFields tests.

use serde_json::{json, Value};

use super::{defs, DEPLOY, SVC, T0, T1, T2};
use crate::managed_fields::{apply, record_update, ApplyError, BEFORE_FIRST_APPLY};
use crate::Schema;

fn config(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
    })
}

fn ap(
    live: &Value,
    cfg: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let d = defs();
    apply(
        live,
        cfg,
        manager,
        force,
        &Schema { definitions: &d },
        DEPLOY,
        "apps/v1",
        now,
    )
}

fn upd(old: &Value, new: &Value, manager: &str, now: &str, sub: Option<&str>) -> Value {
    let d = defs();
    record_update(
        old,
        new,
        manager,
        &Schema { definitions: &d },
        DEPLOY,
        "apps/v1",
        now,
        sub,
    )
}

fn mf(obj: &Value) -> &Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

fn fields(obj: &Value, manager: &str) -> String {
    entry(obj, manager)
        .map(|e| e["fieldsV1"].to_string())
        .unwrap_or_default()
}

fn conflicts(res: Result<Value, ApplyError>) -> Vec<(String, String)> {
    match res {
        Err(ApplyError::Conflicts(c)) => c.into_iter().map(|c| (c.manager, c.field)).collect(),
        other => panic!("expected conflicts, got {other:?}"),
    }
}

#[test]
fn create_via_apply_encodes_managed_fields_exactly() {
    let out = ap(&Value::Null, &config(1, "x:1"), "kubectl", false, T0).expect("apply");
    assert_eq!(out["spec"]["replicas"], 1);
    assert_eq!(out["metadata"]["name"], "web");
    let expected = json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                }
            }
        }
    }]);
    assert_eq!(
        out["metadata"]["managedFields"].to_string(),
        expected.to_string()
    );
}

#[test]
fn reapply_same_config_changes_nothing() {
    let first = ap(&Value::Null, &config(1, "x:1"), "kubectl", false, T0).expect("apply");
    let second = ap(&first, &config(1, "x:1"), "kubectl", false, T1).expect("apply");
    assert_eq!(first, second, "no-op apply keeps object and time");
}

#[test]
fn two_appliers_conflict_and_force_moves_ownership() {
    let a = ap(&Value::Null, &config(1, "x:1"), "a", false, T0).expect("apply a");
    let res = ap(&a, &config(2, "x:1"), "b", false, T1);
    let err = res.clone().expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(
        conflicts(res),
        vec![("a".to_string(), ".spec.replicas".to_string())]
    );

    let forced = ap(&a, &config(2, "x:1"), "b", true, T1).expect("force");
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(fields(&forced, "b").contains("f:replicas"));
    assert!(
        !fields(&forced, "a").contains("f:replicas"),
        "{}",
        fields(&forced, "a")
    );
    assert!(
        fields(&forced, "a").contains("f:image"),
        "shared fields stay shared"
    );
    // Entries are sorted: both Apply, then by time.
    let managers: Vec<&Value> = mf(&forced).iter().map(|e| &e["manager"]).collect();
    assert_eq!(managers, [&json!("a"), &json!("b")]);
}

#[test]
fn same_value_is_shared_without_conflict() {
    let a = ap(&Value::Null, &config(1, "x:1"), "a", false, T0).expect("apply a");
    let b = ap(&a, &config(1, "x:1"), "b", false, T1).expect("apply b");
    assert!(fields(&b, "a").contains("f:replicas"));
    assert!(fields(&b, "b").contains("f:replicas"));
    // A conflicting image change names the container path.
    let res = ap(&b, &config(1, "x:2"), "c", false, T2);
    let mut got = conflicts(res);
    got.sort();
    let field = ".spec.template.spec.containers[name=\"app\"].image".to_string();
    assert_eq!(
        got,
        vec![("a".to_string(), field.clone()), ("b".to_string(), field)]
    );
}

#[test]
fn removing_a_field_from_config_removes_it() {
    let mut cfg = config(1, "x:1");
    cfg["metadata"]["labels"]["extra"] = json!("1");
    cfg["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "side", "image": "s:1"}));
    let first = ap(&Value::Null, &cfg, "a", false, T0).expect("apply");
    assert_eq!(first["metadata"]["labels"]["extra"], "1");

    let second = ap(&first, &config(1, "x:1"), "a", false, T1).expect("apply");
    assert!(
        second["metadata"]["labels"].get("extra").is_none(),
        "{second}"
    );
    let c = second["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("c");
    assert_eq!(c.len(), 1, "{second}");
    assert!(!fields(&second, "a").contains("side"));

    // Dropping replicas entirely removes it too.
    let mut no_replicas = config(1, "x:1");
    no_replicas["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    let third = ap(&second, &no_replicas, "a", false, T2).expect("apply");
    assert!(third["spec"].get("replicas").is_none(), "{third}");
}

#[test]
fn removed_field_owned_by_another_manager_stays() {
    let mut cfg = config(1, "x:1");
    cfg["metadata"]["labels"]["extra"] = json!("1");
    let a = ap(&Value::Null, &cfg, "a", false, T0).expect("apply a");
    let b = ap(&a, &json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"extra":"1"}}}), "b", false, T1)
        .expect("apply b");
    let again = ap(&b, &config(1, "x:1"), "a", false, T2).expect("apply a again");
    assert_eq!(again["metadata"]["labels"]["extra"], "1");
    assert!(fields(&again, "b").contains("f:extra"));
}

#[test]
fn update_then_apply_same_value_no_conflict() {
    let created = upd(&Value::Null, &config(1, "x:1"), "kubectl-create", T0, None);
    let applied = ap(&created, &config(1, "x:1"), "a", false, T1).expect("same values");
    assert!(fields(&applied, "a").contains("f:replicas"));
    assert!(fields(&applied, "kubectl-create").contains("f:replicas"));

    let res = ap(&created, &config(3, "x:1"), "a", false, T1);
    let err = res.expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn record_update_on_create_encoding() {
    let mut obj = config(1, "x:1");
    obj["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}});
    obj["metadata"]["uid"] = json!("u-1");
    obj["metadata"]["resourceVersion"] = json!("5");
    obj["status"] = json!({"replicas": 0});
    let out = upd(&Value::Null, &obj, "kubectl-create", T0, None);
    let expected = json!([{
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                }
            }
        }
    }]);
    assert_eq!(
        out["metadata"]["managedFields"].to_string(),
        expected.to_string()
    );
}

#[test]
fn record_update_moves_ownership_and_drops_empty_managers() {
    let created = upd(&Value::Null, &config(1, "x:1"), "creator", T0, None);
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    let out = upd(&created, &scaled, "scaler", T1, Some("scale"));
    assert!(!fields(&out, "creator").contains("f:replicas"));
    let s = entry(&out, "scaler").expect("scaler entry");
    assert_eq!(s["subresource"], "scale");
    assert_eq!(s["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));

    // Unchanged update records nothing new and keeps times.
    let same = upd(&out, &out, "someone", T2, None);
    assert_eq!(
        same["metadata"]["managedFields"],
        out["metadata"]["managedFields"]
    );

    // Taking every field of "scaler" drops its entry.
    let mut again = out.clone();
    again["spec"]["replicas"] = json!(7);
    let taken = upd(&out, &again, "other", T2, None);
    assert!(
        entry(&taken, "scaler").is_none(),
        "{}",
        taken["metadata"]["managedFields"]
    );

    // Same manager, same version: one entry, time bumped.
    let mut more = taken.clone();
    more["spec"]["replicas"] = json!(8);
    let bumped = upd(&taken, &more, "other", "2024-01-01T00:03:00Z", None);
    let others: Vec<&Value> = mf(&bumped)
        .iter()
        .filter(|e| e["manager"] == "other")
        .collect();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["time"], "2024-01-01T00:03:00Z");
}

#[test]
fn status_updates_are_recorded_separately() {
    let created = upd(&Value::Null, &config(1, "x:1"), "creator", T0, None);
    let mut with_status = created.clone();
    with_status["status"] =
        json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
    let out = upd(&created, &with_status, "controller", T1, Some("status"));
    let e = entry(&out, "controller").expect("entry");
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"].to_string(),
        json!({"f:status": {".": {}, "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}}).to_string()
    );
    // Status written through the main resource is not owned.
    let main = upd(&created, &with_status, "sneaky", T1, None);
    assert!(entry(&main, "sneaky").is_none());
}

#[test]
fn finalizers_are_set_items() {
    let cfg = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","finalizers":["x/y"]}});
    let out = ap(&Value::Null, &cfg, "a", false, T0).expect("apply");
    assert_eq!(
        fields(&out, "a"),
        r#"{"f:metadata":{"f:finalizers":{"v:\"x/y\"":{}}}}"#
    );
}

#[test]
fn service_ports_use_defaulted_key_fields() {
    let d = defs();
    let schema = Schema { definitions: &d };
    let cfg = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
        "spec":{"ports":[{"port":80,"targetPort":8080}]}});
    let out = apply(&Value::Null, &cfg, "a", false, &schema, SVC, "v1", T0).expect("apply");
    assert_eq!(
        out["metadata"]["managedFields"][0]["fieldsV1"].to_string(),
        r#"{"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:targetPort":{}}}}}"#
    );
}

#[test]
fn apply_keeps_live_list_order_and_other_items() {
    let mut live_cfg = config(1, "x:1");
    live_cfg["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
    let live = upd(&Value::Null, &live_cfg, "creator", T0, None);
    let mut cfg = config(1, "x:1");
    cfg["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "b", "image": "b"}, {"name": "c", "image": "c"}]);
    let out = ap(&live, &cfg, "a", false, T1).expect("apply");
    let names: Vec<&Value> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("c")
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("a"), &json!("b"), &json!("c")]);
}

#[test]
fn invalid_apply_configs() {
    let mut cfg = config(1, "x:1");
    cfg["metadata"]["managedFields"] = json!([]);
    assert!(matches!(
        ap(&Value::Null, &cfg, "a", false, T0),
        Err(ApplyError::Invalid(_))
    ));
    assert!(matches!(
        ap(&Value::Null, &json!([1]), "a", false, T0),
        Err(ApplyError::Invalid(_))
    ));
    let bad_key = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
        "spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}});
    let err = ap(&Value::Null, &bad_key, "a", false, T0).expect_err("missing key");
    assert!(
        err.to_string().contains("omits key field \"name\""),
        "{err}"
    );
}

#[test]
fn objects_without_managed_fields_belong_to_before_first_apply() {
    let live = config(1, "x:1");
    let res = ap(&live, &config(2, "x:1"), "a", false, T1);
    assert_eq!(
        conflicts(res),
        vec![(BEFORE_FIRST_APPLY.to_string(), ".spec.replicas".to_string())]
    );
    let ok = ap(&live, &config(1, "x:1"), "a", false, T1).expect("same values");
    assert!(entry(&ok, BEFORE_FIRST_APPLY).is_some());
}

#[test]
fn apply_ignores_status_and_system_metadata() {
    let mut cfg = config(1, "x:1");
    cfg["metadata"]["resourceVersion"] = json!("3");
    cfg["status"] = json!({"replicas": 9});
    let out = ap(&Value::Null, &cfg, "a", false, T0).expect("apply");
    let f = fields(&out, "a");
    assert!(
        !f.contains("status")
            && !f.contains("resourceVersion")
            && !f.contains("{\"f:metadata\":{\"f:name"),
        "{f}"
    );
}

#[test]
fn managed_fields_round_trip_through_later_operations() {
    // Apply, then an update by another manager that changes a label, then re-apply:
    // the label change must not be undone by the applier (it does not own it).
    let a = ap(&Value::Null, &config(1, "x:1"), "a", false, T0).expect("apply");
    let mut edited = a.clone();
    edited["metadata"]["labels"]["team"] = json!("t");
    let edited = upd(&a, &edited, "kubectl-label", T1, None);
    assert_eq!(
        fields(&edited, "kubectl-label"),
        r#"{"f:metadata":{"f:labels":{"f:team":{}}}}"#
    );
    let again = ap(&edited, &config(1, "x:1"), "a", false, T2).expect("re-apply");
    assert_eq!(again["metadata"]["labels"]["team"], "t");
}

#[test]
fn multi_conflict_message_groups_by_manager() {
    let created = upd(&Value::Null, &config(1, "x:1"), "creator", T0, None);
    let err = ap(&created, &config(2, "x:2"), "a", false, T1).expect_err("conflicts");
    let ApplyError::Conflicts(cs) = &err else {
        panic!("expected conflicts, got {err:?}");
    };
    assert_eq!(cs.len(), 2);
    assert_eq!(
        cs[0].cause_message(),
        "conflict with \"creator\" using apps/v1"
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"creator\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"app\"].image"
    );
    // Forcing takes both fields; the creator keeps the rest.
    let forced = ap(&created, &config(2, "x:2"), "a", true, T1).expect("force");
    let creator = fields(&forced, "creator");
    assert!(
        !creator.contains("f:replicas") && !creator.contains("f:image"),
        "{creator}"
    );
    assert!(creator.contains("f:labels"), "{creator}");
}
