//! OCI bundles: a [`ContainerSpec`] (what the node wants to run) becomes a directory with a
//! `config.json` (built with `oci-spec`) and a root filesystem — an overlayfs mounted here
//! over read-only image layers, or a plain directory.
//!
//! The defaults follow containerd's CRI plugin: new pid/mount/uts/ipc namespaces, the same
//! default mounts, masked and read-only paths, and the same default capability set, so a
//! container behaves here as it would on a containerd node.
//!
//! Bundle layout (`<bundle>/`): `config.json`, `rootfs/` (the overlay mount point),
//! `upper/` and `work/` (the overlay's writable layer), plus files the shim and the
//! container manager keep there (see [`crate::container`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxPids, LinuxResources, Mount, Spec,
};
use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupMode;

/// The file name of the OCI configuration inside a bundle.
pub const CONFIG_FILE: &str = "config.json";
/// The directory inside a bundle where the overlay root filesystem is mounted.
pub const ROOTFS_DIR: &str = "rootfs";

/// Errors building or tearing down a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The container spec cannot be expressed as an OCI config.
    #[error("failed to build the OCI config: {0}")]
    InvalidSpec(String),
    /// A file or directory of the bundle could not be written or removed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The overlay root filesystem could not be mounted.
    #[error("failed to mount the overlay root filesystem at {target}: {source}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The overlay root filesystem could not be unmounted.
    #[error("failed to unmount {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// `config.json` could not be written.
    #[error("failed to write {path}: {source}")]
    WriteConfig {
        /// The config path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a container's root filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// An overlayfs over image layer directories, lowest (base) layer first; the writable
    /// layer lives in the bundle and goes away with it.
    Overlay {
        /// Unpacked image layers, lowest first.
        lowerdirs: Vec<PathBuf>,
    },
    /// A plain directory used as is (tests, or a rootfs prepared by someone else).
    Dir(PathBuf),
}

/// Which network namespace the container joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkNamespace {
    /// The host's network (and UTS) namespace: a `hostNetwork` pod.
    Host,
    /// A namespace bind-mounted at this path (the pod's, set up by CNI).
    Path(PathBuf),
    /// A fresh namespace with only a loopback device (tests, or `none` networking).
    New,
}

/// A mount the container gets on top of the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// A recursive bind mount of a host path.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Where it appears in the container.
        destination: String,
        /// Mount it read-only.
        read_only: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Where it appears in the container.
        destination: String,
        /// Its size limit in bytes, if any.
        size_bytes: Option<u64>,
    },
}

/// cgroup resource limits (Kubernetes requests/limits already converted to cgroup terms).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU shares (v1 `cpu.shares`; converted to a weight on v2 by the runtime).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes (swap is limited to the same, i.e. no swap).
    pub memory_limit: Option<i64>,
    /// Maximum number of pids.
    pub pids_limit: Option<i64>,
}

/// Capabilities added to or dropped from the runtime default set; names as Kubernetes
/// writes them (`NET_ADMIN`, with or without `CAP_`), `ALL` for all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Capabilities to add.
    pub add: Vec<String>,
    /// Capabilities to drop (applied before `add`, as containerd does).
    pub drop: Vec<String>,
}

/// The securityContext basics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    /// All capabilities, all devices allowed, no masked paths, writable `/sys`.
    pub privileged: bool,
    /// Changes to the default capability set.
    pub capabilities: Capabilities,
    /// Mount the root filesystem read-only.
    pub read_only_root_filesystem: bool,
    /// Set `no_new_privs` (Kubernetes: `allowPrivilegeEscalation: false`).
    pub no_new_privileges: bool,
}

/// Where the shim writes the container's CRI-format log and how it rotates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The log file (the kubelet's `/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub path: PathBuf,
    /// Rotate when the file exceeds this many bytes.
    pub max_size: u64,
    /// Keep at most this many files, the current one included.
    pub max_files: u32,
}

/// Everything needed to run one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container id (runtime name and bundle directory name).
    pub id: String,
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// The command and its arguments, already resolved against the image's
    /// Entrypoint/Cmd.
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The working directory (`/` when unset).
    pub working_dir: Option<String>,
    /// The user id the process runs as.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplemental group ids.
    pub supplemental_groups: Vec<u32>,
    /// The hostname (ignored with the host network, which shares the host's UTS namespace).
    pub hostname: Option<String>,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// The network namespace.
    pub network: NetworkNamespace,
    /// The pod's cgroup, relative to the cgroup root (e.g. `/berth/pod<uid>`); the
    /// container's cgroup is `<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// cgroup limits.
    pub resources: Resources,
    /// securityContext basics.
    pub security: SecurityContext,
    /// The container log.
    pub log: LogConfig,
    /// The container's stdin stays open for attach clients (`stdin: true`).
    #[serde(default)]
    pub stdin: bool,
    /// Stdin closes when the first attach client ends its input (`stdinOnce: true`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The process runs on a terminal (`tty: true`).
    #[serde(default)]
    pub tty: bool,
}

impl ContainerSpec {
    /// A spec with containerd-like defaults: root user, no extra mounts, new network
    /// namespace, no limits; the caller fills in the rest.
    pub fn new(id: impl Into<String>, rootfs: Rootfs, args: Vec<String>, log: LogConfig) -> Self {
        Self {
            id: id.into(),
            rootfs,
            args,
            env: vec![(
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            )],
            working_dir: None,
            uid: 0,
            gid: 0,
            supplemental_groups: Vec::new(),
            hostname: None,
            mounts: Vec::new(),
            network: NetworkNamespace::New,
            cgroup_parent: "/berth".to_string(),
            resources: Resources::default(),
            security: SecurityContext::default(),
            log,
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    /// The container's cgroup path relative to the cgroup root (`<parent>/<id>`).
    pub fn cgroups_path(&self) -> String {
        let parent = self.cgroup_parent.trim_end_matches('/');
        let parent = if parent.starts_with('/') {
            parent.to_string()
        } else {
            format!("/{parent}")
        };
        format!("{}/{}", parent.trim_end_matches('/'), self.id)
    }
}

/// The capability set containerd gives a container by default.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability `oci-spec` knows (a privileged container, or `add: [ALL]`).
const ALL_CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETGID",
    "SETFCAP",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// Paths containerd masks (bind-mounts over) in unprivileged containers.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths containerd makes read-only in unprivileged containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn normalize_cap(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
}

/// The capability names a container ends up with: defaults (or all when privileged),
/// minus `drop`, plus `add`.
pub fn effective_capabilities(security: &SecurityContext) -> Vec<String> {
    if security.privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let drop: Vec<String> = security
        .capabilities
        .drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect();
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for add in &security.capabilities.add {
        let add = normalize_cap(add);
        if add == "ALL" {
            return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        }
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps
}

fn mount_entry(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// Builds the OCI runtime config for `spec` with its root filesystem at `rootfs_path`.
pub fn build_oci_spec(
    spec: &ContainerSpec,
    rootfs_path: &Path,
    cgroups: CgroupMode,
) -> Result<Spec, BundleError> {
    if spec.args.is_empty() {
        return Err(BundleError::InvalidSpec(
            "the container has no command".to_string(),
        ));
    }
    let privileged = spec.security.privileged;
    let mut oci = Spec::default();
    oci.set_version("1.0.2".to_string());
    oci.set_annotations(None);

    // Root filesystem.
    let mut root = oci_spec::runtime::Root::default();
    root.set_path(rootfs_path.to_path_buf());
    root.set_readonly(Some(spec.security.read_only_root_filesystem));
    oci.set_root(Some(root));

    // Process.
    let mut process = oci_spec::runtime::Process::default();
    process.set_terminal(Some(spec.tty));
    process.set_args(Some(spec.args.clone()));
    process.set_env(Some(
        spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ));
    process.set_cwd(PathBuf::from(
        spec.working_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("/"),
    ));
    let user = process.user_mut();
    user.set_uid(spec.uid);
    user.set_gid(spec.gid);
    user.set_additional_gids(if spec.supplemental_groups.is_empty() {
        None
    } else {
        Some(spec.supplemental_groups.clone())
    });
    let mut caps = oci_spec::runtime::Capabilities::new();
    for name in effective_capabilities(&spec.security) {
        let cap: Capability = name
            .parse()
            .map_err(|_| BundleError::InvalidSpec(format!("unknown capability {name:?}")))?;
        caps.insert(cap);
    }
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps));
    // containerd leaves the inheritable and ambient sets empty (CVE-2022-24769).
    lc.set_inheritable(None);
    lc.set_ambient(None);
    process.set_capabilities(Some(lc));
    process.set_no_new_privileges(Some(spec.security.no_new_privileges));
    oci.set_process(Some(process));

    // Namespaces: new pid/mount/ipc; uts and net depend on host networking.
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None),
        namespace(LinuxNamespaceType::Ipc, None),
        namespace(LinuxNamespaceType::Mount, None),
    ];
    match &spec.network {
        NetworkNamespace::Host => {
            oci.set_hostname(None);
        }
        NetworkNamespace::Path(path) => {
            namespaces.push(namespace(LinuxNamespaceType::Network, Some(path.clone())));
            namespaces.push(namespace(LinuxNamespaceType::Uts, None));
            oci.set_hostname(spec.hostname.clone());
        }
        NetworkNamespace::New => {
            namespaces.push(namespace(LinuxNamespaceType::Network, None));
            namespaces.push(namespace(LinuxNamespaceType::Uts, None));
            oci.set_hostname(spec.hostname.clone());
        }
    }

    // Mounts: containerd's defaults, then the container's own.
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount_entry("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount_entry(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount_entry(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount_entry(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount_entry(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount_entry(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        mount_entry(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ];
    for m in &spec.mounts {
        mounts.push(match m {
            MountSpec::Bind {
                source,
                destination,
                read_only,
            } => {
                let mut e = mount_entry(
                    destination,
                    "bind",
                    "",
                    &["rbind", "rprivate", if *read_only { "ro" } else { "rw" }],
                );
                e.set_source(Some(source.clone()));
                e
            }
            MountSpec::Tmpfs {
                destination,
                size_bytes,
            } => {
                let mut opts = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "mode=1777".to_string(),
                ];
                if let Some(size) = size_bytes {
                    opts.push(format!("size={size}"));
                }
                let mut e = mount_entry(destination, "tmpfs", "tmpfs", &[]);
                e.set_options(Some(opts));
                e
            }
        });
    }
    oci.set_mounts(Some(mounts));

    // Linux: cgroups, resources, devices, masked paths.
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(spec.cgroups_path())));
    let mut resources = LinuxResources::default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(privileged);
    deny_all.set_access(Some("rwm".to_string()));
    resources.set_devices(Some(vec![deny_all]));
    let r = &spec.resources;
    if r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(r.cpu_shares);
        cpu.set_quota(r.cpu_quota);
        cpu.set_period(r.cpu_period);
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = r.memory_limit {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        // No swap beyond the limit, where the kernel lets us say so.
        if cgroups.memory_swap_limit_supported() {
            memory.set_swap(Some(limit));
        }
        resources.set_memory(Some(memory));
    }
    if let Some(limit) = r.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
    linux.set_resources(Some(resources));
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
    }
    oci.set_linux(Some(linux));
    Ok(oci)
}

/// Creates `bundle_dir` for `spec`: makes the directory, mounts the overlay root filesystem
/// (for [`Rootfs::Overlay`]) and writes `config.json`. Undoes its own work on failure.
pub fn create_bundle(
    bundle_dir: &Path,
    spec: &ContainerSpec,
    cgroups: CgroupMode,
) -> Result<(), BundleError> {
    fs::create_dir_all(bundle_dir).map_err(io_err("create", bundle_dir))?;
    let result = (|| {
        let rootfs_path = match &spec.rootfs {
            Rootfs::Dir(dir) => dir.clone(),
            Rootfs::Overlay { lowerdirs } => {
                let target = bundle_dir.join(ROOTFS_DIR);
                mount_overlay(bundle_dir, lowerdirs, &target)?;
                target
            }
        };
        let oci = build_oci_spec(spec, &rootfs_path, cgroups)?;
        let path = bundle_dir.join(CONFIG_FILE);
        oci.save(&path)
            .map_err(|source| BundleError::WriteConfig { path, source })
    })();
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = remove_bundle(bundle_dir);
    }
    result
}

/// Mounts an overlayfs at `target` with `lowerdirs` (lowest first) read-only and the
/// writable layer in `<bundle>/upper` and `<bundle>/work`.
pub fn mount_overlay(
    bundle_dir: &Path,
    lowerdirs: &[PathBuf],
    target: &Path,
) -> Result<(), BundleError> {
    if lowerdirs.is_empty() {
        return Err(BundleError::InvalidSpec(
            "an overlay root filesystem needs at least one layer".to_string(),
        ));
    }
    let upper = bundle_dir.join("upper");
    let work = bundle_dir.join("work");
    for dir in [&upper, &work, &target.to_path_buf()] {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    // overlayfs lists lower layers topmost first; image layers come lowest first.
    let mut lower = String::new();
    for dir in lowerdirs.iter().rev() {
        let s = dir.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(BundleError::InvalidSpec(format!(
                "layer path {s:?} contains ',' or ':'"
            )));
        }
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(&s);
    }
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| BundleError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// Whether `path` is a mount point (per `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(|p| p.replace("\\040", " ") == want)
            .unwrap_or(false)
    })
}

/// Unmounts the bundle's overlay root filesystem if it is mounted.
pub fn unmount_rootfs(bundle_dir: &Path) -> Result<(), BundleError> {
    let target = bundle_dir.join(ROOTFS_DIR);
    while is_mount_point(&target) {
        match umount2(&target, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::Error::EBUSY) => {
                // Something still holds it (a process leaving); detach it lazily.
                umount2(&target, MntFlags::MNT_DETACH).map_err(|source| BundleError::Unmount {
                    target: target.clone(),
                    source,
                })?;
            }
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
            Err(source) => {
                return Err(BundleError::Unmount {
                    target: target.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Unmounts the root filesystem and deletes the bundle directory (a missing one is fine).
pub fn remove_bundle(bundle_dir: &Path) -> Result<(), BundleError> {
    if !bundle_dir.exists() {
        return Ok(());
    }
    unmount_rootfs(bundle_dir)?;
    // Never recurse into a still-mounted root filesystem.
    if is_mount_point(&bundle_dir.join(ROOTFS_DIR)) {
        return Err(BundleError::Unmount {
            target: bundle_dir.join(ROOTFS_DIR),
            source: nix::Error::EBUSY,
        });
    }
    fs::remove_dir_all(bundle_dir).map_err(io_err("remove", bundle_dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec::new(
            "c1",
            Rootfs::Dir(PathBuf::from("/tmp/r")),
            vec!["sh".into()],
            LogConfig {
                path: PathBuf::from("/tmp/l"),
                max_size: 1 << 20,
                max_files: 2,
            },
        )
    }

    #[test]
    fn capabilities_follow_add_and_drop() {
        let mut sc = SecurityContext::default();
        assert_eq!(
            effective_capabilities(&sc).len(),
            DEFAULT_CAPABILITIES.len()
        );
        sc.capabilities.drop = vec!["ALL".into()];
        sc.capabilities.add = vec!["cap_net_admin".into()];
        assert_eq!(effective_capabilities(&sc), vec!["NET_ADMIN".to_string()]);
        sc.privileged = true;
        assert_eq!(effective_capabilities(&sc).len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn config_has_namespaces_cgroups_and_limits() {
        let mut s = spec();
        s.cgroup_parent = "berth/pod1/".into();
        s.resources.memory_limit = Some(1 << 24);
        s.network = NetworkNamespace::Path(PathBuf::from("/run/netns/x"));
        s.security.read_only_root_filesystem = true;
        let oci = build_oci_spec(&s, Path::new("/tmp/r"), CgroupMode::V2).unwrap();
        let json = serde_json::to_value(&oci).unwrap();
        assert_eq!(json["linux"]["cgroupsPath"], "/berth/pod1/c1");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 1 << 24);
        assert_eq!(json["root"]["readonly"], true);
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/x"));
        assert_eq!(ns.len(), 5);
        assert!(json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("CAP_KILL")));
        assert!(json["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("/proc/kcore")));
    }

    #[test]
    fn host_network_shares_uts_and_has_no_hostname() {
        let mut s = spec();
        s.network = NetworkNamespace::Host;
        s.hostname = Some("x".into());
        let oci = build_oci_spec(&s, Path::new("/tmp/r"), CgroupMode::V1).unwrap();
        let json = serde_json::to_value(&oci).unwrap();
        assert!(json.get("hostname").is_none());
        assert_eq!(json["linux"]["namespaces"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn empty_command_is_rejected() {
        let mut s = spec();
        s.args.clear();
        assert!(build_oci_spec(&s, Path::new("/"), CgroupMode::V2).is_err());
    }
}
