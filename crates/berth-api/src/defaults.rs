//! Upstream defaulting: the values the Kubernetes API server fills in on create and update
//! (the `SetDefaults_*` functions of `pkg/apis/*/v1/defaults.go`, plus the few defaults that
//! upstream sets in create strategies and default-on admission plugins and that users see in
//! `kubectl get -o yaml`: a Pod's `status.phase`/`qosClass`, a Namespace's `kubernetes`
//! finalizer, a Job's generated selector, a Pod's priority, service account and default
//! tolerations).
//!
//! Everything works on `serde_json::Value` and tolerates any shape: a field of the wrong
//! type is left alone (validation or type checking reports it), never a panic. Defaulting is
//! idempotent, so it is safe to run on every create and update.

use serde_json::{json, Map, Value};

use crate::registry::ResourceInfo;

/// Applies upstream's defaults for `resource` to `obj` in place.
///
/// For a Job the generated selector needs `metadata.uid`, so callers set the uid first.
pub fn apply(resource: &ResourceInfo, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (resource.group, resource.kind) {
        ("", "Pod") => pod(root),
        ("", "Namespace") => namespace(root),
        ("", "Service") => service(root),
        ("", "Secret") => {
            set_default(root, "type", json!("Opaque"));
        }
        ("", "PersistentVolumeClaim") => pvc(root),
        ("", "PersistentVolume") => pv(root),
        ("", "Endpoints") => endpoints(root),
        ("", "Node") => node(root),
        ("apps", "Deployment") => deployment(root),
        ("apps", "ReplicaSet") => replica_set(root),
        ("apps", "StatefulSet") => stateful_set(root),
        ("apps", "DaemonSet") => daemon_set(root),
        ("batch", "Job") => job(root),
        ("batch", "CronJob") => cron_job(root),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(root),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(root),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => role_binding(root),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// helpers

/// Sets `key` to `value` when it is absent or `null`.
fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object at `key`, created empty when absent or `null`; `None` when it has another type.
fn ensure_obj<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    set_default(map, key, json!({}));
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at `key` if present and an object.
fn obj_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// Runs `f` on every object element of the array at `key`.
fn each_obj(map: &mut Map<String, Value>, key: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(items) = map.get_mut(key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

fn is_empty_or_missing(map: &Map<String, Value>, key: &str) -> bool {
    match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(_) => false,
    }
}

// ---------------------------------------------------------------------------------------
// core/v1

fn pod(root: &mut Map<String, Value>) {
    if let Some(spec) = ensure_obj(root, "spec") {
        pod_spec(spec);
        // SetDefaults_Pod: requests default to limits for each container.
        for key in ["containers", "initContainers"] {
            each_obj(spec, key, requests_from_limits);
        }
        set_default(spec, "enableServiceLinks", json!(true));
        // Priority admission (no priorityClassName): priority 0, PreemptLowerPriority.
        let has_class = spec
            .get("priorityClassName")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
        if !has_class {
            set_default(spec, "priority", json!(0));
        }
        set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        // ServiceAccount admission: the `default` account.
        let sa = match spec.get("serviceAccountName").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match spec.get("serviceAccount").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => name.to_string(),
                _ => "default".to_string(),
            },
        };
        if is_empty_or_missing(spec, "serviceAccountName") {
            spec.insert("serviceAccountName".into(), json!(sa));
        }
        if is_empty_or_missing(spec, "serviceAccount") {
            spec.insert("serviceAccount".into(), json!(sa));
        }
        default_tolerations(spec);
    }
    let qos = root.get("spec").map(qos_class);
    if let Some(status) = ensure_obj(root, "status") {
        set_default(status, "phase", json!("Pending"));
        if let Some(qos) = qos {
            set_default(status, "qosClass", json!(qos));
        }
    }
}

/// DefaultTolerationSeconds admission: tolerate not-ready/unreachable nodes for 300 s.
fn default_tolerations(spec: &mut Map<String, Value>) {
    set_default(spec, "tolerations", json!([]));
    let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = tolerations.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (effect.is_empty() || effect == "NoExecute")
                && (tkey == key || (tkey.is_empty() && op == "Exists"))
        });
        if !present {
            tolerations.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300
            }));
        }
    }
}

fn requests_from_limits(container: &mut Map<String, Value>) {
    let Some(resources) = obj_at(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    if let Some(requests) = ensure_obj(resources, "requests") {
        for (name, quantity) in limits {
            set_default(requests, &name, quantity);
        }
    }
}

/// Upstream's QoS class (`pkg/apis/core/helper/qos`) over cpu and memory.
fn qos_class(spec: &Value) -> &'static str {
    let mut requests_any = false;
    let mut limits_any = false;
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let resources = c.get("resources");
        let requests = resources
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let limits = resources
            .and_then(|r| r.get("limits"))
            .and_then(Value::as_object);
        let mut has_limit = [false, false];
        for (i, name) in ["cpu", "memory"].iter().enumerate() {
            let req = requests
                .and_then(|r| r.get(*name))
                .and_then(quantity_value)
                .filter(|q| *q != 0.0);
            let lim = limits
                .and_then(|r| r.get(*name))
                .and_then(quantity_value)
                .filter(|q| *q != 0.0);
            if req.is_some() {
                requests_any = true;
            }
            if let Some(l) = lim {
                limits_any = true;
                has_limit[i] = true;
                if let Some(r) = req {
                    if (r - l).abs() > f64::EPSILON * l.abs().max(1.0) {
                        guaranteed = false;
                    }
                }
            } else if req.is_some() {
                guaranteed = false;
            }
        }
        if !(has_limit[0] && has_limit[1]) {
            guaranteed = false;
        }
    }
    if !requests_any && !limits_any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A resource quantity as a number (`"500m"` → 0.5, `"1Gi"` → 1073741824), if parseable.
pub(crate) fn quantity_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_quantity(s),
        _ => None,
    }
}

/// Parses a Kubernetes quantity string into a float.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return None;
    }
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            10f64.powi(exp.parse::<i32>().ok()?)
        }
    };
    Some(base * mult)
}

/// A JSON number quantity (YAML `cpu: 1`) as the string upstream would store.
fn canonical_number_quantity(v: &mut Value) {
    if let Value::Number(n) = v {
        let s = if let Some(i) = n.as_i64() {
            i.to_string()
        } else if let Some(f) = n.as_f64() {
            let milli = (f * 1000.0).round();
            if (milli / 1000.0).fract() == 0.0 {
                format!("{}", (milli / 1000.0) as i64)
            } else {
                format!("{}m", milli as i64)
            }
        } else {
            n.to_string()
        };
        *v = Value::String(s);
    }
}

fn canonical_quantities(map: &mut Map<String, Value>) {
    for v in map.values_mut() {
        canonical_number_quantity(v);
    }
}

/// SetDefaults_PodSpec and everything nested in it; shared by Pods and pod templates.
fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each_obj(spec, key, |c| {
            container(c);
            if host_network {
                each_obj(c, "ports", |p| {
                    if is_empty_or_missing(p, "hostPort") {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            p.insert("hostPort".into(), cp);
                        }
                    }
                });
            }
        });
    }
    each_obj(spec, "volumes", volume);
}

fn container(c: &mut Map<String, Value>) {
    if is_empty_or_missing(c, "imagePullPolicy") {
        if let Some(image) = c.get("image").and_then(Value::as_str) {
            let policy = image_pull_policy(image);
            c.insert("imagePullPolicy".into(), json!(policy));
        }
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    if let Some(resources) = ensure_obj(c, "resources") {
        for key in ["limits", "requests"] {
            if let Some(m) = obj_at(resources, key) {
                canonical_quantities(m);
            }
        }
    }
    each_obj(c, "ports", |p| set_default(p, "protocol", json!("TCP")));
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_at(c, probe_key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = obj_at(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_at(lifecycle, hook) {
                handler(h);
            }
        }
    }
    each_obj(c, "env", |e| {
        if let Some(field_ref) = obj_at(e, "valueFrom").and_then(|vf| obj_at(vf, "fieldRef")) {
            set_default(field_ref, "apiVersion", json!("v1"));
        }
    });
}

/// `Always` for `:latest` or untagged images without a digest, else `IfNotPresent`.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn probe(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    handler(p);
}

fn handler(h: &mut Map<String, Value>) {
    if let Some(get) = obj_at(h, "httpGet") {
        if is_empty_or_missing(get, "path") {
            get.insert("path".into(), json!("/"));
        }
        set_default(get, "scheme", json!("HTTP"));
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Map<String, Value>) {
    let has_source = VOLUME_SOURCES
        .iter()
        .any(|k| !matches!(v.get(*k), None | Some(Value::Null)));
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for key in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(src) = obj_at(v, key) {
            set_default(src, "defaultMode", json!(420));
        }
    }
    if let Some(hp) = obj_at(v, "hostPath") {
        set_default(hp, "type", json!(""));
    }
    if let Some(da) = obj_at(v, "downwardAPI") {
        each_obj(da, "items", downward_item);
    }
    if let Some(projected) = obj_at(v, "projected") {
        each_obj(projected, "sources", |s| {
            if let Some(da) = obj_at(s, "downwardAPI") {
                each_obj(da, "items", downward_item);
            }
            if let Some(token) = obj_at(s, "serviceAccountToken") {
                set_default(token, "expirationSeconds", json!(3600));
            }
        });
    }
    if let Some(eph) = obj_at(v, "ephemeral") {
        if let Some(spec) = obj_at(eph, "volumeClaimTemplate").and_then(|t| obj_at(t, "spec")) {
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
    }
}

fn downward_item(item: &mut Map<String, Value>) {
    if let Some(fr) = obj_at(item, "fieldRef") {
        set_default(fr, "apiVersion", json!("v1"));
    }
}

/// Defaults of a pod template (`spec.template` of workloads).
fn pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = ensure_obj(template, "spec") {
        pod_spec(spec);
    }
}

fn namespace(root: &mut Map<String, Value>) {
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(meta)) = (name, ensure_obj(root, "metadata")) {
        if let Some(labels) = ensure_obj(meta, "labels") {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(spec) = ensure_obj(root, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = ensure_obj(root, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

fn service(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        if let Some(cfg) = ensure_obj(spec, "sessionAffinityConfig") {
            if let Some(client_ip) = ensure_obj(cfg, "clientIP") {
                set_default(client_ip, "timeoutSeconds", json!(10800));
            }
        }
    }
    each_obj(spec, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    });
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if svc_type != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
    }
    if let Some(status) = ensure_obj(root, "status") {
        set_default(status, "loadBalancer", json!({}));
    }
}

fn pvc_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "volumeMode", json!("Filesystem"));
    if let Some(resources) = obj_at(spec, "resources") {
        for key in ["limits", "requests"] {
            if let Some(m) = obj_at(resources, key) {
                canonical_quantities(m);
            }
        }
    }
}

fn pvc(root: &mut Map<String, Value>) {
    if let Some(spec) = ensure_obj(root, "spec") {
        pvc_spec(spec);
    }
    if let Some(status) = ensure_obj(root, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn pv(root: &mut Map<String, Value>) {
    if let Some(spec) = ensure_obj(root, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
        if let Some(cap) = obj_at(spec, "capacity") {
            canonical_quantities(cap);
        }
        if let Some(hp) = obj_at(spec, "hostPath") {
            set_default(hp, "type", json!(""));
        }
    }
    if let Some(status) = ensure_obj(root, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn endpoints(root: &mut Map<String, Value>) {
    each_obj(root, "subsets", |s| {
        each_obj(s, "ports", |p| set_default(p, "protocol", json!("TCP")));
    });
}

fn node(root: &mut Map<String, Value>) {
    if let Some(status) = obj_at(root, "status") {
        if let Some(cap) = status.get("capacity").cloned() {
            let empty = match status.get("allocatable") {
                None | Some(Value::Null) => true,
                Some(Value::Object(m)) => m.is_empty(),
                Some(_) => false,
            };
            if empty {
                status.insert("allocatable".into(), cap);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// apps/v1

fn deployment(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if let Some(strategy) = ensure_obj(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(t) = ensure_obj(spec, "template") {
        pod_template(t);
    }
}

fn replica_set(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if let Some(t) = ensure_obj(spec, "template") {
        pod_template(t);
    }
}

fn stateful_set(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    if let Some(policy) = ensure_obj(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(policy, "whenDeleted", json!("Retain"));
        set_default(policy, "whenScaled", json!("Retain"));
    }
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = ensure_obj(spec, "template") {
        pod_template(t);
    }
    each_obj(spec, "volumeClaimTemplates", |pvc_template| {
        set_default(pvc_template, "apiVersion", json!("v1"));
        set_default(pvc_template, "kind", json!("PersistentVolumeClaim"));
        if let Some(s) = ensure_obj(pvc_template, "spec") {
            pvc_spec(s);
        }
        if let Some(status) = ensure_obj(pvc_template, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    });
}

fn daemon_set(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = ensure_obj(spec, "template") {
        pod_template(t);
    }
}

// ---------------------------------------------------------------------------------------
// batch/v1

/// The labels upstream's Job strategy adds to the template and selects on.
const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

fn job(root: &mut Map<String, Value>) {
    let meta = root.get("metadata").cloned().unwrap_or(Value::Null);
    let uid = meta.get("uid").and_then(Value::as_str).map(str::to_string);
    let name = meta.get("name").and_then(Value::as_str).map(str::to_string);
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    job_spec(spec);
    // Job strategy PrepareForCreate: generate the selector unless manualSelector.
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let selector_missing = matches!(spec.get("selector"), None | Some(Value::Null));
    if !manual && selector_missing {
        if let (Some(uid), Some(name)) = (uid, name) {
            spec.insert(
                "selector".into(),
                json!({ "matchLabels": { JOB_UID_LABEL: uid } }),
            );
            if let Some(labels) = ensure_obj(spec, "template")
                .and_then(|t| ensure_obj(t, "metadata"))
                .and_then(|m| ensure_obj(m, "labels"))
            {
                set_default(labels, JOB_UID_LABEL, json!(uid));
                set_default(labels, JOB_NAME_LABEL, json!(name));
                set_default(labels, "controller-uid", json!(uid));
                set_default(labels, "job-name", json!(name));
            }
        }
    }
    // SetDefaults_Job: the Job's labels default to the template's.
    let template_labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
        .cloned();
    if let (Some(labels), Some(meta)) = (template_labels, ensure_obj(root, "metadata")) {
        let empty = match meta.get("labels") {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(_) => false,
        };
        if empty {
            meta.insert("labels".into(), Value::Object(labels));
        }
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    let completions_unset = matches!(spec.get("completions"), None | Some(Value::Null));
    let parallelism_unset = matches!(spec.get("parallelism"), None | Some(Value::Null));
    if completions_unset && parallelism_unset {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = !matches!(spec.get("backoffLimitPerIndex"), None | Some(Value::Null));
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let has_failure_policy = !matches!(spec.get("podFailurePolicy"), None | Some(Value::Null));
    if let Some(pfp) = obj_at(spec, "podFailurePolicy") {
        each_obj(pfp, "rules", |rule| {
            each_obj(rule, "onPodConditions", |c| {
                set_default(c, "status", json!("True"));
            });
        });
    }
    set_default(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(t) = ensure_obj(spec, "template") {
        pod_template(t);
    }
}

fn cron_job(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = ensure_obj(spec, "jobTemplate")
        .and_then(|jt| ensure_obj(jt, "spec"))
        .and_then(|js| ensure_obj(js, "template"))
    {
        pod_template(t);
    }
}

// ---------------------------------------------------------------------------------------
// other groups

fn endpoint_slice(root: &mut Map<String, Value>) {
    each_obj(root, "ports", |p| {
        set_default(p, "name", json!(""));
        set_default(p, "protocol", json!("TCP"));
    });
}

fn network_policy(root: &mut Map<String, Value>) {
    let Some(spec) = ensure_obj(root, "spec") else {
        return;
    };
    for rules in ["ingress", "egress"] {
        each_obj(spec, rules, |rule| {
            each_obj(rule, "ports", |p| set_default(p, "protocol", json!("TCP")));
        });
    }
    let empty = match spec.get("policyTypes") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    if empty {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

fn role_binding(root: &mut Map<String, Value>) {
    if let Some(role_ref) = obj_at(root, "roleRef") {
        if is_empty_or_missing(role_ref, "apiGroup") {
            role_ref.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
        }
    }
    each_obj(root, "subjects", |s| {
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
        if (kind == "User" || kind == "Group") && is_empty_or_missing(s, "apiGroup") {
            s.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RESOURCES;

    fn res(kind: &str) -> &'static ResourceInfo {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.group != "events.k8s.io")
            .expect("resource")
    }

    fn defaulted(kind: &str, obj: Value) -> Value {
        let mut obj = obj;
        apply(res(kind), &mut obj);
        obj
    }

    #[test]
    fn pod_defaults() {
        let pod = defaulted(
            "Pod",
            json!({
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{
                        "name": "c",
                        "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "livenessProbe": {"httpGet": {"port": 80}},
                        "resources": {"limits": {"cpu": 1, "memory": "64Mi"}}
                    }],
                    "initContainers": [{"name": "i", "image": "busybox:1.36"}],
                    "volumes": [
                        {"name": "a"},
                        {"name": "b", "configMap": {"name": "cm"}},
                        {"name": "s", "secret": {"secretName": "x"}}
                    ]
                }
            }),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let p = &c["livenessProbe"];
        assert_eq!(p["timeoutSeconds"], 1);
        assert_eq!(p["periodSeconds"], 10);
        assert_eq!(p["successThreshold"], 1);
        assert_eq!(p["failureThreshold"], 3);
        assert_eq!(p["httpGet"]["scheme"], "HTTP");
        assert_eq!(p["httpGet"]["path"], "/");
        assert_eq!(c["resources"]["limits"]["cpu"], "1");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
        assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["initContainers"][0]["resources"], json!({}));
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][2]["secret"]["defaultMode"], 420);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn image_pull_policies() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/nginx:1"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn qos_classes() {
        let be = json!({"containers": [{"name": "a"}]});
        assert_eq!(qos_class(&be), "BestEffort");
        let g = json!({"containers": [{"resources": {
            "limits": {"cpu": "1", "memory": "1Gi"},
            "requests": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Ki"), Some(1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("1Zi"), None);
        let mut v = json!(0.5);
        canonical_number_quantity(&mut v);
        assert_eq!(v, "500m");
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "25%"
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let t = &d["spec"]["template"]["spec"];
        assert_eq!(t["restartPolicy"], "Always");
        assert!(t.get("enableServiceLinks").is_none());
        assert_eq!(t["containers"][0]["imagePullPolicy"], "IfNotPresent");
        let recreate = defaulted(
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn workload_defaults() {
        let rs = defaulted("ReplicaSet", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
        let sts = defaulted(
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
        );
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            0
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );
        let ds = defaulted("DaemonSet", json!({}));
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn job_defaults() {
        let j = defaulted(
            "Job",
            json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"restartPolicy": "Never"}}}}),
        );
        let s = &j["spec"];
        assert_eq!(s["completions"], 1);
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(s["selector"]["matchLabels"][JOB_UID_LABEL], "u1");
        assert_eq!(s["template"]["metadata"]["labels"]["job-name"], "j");
        assert_eq!(j["metadata"]["labels"]["job-name"], "j");
        let p = defaulted("Job", json!({"spec": {"parallelism": 3}}));
        assert!(p["spec"].get("completions").is_none());
        let cj = defaulted("CronJob", json!({"spec": {"schedule": "* * * * *"}}));
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(
            "Service",
            json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        let np = defaulted("Service", json!({"spec": {"type": "NodePort"}}));
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        let en = defaulted("Service", json!({"spec": {"type": "ExternalName"}}));
        assert!(en["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn misc_defaults() {
        let ns = defaulted("Namespace", json!({"metadata": {"name": "team"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(defaulted("Secret", json!({}))["type"], "Opaque");
        assert_eq!(
            defaulted("PersistentVolumeClaim", json!({}))["spec"]["volumeMode"],
            "Filesystem"
        );
        let pv = defaulted("PersistentVolume", json!({}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        let ep = defaulted("Endpoints", json!({"subsets": [{"ports": [{"port": 80}]}]}));
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let eps = defaulted("EndpointSlice", json!({"ports": [{"port": 80}]}));
        assert_eq!(eps["ports"][0]["protocol"], "TCP");
        let np = defaulted("NetworkPolicy", json!({"spec": {"egress": [{}]}}));
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let rb = defaulted(
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}),
        );
        assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    }

    #[test]
    fn wrong_shapes_do_not_panic() {
        for r in RESOURCES {
            for v in [
                json!(null),
                json!(1),
                json!({"spec": 5, "metadata": "x", "status": []}),
                json!({"spec": {"template": 1, "containers": "x", "ports": 1, "jobTemplate": {"spec": 3}}}),
                json!({"spec": {"containers": [1, {"image": 5, "resources": 2, "livenessProbe": []}]}}),
            ] {
                let mut v = v;
                apply(r, &mut v);
            }
        }
    }
}
