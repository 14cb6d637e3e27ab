//! berth-runtime: running one container through a standard OCI runtime (crun or runc).
//!
//! The pieces, bottom up:
//! - [`bundle`]: a container description ([`ContainerSpec`]) becomes an OCI bundle — a
//!   `config.json` and a root filesystem (an overlayfs over image layers, or a plain dir).
//! - [`cgroup`]: which cgroup layout the host has (v1, hybrid, v2) and what the kernel says
//!   about a container's cgroup (OOM kills).
//! - [`runtime`]: the [`OciRuntime`] trait and its command-line driver for crun and runc.
//! - [`logs`]: the CRI log format (`<time> <stream> <P|F> <line>`) with size-based rotation.
//! - [`shim`]: the per-container process that owns a container's stdio, logs and exit status,
//!   so the node agent can restart without stopping containers.
//! - [`container`]: the node's API — start, status, stop, remove — with all state on disk, so
//!   a restarted node agent adopts running containers by reading their bundle directories.
//! - [`console`]: terminals — the runtime's console socket and window sizes.
//! - [`exec`]: running another process in a running container (exec probes, hooks, `exec`).

pub mod bundle;
pub mod cgroup;
pub mod console;
pub mod container;
pub mod exec;
pub mod logs;
pub mod pages;
pub mod runtime;
pub mod shim;

pub use bundle::{
    BundleError, Capabilities, ContainerSpec, LogConfig, MountSpec, NetworkNamespace, Resources,
    Rootfs, SecurityContext,
};
pub use container::{
    ContainerError, ContainerManager, ContainerStatus, ManagerConfig, RunningContainer,
};
pub use exec::{ExecCommand, ExecOutput, ExecSpec};
pub use runtime::{CliRuntime, OciRuntime, RuntimeError, RuntimeKind};
