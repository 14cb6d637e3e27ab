//! One DNS message in, one reply out: decodes a query (hickory-proto's wire format), looks
//! its question up in the [`Index`] and encodes the answer — or says it must be forwarded.
//! Garbage never panics: too short or a response → dropped; undecodable → FORMERR; other
//! opcodes → NOTIMP; EDNS versions above 0 → BADVERS. Answers too big for the client's UDP
//! size are sent empty with the TC bit, so the client asks again over TCP.

use crate::index::{Index, Lookup, QueryType, Record, RecordData};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// The TTL of every answer (CoreDNS's default for the cluster zone).
pub const TTL: u32 = 5;
/// The largest UDP answer we send (the DNS flag day's recommendation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
const HEADER_LEN: usize = 12;

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Send(Vec<u8>),
    /// Relay the message to the upstream resolvers.
    Forward,
    /// Say nothing (a response, or too short to answer).
    Drop,
}

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers one message from `index`.
pub fn respond(index: &Index, packet: &[u8], transport: Transport) -> Reply {
    if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
        return Reply::Drop;
    }
    let opcode = (packet[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Reply::Send(error_header(packet, ResponseCode::NotImp));
    }
    let Ok(query) = Message::from_vec(packet) else {
        return Reply::Send(error_header(packet, ResponseCode::FormErr));
    };
    let [question] = query.queries() else {
        return Reply::Send(error_header(packet, ResponseCode::FormErr));
    };
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .add_query(question.clone());
    let client_payload = match query.extensions() {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
            reply.set_edns(ours);
            if edns.version() > 0 {
                reply.set_response_code(ResponseCode::BADVERS);
                return encode(reply, transport, 512);
            }
            edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)
        }
        None => 512,
    };
    if question.query_class() != DNSClass::IN {
        return Reply::Forward;
    }
    let qtype = match question.query_type() {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::PTR => QueryType::Ptr,
        RecordType::CNAME => QueryType::Cname,
        RecordType::SOA => QueryType::Soa,
        RecordType::NS => QueryType::Ns,
        RecordType::ANY => QueryType::Any,
        _ => QueryType::Other,
    };
    let name = question.name().to_lowercase().to_ascii();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let qname = question.name();
    match index.lookup(name, qtype) {
        Lookup::Forward => return Reply::Forward,
        Lookup::NotReady => {
            reply.set_response_code(ResponseCode::ServFail);
        }
        Lookup::NxDomain => {
            reply
                .set_authoritative(true)
                .set_response_code(ResponseCode::NXDomain);
            if let Some(soa) = soa(index) {
                reply.add_name_server(soa);
            }
        }
        Lookup::NoData => {
            reply.set_authoritative(true);
            if let Some(soa) = soa(index) {
                reply.add_name_server(soa);
            }
        }
        Lookup::Answer {
            answers,
            additionals,
        } => {
            reply.set_authoritative(true);
            for r in &answers {
                match record(index, qname, r) {
                    Some(r) => reply.add_answer(r),
                    None => return Reply::Send(error_header(packet, ResponseCode::ServFail)),
                };
            }
            for r in &additionals {
                if let Some(r) = record(index, qname, r) {
                    reply.add_additional(r);
                }
            }
        }
    }
    encode(reply, transport, client_payload)
}

/// Encodes `reply`; over UDP, an answer bigger than `limit` goes out empty with TC set.
fn encode(mut reply: Message, transport: Transport, limit: u16) -> Reply {
    let Ok(bytes) = reply.to_vec() else {
        return Reply::Send(server_failure(&reply));
    };
    if transport == Transport::Tcp || bytes.len() <= usize::from(limit) {
        return Reply::Send(bytes);
    }
    reply.take_answers();
    reply.take_name_servers();
    reply.take_additionals();
    reply.set_truncated(true);
    match reply.to_vec() {
        Ok(bytes) => Reply::Send(bytes),
        Err(_) => Reply::Send(server_failure(&reply)),
    }
}

/// A bare SERVFAIL for a reply that could not be encoded.
fn server_failure(reply: &Message) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(&reply.id().to_be_bytes());
    header[2] = 0x80;
    header[3] = 0x80 | 2;
    header.to_vec()
}

/// A header-only reply to `packet` with `code` (for messages we cannot or will not read).
pub fn error_header(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(&packet[..2]);
    // QR, the query's opcode and RD; RA; the code's low 4 bits.
    header[2] = 0x80 | (packet[2] & 0x79);
    header[3] = 0x80 | (u16::from(code) & 0x0f) as u8;
    header.to_vec()
}

/// The zone's SOA, as CoreDNS words it (`ns.dns.<domain>`, `hostmaster.<domain>`).
fn soa(index: &Index) -> Option<hickory_proto::rr::Record> {
    let zone = fqdn(index.domain())?;
    let data = soa_data(index)?;
    Some(hickory_proto::rr::Record::from_rdata(zone, TTL, data))
}

fn soa_data(index: &Index) -> Option<RData> {
    let domain = index.domain();
    Some(RData::SOA(SOA::new(
        fqdn(&format!("ns.dns.{domain}"))?,
        fqdn(&format!("hostmaster.{domain}"))?,
        1,
        7200,
        1800,
        86400,
        TTL,
    )))
}

/// A name from our own text (lowercase, no final dot).
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn record(index: &Index, qname: &Name, r: &Record) -> Option<hickory_proto::rr::Record> {
    let owner = match &r.name {
        Some(n) => fqdn(n)?,
        None => qname.clone(),
    };
    let data = match &r.data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Srv {
            port,
            weight,
            target,
        } => RData::SRV(SRV::new(0, *weight, *port, fqdn(target)?)),
        RecordData::Cname(target) => RData::CNAME(CNAME(fqdn(target)?)),
        RecordData::Ptr(target) => RData::PTR(PTR(fqdn(target)?)),
        RecordData::Ns(target) => RData::NS(NS(fqdn(target)?)),
        RecordData::Soa => soa_data(index)?,
    };
    Some(hickory_proto::rr::Record::from_rdata(owner, TTL, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    fn index() -> Index {
        use k8s_openapi::api::core::v1::{Service, ServiceSpec};
        let svc = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some("default".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.43.0.10".into()),
                ..Default::default()
            }),
            status: None,
        };
        Index::build("cluster.local", [&svc], [])
    }

    fn reply(index: &Index, packet: &[u8], t: Transport) -> Message {
        match respond(index, packet, t) {
            Reply::Send(b) => Message::from_vec(&b).expect("decodable reply"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_keep_the_question_and_its_spelling() {
        let i = index();
        let m = reply(
            &i,
            &query("Web.Default.svc.cluster.local.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(m.id(), 4242);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(m.answers().len(), 1);
        assert_eq!(m.answers()[0].ttl(), TTL);
        assert_eq!(
            m.answers()[0].name().to_ascii(),
            "Web.Default.svc.cluster.local."
        );
        assert_eq!(
            m.answers()[0].data(),
            Some(&RData::A(A("10.43.0.10".parse().expect("ip"))))
        );
    }

    #[test]
    fn missing_names_carry_the_soa() {
        let i = index();
        let m = reply(
            &i,
            &query("nope.default.svc.cluster.local.", RecordType::A, Some(1232)),
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.name_servers().len(), 1);
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
        assert!(m.extensions().is_some());
        let m = reply(
            &i,
            &query("web.default.svc.cluster.local.", RecordType::AAAA, None),
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        assert_eq!(m.name_servers().len(), 1);
    }

    #[test]
    fn other_names_are_forwarded() {
        let i = index();
        assert_eq!(
            respond(
                &i,
                &query("example.com.", RecordType::A, None),
                Transport::Udp
            ),
            Reply::Forward
        );
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let i = index();
        assert_eq!(respond(&i, b"", Transport::Udp), Reply::Drop);
        assert_eq!(respond(&i, b"\x01\x02\x03", Transport::Udp), Reply::Drop);
        let mut bad = query("web.default.svc.cluster.local.", RecordType::A, None);
        bad.truncate(bad.len() - 3);
        let m = reply(&i, &bad, Transport::Udp);
        assert_eq!(m.id(), 4242);
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        // A response is never answered (no loops between servers).
        let mut resp = query("web.default.svc.cluster.local.", RecordType::A, None);
        resp[2] |= 0x80;
        assert_eq!(respond(&i, &resp, Transport::Udp), Reply::Drop);
        // A compression pointer loop.
        let mut lp = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            reply(&i, &lp, Transport::Udp).response_code(),
            ResponseCode::FormErr
        );
        // Other opcodes.
        let mut notify = query("web.default.svc.cluster.local.", RecordType::A, None);
        notify[2] |= 4 << 3;
        assert_eq!(
            reply(&i, &notify, Transport::Udp).response_code(),
            ResponseCode::NotImp
        );
        // Every prefix and some bit flips of a valid query: no panic.
        let q = query(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            Some(4096),
        );
        for n in 0..q.len() {
            let _ = respond(&i, &q[..n], Transport::Udp);
            for bit in 0..8 {
                let mut f = q.clone();
                f[n] ^= 1 << bit;
                let _ = respond(&i, &f, Transport::Tcp);
            }
        }
    }

    #[test]
    fn big_udp_answers_are_truncated_and_whole_over_tcp() {
        use k8s_openapi::api::core::v1::{Service, ServiceSpec};
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
        let svc = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some("default".into()),
                name: Some("many".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..Default::default()
            }),
            status: None,
        };
        let slice = EndpointSlice {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some("default".into()),
                name: Some("many-x".into()),
                labels: Some(
                    [("kubernetes.io/service-name".to_string(), "many".to_string())].into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: (0..60)
                .map(|n| Endpoint {
                    addresses: vec![format!("10.42.1.{n}")],
                    ..Default::default()
                })
                .collect(),
            ports: None,
        };
        let i = Index::build("cluster.local", [&svc], [&slice]);
        let q = query("many.default.svc.cluster.local.", RecordType::A, None);
        let m = reply(&i, &q, Transport::Udp);
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        let m = reply(&i, &q, Transport::Tcp);
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 60);
        let q = query("many.default.svc.cluster.local.", RecordType::A, Some(4096));
        let m = reply(&i, &q, Transport::Udp);
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 60);
    }
}
