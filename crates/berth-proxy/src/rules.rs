//! The nftables ruleset of the service proxy as data: what the table should hold for a set
//! of service ports ([`Ruleset::build`]), and the one atomic `nft` script that moves the
//! kernel from what was programmed to that ([`Ruleset::script`]), rewriting only the chains
//! and map elements that changed (as upstream's nftables proxier does).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The mark bit asking the postrouting chain to masquerade (kube-proxy's).
const MASQUERADE_MARK: &str = "0x4000";
/// The chains every table has; the rest are per service port or endpoint.
pub const BASE_CHAINS: &[&str] = &[
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "filter-input",
    "filter-forward",
    "filter-output",
    "services",
    "masquerading",
    "mark-for-masquerade",
    "reject-chain",
];
const MAPS: &[(&str, &str)] = &[
    (
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    ("service-nodeports", "inet_proto . inet_service : verdict"),
    (
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        "no-endpoint-nodeports",
        "inet_proto . inet_service : verdict",
    ),
];

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (for `externalTrafficPolicy: Local`).
    pub local: bool,
}

/// One port of a Service with its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.protocol, self.port_name
        )
    }

    /// The endpoints that take new connections: the ready ones, or if there are none the
    /// serving terminating ones (upstream's ProxyTerminatingEndpoints).
    pub fn usable(&self, only_local: bool) -> Vec<&Endpoint> {
        let pick = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<&Endpoint> {
            self.endpoints
                .iter()
                .filter(|e| (!only_local || e.local) && f(e))
                .collect()
        };
        let ready = pick(&|e| e.ready);
        if !ready.is_empty() {
            return ready;
        }
        pick(&|e| e.serving && e.terminating)
    }
}

/// A short stable hash (FNV-1a, base32) so chain names are unique and bounded.
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8)
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

/// Where a service port's traffic is DNATed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// `tcp` or `udp` (nftables' words).
    pub protocol: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Everything the table holds besides its fixed base chains.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    /// Per-service-port and per-endpoint chains: name → rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Map name → element key → verdict.
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Session affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// The node's addresses NodePorts answer on.
    pub nodeport_ips: BTreeSet<Ipv4Addr>,
    /// Every endpoint some chain DNATs to.
    pub targets: BTreeSet<Target>,
}

impl Ruleset {
    /// The ruleset for `ports` on a node with pod CIDR `pod_cidr` and NodePort addresses
    /// `node_ips`.
    pub fn build(ports: &[ServicePort], node_ips: &[Ipv4Addr], pod_cidr: &str) -> Ruleset {
        let mut r = Ruleset {
            nodeport_ips: node_ips.iter().copied().collect(),
            ..Default::default()
        };
        for (m, _) in MAPS {
            r.maps.insert(m.to_string(), BTreeMap::new());
        }
        for sp in ports {
            r.add_service_port(sp, pod_cidr);
        }
        r
    }

    fn map(&mut self, name: &str) -> &mut BTreeMap<String, String> {
        self.maps.entry(name.to_string()).or_default()
    }

    fn add_service_port(&mut self, sp: &ServicePort, pod_cidr: &str) {
        let id = sp.id();
        let h = hash(&id);
        let proto = &sp.protocol;
        let service_key = format!("{} . {} . {}", sp.cluster_ip, proto, sp.port);
        let usable = sp.usable(false);
        let svc_chain = format!("service-{h}-{id}");
        if usable.is_empty() {
            self.map("no-endpoint-services")
                .insert(service_key, "goto reject-chain".into());
        } else {
            let mut rules = vec![format!("ip saddr != {pod_cidr} jump mark-for-masquerade")];
            let mut targets = Vec::new();
            for ep in &usable {
                let (ep_chain, set) = self.endpoint_chain(sp, &id, ep);
                if let Some(set) = set {
                    rules.push(format!("ip saddr @{set} goto {ep_chain}"));
                }
                targets.push(ep_chain);
            }
            rules.push(balance(&targets));
            self.chains.insert(svc_chain.clone(), rules);
            self.map("service-ips")
                .insert(service_key, format!("goto {svc_chain}"));
        }
        let Some(node_port) = sp.node_port else {
            return;
        };
        let np_key = format!("{proto} . {node_port}");
        let external = if sp.external_local {
            sp.usable(true)
        } else {
            usable.clone()
        };
        if usable.is_empty() {
            self.map("no-endpoint-nodeports")
                .insert(np_key, "goto reject-chain".into());
            return;
        }
        let ext_chain = format!("external-{h}-{id}");
        let rules = if sp.external_local {
            // Traffic from the node itself may use every endpoint (as upstream); other
            // traffic only local ones, keeping the client's address (no masquerade).
            let mut rules = vec![
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {svc_chain}"),
            ];
            if external.is_empty() {
                rules.push("drop".into());
            } else {
                let targets: Vec<String> = external
                    .iter()
                    .map(|ep| self.endpoint_chain(sp, &id, ep).0)
                    .collect();
                rules.push(balance(&targets));
            }
            rules
        } else {
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {svc_chain}"),
            ]
        };
        self.chains.insert(ext_chain.clone(), rules);
        self.map("service-nodeports")
            .insert(np_key, format!("goto {ext_chain}"));
    }

    /// Adds the chain that DNATs to `ep` (and its affinity set); returns their names.
    fn endpoint_chain(
        &mut self,
        sp: &ServicePort,
        id: &str,
        ep: &Endpoint,
    ) -> (String, Option<String>) {
        let ep_id = format!("{id}__{}/{}", ep.ip, ep.port);
        let ep_chain = format!("endpoint-{}-{ep_id}", hash(&ep_id));
        // Hairpin: a pod reaching itself through its Service.
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        let mut affinity = None;
        if let Some(timeout) = sp.affinity_timeout {
            let set = format!("affinity-{}-{ep_id}", hash(&ep_id));
            rules.push(format!("update @{set} {{ ip saddr }}"));
            self.affinity_sets.insert(set.clone(), timeout);
            affinity = Some(set);
        }
        rules.push(format!(
            "meta l4proto {} dnat to {}:{}",
            sp.protocol, ep.ip, ep.port
        ));
        self.targets.insert(Target {
            protocol: sp.protocol.clone(),
            ip: ep.ip,
            port: ep.port,
        });
        self.chains.insert(ep_chain.clone(), rules);
        (ep_chain, affinity)
    }

    /// The `nft -f -` script taking the table `table` from `programmed` (`None`: unknown,
    /// e.g. after a restart; `existing` then lists the chains and sets found in the kernel)
    /// to `self`, in one transaction.
    pub fn script(
        &self,
        table: &str,
        programmed: Option<&Ruleset>,
        existing: &KernelTable,
    ) -> String {
        let mut s = String::new();
        let t = format!("ip {table}");
        let full = programmed.is_none();
        let empty = Ruleset::default();
        let old = programmed.unwrap_or(&empty);
        if full {
            base(&mut s, &t);
        }
        for (set, timeout) in &self.affinity_sets {
            if old.affinity_sets.get(set) != Some(timeout) {
                let _ = writeln!(s, "add set {t} {set} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}");
            }
        }
        if full || old.nodeport_ips != self.nodeport_ips {
            let _ = writeln!(s, "flush set {t} nodeport-ips");
            if !self.nodeport_ips.is_empty() {
                let ips: Vec<String> = self.nodeport_ips.iter().map(|i| i.to_string()).collect();
                let _ = writeln!(s, "add element {t} nodeport-ips {{ {} }}", ips.join(", "));
            }
        }
        let changed: Vec<(&String, &Vec<String>)> = self
            .chains
            .iter()
            .filter(|(name, rules)| full || old.chains.get(*name) != Some(*rules))
            .collect();
        // Every chain exists before any rule jumps to it.
        for (name, _) in &changed {
            let _ = writeln!(s, "add chain {t} {name}");
        }
        for (name, rules) in changed {
            let _ = writeln!(s, "flush chain {t} {name}");
            for r in rules {
                let _ = writeln!(s, "add rule {t} {name} {r}");
            }
        }
        for (map, elements) in &self.maps {
            let before = old.maps.get(map);
            if full {
                let _ = writeln!(s, "flush map {t} {map}");
            } else {
                for (k, v) in before.into_iter().flatten() {
                    if elements.get(k) != Some(v) {
                        let _ = writeln!(s, "delete element {t} {map} {{ {k} }}");
                    }
                }
            }
            for (k, v) in elements {
                if full || before.and_then(|b| b.get(k)) != Some(v) {
                    let _ = writeln!(s, "add element {t} {map} {{ {k} : {v} }}");
                }
            }
        }
        // Chains and sets nothing refers to any more go last.
        let stale_chains: BTreeSet<&String> = if full {
            existing
                .chains
                .iter()
                .filter(|c| !BASE_CHAINS.contains(&c.as_str()))
                .collect()
        } else {
            old.chains.keys().collect()
        };
        // Emptied first: a stale chain may still jump to another stale one (a Service's
        // chain to its endpoints' chains), and a chain is deleted only once nothing refers to it.
        let stale_chains: Vec<&String> = stale_chains
            .into_iter()
            .filter(|c| !self.chains.contains_key(*c))
            .collect();
        for c in &stale_chains {
            let _ = writeln!(s, "flush chain {t} {c}");
        }
        for c in &stale_chains {
            let _ = writeln!(s, "delete chain {t} {c}");
        }
        let stale_sets: BTreeSet<&String> = if full {
            existing
                .sets
                .iter()
                .filter(|n| n.starts_with("affinity-"))
                .collect()
        } else {
            old.affinity_sets.keys().collect()
        };
        for set in stale_sets {
            if !self.affinity_sets.contains_key(set) {
                let _ = writeln!(s, "delete set {t} {set}");
            }
        }
        s
    }
}

/// `numgen random mod N vmap { 0 : goto a, 1 : goto b }` over `targets`.
fn balance(targets: &[String]) -> String {
    if targets.len() == 1 {
        return format!("goto {}", targets[0]);
    }
    let arms: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{i} : goto {c}"))
        .collect();
    format!(
        "numgen random mod {} vmap {{ {} }}",
        targets.len(),
        arms.join(", ")
    )
}

/// The fixed part of the table: hooks, dispatch maps, masquerading and rejection.
fn base(s: &mut String, t: &str) {
    let _ = writeln!(s, "add table {t}");
    for (name, ty) in MAPS {
        let _ = writeln!(s, "add map {t} {name} {{ type {ty} ; }}");
    }
    let _ = writeln!(s, "add set {t} nodeport-ips {{ type ipv4_addr ; }}");
    let hooks = [
        ("nat-prerouting", "nat hook prerouting priority -100"),
        ("nat-output", "nat hook output priority -100"),
        ("nat-postrouting", "nat hook postrouting priority 100"),
        ("filter-input", "filter hook input priority -110"),
        ("filter-forward", "filter hook forward priority -110"),
        ("filter-output", "filter hook output priority -110"),
    ];
    for (name, hook) in hooks {
        let _ = writeln!(
            s,
            "add chain {t} {name} {{ type {hook} ; policy accept ; }}"
        );
    }
    for name in [
        "services",
        "masquerading",
        "mark-for-masquerade",
        "reject-chain",
    ] {
        let _ = writeln!(s, "add chain {t} {name}");
    }
    let rules: &[(&str, &[&str])] = &[
        ("nat-prerouting", &["jump services"]),
        ("nat-output", &["jump services"]),
        ("nat-postrouting", &["jump masquerading"]),
        (
            "services",
            &[
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
            ],
        ),
        (
            "masquerading",
            &[
                "meta mark & 0x4000 == 0 return",
                "meta mark set meta mark ^ 0x4000",
                "masquerade fully-random",
            ],
        ),
        ("mark-for-masquerade", &["meta mark set meta mark | 0x4000"]),
        (
            "filter-input",
            &["ct state new fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"],
        ),
        (
            "filter-forward",
            &["ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
        ),
        (
            "filter-output",
            &[
                "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
                "ct state new fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
            ],
        ),
        ("reject-chain", &["reject"]),
    ];
    for (chain, rs) in rules {
        let _ = writeln!(s, "flush chain {t} {chain}");
        for r in *rs {
            let r = r.replace("0x4000", MASQUERADE_MARK);
            let _ = writeln!(s, "add rule {t} {chain} {r}");
        }
    }
}

/// The chains and sets a table has in the kernel (parsed from `nft list table`).
#[derive(Debug, Default, Clone)]
pub struct KernelTable {
    pub exists: bool,
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

impl KernelTable {
    /// Parses `nft list table ip T` output.
    pub fn parse(listing: &str) -> KernelTable {
        let mut t = KernelTable {
            exists: !listing.trim().is_empty(),
            ..Default::default()
        };
        for line in listing.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("chain"), Some(name)) => t.chains.push(name.to_string()),
                (Some("set"), Some(name)) => t.sets.push(name.to_string()),
                _ => {}
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: [u8; 4], ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port: 8080,
            ready,
            serving,
            terminating,
            local: ip[3] == 2,
        }
    }

    fn web(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: "tcp".into(),
            cluster_ip: Ipv4Addr::new(10, 43, 0, 10),
            port: 80,
            node_port: Some(30080),
            affinity_timeout: None,
            external_local: false,
            endpoints,
        }
    }

    #[test]
    fn only_ready_endpoints_take_traffic_then_terminating_serving_ones() {
        let sp = web(vec![
            ep([10, 42, 0, 2], true, true, false),
            ep([10, 42, 0, 3], false, false, false),
            ep([10, 42, 0, 4], false, true, true),
        ]);
        let ips: Vec<_> = sp.usable(false).iter().map(|e| e.ip).collect();
        assert_eq!(ips, vec![Ipv4Addr::new(10, 42, 0, 2)]);
        let sp = web(vec![
            ep([10, 42, 0, 3], false, false, false),
            ep([10, 42, 0, 4], false, true, true),
        ]);
        let ips: Vec<_> = sp.usable(false).iter().map(|e| e.ip).collect();
        assert_eq!(ips, vec![Ipv4Addr::new(10, 42, 0, 4)]);
    }

    #[test]
    fn ruleset_text_dnats_balances_and_rejects() {
        let r = Ruleset::build(
            &[
                web(vec![
                    ep([10, 42, 0, 2], true, true, false),
                    ep([10, 42, 0, 3], true, true, false),
                ]),
                ServicePort {
                    name: "empty".into(),
                    cluster_ip: Ipv4Addr::new(10, 43, 0, 11),
                    node_port: None,
                    ..web(Vec::new())
                },
            ],
            &[Ipv4Addr::new(192, 168, 1, 5)],
            "10.42.0.0/24",
        );
        let s = r.script("berth", None, &KernelTable::default());
        assert!(s.contains("add table ip berth\n"), "{s}");
        assert!(
            s.contains("add element ip berth service-ips { 10.43.0.10 . tcp . 80 : goto service-"),
            "{s}"
        );
        assert!(s.contains("add element ip berth no-endpoint-services { 10.43.0.11 . tcp . 80 : goto reject-chain }"), "{s}");
        assert!(
            s.contains("numgen random mod 2 vmap { 0 : goto endpoint-"),
            "{s}"
        );
        assert!(s.contains("meta l4proto tcp dnat to 10.42.0.2:8080"), "{s}");
        assert!(
            s.contains("ip saddr 10.42.0.3 jump mark-for-masquerade"),
            "hairpin: {s}"
        );
        assert!(
            s.contains("ip saddr != 10.42.0.0/24 jump mark-for-masquerade"),
            "{s}"
        );
        assert!(
            s.contains("add element ip berth service-nodeports { tcp . 30080 : goto external-"),
            "{s}"
        );
        assert!(
            s.contains("add element ip berth nodeport-ips { 192.168.1.5 }"),
            "{s}"
        );
        assert!(
            s.contains("flush map ip berth service-ips"),
            "a full sync rewrites the maps: {s}"
        );
    }

    #[test]
    fn updates_rewrite_only_what_changed() {
        let two = web(vec![
            ep([10, 42, 0, 2], true, true, false),
            ep([10, 42, 0, 3], true, true, false),
        ]);
        let other = ServicePort {
            name: "other".into(),
            cluster_ip: Ipv4Addr::new(10, 43, 0, 12),
            ..two.clone()
        };
        let before = Ruleset::build(&[two.clone(), other.clone()], &[], "10.42.0.0/24");
        let mut one = two.clone();
        one.endpoints[1].ready = false;
        let after = Ruleset::build(&[one, other], &[], "10.42.0.0/24");
        let s = after.script("berth", Some(&before), &KernelTable::default());
        assert!(!s.contains("add table"), "{s}");
        assert!(
            !s.contains("default/other"),
            "untouched service rewritten: {s}"
        );
        assert!(s.contains("flush chain ip berth service-"), "{s}");
        assert!(s.contains("delete chain ip berth endpoint-"), "{s}");
        assert!(s.contains("default/web/tcp/http__10.42.0.3/8080"), "{s}");
        assert!(
            !s.contains("delete element"),
            "the service map entry stays: {s}"
        );
        assert_eq!(
            after.script("berth", Some(&after), &KernelTable::default()),
            ""
        );
        // The endpoint still has `other`'s traffic; alone, it has left.
        assert!(before.targets.difference(&after.targets).next().is_none());
        let mut one = two.clone();
        one.endpoints[1].ready = false;
        let alone = Ruleset::build(&[one], &[], "10.42.0.0/24");
        let left: Vec<_> = Ruleset::build(&[two], &[], "10.42.0.0/24")
            .targets
            .difference(&alone.targets)
            .cloned()
            .collect();
        assert_eq!(
            left,
            [Target {
                protocol: "tcp".into(),
                ip: [10, 42, 0, 3].into(),
                port: 8080
            }]
        );
    }

    #[test]
    fn a_removed_service_empties_its_chains_before_deleting_them() {
        let before = Ruleset::build(
            &[web(vec![ep([10, 42, 0, 2], true, true, false)])],
            &[],
            "10.42.0.0/24",
        );
        let after = Ruleset::build(&[], &[], "10.42.0.0/24");
        let s = after.script("berth", Some(&before), &KernelTable::default());
        // The service chain jumps to the endpoint chain: in one transaction, nothing may be
        // deleted while a rule still refers to it.
        let last_flush = s.rfind("flush chain").expect("flushes");
        let first_delete = s.find("delete chain").expect("deletes");
        assert!(last_flush < first_delete, "{s}");
        for chain in before.chains.keys() {
            assert!(
                s.contains(&format!("flush chain ip berth {chain}\n")),
                "{s}"
            );
            assert!(
                s.contains(&format!("delete chain ip berth {chain}\n")),
                "{s}"
            );
        }
    }

    #[test]
    fn session_affinity_and_local_traffic_policy() {
        let mut sp = web(vec![
            ep([10, 42, 0, 2], true, true, false),
            ep([10, 42, 0, 3], true, true, false),
        ]);
        sp.affinity_timeout = Some(10800);
        sp.external_local = true;
        let r = Ruleset::build(&[sp], &[], "10.42.0.0/24");
        let s = r.script("berth", None, &KernelTable::default());
        assert!(s.contains("flags dynamic,timeout ; timeout 10800s"), "{s}");
        assert!(s.contains("update @affinity-"), "{s}");
        let ext = r
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("external-"))
            .map(|(_, rules)| rules.join("\n"))
            .unwrap_or_default();
        assert!(ext.contains("fib saddr type local goto service-"), "{ext}");
        assert!(
            ext.contains("goto endpoint-") && !ext.contains("10.42.0.3"),
            "{ext}"
        );
    }

    /// The kernel accepts the script (`nft -c` checks without committing; root only).
    #[test]
    fn the_kernel_accepts_the_script() {
        // SAFETY-free check for root: nft needs CAP_NET_ADMIN even to check.
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            eprintln!("skipped: nft -c needs root");
            return;
        }
        let mut sp = web(vec![
            ep([10, 42, 0, 2], true, true, false),
            ep([10, 42, 0, 3], true, true, false),
        ]);
        sp.affinity_timeout = Some(60);
        let mut local = sp.clone();
        local.name = "local".into();
        local.cluster_ip = Ipv4Addr::new(10, 43, 0, 13);
        local.node_port = Some(30081);
        local.external_local = true;
        local.affinity_timeout = None;
        let r = Ruleset::build(
            &[sp, local],
            &[Ipv4Addr::new(192, 168, 1, 5)],
            "10.42.0.0/24",
        );
        let script = r.script("berth-check", None, &KernelTable::default());
        let mut child = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn kernel_listing_is_parsed() {
        let t = KernelTable::parse(
            "table ip berth {\n\tset affinity-X-a {\n\t}\n\tmap service-ips {\n\t}\n\tchain services {\n\t}\n\tchain service-ABC-default/web/tcp/http {\n\t}\n}\n",
        );
        assert!(t.exists);
        assert_eq!(
            t.chains,
            vec!["services", "service-ABC-default/web/tcp/http"]
        );
        assert_eq!(t.sets, vec!["affinity-X-a"]);
    }
}
