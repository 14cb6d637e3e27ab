//! End-to-end decoding of protobuf bodies built with the `k8s-pb` prost bindings.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

fn body(api_version: &str, kind: &str, obj: &impl Message) -> Vec<u8> {
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(env.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ObjectMeta as Go writes it: every non-pointer field present, zero time as empty message.
fn go_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    }
}

#[test]
fn configmap_with_data_and_binary_data() {
    let cm = core::ConfigMap {
        metadata: Some(go_meta("x", "default")),
        data: map(&[("a", "b"), ("c", "")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255])].into(),
        immutable: None,
    };
    let got = berth_proto::decode(&body("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "default", "creationTimestamp": null},
            "data": {"a": "b", "c": ""},
            "binaryData": {"bin": "AAEC/w=="}
        })
    );
    // apiVersion and kind come first, as in upstream's JSON.
    let keys: Vec<_> = got.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys[..2], ["apiVersion", "kind"]);
}

#[test]
fn secret_bytes_are_base64_and_pointer_false_is_kept() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("tls"),
            labels: map(&[("app", "web")]),
            ..Default::default()
        }),
        immutable: Some(false),
        data: [("password".to_string(), b"hunter2".to_vec())].into(),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
    };
    let got = berth_proto::decode(&body("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls", "labels": {"app": "web"}},
            "immutable": false,
            "data": {"password": "aHVudGVyMg=="},
            "type": "Opaque"
        })
    );
}

fn container() -> core::Container {
    core::Container {
        name: s("nginx"),
        image: s("nginx:1.27"),
        ports: vec![core::ContainerPort {
            name: s(""),
            host_port: Some(0),
            container_port: Some(80),
            protocol: s(""),
            host_ip: s(""),
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("memory".to_string(), Quantity { string: s("128Mi") })].into(),
            requests: [("cpu".to_string(), Quantity { string: s("250m") })].into(),
            claims: vec![],
        }),
        termination_message_path: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

#[test]
fn deployment_with_containers_ports_and_quantities() {
    let d = apps::Deployment {
        metadata: Some(go_meta("web", "")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: map(&[("app", "web")]),
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container()],
                    restart_policy: s(""),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            min_ready_seconds: Some(0),
            revision_history_limit: None,
            paused: Some(false),
            progress_deadline_seconds: None,
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = berth_proto::decode(&body("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80}],
                        "resources": {
                            "limits": {"memory": "128Mi"},
                            "requests": {"cpu": "250m"}
                        }
                    }]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn service_int_or_string_target_ports() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let svc = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "http",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "named",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("https"),
                    },
                ),
            ],
            selector: map(&[("app", "web")]),
            r#type: s("ClusterIP"),
            cluster_ip: s(""),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let got = berth_proto::decode(&body("v1", "Service", &svc)).unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "named", "protocol": "TCP", "port": 443, "targetPort": "https"}
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP"
        })
    );
    assert_eq!(got["status"], json!({}));
}

#[test]
fn pod_with_empty_dir_and_timestamps() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_704_164_645),
                nanos: Some(0),
            }),
            deletion_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("scratch"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("c"),
                image: s("busybox"),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let got = berth_proto::decode(&body("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "deletionGracePeriodSeconds": 0
            },
            "spec": {
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                "terminationGracePeriodSeconds": 0
            }
        })
    );
}

#[test]
fn eviction_with_delete_options() {
    let ev = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            namespace: s("default"),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        }),
    };
    let got = berth_proto::decode(&body("policy/v1", "Eviction", &ev)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "p", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0}
        })
    );
}

#[test]
fn scale_and_job() {
    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(3) }),
        status: None,
    };
    let got = berth_proto::decode(&body("autoscaling/v1", "Scale", &scale)).unwrap();
    assert_eq!(got["spec"], json!({"replicas": 3}));

    let job = k8s_pb::api::batch::v1::Job {
        metadata: Some(meta::ObjectMeta {
            name: s("j"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::batch::v1::JobSpec {
            backoff_limit: Some(0),
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(core::PodSpec {
                    restart_policy: s("Never"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let got = berth_proto::decode(&body("batch/v1", "Job", &job)).unwrap();
    assert_eq!(
        got["spec"],
        json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never"}}})
    );
}

#[test]
fn events_micro_time_and_raw_extension() {
    let ev = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e"),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_164_645),
            nanos: Some(123_456_000),
        }),
        ..Default::default()
    };
    let got = berth_proto::decode(&body("events.k8s.io/v1", "Event", &ev)).unwrap();
    assert_eq!(got["eventTime"], json!("2024-01-02T03:04:05.123456Z"));

    let rev = apps::ControllerRevision {
        metadata: None,
        data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
            raw: Some(br#"{"spec":{"x":1}}"#.to_vec()),
        }),
        revision: Some(2),
    };
    let got = berth_proto::decode(&body("apps/v1", "ControllerRevision", &rev)).unwrap();
    assert_eq!(got["data"], json!({"spec": {"x": 1}}));
    assert_eq!(got["revision"], json!(2));
}

#[test]
fn unknown_fields_are_skipped_and_packed_scalars_read() {
    // ConfigMap with an unknown field 99 (varint) appended.
    let cm = core::ConfigMap {
        data: map(&[("k", "v")]),
        ..Default::default()
    };
    let mut raw = cm.encode_to_vec();
    raw.extend([0x98, 0x06, 0x01]);
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(raw),
        ..Default::default()
    };
    let mut b = b"k8s\0".to_vec();
    b.extend(env.encode_to_vec());
    assert_eq!(berth_proto::decode(&b).unwrap()["data"], json!({"k": "v"}));

    // Unpacked (prost, as Go) and packed int64s: PodSecurityContext.supplementalGroups
    // (field 4) inside PodSpec.securityContext (14) inside Pod.spec (2).
    let ctx = core::PodSecurityContext {
        supplemental_groups: vec![1, 2, 300],
        ..Default::default()
    };
    let mut ctx_raw = ctx.encode_to_vec();
    ctx_raw.extend([(4 << 3) | 2, 3, 4, 0xac, 0x02]);
    let mut spec_raw = vec![(14 << 3) | 2, ctx_raw.len() as u8];
    spec_raw.extend(&ctx_raw);
    let mut pod_raw = vec![(2 << 3) | 2, spec_raw.len() as u8];
    pod_raw.extend(&spec_raw);
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Pod"),
        }),
        raw: Some(pod_raw),
        ..Default::default()
    };
    let mut b = b"k8s\0".to_vec();
    b.extend(env.encode_to_vec());
    let got = berth_proto::decode(&b).unwrap();
    assert_eq!(
        got["spec"]["securityContext"]["supplementalGroups"],
        json!([1, 2, 300, 4, 300])
    );
}

#[test]
fn errors_never_panic() {
    assert!(matches!(
        berth_proto::decode(b"{}"),
        Err(berth_proto::DecodeError::NotProtobuf)
    ));
    let good = body(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(go_meta("x", "default")),
            data: map(&[("a", "b")]),
            ..Default::default()
        },
    );
    for n in 0..good.len() {
        let _ = berth_proto::decode(&good[..n]);
    }
    let err = berth_proto::decode(&good[..good.len() - 3]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to decode protobuf body: "),
        "{err}"
    );
    let unknown = body("example.com/v1", "Widget", &core::ConfigMap::default());
    let err = berth_proto::decode(&unknown).unwrap_err();
    assert!(err.to_string().contains("Widget"), "{err}");

    // Deterministic pseudo-random garbage, with and without the magic prefix, and
    // random corruptions of a valid body.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 {
            b.splice(0..0, b"k8s\0".iter().copied());
        }
        let _ = berth_proto::decode(&b);
        let mut c = good.clone();
        for _ in 0..3 {
            let at = (next() as usize) % c.len();
            c[at] = next() as u8;
        }
        let _ = berth_proto::decode(&c);
    }
    // Deeply nested messages are refused, not a stack overflow.
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![(1 << 3) | 2];
        let mut len = nested.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(b);
                break;
            }
            outer.push(b | 0x80);
        }
        outer.extend(&nested);
        nested = outer;
        if nested.len() > 200_000 {
            break;
        }
    }
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("apiextensions.k8s.io/v1"),
            kind: s("JSONSchemaPropsOrBool"),
        }),
        raw: Some(nested),
        ..Default::default()
    };
    let mut b = b"k8s\0".to_vec();
    b.extend(env.encode_to_vec());
    let _ = berth_proto::decode(&b);
}

#[test]
fn go_durations() {
    use berth_proto::go_duration as d;
    assert_eq!(d(0), "0s");
    assert_eq!(d(90_000_000_000), "1m30s");
    assert_eq!(d(3_600_000_000_000), "1h0m0s");
    assert_eq!(d(1_500_000), "1.5ms");
    assert_eq!(d(-2_000_000_000), "-2s");
    assert_eq!(d(500), "500ns");
}

#[test]
fn table_json_names_match_openapi_definitions() {
    let defs = berth_api::openapi::definitions();
    let mut checked = 0;
    for (name, def) in defs {
        let Some(props) = def.get("properties").and_then(|p| p.as_object()) else {
            continue;
        };
        for json in berth_proto::table_fields(name) {
            if json == "apiVersion" || json == "kind" || json.is_empty() || json == "-" {
                continue;
            }
            // Fields newer than the served API version are simply absent; a field that
            // is there must be spelled exactly as in the table.
            let norm = |s: &str| s.to_lowercase().replace(['_', '-', '$'], "");
            if let Some(prop) = props.keys().find(|p| norm(p) == norm(&json)) {
                assert_eq!(prop, &json, "{name}");
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} fields checked");
}
