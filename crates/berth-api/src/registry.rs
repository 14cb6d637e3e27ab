//! The resource registry: one row per served resource, the single source every generic part
//! (REST handlers, discovery, OpenAPI, tables, validation) reads from.

/// Extra behaviour of a resource beyond plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subresources {
    /// Has a `/status` subresource (main endpoint ignores status, status ignores spec).
    pub status: bool,
    /// Has a `/scale` subresource (`autoscaling/v1` Scale over `spec.replicas`).
    pub scale: bool,
}

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural resource name used in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: Subresources,
    /// The OpenAPI definition name of the kind, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: &'static str,
    /// Whether updates of the main resource bump `metadata.generation` on spec change
    /// (resources with a spec); others bump it on any non-metadata change.
    pub has_spec: bool,
    /// Field selector fields beyond `metadata.name` / `metadata.namespace`, as JSON paths
    /// with dots (e.g. `spec.nodeName`).
    pub field_selectors: &'static [&'static str],
}

impl ResourceInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The verbs served on the collection and items.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const STATUS: Subresources = Subresources {
    status: true,
    scale: false,
};
const STATUS_SCALE: Subresources = Subresources {
    status: true,
    scale: true,
};
const PLAIN: Subresources = Subresources {
    status: false,
    scale: false,
};

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     $short:expr, $cats:expr, $sub:expr, $def:expr, $spec:expr, $fields:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cats,
            subresources: $sub,
            definition: $def,
            has_spec: $spec,
            field_selectors: $fields,
        }
    };
}

/// Every resource berth serves, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    resource!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        NONE,
        STATUS,
        "io.k8s.api.core.v1.Namespace",
        true,
        &["status.phase"]
    ),
    resource!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        STATUS,
        "io.k8s.api.core.v1.Pod",
        true,
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName"
        ]
    ),
    resource!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        STATUS,
        "io.k8s.api.core.v1.Service",
        true,
        &["spec.clusterIP", "spec.type"]
    ),
    resource!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        NONE,
        PLAIN,
        "io.k8s.api.core.v1.Endpoints",
        false,
        NONE
    ),
    resource!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        NONE,
        PLAIN,
        "io.k8s.api.core.v1.ConfigMap",
        false,
        NONE
    ),
    resource!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.core.v1.Secret",
        false,
        &["type"]
    ),
    resource!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        NONE,
        PLAIN,
        "io.k8s.api.core.v1.ServiceAccount",
        false,
        NONE
    ),
    resource!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        PLAIN,
        "io.k8s.api.core.v1.Event",
        false,
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type"
        ]
    ),
    resource!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        NONE,
        STATUS,
        "io.k8s.api.core.v1.Node",
        true,
        &["spec.unschedulable"]
    ),
    resource!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        NONE,
        STATUS,
        "io.k8s.api.core.v1.PersistentVolumeClaim",
        true,
        NONE
    ),
    resource!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        NONE,
        STATUS,
        "io.k8s.api.core.v1.PersistentVolume",
        true,
        NONE
    ),
    // apps/v1
    resource!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        STATUS_SCALE,
        "io.k8s.api.apps.v1.Deployment",
        true,
        NONE
    ),
    resource!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        STATUS_SCALE,
        "io.k8s.api.apps.v1.ReplicaSet",
        true,
        NONE
    ),
    resource!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        ALL,
        STATUS_SCALE,
        "io.k8s.api.apps.v1.StatefulSet",
        true,
        NONE
    ),
    resource!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        ALL,
        STATUS,
        "io.k8s.api.apps.v1.DaemonSet",
        true,
        NONE
    ),
    resource!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.apps.v1.ControllerRevision",
        false,
        NONE
    ),
    // batch/v1
    resource!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        NONE,
        ALL,
        STATUS,
        "io.k8s.api.batch.v1.Job",
        true,
        NONE
    ),
    resource!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        ALL,
        STATUS,
        "io.k8s.api.batch.v1.CronJob",
        true,
        NONE
    ),
    // coordination.k8s.io/v1
    resource!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.coordination.v1.Lease",
        true,
        NONE
    ),
    // discovery.k8s.io/v1
    resource!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.discovery.v1.EndpointSlice",
        false,
        &["addressType"]
    ),
    // events.k8s.io/v1
    resource!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        PLAIN,
        "io.k8s.api.events.v1.Event",
        false,
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "reportingController",
            "type"
        ]
    ),
    // policy/v1
    resource!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        NONE,
        STATUS,
        "io.k8s.api.policy.v1.PodDisruptionBudget",
        true,
        NONE
    ),
    // networking.k8s.io/v1
    resource!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
        NONE,
        STATUS,
        "io.k8s.api.networking.v1.Ingress",
        true,
        NONE
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.networking.v1.IngressClass",
        true,
        NONE
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        &["netpol"],
        NONE,
        PLAIN,
        "io.k8s.api.networking.v1.NetworkPolicy",
        true,
        NONE
    ),
    // rbac.authorization.k8s.io/v1
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.rbac.v1.Role",
        false,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.rbac.v1.RoleBinding",
        false,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.rbac.v1.ClusterRole",
        false,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        NONE,
        NONE,
        PLAIN,
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        false,
        NONE
    ),
];

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The served API groups (without the core group) with their versions, in discovery order.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn finds_by_kind_and_plural() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(d.kind, "Deployment");
        assert_eq!(find_kind("v1", "Pod").map(|r| r.plural), Some("pods"));
        assert_eq!(groups().first().map(|g| g.0), Some("apps"));
    }
}
