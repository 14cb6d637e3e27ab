//! Fuzzes the cluster DNS server's answer path with untrusted packet bytes: decoding, lookup
//! in an index of a few Services, encoding, truncation. Any reply must be a DNS header at least
//! and carry the query's id.
#![no_main]

use berth_dns::answer::{respond, Reply, Transport};
use berth_dns::index::Index;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let meta = |name: &str| ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..Default::default()
        };
        let port = Some(vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            ..Default::default()
        }]);
        let services = vec![
            Service {
                metadata: meta("web"),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("10.43.0.10".into()),
                    ports: port.clone(),
                    ..Default::default()
                }),
                status: None,
            },
            Service {
                metadata: meta("db"),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("None".into()),
                    ports: port,
                    ..Default::default()
                }),
                status: None,
            },
            Service {
                metadata: meta("ext"),
                spec: Some(ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("example.test".into()),
                    ..Default::default()
                }),
                status: None,
            },
        ];
        let mut slice_meta = meta("db-x");
        slice_meta.labels = Some(
            [("kubernetes.io/service-name".to_string(), "db".to_string())].into(),
        );
        let slice = EndpointSlice {
            metadata: slice_meta,
            address_type: "IPv4".into(),
            endpoints: (0..80)
                .map(|n| Endpoint {
                    addresses: vec![format!("10.42.0.{n}")],
                    hostname: (n % 2 == 0).then(|| format!("db-{n}")),
                    ..Default::default()
                })
                .collect(),
            ports: None,
        };
        Index::build("cluster.local", &services, [&slice])
    })
}

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Reply::Send(bytes) = respond(index(), data, transport) {
            assert!(bytes.len() >= 12);
            assert_eq!(bytes[..2], data[..2]);
            assert!(bytes[2] & 0x80 != 0);
            if transport == Transport::Udp {
                assert!(bytes.len() <= 1232);
            }
        }
    }
});
