//! HTTP handling of the API: decoding bodies, content negotiation (JSON, YAML, `Table`), and
//! mapping each verb on each resource path to the generic object lifecycle in [`crate::objects`].

use crate::auth::UserInfo;
use crate::discovery;
use crate::objects::{
    self, meta_str, DeleteOptions, FieldValidation, ListQuery, Objects, WriteOptions, Written,
};
use crate::request::{self, Query, ResourcePath, Route};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::watch;
use berth_api::registry::ResourceInfo;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::{json, Value};
use std::convert::Infallible;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (upstream's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    pub objects: Objects,
    /// `host:port` clients should use (legacy discovery).
    pub advertise: String,
    /// Set once the server is ready (`/readyz`).
    pub ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connects to nodes for `pods/log`, `pods/exec`, `pods/attach` (see [`crate::proxy`]).
    pub node_dialer: std::sync::Arc<crate::proxy::NodeDialer>,
}

/// What the client asked the response to look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Table,
}

fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        let p = part.trim();
        if p.contains("as=Table") {
            return Format::Table;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") {
            return Format::Json;
        }
        if p.starts_with("application/yaml") {
            return Format::Yaml;
        }
    }
    Format::Json
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(
    code: StatusCode,
    value: &Value,
    format: Format,
    warnings: &[String],
) -> Response<Body> {
    let (bytes, ctype) = match format {
        Format::Yaml => (
            serde_norway::to_string(value)
                .map(String::into_bytes)
                .unwrap_or_default(),
            "application/yaml",
        ),
        _ => (
            serde_json::to_vec(value).unwrap_or_default(),
            "application/json",
        ),
    };
    let mut builder = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, ctype);
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        builder = builder.header("Warning", text);
    }
    builder
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A JSON response.
pub fn ok_json(value: &Value) -> Response<Body> {
    json_response(StatusCode::OK, value, Format::Json, &[])
}

/// The `Status` response of an error.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, &e.to_status(), Format::Json, &[]);
    if let Some(s) = e.retry_after_seconds {
        if let Ok(v) = header::HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// One request, as the handlers see it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
}

impl Api {
    /// Answers one authenticated request.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let route = request::route(&req.path)?;
        if matches!(
            route,
            Route::OpenApiV2 | Route::OpenApiV3Index | Route::OpenApiV3(_)
        ) {
            let response = self.serve(req, route).await;
            // Building the documents the first time leaves megabytes of freed heap behind.
            crate::memory::release_free_memory();
            return response;
        }
        self.serve(req, route).await
    }

    async fn serve(&self, req: Request, route: Route) -> Result<Response<Body>, ApiError> {
        let aggregated = req
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| {
                a.split(',')
                    .map(str::trim)
                    .find(|p| p.contains("as=APIGroupDiscoveryList"))
                    .map(|p| {
                        if p.contains("v=v2beta1") {
                            "apidiscovery.k8s.io/v2beta1"
                        } else {
                            "apidiscovery.k8s.io/v2"
                        }
                    })
            });
        if !matches!(route, Route::Resource(_)) && req.method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                req.method
            )));
        }
        match route {
            Route::Version => Ok(ok_json(&discovery::version())),
            Route::Health(which) => {
                let ready = self.ready.load(std::sync::atomic::Ordering::Acquire);
                if which == "readyz" && !ready {
                    return Ok(Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .body(full("[-]berth not ready\nreadyz check failed\n"))
                        .unwrap_or_else(|_| Response::new(full(""))));
                }
                Ok(Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(full("ok"))
                    .unwrap_or_else(|_| Response::new(full(""))))
            }
            Route::ApiVersions => Ok(match aggregated {
                Some(v) => discovery_response(discovery::aggregated(true, v), v),
                None => ok_json(&discovery::api_versions(&self.advertise)),
            }),
            Route::ApiGroups => Ok(match aggregated {
                Some(v) => discovery_response(discovery::aggregated(false, v), v),
                None => ok_json(&discovery::api_group_list()),
            }),
            Route::CoreResources => discovery::resource_list("", "v1")
                .map(|v| ok_json(&v))
                .ok_or_else(not_found_path),
            Route::Group(g) => discovery::api_group(&g)
                .map(|v| ok_json(&v))
                .ok_or_else(not_found_path),
            Route::GroupResources(g, v) => discovery::resource_list(&g, &v)
                .map(|v| ok_json(&v))
                .ok_or_else(not_found_path),
            Route::OpenApiV2 => {
                let accept = req
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Ok(if accept.contains("proto-openapi.spec.v2") {
                    static_body(
                        berth_api::openapi::v2_protobuf(),
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )
                } else {
                    static_body(berth_api::openapi::v2_json(), "application/json")
                })
            }
            Route::OpenApiV3Index => Ok(static_body(
                berth_api::openapi::v3_index_json(),
                "application/json",
            )),
            Route::OpenApiV3(path) => berth_api::openapi::v3_group_version_json(&path)
                .map(|(bytes, hash)| {
                    let mut r = static_body(bytes, "application/json");
                    if let Ok(v) = header::HeaderValue::from_str(&format!("\"{hash}\"")) {
                        r.headers_mut().insert(header::ETAG, v);
                    }
                    r
                })
                .ok_or_else(not_found_path),
            Route::NotFound => Err(not_found_path()),
            Route::Resource(rp) => self.resource(req, rp).await,
        }
    }

    async fn resource(&self, req: Request, rp: ResourcePath) -> Result<Response<Body>, ApiError> {
        let format = negotiate(&req.headers);
        let r = rp.resource;
        let ns = rp.namespace.as_deref();
        let is_watch = rp.watch_prefix || req.query.flag("watch");
        match (&req.method, rp.name.as_deref(), rp.subresource.as_deref()) {
            (&Method::GET, None, None) if is_watch => {
                watch::serve(self.objects.clone(), r, ns, None, &req.query, format).await
            }
            (&Method::GET, Some(name), None) if is_watch => {
                watch::serve(self.objects.clone(), r, ns, Some(name), &req.query, format).await
            }
            (&Method::GET, None, None) => self.list(r, ns, &req.query, format).await,
            (&Method::GET, Some(name), None | Some("status")) => {
                let obj = self.objects.get(r, ns, name).await?;
                Ok(render_one(r, obj, format, &req.query))
            }
            (&Method::GET, Some(name), Some("scale")) if r.subresources.scale => {
                let obj = self.objects.get(r, ns, name).await?;
                Ok(json_response(StatusCode::OK, &scale_of(&obj), format, &[]))
            }
            (&Method::POST, None, None) => {
                let obj = decode_body(&req)?;
                let opts = write_options(&req)?;
                let w = self.objects.create(r, ns, obj, &opts).await?;
                Ok(written(w, format))
            }
            (&Method::POST, Some(name), Some("binding")) if r.kind == "Pod" => {
                let binding = decode_body(&req)?;
                let opts = write_options(&req)?;
                let status = self
                    .objects
                    .bind(r, ns, name, &binding, opts.dry_run)
                    .await?;
                Ok(json_response(StatusCode::CREATED, &status, format, &[]))
            }
            (&Method::POST, Some(name), Some("eviction")) if r.kind == "Pod" => {
                let eviction = decode_body(&req)?;
                let opts = write_options(&req)?;
                let status = self
                    .objects
                    .evict(r, ns, name, &eviction, opts.dry_run)
                    .await?;
                Ok(json_response(StatusCode::CREATED, &status, format, &[]))
            }
            (&Method::PUT, Some(name), sub) => {
                let obj = decode_body(&req)?;
                let opts = write_options(&req)?;
                self.check_sub(r, sub, name)?;
                let Some(current) = self.objects.current(r, ns, name).await? else {
                    return Err(ApiError::not_found(r, name));
                };
                if sub == Some("scale") {
                    return self
                        .write_scale(r, ns, name, current, obj, &opts, false, format)
                        .await;
                }
                let w = self
                    .objects
                    .update(r, ns, name, sub, obj, &opts, current, false)
                    .await?;
                Ok(written(w, format))
            }
            (&Method::PATCH, Some(name), sub) => {
                self.check_sub(r, sub, name)?;
                self.patch(&req, r, ns, name, sub, format).await
            }
            (&Method::DELETE, Some(name), None) => {
                let opts = delete_options(&req)?;
                let (obj, gone) = self.objects.delete(r, ns, name, &opts).await?;
                if gone {
                    let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
                    Ok(json_response(
                        StatusCode::OK,
                        &crate::status::success(r, name, &uid),
                        format,
                        &[],
                    ))
                } else {
                    Ok(json_response(StatusCode::OK, &obj, format, &[]))
                }
            }
            (&Method::DELETE, None, None) => self.delete_collection(&req, r, ns, format).await,
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                req.method, req.path
            ))),
        }
    }

    fn check_sub(&self, r: &ResourceInfo, sub: Option<&str>, name: &str) -> Result<(), ApiError> {
        match sub {
            None => Ok(()),
            Some("status") if r.subresources.status => Ok(()),
            Some("scale") if r.subresources.scale => Ok(()),
            Some("finalize") if r.kind == "Namespace" => Ok(()),
            Some(other) => Err(ApiError::not_found(r, &format!("{name}/{other}"))),
        }
    }

    async fn list(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        q: &Query,
        format: Format,
    ) -> Result<Response<Body>, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r)?;
        let at = self.list_revision(r, q).await?;
        let page = self
            .objects
            .list(
                r,
                ns,
                &ListQuery {
                    labels: &labels,
                    fields: &fields,
                    limit: q.int("limit")?,
                    continue_token: q.get("continue"),
                    at,
                },
            )
            .await?;
        let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
        if let Some(c) = &page.continue_token {
            metadata["continue"] = json!(c);
        }
        if let Some(n) = page.remaining {
            metadata["remainingItemCount"] = json!(n);
        }
        if format == Format::Table {
            let table = table_of(r, &page.items, metadata, q);
            return Ok(json_response(StatusCode::OK, &table, format, &[]));
        }
        let list = json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": metadata,
            "items": page.items,
        });
        Ok(json_response(StatusCode::OK, &list, format, &[]))
    }

    /// The revision a list reads at, from `resourceVersion` and `resourceVersionMatch`:
    /// `Exact` reads that past revision; otherwise the newest state, which is never older
    /// than the one asked for.
    async fn list_revision(&self, r: &ResourceInfo, q: &Query) -> Result<Option<i64>, ApiError> {
        let rv = q.int("resourceVersion")?;
        let unsupported = |message: String| {
            ApiError::invalid(
                r,
                "",
                vec![crate::status::Cause {
                    reason: "FieldValueNotSupported".into(),
                    message,
                    field: "resourceVersionMatch".into(),
                }],
            )
        };
        match (q.get("resourceVersionMatch"), rv) {
            (Some("Exact"), Some(rv)) if rv > 0 => Ok(Some(rv)),
            (Some("Exact"), _) => Err(unsupported(
                "Forbidden: resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\" or unset".into(),
            )),
            (None | Some("NotOlderThan"), Some(rv)) if rv > 0 => {
                let current = self.objects.store.current_revision().await?;
                if rv > current {
                    let mut e = ApiError::new(504, "Timeout", format!("Too large resource version: {rv}, current: {current}"));
                    e.retry_after_seconds = Some(1);
                    return Err(e);
                }
                Ok(None)
            }
            (None | Some("NotOlderThan"), _) => Ok(None),
            (Some(other), _) => Err(unsupported(format!(
                "Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_scale(
        &self,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        current: (Value, i64),
        scale: Value,
        opts: &WriteOptions,
        patched: bool,
        format: Format,
    ) -> Result<Response<Body>, ApiError> {
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !patched {
            if let Some(rv) = scale
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                if !rv.is_empty() && rv != current.1.to_string() {
                    return Err(ApiError::stale(r, name));
                }
            }
        }
        if replicas < 0 {
            return Err(ApiError::invalid(
                r,
                name,
                vec![crate::status::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        let mut obj = current.0.clone();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas));
        }
        let w = self
            .objects
            .update(r, ns, name, None, obj, opts, current, true)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &scale_of(&w.object),
            format,
            &w.warnings,
        ))
    }

    async fn patch(
        &self,
        req: &Request,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        format: Format,
    ) -> Result<Response<Body>, ApiError> {
        let ctype = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut opts = write_options(req)?;
        let schema = berth_patch::Schema {
            definitions: berth_api::openapi::definitions(),
        };
        let patch: Value = match ctype.as_str() {
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                parse_yaml_or_json(&req.body)?
            }
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            other => {
                let mut e = ApiError::unsupported_media_type(other);
                e.message = format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})");
                return Err(e);
            }
        };
        if ctype == "application/apply-patch+yaml" {
            if req.query.get("fieldManager").is_none() {
                return Err(ApiError::bad_request(
                    "fieldManager is required for apply requests",
                ));
            }
            opts.field_manager = req
                .query
                .get("fieldManager")
                .unwrap_or_default()
                .to_string();
        }
        let force = req.query.flag("force");
        for _ in 0..8 {
            let current = self.objects.current(r, ns, name).await?;
            let apply = ctype == "application/apply-patch+yaml";
            // The document a patch applies to: the object, its Scale, or nothing for an apply
            // that creates the object.
            let target = match (&current, sub) {
                (Some((live, _)), Some("scale")) => scale_of(live),
                (Some((live, _)), _) => live.clone(),
                (None, None) if apply => Value::Null,
                (None, _) => return Err(ApiError::not_found(r, name)),
            };
            let new = match ctype.as_str() {
                "application/json-patch+json" => {
                    berth_patch::json_patch(&target, &patch).map_err(patch_error)?
                }
                "application/merge-patch+json" => {
                    berth_patch::merge_patch(&target, &patch).map_err(patch_error)?
                }
                "application/strategic-merge-patch+json" => {
                    let def = if sub == Some("scale") {
                        "io.k8s.api.autoscaling.v1.Scale"
                    } else {
                        r.definition
                    };
                    berth_patch::strategic_merge_patch(&target, &patch, &schema, def)
                        .map_err(patch_error)?
                }
                _ => berth_patch::managed_fields::apply(
                    &target,
                    &patch,
                    &opts.field_manager,
                    force,
                    &schema,
                    r.definition,
                    &r.api_version(),
                    &objects::now(),
                )
                .map_err(|e| apply_error(r, name, e))?,
            };
            let Some((live, rev)) = current else {
                let w = self
                    .objects
                    .create(r, ns, with_name(new, name), &opts)
                    .await?;
                return Ok(written(w, format));
            };
            // A patch may carry a resourceVersion precondition.
            if let Some(rv) = new
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                if !rv.is_empty() && rv != rev.to_string() {
                    return Err(ApiError::stale(r, name));
                }
            }
            let result = if sub == Some("scale") {
                self.write_scale(r, ns, name, (live, rev), new, &opts, true, format)
                    .await
            } else {
                self.objects
                    .update(r, ns, name, sub, new, &opts, (live, rev), true)
                    .await
                    .map(|w| written(w, format))
            };
            match result {
                Err(e) if e.reason == "Conflict" && e.code == 409 && !patch_has_rv(&patch) => {
                    continue
                }
                other => return other,
            }
        }
        Err(ApiError::stale(r, name))
    }

    async fn delete_collection(
        &self,
        req: &Request,
        r: &'static ResourceInfo,
        ns: Option<&str>,
        format: Format,
    ) -> Result<Response<Body>, ApiError> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or(""), r)?;
        let opts = delete_options(req)?;
        let page = self
            .objects
            .list(r, ns, &ListQuery::all(&labels, &fields))
            .await?;
        let mut deleted = Vec::new();
        for item in page.items {
            let name = meta_str(&item, "name").unwrap_or("").to_string();
            let item_ns = meta_str(&item, "namespace").map(str::to_string);
            match self
                .objects
                .delete(r, item_ns.as_deref(), &name, &opts)
                .await
            {
                Ok((obj, _)) => deleted.push(obj),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": page.resource_version.to_string()},
            "items": deleted,
        });
        Ok(json_response(StatusCode::OK, &list, format, &[]))
    }
}

fn patch_has_rv(patch: &Value) -> bool {
    patch.pointer("/metadata/resourceVersion").is_some()
}

fn with_name(mut obj: Value, name: &str) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.entry("name").or_insert_with(|| json!(name));
    }
    obj
}

fn apply_error(
    r: &ResourceInfo,
    name: &str,
    e: berth_patch::managed_fields::ApplyError,
) -> ApiError {
    use berth_patch::managed_fields::ApplyError;
    match e {
        ApplyError::Conflicts(conflicts) => {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|c| {
                    format!(
                        "conflict with \"{}\" using {}: {}",
                        c.manager, c.api_version, c.field
                    )
                })
                .collect();
            let n = conflicts.len();
            let message = if n == 1 {
                format!("Apply failed with 1 conflict: {}", lines.join(""))
            } else {
                format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
            };
            let mut err = ApiError::new(409, "Conflict", message).with_cause("", "", "");
            err.causes = conflicts
                .iter()
                .map(|c| crate::status::Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    field: c.field.clone(),
                })
                .collect();
            err.name = Some(name.to_string());
            err.group = Some(r.group.to_string());
            err.kind = Some(r.plural.to_string());
            err
        }
        ApplyError::Invalid(msg) => ApiError::new(422, "Invalid", msg),
    }
}

fn patch_error(e: berth_patch::PatchError) -> ApiError {
    ApiError::new(422, "Invalid", e.to_string())
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn static_body(bytes: &'static [u8], ctype: &str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, ctype)
        .body(full(Bytes::from_static(bytes)))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn discovery_response(value: Value, api_version: &str) -> Response<Body> {
    let version = api_version.rsplit('/').next().unwrap_or("v2");
    let ctype =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    Response::builder()
        .header(header::CONTENT_TYPE, ctype)
        .body(full(serde_json::to_vec(&value).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn written(w: Written, format: Format) -> Response<Body> {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(
        code,
        &w.object,
        if format == Format::Table {
            Format::Json
        } else {
            format
        },
        &w.warnings,
    )
}

fn render_one(r: &ResourceInfo, obj: Value, format: Format, q: &Query) -> Response<Body> {
    if format == Format::Table {
        let rv = meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
        let table = table_of(
            r,
            std::slice::from_ref(&obj),
            json!({"resourceVersion": rv}),
            q,
        );
        return json_response(StatusCode::OK, &table, format, &[]);
    }
    json_response(StatusCode::OK, &obj, format, &[])
}

/// A `meta.k8s.io/v1` Table of objects.
pub fn table_of(r: &ResourceInfo, items: &[Value], metadata: Value, q: &Query) -> Value {
    let now = chrono::Utc::now();
    let include = q.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let object = match include {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            json!({"cells": berth_api::table::cells(r, obj, now), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": berth_api::table::column_definitions(r),
        "rows": rows,
    })
}

/// The `autoscaling/v1` Scale view of an object with `spec.replicas`.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            pairs.sort();
            pairs.join(",")
        })
        .unwrap_or_default();
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn parse_yaml_or_json(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    serde_norway::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Decodes a JSON or YAML request body into an object.
fn decode_body(req: &Request) -> Result<Value, ApiError> {
    let ctype = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    decode_object(ctype, &req.body)
}

/// Decodes a request body of the given `Content-Type` into a JSON object.
pub fn decode_object(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let value: Value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => parse_yaml_or_json(body)?,
        berth_proto::MEDIA_TYPE => {
            berth_proto::decode(body).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(value)
}

/// Options of a create, update or patch from the query and user agent.
fn write_options(req: &Request) -> Result<WriteOptions, ApiError> {
    let field_validation = match req.query.get("fieldValidation") {
        None | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; supported values: Ignore, Warn, Strict"
            )))
        }
    };
    let field_manager = match req.query.get("fieldManager") {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be longer than 128",
            ))
        }
        Some(m) => m.to_string(),
        None => {
            let ua = req
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            ua.split('/').next().unwrap_or("unknown").to_string()
        }
    };
    Ok(WriteOptions {
        dry_run: req.query.dry_run()?,
        field_manager,
        field_validation,
    })
}

/// `DeleteOptions` from the body (if any) and the query.
fn delete_options(req: &Request) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: req.query.dry_run()?,
        ..Default::default()
    };
    if !req.body.is_empty() {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("failed to decode DeleteOptions: {e}")))?;
        opts.merge_body(&body);
    }
    if let Some(g) = req.query.int("gracePeriodSeconds")? {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        opts.propagation_policy = Some(p.to_string());
    }
    if req.query.flag("orphanDependents") {
        opts.propagation_policy
            .get_or_insert_with(|| "Orphan".into());
    }
    Ok(opts)
}
