//! Root-only tests of pod sandboxes with the real CNI plugins in /usr/lib/cni. Every test
//! uses its own bridge and a `10.199.<n>.0/24` CIDR, sends traffic only to those CIDRs and
//! loopback, and cleans up (namespaces, bridge, routes, plugin rules, IPAM state) in a
//! guard's `Drop`, so that a failed assertion leaks nothing.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_net::cni::{CniRuntime, Operation, RuntimeConf};
use berth_net::routing;
use berth_net::{CniError, NetworkConfig, PortMapping, Protocol, Sandbox, SandboxError};
use rand::Rng;

const PLUGIN_DIR: &str = "/usr/lib/cni";

static TAKEN: Mutex<Option<HashSet<u8>>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Held while a hostPort is added and while the shared portmap chains are removed, so that
/// one test's cleanup never deletes the chains under another's portmap ADD.
static PORTMAP: Mutex<()> = Mutex::new(());

/// A test network: its config, temp state dir and the processes started in its pods;
/// tears everything down on drop.
struct TestNet {
    cfg: NetworkConfig,
    children: Vec<Child>,
    _tmp: tempfile::TempDir,
}

impl TestNet {
    fn new() -> Self {
        let octet = pick_octet();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = NetworkConfig {
            bridge: format!("bt{}x{}", std::process::id() % 100_000, n),
            pod_cidr: format!("10.199.{octet}.0/24"),
            plugin_dir: PLUGIN_DIR.into(),
            state_dir: tmp.path().join("state"),
            mtu: None,
        };
        Self {
            cfg,
            children: Vec::new(),
            _tmp: tmp,
        }
    }

    fn prefix(&self) -> String {
        self.cfg.pod_cidr.trim_end_matches("0/24").to_string()
    }

    fn in_cidr(&self, ip: IpAddr) -> bool {
        ip.to_string().starts_with(&self.prefix())
    }

    /// Starts `busybox nc -l -p <port>` inside the pod's network namespace.
    fn listen_in(&mut self, netns: &Path, port: u16) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "nc", "-l", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nc");
        self.children.push(child);
    }

    fn ports_on_bridge(&self) -> String {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.cfg.bridge])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ipam_file(&self, ip: IpAddr) -> PathBuf {
        self.cfg
            .ipam_dir()
            .join(self.cfg.network_name())
            .join(ip.to_string())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = Sandbox::teardown_network(&self.cfg) {
            eprintln!("teardown of {} failed: {e}", self.cfg.bridge);
            // Whatever the plugins could not remove, remove by hand.
            for uid in Sandbox::list(&self.cfg).unwrap_or_default() {
                let _ = self.cfg.netns_dir().remove(&uid);
            }
            let _ = self.cfg.netns_dir().remove_all();
            let _ = routing::delete_link(&self.cfg.bridge);
            let _ = routing::remove_fallback_route(&self.cfg.pod_cidr);
        }
        {
            let _portmap = PORTMAP.lock().unwrap_or_else(|e| e.into_inner());
            routing::remove_unused_portmap_chains();
        }
        let octet: Option<u8> = self
            .cfg
            .pod_cidr
            .split('.')
            .nth(2)
            .and_then(|o| o.parse().ok());
        if let (Some(o), Ok(mut taken)) = (octet, TAKEN.lock()) {
            taken.get_or_insert_with(HashSet::new).remove(&o);
        }
    }
}

/// A third octet no other test of this process uses and no route on the host covers.
fn pick_octet() -> u8 {
    let mut rng = rand::thread_rng();
    loop {
        let o: u8 = rng.gen_range(1..=254);
        let mut taken = TAKEN.lock().expect("lock");
        let set = taken.get_or_insert_with(HashSet::new);
        if set.contains(&o) {
            continue;
        }
        let cidr = format!("10.199.{o}.0/24");
        if routing::routes_for(&cidr).expect("ip route").is_empty() {
            set.insert(o);
            return o;
        }
    }
}

fn ping(netns: Option<&Path>, ip: IpAddr) -> bool {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("busybox");
            c
        }
        None => Command::new("busybox"),
    };
    cmd.args(["ping", "-c1", "-W1", &ip.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Connects to `addr`, retrying while the listener starts.
fn connect(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn nat_rules() -> String {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sandboxes_get_distinct_ips_and_reach_each_other() {
    let mut net = TestNet::new();
    let a = Sandbox::create(&net.cfg, "pod-a", &[]).expect("create a");
    let b = Sandbox::create(&net.cfg, "pod-b", &[]).expect("create b");
    assert_ne!(a.ip, b.ip);
    assert!(net.in_cidr(a.ip) && net.in_cidr(b.ip), "{a:?} {b:?}");
    assert_eq!(a.prefix_len, 24);
    let gw = a.gateway.expect("gateway");
    assert_eq!(gw.to_string(), format!("{}1", net.prefix()));
    assert_eq!(a.netns_path, net.cfg.state_dir.join("netns").join("pod-a"));

    // Create is idempotent.
    assert_eq!(Sandbox::create(&net.cfg, "pod-a", &[]).expect("again"), a);
    Sandbox::check(&net.cfg, "pod-a").expect("CHECK");

    // The CIDR is routed through the bridge only, with the blackhole as fallback.
    let routes = routing::routes_for(&net.cfg.pod_cidr).expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.contains(&format!("dev {}", net.cfg.bridge))),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.starts_with("blackhole")),
        "{routes:?}"
    );
    assert!(routes.iter().all(|r| !r.contains(" via ")), "{routes:?}");

    assert!(ping(None, a.ip), "host -> pod a");
    assert!(ping(Some(&a.netns_path), b.ip), "pod a -> pod b");
    assert!(ping(Some(&b.netns_path), a.ip), "pod b -> pod a");
    assert!(
        ping(Some(&a.netns_path), "127.0.0.1".parse().expect("ip")),
        "lo is up"
    );

    net.listen_in(&b.netns_path, 8080);
    assert!(connect(SocketAddr::new(b.ip, 8080)), "host -> pod b:8080");

    assert_eq!(
        Sandbox::list(&net.cfg).expect("list"),
        vec!["pod-a", "pod-b"]
    );
}

#[test]
fn destroy_is_idempotent_and_leaves_nothing_then_readd_works() {
    let net = TestNet::new();
    let a = Sandbox::create(&net.cfg, "pod-del", &[]).expect("create");
    assert!(net.ipam_file(a.ip).exists());
    assert!(!net.ports_on_bridge().is_empty());
    assert!(nat_rules().contains("pod-del"), "ipMasq rule for the pod");

    Sandbox::destroy(&net.cfg, "pod-del").expect("destroy");
    Sandbox::destroy(&net.cfg, "pod-del").expect("destroy again");

    assert!(!net.cfg.netns_dir().exists("pod-del").expect("exists"));
    assert!(!a.netns_path.exists());
    assert!(
        net.ports_on_bridge().trim().is_empty(),
        "veth left: {}",
        net.ports_on_bridge()
    );
    assert!(!net.ipam_file(a.ip).exists(), "IP not released");
    assert!(!nat_rules().contains("pod-del"), "masquerade rule left");
    assert!(Sandbox::list(&net.cfg).expect("list").is_empty());
    assert!(!ping(None, a.ip));

    let again = Sandbox::create(&net.cfg, "pod-del", &[]).expect("re-create");
    assert!(net.in_cidr(again.ip));
    assert!(ping(None, again.ip));
    Sandbox::destroy(&net.cfg, "pod-del").expect("destroy");
    // Destroying a sandbox that never existed is fine too.
    Sandbox::destroy(&net.cfg, "never-created").expect("destroy unknown");
}

#[test]
fn host_ports_forward_to_the_pod() {
    let mut net = TestNet::new();
    let host_port: u16 = rand::thread_rng().gen_range(20_000..30_000);
    let mapping = PortMapping {
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: None,
    };
    let a = {
        let _portmap = PORTMAP.lock().unwrap_or_else(|e| e.into_inner());
        Sandbox::create(&net.cfg, "pod-hp", &[mapping]).expect("create")
    };
    let gw = a.gateway.expect("gateway");
    net.listen_in(&a.netns_path, 8080);
    assert!(
        connect(SocketAddr::new(gw, host_port)),
        "hostPort via the node"
    );
    let port = host_port.to_string();
    assert!(nat_rules().contains(&port));

    Sandbox::destroy(&net.cfg, "pod-hp").expect("destroy");
    let rules = nat_rules();
    assert!(
        !rules.contains(&format!("--dport {port}")),
        "hostPort rule left"
    );
    assert!(!rules.contains("pod-hp"), "rule left for the pod");
}

#[test]
fn two_networks_coexist() {
    let one = TestNet::new();
    let two = TestNet::new();
    let a = Sandbox::create(&one.cfg, "pod-x", &[]).expect("create in one");
    // Same pod UID in another network: separate namespace and allocation.
    let b = Sandbox::create(&two.cfg, "pod-x", &[]).expect("create in two");
    assert!(one.in_cidr(a.ip) && two.in_cidr(b.ip));
    assert_ne!(a.netns_path, b.netns_path);
    assert!(ping(None, a.ip) && ping(None, b.ip));

    Sandbox::destroy(&one.cfg, "pod-x").expect("destroy in one");
    assert!(ping(None, b.ip), "the other network is untouched");
    assert!(two.ipam_file(b.ip).exists());
}

#[test]
fn plugin_errors_are_surfaced() {
    // A bad subnet straight to the bridge plugin: its JSON error comes back.
    let rt = RuntimeConf {
        container_id: "bad-config".into(),
        netns: None,
        ifname: "eth0".into(),
        capability_args: Default::default(),
    };
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bad",
        "type": "bridge",
        "bridge": "btbad0",
        "ipam": { "type": "host-local", "ranges": [[{ "subnet": "not-a-cidr" }]] },
    });
    let err = CniRuntime::new(PLUGIN_DIR)
        .exec(Operation::Add, &conf, &rt)
        .expect_err("bad config must fail");
    match &err {
        CniError::Plugin { plugin, msg, .. } => {
            assert_eq!(plugin, "bridge");
            assert!(!msg.is_empty());
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("failed to ADD network with CNI plugin bridge: "));
    let _ = routing::delete_link("btbad0");

    // A plugin dir without host-local: create fails with the plugin's message and is
    // rolled back (no namespace, no state left).
    let mut net = TestNet::new();
    let dir = net._tmp.path().join("plugins");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for p in ["bridge", "loopback", "portmap"] {
        std::os::unix::fs::symlink(Path::new(PLUGIN_DIR).join(p), dir.join(p)).expect("link");
    }
    net.cfg.plugin_dir = dir;
    let err = Sandbox::create(&net.cfg, "pod-fail", &[]).expect_err("must fail");
    match &err {
        SandboxError::Cni(CniError::Plugin { plugin, msg, .. }) => {
            assert_eq!(plugin, "bridge");
            assert!(msg.contains("host-local"), "{msg}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    // The failed DEL of the rollback keeps the sandbox for a retry; once the plugins are
    // back, destroy finishes the job.
    net.cfg.plugin_dir = PLUGIN_DIR.into();
    Sandbox::destroy(&net.cfg, "pod-fail").expect("destroy after fixing plugins");
    assert!(Sandbox::list(&net.cfg).expect("list").is_empty());
    assert!(!net.cfg.netns_dir().path("pod-fail").exists());
    assert!(net.ports_on_bridge().trim().is_empty());
}
