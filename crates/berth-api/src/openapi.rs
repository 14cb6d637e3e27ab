//! The OpenAPI documents of the served API: `/openapi/v2` (Swagger 2.0) and `/openapi/v3`
//! (an index plus one OpenAPI 3.0 document per group-version), generated from the
//! `k8s-openapi` types' `schemars` schemas.
//!
//! What the generated schemas lack compared with upstream is added here: the
//! `x-kubernetes-group-version-kind` of each kind and list, the patch and list extensions of
//! fields (`x-kubernetes-patch-strategy`, `x-kubernetes-list-type`, ...; see
//! [`extensions`]), the `List` definitions, and the `paths` of every resource and verb in the
//! [registry](crate::registry). kubectl reads these for `explain`, client-side strategic
//! merge patches and the `fieldValidation` support check; the patch and apply code reads the
//! field extensions through [`definitions`].
//!
//! Everything is computed lazily on first use and kept as serialized bytes (plus the one
//! definitions map), so a server that never serves OpenAPI pays nothing.

mod extensions;
mod fields;
mod paths;
mod proto;

use std::sync::OnceLock;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::gen::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use crate::registry::{ResourceInfo, RESOURCES};

pub use fields::unknown_fields;

/// Definition name of `metav1.Status`.
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
/// Definition name of `metav1.DeleteOptions`.
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// Definition name of `metav1.WatchEvent`.
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
/// Definition name of `metav1.Patch`.
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// Definition name of `autoscaling/v1` `Scale`.
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
/// Definition name of `metav1.ListMeta`.
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Adds the schema of `T` (and everything it references) to the generator.
type Register = fn(&mut SchemaGenerator);

fn register<T: schemars::JsonSchema>(gen: &mut SchemaGenerator) {
    gen.subschema_for::<T>();
}

/// The Rust type behind each registry definition name.
static KIND_TYPES: &[(&str, Register)] = &[
    ("io.k8s.api.core.v1.Namespace", register::<core::Namespace>),
    ("io.k8s.api.core.v1.Pod", register::<core::Pod>),
    ("io.k8s.api.core.v1.Service", register::<core::Service>),
    ("io.k8s.api.core.v1.Endpoints", register::<core::Endpoints>),
    ("io.k8s.api.core.v1.ConfigMap", register::<core::ConfigMap>),
    ("io.k8s.api.core.v1.Secret", register::<core::Secret>),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        register::<core::ServiceAccount>,
    ),
    ("io.k8s.api.core.v1.Event", register::<core::Event>),
    ("io.k8s.api.core.v1.Node", register::<core::Node>),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        register::<core::PersistentVolumeClaim>,
    ),
    (
        "io.k8s.api.core.v1.PersistentVolume",
        register::<core::PersistentVolume>,
    ),
    (
        "io.k8s.api.apps.v1.Deployment",
        register::<apps::Deployment>,
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSet",
        register::<apps::ReplicaSet>,
    ),
    (
        "io.k8s.api.apps.v1.StatefulSet",
        register::<apps::StatefulSet>,
    ),
    ("io.k8s.api.apps.v1.DaemonSet", register::<apps::DaemonSet>),
    (
        "io.k8s.api.apps.v1.ControllerRevision",
        register::<apps::ControllerRevision>,
    ),
    ("io.k8s.api.batch.v1.Job", register::<batch::Job>),
    ("io.k8s.api.batch.v1.CronJob", register::<batch::CronJob>),
    (
        "io.k8s.api.coordination.v1.Lease",
        register::<coordination::Lease>,
    ),
    (
        "io.k8s.api.discovery.v1.EndpointSlice",
        register::<discovery::EndpointSlice>,
    ),
    ("io.k8s.api.events.v1.Event", register::<events::Event>),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        register::<policy::PodDisruptionBudget>,
    ),
    (
        "io.k8s.api.networking.v1.Ingress",
        register::<networking::Ingress>,
    ),
    (
        "io.k8s.api.networking.v1.IngressClass",
        register::<networking::IngressClass>,
    ),
    (
        "io.k8s.api.networking.v1.NetworkPolicy",
        register::<networking::NetworkPolicy>,
    ),
    ("io.k8s.api.rbac.v1.Role", register::<rbac::Role>),
    (
        "io.k8s.api.rbac.v1.RoleBinding",
        register::<rbac::RoleBinding>,
    ),
    (
        "io.k8s.api.rbac.v1.ClusterRole",
        register::<rbac::ClusterRole>,
    ),
    (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        register::<rbac::ClusterRoleBinding>,
    ),
];

/// Types every document needs besides the kinds: request/response envelopes.
static EXTRA_TYPES: &[Register] = &[
    register::<meta::Status>,
    register::<meta::DeleteOptions>,
    register::<meta::WatchEvent<core::Pod>>,
    register::<meta::APIResourceList>,
    register::<meta::Patch>,
    register::<meta::ListMeta>,
    register::<autoscaling::Scale>,
];

/// Every schema definition, in OpenAPI v2 form (references are `#/definitions/NAME`),
/// sorted by name: the served kinds, their `List` types, the request/response envelopes
/// (`Status`, `DeleteOptions`, `WatchEvent`, `Patch`, `APIResourceList`, `Scale`) and all
/// definitions they reach, with upstream's `x-kubernetes-*` extensions. Computed once.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(build_definitions)
}

/// The whole `/openapi/v2` document (Swagger 2.0, JSON), serialized once.
pub fn v2_json() -> &'static [u8] {
    static V2: OnceLock<Vec<u8>> = OnceLock::new();
    V2.get_or_init(|| serde_json::to_vec(&v2_document()).unwrap_or_default())
        .as_slice()
}

/// The same `/openapi/v2` document as protobuf (gnostic `openapi.v2.Document`), for
/// requests that accept `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (or
/// `...spec.v2.v1.0+protobuf`): client-go's `OpenAPISchema()` (kubectl) only decodes this
/// form. Serve it with `Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf`
/// as upstream does (Go's MIME parser rejects the `@` form). Encoded once.
pub fn v2_protobuf() -> &'static [u8] {
    static V2_PB: OnceLock<Vec<u8>> = OnceLock::new();
    V2_PB
        .get_or_init(|| proto::document(&v2_document()))
        .as_slice()
}

/// The `/openapi/v2` document as a value (built per use; only the bytes are kept).
fn v2_document() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths::v2_paths(),
        "definitions": definitions(),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header"
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// One served group-version's OpenAPI v3 document and its hash.
struct V3Doc {
    /// `api/v1` or `apis/GROUP/VERSION`.
    path: String,
    bytes: Vec<u8>,
    hash: String,
}

/// All v3 documents, built together because the index needs every hash.
fn v3_docs() -> &'static [V3Doc] {
    static DOCS: OnceLock<Vec<V3Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let all_paths = paths::v2_paths();
        group_versions()
            .into_iter()
            .map(|(group, version)| {
                let path = gv_path(group, version);
                let doc = paths::v3_document(group, version, &all_paths, definitions());
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = hash_hex(&bytes);
                V3Doc { path, bytes, hash }
            })
            .collect()
    })
    .as_slice()
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=HEX"}, "apis/apps/v1": {...}, ...}}`, serialized once.
pub fn v3_index_json() -> &'static [u8] {
    static INDEX: OnceLock<Vec<u8>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut paths = Map::new();
            for doc in v3_docs() {
                paths.insert(
                    doc.path.clone(),
                    json!({
                        "serverRelativeURL": format!("/openapi/v3/{}?hash={}", doc.path, doc.hash)
                    }),
                );
            }
            serde_json::to_vec(&json!({ "paths": paths })).unwrap_or_default()
        })
        .as_slice()
}

/// The OpenAPI v3 document of one group-version (`path` like `api/v1` or `apis/apps/v1`,
/// without the `/openapi/v3/` prefix) and its hash (the one in the index's
/// `serverRelativeURL`), or `None` for a group-version that isn't served.
pub fn v3_group_version_json(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = path.trim_matches('/');
    v3_docs()
        .iter()
        .find(|d| d.path == path)
        .map(|d| (d.bytes.as_slice(), d.hash.as_str()))
}

/// The served group-versions in registry order, core first.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The URL path prefix (without leading slash) of a group-version: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A hex digest of `bytes`: 128-bit FNV-1a (stable across runs and builds).
fn hash_hex(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032X}")
}

/// `[{group, kind, version}]`, the form of `x-kubernetes-group-version-kind` on definitions.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn build_definitions() -> Map<String, Value> {
    let mut gen = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "#/definitions/".into();
            s.meta_schema = None;
            s.option_nullable = false;
            s.option_add_null_type = false;
        })
        .into_generator();
    for (_, reg) in KIND_TYPES {
        reg(&mut gen);
    }
    for reg in EXTRA_TYPES {
        reg(&mut gen);
    }
    let mut defs: Map<String, Value> = gen
        .take_definitions()
        .into_iter()
        .filter_map(|(name, schema)| serde_json::to_value(schema).ok().map(|v| (name, v)))
        .collect();

    // List types and the GVK of each kind and list.
    let mut gvks: Vec<(String, Value)> = Vec::new();
    for r in RESOURCES {
        let list = format!("{}List", r.definition);
        if !defs.contains_key(&list) {
            defs.insert(list.clone(), list_schema(r));
        }
        gvks.push((r.definition.to_string(), gvk(r.group, r.version, r.kind)));
        gvks.push((list, gvk(r.group, r.version, &format!("{}List", r.kind))));
    }
    gvks.push((SCALE.into(), gvk("autoscaling", "v1", "Scale")));
    gvks.push((STATUS.into(), gvk("", "v1", "Status")));
    for (group, version) in group_versions() {
        gvks.push((DELETE_OPTIONS.into(), gvk(group, version, "DeleteOptions")));
        gvks.push((WATCH_EVENT.into(), gvk(group, version, "WatchEvent")));
    }
    for (name, gvk) in gvks {
        if let Some(Value::Object(def)) = defs.get_mut(&name) {
            let entry = def
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                if !list.contains(&gvk) {
                    list.push(gvk);
                }
            }
        }
    }

    extensions::apply(&mut defs);

    let mut sorted: Vec<(String, Value)> = defs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// The `XList` definition of a kind, shaped like upstream's.
fn list_schema(r: &ResourceInfo) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", r.kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("items is the list of {}.", r.kind),
                "type": "array",
                "items": {"$ref": format!("#/definitions/{}", r.definition)}
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "$ref": format!("#/definitions/{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
            }
        }
    })
}

#[cfg(test)]
mod tests;
