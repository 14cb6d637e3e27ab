//! The `paths` of the OpenAPI documents: one path item per resource URL of the registry
//! (collection, item, `/status`, `/scale`, all-namespaces list and the watch variants) with
//! operations shaped like upstream's (`operationId`, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, query parameters, bodies, responses), in v2 form, and
//! the conversion of a group-version's slice of them (plus the definitions it reaches) into
//! an OpenAPI 3.0 document.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{gv_path, DELETE_OPTIONS, PATCH, SCALE, STATUS, WATCH_EVENT};
use crate::registry::{ResourceInfo, RESOURCES};

const V2_REF: &str = "#/definitions/";
const V3_REF: &str = "#/components/schemas/";

const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PRODUCES_LIST: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn def_ref(name: &str) -> Value {
    json!({ "$ref": format!("{V2_REF}{name}") })
}

/// A query parameter (v2 form).
fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "type": ty,
        "uniqueItems": true,
        "description": description,
    })
}

/// A required path parameter (v2 form).
fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "type": "string",
        "uniqueItems": true,
        "description": description,
    })
}

fn body(definition: &str, required: bool) -> Value {
    json!({
        "name": "body",
        "in": "body",
        "required": required,
        "schema": def_ref(definition),
    })
}

fn pretty() -> Value {
    query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
    )
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present.",
    )
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. Defaults to unset"),
        query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. Defaults to unset"),
        query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        body(DELETE_OPTIONS, false),
        dry_run(),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
        query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. Acceptable values are: 'Orphan', 'Background', 'Foreground'."),
    ]
}

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, core → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The swagger tag of a group-version: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut chars = camel.chars();
    let lower: String = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// Builds operations for one resource.
struct ResourceOps<'a> {
    r: &'a ResourceInfo,
    /// `CoreV1`, `AppsV1`.
    id_infix: String,
    tag: String,
    /// `/api/v1`, `/apis/apps/v1`.
    prefix: String,
}

/// What an operation is about: the resource's kind or its `Scale`.
#[derive(Clone, Copy)]
enum Target {
    Kind,
    Scale,
}

impl<'a> ResourceOps<'a> {
    fn new(r: &'a ResourceInfo) -> Self {
        Self {
            r,
            id_infix: format!("{}{}", group_camel(r.group), capitalize(r.version)),
            tag: tag(r.group, r.version),
            prefix: format!("/{}", gv_path(r.group, r.version)),
        }
    }

    fn gvk(&self, target: Target) -> Value {
        match target {
            Target::Kind => {
                json!({"group": self.r.group, "kind": self.r.kind, "version": self.r.version})
            }
            Target::Scale => json!({"group": "autoscaling", "kind": "Scale", "version": "v1"}),
        }
    }

    /// `Namespaced` for namespaced resources, empty otherwise.
    fn ns(&self) -> &'static str {
        if self.r.namespaced {
            "Namespaced"
        } else {
            ""
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        action: &str,
        operation_id: String,
        description: String,
        target: Target,
        params: Vec<Value>,
        consumes: &[&str],
        produces: &[&str],
        responses: Value,
    ) -> Value {
        json!({
            "description": description,
            "operationId": operation_id,
            "consumes": consumes,
            "produces": produces,
            "schemes": ["https"],
            "tags": [self.tag],
            "parameters": params,
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": self.gvk(target),
        })
    }

    fn ok(definition: &str, extra: &[&str]) -> Value {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "schema": def_ref(definition)}),
        );
        for code in extra {
            let description = match *code {
                "201" => "Created",
                "202" => "Accepted",
                _ => "OK",
            };
            responses.insert(
                (*code).into(),
                json!({"description": description, "schema": def_ref(definition)}),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        Value::Object(responses)
    }

    fn list(&self, all_namespaces: bool) -> Value {
        let kind = self.r.kind;
        let id = if all_namespaces {
            format!("list{}{}ForAllNamespaces", self.id_infix, kind)
        } else {
            format!("list{}{}{}", self.id_infix, self.ns(), kind)
        };
        self.op(
            "list",
            id,
            format!("list or watch objects of kind {kind}"),
            Target::Kind,
            list_params(),
            &["*/*"],
            PRODUCES_LIST,
            Self::ok(&format!("{}List", self.r.definition), &[]),
        )
    }

    fn watch(&self, item: bool, all_namespaces: bool) -> Value {
        let kind = self.r.kind;
        let (action, id, description) = if item {
            (
                "watch",
                format!("watch{}{}{}", self.id_infix, self.ns(), kind),
                format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."),
            )
        } else if all_namespaces {
            (
                "watchlist",
                format!("watch{}{}ListForAllNamespaces", self.id_infix, kind),
                format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
            )
        } else {
            (
                "watchlist",
                format!("watch{}{}{}List", self.id_infix, self.ns(), kind),
                format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
            )
        };
        self.op(
            action,
            id,
            description,
            Target::Kind,
            list_params(),
            &["*/*"],
            PRODUCES_LIST,
            Self::ok(WATCH_EVENT, &[]),
        )
    }

    fn create(&self) -> Value {
        let kind = self.r.kind;
        let params = vec![
            body(self.r.definition, true),
            dry_run(),
            field_manager(),
            field_validation(),
        ];
        self.op(
            "post",
            format!("create{}{}{}", self.id_infix, self.ns(), kind),
            format!("create a {kind}"),
            Target::Kind,
            params,
            &["*/*"],
            PRODUCES,
            Self::ok(self.r.definition, &["201", "202"]),
        )
    }

    fn delete_collection(&self) -> Value {
        let kind = self.r.kind;
        let mut params = delete_params();
        params.extend(
            list_params()
                .into_iter()
                .filter(|p| !matches!(p["name"].as_str(), Some("watch" | "allowWatchBookmarks"))),
        );
        self.op(
            "deletecollection",
            format!("delete{}Collection{}{}", self.id_infix, self.ns(), kind),
            format!("delete collection of {kind}"),
            Target::Kind,
            params,
            &["*/*"],
            PRODUCES,
            Self::ok(STATUS, &[]),
        )
    }

    /// `suffix` is `""`, `"Status"` or `"Scale"`.
    fn read(&self, suffix: &str, target: Target) -> Value {
        let (definition, what) = self.subject(suffix, target);
        self.op(
            "get",
            format!(
                "read{}{}{}{}",
                self.id_infix,
                self.ns(),
                self.r.kind,
                suffix
            ),
            format!("read {what}"),
            target,
            Vec::new(),
            &["*/*"],
            PRODUCES,
            Self::ok(definition, &[]),
        )
    }

    fn replace(&self, suffix: &str, target: Target) -> Value {
        let (definition, what) = self.subject(suffix, target);
        let params = vec![
            body(definition, true),
            dry_run(),
            field_manager(),
            field_validation(),
        ];
        self.op(
            "put",
            format!(
                "replace{}{}{}{}",
                self.id_infix,
                self.ns(),
                self.r.kind,
                suffix
            ),
            format!("replace {what}"),
            target,
            params,
            &["*/*"],
            PRODUCES,
            Self::ok(definition, &["201"]),
        )
    }

    fn patch(&self, suffix: &str, target: Target) -> Value {
        let (definition, what) = self.subject(suffix, target);
        let params = vec![
            body(PATCH, true),
            dry_run(),
            query("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch)."),
            field_validation(),
            query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."),
        ];
        self.op(
            "patch",
            format!(
                "patch{}{}{}{}",
                self.id_infix,
                self.ns(),
                self.r.kind,
                suffix
            ),
            format!("partially update {what}"),
            target,
            params,
            PATCH_TYPES,
            PRODUCES,
            Self::ok(definition, &["201"]),
        )
    }

    fn delete(&self) -> Value {
        let kind = self.r.kind;
        self.op(
            "delete",
            format!("delete{}{}{}", self.id_infix, self.ns(), kind),
            format!("delete a {kind}"),
            Target::Kind,
            delete_params(),
            &["*/*"],
            PRODUCES,
            Self::ok(STATUS, &["202"]),
        )
    }

    /// The definition an item operation reads/writes and its description.
    fn subject(&self, suffix: &str, target: Target) -> (&'static str, String) {
        let kind = self.r.kind;
        match (target, suffix) {
            (Target::Scale, _) => (SCALE, format!("scale of the specified {kind}")),
            (Target::Kind, "Status") => {
                (self.r.definition, format!("status of the specified {kind}"))
            }
            (Target::Kind, _) => (self.r.definition, format!("the specified {kind}")),
        }
    }

    /// Adds every path of the resource to `paths`.
    fn add_paths(&self, paths: &mut Map<String, Value>) {
        let r = self.r;
        let plural = r.plural;
        let name = path_param("name", &format!("name of the {}", r.kind));
        let namespace = path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        );
        let (base, watch_base, scope): (String, String, Vec<Value>) = if r.namespaced {
            (
                format!("{}/namespaces/{{namespace}}/{plural}", self.prefix),
                format!("{}/watch/namespaces/{{namespace}}/{plural}", self.prefix),
                vec![namespace],
            )
        } else {
            (
                format!("{}/{plural}", self.prefix),
                format!("{}/watch/{plural}", self.prefix),
                Vec::new(),
            )
        };
        let with = |mut params: Vec<Value>, extra: &[Value]| {
            params.extend_from_slice(extra);
            params.push(pretty());
            Value::Array(params)
        };
        let item_params = with(vec![name.clone()], &scope);
        let collection_params = with(Vec::new(), &scope);

        paths.insert(
            base.clone(),
            json!({
                "get": self.list(false),
                "post": self.create(),
                "delete": self.delete_collection(),
                "parameters": collection_params,
            }),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": self.read("", Target::Kind),
                "put": self.replace("", Target::Kind),
                "patch": self.patch("", Target::Kind),
                "delete": self.delete(),
                "parameters": item_params,
            }),
        );
        if r.subresources.status {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({
                    "get": self.read("Status", Target::Kind),
                    "put": self.replace("Status", Target::Kind),
                    "patch": self.patch("Status", Target::Kind),
                    "parameters": item_params,
                }),
            );
        }
        if r.subresources.scale {
            paths.insert(
                format!("{base}/{{name}}/scale"),
                json!({
                    "get": self.read("Scale", Target::Scale),
                    "put": self.replace("Scale", Target::Scale),
                    "patch": self.patch("Scale", Target::Scale),
                    "parameters": item_params,
                }),
            );
        }
        paths.insert(
            watch_base.clone(),
            json!({
                "get": self.watch(false, false),
                "parameters": collection_params,
            }),
        );
        paths.insert(
            format!("{watch_base}/{{name}}"),
            json!({
                "get": self.watch(true, false),
                "parameters": item_params,
            }),
        );
        if r.namespaced {
            paths.insert(
                format!("{}/{plural}", self.prefix),
                json!({
                    "get": self.list(true),
                    "parameters": [pretty()],
                }),
            );
            paths.insert(
                format!("{}/watch/{plural}", self.prefix),
                json!({
                    "get": self.watch(false, true),
                    "parameters": [pretty()],
                }),
            );
        }
    }
}

/// The discovery path of a group-version (`/api/v1/`, `/apis/apps/v1/`).
fn resources_path(group: &str, version: &str) -> (String, Value) {
    let gv_camel = format!("{}{}", group_camel(group), capitalize(version));
    (
        format!("/{}/", gv_path(group, version)),
        json!({
            "get": {
                "description": "get available resources",
                "operationId": format!("get{gv_camel}APIResources"),
                "consumes": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
                "produces": PRODUCES,
                "schemes": ["https"],
                "tags": [tag(group, version)],
                "responses": {
                    "200": {"description": "OK", "schema": def_ref("io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList")},
                    "401": {"description": "Unauthorized"}
                }
            }
        }),
    )
}

/// Every path of the served API, v2 form, sorted by path.
pub(super) fn v2_paths() -> Map<String, Value> {
    let mut paths = Map::new();
    for (group, version) in super::group_versions() {
        let (path, item) = resources_path(group, version);
        paths.insert(path, item);
    }
    for r in RESOURCES {
        ResourceOps::new(r).add_paths(&mut paths);
    }
    let mut sorted: Vec<(String, Value)> = paths.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// The OpenAPI v3 document of one group-version: its paths and every definition they reach.
pub(super) fn v3_document(
    group: &str,
    version: &str,
    all_paths: &Map<String, Value>,
    definitions: &Map<String, Value>,
) -> Value {
    let prefix = format!("/{}/", gv_path(group, version));
    let mut reached = BTreeSet::new();
    let mut paths = Map::new();
    for (path, item) in all_paths {
        if !path.starts_with(&prefix) {
            continue;
        }
        let item = v3_path_item(item.clone());
        collect_refs(&item, &mut reached);
        paths.insert(path.clone(), item);
    }

    // Transitive closure of the referenced definitions.
    let mut pending: Vec<String> = reached.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        if let Some(def) = definitions.get(&name) {
            let mut found = BTreeSet::new();
            collect_refs(def, &mut found);
            for f in found {
                if reached.insert(f.clone()) {
                    pending.push(f);
                }
            }
        }
    }
    let mut schemas = Map::new();
    for name in reached {
        if let Some(def) = definitions.get(&name) {
            schemas.insert(name, v3_schema(def));
        }
    }

    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header"
                }
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// Adds the definition names referenced (`#/definitions/X` or `#/components/schemas/X`)
/// anywhere in `value` to `out`.
fn collect_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        let name = r
                            .strip_prefix(V2_REF)
                            .or_else(|| r.strip_prefix(V3_REF))
                            .unwrap_or(r);
                        out.insert(name.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A v2 schema in v3 form: references point at `#/components/schemas/`, and a reference
/// with siblings (a description, extensions) becomes `allOf: [{$ref}]` plus the siblings,
/// as upstream does (OpenAPI 3.0 ignores siblings of `$ref`).
pub(super) fn v3_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut reference = None;
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        let name = r.strip_prefix(V2_REF).unwrap_or(r);
                        reference = Some(format!("{V3_REF}{name}"));
                    }
                } else if k.starts_with("x-") || k == "enum" || k == "example" {
                    out.insert(k.clone(), v.clone());
                } else {
                    out.insert(k.clone(), v3_schema(v));
                }
            }
            match reference {
                Some(r) if out.is_empty() => json!({ "$ref": r }),
                Some(r) => {
                    out.insert("allOf".into(), json!([{ "$ref": r }]));
                    Value::Object(out)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(v3_schema).collect()),
        other => other.clone(),
    }
}

fn v3_path_item(item: Value) -> Value {
    let Value::Object(item) = item else {
        return item;
    };
    let mut out = Map::new();
    for (k, v) in item {
        if k == "parameters" {
            out.insert(k, v3_params(&v));
        } else {
            out.insert(k, v3_operation(v));
        }
    }
    Value::Object(out)
}

fn v3_params(params: &Value) -> Value {
    let Some(params) = params.as_array() else {
        return Value::Array(Vec::new());
    };
    Value::Array(
        params
            .iter()
            .filter(|p| p["in"] != "body")
            .map(|p| {
                let mut out = Map::new();
                for key in ["name", "in", "description", "required"] {
                    if let Some(v) = p.get(key) {
                        out.insert(key.into(), v.clone());
                    }
                }
                let mut schema = Map::new();
                for key in ["type", "uniqueItems"] {
                    if let Some(v) = p.get(key) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                out.insert("schema".into(), Value::Object(schema));
                Value::Object(out)
            })
            .collect(),
    )
}

fn media_types(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn v3_operation(op: Value) -> Value {
    let Value::Object(op) = op else {
        return op;
    };
    let consumes = op.get("consumes").map(media_types).unwrap_or_default();
    let produces = op.get("produces").map(media_types).unwrap_or_default();
    let mut out = Map::new();
    for (k, v) in op {
        match k.as_str() {
            "consumes" | "produces" | "schemes" => {}
            "parameters" => {
                if let Some(b) = v
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["in"] == "body"))
                {
                    let schema = v3_schema(&b["schema"]);
                    let content: Map<String, Value> = consumes
                        .iter()
                        .map(|m| (m.clone(), json!({ "schema": schema })))
                        .collect();
                    let mut request = json!({ "content": content });
                    if b["required"] == true {
                        request["required"] = Value::Bool(true);
                    }
                    out.insert("requestBody".into(), request);
                }
                out.insert(k, v3_params(&v));
            }
            "responses" => {
                let mut responses = Map::new();
                if let Value::Object(codes) = v {
                    for (code, resp) in codes {
                        let mut r = json!({ "description": resp["description"] });
                        if let Some(schema) = resp.get("schema") {
                            let schema = v3_schema(schema);
                            let content: Map<String, Value> = produces
                                .iter()
                                .map(|m| (m.clone(), json!({ "schema": schema })))
                                .collect();
                            r["content"] = Value::Object(content);
                        }
                        responses.insert(code, r);
                    }
                }
                out.insert(k, Value::Object(responses));
            }
            _ => {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}
