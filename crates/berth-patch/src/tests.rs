//! Unit tests for every patch flavour, over a hand-written mini OpenAPI schema.

use serde_json::{json, Map, Value};

use crate::managed_fields;
use crate::{json_patch, merge_patch, strategic_merge_patch, PatchError, Schema};

const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";
const SVC: &str = "io.k8s.api.core.v1.Service";
const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";
const T2: &str = "2024-01-01T00:02:00Z";

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/definitions/{name}"), "description": "d"})
}

fn defs() -> Map<String, Value> {
    let v = json!({
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {"type": "object", "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "uid": {"type": "string"}, "resourceVersion": {"type": "string"},
            "generation": {"type": "integer"},
            "creationTimestamp": r("io.k8s.apimachinery.pkg.apis.meta.v1.Time"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"},
                "x-kubernetes-patch-strategy": "merge", "x-kubernetes-list-type": "set"},
            "ownerReferences": {"type": "array", "items": r("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"),
                "x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"]},
            "managedFields": {"type": "array", "items": r("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry")}
        }},
        "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference": {"type": "object", "properties": {
            "uid": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string"},
            "controller": {"type": "boolean"}}, "x-kubernetes-map-type": "atomic"},
        "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry": {"type": "object", "properties": {
            "manager": {"type": "string"},
            "fieldsV1": r("io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1")}},
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": {"type": "object", "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-map-type": "atomic"},
        "io.k8s.api.apps.v1.Deployment": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.apps.v1.DeploymentSpec"),
            "status": r("io.k8s.api.apps.v1.DeploymentStatus")}},
        "io.k8s.api.apps.v1.DeploymentSpec": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "paused": {"type": "boolean"},
            "selector": r("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
            "strategy": r("io.k8s.api.apps.v1.DeploymentStrategy"),
            "template": r("io.k8s.api.core.v1.PodTemplateSpec")}},
        "io.k8s.api.apps.v1.DeploymentStrategy": {"type": "object", "properties": {
            "type": {"type": "string"},
            "rollingUpdate": r("io.k8s.api.apps.v1.RollingUpdateDeployment")}},
        "io.k8s.api.apps.v1.RollingUpdateDeployment": {"type": "object", "properties": {
            "maxSurge": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString"),
            "maxUnavailable": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString")}},
        "io.k8s.api.apps.v1.DeploymentStatus": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "conditions": {"type": "array", "items": r("io.k8s.api.apps.v1.DeploymentCondition"),
                "x-kubernetes-patch-merge-key": "type", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}}},
        "io.k8s.api.apps.v1.DeploymentCondition": {"type": "object", "properties": {
            "type": {"type": "string"}, "status": {"type": "string"}}},
        "io.k8s.api.core.v1.PodTemplateSpec": {"type": "object", "properties": {
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.core.v1.PodSpec")}},
        "io.k8s.api.core.v1.Pod": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.core.v1.PodSpec")}},
        "io.k8s.api.core.v1.PodSpec": {"type": "object", "properties": {
            "restartPolicy": {"type": "string"},
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"},
                "x-kubernetes-map-type": "atomic"},
            "containers": {"type": "array", "items": r("io.k8s.api.core.v1.Container"),
                "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            "volumes": {"type": "array", "items": r("io.k8s.api.core.v1.Volume"),
                "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge,retainKeys",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}},
        "io.k8s.api.core.v1.Container": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "image": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
            "env": {"type": "array", "items": r("io.k8s.api.core.v1.EnvVar"),
                "x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            "ports": {"type": "array", "items": r("io.k8s.api.core.v1.ContainerPort"),
                "x-kubernetes-patch-merge-key": "containerPort", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort", "protocol"]},
            "resources": r("io.k8s.api.core.v1.ResourceRequirements")}},
        "io.k8s.api.core.v1.ResourceRequirements": {"type": "object", "properties": {
            "limits": {"type": "object", "additionalProperties": r("io.k8s.apimachinery.pkg.api.resource.Quantity")}}},
        "io.k8s.api.core.v1.EnvVar": {"type": "object", "properties": {
            "name": {"type": "string"}, "value": {"type": "string"}}},
        "io.k8s.api.core.v1.ContainerPort": {"type": "object", "properties": {
            "containerPort": {"type": "integer"}, "name": {"type": "string"},
            "protocol": {"type": "string", "default": "TCP"}}},
        "io.k8s.api.core.v1.Volume": {"type": "object", "properties": {
            "name": {"type": "string"},
            "emptyDir": {"type": "object", "properties": {"medium": {"type": "string"}}},
            "configMap": {"type": "object", "properties": {"name": {"type": "string"}}}}},
        "io.k8s.api.core.v1.Service": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": r("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": r("io.k8s.api.core.v1.ServiceSpec")}},
        "io.k8s.api.core.v1.ServiceSpec": {"type": "object", "properties": {
            "type": {"type": "string"},
            "selector": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "atomic"},
            "ports": {"type": "array", "items": r("io.k8s.api.core.v1.ServicePort"),
                "x-kubernetes-patch-merge-key": "port", "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"]}}},
        "io.k8s.api.core.v1.ServicePort": {"type": "object", "properties": {
            "name": {"type": "string"}, "port": {"type": "integer"},
            "protocol": {"type": "string", "default": "TCP"},
            "targetPort": r("io.k8s.apimachinery.pkg.util.intstr.IntOrString")}}
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn smp(doc: Value, patch: Value, def: &str) -> Result<Value, PatchError> {
    let d = defs();
    strategic_merge_patch(&doc, &patch, &Schema { definitions: &d }, def)
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [
                {"name": "app", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "s:1"}
            ],
            "volumes": [{"name": "v", "emptyDir": {}}]
        }}}
    })
}

fn containers(v: &Value) -> &Vec<Value> {
    v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
}

fn assert_no_directives(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                assert!(!k.starts_with('$'), "directive {k} left in {v}");
                assert_no_directives(v);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_no_directives),
        _ => {}
    }
}

mod strategic {
    use super::*;

    #[test]
    fn set_image_merges_container_by_name() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"app","image":"x:2"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        let c = containers(&out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["image"], "x:2");
        assert_eq!(c[0]["env"][0]["name"], "A", "untouched fields stay");
        assert_eq!(c[1]["image"], "s:1");
    }

    #[test]
    fn new_container_is_appended_and_env_merged() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[
                {"name":"app","env":[{"name":"B","value":"2"}]},
                {"name":"new","image":"n:1"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        let c = containers(&out);
        let names: Vec<&str> = c.iter().map(|c| c["name"].as_str().unwrap_or("")).collect();
        // Upstream order: patch items first, server-only items by live position.
        assert_eq!(names, ["app", "new", "side"]);
        // New patch items go before server-only ones (upstream mergeSortedSlice).
        assert_eq!(
            c[0]["env"],
            json!([{"name":"B","value":"2"},{"name":"A","value":"1"}])
        );
    }

    #[test]
    fn delete_container_with_patch_directive() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(containers(&out).len(), 1);
        assert_eq!(containers(&out)[0]["name"], "app");
        assert_no_directives(&out);
    }

    #[test]
    fn replace_list_directive() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"$patch":"replace"},{"name":"only","image":"o"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(containers(&out), &vec![json!({"name":"only","image":"o"})]);
    }

    #[test]
    fn replace_and_delete_map_directives() {
        let out = smp(
            deployment(),
            json!({"metadata":{"labels":{"$patch":"replace","x":"y"}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"x":"y"}));
        let out = smp(
            deployment(),
            json!({"metadata":{"labels":{"$patch":"delete"}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({}));
        let out = smp(
            deployment(),
            json!({"metadata":{"labels":{"$patch":"merge","z":"1"}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"]["z"], "1");
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        assert_no_directives(&out);
    }

    #[test]
    fn null_deletes_label() {
        let out = smp(
            deployment(),
            json!({"metadata":{"labels":{"tier":null,"new":"1"}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"app":"web","new":"1"}));
        // Deleting a missing key is fine.
        let out = smp(
            deployment(),
            json!({"metadata":{"annotations":{"x":null}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let out = smp(
            deployment(),
            json!({"metadata":{"finalizers":["b","c"]}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            deployment(),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_no_directives(&out);
    }

    #[test]
    fn set_element_order_is_honoured() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"side"},{"name":"app"}],
                "containers":[{"name":"app","image":"x:3"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["side", "app"]);
        assert_eq!(containers(&out)[1]["image"], "x:3");
        assert_no_directives(&out);

        let out = smp(
            deployment(),
            json!({"metadata":{"$setElementOrder/finalizers":["b","a"]}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
    }

    #[test]
    fn kubectl_apply_style_patch_with_order_and_delete() {
        // What client-side `kubectl apply` sends when a container is removed and one added.
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"app"},{"name":"extra"}],
                "containers":[{"name":"extra","image":"e:1"},{"$patch":"delete","name":"side"}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["app", "extra"]);
        assert_no_directives(&out);
    }

    #[test]
    fn retain_keys_clears_other_volume_sources() {
        let out = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"volumes":[
                {"name":"v","$retainKeys":["configMap","name"],"configMap":{"name":"cm"}}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name":"v","configMap":{"name":"cm"}}])
        );
        let err = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"volumes":[
                {"name":"v","$retainKeys":["name"],"configMap":{"name":"cm"}}]}}}}),
            DEPLOY,
        );
        assert!(
            matches!(err, Err(PatchError::InvalidPatch { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn non_merge_lists_are_replaced() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
        let out = smp(
            d,
            json!({"spec":{"template":{"spec":{"containers":[{"name":"app","args":["c"]}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(containers(&out)[0]["args"], json!(["c"]));
    }

    #[test]
    fn ports_merge_by_container_port() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort":80,"name":"http"}]);
        let out = smp(
            d,
            json!({"spec":{"template":{"spec":{"containers":[{"name":"app","ports":[
                {"containerPort":80,"name":"web"},{"containerPort":443}]}]}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(
            containers(&out)[0]["ports"],
            json!([{"containerPort":80,"name":"web"},{"containerPort":443}])
        );
    }

    #[test]
    fn unknown_schema_merges_maps_and_replaces_lists() {
        let doc = json!({"a":{"b":1,"c":[1,2]},"d":"x"});
        let out = smp(
            doc,
            json!({"a":{"c":[3],"e":true},"d":null}),
            "no.such.Definition",
        )
        .expect("patch");
        assert_eq!(out, json!({"a":{"b":1,"c":[3],"e":true}}));
    }

    #[test]
    fn bad_patches_are_errors() {
        let cases = [
            json!({"spec":{"template":{"spec":{"containers":{"name":"x"}}}}}),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"app","$patch":"frobnicate"}]}}}}),
            json!({"metadata":{"labels":{"$patch":"bogus"}}}),
            json!({"metadata":{"labels":["a"]}}),
            json!({"spec":{"replicas":{"a":1}}}),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":"a"}}),
            json!({"metadata":{"$setElementOrder/finalizers":{}}}),
            json!({"metadata":{"finalizers":[["nested"]]}}),
            json!({"metadata":{"finalizers":[{"a":1}]}}),
        ];
        for c in cases {
            let res = smp(deployment(), c.clone(), DEPLOY);
            assert!(res.is_err(), "expected error for {c}, got {res:?}");
        }
        assert!(matches!(
            smp(deployment(), json!([1]), DEPLOY),
            Err(PatchError::PatchNotObject { .. })
        ));
        assert!(matches!(
            smp(json!("s"), json!({}), DEPLOY),
            Err(PatchError::DocumentNotObject { .. })
        ));
    }

    #[test]
    fn error_messages_say_where() {
        let err = smp(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}),
            DEPLOY,
        )
        .expect_err("missing merge key");
        let msg = err.to_string();
        assert!(msg.contains(".spec.template.spec.containers"), "{msg}");
        assert!(
            msg.contains("does not contain declared merge key: name"),
            "{msg}"
        );
    }

    #[test]
    fn int_or_string_accepts_both() {
        let out = smp(
            deployment(),
            json!({"spec":{"strategy":{"rollingUpdate":{"maxSurge":"25%","maxUnavailable":1}}}}),
            DEPLOY,
        )
        .expect("patch");
        assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    }

    /// Tiny deterministic generator (no external crates).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    fn junk(rng: &mut Rng, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "spec",
            "metadata",
            "template",
            "containers",
            "name",
            "image",
            "env",
            "ports",
            "containerPort",
            "labels",
            "finalizers",
            "volumes",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$deleteFromPrimitiveList/finalizers",
            "$setElementOrder/finalizers",
            "replicas",
            "strategy",
            "rollingUpdate",
            "maxSurge",
            "selector",
            "args",
            "emptyDir",
            "conditions",
            "status",
        ];
        const STRS: &[&str] = &["replace", "delete", "merge", "app", "side", "x", ""];
        match if depth > 4 {
            rng.next() % 4
        } else {
            rng.next() % 7
        } {
            0 => Value::Null,
            1 => json!(rng.next() % 100),
            2 => Value::String(rng.pick(STRS).to_string()),
            3 => Value::Bool(rng.next() % 2 == 0),
            4 | 5 => {
                let mut m = Map::new();
                for _ in 0..(rng.next() % 4) {
                    m.insert(rng.pick(KEYS).to_string(), junk(rng, depth + 1));
                }
                Value::Object(m)
            }
            _ => Value::Array(
                (0..(rng.next() % 4))
                    .map(|_| junk(rng, depth + 1))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_junk_never_panics_and_never_leaks_directives() {
        let d = defs();
        let schema = Schema { definitions: &d };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..4_000 {
            let patch = junk(&mut rng, 0);
            let clean_doc = rng.next() % 2 == 0;
            let doc = if clean_doc {
                deployment()
            } else {
                junk(&mut rng, 0)
            };
            for def in [DEPLOY, POD, "unknown"] {
                if let Ok(out) = strategic_merge_patch(&doc, &patch, &schema, def) {
                    if clean_doc {
                        assert_no_directives(&out);
                    }
                }
                let _ = merge_patch(&doc, &patch);
                let _ = json_patch(&doc, &patch);
            }
            let mut live = deployment();
            if rng.next() % 3 == 0 {
                live = managed_fields::record_update(
                    &Value::Null,
                    &live,
                    "m",
                    &schema,
                    DEPLOY,
                    "apps/v1",
                    T0,
                    None,
                );
            }
            let _ =
                managed_fields::apply(&live, &patch, "a", false, &schema, DEPLOY, "apps/v1", T1);
            let _ = managed_fields::apply(
                &Value::Null,
                &patch,
                "a",
                true,
                &schema,
                DEPLOY,
                "apps/v1",
                T1,
            );
            let _ = managed_fields::record_update(
                &live, &patch, "u", &schema, DEPLOY, "apps/v1", T1, None,
            );
        }
    }
}

mod plain {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let out = merge_patch(
            &json!({"a":"b","c":{"d":"e","f":"g"},"l":[1,2]}),
            &json!({"a":"z","c":{"f":null},"l":[3]}),
        )
        .expect("patch");
        assert_eq!(out, json!({"a":"z","c":{"d":"e"},"l":[3]}));
        assert!(matches!(
            merge_patch(&json!({}), &json!([1])),
            Err(PatchError::PatchNotObject { .. })
        ));
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"metadata":{"labels":{"a":"1"}},"spec":{"replicas":1,"l":[1,2]}});
        let out = json_patch(
            &doc,
            &json!([
                {"op":"test","path":"/spec/replicas","value":1},
                {"op":"replace","path":"/spec/replicas","value":3},
                {"op":"add","path":"/metadata/labels/b","value":"2"},
                {"op":"remove","path":"/metadata/labels/a"},
                {"op":"add","path":"/spec/l/-","value":3}
            ]),
        )
        .expect("patch");
        assert_eq!(
            out,
            json!({"metadata":{"labels":{"b":"2"}},"spec":{"replicas":3,"l":[1,2,3]}})
        );
    }

    #[test]
    fn json_patch_failures() {
        let doc = json!({"spec":{"replicas":1}});
        let err = json_patch(
            &doc,
            &json!([{"op":"test","path":"/spec/replicas","value":2}]),
        )
        .expect_err("test must fail");
        assert!(
            matches!(err, PatchError::TestFailed { ref path } if path == "/spec/replicas"),
            "{err:?}"
        );
        assert!(matches!(
            json_patch(&doc, &json!([{"op":"remove","path":"/nope"}])),
            Err(PatchError::JsonPatchFailed(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!([{"op":"frob","path":"/x"}])),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!({"op":"add"})),
            Err(PatchError::PatchNotObject { .. })
        ));
    }
}

mod ssa;
