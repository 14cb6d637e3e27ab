//! A pod's name files, as upstream's kubelet writes them: `/etc/resolv.conf` from its
//! `dnsPolicy` and `dnsConfig` (the node's cluster DNS server, the cluster search path and
//! `ndots:5`, or the host's resolvers), and `/etc/hosts` and `/etc/hostname` with its hostname,
//! the FQDN its `subdomain` gives it, and its `hostAliases`.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::net::IpAddr;

/// The most nameservers a resolver reads (glibc's MAXNS).
const MAX_NAMESERVERS: usize = 3;
/// The most search domains, and their longest total length (upstream's limits).
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
/// The longest hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// The node's cluster DNS: where pods with `ClusterFirst` send their queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The node-local DNS server's address (the pod bridge's gateway).
    pub nameserver: IpAddr,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
}

/// The three things a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `nameserver`, `search` and `options` lines (the kubelet reads nothing else).
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(String::from)),
                Some("search") => {
                    r.searches = words
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect()
                }
                Some("options") => r.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        r
    }

    /// The file, as container runtimes write it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for n in &self.nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn omit_duplicates(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The pod's resolv.conf: `host` is the node's own resolv.conf (the `Default` policy's).
pub fn resolv_conf(pod: &Pod, cluster: Option<&ClusterDns>, host: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let use_cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        // A hostNetwork pod with ClusterFirst gets the host's resolvers, as upstream.
        "ClusterFirst" => Some(!host_network(pod)),
        _ => Some(false),
    };
    let mut conf = match (use_cluster, cluster) {
        (None, _) => ResolvConf::default(),
        (Some(true), Some(c)) => {
            let ns = pod.namespace().unwrap_or_else(|| "default".into());
            let mut searches = vec![
                format!("{ns}.svc.{}", c.domain),
                format!("svc.{}", c.domain),
                c.domain.clone(),
            ];
            searches.extend(host.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![c.nameserver.to_string()],
                searches: omit_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
        // No cluster DNS on this node: the host's, as the kubelet falls back.
        (Some(_), _) => host.clone(),
    };
    if let Some(extra) = &spec.dns_config {
        conf.nameservers
            .extend(extra.nameservers.iter().flatten().cloned());
        conf.nameservers = omit_duplicates(std::mem::take(&mut conf.nameservers));
        conf.searches
            .extend(extra.searches.iter().flatten().cloned());
        conf.searches = omit_duplicates(std::mem::take(&mut conf.searches));
        // An option of the pod replaces one of the same name.
        for o in extra.options.iter().flatten() {
            let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let text = match o.value.as_deref() {
                Some(v) if !v.is_empty() => format!("{name}:{v}"),
                _ => name.to_string(),
            };
            match conf
                .options
                .iter_mut()
                .find(|e| e.split(':').next() == Some(name))
            {
                Some(e) => *e = text,
                None => conf.options.push(text),
            }
        }
    }
    if conf.nameservers.len() > MAX_NAMESERVERS {
        tracing::warn!(pod = %pod.name_any(), "nameserver limits exceeded: only the first {MAX_NAMESERVERS} are used");
        conf.nameservers.truncate(MAX_NAMESERVERS);
    }
    let mut chars = 0;
    let mut fits = 0;
    for s in &conf.searches {
        chars += s.len() + usize::from(fits > 0);
        if fits == MAX_SEARCHES || chars > MAX_SEARCH_CHARS {
            break;
        }
        fits += 1;
    }
    if fits < conf.searches.len() {
        tracing::warn!(pod = %pod.name_any(), "search line limits exceeded: some search domains were omitted");
        conf.searches.truncate(fits);
    }
    conf
}

/// The pod's hostname: `spec.hostname` or its name, cut to a DNS label.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.name_any());
    if name.len() <= MAX_HOSTNAME {
        return name;
    }
    name[..MAX_HOSTNAME]
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// `<subdomain>.<namespace>.svc.<domain>` when the pod has a subdomain.
pub fn host_domain(pod: &Pod, domain: &str) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty())?;
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    Some(format!("{sub}.{ns}.svc.{domain}"))
}

/// `/etc/hostname`: the hostname, or its FQDN with `setHostnameAsFQDN`.
pub fn hostname_file(pod: &Pod, domain: &str) -> String {
    let name = hostname(pod);
    let fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match host_domain(pod, domain) {
        Some(d) if fqdn => format!("{name}.{d}\n"),
        _ => format!("{name}\n"),
    }
}

/// `/etc/hosts`: upstream's managed file (the host's own file for hostNetwork pods), then
/// the pod's `hostAliases`.
pub fn hosts(pod: &Pod, ip: &str, domain: &str, host_hosts: &str) -> String {
    let mut out = String::new();
    if host_network(pod) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(host_hosts);
        if !host_hosts.is_empty() && !host_hosts.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        let name = hostname(pod);
        match host_domain(pod, domain) {
            Some(d) => out.push_str(&format!("{ip}\t{name}.{d}\t{name}\n")),
            None => out.push_str(&format!("{ip}\t{name}\n")),
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: "10.42.0.1".parse().expect("ip"),
            domain: "cluster.local".into(),
        }
    }

    fn host() -> ResolvConf {
        ResolvConf::parse("nameserver 10.0.0.2\nsearch corp.example. lab.example\noptions rotate\n")
    }

    #[test]
    fn cluster_first_uses_the_node_dns_and_the_cluster_search_path() {
        let conf = resolv_conf(&pod(PodSpec::default()), Some(&cluster()), &host());
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             nameserver 10.42.0.1\noptions ndots:5\n"
        );
        // hostNetwork with ClusterFirst: the host's; ClusterFirstWithHostNet: the cluster's.
        let hn = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(resolv_conf(&hn, Some(&cluster()), &host()), host());
        let hn = pod(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&hn, Some(&cluster()), &host()).nameservers,
            vec!["10.42.0.1"]
        );
        // Without a cluster DNS the host's is used.
        assert_eq!(resolv_conf(&pod(PodSpec::default()), None, &host()), host());
        let default = pod(PodSpec {
            dns_policy: Some("Default".into()),
            ..Default::default()
        });
        assert_eq!(resolv_conf(&default, Some(&cluster()), &host()), host());
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["1.2.3.4".into(), "10.42.0.1".into()]),
            searches: Some(vec!["my.dns.search.suffix".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let p = pod(PodSpec {
            dns_config: Some(cfg.clone()),
            ..Default::default()
        });
        let conf = resolv_conf(&p, Some(&cluster()), &host());
        assert_eq!(conf.nameservers, vec!["10.42.0.1", "1.2.3.4"]);
        assert_eq!(
            conf.searches.last().map(String::as_str),
            Some("my.dns.search.suffix")
        );
        assert_eq!(conf.options, vec!["ndots:2", "edns0"]);
        let none = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(cfg),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&none, Some(&cluster()), &host()).render(),
            "search my.dns.search.suffix\nnameserver 1.2.3.4\nnameserver 10.42.0.1\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            resolv_conf(
                &pod(PodSpec {
                    dns_policy: Some("None".into()),
                    ..Default::default()
                }),
                Some(&cluster()),
                &host()
            )
            .render(),
            ""
        );
    }

    #[test]
    fn limits_drop_extra_nameservers_and_searches() {
        let p = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some((1..=5).map(|n| format!("10.0.0.{n}")).collect()),
                searches: Some((0..40).map(|n| format!("s{n}.example")).collect()),
                options: None,
            }),
            ..Default::default()
        });
        let conf = resolv_conf(&p, None, &ResolvConf::default());
        assert_eq!(conf.nameservers.len(), 3);
        assert_eq!(conf.searches.len(), 32);
    }

    #[test]
    fn hosts_and_hostname_carry_the_subdomain_fqdn_and_aliases() {
        let p = pod(PodSpec {
            hostname: Some("db-0".into()),
            subdomain: Some("db".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            }]),
            ..Default::default()
        });
        let h = hosts(&p, "10.42.0.5", "cluster.local", "");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("10.42.0.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{h}"
        );
        assert!(h.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"));
        assert_eq!(hostname_file(&p, "cluster.local"), "db-0\n");
        let mut fq = p.clone();
        if let Some(s) = fq.spec.as_mut() {
            s.set_hostname_as_fqdn = Some(true);
        }
        assert_eq!(
            hostname_file(&fq, "cluster.local"),
            "db-0.db.shop.svc.cluster.local\n"
        );
        let plain = pod(PodSpec::default());
        assert!(hosts(&plain, "10.42.0.6", "cluster.local", "").ends_with("10.42.0.6\tweb-0\n"));
        let hn = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(
            hosts(&hn, "10.0.0.9", "cluster.local", "127.0.0.1 localhost"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
        let long = pod(PodSpec {
            hostname: Some(format!("{}-{}", "a".repeat(62), "b")),
            ..Default::default()
        });
        assert_eq!(hostname(&long), "a".repeat(62));
    }
}
