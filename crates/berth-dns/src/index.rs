//! The in-memory index the server answers from: the cluster domain's names built from
//! Services and EndpointSlices (as CoreDNS's `kubernetes` plugin names them), and the lookup
//! of one question in it. No wire format here: [`crate::answer`] encodes what [`Index::lookup`]
//! finds.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The question types the index knows; the rest are [`QueryType::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Srv,
    Ptr,
    Cname,
    Soa,
    Ns,
    Any,
    Other,
}

/// The data of one answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Port, weight and target (a name in the cluster domain, without the final dot).
    Srv {
        port: u16,
        weight: u16,
        target: String,
    },
    Cname(String),
    Ptr(String),
    Ns(String),
    Soa,
}

/// One record: its owner name (`None`: the question's name, as the client spelled it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Option<String>,
    pub data: RecordData,
}

/// What a question finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Records for the answer and additional sections.
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, with no record of the asked type (NOERROR, SOA in authority).
    NoData,
    /// The name does not exist in the cluster domain (NXDOMAIN, SOA in authority).
    NxDomain,
    /// The cluster's Services are not known yet (SERVFAIL, so the client asks again).
    NotReady,
    /// Not a name of the cluster: forwarded to the upstream resolvers.
    Forward,
}

/// How a Service is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Its cluster IPs.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: its endpoints' addresses.
    Headless,
    /// `type: ExternalName`: a CNAME.
    ExternalName(String),
}

/// A named port of a Service or an endpoint: `_<name>._<protocol>` in SRV names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    /// Lowercase: tcp, udp, sctp.
    protocol: String,
    port: u16,
}

/// A ready (or published not-ready) endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    ip: IpAddr,
    /// Its label under the Service: the endpoint's hostname, or its dashed IP.
    hostname: String,
    ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceEntry {
    kind: Kind,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// The cluster domain's names.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Lowercase, without the final dot, e.g. `cluster.local`.
    domain: String,
    ready: bool,
    /// (namespace, name) → entry.
    services: HashMap<(String, String), ServiceEntry>,
    namespaces: HashSet<String>,
    /// ClusterIPs and headless endpoint addresses → their name.
    reverse: HashMap<IpAddr, String>,
}

impl Index {
    /// An index that answers SERVFAIL in the domain until the first [`Index::build`].
    pub fn not_ready(domain: &str) -> Index {
        Index {
            domain: normalize(domain),
            ..Default::default()
        }
    }

    /// The index of `services` and the EndpointSlices `slices`.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Index {
        let domain = normalize(domain);
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let (Some(ns), Some(svc)) = (
                s.metadata.namespace.as_deref(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns.to_string(), svc.to_string()))
                .or_default()
                .push(s);
        }
        let mut index = Index {
            domain,
            ready: true,
            ..Default::default()
        };
        for svc in services {
            let (Some(ns), Some(name), Some(spec)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
                svc.spec.as_ref(),
            ) else {
                continue;
            };
            let key = (ns.to_ascii_lowercase(), name.to_ascii_lowercase());
            let fqdn = format!("{}.{}.svc.{}", key.1, key.0, index.domain);
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match spec.external_name.as_deref().map(normalize) {
                    Some(n) if !n.is_empty() => Kind::ExternalName(n),
                    _ => continue,
                }
            } else if spec.cluster_ip.as_deref() == Some("None") {
                Kind::Headless
            } else {
                let ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .fold(Vec::new(), |mut v, ip| {
                        if !v.contains(&ip) {
                            v.push(ip);
                        }
                        v
                    });
                if ips.is_empty() {
                    continue;
                }
                for ip in &ips {
                    index.reverse.insert(*ip, fqdn.clone());
                }
                Kind::ClusterIp(ips)
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            let mut endpoints: BTreeMap<IpAddr, Endpoint> = BTreeMap::new();
            if kind == Kind::Headless {
                let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
                for slice in by_service
                    .get(&(ns.to_string(), name.to_string()))
                    .into_iter()
                    .flatten()
                {
                    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                        continue;
                    }
                    let ports: Vec<Port> = slice
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| {
                            Some(Port {
                                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                                protocol: p
                                    .protocol
                                    .as_deref()
                                    .unwrap_or("TCP")
                                    .to_ascii_lowercase(),
                                port: p.port.and_then(|n| u16::try_from(n).ok())?,
                            })
                        })
                        .collect();
                    for e in &slice.endpoints {
                        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        if !ready && !publish_not_ready {
                            continue;
                        }
                        let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok())
                        else {
                            continue;
                        };
                        let hostname = e
                            .hostname
                            .as_deref()
                            .filter(|h| !h.is_empty())
                            .map(str::to_ascii_lowercase)
                            .unwrap_or_else(|| dashed(ip));
                        index
                            .reverse
                            .entry(ip)
                            .or_insert_with(|| format!("{hostname}.{fqdn}"));
                        let entry = endpoints.entry(ip).or_insert_with(|| Endpoint {
                            ip,
                            hostname,
                            ports: Vec::new(),
                        });
                        for p in &ports {
                            if !entry.ports.contains(p) {
                                entry.ports.push(p.clone());
                            }
                        }
                    }
                }
            }
            index.namespaces.insert(key.0.clone());
            index.services.insert(
                key,
                ServiceEntry {
                    kind,
                    ports,
                    endpoints: endpoints.into_values().collect(),
                },
            );
        }
        index
    }

    /// The cluster domain (lowercase, no final dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` (lowercase, no final dot) is the cluster domain or under it.
    pub fn in_domain(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }

    /// Looks `name` (lowercase, without the final dot) up.
    pub fn lookup(&self, name: &str, qtype: QueryType) -> Lookup {
        if qtype == QueryType::Ptr {
            if let Some(ip) = reverse_ip(name) {
                return match (self.ready, self.reverse.get(&ip)) {
                    (_, Some(target)) => answer(vec![Record {
                        name: None,
                        data: RecordData::Ptr(target.clone()),
                    }]),
                    (false, None) if self.in_domain(name) => Lookup::NotReady,
                    _ => Lookup::Forward,
                };
            }
        }
        if !self.in_domain(name) {
            return Lookup::Forward;
        }
        if !self.ready {
            return Lookup::NotReady;
        }
        let relative = name
            .strip_suffix(self.domain.as_str())
            .unwrap_or_default()
            .trim_end_matches('.');
        let labels: Vec<&str> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('.').collect()
        };
        match labels.as_slice() {
            [] => match qtype {
                QueryType::Soa => answer(vec![Record {
                    name: None,
                    data: RecordData::Soa,
                }]),
                QueryType::Ns => answer(vec![Record {
                    name: None,
                    data: RecordData::Ns(format!("ns.dns.{}", self.domain)),
                }]),
                _ => Lookup::NoData,
            },
            ["svc"] | ["pod"] => Lookup::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains(*ns) {
                    Lookup::NoData
                } else {
                    Lookup::NxDomain
                }
            }
            [svc, ns, "svc"] => match self.services.get(&(ns.to_string(), svc.to_string())) {
                Some(entry) => self.service_answer(ns, svc, entry, qtype),
                None => Lookup::NxDomain,
            },
            [host, svc, ns, "svc"] => {
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Lookup::NxDomain;
                };
                let ips: Vec<IpAddr> = entry
                    .endpoints
                    .iter()
                    .filter(|e| e.hostname == *host)
                    .map(|e| e.ip)
                    .collect();
                if ips.is_empty() {
                    return Lookup::NxDomain;
                }
                address_answer(&ips, qtype)
            }
            [port, proto, svc, ns, "svc"] => {
                let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_'))
                else {
                    return Lookup::NxDomain;
                };
                let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return Lookup::NxDomain;
                };
                let found = self.srv(ns, svc, entry, Some((port, proto)));
                match found {
                    None => Lookup::NxDomain,
                    Some(_) if qtype != QueryType::Srv && qtype != QueryType::Any => Lookup::NoData,
                    Some(l) => l,
                }
            }
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) => address_answer(&[ip], qtype),
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        }
    }

    /// The answer for a Service's own name.
    fn service_answer(
        &self,
        ns: &str,
        svc: &str,
        entry: &ServiceEntry,
        qtype: QueryType,
    ) -> Lookup {
        match (&entry.kind, qtype) {
            (Kind::ExternalName(target), _) => answer(vec![Record {
                name: None,
                data: RecordData::Cname(target.clone()),
            }]),
            (_, QueryType::Srv) => self.srv(ns, svc, entry, None).unwrap_or(Lookup::NoData),
            (Kind::ClusterIp(ips), _) => address_answer(ips, qtype),
            (Kind::Headless, _) => {
                let ips: Vec<IpAddr> = entry.endpoints.iter().map(|e| e.ip).collect();
                address_answer(&ips, qtype)
            }
        }
    }

    /// SRV records of a Service's ports (`port`: only `_<name>._<protocol>`); `None` when
    /// no port matches.
    fn srv(
        &self,
        ns: &str,
        svc: &str,
        entry: &ServiceEntry,
        port: Option<(&str, &str)>,
    ) -> Option<Lookup> {
        let matches = |p: &Port| match port {
            Some((name, proto)) => !p.name.is_empty() && p.name == name && p.protocol == proto,
            None => true,
        };
        let fqdn = format!("{svc}.{ns}.svc.{}", self.domain);
        // (port, target, addresses of the target)
        let mut found: Vec<(u16, String, Vec<IpAddr>)> = Vec::new();
        match &entry.kind {
            Kind::ExternalName(_) => return None,
            Kind::ClusterIp(ips) => {
                for p in entry.ports.iter().filter(|p| matches(p)) {
                    found.push((p.port, fqdn.clone(), ips.clone()));
                }
            }
            Kind::Headless => {
                for e in &entry.endpoints {
                    for p in e.ports.iter().filter(|p| matches(p)) {
                        found.push((p.port, format!("{}.{fqdn}", e.hostname), vec![e.ip]));
                    }
                }
                // A headless Service's port with no endpoint yet still exists (NODATA).
                if found.is_empty() && entry.ports.iter().any(matches) {
                    return Some(Lookup::NoData);
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        let weight = u16::try_from(100 / found.len()).unwrap_or(1).max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (port, target, ips) in found {
            answers.push(Record {
                name: None,
                data: RecordData::Srv {
                    port,
                    weight,
                    target: target.clone(),
                },
            });
            for ip in ips {
                let rec = Record {
                    name: Some(target.clone()),
                    data: address(ip),
                };
                if !additionals.contains(&rec) {
                    additionals.push(rec);
                }
            }
        }
        Some(Lookup::Answer {
            answers,
            additionals,
        })
    }
}

fn answer(answers: Vec<Record>) -> Lookup {
    Lookup::Answer {
        answers,
        additionals: Vec::new(),
    }
}

fn address(ip: IpAddr) -> RecordData {
    match ip {
        IpAddr::V4(ip) => RecordData::A(ip),
        IpAddr::V6(ip) => RecordData::Aaaa(ip),
    }
}

/// A/AAAA records of `ips` for the question type (NODATA when none is of its family).
fn address_answer(ips: &[IpAddr], qtype: QueryType) -> Lookup {
    let wanted = |ip: &IpAddr| match qtype {
        QueryType::A => ip.is_ipv4(),
        QueryType::Aaaa => ip.is_ipv6(),
        QueryType::Any => true,
        _ => false,
    };
    let answers: Vec<Record> = ips
        .iter()
        .filter(|ip| wanted(ip))
        .map(|ip| Record {
            name: None,
            data: address(*ip),
        })
        .collect();
    if answers.is_empty() {
        Lookup::NoData
    } else {
        answer(answers)
    }
}

/// Lowercase, without the final dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `10.1.2.3` → `10-1-2-3`; `fd00::1` → `fd00--1` (as CoreDNS names endpoints and pods).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The reverse of [`dashed`]: `10-1-2-3` or `fd00--1`.
fn undashed(label: &str) -> Option<IpAddr> {
    if label.bytes().filter(|b| *b == b'-').count() == 3 && !label.contains("--") {
        return label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4);
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`) names.
fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest
            .split('.')
            .rev()
            .map(|o| o.parse::<u8>().ok())
            .collect::<Option<_>>()?;
        let o: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .rev()
        .map(|n| {
            if n.len() == 1 {
                u8::from_str_radix(n, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.chunks(2).enumerate() {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn port(name: &str, port: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn slice(ns: &str, svc: &str, endpoints: Vec<(&str, Option<&str>, bool)>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-abc")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .into_iter()
                .map(|(ip, host, ready)| SliceEndpoint {
                    addresses: vec![ip.into()],
                    hostname: host.map(String::from),
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn index() -> Index {
        let services = vec![
            svc(
                "default",
                "web",
                ServiceSpec {
                    cluster_ip: Some("10.43.0.10".into()),
                    cluster_ips: Some(vec!["10.43.0.10".into()]),
                    ports: Some(vec![port("http", 80), port("", 81)]),
                    ..Default::default()
                },
            ),
            svc(
                "default",
                "db",
                ServiceSpec {
                    cluster_ip: Some("None".into()),
                    ports: Some(vec![port("http", 8080)]),
                    ..Default::default()
                },
            ),
            svc(
                "other",
                "ext",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("example.test.".into()),
                    ..Default::default()
                },
            ),
            svc(
                "default",
                "v6",
                ServiceSpec {
                    cluster_ip: Some("fd00::a".into()),
                    ..Default::default()
                },
            ),
        ];
        let slices = vec![slice(
            "default",
            "db",
            vec![
                ("10.42.0.5", Some("db-0"), true),
                ("10.42.0.6", None, true),
                ("10.42.0.7", Some("db-2"), false),
            ],
        )];
        Index::build("cluster.local.", &services, &slices)
    }

    fn a(ip: &str) -> Record {
        Record {
            name: None,
            data: RecordData::A(ip.parse().expect("ip")),
        }
    }

    #[test]
    fn cluster_ip_services_answer_their_address_per_family() {
        let i = index();
        assert_eq!(
            i.lookup("web.default.svc.cluster.local", QueryType::A),
            answer(vec![a("10.43.0.10")])
        );
        assert_eq!(
            i.lookup("web.default.svc.cluster.local", QueryType::Aaaa),
            Lookup::NoData
        );
        assert_eq!(
            i.lookup("v6.default.svc.cluster.local", QueryType::Aaaa),
            answer(vec![Record {
                name: None,
                data: RecordData::Aaaa("fd00::a".parse().expect("ip"))
            }])
        );
        assert_eq!(
            i.lookup("v6.default.svc.cluster.local", QueryType::A),
            Lookup::NoData
        );
        assert_eq!(
            i.lookup("web.default.svc.cluster.local", QueryType::Other),
            Lookup::NoData
        );
    }

    #[test]
    fn unknown_names_in_the_domain_do_not_exist_and_others_are_forwarded() {
        let i = index();
        for name in [
            "nope.default.svc.cluster.local",
            "web.nope.svc.cluster.local",
            "x.y.z.cluster.local",
            "google.com.default.svc.cluster.local",
            "a.b.web.default.svc.cluster.local",
            "nope.web.default.svc.cluster.local",
            "_x._tcp.web.default.svc.cluster.local",
            "_http._udp.web.default.svc.cluster.local",
            "999-1-1-1.default.pod.cluster.local",
            "nope.svc.cluster.local",
        ] {
            assert_eq!(i.lookup(name, QueryType::A), Lookup::NxDomain, "{name}");
        }
        assert_eq!(
            i.lookup("default.svc.cluster.local", QueryType::A),
            Lookup::NoData
        );
        assert_eq!(i.lookup("svc.cluster.local", QueryType::A), Lookup::NoData);
        assert_eq!(i.lookup("cluster.local", QueryType::A), Lookup::NoData);
        assert!(matches!(
            i.lookup("cluster.local", QueryType::Soa),
            Lookup::Answer { .. }
        ));
        assert_eq!(i.lookup("example.com", QueryType::A), Lookup::Forward);
        assert_eq!(i.lookup("xcluster.local", QueryType::A), Lookup::Forward);
        assert_eq!(i.lookup("local", QueryType::A), Lookup::Forward);
        let not_ready = Index::not_ready("cluster.local");
        assert_eq!(
            not_ready.lookup("web.default.svc.cluster.local", QueryType::A),
            Lookup::NotReady
        );
        assert_eq!(
            not_ready.lookup("example.com", QueryType::A),
            Lookup::Forward
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_their_hostnames() {
        let i = index();
        assert_eq!(
            i.lookup("db.default.svc.cluster.local", QueryType::A),
            answer(vec![a("10.42.0.5"), a("10.42.0.6")])
        );
        assert_eq!(
            i.lookup("db-0.db.default.svc.cluster.local", QueryType::A),
            answer(vec![a("10.42.0.5")])
        );
        assert_eq!(
            i.lookup("10-42-0-6.db.default.svc.cluster.local", QueryType::A),
            answer(vec![a("10.42.0.6")])
        );
        assert_eq!(
            i.lookup("db-2.db.default.svc.cluster.local", QueryType::A),
            Lookup::NxDomain
        );
        // publishNotReadyAddresses includes the not-ready one.
        let mut services = vec![svc(
            "default",
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                ..Default::default()
            },
        )];
        let slices = vec![slice(
            "default",
            "db",
            vec![("10.42.0.7", Some("db-2"), false)],
        )];
        let i2 = Index::build("cluster.local", &services, &slices);
        assert_eq!(
            i2.lookup("db-2.db.default.svc.cluster.local", QueryType::A),
            answer(vec![a("10.42.0.7")])
        );
        services.clear();
        let i3 = Index::build("cluster.local", &services, &slices);
        assert_eq!(
            i3.lookup("db.default.svc.cluster.local", QueryType::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn srv_records_point_at_the_service_or_each_endpoint() {
        let i = index();
        let Lookup::Answer {
            answers,
            additionals,
        } = i.lookup("_http._tcp.web.default.svc.cluster.local", QueryType::Srv)
        else {
            panic!("no SRV answer");
        };
        assert_eq!(
            answers,
            vec![Record {
                name: None,
                data: RecordData::Srv {
                    port: 80,
                    weight: 100,
                    target: "web.default.svc.cluster.local".into()
                }
            }]
        );
        assert_eq!(
            additionals,
            vec![Record {
                name: Some("web.default.svc.cluster.local".into()),
                data: RecordData::A("10.43.0.10".parse().expect("ip"))
            }]
        );
        let Lookup::Answer { answers, .. } =
            i.lookup("_http._tcp.db.default.svc.cluster.local", QueryType::Srv)
        else {
            panic!("no SRV answer");
        };
        let targets: Vec<_> = answers
            .iter()
            .map(|r| match &r.data {
                RecordData::Srv { port, target, .. } => (*port, target.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                (8080, "db-0.db.default.svc.cluster.local".to_string()),
                (8080, "10-42-0-6.db.default.svc.cluster.local".to_string())
            ]
        );
        assert_eq!(
            i.lookup("_http._tcp.web.default.svc.cluster.local", QueryType::A),
            Lookup::NoData
        );
        // SRV on the Service's name: every port.
        let Lookup::Answer { answers, .. } =
            i.lookup("web.default.svc.cluster.local", QueryType::Srv)
        else {
            panic!("no SRV answer");
        };
        assert_eq!(answers.len(), 2);
    }

    #[test]
    fn external_names_pods_and_reverse_names() {
        let i = index();
        assert_eq!(
            i.lookup("ext.other.svc.cluster.local", QueryType::A),
            answer(vec![Record {
                name: None,
                data: RecordData::Cname("example.test".into())
            }])
        );
        assert_eq!(
            i.lookup("10-42-0-9.default.pod.cluster.local", QueryType::A),
            answer(vec![a("10.42.0.9")])
        );
        assert_eq!(
            i.lookup("fd00--9.default.pod.cluster.local", QueryType::Aaaa),
            answer(vec![Record {
                name: None,
                data: RecordData::Aaaa("fd00::9".parse().expect("ip"))
            }])
        );
        assert_eq!(
            i.lookup("10.0.43.10.in-addr.arpa", QueryType::Ptr),
            answer(vec![Record {
                name: None,
                data: RecordData::Ptr("web.default.svc.cluster.local".into())
            }])
        );
        assert_eq!(
            i.lookup("5.0.42.10.in-addr.arpa", QueryType::Ptr),
            answer(vec![Record {
                name: None,
                data: RecordData::Ptr("db-0.db.default.svc.cluster.local".into())
            }])
        );
        assert_eq!(
            i.lookup("1.1.1.10.in-addr.arpa", QueryType::Ptr),
            Lookup::Forward
        );
        assert_eq!(
            i.lookup("1.1.1.in-addr.arpa", QueryType::Ptr),
            Lookup::Forward
        );
        let v6 = "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(
            i.lookup(v6, QueryType::Ptr),
            answer(vec![Record {
                name: None,
                data: RecordData::Ptr("v6.default.svc.cluster.local".into())
            }])
        );
    }
}
