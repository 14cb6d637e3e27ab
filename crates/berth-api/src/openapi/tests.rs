use super::*;
use serde_json::json;

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn prop<'a>(def: &str, property: &str) -> &'a Value {
    &definitions()[def]["properties"][property]
}

#[test]
fn deployment_has_gvk() {
    let d = &definitions()["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        d["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let l = &definitions()["io.k8s.api.apps.v1.DeploymentList"];
    assert_eq!(
        l["x-kubernetes-group-version-kind"][0]["kind"],
        "DeploymentList"
    );
    assert_eq!(
        l["properties"]["items"]["items"]["$ref"],
        "#/definitions/io.k8s.api.apps.v1.Deployment"
    );
    let gvks = definitions()[DELETE_OPTIONS]["x-kubernetes-group-version-kind"]
        .as_array()
        .expect("gvks");
    assert!(gvks.contains(&json!({"group": "apps", "kind": "DeleteOptions", "version": "v1"})));
    assert_eq!(
        definitions()[SCALE]["x-kubernetes-group-version-kind"][0]["group"],
        "autoscaling"
    );
}

#[test]
fn patch_extensions() {
    let c = prop("io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(c["x-kubernetes-list-type"], "map");
    assert_eq!(c["x-kubernetes-list-map-keys"], json!(["name"]));
    let p = prop("io.k8s.api.core.v1.ServiceSpec", "ports");
    assert_eq!(p["x-kubernetes-patch-merge-key"], "port");
    assert_eq!(p["x-kubernetes-list-map-keys"], json!(["port", "protocol"]));
    let p = prop("io.k8s.api.core.v1.Container", "ports");
    assert_eq!(p["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        p["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let v = prop("io.k8s.api.core.v1.PodSpec", "volumes");
    assert_eq!(v["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let f = prop(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    );
    assert_eq!(f["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(f["x-kubernetes-list-type"], "set");
    let o = prop(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
    );
    assert_eq!(o["x-kubernetes-patch-merge-key"], "uid");
    assert_eq!(
        prop("io.k8s.api.core.v1.PodSpec", "tolerations")["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        prop("io.k8s.api.core.v1.Container", "args")["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        prop("io.k8s.api.core.v1.NodeStatus", "addresses")["x-kubernetes-patch-merge-key"],
        "type"
    );
    assert_eq!(
        prop("io.k8s.api.apps.v1.DeploymentStatus", "conditions")["x-kubernetes-patch-merge-key"],
        "type"
    );
    let s = prop("io.k8s.api.apps.v1.DeploymentSpec", "strategy");
    assert_eq!(s["x-kubernetes-patch-strategy"], "retainKeys");
    assert!(s["$ref"].is_string());
    assert_eq!(
        prop("io.k8s.api.core.v1.EphemeralContainer", "env")["x-kubernetes-patch-merge-key"],
        "name"
    );
    assert_eq!(
        definitions()["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]
            ["x-kubernetes-map-type"],
        "atomic"
    );
    assert_eq!(
        definitions()["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
            ["x-kubernetes-int-or-string"],
        true
    );
}

#[test]
fn extension_table_targets_exist() {
    for (def, property, _) in extensions::FIELD_EXTENSIONS {
        let d = definitions()
            .get(*def)
            .unwrap_or_else(|| panic!("{def} missing"));
        if !property.is_empty() {
            assert!(
                d["properties"].get(*property).is_some(),
                "{def}.{property} missing"
            );
        }
    }
}

#[test]
fn every_resource_has_definitions() {
    for r in RESOURCES {
        assert!(
            KIND_TYPES.iter().any(|(d, _)| *d == r.definition),
            "{} has no type",
            r.definition
        );
        let d = definitions()
            .get(r.definition)
            .unwrap_or_else(|| panic!("{} missing", r.definition));
        assert!(d["x-kubernetes-group-version-kind"]
            .as_array()
            .expect("gvk")
            .contains(&json!({"group": r.group, "kind": r.kind, "version": r.version})));
        assert!(definitions().contains_key(&format!("{}List", r.definition)));
    }
    for name in [STATUS, DELETE_OPTIONS, WATCH_EVENT, PATCH, SCALE, LIST_META] {
        assert!(definitions().contains_key(name), "{name}");
    }
    assert!(definitions().contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"));
}

#[test]
fn unknown_fields_found() {
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "x",
            "labels": {"app": "x", "any.key/whatever": "y"},
            "annotations": {"a": "b"},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}, "weird": 1}]
        },
        "spec": {
            "bogus": 1,
            "selector": {"matchLabels": {"app": "x"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "i", "ports": [{"containerPort": 80}]},
                        {"name": "b", "image": "i", "bogus": true, "resources": {"limits": {"cpu": "1"}}}
                    ]
                }
            }
        },
        "status": {"conditions": [{"type": "Available", "nope": "x"}]}
    });
    assert_eq!(
        unknown_fields("io.k8s.api.apps.v1.Deployment", &obj),
        vec![
            ".spec.bogus".to_string(),
            ".spec.template.spec.containers[1].bogus".to_string(),
            ".status.conditions[0].nope".to_string(),
        ]
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    assert!(unknown_fields("io.k8s.api.core.v1.ConfigMap", &cm).is_empty());
    let top = json!({"apiVersion": "v1", "kind": "Pod", "foo": 1});
    assert_eq!(unknown_fields("io.k8s.api.core.v1.Pod", &top), vec![".foo"]);
    assert!(unknown_fields("no.such.Kind", &top).is_empty());
}

#[test]
fn v2_document_shape() {
    let doc = parse(v2_json());
    assert_eq!(doc["swagger"], "2.0");
    assert_eq!(doc["info"]["version"], "v1.33.0");
    let paths = doc["paths"].as_object().expect("paths");
    let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
    assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
    assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedPod");
    assert_eq!(
        item["patch"]["x-kubernetes-group-version-kind"],
        json!({"group": "", "kind": "Pod", "version": "v1"})
    );
    let names: Vec<&str> = item["patch"]["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in ["body", "dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(names.contains(&n), "{n}");
    }
    assert!(item["patch"]["consumes"]
        .as_array()
        .expect("consumes")
        .contains(&json!("application/apply-patch+yaml")));
    assert!(paths.contains_key("/api/v1/pods"));
    assert!(paths.contains_key("/api/v1/nodes/{name}/status"));
    assert!(paths.contains_key("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"));
    assert_eq!(
        paths["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["delete"]["operationId"],
        "deleteRbacAuthorizationV1CollectionClusterRole"
    );
    assert_eq!(
        paths["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"]["x-kubernetes-action"],
        "list"
    );
}

fn assert_refs_resolve(doc: &Value, prefix: &str, defs: &Map<String, Value>, what: &str) {
    let mut refs = std::collections::BTreeSet::new();
    fn walk(v: &Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.insert(v.as_str().expect("string ref").to_string());
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{what}: bad ref {r}"));
        assert!(defs.contains_key(name), "{what}: {r} does not resolve");
    }
}

#[test]
fn every_ref_resolves() {
    let v2 = parse(v2_json());
    let defs = v2["definitions"].as_object().expect("definitions");
    assert_refs_resolve(&v2, "#/definitions/", defs, "v2");

    let index = parse(v3_index_json());
    let paths = index["paths"].as_object().expect("index paths");
    assert_eq!(paths.len(), group_versions().len());
    for (gv, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().expect("url");
        let (bytes, hash) = v3_group_version_json(gv).expect("served gv");
        assert_eq!(url, format!("/openapi/v3/{gv}?hash={hash}"));
        let doc = parse(bytes);
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        assert_refs_resolve(&doc, "#/components/schemas/", schemas, gv);
    }
}

#[test]
fn v3_index_and_field_validation() {
    let index = parse(v3_index_json());
    assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("url")
        .starts_with("/openapi/v3/apis/apps/v1?hash="));
    assert!(index["paths"].get("api/v1").is_some());
    assert!(v3_group_version_json("apis/nope/v1").is_none());

    // What kubectl's QueryParamVerifier does: the first PATCH operation with the kind's GVK
    // must carry a `fieldValidation` query parameter.
    for r in RESOURCES {
        let (bytes, _) = v3_group_version_json(&gv_path(r.group, r.version)).expect("gv");
        let doc = parse(bytes);
        let want = json!({"group": r.group, "kind": r.kind, "version": r.version});
        let mut found = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            let Some(op) = item.get("patch") else {
                continue;
            };
            if op["x-kubernetes-group-version-kind"] != want {
                continue;
            }
            found += 1;
            assert!(op["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            assert!(op["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some());
        }
        assert!(found > 0, "{} has no patch", r.kind);
        // The kind's schema is in the document with its GVK.
        assert!(
            doc["components"]["schemas"][r.definition]["x-kubernetes-group-version-kind"]
                .is_array()
        );
    }
    // References with siblings are wrapped in allOf.
    let (apps, _) = v3_group_version_json("apis/apps/v1").expect("apps");
    let doc = parse(apps);
    let meta =
        &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"];
    assert_eq!(
        meta["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
}

#[test]
fn hash_is_stable() {
    assert_eq!(hash_hex(b"abc"), hash_hex(b"abc"));
    assert_ne!(hash_hex(b"abc"), hash_hex(b"abd"));
    assert_eq!(hash_hex(b"").len(), 32);
}

#[test]
fn v2_protobuf_encodes_document() {
    let pb = v2_protobuf();
    // Field 1 (swagger) = "2.0", then field 2 (info).
    assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
    assert_eq!(pb[5], 0x12);
    assert!(pb.len() > 100_000);
    // Extensions travel as YAML text inside Any.
    let needle = b"x-kubernetes-group-version-kind";
    assert!(pb.windows(needle.len()).any(|w| w == needle));
}
