//! The pod network sandbox: a named network namespace per pod wired by CNI — `loopback`
//! for `lo`, then the per-server list `bridge` (+ `host-local` IPAM) and `portmap` for
//! `eth0`. State lives under the caller's `state_dir`:
//!
//! - `<state_dir>/netns/<pod-uid>`: the namespace bind mounts (pass the data dir as
//!   `state_dir` to get `<data-dir>/netns/<pod-uid>`),
//! - `<state_dir>/cni/ipam`: host-local's allocations, per server,
//! - `<state_dir>/cni/results/<pod-uid>.json`: the ADD result and port mappings, passed
//!   back to DEL (libcni caches them the same way).
//!
//! Create is rolled back on failure; destroy is idempotent and keeps the namespace until
//! every plugin's DEL succeeded (the bridge plugin needs it to find the masquerade rules).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni::{CniError, CniResult, CniRuntime, NetworkConfigList, PortMapping, RuntimeConf};
use crate::netns::{self, NetnsDir, NetnsError};
use crate::routing::{self, RoutingError};

/// The pod's interface name.
pub const POD_IFNAME: &str = "eth0";

/// The per-server pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The bridge's name (at most 15 bytes), distinct per server on one machine.
    pub bridge: String,
    /// The pod subnet as a CIDR, e.g. `10.42.0.0/24`, distinct per server.
    pub pod_cidr: String,
    /// Where the CNI plugin binaries are (`/usr/lib/cni` on Debian).
    pub plugin_dir: PathBuf,
    /// Where namespaces, IPAM allocations and cached results are kept.
    pub state_dir: PathBuf,
    /// The MTU of the bridge and the pods' interfaces; the plugin's default when `None`.
    pub mtu: Option<u32>,
}

impl NetworkConfig {
    /// The CNI network name, derived from the bridge so that two servers differ.
    pub fn network_name(&self) -> String {
        format!("berth-{}", self.bridge)
    }

    /// The directory of pod network namespaces.
    pub fn netns_dir(&self) -> NetnsDir {
        NetnsDir::new(self.state_dir.join("netns"))
    }

    /// host-local's data directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("cni").join("ipam")
    }

    fn results_dir(&self) -> PathBuf {
        self.state_dir.join("cni").join("results")
    }

    fn result_path(&self, pod_uid: &str) -> PathBuf {
        self.results_dir().join(format!("{pod_uid}.json"))
    }

    /// The network configuration list run for `eth0`.
    pub fn conflist(&self) -> NetworkConfigList {
        let mut bridge = json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.pod_cidr }]],
                "routes": [{ "dst": default_route(&self.pod_cidr) }],
                "dataDir": self.ipam_dir(),
            },
        });
        if let (Some(mtu), Some(obj)) = (self.mtu, bridge.as_object_mut()) {
            obj.insert("mtu".into(), json!(mtu));
        }
        NetworkConfigList {
            name: self.network_name(),
            plugins: vec![
                bridge,
                json!({
                    "type": "portmap",
                    "snat": true,
                    "capabilities": { "portMappings": true },
                }),
            ],
        }
    }

    /// The bridge's address, the pods' gateway: host-local's default, the subnet's first
    /// address (`10.42.0.1` for `10.42.0.0/24`). Pods reach the node on it.
    pub fn gateway(&self) -> Option<IpAddr> {
        gateway_of(&self.pod_cidr)
    }

    /// The one-plugin list run for `lo`.
    pub fn loopback_conflist(&self) -> NetworkConfigList {
        NetworkConfigList {
            name: format!("{}-lo", self.network_name()),
            plugins: vec![json!({ "type": "loopback" })],
        }
    }

    fn validate(&self) -> Result<(), SandboxError> {
        let bad = |reason: &str| SandboxError::InvalidConfig(reason.to_string());
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self
                .bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad("bridge name must be 1-15 bytes of [A-Za-z0-9_.-]"));
        }
        let (addr, prefix) = self
            .pod_cidr
            .split_once('/')
            .ok_or_else(|| bad("pod CIDR must look like 10.42.0.0/24"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("pod CIDR has a bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("pod CIDR has a bad prefix"))?;
        let max = if addr.is_ipv4() { 30 } else { 126 };
        if prefix == 0 || prefix > max {
            return Err(bad("pod CIDR prefix must leave room for pods and not be 0"));
        }
        Ok(())
    }
}

/// The gateway host-local gives a pod CIDR: its first address (see [`NetworkConfig::gateway`]).
pub fn gateway_of(pod_cidr: &str) -> Option<IpAddr> {
    let (addr, prefix) = pod_cidr.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if prefix < 31 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Some(IpAddr::V4((u32::from(a) & mask).wrapping_add(1).into()))
        }
        IpAddr::V6(a) if prefix < 127 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Some(IpAddr::V6((u128::from(a) & mask).wrapping_add(1).into()))
        }
        _ => None,
    }
}

/// The pods' default route goes to the bridge gateway; ipMasq decides what leaves.
fn default_route(cidr: &str) -> &'static str {
    if cidr.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    }
}

/// What a created sandbox looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The network namespace path (for the OCI runtime spec's `network` namespace).
    pub netns_path: PathBuf,
    /// The pod IP.
    pub ip: IpAddr,
    /// The prefix length of the pod subnet.
    pub prefix_len: u8,
    /// The gateway (the bridge address), when reported.
    pub gateway: Option<IpAddr>,
}

/// Errors from creating or destroying a pod sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The network configuration is unusable.
    #[error("failed to use network config: {0}")]
    InvalidConfig(String),
    /// The pod UID cannot name a namespace or CNI container.
    #[error("failed to use pod UID {0:?} as a sandbox name: only [A-Za-z0-9_.-] allowed")]
    InvalidPodUid(String),
    /// The network namespace could not be managed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A CNI plugin failed.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// Host routes could not be set up.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// The plugins' result had no IP for the pod.
    #[error("failed to get a pod IP from the CNI result: {0}")]
    NoIp(String),
    /// The state file could not be read or written.
    #[error("failed to {action} sandbox state {path}: {source}")]
    State {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What we keep between ADD and DEL.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedState {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    #[serde(default)]
    result: Value,
}

/// Pod network sandboxes (stateless: everything lives on disk and in the kernel).
#[derive(Debug, Clone, Copy)]
pub struct Sandbox;

impl Sandbox {
    /// Creates the pod's network namespace and attaches it to the server's network, with
    /// `port_mappings` as hostPorts. Idempotent: a sandbox created before is returned as
    /// it is (its port mappings are not changed). Rolled back on failure.
    pub fn create(
        cfg: &NetworkConfig,
        pod_uid: &str,
        port_mappings: &[PortMapping],
    ) -> Result<SandboxInfo, SandboxError> {
        cfg.validate()?;
        check_uid(pod_uid)?;
        // Before any pod exists, so that the pod CIDR never follows the default route.
        routing::ensure_fallback_route(&cfg.pod_cidr)?;
        if let Some(info) = existing(cfg, pod_uid)? {
            return Ok(info);
        }
        let netns_path = cfg.netns_dir().create(pod_uid)?;
        match attach(cfg, pod_uid, &netns_path, port_mappings) {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(cleanup) = Sandbox::destroy(cfg, pod_uid) {
                    tracing::warn!(error = %cleanup, pod_uid, "failed to roll back sandbox");
                }
                Err(e)
            }
        }
    }

    /// Detaches the pod from the network (DEL in reverse order), releases its IP and
    /// removes its namespace. Idempotent: missing pieces are fine. On a DEL error the
    /// namespace and state are kept so that a retry can finish the job.
    pub fn destroy(cfg: &NetworkConfig, pod_uid: &str) -> Result<(), SandboxError> {
        cfg.validate()?;
        check_uid(pod_uid)?;
        let netns_dir = cfg.netns_dir();
        let state_path = cfg.result_path(pod_uid);
        let saved = read_state(&state_path)?;
        let netns = if netns_dir.exists(pod_uid)? {
            Some(netns_dir.path(pod_uid))
        } else {
            None
        };
        let runtime = CniRuntime::new(&cfg.plugin_dir);
        let (port_mappings, prev) = match &saved {
            Some(s) => (s.port_mappings.as_slice(), Some(&s.result)),
            None => (&[][..], None),
        };
        let main = runtime.del_list(
            &cfg.conflist(),
            &runtime_conf(pod_uid, netns.clone(), POD_IFNAME, port_mappings),
            prev.filter(|v| !v.is_null()),
        );
        let lo = runtime.del_list(
            &cfg.loopback_conflist(),
            &runtime_conf(pod_uid, netns, "lo", &[]),
            None,
        );
        main?;
        lo?;
        netns_dir.remove(pod_uid)?;
        match fs::remove_file(&state_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::State {
                action: "remove",
                path: state_path,
                source,
            }),
        }
    }

    /// Runs CNI CHECK for a created sandbox: the plugins verify the interface, address
    /// and routes are still as ADD left them.
    pub fn check(cfg: &NetworkConfig, pod_uid: &str) -> Result<(), SandboxError> {
        cfg.validate()?;
        check_uid(pod_uid)?;
        let netns_dir = cfg.netns_dir();
        let state_path = cfg.result_path(pod_uid);
        let saved = read_state(&state_path)?.ok_or_else(|| SandboxError::State {
            action: "read",
            path: state_path.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        let runtime = CniRuntime::new(&cfg.plugin_dir);
        let rt = runtime_conf(
            pod_uid,
            Some(netns_dir.path(pod_uid)),
            POD_IFNAME,
            &saved.port_mappings,
        );
        runtime.check_list(&cfg.conflist(), &rt, &saved.result)?;
        Ok(())
    }

    /// Pod UIDs that have a namespace or saved CNI state on this server, for cleaning up
    /// sandboxes whose pods are gone.
    pub fn list(cfg: &NetworkConfig) -> Result<Vec<String>, SandboxError> {
        let mut uids = cfg.netns_dir().list()?;
        if let Ok(entries) = fs::read_dir(cfg.results_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(uid) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                    if netns::valid_name(uid) {
                        uids.push(uid.to_string());
                    }
                }
            }
        }
        uids.sort();
        uids.dedup();
        Ok(uids)
    }

    /// Removes the whole server network: destroys every sandbox, deletes the bridge, the
    /// fallback route, host-local's allocations and unmounts the namespace directory.
    /// For uninstalling a server and for tests. The portmap plugin's `CNI-HOSTPORT-*`
    /// chains are shared by all networks on the host and stay; see
    /// [`routing::remove_unused_portmap_chains`].
    pub fn teardown_network(cfg: &NetworkConfig) -> Result<(), SandboxError> {
        cfg.validate()?;
        let mut first_err = None;
        for uid in Sandbox::list(cfg)? {
            if let Err(e) = Sandbox::destroy(cfg, &uid) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        routing::delete_link(&cfg.bridge)?;
        routing::remove_fallback_route(&cfg.pod_cidr)?;
        cfg.netns_dir().remove_all()?;
        let ipam = cfg.ipam_dir();
        match fs::remove_dir_all(&ipam) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::State {
                action: "remove",
                path: ipam,
                source,
            }),
        }
    }
}

fn check_uid(pod_uid: &str) -> Result<(), SandboxError> {
    if netns::valid_name(pod_uid) {
        Ok(())
    } else {
        Err(SandboxError::InvalidPodUid(pod_uid.to_string()))
    }
}

fn runtime_conf(
    pod_uid: &str,
    netns: Option<PathBuf>,
    ifname: &str,
    port_mappings: &[PortMapping],
) -> RuntimeConf {
    let mut capability_args = BTreeMap::new();
    if !port_mappings.is_empty() {
        capability_args.insert("portMappings".to_string(), json!(port_mappings));
    }
    RuntimeConf {
        container_id: pod_uid.to_string(),
        netns,
        ifname: ifname.to_string(),
        capability_args,
    }
}

/// The sandbox as a previous successful create left it, if it is still there.
fn existing(cfg: &NetworkConfig, pod_uid: &str) -> Result<Option<SandboxInfo>, SandboxError> {
    let netns_dir = cfg.netns_dir();
    if !netns_dir.exists(pod_uid)? {
        return Ok(None);
    }
    let Some(saved) = read_state(&cfg.result_path(pod_uid))? else {
        return Ok(None);
    };
    if saved.result.is_null() {
        return Ok(None);
    }
    let result = CniResult::from_json("bridge", saved.result)?;
    Ok(info_from(&result, netns_dir.path(pod_uid)))
}

fn info_from(result: &CniResult, netns_path: PathBuf) -> Option<SandboxInfo> {
    result.ip_for(POD_IFNAME).map(|ip| SandboxInfo {
        netns_path,
        ip: ip.address,
        prefix_len: ip.prefix_len,
        gateway: ip.gateway,
    })
}

fn attach(
    cfg: &NetworkConfig,
    pod_uid: &str,
    netns_path: &Path,
    port_mappings: &[PortMapping],
) -> Result<SandboxInfo, SandboxError> {
    let runtime = CniRuntime::new(&cfg.plugin_dir);
    let state_path = cfg.result_path(pod_uid);
    // Saved before ADD so that a crash in between still lets DEL find the port mappings.
    write_state(
        &state_path,
        &SavedState {
            port_mappings: port_mappings.to_vec(),
            result: Value::Null,
        },
    )?;
    runtime.add_list(
        &cfg.loopback_conflist(),
        &runtime_conf(pod_uid, Some(netns_path.to_path_buf()), "lo", &[]),
    )?;
    let result = runtime.add_list(
        &cfg.conflist(),
        &runtime_conf(
            pod_uid,
            Some(netns_path.to_path_buf()),
            POD_IFNAME,
            port_mappings,
        ),
    )?;
    write_state(
        &state_path,
        &SavedState {
            port_mappings: port_mappings.to_vec(),
            result: result.raw.clone(),
        },
    )?;
    info_from(&result, netns_path.to_path_buf())
        .ok_or_else(|| SandboxError::NoIp(result.raw.to_string()))
}

fn read_state(path: &Path) -> Result<Option<SavedState>, SandboxError> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => Ok(Some(state)),
            // A torn write is treated as unknown: DEL still runs, just without prevResult.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable sandbox state");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SandboxError::State {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_state(path: &Path, state: &SavedState) -> Result<(), SandboxError> {
    let err = |source| SandboxError::State {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let bytes = serde_json::to_vec(state).map_err(|e| err(io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, bytes).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkConfig {
        NetworkConfig {
            bridge: "berth0".into(),
            pod_cidr: "10.42.0.0/24".into(),
            plugin_dir: "/usr/lib/cni".into(),
            state_dir: "/var/lib/berth".into(),
            mtu: Some(1400),
        }
    }

    #[test]
    fn the_gateway_is_the_subnets_first_address() {
        let mut c = cfg();
        assert_eq!(c.gateway(), "10.42.0.1".parse().ok());
        c.pod_cidr = "10.184.7.0/24".into();
        assert_eq!(c.gateway(), "10.184.7.1".parse().ok());
        c.pod_cidr = "10.1.2.3/16".into();
        assert_eq!(c.gateway(), "10.1.0.1".parse().ok());
        c.pod_cidr = "fd00:1::/64".into();
        assert_eq!(c.gateway(), "fd00:1::1".parse().ok());
        c.pod_cidr = "nope".into();
        assert_eq!(c.gateway(), None);
    }

    #[test]
    fn conflist_is_per_server() {
        let c = cfg();
        let list = c.conflist();
        assert_eq!(list.name, "berth-berth0");
        let bridge = &list.plugins[0];
        assert_eq!(bridge["bridge"], "berth0");
        assert_eq!(bridge["mtu"], 1400);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.0.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/berth/cni/ipam");
        assert_eq!(list.plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(
            c.netns_dir().path("uid"),
            Path::new("/var/lib/berth/netns/uid")
        );
    }

    #[test]
    fn rejects_bad_configs() {
        for (bridge, cidr) in [
            ("", "10.0.0.0/24"),
            ("a-very-long-bridge-name", "10.0.0.0/24"),
            ("br0", "10.0.0.0"),
            ("br0", "10.0.0.0/0"),
            ("br0", "10.0.0.0/31"),
            ("br0", "nope/24"),
        ] {
            let c = NetworkConfig {
                bridge: bridge.into(),
                pod_cidr: cidr.into(),
                ..cfg()
            };
            assert!(
                matches!(c.validate(), Err(SandboxError::InvalidConfig(_))),
                "{bridge} {cidr}"
            );
        }
        assert!(cfg().validate().is_ok());
        assert!(matches!(
            check_uid("a/b"),
            Err(SandboxError::InvalidPodUid(_))
        ));
    }
}
