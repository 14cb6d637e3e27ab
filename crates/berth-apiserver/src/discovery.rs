//! Discovery documents built from the registry: `/api`, `/apis` (legacy and aggregated
//! `apidiscovery.k8s.io/v2`), `/api/v1`, `/apis/{group}/{version}` and `/version`.

use berth_api::registry::{self, ResourceInfo, RESOURCES};
use serde_json::{json, Value};

/// The Kubernetes version berth reports.
pub const GIT_VERSION: &str = "v1.33.0+berth";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "berth",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = registry::groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    registry::groups()
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(g, vs)| {
            let mut v = group_json(g, vs);
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!("APIGroup"));
                o.insert("apiVersion".into(), json!("v1"));
            }
            v
        })
}

fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn subresources(
    r: &ResourceInfo,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
)> {
    // (name, group, version, kind, verbs)
    let mut out = Vec::new();
    if r.subresources.status {
        out.push((
            "status",
            r.group,
            r.version,
            r.kind,
            &["get", "patch", "update"][..],
        ));
    }
    if r.subresources.scale {
        out.push((
            "scale",
            "autoscaling",
            "v1",
            "Scale",
            &["get", "patch", "update"][..],
        ));
    }
    if r.kind == "Pod" {
        out.push(("binding", "", "v1", "Binding", &["create"][..]));
        out.push(("eviction", "policy", "v1", "Eviction", &["create"][..]));
    }
    if r.kind == "Pod" {
        // Served by the pod's node through the API server's proxy.
        out.push(("log", "", "v1", "Pod", &["get"][..]));
        for (sub, kind) in [
            ("exec", "PodExecOptions"),
            ("attach", "PodAttachOptions"),
            ("portforward", "PodPortForwardOptions"),
        ] {
            out.push((sub, "", "v1", kind, &["create", "get"][..]));
        }
    }
    if r.kind == "Namespace" {
        out.push(("finalize", "", "v1", "Namespace", &["update"][..]));
    }
    out
}

/// `APIResourceList` for one group-version (legacy discovery).
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if let Some(o) = entry.as_object_mut() {
            if !r.short_names.is_empty() {
                o.insert("shortNames".into(), json!(r.short_names));
            }
            if !r.categories.is_empty() {
                o.insert("categories".into(), json!(r.categories));
            }
        }
        resources.push(entry);
        for (sub, g, v, kind, verbs) in subresources(r) {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some(o) = e.as_object_mut() {
                if g != r.group || v != r.version {
                    o.insert("group".into(), json!(g));
                    o.insert("version".into(), json!(v));
                }
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = in_group_version(group, v)
                .map(|r| {
                    let subs: Vec<Value> = subresources(r)
                        .into_iter()
                        .map(|(sub, g, ver, kind, verbs)| {
                            json!({"subresource": sub, "responseKind": {"group": g, "version": ver, "kind": kind}, "verbs": verbs})
                        })
                        .collect();
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if let Some(o) = e.as_object_mut() {
                        if !r.short_names.is_empty() {
                            o.insert("shortNames".into(), json!(r.short_names));
                        }
                        if !r.categories.is_empty() {
                            o.insert("categories".into(), json!(r.categories));
                        }
                        if !subs.is_empty() {
                            o.insert("subresources".into(), Value::Array(subs));
                        }
                    }
                    e
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery (`APIGroupDiscoveryList`) for `/api` (`legacy`) or `/apis`.
pub fn aggregated(legacy: bool, api_version: &str) -> Value {
    let items: Vec<Value> = if legacy {
        vec![aggregated_group("", &["v1"])]
    } else {
        registry::groups()
            .iter()
            .map(|(g, vs)| aggregated_group(g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}
