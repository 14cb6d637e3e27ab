//! The generic object lifecycle shared by every resource: keys in the store, create, update,
//! patch, delete, list, and the per-kind strategy hooks upstream has (status resets,
//! generation, graceful pod deletion, namespace termination, finalizers).

use crate::node_ports;
use crate::selector::{FieldSelector, LabelSelector};
use crate::service_ips::ServiceCidr;
use crate::status::{ApiError, Cause};
use berth_api::registry::{self, ResourceInfo};
use berth_store::{ListOptions, Revision, Store, StoreError};
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Per-request options of a write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: String,
    pub field_validation: FieldValidation,
}

/// Options of a delete (`DeleteOptions` from the body and query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

impl DeleteOptions {
    /// Takes the fields of a `DeleteOptions` object (a delete's body, or an Eviction's
    /// `deleteOptions`); `orphanDependents: true` is the old spelling of `Orphan`.
    pub fn merge_body(&mut self, body: &Value) {
        let text = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        self.grace_period_seconds = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        self.propagation_policy = text("/propagationPolicy");
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            self.propagation_policy
                .get_or_insert_with(|| "Orphan".into());
        }
        self.precondition_uid = text("/preconditions/uid");
        self.precondition_resource_version = text("/preconditions/resourceVersion");
        if let Some(d) = body.get("dryRun").and_then(Value::as_array) {
            self.dry_run |= d.iter().any(|v| v == "All");
        }
    }
}

/// The result of a write: the object and warnings for the `Warning` header.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// True when a create happened (HTTP 201).
    pub created: bool,
}

/// What a list asks for: selectors, page size and position, and the revision to read at.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub labels: &'a LabelSelector,
    pub fields: &'a FieldSelector,
    pub limit: Option<i64>,
    pub continue_token: Option<&'a str>,
    /// Read this past revision (`None`: the newest state).
    pub at: Option<Revision>,
}

impl<'a> ListQuery<'a> {
    /// Every object matching the selectors, at the newest state.
    pub fn all(labels: &'a LabelSelector, fields: &'a FieldSelector) -> Self {
        ListQuery {
            labels,
            fields,
            limit: None,
            continue_token: None,
            at: None,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub resource_version: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// The generic object registry over the datastore.
#[derive(Clone)]
pub struct Objects {
    pub store: Arc<dyn Store>,
    /// Where Services get their cluster IPs.
    pub service_cidr: ServiceCidr,
    /// The shared watch feeds of the collections being watched (the watch cache).
    pub feeds: crate::watch::Feeds,
}

/// Now as upstream formats `metav1.Time`.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    // Bodies are checked to be objects when decoded; anything else becomes an empty object
    // rather than a panic.
    if !obj.is_object() {
        *obj = json!({});
    }
    let Value::Object(o) = obj else {
        unreachable!("just made an object")
    };
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    let Value::Object(m) = m else {
        unreachable!("just made an object")
    };
    m
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The store key of an object, and the prefix of a collection.
pub fn key(resource: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    format!("{}{}", prefix(resource, namespace), name)
}

pub fn prefix(resource: &ResourceInfo, namespace: Option<&str>) -> String {
    let resource = berth_api::storage::storage_of(resource);
    let group = if resource.group.is_empty() {
        "core"
    } else {
        resource.group
    };
    match (resource.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{group}/{}/{ns}/", resource.plural),
        _ => format!("/registry/{group}/{}/", resource.plural),
    }
}

/// Decodes a stored value into `resource`'s form and stamps its `resourceVersion`.
pub fn decode(
    resource: &ResourceInfo,
    bytes: &[u8],
    revision: Revision,
) -> Result<Value, ApiError> {
    let stored: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("failed to decode stored object: {e}")))?;
    let mut obj = berth_api::storage::from_storage(resource, stored);
    if obj.is_object() {
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(revision.to_string()));
    }
    Ok(obj)
}

/// The stored bytes of an object given in `resource`'s form (without `resourceVersion`,
/// which is the store's revision).
pub(crate) fn encode(resource: &ResourceInfo, obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut stored = berth_api::storage::to_storage(resource, obj);
    if let Some(m) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&stored)
        .map_err(|e| ApiError::internal(format!("failed to encode object: {e}")))
}

fn schema() -> berth_patch::Schema<'static> {
    berth_patch::Schema {
        definitions: berth_api::openapi::definitions(),
    }
}

fn causes(list: Vec<berth_api::validation::Cause>) -> Vec<Cause> {
    list.into_iter()
        .map(|c| Cause {
            reason: c.kind.as_str().to_string(),
            message: c.message,
            field: c.field,
        })
        .collect()
}

/// Fields a write may not set directly (the server owns them).
const SYSTEM_FIELDS: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

impl Objects {
    pub fn new(store: Arc<dyn Store>, service_cidr: ServiceCidr) -> Self {
        Objects {
            store,
            service_cidr,
            feeds: crate::watch::Feeds::default(),
        }
    }

    /// Gives a new Service its cluster IP (upstream's Service REST storage does this).
    async fn allocate_cluster_ip(
        &self,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<Option<String>, ApiError> {
        let spec = obj.get("spec");
        let ty = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let requested = spec
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if ty == "ExternalName" || requested == "None" || dry_run {
            return Ok(None);
        }
        let requested = if requested.is_empty() {
            None
        } else {
            Some(requested.parse().map_err(|_| {
                ApiError::new(422, "Invalid", format!("spec.clusterIP: Invalid value: \"{requested}\": must be a valid IP address"))
            })?)
        };
        let owner = format!(
            "{}/{}",
            meta_str(obj, "namespace").unwrap_or(""),
            meta_str(obj, "name").unwrap_or("")
        );
        let ip = self
            .service_cidr
            .allocate(self.store.as_ref(), requested, &owner)
            .await?
            .to_string();
        set_path(obj, &["spec", "clusterIP"], json!(ip));
        set_path(obj, &["spec", "clusterIPs"], json!([ip]));
        Ok(Some(ip))
    }

    /// Frees what a deleted object held (a Service's cluster IP and node ports).
    async fn released(&self, resource: &ResourceInfo, obj: &Value) {
        if resource.kind == "Service" {
            if let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
                self.service_cidr.release(self.store.as_ref(), ip).await;
            }
            node_ports::release(self.store.as_ref(), &node_ports::held(obj)).await;
        }
    }

    /// Claims the node ports of a Service being written (none on a dry run).
    async fn claim_node_ports(
        &self,
        resource: &ResourceInfo,
        obj: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<node_ports::Claimed, ApiError> {
        if resource.kind != "Service" || dry_run {
            return Ok(node_ports::Claimed::default());
        }
        let namespace = meta_str(obj, "namespace").unwrap_or("").to_string();
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let who = node_ports::Owner {
            resource,
            namespace: &namespace,
            name: &name,
        };
        node_ports::claim(self.store.as_ref(), obj, old, &who).await
    }

    /// Reads one object.
    pub async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.current(resource, namespace, name)
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// An object and its revision, if it exists.
    pub async fn current(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Revision)>, ApiError> {
        match self.store.get(&key(resource, namespace, name)).await? {
            Some(kv) => Ok(Some((
                decode(resource, &kv.value, kv.mod_revision)?,
                kv.mod_revision,
            ))),
            None => Ok(None),
        }
    }

    /// Lists a collection with selectors and pagination.
    pub async fn list(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        query: &ListQuery<'_>,
    ) -> Result<ListPage, ApiError> {
        let ListQuery {
            labels,
            fields,
            limit,
            continue_token,
            at,
        } = *query;
        let prefix = prefix(resource, namespace);
        // A continued list reads the same snapshot as its first page.
        let (mut start_after, mut at) = match continue_token {
            Some(t) => {
                let (key, revision) = decode_continue(t, &prefix)?;
                (Some(key), Some(revision))
            }
            None => (None, at),
        };
        let limit = limit.filter(|l| *l > 0).map(|l| l as usize);
        let filtered = !labels.is_empty() || !fields.is_empty();
        let mut items = Vec::new();
        let mut revision = 0;
        loop {
            let want = limit.map(|l| l - items.len());
            let page = self
                .store
                .list(
                    &prefix,
                    ListOptions {
                        start_after: start_after.clone(),
                        limit: want.map(|w| if filtered { w.max(64) } else { w }),
                        revision: at,
                    },
                )
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if continue_token.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    e => e.into(),
                })?;
            if revision == 0 {
                revision = page.revision;
                at = Some(revision);
            }
            let mut last_key = None;
            let mut stopped_early = false;
            let n = page.items.len();
            for (i, kv) in page.items.into_iter().enumerate() {
                let obj = decode(resource, &kv.value, kv.mod_revision)?;
                last_key = Some(kv.key);
                if labels.matches(&obj) && fields.matches(&obj) {
                    items.push(obj);
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    stopped_early = i + 1 < n;
                    break;
                }
            }
            let more = page.more || stopped_early;
            let full = limit.is_some_and(|l| items.len() >= l);
            if !more || last_key.is_none() {
                return Ok(ListPage {
                    items,
                    resource_version: revision,
                    continue_token: None,
                    remaining: None,
                });
            }
            if full {
                let last = last_key.unwrap_or_default();
                let remaining = if filtered || stopped_early {
                    None
                } else {
                    Some(page.remaining)
                };
                let token = encode_continue(revision, last.strip_prefix(&prefix).unwrap_or(&last));
                return Ok(ListPage {
                    items,
                    resource_version: revision,
                    continue_token: Some(token),
                    remaining,
                });
            }
            start_after = last_key;
        }
    }

    /// Checks the namespace of a new namespaced object exists and is not terminating.
    async fn check_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        let ns_res = namespaces();
        match self.current(ns_res, None, namespace).await? {
            None => Err(ApiError::not_found(ns_res, namespace)),
            Some((ns, _)) => {
                let terminating = meta_str(&ns, "deletionTimestamp").is_some()
                    || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
                if terminating {
                    let mut e = ApiError::forbidden(format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    ));
                    e.causes.push(Cause {
                        reason: "NamespaceTerminating".into(),
                        message: format!("namespace {namespace} is being terminated"),
                        field: "metadata.namespace".into(),
                    });
                    e.name = Some(namespace.to_string());
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks and normalises a decoded body: kind, unknown fields, types; applies defaults.
    fn admit(
        &self,
        resource: &ResourceInfo,
        obj: &mut Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        let api_version = resource.api_version();
        match o.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
            _ => {}
        }
        match o.get("kind").and_then(Value::as_str) {
            Some(k) if k != resource.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    resource.kind
                )))
            }
            _ => {}
        }
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(resource.kind));
        if opts.field_validation != FieldValidation::Ignore {
            let unknown = berth_api::openapi::unknown_fields(resource.definition, obj);
            if !unknown.is_empty() {
                if opts.field_validation == FieldValidation::Strict {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        resource.kind,
                        resource.api_version(),
                        resource.kind,
                        list.join(", ")
                    )));
                }
                warnings.extend(
                    unknown
                        .iter()
                        .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.'))),
                );
            }
        }
        berth_api::validation::check_types(resource, obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                resource.kind,
                resource.api_version(),
                resource.kind
            ))
        })?;
        berth_api::defaults::apply(resource, obj);
        Ok(())
    }

    fn validate(
        &self,
        resource: &ResourceInfo,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let found = berth_api::validation::validate(resource, obj, old);
        if found.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                resource,
                meta_str(obj, "name").unwrap_or(""),
                causes(found),
            ))
        }
    }

    /// Creates an object (POST).
    pub async fn create(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let mut warnings = Vec::new();
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        // Identity first: defaulting derives some fields from the uid (a Job's selector).
        let m = meta_mut(&mut obj);
        for f in SYSTEM_FIELDS {
            m.remove(*f);
        }
        m.remove("resourceVersion");
        m.remove("selfLink");
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        self.admit(resource, &mut obj, opts, &mut warnings)?;
        let m = meta_mut(&mut obj);
        if resource.namespaced {
            let ns = match (namespace, m.get("namespace").and_then(Value::as_str)) {
                (Some(url), Some(body)) if url != body => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (Some(url), _) => url.to_string(),
                (None, Some(body)) => body.to_string(),
                (None, None) => "default".to_string(),
            };
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => format!("{prefix}{}", generate_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        resource,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ))
                }
            },
        };
        m.insert("name".into(), json!(name));
        if resource.has_spec {
            m.insert("generation".into(), json!(1));
        }
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        if let Some(ns) = &ns {
            self.check_namespace(ns).await?;
        }
        prepare_for_create(resource, &mut obj);
        self.validate(resource, &obj, None)?;
        let allocated = if resource.kind == "Service" {
            self.allocate_cluster_ip(&mut obj, opts.dry_run).await?
        } else {
            None
        };
        let node_ports = match self
            .claim_node_ports(resource, &mut obj, None, opts.dry_run)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if let Some(ip) = allocated {
                    self.service_cidr.release(self.store.as_ref(), &ip).await;
                }
                return Err(e);
            }
        };
        obj = berth_patch::managed_fields::record_update(
            &Value::Null,
            &obj,
            &opts.field_manager,
            &schema(),
            resource.definition,
            &resource.api_version(),
            &now(),
            None,
        );
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
                created: true,
            });
        }
        let k = key(resource, ns.as_deref(), &name);
        match self.store.create(&k, encode(resource, &obj)?).await {
            Ok(kv) => {
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                Ok(Written {
                    object: obj,
                    warnings,
                    created: true,
                })
            }
            Err(e) => {
                if let Some(ip) = allocated {
                    self.service_cidr.release(self.store.as_ref(), &ip).await;
                }
                node_ports::release(self.store.as_ref(), &node_ports.allocated).await;
                match e {
                    StoreError::AlreadyExists(_) => Err(ApiError::already_exists(resource, &name)),
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Replaces an object or one of its subresources (PUT), or applies an already computed
    /// new state of it (PATCH). `expected` is the revision the new state was computed from.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        old: (Value, Revision),
        patched: bool,
    ) -> Result<Written, ApiError> {
        let (old, old_rev) = old;
        let mut warnings = Vec::new();
        self.admit(resource, &mut obj, opts, &mut warnings)?;
        let m = meta_mut(&mut obj);
        if let Some(body_name) = m.get("name").and_then(Value::as_str) {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        m.insert("name".into(), json!(name));
        if let Some(ns) = namespace {
            if m.get("namespace")
                .and_then(Value::as_str)
                .is_some_and(|b| b != ns)
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), json!(ns));
        }
        // A stale resourceVersion in the body is a conflict (optimistic concurrency).
        if let Some(rv) = m
            .get("resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if rv != old_rev.to_string() && !patched {
                return Err(ApiError::stale(resource, name));
            }
        }
        let mut new = match subresource {
            None => {
                let mut new = obj;
                keep_system_fields(&old, &mut new);
                if resource.kind == "Service" {
                    keep_cluster_ip(&old, &mut new);
                }
                if resource.subresources.status {
                    match old.get("status") {
                        Some(s) => set(&mut new, "status", s.clone()),
                        None => remove(&mut new, "status"),
                    }
                }
                new
            }
            Some("status") => {
                let mut new = old.clone();
                match obj.get("status") {
                    Some(s) => set(&mut new, "status", s.clone()),
                    None => remove(&mut new, "status"),
                }
                new
            }
            Some("finalize") if resource.kind == "Namespace" => {
                let mut new = old.clone();
                let fin = obj
                    .pointer("/spec/finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("finalizers".into(), fin);
                } else {
                    set(&mut new, "spec", json!({"finalizers": fin}));
                }
                new
            }
            Some(other) => return Err(ApiError::not_found(resource, &format!("{name}/{other}"))),
        };
        // Generation moves when the spec (or, for kinds without one, the data) changes.
        if resource.has_spec && subresource.is_none() {
            let changed = old.get("spec") != new.get("spec");
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert(
                "generation".into(),
                json!(if changed { gen + 1 } else { gen }),
            );
        }
        if meta_str(&old, "deletionTimestamp").is_some() {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    resource,
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"),
                        field: "metadata.finalizers".into(),
                    }],
                ));
            }
        }
        self.validate(resource, &new, Some(&old))?;
        let node_ports = if subresource.is_none() {
            self.claim_node_ports(resource, &mut new, Some(&old), opts.dry_run)
                .await?
        } else {
            node_ports::Claimed::default()
        };
        new = berth_patch::managed_fields::record_update(
            &old,
            &new,
            &opts.field_manager,
            &schema(),
            resource.definition,
            &resource.api_version(),
            &now(),
            subresource.filter(|s| *s != "finalize"),
        );
        let written = self
            .write_update(
                resource, namespace, name, &old, old_rev, new, opts, warnings,
            )
            .await;
        let unused = match &written {
            Ok(_) => &node_ports.released,
            Err(_) => &node_ports.allocated,
        };
        node_ports::release(self.store.as_ref(), unused).await;
        written
    }

    /// Stores a computed new state: no-op detection, finalizer-driven deletion, CAS write.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        old: &Value,
        old_rev: Revision,
        mut new: Value,
        opts: &WriteOptions,
        warnings: Vec<String>,
    ) -> Result<Written, ApiError> {
        meta_mut(&mut new).insert("resourceVersion".into(), json!(old_rev.to_string()));
        if without_managed_time(&new) == without_managed_time(old) {
            return Ok(Written {
                object: old.clone(),
                warnings,
                created: false,
            });
        }
        let k = key(resource, namespace, name);
        // The last finalizer gone from an object being deleted: it goes away now.
        // The last finalizer gone from an object being deleted: it goes away now.
        let gone = meta_str(&new, "deletionTimestamp").is_some()
            && finalizers(&new).is_empty()
            && namespace_finalizers_done(resource, &new);
        if opts.dry_run {
            return Ok(Written {
                object: new,
                warnings,
                created: false,
            });
        }
        let result = if gone {
            self.store.delete(&k, Some(old_rev)).await.map(|_| None)
        } else {
            self.store
                .update(&k, encode(resource, &new)?, old_rev)
                .await
                .map(Some)
        };
        match result {
            Ok(Some(kv)) => {
                meta_mut(&mut new)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            }
            Ok(None) => self.released(resource, &new).await,
            Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(resource, name)),
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(resource, name)),
            Err(e) => return Err(e.into()),
        }
        Ok(Written {
            object: new,
            warnings,
            created: false,
        })
    }

    /// Deletes an object, honouring finalizers, graceful pod deletion and preconditions.
    /// Returns the object if it still exists (being deleted), or `None` once gone.
    pub async fn delete(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        if resource.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        for _ in 0..8 {
            let Some((obj, rev)) = self.current(resource, namespace, name).await? else {
                return Err(ApiError::not_found(resource, name));
            };
            if let Some(uid) = &opts.precondition_uid {
                let have = meta_str(&obj, "uid").unwrap_or("");
                if have != uid {
                    return Err(ApiError::conflict(resource, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    )));
                }
            }
            if let Some(want) = &opts.precondition_resource_version {
                if *want != rev.to_string() {
                    return Err(ApiError::conflict(resource, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
                    )));
                }
            }
            let mut new = obj.clone();
            let mut fins = finalizers(&obj);
            match opts.propagation_policy.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => fins.push("foregroundDeletion".into()),
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                Some("Foreground" | "Orphan" | "Background") | None => {}
                Some(other) => {
                    return Err(ApiError::invalid(resource, name, vec![Cause {
                        reason: "FieldValueNotSupported".into(),
                        message: format!("Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                        field: "propagationPolicy".into(),
                    }]))
                }
            }
            let already = meta_str(&obj, "deletionTimestamp").is_some();
            let grace = graceful_seconds(resource, &obj, opts.grace_period_seconds);
            let ns_pending = resource.kind == "Namespace"
                && obj
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
            if fins.is_empty() && grace == 0 && !ns_pending {
                if opts.dry_run {
                    return Ok((obj, true));
                }
                return match self
                    .store
                    .delete(&key(resource, namespace, name), Some(rev))
                    .await
                {
                    Ok(_) => {
                        self.released(resource, &obj).await;
                        Ok((obj, true))
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound(_)) => Err(ApiError::not_found(resource, name)),
                    Err(e) => Err(e.into()),
                };
            }
            // Mark for deletion; finalizers, the node agent or the namespace controller finish it.
            let m = meta_mut(&mut new);
            m.insert("finalizers".into(), json!(fins));
            if fins.is_empty() {
                m.remove("finalizers");
            }
            let current_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
            if !already || current_grace.is_some_and(|g| grace < g) {
                let at = Utc::now() + chrono::Duration::seconds(grace);
                m.insert(
                    "deletionTimestamp".into(),
                    json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if resource.kind == "Namespace" {
                set_path(&mut new, &["status", "phase"], json!("Terminating"));
            }
            if new == obj {
                return Ok((obj, false));
            }
            if opts.dry_run {
                return Ok((new, false));
            }
            match self
                .store
                .update(
                    &key(resource, namespace, name),
                    encode(resource, &new)?,
                    rev,
                )
                .await
            {
                Ok(kv) => {
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok((new, false));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(resource, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(resource, name))
    }
}

/// Namespaces the cluster needs, which upstream's lifecycle admission refuses to delete.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The grace period of a delete: only pods bound to a node and not finished get one.
fn graceful_seconds(resource: &ResourceInfo, obj: &Value, requested: Option<i64>) -> i64 {
    if resource.kind != "Pod" {
        return 0;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let default = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    requested.unwrap_or(default).max(0)
}

/// A namespace with `spec.finalizers` left is not deleted yet.
fn namespace_finalizers_done(resource: &ResourceInfo, obj: &Value) -> bool {
    resource.kind != "Namespace"
        || obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
}

fn namespaces() -> &'static ResourceInfo {
    registry::find("", "v1", "namespaces").unwrap_or(&registry::RESOURCES[0])
}

fn set(obj: &mut Value, field: &str, value: Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert(field.into(), value);
    }
}

fn remove(obj: &mut Value, field: &str) {
    if let Some(o) = obj.as_object_mut() {
        o.remove(field);
    }
}

fn set_path(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, seg) in path.iter().enumerate() {
        let Some(o) = cur.as_object_mut() else { return };
        if i + 1 == path.len() {
            o.insert((*seg).into(), value);
            return;
        }
        cur = o.entry(*seg).or_insert_with(|| json!({}));
        if !cur.is_object() {
            *cur = json!({});
        }
    }
}

fn without_managed_time(obj: &Value) -> Value {
    let mut c = obj.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
    }
    c
}

/// Keeps what a client cannot change through an update: identity and deletion state.
fn keep_system_fields(old: &Value, new: &mut Value) {
    let om = meta(old).cloned().unwrap_or_default();
    let nm = meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match om.get(f) {
            Some(v) => nm.insert(f.into(), v.clone()),
            None => nm.remove(f),
        };
    }
    if nm.get("managedFields").is_none() {
        if let Some(mf) = om.get("managedFields") {
            nm.insert("managedFields".into(), mf.clone());
        }
    }
}

/// An update that leaves a Service's cluster IP empty keeps the allocated one.
fn keep_cluster_ip(old: &Value, new: &mut Value) {
    let empty = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if empty {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                set_path(new, &["spec", f], v.clone());
            }
        }
    }
}

/// Upstream's create strategies: most kinds start with an empty status.
fn prepare_for_create(resource: &ResourceInfo, obj: &mut Value) {
    match resource.kind {
        "Pod" => {
            let qos = qos_class(obj);
            set(obj, "status", json!({"phase": "Pending", "qosClass": qos}));
        }
        "Namespace" => set(obj, "status", json!({"phase": "Active"})),
        "Service" => set(obj, "status", json!({"loadBalancer": {}})),
        "PersistentVolumeClaim" | "PersistentVolume" => {
            set(obj, "status", json!({"phase": "Pending"}))
        }
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "CronJob"
        | "Ingress"
        | "PodDisruptionBudget" => {
            let empty = match resource.kind {
                "ReplicaSet" | "StatefulSet" => json!({"replicas": 0}),
                "DaemonSet" => {
                    json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
                }
                "PodDisruptionBudget" => {
                    json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
                }
                "Ingress" => json!({"loadBalancer": {}}),
                _ => json!({}),
            };
            set(obj, "status", empty);
        }
        _ => {}
    }
    if resource.kind == "Namespace" {
        if let Some(name) = meta_str(obj, "name").map(str::to_string) {
            let m = meta_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let (q, l) = (req.and_then(|m| m.get(r)), lim.and_then(|m| m.get(r)));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn encode_continue(revision: Revision, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(String, Revision), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let revision = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((format!("{prefix}{start}"), revision))
}

/// Creates the namespaces every cluster has, if missing.
pub async fn bootstrap(objects: &Objects) -> Result<(), ApiError> {
    let ns = namespaces();
    let opts = WriteOptions {
        dry_run: false,
        field_manager: "berth-apiserver".into(),
        field_validation: FieldValidation::Strict,
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if objects.current(ns, None, name).await?.is_none() {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match objects.create(ns, None, obj, &opts).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "demo/web");
        assert_eq!(
            decode_continue(&t, "/registry/core/pods/").ok(),
            Some(("/registry/core/pods/demo/web".to_string(), 42))
        );
        assert!(decode_continue("!!", "/x/").is_err());
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"spec": {"containers": [{}]}})),
            "BestEffort"
        );
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
