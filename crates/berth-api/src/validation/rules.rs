//! The validation rules per kind, following upstream's `ValidateX` / `ValidateXUpdate`.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::text::{self, go_int_or_string, go_label_selector, go_map_ss, go_quote, go_value};
use super::{Cause, CauseType};
use crate::defaults::parse_quantity;
use crate::registry::ResourceInfo;

/// Upstream's `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_MAX: usize = 256 * 1024;
/// Upstream's `MaxSecretSize` (also the ConfigMap limit).
const MAX_DATA_SIZE: usize = 1024 * 1024;
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const IMMUTABLE: &str = "field is immutable";
const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";
const STS_UPDATABLE: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

/// Structural equality treating `null`, absent and empty lists alike (upstream's
/// semantic equality of nil and empty slices).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null() && !matches!(x, Value::Array(a) if a.is_empty()))
                .map(|(k, x)| (k.clone(), normalized(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let n = |x: Option<&Value>| normalized(x.unwrap_or(&Value::Null));
    n(a) == n(b)
}

/// Whether a label selector (already valid) matches `labels`.
fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = obj(sel, "matchLabels") {
        for (k, v) in ml {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    for e in arr(sel, "matchExpressions") {
        let k = s(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match s(e, "operator") {
            "In" => label(k).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(k).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(k).is_some(),
            "DoesNotExist" => label(k).is_none(),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_empty(sel: &Value) -> bool {
    obj(sel, "matchLabels").is_none_or(Map::is_empty) && arr(sel, "matchExpressions").is_empty()
}

/// Collects causes.
#[derive(Default)]
pub struct Validator {
    causes: Vec<Cause>,
}

impl Validator {
    /// The causes found.
    pub fn into_causes(self) -> Vec<Cause> {
        self.causes
    }

    fn push(&mut self, kind: CauseType, field: &str, message: String) {
        self.causes.push(Cause {
            kind,
            message,
            field: field.to_string(),
        });
    }

    fn required(&mut self, field: &str, detail: &str) {
        let msg = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        self.push(CauseType::Required, field, msg);
    }

    /// `Invalid value: <repr>: detail`, `repr` already printed Go-style.
    fn invalid(&mut self, field: &str, repr: &str, detail: &str) {
        let msg = if detail.is_empty() {
            format!("Invalid value: {repr}")
        } else {
            format!("Invalid value: {repr}: {detail}")
        };
        self.push(CauseType::Invalid, field, msg);
    }

    fn invalid_str(&mut self, field: &str, value: &str, detail: &str) {
        self.invalid(field, &go_quote(value), detail);
    }

    fn invalid_each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid_str(field, value, &m);
        }
    }

    fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let msg = format!(
            "Unsupported value: {}: supported values: {}",
            go_quote(value),
            list.join(", ")
        );
        self.push(CauseType::NotSupported, field, msg);
    }

    fn duplicate(&mut self, field: &str, repr: &str) {
        self.push(
            CauseType::Duplicate,
            field,
            format!("Duplicate value: {repr}"),
        );
    }

    fn not_found(&mut self, field: &str, repr: &str) {
        self.push(CauseType::NotFound, field, format!("Not found: {repr}"));
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(CauseType::Forbidden, field, format!("Forbidden: {detail}"));
    }

    fn too_long(&mut self, field: &str, max: usize) {
        self.push(
            CauseType::TooLong,
            field,
            format!("Too long: may not be more than {max} bytes"),
        );
    }

    fn nonnegative(&mut self, v: &Value, k: &str, field: &str) {
        if let Some(n) = int(v, k) {
            if n < 0 {
                self.invalid(field, &n.to_string(), "must be greater than or equal to 0");
            }
        }
    }

    fn immutable(&mut self, new: Option<&Value>, old: Option<&Value>, field: &str, repr: String) {
        if !same(new, old) {
            self.invalid(field, &repr, IMMUTABLE);
        }
    }

    /// Validates one object.
    pub fn object(&mut self, r: &ResourceInfo, o: &Value, old: Option<&Value>) {
        self.metadata(r, o);
        if let Some(old) = old {
            self.metadata_update(o, old);
        }
        match (r.group, r.kind) {
            ("", "Namespace") => self.namespace(o),
            ("", "Pod") => {
                if let Some(spec) = get(o, "spec") {
                    self.pod_spec(spec, "spec");
                } else {
                    self.required("spec.containers", "");
                }
                if let Some(old) = old {
                    self.pod_update(o, old);
                }
            }
            ("", "Service") => {
                self.service(o);
                if let Some(old) = old {
                    self.service_update(o, old);
                }
            }
            ("", "ConfigMap") => {
                self.config_map(o);
                if let Some(old) = old {
                    self.immutable_data(o, old, &["data", "binaryData"]);
                }
            }
            ("", "Secret") => {
                self.secret(o);
                if let Some(old) = old {
                    let t = |x: &Value| Value::String(s(x, "type").to_string());
                    self.immutable(Some(&t(o)), Some(&t(old)), "type", go_quote(s(o, "type")));
                    self.immutable_data(o, old, &["data"]);
                }
            }
            ("", "PersistentVolumeClaim") => {
                if let Some(old) = old {
                    self.pvc_update(o, old);
                }
            }
            ("apps", "Deployment") => {
                self.deployment(o);
                self.selector_update(o, old);
            }
            ("apps", "ReplicaSet") => {
                self.replicated("spec", o, "deployment", true);
                self.selector_update(o, old);
            }
            ("apps", "DaemonSet") => {
                self.replicated("spec", o, "daemonset", false);
                self.daemon_set_strategy(o);
                self.selector_update(o, old);
            }
            ("apps", "StatefulSet") => {
                self.replicated("spec", o, "statefulset", true);
                self.stateful_set(o);
                if let Some(old) = old {
                    self.stateful_set_update(o, old);
                }
            }
            ("batch", "Job") => {
                if let Some(spec) = get(o, "spec") {
                    self.job_spec(spec, "spec", true);
                }
                if let Some(old) = old {
                    self.job_update(o, old);
                }
            }
            ("batch", "CronJob") => self.cron_job(o),
            ("networking.k8s.io", "Ingress") => self.ingress(o),
            ("discovery.k8s.io", "EndpointSlice") => self.endpoint_slice(o),
            ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
                if let Some(old) = old {
                    if !same(get(o, "roleRef"), get(old, "roleRef")) {
                        let rr = get(o, "roleRef").cloned().unwrap_or(Value::Null);
                        let repr = format!(
                            "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                            go_quote(s(&rr, "apiGroup")),
                            go_quote(s(&rr, "kind")),
                            go_quote(s(&rr, "name"))
                        );
                        self.invalid("roleRef", &repr, "cannot change roleRef");
                    }
                }
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------
    // metadata

    fn metadata(&mut self, r: &ResourceInfo, o: &Value) {
        let meta = o.get("metadata").cloned().unwrap_or(Value::Null);
        let name = s(&meta, "name");
        if name.is_empty() {
            self.required("metadata.name", "name or generateName is required");
        } else {
            let msgs = match (r.group, r.kind) {
                ("", "Namespace") => text::dns1123_label(name),
                ("", "Service") => text::dns1035_label(name),
                ("rbac.authorization.k8s.io", _) => text::path_segment_name(name),
                _ => text::dns1123_subdomain(name),
            };
            self.invalid_each("metadata.name", name, msgs);
            if r.kind == "CronJob" && name.len() > 52 {
                self.invalid_str("metadata.name", name, "must be no more than 52 characters");
            }
        }
        let ns = s(&meta, "namespace");
        if r.namespaced {
            if ns.is_empty() {
                self.required("metadata.namespace", "");
            } else {
                self.invalid_each("metadata.namespace", ns, text::dns1123_label(ns));
            }
        } else if !ns.is_empty() {
            self.forbidden("metadata.namespace", "not allowed on this type");
        }
        self.labels(obj(&meta, "labels"), "metadata.labels");
        self.annotations(obj(&meta, "annotations"), "metadata.annotations");
        for f in arr(&meta, "finalizers").iter().filter_map(Value::as_str) {
            self.finalizer(f, "metadata.finalizers");
        }
    }

    fn finalizer(&mut self, f: &str, field: &str) {
        let msgs = text::qualified_name(f);
        if !msgs.is_empty() {
            self.invalid_each(field, f, msgs);
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            self.invalid_str(
                field,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }

    fn metadata_update(&mut self, o: &Value, old: &Value) {
        let null = Value::Null;
        let meta = o.get("metadata").unwrap_or(&null);
        let old_meta = old.get("metadata").unwrap_or(&null);
        for k in ["name", "namespace", "uid"] {
            let new_v = s(meta, k);
            let old_v = s(old_meta, k);
            // An empty uid on update means "not specified" (the server fills it in).
            if new_v != old_v && !(k == "uid" && new_v.is_empty()) {
                self.invalid_str(&format!("metadata.{k}"), new_v, IMMUTABLE);
            }
        }
    }

    fn labels(&mut self, labels: Option<&Map<String, Value>>, field: &str) {
        let Some(labels) = labels else {
            return;
        };
        for (k, v) in labels {
            self.invalid_each(field, k, text::qualified_name(k));
            if let Some(v) = v.as_str() {
                self.invalid_each(field, v, text::label_value(v));
            }
        }
    }

    fn annotations(&mut self, annotations: Option<&Map<String, Value>>, field: &str) {
        let Some(annotations) = annotations else {
            return;
        };
        let mut total = 0usize;
        for (k, v) in annotations {
            self.invalid_each(field, k, text::qualified_name(&k.to_lowercase()));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX {
            self.too_long(field, ANNOTATIONS_MAX);
        }
    }

    fn label_selector(&mut self, sel: &Value, field: &str) {
        for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
            let path = idx(&child(field, "matchExpressions"), i);
            let values = arr(e, "values");
            match s(e, "operator") {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        self.required(
                            &child(&path, "values"),
                            "must be specified when `operator` is 'In' or 'NotIn'",
                        );
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        self.forbidden(
                            &child(&path, "values"),
                            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                        );
                    }
                }
                other => self.invalid_str(
                    &child(&path, "operator"),
                    other,
                    "not a valid selector operator",
                ),
            }
            let k = s(e, "key");
            self.invalid_each(&child(&path, "key"), k, text::qualified_name(k));
            for (j, v) in values.iter().enumerate() {
                if let Some(v) = v.as_str() {
                    self.invalid_each(&idx(&child(&path, "values"), j), v, text::label_value(v));
                }
            }
        }
        self.labels(obj(sel, "matchLabels"), &child(field, "matchLabels"));
    }

    // -----------------------------------------------------------------------------------
    // core

    fn namespace(&mut self, o: &Value) {
        let spec = o.get("spec").cloned().unwrap_or(Value::Null);
        for f in arr(&spec, "finalizers").iter().filter_map(Value::as_str) {
            self.finalizer(f, "spec.finalizers");
        }
    }

    fn pod_template(&mut self, template: Option<&Value>, path: &str) {
        let Some(t) = template else {
            self.required(path, "");
            return;
        };
        let meta = t.get("metadata").cloned().unwrap_or(Value::Null);
        self.labels(obj(&meta, "labels"), &format!("{path}.metadata.labels"));
        self.annotations(
            obj(&meta, "annotations"),
            &format!("{path}.metadata.annotations"),
        );
        match get(t, "spec") {
            Some(spec) => self.pod_spec(spec, &child(path, "spec")),
            None => self.required(&format!("{path}.spec.containers"), ""),
        }
    }

    fn pod_spec(&mut self, spec: &Value, path: &str) {
        // volumes
        let mut volume_names = HashSet::new();
        for (i, v) in arr(spec, "volumes").iter().enumerate() {
            let vp = idx(&child(path, "volumes"), i);
            let name = s(v, "name");
            if name.is_empty() {
                self.required(&child(&vp, "name"), "");
            } else {
                self.invalid_each(&child(&vp, "name"), name, text::dns1123_label(name));
                if !volume_names.insert(name.to_string()) {
                    self.duplicate(&child(&vp, "name"), &go_quote(name));
                }
            }
            self.volume_source(v, &vp);
        }
        // containers
        let containers = arr(spec, "containers");
        if containers.is_empty() {
            self.required(&child(path, "containers"), "");
        }
        let mut names = HashSet::new();
        for (kind, list) in [
            ("initContainers", arr(spec, "initContainers")),
            ("containers", containers),
        ] {
            for (i, c) in list.iter().enumerate() {
                let cp = idx(&child(path, kind), i);
                self.container(c, &cp, &volume_names, kind == "initContainers");
                let name = s(c, "name");
                if !name.is_empty() && !names.insert(name.to_string()) {
                    self.duplicate(&child(&cp, "name"), &go_quote(name));
                }
            }
        }
        let restart = s(spec, "restartPolicy");
        if restart.is_empty() {
            self.required(&child(path, "restartPolicy"), "");
        } else if !["Always", "OnFailure", "Never"].contains(&restart) {
            self.not_supported(
                &child(path, "restartPolicy"),
                restart,
                &["Always", "OnFailure", "Never"],
            );
        }
        let dns = s(spec, "dnsPolicy");
        let dns_values = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !dns.is_empty() && !dns_values.contains(&dns) {
            self.not_supported(&child(path, "dnsPolicy"), dns, &dns_values);
        }
        self.labels(obj(spec, "nodeSelector"), &child(path, "nodeSelector"));
        for k in ["serviceAccountName", "nodeName"] {
            let v = s(spec, k);
            if !v.is_empty() {
                self.invalid_each(&child(path, k), v, text::dns1123_subdomain(v));
            }
        }
        for k in ["hostname", "subdomain"] {
            let v = s(spec, k);
            if !v.is_empty() {
                self.invalid_each(&child(path, k), v, text::dns1123_label(v));
            }
        }
        if let Some(ads) = int(spec, "activeDeadlineSeconds") {
            if !(1..=i64::from(i32::MAX)).contains(&ads) {
                self.invalid(
                    &child(path, "activeDeadlineSeconds"),
                    &ads.to_string(),
                    &text::inclusive_range_error(1, i64::from(i32::MAX)),
                );
            }
        }
        self.nonnegative(
            spec,
            "terminationGracePeriodSeconds",
            &child(path, "terminationGracePeriodSeconds"),
        );
        for (i, t) in arr(spec, "tolerations").iter().enumerate() {
            let tp = idx(&child(path, "tolerations"), i);
            let op = s(t, "operator");
            let k = s(t, "key");
            if !k.is_empty() {
                self.invalid_each(&child(&tp, "key"), k, text::qualified_name(k));
            }
            match op {
                "" | "Equal" => {
                    let v = s(t, "value");
                    self.invalid_each(&child(&tp, "value"), v, text::label_value(v));
                }
                "Exists" => {
                    let v = s(t, "value");
                    if !v.is_empty() {
                        self.invalid_str(
                            &child(&tp, "operator"),
                            v,
                            "value must be empty when `operator` is 'Exists'",
                        );
                    }
                }
                other => self.not_supported(&child(&tp, "operator"), other, &["Equal", "Exists"]),
            }
            let effect = s(t, "effect");
            let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
            if !effect.is_empty() && !effects.contains(&effect) {
                self.not_supported(&child(&tp, "effect"), effect, &effects);
            }
        }
    }

    fn volume_source(&mut self, v: &Value, vp: &str) {
        let sources: Vec<&str> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, x)| *k != "name" && x.is_object())
                    .map(|(k, _)| k.as_str())
                    .collect()
            })
            .unwrap_or_default();
        match sources.as_slice() {
            [] => self.required(vp, "must specify a volume type"),
            [_] => {}
            [_, second, ..] => self.forbidden(
                &child(vp, second),
                "may not specify more than 1 volume type",
            ),
        }
        let check_mode = |me: &mut Self, src: &Value, field: &str| {
            if let Some(mode) = int(src, "defaultMode") {
                if !(0..=0o777).contains(&mode) {
                    me.invalid(
                        &child(field, "defaultMode"),
                        &mode.to_string(),
                        "must be a number between 0 and 0777 (octal), both inclusive",
                    );
                }
            }
        };
        if let Some(src) = get(v, "configMap") {
            if s(src, "name").is_empty() {
                self.required(&format!("{vp}.configMap.name"), "");
            }
            check_mode(self, src, &child(vp, "configMap"));
        }
        if let Some(src) = get(v, "secret") {
            if s(src, "secretName").is_empty() {
                self.required(&format!("{vp}.secret.secretName"), "");
            }
            check_mode(self, src, &child(vp, "secret"));
        }
        if let Some(src) = get(v, "persistentVolumeClaim") {
            if s(src, "claimName").is_empty() {
                self.required(&format!("{vp}.persistentVolumeClaim.claimName"), "");
            }
        }
        if let Some(src) = get(v, "hostPath") {
            if s(src, "path").is_empty() {
                self.required(&format!("{vp}.hostPath.path"), "");
            }
        }
    }

    fn container(&mut self, c: &Value, cp: &str, volumes: &HashSet<String>, init: bool) {
        let name = s(c, "name");
        if name.is_empty() {
            self.required(&child(cp, "name"), "");
        } else {
            self.invalid_each(&child(cp, "name"), name, text::dns1123_label(name));
        }
        if s(c, "image").trim().is_empty() {
            self.required(&child(cp, "image"), "");
        }
        let policy = s(c, "imagePullPolicy");
        let policies = ["Always", "IfNotPresent", "Never"];
        if policy.is_empty() {
            self.required(&child(cp, "imagePullPolicy"), "");
        } else if !policies.contains(&policy) {
            self.not_supported(&child(cp, "imagePullPolicy"), policy, &policies);
        }
        let tmp = s(c, "terminationMessagePolicy");
        let tmps = ["File", "FallbackToLogsOnError"];
        if tmp.is_empty() {
            self.required(&child(cp, "terminationMessagePolicy"), "");
        } else if !tmps.contains(&tmp) {
            self.not_supported(&child(cp, "terminationMessagePolicy"), tmp, &tmps);
        }
        let restart = s(c, "restartPolicy");
        if !restart.is_empty() {
            if !init {
                self.forbidden(
                    &child(cp, "restartPolicy"),
                    "may not be set for non-init containers",
                );
            } else if restart != "Always" {
                self.not_supported(&child(cp, "restartPolicy"), restart, &["Always"]);
            }
        }
        // ports
        let mut port_names = HashSet::new();
        for (i, p) in arr(c, "ports").iter().enumerate() {
            let pp = idx(&child(cp, "ports"), i);
            let pname = s(p, "name");
            if !pname.is_empty() {
                self.invalid_each(&child(&pp, "name"), pname, text::port_name(pname));
                if !port_names.insert(pname.to_string()) {
                    self.duplicate(&child(&pp, "name"), &go_quote(pname));
                }
            }
            match int(p, "containerPort") {
                None | Some(0) => self.required(&child(&pp, "containerPort"), ""),
                Some(n) => {
                    for m in text::port_num(n) {
                        self.invalid(&child(&pp, "containerPort"), &n.to_string(), &m);
                    }
                }
            }
            if let Some(hp) = int(p, "hostPort").filter(|h| *h != 0) {
                for m in text::port_num(hp) {
                    self.invalid(&child(&pp, "hostPort"), &hp.to_string(), &m);
                }
            }
            self.protocol(p, &pp);
        }
        // env
        for (i, e) in arr(c, "env").iter().enumerate() {
            let ep = idx(&child(cp, "env"), i);
            let n = s(e, "name");
            if n.is_empty() {
                self.required(&child(&ep, "name"), "");
            } else {
                self.invalid_each(&child(&ep, "name"), n, text::env_var_name(n));
            }
            if get(e, "valueFrom").is_some() && !s(e, "value").is_empty() {
                self.invalid_str(
                    &child(&ep, "valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                );
            }
        }
        // volume mounts
        let mut mount_paths = HashSet::new();
        for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
            let mp = idx(&child(cp, "volumeMounts"), i);
            let n = s(m, "name");
            if n.is_empty() {
                self.required(&child(&mp, "name"), "");
            } else if !volumes.contains(n) {
                self.not_found(&child(&mp, "name"), &go_quote(n));
            }
            let path = s(m, "mountPath");
            if path.is_empty() {
                self.required(&child(&mp, "mountPath"), "");
            } else if !mount_paths.insert(path.to_string()) {
                self.invalid_str(&child(&mp, "mountPath"), path, "must be unique");
            }
        }
        // resources
        if let Some(res) = get(c, "resources") {
            self.resources(res, &child(cp, "resources"));
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(p) = get(c, probe) {
                self.probe(p, &child(cp, probe), probe != "readinessProbe");
            }
        }
    }

    fn protocol(&mut self, p: &Value, pp: &str) {
        let proto = s(p, "protocol");
        if proto.is_empty() {
            self.required(&child(pp, "protocol"), "");
        } else if !PROTOCOLS.contains(&proto) {
            self.not_supported(&child(pp, "protocol"), proto, PROTOCOLS);
        }
    }

    fn resources(&mut self, res: &Value, rp: &str) {
        let limits = obj(res, "limits");
        for part in ["limits", "requests"] {
            for (name, q) in obj(res, part).into_iter().flatten() {
                let repr = match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match crate::defaults::quantity_value(q) {
                    Some(v) if v < 0.0 => self.invalid(
                        &key(&child(rp, part), name),
                        &go_quote(&repr),
                        "must be greater than or equal to 0",
                    ),
                    Some(_) => {}
                    None => {
                        if parse_quantity(&repr).is_none() {
                            self.invalid(
                                &key(&child(rp, part), name),
                                &go_quote(&repr),
                                "must be a valid quantity",
                            );
                        }
                    }
                }
            }
        }
        for (name, q) in obj(res, "requests").into_iter().flatten() {
            let Some(limit) = limits.and_then(|l| l.get(name)) else {
                continue;
            };
            let (Some(req_v), Some(lim_v)) = (
                crate::defaults::quantity_value(q),
                crate::defaults::quantity_value(limit),
            ) else {
                continue;
            };
            if req_v > lim_v * (1.0 + 1e-12) {
                let repr = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.invalid(
                    &child(rp, "requests"),
                    &go_quote(&repr(q)),
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        repr(limit)
                    ),
                );
            }
        }
    }

    fn probe(&mut self, p: &Value, pp: &str, success_must_be_one: bool) {
        let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
            .iter()
            .filter(|h| get(p, h).is_some())
            .count();
        if handlers == 0 {
            self.required(pp, "must specify a handler type");
        } else if handlers > 1 {
            self.forbidden(pp, "may not specify more than 1 handler type");
        }
        for k in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            self.nonnegative(p, k, &child(pp, k));
        }
        if success_must_be_one {
            if let Some(n) = int(p, "successThreshold").filter(|n| *n != 1) {
                self.invalid(&child(pp, "successThreshold"), &n.to_string(), "must be 1");
            }
        }
        for h in ["httpGet", "tcpSocket"] {
            if let Some(handler) = get(p, h) {
                self.port_num_or_name(handler.get("port"), &format!("{pp}.{h}.port"));
            }
        }
    }

    fn port_num_or_name(&mut self, port: Option<&Value>, field: &str) {
        match port {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                for m in text::port_num(n) {
                    self.invalid(field, &n.to_string(), &m);
                }
            }
            Some(Value::String(p)) => {
                let p = p.clone();
                self.invalid_each(field, &p, text::port_name(&p));
            }
            _ => self.required(field, ""),
        }
    }

    fn service(&mut self, o: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let ty = s(spec, "type");
        let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
        if ty.is_empty() {
            self.required("spec.type", "");
        } else if !types.contains(&ty) {
            self.not_supported("spec.type", ty, &types);
        }
        let headless = s(spec, "clusterIP") == "None";
        let ports = arr(spec, "ports");
        if ports.is_empty() && !headless && ty != "ExternalName" {
            self.required("spec.ports", "");
        }
        if ty == "ExternalName" {
            let en = s(spec, "externalName");
            if en.is_empty() {
                self.required("spec.externalName", "");
            } else {
                self.invalid_each("spec.externalName", en, text::dns1123_subdomain(en));
            }
        }
        let affinity = s(spec, "sessionAffinity");
        if !affinity.is_empty() && !["ClientIP", "None"].contains(&affinity) {
            self.not_supported("spec.sessionAffinity", affinity, &["ClientIP", "None"]);
        }
        let ip = s(spec, "clusterIP");
        if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
            self.invalid_str(
                "spec.clusterIPs[0]",
                ip,
                "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
        }
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        let mut node_ports = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let pp = idx("spec.ports", i);
            let name = s(p, "name");
            if ports.len() > 1 && name.is_empty() {
                self.required(&child(&pp, "name"), "");
            } else if !name.is_empty() {
                self.invalid_each(&child(&pp, "name"), name, text::dns1123_label(name));
                if !names.insert(name.to_string()) {
                    self.duplicate(&child(&pp, "name"), &go_quote(name));
                }
            }
            let port = int(p, "port").unwrap_or(0);
            for m in text::port_num(port) {
                self.invalid(&child(&pp, "port"), &port.to_string(), &m);
            }
            self.protocol(p, &pp);
            if get(p, "targetPort").is_some() {
                self.port_num_or_name(p.get("targetPort"), &child(&pp, "targetPort"));
            }
            let proto = s(p, "protocol");
            if !seen.insert((proto.to_string(), port)) {
                let repr = format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(proto)
                );
                self.duplicate(&pp, &repr);
            }
            if let Some(np) = int(p, "nodePort").filter(|n| *n != 0) {
                let np_field = child(&pp, "nodePort");
                match ty {
                    "ClusterIP" => {
                        self.forbidden(&np_field, "may not be used when `type` is 'ClusterIP'")
                    }
                    "ExternalName" => {
                        self.forbidden(&np_field, "may not be used when `type` is 'ExternalName'")
                    }
                    _ => {
                        if !(30000..=32767).contains(&np) {
                            self.invalid(
                                &np_field,
                                &np.to_string(),
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",
                            );
                        } else if !node_ports.insert((proto.to_string(), np)) {
                            self.duplicate(&np_field, &np.to_string());
                        }
                    }
                }
            }
        }
        self.labels(obj(spec, "selector"), "spec.selector");
    }

    fn service_update(&mut self, o: &Value, old: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let old_spec = get(old, "spec").unwrap_or(&null);
        if s(spec, "type") == "ExternalName" || s(old_spec, "type") == "ExternalName" {
            return;
        }
        let old_ip = s(old_spec, "clusterIP");
        let new_ip = s(spec, "clusterIP");
        if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
            let ips = match get(spec, "clusterIPs").and_then(Value::as_array) {
                Some(a) if !a.is_empty() => text::go_string_slice(a),
                _ => text::go_string_slice(&[Value::String(new_ip.to_string())]),
            };
            self.invalid("spec.clusterIPs[0]", &ips, "may not change once set");
        }
    }

    fn config_map(&mut self, o: &Value) {
        let data = obj(o, "data");
        let binary = obj(o, "binaryData");
        let mut total = 0usize;
        for (k, v) in data.into_iter().flatten() {
            self.invalid_each(&key("data", k), k, text::config_map_key(k));
            if binary.is_some_and(|b| b.contains_key(k)) {
                self.invalid_str(&key("data", k), k, "duplicate of key present in binaryData");
            }
            total += v.as_str().map_or(0, str::len);
        }
        for (k, v) in binary.into_iter().flatten() {
            self.invalid_each(&key("binaryData", k), k, text::config_map_key(k));
            if data.is_some_and(|d| d.contains_key(k)) {
                self.invalid_str(&key("binaryData", k), k, "duplicate of key present in data");
            }
            total += v.as_str().map_or(0, |b| b.len() * 3 / 4);
        }
        if total > MAX_DATA_SIZE {
            self.too_long("", MAX_DATA_SIZE);
        }
    }

    fn secret(&mut self, o: &Value) {
        let mut keys: BTreeSet<String> = BTreeSet::new();
        let mut total = 0usize;
        for (part, base64) in [("data", true), ("stringData", false)] {
            for (k, v) in obj(o, part).into_iter().flatten() {
                self.invalid_each(&key(part, k), k, text::config_map_key(k));
                let len = v.as_str().map_or(0, str::len);
                total += if base64 { len * 3 / 4 } else { len };
                keys.insert(k.clone());
            }
        }
        if total > MAX_DATA_SIZE {
            self.too_long("data", MAX_DATA_SIZE);
        }
        let has = |k: &str| keys.contains(k);
        match s(o, "type") {
            "kubernetes.io/service-account-token" => {
                let name = o
                    .get("metadata")
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if name.is_empty() {
                    self.required(
                        "metadata.annotations[kubernetes.io/service-account.name]",
                        "",
                    );
                }
            }
            "kubernetes.io/dockercfg" if !has(".dockercfg") => {
                self.required("data[.dockercfg]", "");
            }
            "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
                self.required("data[.dockerconfigjson]", "");
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                self.required("data[username]", "");
                self.required("data[password]", "");
            }
            "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
                self.required("data[ssh-privatekey]", "");
            }
            "kubernetes.io/tls" => {
                if !has("tls.crt") {
                    self.required("data[tls.crt]", "");
                }
                if !has("tls.key") {
                    self.required("data[tls.key]", "");
                }
            }
            _ => {}
        }
    }

    fn immutable_data(&mut self, o: &Value, old: &Value, fields: &[&str]) {
        if old.get("immutable").and_then(Value::as_bool) != Some(true) {
            return;
        }
        if o.get("immutable").and_then(Value::as_bool) != Some(true) {
            self.forbidden("immutable", IMMUTABLE_WHEN_SET);
        }
        for f in fields {
            if !same(get(o, f), get(old, f)) {
                self.forbidden(f, IMMUTABLE_WHEN_SET);
            }
        }
    }

    fn pod_update(&mut self, o: &Value, old: &Value) {
        let null = Value::Null;
        let new_spec = get(o, "spec").unwrap_or(&null);
        let old_spec = get(old, "spec").unwrap_or(&null);
        let mut munged = new_spec.clone();
        for kind in ["containers", "initContainers"] {
            let olds = arr(old_spec, kind);
            if let Some(list) = munged.get_mut(kind).and_then(Value::as_array_mut) {
                if list.len() == olds.len() {
                    for (c, oc) in list.iter_mut().zip(olds) {
                        if let (Some(m), Some(image)) = (c.as_object_mut(), oc.get("image")) {
                            m.insert("image".into(), image.clone());
                        }
                    }
                }
            }
        }
        match (
            int(new_spec, "activeDeadlineSeconds"),
            int(old_spec, "activeDeadlineSeconds"),
        ) {
            (Some(n), Some(prev)) if n > prev => self.invalid(
                "spec.activeDeadlineSeconds",
                &n.to_string(),
                "must be less than or equal to previous value",
            ),
            (None, Some(_)) => self.invalid(
                "spec.activeDeadlineSeconds",
                "null",
                "must not update from a positive integer to nil value",
            ),
            _ => {}
        }
        // Tolerations may only be added to (tolerationSeconds may change).
        let strip_seconds = |t: &Value| {
            let mut t = normalized(t);
            if let Some(m) = t.as_object_mut() {
                m.remove("tolerationSeconds");
            }
            t
        };
        let new_tols: Vec<Value> = arr(new_spec, "tolerations")
            .iter()
            .map(strip_seconds)
            .collect();
        let tolerations_ok = arr(old_spec, "tolerations")
            .iter()
            .all(|t| new_tols.contains(&strip_seconds(t)));
        if !tolerations_ok {
            self.forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            );
        }
        let old_grace = int(old_spec, "terminationGracePeriodSeconds");
        let new_grace = int(new_spec, "terminationGracePeriodSeconds");
        if let Some(m) = munged.as_object_mut() {
            for k in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
                match old_spec.get(k) {
                    Some(v) => m.insert(k.to_string(), v.clone()),
                    None => m.remove(k),
                };
            }
            if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
                if let Some(g) = old_spec.get("terminationGracePeriodSeconds") {
                    m.insert("terminationGracePeriodSeconds".into(), g.clone());
                }
            }
        }
        if normalized(&munged) != normalized(old_spec) {
            let diff = top_level_diff(old_spec, &munged);
            self.forbidden(
                "spec",
                &format!("pod updates may not change fields other than {POD_UPDATABLE}\n{diff}"),
            );
        }
    }

    fn pvc_update(&mut self, o: &Value, old: &Value) {
        let strip = |spec: Option<&Value>, volume_name: Option<&Value>| {
            let mut spec = normalized(spec.unwrap_or(&Value::Null));
            if let Some(m) = spec.as_object_mut() {
                if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
                m.remove("volumeAttributesClassName");
                if let Some(v) = volume_name {
                    m.insert("volumeName".into(), v.clone());
                }
            }
            spec
        };
        let old_spec = get(old, "spec");
        // volumeName may be set once, by binding.
        let old_volume = old_spec.map(|s| s.get("volumeName").cloned().unwrap_or(Value::Null));
        let volume_override = match old_volume {
            Some(Value::String(ref v)) if !v.is_empty() => None,
            _ => get(o, "spec").and_then(|s| s.get("volumeName")).cloned(),
        };
        let new = strip(get(o, "spec"), volume_override.as_ref());
        let prev = strip(old_spec, volume_override.as_ref());
        if new != prev {
            let diff = top_level_diff(&prev, &new);
            self.forbidden(
                "spec",
                &format!("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{diff}"),
            );
        }
    }

    // -----------------------------------------------------------------------------------
    // apps

    /// Selector, replicas and template of Deployment / ReplicaSet / DaemonSet / StatefulSet.
    fn replicated(&mut self, path: &str, o: &Value, what: &str, has_replicas: bool) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        if has_replicas {
            self.nonnegative(spec, "replicas", &child(path, "replicas"));
        }
        self.nonnegative(spec, "minReadySeconds", &child(path, "minReadySeconds"));
        self.nonnegative(
            spec,
            "revisionHistoryLimit",
            &child(path, "revisionHistoryLimit"),
        );
        let sel_path = child(path, "selector");
        let selector = get(spec, "selector");
        match selector {
            None => self.required(&sel_path, ""),
            Some(sel) => {
                self.label_selector(sel, &sel_path);
                if selector_empty(sel) {
                    self.invalid(
                        &sel_path,
                        &go_label_selector(sel),
                        &format!("empty selector is invalid for {what}"),
                    );
                }
            }
        }
        let template = get(spec, "template");
        let tpath = child(path, "template");
        if let (Some(sel), Some(t)) = (selector, template) {
            let labels = t.get("metadata").and_then(|m| obj(m, "labels"));
            if !selector_empty(sel) && !selector_matches(sel, labels) {
                self.invalid(
                    &format!("{tpath}.metadata.labels"),
                    &go_map_ss(labels),
                    "`selector` does not match template `labels`",
                );
            }
        }
        self.pod_template(template, &tpath);
        if let Some(t) = template {
            let tspec = get(t, "spec").unwrap_or(&null);
            let restart = s(tspec, "restartPolicy");
            if !restart.is_empty() && restart != "Always" {
                self.not_supported(&format!("{tpath}.spec.restartPolicy"), restart, &["Always"]);
            }
            if get(tspec, "activeDeadlineSeconds").is_some() {
                let msg = match what {
                    "daemonset" => "activeDeadlineSeconds in DaemonSet is not Supported",
                    "statefulset" => "activeDeadlineSeconds in StatefulSet is not Supported",
                    _ => "activeDeadlineSeconds in ReplicaSet is not Supported",
                };
                self.forbidden(&format!("{tpath}.spec.activeDeadlineSeconds"), msg);
            }
        }
    }

    fn deployment(&mut self, o: &Value) {
        self.replicated("spec", o, "deployment", true);
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let strategy = get(spec, "strategy").unwrap_or(&null);
        match s(strategy, "type") {
            "Recreate" => {
                if get(strategy, "rollingUpdate").is_some() {
                    self.forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    );
                }
            }
            "RollingUpdate" => match get(strategy, "rollingUpdate") {
                None => self.required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ),
                Some(ru) => self.rolling_update(ru, "spec.strategy.rollingUpdate", true),
            },
            other => {
                self.not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])
            }
        }
        if let Some(pds) = int(spec, "progressDeadlineSeconds") {
            self.nonnegative(
                spec,
                "progressDeadlineSeconds",
                "spec.progressDeadlineSeconds",
            );
            if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
                self.invalid(
                    "spec.progressDeadlineSeconds",
                    &pds.to_string(),
                    "must be greater than minReadySeconds",
                );
            }
        }
    }

    /// `maxUnavailable` / `maxSurge` of a rolling update.
    fn rolling_update(&mut self, ru: &Value, path: &str, check_both_zero: bool) {
        let mut zero = [false, false];
        for (i, k) in ["maxUnavailable", "maxSurge"].iter().enumerate() {
            let field = child(path, k);
            match ru.get(*k) {
                Some(Value::String(p)) => {
                    let repr = go_int_or_string(&Value::String(p.clone()));
                    for m in text::percent(p) {
                        self.invalid(&field, &repr, &m);
                    }
                    let n = p.trim_end_matches('%').parse::<i64>().unwrap_or(-1);
                    zero[i] = n == 0;
                    if *k == "maxUnavailable" && n > 100 {
                        self.invalid(&field, &repr, "must not be greater than 100%");
                    }
                }
                Some(Value::Number(n)) => {
                    let n = n.as_i64().unwrap_or(0);
                    if n < 0 {
                        self.invalid(&field, &n.to_string(), "must be greater than or equal to 0");
                    }
                    zero[i] = n == 0;
                }
                _ => zero[i] = true,
            }
        }
        if check_both_zero && zero[0] && zero[1] {
            let repr = go_int_or_string(ru.get("maxUnavailable").unwrap_or(&Value::Null));
            self.invalid(
                &child(path, "maxUnavailable"),
                &repr,
                "may not be 0 when `maxSurge` is 0",
            );
        }
    }

    fn daemon_set_strategy(&mut self, o: &Value) {
        let null = Value::Null;
        let strategy = get(o, "spec")
            .and_then(|s| get(s, "updateStrategy"))
            .unwrap_or(&null);
        match s(strategy, "type") {
            "OnDelete" => {}
            "RollingUpdate" => {
                if let Some(ru) = get(strategy, "rollingUpdate") {
                    self.rolling_update(ru, "spec.updateStrategy.rollingUpdate", true);
                }
            }
            other => self.not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            ),
        }
    }

    fn stateful_set(&mut self, o: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let pmp = s(spec, "podManagementPolicy");
        if !pmp.is_empty() && !["OrderedReady", "Parallel"].contains(&pmp) {
            self.invalid_str(
                "spec.podManagementPolicy",
                pmp,
                "must be 'OrderedReady' or 'Parallel'",
            );
        }
        let strategy = get(spec, "updateStrategy").unwrap_or(&null);
        match s(strategy, "type") {
            "OnDelete" => {
                if get(strategy, "rollingUpdate").is_some() {
                    self.invalid(
                        "spec.updateStrategy.rollingUpdate",
                        "",
                        "only allowed for updateStrategy 'RollingUpdate'",
                    );
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = get(strategy, "rollingUpdate") {
                    self.nonnegative(
                        ru,
                        "partition",
                        "spec.updateStrategy.rollingUpdate.partition",
                    );
                }
            }
            "" => self.required("spec.updateStrategy", ""),
            other => self.invalid_str(
                "spec.updateStrategy",
                other,
                "must be 'RollingUpdate' or 'OnDelete'",
            ),
        }
        for (i, t) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
            let name = t.get("metadata").map(|m| s(m, "name")).unwrap_or_default();
            let p = format!("spec.volumeClaimTemplates[{i}].metadata.name");
            if name.is_empty() {
                self.required(&p, "");
            } else {
                self.invalid_each(&p, name, text::dns1123_subdomain(name));
            }
        }
    }

    fn stateful_set_update(&mut self, o: &Value, old: &Value) {
        let strip = |v: &Value| {
            let mut spec = normalized(v.get("spec").unwrap_or(&Value::Null));
            if let Some(m) = spec.as_object_mut() {
                for k in [
                    "replicas",
                    "template",
                    "updateStrategy",
                    "minReadySeconds",
                    "ordinals",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                ] {
                    m.remove(k);
                }
            }
            spec
        };
        if strip(o) != strip(old) {
            self.forbidden("spec", STS_UPDATABLE);
        }
    }

    fn selector_update(&mut self, o: &Value, old: Option<&Value>) {
        let Some(old) = old else {
            return;
        };
        let new_sel = get(o, "spec").and_then(|s| get(s, "selector"));
        let old_sel = get(old, "spec").and_then(|s| get(s, "selector"));
        let repr = go_label_selector(new_sel.unwrap_or(&Value::Null));
        self.immutable(new_sel, old_sel, "spec.selector", repr);
    }

    // -----------------------------------------------------------------------------------
    // batch

    fn job_spec(&mut self, spec: &Value, path: &str, require_selector: bool) {
        for k in [
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "ttlSecondsAfterFinished",
        ] {
            self.nonnegative(spec, k, &child(path, k));
        }
        let mode = s(spec, "completionMode");
        if !mode.is_empty() && !["NonIndexed", "Indexed"].contains(&mode) {
            self.not_supported(
                &child(path, "completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            );
        }
        if mode == "Indexed" && get(spec, "completions").is_none() {
            self.required(
                &child(path, "completions"),
                "when completion mode is Indexed",
            );
        }
        let template = get(spec, "template");
        let tpath = child(path, "template");
        match get(spec, "selector") {
            None if require_selector => self.required(&child(path, "selector"), ""),
            None => {}
            Some(sel) => {
                self.label_selector(sel, &child(path, "selector"));
                let labels = template
                    .and_then(|t| t.get("metadata"))
                    .and_then(|m| obj(m, "labels"));
                if !selector_matches(sel, labels) {
                    self.invalid(
                        &format!("{tpath}.metadata.labels"),
                        &go_map_ss(labels),
                        "`selector` does not match template `labels`",
                    );
                }
            }
        }
        self.pod_template(template, &tpath);
        if let Some(t) = template {
            let restart = t.get("spec").map(|s2| s(s2, "restartPolicy")).unwrap_or("");
            if restart != "OnFailure" && restart != "Never" {
                self.not_supported(
                    &format!("{tpath}.spec.restartPolicy"),
                    restart,
                    &["OnFailure", "Never"],
                );
            }
        }
    }

    fn job_update(&mut self, o: &Value, old: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let old_spec = get(old, "spec").unwrap_or(&null);
        let sel = get(spec, "selector");
        self.immutable(
            sel,
            get(old_spec, "selector"),
            "spec.selector",
            go_label_selector(sel.unwrap_or(&null)),
        );
        // A suspended Job that never started may change its template's scheduling
        // directives, labels and annotations.
        let never_started = old
            .get("status")
            .and_then(|st| get(st, "startTime"))
            .is_none();
        let suspended = old_spec.get("suspend").and_then(Value::as_bool) == Some(true);
        let scrub = |t: Option<&Value>| {
            let mut t = normalized(t.unwrap_or(&Value::Null));
            if suspended && never_started {
                if let Some(m) = t.as_object_mut() {
                    m.remove("metadata");
                    if let Some(sp) = m.get_mut("spec").and_then(Value::as_object_mut) {
                        for k in ["affinity", "nodeSelector", "tolerations", "schedulingGates"] {
                            sp.remove(k);
                        }
                    }
                }
            }
            t
        };
        if scrub(get(spec, "template")) != scrub(get(old_spec, "template")) {
            self.invalid("spec.template", "core.PodTemplateSpec{...}", IMMUTABLE);
        }
        if s(spec, "completionMode") != s(old_spec, "completionMode") {
            let mode = s(spec, "completionMode");
            self.invalid_str("spec.completionMode", mode, IMMUTABLE);
        }
        if s(spec, "completionMode") != "Indexed" {
            let c = get(spec, "completions");
            self.immutable(
                c,
                get(old_spec, "completions"),
                "spec.completions",
                go_value(c.unwrap_or(&null)),
            );
        }
    }

    fn cron_job(&mut self, o: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        let schedule = s(spec, "schedule");
        if schedule.is_empty() {
            self.required("spec.schedule", "");
        } else {
            if let Err(e) = super::cron::parse_standard(schedule) {
                self.invalid_str("spec.schedule", schedule, &e);
            }
            if schedule.contains("TZ") {
                let msg = if get(spec, "timeZone").is_some() {
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule"
                } else {
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
                };
                self.invalid_str("spec.schedule", schedule, msg);
            }
        }
        match s(spec, "concurrencyPolicy") {
            "Allow" | "Forbid" | "Replace" => {}
            "" => self.required("spec.concurrencyPolicy", ""),
            other => self.not_supported(
                "spec.concurrencyPolicy",
                other,
                &["Allow", "Forbid", "Replace"],
            ),
        }
        for k in [
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ] {
            self.nonnegative(spec, k, &child("spec", k));
        }
        let jt = get(spec, "jobTemplate").unwrap_or(&null);
        let meta = jt.get("metadata").cloned().unwrap_or(Value::Null);
        self.labels(obj(&meta, "labels"), "spec.jobTemplate.metadata.labels");
        self.annotations(
            obj(&meta, "annotations"),
            "spec.jobTemplate.metadata.annotations",
        );
        match get(jt, "spec") {
            Some(js) => self.job_spec(js, "spec.jobTemplate.spec", false),
            None => self.required("spec.jobTemplate.spec.template.spec.containers", ""),
        }
    }

    // -----------------------------------------------------------------------------------
    // networking / discovery

    fn ingress(&mut self, o: &Value) {
        let null = Value::Null;
        let spec = get(o, "spec").unwrap_or(&null);
        for (i, rule) in arr(spec, "rules").iter().enumerate() {
            let rp = idx("spec.rules", i);
            let host = s(rule, "host");
            if !host.is_empty() {
                let h = host.strip_prefix("*.").unwrap_or(host);
                self.invalid_each(&child(&rp, "host"), host, text::dns1123_subdomain(h));
            }
            let Some(http) = get(rule, "http") else {
                continue;
            };
            let paths = arr(http, "paths");
            if paths.is_empty() {
                self.required(&format!("{rp}.http.paths"), "");
            }
            for (j, p) in paths.iter().enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                let path = s(p, "path");
                match s(p, "pathType") {
                    "" => self.required(&child(&pp, "pathType"), "pathType must be specified"),
                    "Exact" | "Prefix" => {
                        if !path.starts_with('/') {
                            self.invalid_str(&child(&pp, "path"), path, "must be an absolute path");
                        }
                    }
                    "ImplementationSpecific" => {
                        if !path.is_empty() && !path.starts_with('/') {
                            self.invalid_str(&child(&pp, "path"), path, "must be an absolute path");
                        }
                    }
                    other => self.not_supported(
                        &child(&pp, "pathType"),
                        other,
                        &["Exact", "ImplementationSpecific", "Prefix"],
                    ),
                }
                self.ingress_backend(get(p, "backend"), &child(&pp, "backend"));
            }
        }
        if let Some(b) = get(spec, "defaultBackend") {
            self.ingress_backend(Some(b), "spec.defaultBackend");
        }
    }

    fn ingress_backend(&mut self, b: Option<&Value>, path: &str) {
        let Some(b) = b else {
            self.required(path, "");
            return;
        };
        match (get(b, "service"), get(b, "resource")) {
            (Some(_), Some(_)) => {
                self.invalid(path, "", "cannot set both resource and service backends")
            }
            (None, None) => self.invalid(path, "", "resource or service backend is required"),
            (Some(svc), None) => {
                let name = s(svc, "name");
                if name.is_empty() {
                    self.required(&format!("{path}.service.name"), "");
                } else {
                    self.invalid_each(
                        &format!("{path}.service.name"),
                        name,
                        text::dns1035_label(name),
                    );
                }
                let port = get(svc, "port").unwrap_or(&Value::Null);
                let (has_name, has_number) = (
                    !s(port, "name").is_empty(),
                    int(port, "number").is_some_and(|n| n != 0),
                );
                if has_name && has_number {
                    self.invalid(
                        &format!("{path}.service.port"),
                        "",
                        "cannot set both port name & port number",
                    );
                } else if !has_name && !has_number {
                    self.invalid(
                        &format!("{path}.service.port"),
                        "",
                        "port name or number is required",
                    );
                } else if let Some(n) = int(port, "number").filter(|n| *n != 0) {
                    for m in text::port_num(n) {
                        self.invalid(&format!("{path}.service.port.number"), &n.to_string(), &m);
                    }
                }
            }
            (None, Some(_)) => {}
        }
    }

    fn endpoint_slice(&mut self, o: &Value) {
        let at = s(o, "addressType");
        let types = ["FQDN", "IPv4", "IPv6"];
        if at.is_empty() {
            self.required("addressType", "");
        } else if !types.contains(&at) {
            self.not_supported("addressType", at, &types);
        }
        for (i, e) in arr(o, "endpoints").iter().enumerate() {
            let ep = idx("endpoints", i);
            let addrs = arr(e, "addresses");
            if addrs.is_empty() {
                self.required(&child(&ep, "addresses"), "must contain at least 1 address");
            }
        }
        for (i, p) in arr(o, "ports").iter().enumerate() {
            let pp = idx("ports", i);
            if let Some(n) = int(p, "port") {
                for m in text::port_num(n) {
                    self.invalid(&child(&pp, "port"), &n.to_string(), &m);
                }
            }
            let proto = s(p, "protocol");
            if !proto.is_empty() && !PROTOCOLS.contains(&proto) {
                self.not_supported(&child(&pp, "protocol"), proto, PROTOCOLS);
            }
        }
    }
}

/// A short description of which top-level fields differ (upstream appends a `cmp.Diff`).
fn top_level_diff(old: &Value, new: &Value) -> String {
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = String::new();
    for k in keys {
        let (a, b) = (o.get(k), n.get(k));
        if !same(a, b) {
            let show = |v: Option<&Value>| v.map_or("nil".to_string(), Value::to_string);
            out.push_str(&format!("  {k}: {} -> {}\n", show(a), show(b)));
        }
    }
    out
}
