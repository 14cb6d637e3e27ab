//! Parsing of request URLs into what they address: a discovery document, a resource
//! collection or item (with namespace and subresource), and the query options of the verbs.

use crate::status::ApiError;
use berth_api::registry::{self, ResourceInfo};
use std::collections::HashMap;

/// What a resource URL addresses.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Legacy `/watch/` path prefix.
    pub watch_prefix: bool,
}

/// Every kind of path the server answers.
#[derive(Debug, Clone)]
pub enum Route {
    Version,
    Health(String),
    ApiVersions,
    ApiGroups,
    CoreResources,
    Group(String),
    GroupResources(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String),
    Resource(ResourcePath),
    NotFound,
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a request path (without the query).
pub fn route(path: &str) -> Result<Route, ApiError> {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(match p.as_slice() {
        ["version"] => Route::Version,
        [h @ ("healthz" | "livez" | "readyz"), ..] => Route::Health(h.to_string()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["api"] => Route::ApiVersions,
        ["api", "v1"] => Route::CoreResources,
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest)?,
        ["apis"] => Route::ApiGroups,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::GroupResources(group.to_string(), version.to_string()),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest)?,
        _ => Route::NotFound,
    })
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let find = |plural: &str| registry::find(group, version, plural);
    // `namespaces/{ns}/{plural}/...` addresses namespaced resources, unless the plural is
    // missing, in which case it is the Namespace object itself.
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => (
            Some(ns.to_string()),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return Ok(Route::NotFound),
    };
    let Some(resource) = find(plural) else {
        return Ok(Route::NotFound);
    };
    if rest.len() > 5 || (namespace.is_none() && rest.len() > 3) {
        return Ok(Route::NotFound);
    }
    Ok(Route::Resource(ResourcePath {
        resource,
        namespace,
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        watch_prefix,
    }))
}

/// Query parameters (last value wins, like Go's `Get`).
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = query {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }

    /// `dryRun=All` (the only value upstream accepts).
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.0.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match route(path) {
            Ok(Route::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let r = res("/api/v1/namespaces/demo/pods/web/status");
        assert_eq!(r.resource.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("demo"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let ns = res("/api/v1/namespaces/demo");
        assert_eq!(ns.resource.plural, "namespaces");
        assert_eq!(ns.name.as_deref(), Some("demo"));
        let fin = res("/api/v1/namespaces/demo/finalize");
        assert_eq!(fin.subresource.as_deref(), Some("finalize"));
        let d = res("/apis/apps/v1/deployments");
        assert!(d.namespace.is_none() && d.name.is_none());
        let w = res("/api/v1/watch/namespaces/default/configmaps");
        assert!(w.watch_prefix);
        assert!(matches!(route("/apis/nope/v1/things"), Ok(Route::NotFound)));
    }
}
