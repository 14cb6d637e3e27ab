//! Pod test harness (root): a server with a busybox image imported from an OCI tarball, its
//! own bridge and pod CIDR; and a finder for anything a server's pods left on the host.

use super::Cluster;

/// Removes the test network (bridge, routes, netns mounts) however the test ended.
pub struct NetworkGuard(pub berth_net::NetworkConfig);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let Err(e) = berth_net::Sandbox::teardown_network(&self.0) {
            eprintln!("network teardown: {e}");
        }
    }
}

/// A server with a busybox image, its own bridge and pod CIDR, torn down after the test
/// (the cluster stops first, then its network goes).
pub struct PodCluster {
    pub c: Cluster,
    pub args: Vec<String>,
    pub bridge: String,
    _net: NetworkGuard,
}

impl PodCluster {
    /// `None` (the test is skipped) unless running as root.
    pub fn start(node: &str, subnet: u8, bridge_prefix: &str, runtime: &str) -> Option<PodCluster> {
        Self::start_with_args(node, subnet, bridge_prefix, runtime, &[])
    }

    /// Like [`PodCluster::start`], with extra server arguments (kept across restarts).
    pub fn start_with_args(
        node: &str,
        subnet: u8,
        bridge_prefix: &str,
        runtime: &str,
        extra: &[&str],
    ) -> Option<PodCluster> {
        let prepare = |dir: &std::path::Path| {
            std::fs::create_dir_all(dir.join("images")).expect("images dir");
            berth_images::testing::build_busybox_oci_tar(
                &dir.join("images/busybox.tar"),
                "busybox:latest",
            )
            .expect("busybox image");
        };
        Self::start_prepared_with(node, subnet, bridge_prefix, runtime, prepare, extra)
    }

    /// Like [`PodCluster::start`], with `prepare` filling the data directory instead of the
    /// busybox image (e.g. a `registries.yaml` and no image at all).
    pub fn start_prepared(
        node: &str,
        subnet: u8,
        bridge_prefix: &str,
        runtime: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Option<PodCluster> {
        Self::start_prepared_with(node, subnet, bridge_prefix, runtime, prepare, &[])
    }

    fn start_prepared_with(
        node: &str,
        subnet: u8,
        bridge_prefix: &str,
        runtime: &str,
        prepare: impl FnOnce(&std::path::Path),
        extra: &[&str],
    ) -> Option<PodCluster> {
        if !berth_node::host::is_root() {
            eprintln!("skipped: running pods needs root");
            return None;
        }
        let n = std::process::id() % 200 + 20;
        let cidr = format!("10.{subnet}.{n}.0/24");
        let bridge = format!("{bridge_prefix}{n}");
        // The node endpoint's port is the Cluster's own (see `Cluster::kubelet_port`).
        let args: Vec<String> = [
            "--node-name",
            node,
            "--pod-cidr",
            &cidr,
            "--bridge",
            &bridge,
            "--container-runtime",
            runtime,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = Cluster::start_prepared(prepare, &argv);
        let net = NetworkGuard(berth_net::NetworkConfig {
            bridge: bridge.clone(),
            pod_cidr: cidr,
            plugin_dir: "/usr/lib/cni".into(),
            state_dir: c.dir.path().to_path_buf(),
            mtu: None,
        });
        Some(PodCluster {
            c,
            args,
            bridge,
            _net: net,
        })
    }

    pub fn restart(&mut self) {
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.c.restart_with(&argv);
    }
}

/// Everything on the host that belongs to this server's pods.
pub fn leftovers(data_dir: &std::path::Path, bridge: &str, uids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["containers/containers", "netns", "pods"] {
        if let Ok(d) = std::fs::read_dir(data_dir.join(sub)) {
            found.extend(d.flatten().map(|e| e.path().display().to_string()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = data_dir.display().to_string();
    // The netns directory's own bind mount stays while the network exists.
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&dir) && !l.contains(&format!("{dir}/netns ")))
            .map(str::to_string),
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output();
    if let Ok(out) = links {
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| format!("veth on bridge: {l}")),
        );
    }
    for root in [
        "/sys/fs/cgroup/memory/berth",
        "/sys/fs/cgroup/pids/berth",
        "/sys/fs/cgroup/unified/berth",
        "/sys/fs/cgroup/berth",
    ] {
        if let Ok(d) = std::fs::read_dir(root) {
            found.extend(
                d.flatten()
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        uids.iter().any(|u| name == format!("pod{u}"))
                    })
                    .map(|e| e.path().display().to_string()),
            );
        }
    }
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("shim.*{dir}")])
        .output();
    if let Ok(out) = shims {
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|p| format!("shim process {p}")),
        );
    }
    found
}

/// Removes a service proxy's nftables table and its service CIDR's routes however the test
/// ends (declared before the cluster, so it runs after the cluster has stopped).
pub struct ProxyGuard {
    pub table: String,
    pub service_cidr: String,
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .output();
        for _ in 0..3 {
            let _ = std::process::Command::new("ip")
                .args(["-4", "route", "del", &self.service_cidr])
                .output();
        }
    }
}

/// One HTTP/1.0 GET on a new connection; the body, or the error.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.") || !out.contains(" 200 ") {
        return Err(format!("bad response: {out:?}"));
    }
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default())
}
