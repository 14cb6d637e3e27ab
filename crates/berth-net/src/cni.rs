//! A CNI runtime: executes plugin binaries the way libcni does (`CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH` in the environment, the
//! network configuration as JSON on stdin), runs a network configuration list in order
//! for ADD (passing each plugin's result to the next as `prevResult`) and in reverse for
//! DEL, injects capability arguments (`runtimeConfig.portMappings`) into the plugins that
//! declare them, and decodes results and the plugins' JSON errors.
//!
//! Debian's containernetworking-plugins 1.1 speak CNI spec versions up to 1.0.0, which is
//! what we use.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The CNI spec version we speak (the newest one the 1.1 plugins support).
pub const CNI_VERSION: &str = "1.0.0";

/// Errors from running CNI plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A plugin entry has no `type`, or the type is not a plain binary name.
    #[error("failed to find the plugin type in CNI config: {0}")]
    BadConfig(String),
    /// The plugin binary is not in the plugin directory.
    #[error("failed to find CNI plugin {plugin:?} in {dir}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// Where we looked.
        dir: PathBuf,
    },
    /// The plugin could not be started or its stdin written.
    #[error("failed to run CNI plugin {plugin}: {source}")]
    Spawn {
        /// The plugin type.
        plugin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin exited with an error; `msg` and `details` are from its JSON error.
    #[error("failed to {command} network with CNI plugin {plugin}: {msg}{}", details_suffix(.details))]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: String,
        /// The CNI error code (0 when the plugin printed no JSON error).
        code: u32,
        /// The error message.
        msg: String,
        /// Further details, possibly empty.
        details: String,
    },
    /// The plugin did not finish in time and was killed.
    #[error("failed to {command} network with CNI plugin {plugin}: no answer within {timeout:?}")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin succeeded but printed something that is not a CNI result.
    #[error("failed to decode the result of CNI plugin {plugin}: {reason}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

/// The CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Attach the container to the network.
    Add,
    /// Detach it and release what ADD took.
    Del,
    /// Verify that the attachment is still as ADD left it.
    Check,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "ADD",
            Operation::Del => "DEL",
            Operation::Check => "CHECK",
        }
    }
}

/// A transport protocol of a host port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A `hostPort` of a pod: `host_port` on the node forwards to `container_port` in the pod,
/// in the form of portmap's `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the node.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The node address to bind; all addresses when absent.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// What a runtime passes about one container attachment.
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; `None` on DEL when the namespace is gone already.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Capability arguments by capability name (e.g. `portMappings`), injected as
    /// `runtimeConfig` into plugins that declare the capability.
    pub capability_args: BTreeMap<String, Value>,
}

/// A network configuration list (a `.conflist`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name.
    pub name: String,
    /// The plugin configurations, in ADD order.
    pub plugins: Vec<Value>,
}

/// One IP address of a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// The prefix length of its subnet.
    pub prefix_len: u8,
    /// The gateway, when the plugin reported one.
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`, when given.
    pub interface: Option<usize>,
}

/// A decoded CNI result (spec 1.0.0), keeping the raw JSON to pass on as `prevResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// The result as the last plugin printed it.
    pub raw: Value,
    /// Its IP addresses.
    pub ips: Vec<IpConfig>,
}

impl CniResult {
    /// Decodes a result printed by a plugin.
    pub fn from_json(plugin: &str, raw: Value) -> Result<Self, CniError> {
        let bad = |reason: String| CniError::BadResult {
            plugin: plugin.to_string(),
            reason,
        };
        #[derive(Deserialize)]
        struct RawIp {
            address: String,
            #[serde(default)]
            gateway: Option<String>,
            #[serde(default)]
            interface: Option<usize>,
        }
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            ips: Vec<RawIp>,
        }
        let decoded: Raw =
            serde_json::from_value(raw.clone()).map_err(|e| bad(format!("{e}: {raw}")))?;
        let mut ips = Vec::new();
        for ip in decoded.ips {
            let (addr, prefix) = ip
                .address
                .split_once('/')
                .ok_or_else(|| bad(format!("address {:?} is not a CIDR", ip.address)))?;
            let address: IpAddr = addr
                .parse()
                .map_err(|_| bad(format!("address {:?} is not an IP", ip.address)))?;
            let prefix_len: u8 = prefix
                .parse()
                .map_err(|_| bad(format!("address {:?} has a bad prefix", ip.address)))?;
            let gateway = match ip.gateway.as_deref() {
                None | Some("") => None,
                Some(g) => Some(
                    g.parse()
                        .map_err(|_| bad(format!("gateway {g:?} is not an IP")))?,
                ),
            };
            ips.push(IpConfig {
                address,
                prefix_len,
                gateway,
                interface: ip.interface,
            });
        }
        Ok(Self { raw, ips })
    }

    /// The address assigned to the container interface `ifname` (the one with a
    /// `sandbox`), falling back to the first address.
    pub fn ip_for(&self, ifname: &str) -> Option<&IpConfig> {
        let interfaces = self.raw.get("interfaces").and_then(Value::as_array);
        let index = interfaces.and_then(|ifs| {
            ifs.iter().position(|i| {
                i.get("name").and_then(Value::as_str) == Some(ifname)
                    && i.get("sandbox").and_then(Value::as_str).is_some()
            })
        });
        index
            .and_then(|idx| self.ips.iter().find(|ip| ip.interface == Some(idx)))
            .or_else(|| self.ips.first())
    }
}

/// How long one plugin may run before it is killed, unless configured otherwise.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs CNI plugins from one plugin directory.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    plugin_dir: PathBuf,
    timeout: Duration,
}

impl CniRuntime {
    /// A runtime executing plugins from `plugin_dir` (e.g. `/usr/lib/cni`).
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// The same runtime with another per-plugin time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The plugin directory.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// Runs ADD over the list in order, each plugin getting the previous result as
    /// `prevResult`; returns the last result.
    pub fn add_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<CniResult, CniError> {
        let mut prev: Option<Value> = None;
        let mut last_plugin = String::new();
        for plugin in &list.plugins {
            let conf = build_one(&list.name, plugin, prev.as_ref(), rt);
            let out = self.exec(Operation::Add, &conf, rt)?;
            last_plugin = plugin_type(plugin)?.to_string();
            prev = Some(out);
        }
        let raw = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": CNI_VERSION }));
        CniResult::from_json(&last_plugin, raw)
    }

    /// Runs DEL over the list in reverse order with the ADD result as `prevResult` when
    /// known. Every plugin runs even if an earlier one failed, so that as much as possible
    /// is released; the first error is returned.
    pub fn del_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            let conf = build_one(&list.name, plugin, prev_result, rt);
            if let Err(e) = self.exec(Operation::Del, &conf, rt) {
                tracing::warn!(error = %e, container = %rt.container_id, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs CHECK over the list in order with the ADD result as `prevResult`.
    pub fn check_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        prev_result: &Value,
    ) -> Result<(), CniError> {
        for plugin in &list.plugins {
            let conf = build_one(&list.name, plugin, Some(prev_result), rt);
            self.exec(Operation::Check, &conf, rt)?;
        }
        Ok(())
    }

    /// Executes one plugin with `conf` on stdin; returns its printed JSON (`null` when it
    /// printed nothing, as DEL and CHECK do).
    pub fn exec(&self, op: Operation, conf: &Value, rt: &RuntimeConf) -> Result<Value, CniError> {
        let plugin = plugin_type(conf)?;
        let binary = self.plugin_dir.join(plugin);
        if !binary.is_file() {
            return Err(CniError::PluginNotFound {
                plugin: plugin.to_string(),
                dir: self.plugin_dir.clone(),
            });
        }
        let spawn_err = |source| CniError::Spawn {
            plugin: plugin.to_string(),
            source,
        };
        let stdin_data =
            serde_json::to_vec(conf).map_err(|e| spawn_err(std::io::Error::other(e)))?;
        let netns = rt
            .netns
            .as_deref()
            .map(|p| p.as_os_str().to_owned())
            .unwrap_or_default();
        // The plugins inherit our environment (they look up `iptables` through PATH).
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", op.as_str())
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_PATH", &self.plugin_dir)
            .env_remove("CNI_ARGS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        // Readers on their own threads so that a chatty plugin never blocks on a full pipe.
        let stdout_reader = child.stdout.take().map(spawn_reader);
        let stderr_reader = child.stderr.take().map(spawn_reader);
        let written = child
            .stdin
            .take()
            .map_or(Ok(()), |mut stdin| stdin.write_all(&stdin_data));
        let status = match wait_with_timeout(&mut child, self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                // Our own child, killed by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(CniError::Timeout {
                    plugin: plugin.to_string(),
                    command: op.as_str().to_string(),
                    timeout: self.timeout,
                });
            }
            Err(e) => return Err(spawn_err(e)),
        };
        let collect = |r: Option<std::thread::JoinHandle<Vec<u8>>>| {
            r.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let stdout_bytes = collect(stdout_reader);
        let stderr_bytes = collect(stderr_reader);
        let stdout = String::from_utf8_lossy(&stdout_bytes);
        let stderr = String::from_utf8_lossy(&stderr_bytes);
        if !status.success() {
            return Err(plugin_error(plugin, op, &stdout, &stderr, status));
        }
        // A plugin that exits before reading all of stdin fails above; one that
        // succeeded without reading it is still a success.
        drop(written);
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| CniError::BadResult {
            plugin: plugin.to_string(),
            reason: format!("{e}: {stdout}"),
        })
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` up to `timeout`, polling with a growing interval (plugins usually
/// finish within milliseconds, so the first checks come quickly).
fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_micros(500);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(20));
    }
}

fn plugin_type(conf: &Value) -> Result<&str, CniError> {
    let t = conf
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::BadConfig(conf.to_string()))?;
    if t.is_empty() || t.contains('/') || t == "." || t == ".." {
        return Err(CniError::BadConfig(conf.to_string()));
    }
    Ok(t)
}

fn plugin_error(
    plugin: &str,
    op: Operation,
    stdout: &str,
    stderr: &str,
    status: std::process::ExitStatus,
) -> CniError {
    #[derive(Deserialize)]
    struct RawError {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    let (code, msg, details) = match serde_json::from_str::<RawError>(stdout) {
        Ok(e) if !e.msg.is_empty() => (e.code, e.msg, e.details),
        _ => {
            let text = [stdout.trim(), stderr.trim()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let msg = if text.is_empty() {
                format!("plugin exited with {status}")
            } else {
                text
            };
            (0, msg, String::new())
        }
    };
    CniError::Plugin {
        plugin: plugin.to_string(),
        command: op.as_str().to_string(),
        code,
        msg,
        details,
    }
}

/// Builds the configuration one plugin of a list sees, like libcni's `buildOneConfig`:
/// the list's `name` and `cniVersion`, the previous result, and `runtimeConfig` with the
/// capability arguments the plugin declared in `capabilities`.
pub fn build_one(
    name: &str,
    plugin: &Value,
    prev_result: Option<&Value>,
    rt: &RuntimeConf,
) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("cniVersion".into(), Value::from(CNI_VERSION));
    conf.insert("name".into(), Value::from(name));
    match prev_result {
        Some(prev) if !prev.is_null() => {
            conf.insert("prevResult".into(), prev.clone());
        }
        _ => {}
    }
    let declared: Vec<String> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut runtime_config = Map::new();
    for cap in declared {
        if let Some(arg) = rt.capability_args.get(&cap) {
            runtime_config.insert(cap, arg.clone());
        }
    }
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt() -> RuntimeConf {
        let mut capability_args = BTreeMap::new();
        capability_args.insert(
            "portMappings".to_string(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        RuntimeConf {
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            capability_args,
        }
    }

    #[test]
    fn capability_args_reach_only_declaring_plugins() {
        let pm = build_one(
            "net",
            &json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            Some(&json!({"cniVersion": "1.0.0"})),
            &rt(),
        );
        assert_eq!(pm["name"], "net");
        assert_eq!(pm["cniVersion"], CNI_VERSION);
        assert_eq!(pm["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(pm["prevResult"]["cniVersion"], "1.0.0");
        let br = build_one("net", &json!({"type": "bridge"}), None, &rt());
        assert!(br.get("runtimeConfig").is_none());
        assert!(br.get("prevResult").is_none());
    }

    #[test]
    fn port_mappings_serialize_like_portmap_expects() {
        let pm = PortMapping {
            host_port: 1,
            container_port: 2,
            protocol: Protocol::Udp,
            host_ip: Some("127.0.0.1".into()),
        };
        assert_eq!(
            serde_json::to_value(pm).expect("json"),
            json!({"hostPort": 1, "containerPort": 2, "protocol": "udp", "hostIP": "127.0.0.1"})
        );
    }

    #[test]
    fn decodes_results_and_picks_the_sandbox_interface() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/x"}
            ],
            "ips": [
                {"interface": 0, "address": "10.1.0.1/24"},
                {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}
            ]
        });
        let r = CniResult::from_json("bridge", raw).expect("decode");
        let ip = r.ip_for("eth0").expect("ip");
        assert_eq!(ip.address.to_string(), "10.1.0.5");
        assert_eq!(ip.prefix_len, 24);
        assert_eq!(
            ip.gateway.map(|g| g.to_string()).as_deref(),
            Some("10.1.0.1")
        );
        assert!(CniResult::from_json("x", json!({"ips": [{"address": "nope"}]})).is_err());
    }

    #[test]
    fn plugin_errors_carry_msg_and_details() {
        let status = Command::new("false").status().expect("false");
        let e = plugin_error(
            "bridge",
            Operation::Add,
            r#"{"code":7,"msg":"bad thing","details":"more"}"#,
            "",
            status,
        );
        assert_eq!(
            e.to_string(),
            "failed to ADD network with CNI plugin bridge: bad thing (more)"
        );
        let e = plugin_error("x", Operation::Del, "", "panic text", status);
        assert!(e.to_string().contains("panic text"));
    }

    #[test]
    fn hung_plugins_are_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin = dir.path().join("hang");
        std::fs::write(&plugin, "#!/bin/sh\nexec sleep 30\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let runtime = CniRuntime::new(dir.path()).with_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let mut e = runtime
            .exec(Operation::Add, &json!({"type": "hang"}), &rt())
            .expect_err("timeout");
        // Another test thread's fork may briefly hold the script open for writing.
        for _ in 0..20 {
            match &e {
                CniError::Spawn { source, .. } if source.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(50));
                    e = runtime
                        .exec(Operation::Add, &json!({"type": "hang"}), &rt())
                        .expect_err("timeout");
                }
                _ => break,
            }
        }
        assert!(matches!(e, CniError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_plugin_is_reported() {
        let rtm = CniRuntime::new("/nonexistent-cni-dir");
        let e = rtm
            .exec(Operation::Add, &json!({"type": "bridge"}), &rt())
            .expect_err("missing");
        assert!(matches!(e, CniError::PluginNotFound { .. }));
        let e = rtm
            .exec(Operation::Add, &json!({"type": "../bin/sh"}), &rt())
            .expect_err("bad type");
        assert!(matches!(e, CniError::BadConfig(_)));
    }
}
