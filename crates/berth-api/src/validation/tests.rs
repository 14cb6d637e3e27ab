//! Unit tests of the validation rules: one valid and one invalid example per rule.

use serde_json::{json, Value};

use super::*;
use crate::defaults;
use crate::registry::RESOURCES;

fn res(group: &str, kind: &str) -> &'static ResourceInfo {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.group == group)
        .expect("resource")
}

/// Defaults then validates, returning `field: message` lines.
fn check(group: &str, kind: &str, obj: Value) -> Vec<String> {
    let r = res(group, kind);
    let mut obj = obj;
    defaults::apply(r, &mut obj);
    validate(r, &obj, None)
        .iter()
        .map(Cause::to_field_message)
        .collect()
}

fn check_update(group: &str, kind: &str, old: Value, new: Value) -> Vec<String> {
    let r = res(group, kind);
    let (mut old, mut new) = (old, new);
    defaults::apply(r, &mut old);
    defaults::apply(r, &mut new);
    validate(r, &new, Some(&old))
        .iter()
        .map(Cause::to_field_message)
        .collect()
}

fn has(errs: &[String], needle: &str) -> bool {
    errs.iter().any(|e| e.contains(needle))
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn container() -> Value {
    json!({"name": "c", "image": "nginx"})
}

fn deployment(selector: Value, labels: Value) -> Value {
    json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {
        "selector": selector,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}}}})
}

#[test]
fn cause_serializes_like_upstream() {
    let c = Cause {
        kind: CauseType::Required,
        message: "Required value".into(),
        field: "metadata.name".into(),
    };
    assert_eq!(
        serde_json::to_value(&c).expect("json"),
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "metadata.name"})
    );
    assert_eq!(CauseType::NotSupported.as_str(), "FieldValueNotSupported");
}

#[test]
fn names() {
    assert!(check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "a.b-c", "namespace": "x"}})
    )
    .is_empty());
    let errs = check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "Foo_bar", "namespace": "x"}}),
    );
    assert_eq!(errs, vec![
        "metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
    ]);
    let errs = check("", "Namespace", json!({"metadata": {"name": "a.b"}}));
    assert_eq!(errs, vec!["metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()]);
    let svc = |name: &str| json!({"metadata": {"name": name, "namespace": "x"}, "spec": {"ports": [{"port": 80}]}});
    assert!(check("", "Service", svc("web")).is_empty());
    assert!(has(
        &check("", "Service", svc("1web")),
        "a DNS-1035 label must consist"
    ));
    let role = |name: &str| json!({"metadata": {"name": name, "namespace": "x"}});
    assert!(check("rbac.authorization.k8s.io", "Role", role("system:Admin")).is_empty());
    assert_eq!(
        check("rbac.authorization.k8s.io", "Role", role("a/b")),
        vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'".to_string()]
    );
    assert_eq!(
        check("", "ConfigMap", json!({"metadata": {"namespace": "x"}})),
        vec!["metadata.name: Required value: name or generateName is required".to_string()]
    );
    let long = "a".repeat(254);
    assert!(has(
        &check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": long, "namespace": "x"}})
        ),
        "must be no more than 253 characters"
    ));
    let cj_name = "a".repeat(53);
    assert!(has(
        &check(
            "batch",
            "CronJob",
            json!({"metadata": {"name": cj_name, "namespace": "x"}, "spec": {"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container()]}}}}}})
        ),
        "must be no more than 52 characters"
    ));
}

#[test]
fn namespaces_field() {
    assert_eq!(
        check("", "ConfigMap", json!({"metadata": {"name": "a"}})),
        vec!["metadata.namespace: Required value".to_string()]
    );
    assert_eq!(
        check(
            "",
            "Namespace",
            json!({"metadata": {"name": "a", "namespace": "b"}})
        ),
        vec!["metadata.namespace: Forbidden: not allowed on this type".to_string()]
    );
    assert!(has(
        &check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "B_"}})
        ),
        "metadata.namespace: Invalid value: \"B_\""
    ));
}

#[test]
fn labels_and_annotations() {
    let cm = |meta: Value| {
        let mut m = json!({"name": "a", "namespace": "x"});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        json!({"metadata": m})
    };
    assert!(check(
        "",
        "ConfigMap",
        cm(json!({"labels": {"app.kubernetes.io/name": "My_app-1", "x": ""}}))
    )
    .is_empty());
    let errs = check("", "ConfigMap", cm(json!({"labels": {"bad key!": "ok"}})));
    assert_eq!(errs, vec!["metadata.labels: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()]);
    let errs = check("", "ConfigMap", cm(json!({"labels": {"k": "-bad"}})));
    assert!(has(
        &errs,
        "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string"
    ));
    let long = "v".repeat(64);
    assert!(has(
        &check("", "ConfigMap", cm(json!({"labels": {"k": long}}))),
        "must be no more than 63 characters"
    ));
    assert!(has(
        &check("", "ConfigMap", cm(json!({"labels": {"a/b/c": "v"}}))),
        "a qualified name must consist"
    ));
    assert!(has(
        &check(
            "",
            "ConfigMap",
            cm(json!({"labels": {"Bad_Prefix/x": "v"}}))
        ),
        "prefix part a lowercase RFC 1123 subdomain"
    ));
    assert!(check(
        "",
        "ConfigMap",
        cm(json!({"annotations": {"Example.com/Key": "v"}}))
    )
    .is_empty());
    let big = "x".repeat(256 * 1024);
    assert_eq!(
        check("", "ConfigMap", cm(json!({"annotations": {"k": big}}))),
        vec!["metadata.annotations: Too long: may not be more than 262144 bytes".to_string()]
    );
    assert!(has(
        &check("", "ConfigMap", cm(json!({"finalizers": ["custom"]}))),
        "name is neither a standard finalizer name nor is it fully qualified"
    ));
    assert!(check(
        "",
        "ConfigMap",
        cm(json!({"finalizers": ["example.com/x", "kubernetes"]}))
    )
    .is_empty());
}

#[test]
fn pod_spec_rules() {
    assert!(check("", "Pod", pod(json!({"containers": [container()]}))).is_empty());
    assert_eq!(
        check("", "Pod", pod(json!({}))),
        vec!["spec.containers: Required value".to_string()]
    );
    let errs = check(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "c"}, {"name": "c", "image": "x"}]})),
    );
    assert!(has(&errs, "spec.containers[0].image: Required value"));
    assert!(has(
        &errs,
        "spec.containers[1].name: Duplicate value: \"c\""
    ));
    let errs = check(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "C_1", "image": "x"}]})),
    );
    assert!(has(
        &errs,
        "spec.containers[0].name: Invalid value: \"C_1\": a lowercase RFC 1123 label"
    ));
    let errs = check(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "c", "image": "x",
        "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}, {}]}]})),
    );
    assert!(has(&errs, "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"));
    assert!(has(&errs, "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""));
    assert!(has(
        &errs,
        "spec.containers[0].ports[2].containerPort: Required value"
    ));
    let errs = check(
        "",
        "Pod",
        pod(json!({"restartPolicy": "Sometimes", "containers": [container()]})),
    );
    assert_eq!(errs, vec!["spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()]);
    let errs = check(
        "",
        "Pod",
        pod(json!({"volumes": [{"name": "v"}, {"name": "v"}],
        "containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/a"}, {"name": "w", "mountPath": "/b"}]}]})),
    );
    assert!(has(&errs, "spec.volumes[1].name: Duplicate value: \"v\""));
    assert!(has(
        &errs,
        "spec.containers[0].volumeMounts[1].name: Not found: \"w\""
    ));
    assert!(!has(&errs, "volumeMounts[0]"));
    let errs = check(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]})),
    );
    assert_eq!(errs, vec!["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_string()]);
    assert!(check("", "Pod", pod(json!({"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}}}]}))).is_empty());
    let errs = check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "c", "image": "x", "env": [{"name": ""}, {"name": "A=B"}, {"name": "my.var-1"}]}]}),
        ),
    );
    assert!(has(&errs, "spec.containers[0].env[0].name: Required value"));
    assert!(has(&errs, "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"));
    assert!(!has(&errs, "env[2]"));
    let errs = check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "c", "image": "x", "livenessProbe": {"httpGet": {"port": 0}, "successThreshold": 2}}]}),
        ),
    );
    assert!(has(&errs, "livenessProbe.httpGet.port: Invalid value: 0"));
    assert!(has(
        &errs,
        "livenessProbe.successThreshold: Invalid value: 2: must be 1"
    ));
    let errs = check(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Sometimes"}]})),
    );
    assert!(has(
        &errs,
        "imagePullPolicy: Unsupported value: \"Sometimes\""
    ));
}

#[test]
fn workloads() {
    let sel = json!({"matchLabels": {"app": "web"}});
    assert!(check(
        "apps",
        "Deployment",
        deployment(sel.clone(), json!({"app": "web", "x": "y"}))
    )
    .is_empty());
    let errs = check(
        "apps",
        "Deployment",
        deployment(sel.clone(), json!({"app": "other", "b": "c"})),
    );
    assert_eq!(errs, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\", \"b\":\"c\"}: `selector` does not match template `labels`".to_string()]);
    let mut no_sel = deployment(sel.clone(), json!({"app": "web"}));
    if let Some(spec) = no_sel["spec"].as_object_mut() {
        spec.remove("selector");
    }
    assert_eq!(
        check("apps", "Deployment", no_sel),
        vec!["spec.selector: Required value".to_string()]
    );
    let errs = check(
        "apps",
        "Deployment",
        deployment(json!({}), json!({"app": "web"})),
    );
    assert_eq!(errs, vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment".to_string()]);
    let errs = check(
        "apps",
        "Deployment",
        deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "Near"}, {"key": "x", "operator": "In"}]}),
            json!({"app": "web"}),
        ),
    );
    assert!(has(&errs, "spec.selector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"));
    assert!(has(&errs, "spec.selector.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"));
    let mut d = deployment(sel.clone(), json!({"app": "web"}));
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
    let errs = check("apps", "Deployment", d);
    assert!(has(
        &errs,
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    ));
    assert!(has(&errs, "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""));
    assert!(has(&errs, "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0"));
    let mut d = deployment(sel.clone(), json!({"app": "web"}));
    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
    assert!(has(&check("apps", "Deployment", d), "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"));
    let mut d = deployment(sel.clone(), json!({"app": "web"}));
    d["spec"]["strategy"] = json!({"type": "Blue"});
    assert!(has(
        &check("apps", "Deployment", d),
        "spec.strategy.type: Unsupported value: \"Blue\""
    ));
    let mut d = deployment(sel.clone(), json!({"app": "web"}));
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": "120%"}});
    assert!(has(
        &check("apps", "Deployment", d),
        "must not be greater than 100%"
    ));

    for kind in ["ReplicaSet", "DaemonSet", "StatefulSet"] {
        assert!(
            check("apps", kind, deployment(sel.clone(), json!({"app": "web"}))).is_empty(),
            "{kind}"
        );
        assert!(
            has(
                &check("apps", kind, deployment(sel.clone(), json!({"app": "x"}))),
                "`selector` does not match template `labels`"
            ),
            "{kind}"
        );
    }
}

#[test]
fn jobs_and_cronjobs() {
    let job = |restart: &str| {
        json!({"metadata": {"name": "j", "namespace": "x", "uid": "u"},
        "spec": {"template": {"spec": {"restartPolicy": restart, "containers": [container()]}}}})
    };
    assert!(check("batch", "Job", job("Never")).is_empty());
    assert_eq!(
        check("batch", "Job", job("Always")),
        vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".to_string()]
    );
    let mut j = job("OnFailure");
    j["spec"]["backoffLimit"] = json!(-1);
    assert!(has(
        &check("batch", "Job", j),
        "spec.backoffLimit: Invalid value: -1"
    ));
    let mut no_uid = job("Never");
    no_uid["metadata"] = json!({"name": "j", "namespace": "x"});
    assert!(has(
        &check("batch", "Job", no_uid),
        "spec.selector: Required value"
    ));

    let cj = |schedule: &str, restart: &str| {
        json!({"metadata": {"name": "c", "namespace": "x"}, "spec": {
        "schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": restart, "containers": [container()]}}}}}})
    };
    assert!(check("batch", "CronJob", cj("*/5 * * * *", "OnFailure")).is_empty());
    assert_eq!(
        check("batch", "CronJob", cj("every minute", "Never")),
        vec!["spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]".to_string()]
    );
    assert!(has(
        &check("batch", "CronJob", cj("", "Never")),
        "spec.schedule: Required value"
    ));
    assert!(has(
        &check("batch", "CronJob", cj("* * * * *", "Always")),
        "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\""
    ));
    assert!(has(
        &check("batch", "CronJob", cj("TZ=UTC * * * * *", "Never")),
        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    ));
    let mut c = cj("* * * * *", "Never");
    c["spec"]["concurrencyPolicy"] = json!("Sometimes");
    assert!(has(&check("batch", "CronJob", c), "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""));
}

#[test]
fn services() {
    let svc = |spec: Value| json!({"metadata": {"name": "s", "namespace": "x"}, "spec": spec});
    assert!(check("", "Service", svc(json!({"ports": [{"port": 80}]}))).is_empty());
    assert_eq!(
        check("", "Service", svc(json!({}))),
        vec!["spec.ports: Required value".to_string()]
    );
    assert!(check("", "Service", svc(json!({"clusterIP": "None"}))).is_empty());
    assert!(check(
        "",
        "Service",
        svc(json!({"type": "ExternalName", "externalName": "db.example.com"}))
    )
    .is_empty());
    let errs = check(
        "",
        "Service",
        svc(json!({"type": "Magic", "ports": [{"port": 0, "targetPort": "Web_"}]})),
    );
    assert!(has(&errs, "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""));
    assert!(has(
        &errs,
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    ));
    assert!(has(&errs, "spec.ports[0].targetPort: Invalid value: \"Web_\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"));
    let errs = check(
        "",
        "Service",
        svc(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]})),
    );
    assert!(has(
        &errs,
        "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\""
    ));
    let errs = check(
        "",
        "Service",
        svc(json!({"ports": [{"port": 80}, {"port": 81}]})),
    );
    assert!(has(&errs, "spec.ports[0].name: Required value"));
    let errs = check(
        "",
        "Service",
        svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})),
    );
    assert_eq!(errs, vec!["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767".to_string()]);
    assert!(check(
        "",
        "Service",
        svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))
    )
    .is_empty());
    let errs = check(
        "",
        "Service",
        svc(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
    );
    assert!(has(
        &errs,
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    ));
}

#[test]
fn config_maps_and_secrets() {
    let cm = |data: Value| json!({"metadata": {"name": "c", "namespace": "x"}, "data": data});
    assert!(check("", "ConfigMap", cm(json!({"a.b_C-1": "x"}))).is_empty());
    assert_eq!(
        check("", "ConfigMap", cm(json!({"a b": "x"}))),
        vec!["data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string()]
    );
    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        check("", "ConfigMap", cm(json!({"k": big}))),
        vec![": Too long: may not be more than 1048576 bytes".to_string()]
    );
    let secret = |ty: &str, data: Value| json!({"metadata": {"name": "s", "namespace": "x"}, "type": ty, "data": data});
    assert!(check("", "Secret", secret("Opaque", json!({"k": "dg=="}))).is_empty());
    assert_eq!(
        check(
            "",
            "Secret",
            secret("kubernetes.io/tls", json!({"tls.crt": ""}))
        ),
        vec!["data[tls.key]: Required value".to_string()]
    );
    assert!(check(
        "",
        "Secret",
        secret("kubernetes.io/tls", json!({"tls.crt": "", "tls.key": ""}))
    )
    .is_empty());
    assert_eq!(
        check(
            "",
            "Secret",
            secret("kubernetes.io/dockerconfigjson", json!({}))
        ),
        vec!["data[.dockerconfigjson]: Required value".to_string()]
    );
    assert!(has(
        &check("", "Secret", secret("Opaque", json!({"bad/key": ""}))),
        "data[bad/key]: Invalid value"
    ));
}

#[test]
fn immutable_updates() {
    let cm = |data: Value, immutable: Value| json!({"metadata": {"name": "c", "namespace": "x"}, "data": data, "immutable": immutable});
    assert!(check_update(
        "",
        "ConfigMap",
        cm(json!({"a": "1"}), json!(false)),
        cm(json!({"a": "2"}), json!(false))
    )
    .is_empty());
    let errs = check_update(
        "",
        "ConfigMap",
        cm(json!({"a": "1"}), json!(true)),
        cm(json!({"a": "2"}), Value::Null),
    );
    assert!(has(
        &errs,
        "immutable: Forbidden: field is immutable when `immutable` is set"
    ));
    assert!(has(
        &errs,
        "data: Forbidden: field is immutable when `immutable` is set"
    ));
    let secret = |ty: &str| json!({"metadata": {"name": "s", "namespace": "x"}, "type": ty});
    assert_eq!(
        check_update("", "Secret", secret("Opaque"), secret("example.com/x")),
        vec!["type: Invalid value: \"example.com/x\": field is immutable".to_string()]
    );

    let sel = json!({"matchLabels": {"app": "web"}});
    let old = deployment(sel.clone(), json!({"app": "web", "v": "2"}));
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    assert!(check_update("apps", "Deployment", old.clone(), scaled).is_empty());
    let new = deployment(
        json!({"matchLabels": {"app": "web", "v": "2"}}),
        json!({"app": "web", "v": "2"}),
    );
    assert_eq!(
        check_update("apps", "Deployment", old.clone(), new.clone()),
        vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()]
    );
    assert!(has(
        &check_update("apps", "DaemonSet", old.clone(), new.clone()),
        "spec.selector: Invalid value"
    ));
    assert!(has(
        &check_update("apps", "ReplicaSet", old.clone(), new),
        "field is immutable"
    ));

    let mut sts_new = old.clone();
    sts_new["spec"]["replicas"] = json!(3);
    sts_new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert!(check_update("apps", "StatefulSet", old.clone(), sts_new.clone()).is_empty());
    sts_new["spec"]["serviceName"] = json!("other");
    assert_eq!(
        check_update("apps", "StatefulSet", old.clone(), sts_new),
        vec![format!("spec: Forbidden: {}", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")]
    );

    let mut renamed = old.clone();
    renamed["metadata"]["name"] = json!("other");
    assert_eq!(
        check_update("apps", "Deployment", old, renamed),
        vec!["metadata.name: Invalid value: \"other\": field is immutable".to_string()]
    );
}

#[test]
fn pod_updates() {
    // Tagged images keep the defaulted imagePullPolicy stable across the image change.
    let old = pod(
        json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 100}),
    );
    let mut ok = old.clone();
    ok["spec"]["containers"][0]["image"] = json!("nginx:2");
    ok["spec"]["activeDeadlineSeconds"] = json!(50);
    ok["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
    assert!(check_update("", "Pod", old.clone(), ok).is_empty());
    let mut bad = old.clone();
    bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let errs = check_update("", "Pod", old.clone(), bad);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
    let mut longer = old.clone();
    longer["spec"]["activeDeadlineSeconds"] = json!(200);
    assert!(has(&check_update("", "Pod", old, longer), "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"));
}

#[test]
fn job_service_pvc_updates() {
    let job = |image: &str, suspend: bool| {
        json!({"metadata": {"name": "j", "namespace": "x", "uid": "u"},
        "spec": {"suspend": suspend, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}})
    };
    assert!(check_update("batch", "Job", job("a", false), job("a", true)).is_empty());
    assert_eq!(
        check_update("batch", "Job", job("a", false), job("b", false)),
        vec![
            "spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
                .to_string()
        ]
    );

    let svc = |ip: &str| json!({"metadata": {"name": "s", "namespace": "x"}, "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}});
    assert!(check_update("", "Service", svc("10.43.0.5"), svc("10.43.0.5")).is_empty());
    assert_eq!(
        check_update("", "Service", svc("10.43.0.5"), svc("10.43.0.6")),
        vec![
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.6\"}: may not change once set"
                .to_string()
        ]
    );

    let pvc = |size: &str, class: &str| {
        json!({"metadata": {"name": "p", "namespace": "x"},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})
    };
    assert!(check_update(
        "",
        "PersistentVolumeClaim",
        pvc("1Gi", "a"),
        pvc("2Gi", "a")
    )
    .is_empty());
    assert!(has(
        &check_update(
            "",
            "PersistentVolumeClaim",
            pvc("1Gi", "a"),
            pvc("1Gi", "b")
        ),
        "spec: Forbidden: spec is immutable after creation except resources.requests"
    ));

    let rb = |role: &str| json!({"metadata": {"name": "r", "namespace": "x"}, "roleRef": {"kind": "ClusterRole", "name": role}});
    assert!(check_update(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        rb("view"),
        rb("view")
    )
    .is_empty());
    assert!(has(&check_update("rbac.authorization.k8s.io", "RoleBinding", rb("view"), rb("edit")), "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef"));
}

#[test]
fn ingress_and_slices() {
    let ing = |path_type: Value| {
        json!({"metadata": {"name": "i", "namespace": "x"}, "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
        {"path": "/", "pathType": path_type, "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
    };
    assert!(check("networking.k8s.io", "Ingress", ing(json!("Prefix"))).is_empty());
    assert!(has(
        &check("networking.k8s.io", "Ingress", ing(Value::Null)),
        "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
    ));
    let eps = json!({"metadata": {"name": "e", "namespace": "x"}, "addressType": "IPv5", "endpoints": [{"addresses": []}]});
    let errs = check("discovery.k8s.io", "EndpointSlice", eps);
    assert!(has(&errs, "addressType: Unsupported value: \"IPv5\""));
    assert!(has(&errs, "endpoints[0].addresses: Required value"));
}

#[test]
fn type_checks() {
    let pods = res("", "Pod");
    assert!(check_types(
        pods,
        &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x",
        "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}})
    )
    .is_ok());
    assert!(check_types(pods, &json!({"spec": {"containers": [{"image": "x"}]}})).is_ok());
    assert!(check_types(
        pods,
        &json!({"spec": {"containers": [{"name": "c", "image": null}]}})
    )
    .is_ok());
    let err = check_types(pods, &json!({"spec": {"containers": "nope"}}))
        .err()
        .unwrap_or_default();
    assert!(err.contains("invalid type"), "{err}");
    let err = check_types(
        res("", "ConfigMap"),
        &json!({"metadata": {"labels": {"a": 1}}}),
    )
    .err()
    .unwrap_or_default();
    assert!(err.contains("invalid type"), "{err}");
    for r in RESOURCES {
        assert!(
            check_types(r, &json!({"metadata": {"name": "x"}})).is_ok(),
            "{}",
            r.kind
        );
    }
}

#[test]
fn wrong_shapes_do_not_panic() {
    for r in RESOURCES {
        for v in [
            json!(null),
            json!([]),
            json!({"metadata": 5, "spec": "x", "data": [1]}),
            json!({"metadata": {"name": 5, "labels": [1], "annotations": {"a": 1}}, "spec": {
                "containers": [1, {"ports": "x", "resources": {"limits": 1, "requests": {"cpu": []}}}],
                "selector": {"matchLabels": 1, "matchExpressions": [1]}, "template": 4,
                "ports": [{"port": "x", "targetPort": []}], "strategy": {"rollingUpdate": []}}}),
        ] {
            let _ = validate(r, &v, None);
            let _ = validate(r, &v, Some(&v));
            let _ = validate(
                r,
                &v,
                Some(&json!({"spec": {"clusterIP": "1.2.3.4"}, "immutable": true})),
            );
            let _ = check_types(r, &v);
        }
    }
}
