//! Cluster DNS end to end (root): the node's DNS server on its bridge gateway answers A and SRV
//! for a ClusterIP Service, the endpoint set and per-pod hostnames of a headless Service, a
//! CNAME for an ExternalName Service, NXDOMAIN with the SOA for unknown names, FORMERR (or
//! silence) for garbage and keeps answering, TCP as well as UDP, and forwards other names to
//! `--dns-upstream` (a fake resolver on 127.0.0.1 in this test: no query leaves the machine).
//! Inside a busybox pod: its resolv.conf has the search path and `ndots:5`, `nslookup` of a
//! Service's FQDN and `wget http://web` (short name through the search path) work.

mod common;

use common::pods::{PodCluster, ProxyGuard};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The one name the fake upstream knows, and its address (documentation range: never
/// contacted, only returned).
const OUTSIDE: &str = "outside.example.";
const OUTSIDE_IP: &str = "192.0.2.7";

/// A resolver on 127.0.0.1 that answers `outside.example` A and NXDOMAIN for the rest,
/// counting the questions it got; it stops when dropped.
struct FakeUpstream {
    addr: SocketAddr,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(question) = q.query().cloned() else {
                    continue;
                };
                a.lock()
                    .expect("lock")
                    .push(question.name().to_ascii().to_lowercase());
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .add_query(question.clone());
                if question.name().to_ascii().eq_ignore_ascii_case(OUTSIDE)
                    && question.query_type() == RecordType::A
                {
                    r.add_answer(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A(A(OUTSIDE_IP.parse().expect("ip"))),
                    ));
                } else if !question.name().to_ascii().eq_ignore_ascii_case(OUTSIDE) {
                    r.set_response_code(ResponseCode::NXDomain);
                }
                let _ = socket.send_to(&r.to_vec().expect("encode"), peer);
            }
        });
        FakeUpstream { addr, asked, stop }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn query_bytes(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    m.to_vec().expect("encode")
}

/// One question over UDP; the answer, or `None` after a second of silence.
fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    s.send_to(&query_bytes(name, rtype, 7), server).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// One question over TCP.
fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut s =
        std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2)).expect("TCP connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let q = query_bytes(name, rtype, 9);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("message");
    Message::from_vec(&buf).expect("decode")
}

fn addresses(m: &Message) -> BTreeSet<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::A(a)) => Some(IpAddr::V4(a.0)),
            Some(RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn cluster_dns_answers_services_pods_and_forwards_the_rest() {
    if !berth_node::host::is_root() {
        eprintln!("skipped: the node's DNS server and pods need root");
        return;
    }
    let upstream = FakeUpstream::start();
    let n = std::process::id() % 200 + 20;
    let service_cidr = format!("10.184.{}.0/24", n + 30);
    let bridge = format!("btdns{n}");
    let _guard = ProxyGuard {
        table: format!("berth-{bridge}"),
        service_cidr: service_cidr.clone(),
    };
    let upstream_arg = upstream.addr.to_string();
    let Some(pc) = PodCluster::start_with_args(
        "dns-node",
        184,
        "btdns",
        "crun",
        &[
            "--service-cidr",
            &service_cidr,
            "--dns-upstream",
            &upstream_arg,
        ],
    ) else {
        return;
    };
    assert_eq!(pc.bridge, bridge);
    let dns: SocketAddr = (
        format!("10.184.{n}.1").parse::<IpAddr>().expect("gateway"),
        53,
    )
        .into();
    let c = &pc.c;
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:latest
        command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: db
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, labels: {app: db}}
spec:
  hostname: db-1
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: db
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: outside.example
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sleep", "3600"]
"#;
    c.kubectl_stdin(&["apply", "-f", "-"], manifest);
    let ready = |svc: &str, count: usize| {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ]);
        out.split_whitespace().filter(|s| *s == "true").count() == count
    };
    c.eventually(
        "web and db endpoints ready",
        Duration::from_secs(90),
        || ready("web", 2) && ready("db", 2),
    );
    c.eventually("the client pod runs", Duration::from_secs(60), || {
        c.kubectl(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"])
            .trim()
            == "Running"
    });
    let cluster_ip: IpAddr = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .parse()
        .expect("cluster IP");
    let pod_ip = |p: &str| -> IpAddr {
        c.kubectl(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"])
            .trim()
            .parse()
            .expect("pod IP")
    };
    let (db0, db1) = (pod_ip("db-0"), pod_ip("db-1"));

    // A for a ClusterIP Service (the index follows the API within moments).
    c.eventually("web's A record", Duration::from_secs(10), || {
        ask(dns, "web.default.svc.cluster.local.", RecordType::A)
            .is_some_and(|m| addresses(&m) == BTreeSet::from([cluster_ip]))
    });
    let m = ask(dns, "web.default.svc.cluster.local.", RecordType::A).expect("answer");
    assert!(m.authoritative());
    assert_eq!(m.answers()[0].ttl(), 5);
    // No AAAA for an IPv4 Service: NOERROR, no answers.
    let m = ask(dns, "web.default.svc.cluster.local.", RecordType::AAAA).expect("answer");
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());

    // SRV for the named port.
    let m = ask(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .expect("srv");
    let srv: Vec<(u16, String)> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::SRV(s)) => Some((s.port(), s.target().to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(
        srv,
        vec![(80, "web.default.svc.cluster.local.".to_string())]
    );

    // Headless: every ready endpoint, per-pod hostnames, SRV per endpoint.
    c.eventually("db's endpoint set", Duration::from_secs(10), || {
        ask(dns, "db.default.svc.cluster.local.", RecordType::A)
            .is_some_and(|m| addresses(&m) == BTreeSet::from([db0, db1]))
    });
    let m = ask(dns, "db-0.db.default.svc.cluster.local.", RecordType::A).expect("answer");
    assert_eq!(addresses(&m), BTreeSet::from([db0]));
    let m = ask(
        dns,
        "_http._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .expect("srv");
    let targets: BTreeSet<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::SRV(s)) => Some(format!("{}:{}", s.target().to_ascii(), s.port())),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from([
            "db-0.db.default.svc.cluster.local.:8080".to_string(),
            "db-1.db.default.svc.cluster.local.:8080".to_string()
        ])
    );

    // ExternalName: a CNAME.
    let m = ask(dns, "ext.default.svc.cluster.local.", RecordType::A).expect("answer");
    match m.answers().first().and_then(|r| r.data()) {
        Some(RData::CNAME(n)) => assert_eq!(n.0.to_ascii(), OUTSIDE),
        other => panic!("no CNAME: {other:?}"),
    }

    // Unknown names in the domain: NXDOMAIN with the SOA.
    let m = ask(dns, "nope.default.svc.cluster.local.", RecordType::A).expect("answer");
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        m.name_servers().first().map(|r| r.record_type()),
        Some(RecordType::SOA)
    );

    // Garbage: FORMERR or silence, and the server keeps answering.
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut junk = query_bytes("web.default.svc.cluster.local.", RecordType::A, 99);
    junk.truncate(junk.len() - 2);
    for packet in [
        &b"\x00"[..],
        b"hello world, not DNS",
        &junk,
        &[0xffu8; 600][..],
    ] {
        s.send_to(packet, dns).expect("send garbage");
    }
    // Whatever comes back is an error header: FORMERR, or NOTIMP for an opcode we do not
    // serve (the text's second byte pair reads as one).
    let mut buf = [0u8; 512];
    while let Ok(n) = s.recv(&mut buf) {
        assert!(
            n >= 12 && buf[2] & 0x80 != 0,
            "not a response: {:?}",
            &buf[..n]
        );
        assert!(matches!(buf[3] & 0x0f, 1 | 4), "rcode {}", buf[3] & 0x0f);
    }
    let m = ask(dns, "web.default.svc.cluster.local.", RecordType::A).expect("still answers");
    assert_eq!(addresses(&m), BTreeSet::from([cluster_ip]));

    // TCP.
    let m = ask_tcp(dns, "db.default.svc.cluster.local.", RecordType::A);
    assert_eq!(addresses(&m), BTreeSet::from([db0, db1]));

    // Other names go to the upstream.
    let m = ask(dns, OUTSIDE, RecordType::A).expect("forwarded answer");
    assert_eq!(
        addresses(&m),
        BTreeSet::from([OUTSIDE_IP.parse::<IpAddr>().expect("ip")])
    );
    assert!(upstream
        .asked
        .lock()
        .expect("lock")
        .contains(&OUTSIDE.to_string()));

    // Inside a pod: the search path, ndots and the node's DNS server.
    let resolv = c.kubectl(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(
        resolv.contains(&format!("nameserver {}", dns.ip())),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = c.kubectl(&["exec", "db-0", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{db0}\tdb-0.db.default.svc.cluster.local\tdb-0")),
        "{hosts}"
    );
    let out = c.kubectl(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(out.contains(&cluster_ip.to_string()), "{out}");
    // The short name through the search path, to the Service.
    c.eventually(
        "wget http://web from a pod",
        Duration::from_secs(20),
        || {
            // (busybox 1.35's `wget -T` crashes: `timeout` bounds it instead.)
            let out = c.kubectl_output(
                &[
                    "exec",
                    "client",
                    "--",
                    "timeout",
                    "5",
                    "wget",
                    "-qO-",
                    "http://web/hostname",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout).starts_with("web-")
        },
    );
    // A name outside the cluster from the pod: through the node's server to the upstream.
    let out = c.kubectl(&["exec", "client", "--", "nslookup", "outside.example"]);
    assert!(out.contains(OUTSIDE_IP), "{out}");
}
