//! The node agent's container API: start a container under its own shim, ask its status,
//! stop it (stop signal, grace period, then SIGKILL) and remove it.
//!
//! Nothing lives only in memory: each container is a bundle directory
//! (`<state_dir>/containers/<id>/`) holding `meta.json` (how it was started: runtime, log,
//! exit file), the shim's `state.json` (pids and start time) and, once it ended, the exit
//! file. A fresh [`ContainerManager`] over the same state directory — a restarted node
//! agent — therefore sees exactly what the previous one saw.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, ContainerSpec};
use crate::cgroup::CgroupMode;
use crate::runtime::{CliRuntime, OciRuntime, RuntimeError, RuntimeKind};
use crate::shim::{
    self, process_alive, read_json, write_json_atomic, ExitRecord, ShimArgs, ShimError, ShimState,
    StartReport,
};

/// How the container was started (`meta.json` in its bundle).
pub const META_FILE: &str = "meta.json";
/// The default exit file name in the bundle.
pub const EXIT_FILE: &str = "exit.json";

/// How often `stop` looks for the exit file.
const POLL: Duration = Duration::from_millis(10);

/// Errors from the container API.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The id cannot name a container.
    #[error(
        "failed to use container id {0:?}: only letters, digits, '-', '_' and '.' are allowed"
    )]
    InvalidId(String),
    /// A container with this id already has a bundle.
    #[error("failed to create container {0}: it already exists")]
    AlreadyExists(String),
    /// No container with this id.
    #[error("failed to find container {0}")]
    NotFound(String),
    /// The container still runs (stop it first).
    #[error("failed to remove container {0}: it is still running")]
    StillRunning(String),
    /// The bundle could not be made or removed.
    #[error("failed to prepare the bundle of container {id}: {source}")]
    Bundle {
        /// The container id.
        id: String,
        /// The cause.
        #[source]
        source: BundleError,
    },
    /// The runtime refused to create or start the container; `message` is the runtime's
    /// (a `CreateContainerError`/`ContainerCannotRun` reason).
    #[error("failed to create container {id}: {message}")]
    Create {
        /// The container id.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// The shim could not be run, or died before reporting.
    #[error("failed to run the shim of container {id}: {message}")]
    Shim {
        /// The container id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// The runtime failed on a later operation.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The container does not run (exec needs a running container).
    #[error("failed to exec in container {0}: it is not running")]
    NotRunning(String),
    /// The runtime could not exec the process; `message` is the runtime's.
    #[error("failed to exec in container {id}: {message}")]
    Exec {
        /// The container id.
        id: String,
        /// What went wrong (the runtime's message when it failed).
        message: String,
    },
    /// The exec'd process ran past its timeout and was killed.
    #[error("failed to exec in container {id}: command {command:?} timed out after {timeout:?}")]
    ExecTimedOut {
        /// The container id.
        id: String,
        /// The command line, joined by spaces.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A state file could not be read or written.
    #[error("failed to access the state of container {id}: {source}")]
    State {
        /// The container id.
        id: String,
        /// The cause.
        #[source]
        source: ShimError,
    },
}

/// Where the manager keeps things and what it runs.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The node's container state directory (e.g. `<data-dir>/containers`): bundles go in
    /// `<state_dir>/containers`, the runtime's `--root` is `<state_dir>/runtime/<name>`.
    pub state_dir: PathBuf,
    /// The OCI runtime for new containers.
    pub runtime: RuntimeKind,
    /// Its executable (found on `PATH` when `None`).
    pub runtime_binary: Option<PathBuf>,
    /// The executable that runs the shim as `<shim_exe> shim ...` (the berth binary).
    pub shim_exe: PathBuf,
}

/// The on-disk record of how a container was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The container id.
    pub id: String,
    /// The runtime it runs under.
    pub runtime: RuntimeKind,
    /// The runtime executable.
    pub runtime_binary: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    /// The container log.
    pub log_path: PathBuf,
    /// The exit file.
    pub exit_file: PathBuf,
    /// The container's cgroup (relative to the cgroup root).
    pub cgroups_path: String,
    /// When the bundle was made.
    pub created_at: DateTime<Utc>,
}

/// A container that was just started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    /// The container id.
    pub id: String,
    /// Its init process (host pid).
    pub pid: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its bundle directory.
    pub bundle: PathBuf,
}

/// What a container is doing, from its files on disk and `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    /// The init process runs.
    Running {
        /// Its host pid.
        pid: i32,
        /// When it started.
        started_at: DateTime<Utc>,
    },
    /// It ended.
    Exited {
        /// The exit code (128 + signal when killed by one).
        code: i32,
        /// The killing signal, if any.
        signal: Option<i32>,
        /// Whether the kernel OOM-killed a process of the container.
        oom_killed: bool,
        /// When it started.
        started_at: Option<DateTime<Utc>>,
        /// When it ended.
        finished_at: DateTime<Utc>,
    },
    /// Its state cannot be known (the shim died without recording an exit).
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Starts, inspects, stops and removes containers; holds no state besides its config.
#[derive(Clone, Debug)]
pub struct ContainerManager {
    config: ManagerConfig,
    cgroups: CgroupMode,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ContainerManager {
    /// A manager over `config.state_dir`; containers already there are adopted as they are.
    pub fn new(config: ManagerConfig) -> Self {
        Self {
            config,
            cgroups: CgroupMode::detect(),
        }
    }

    /// The host's cgroup layout, as detected.
    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups
    }

    /// The bundle directory of container `id`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("containers").join(id)
    }

    /// Where console sockets are made (short paths: a socket path has at most 108 bytes).
    pub fn console_dir(&self) -> PathBuf {
        self.config.state_dir.join("console")
    }

    /// The runtime's state directory for `kind`.
    pub fn runtime_root(&self, kind: RuntimeKind) -> PathBuf {
        self.config.state_dir.join("runtime").join(kind.name())
    }

    fn check_id(id: &str) -> Result<(), ContainerError> {
        if valid_id(id) {
            Ok(())
        } else {
            Err(ContainerError::InvalidId(id.to_string()))
        }
    }

    pub(crate) fn meta(&self, id: &str) -> Result<ContainerMeta, ContainerError> {
        Self::check_id(id)?;
        read_json(&self.bundle_dir(id).join(META_FILE))
            .map_err(|source| ContainerError::State {
                id: id.to_string(),
                source,
            })?
            .ok_or_else(|| ContainerError::NotFound(id.to_string()))
    }

    fn runtime_for(meta: &ContainerMeta) -> CliRuntime {
        CliRuntime::with_binary(meta.runtime, &meta.runtime_binary, &meta.runtime_root)
    }

    /// The ids of all containers with a bundle (running or not) — what to adopt.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.config.state_dir.join("containers")) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join(META_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Creates the bundle, starts the shim and returns once the container runs. On failure
    /// nothing is left behind and the error carries the runtime's message.
    pub fn start(&self, spec: &ContainerSpec) -> Result<RunningContainer, ContainerError> {
        let id = spec.id.clone();
        Self::check_id(&id)?;
        let bundle = self.bundle_dir(&id);
        if bundle.exists() {
            return Err(ContainerError::AlreadyExists(id));
        }
        let kind = self.config.runtime;
        let runtime_binary = match &self.config.runtime_binary {
            Some(b) => b.clone(),
            None => kind
                .find_binary()
                .ok_or(RuntimeError::NotInstalled(kind.name()))?,
        };
        let runtime_root = self.runtime_root(kind);
        fs::create_dir_all(&runtime_root).map_err(|source| ContainerError::Bundle {
            id: id.clone(),
            source: BundleError::Io {
                action: "create",
                path: runtime_root.clone(),
                source,
            },
        })?;
        bundle::create_bundle(&bundle, spec, self.cgroups).map_err(|source| {
            ContainerError::Bundle {
                id: id.clone(),
                source,
            }
        })?;
        let meta = ContainerMeta {
            id: id.clone(),
            runtime: kind,
            runtime_binary,
            runtime_root,
            log_path: spec.log.path.clone(),
            exit_file: bundle.join(EXIT_FILE),
            cgroups_path: spec.cgroups_path(),
            created_at: Utc::now(),
        };
        let result = write_json_atomic(&bundle.join(META_FILE), &meta)
            .map_err(|source| ContainerError::State {
                id: id.clone(),
                source,
            })
            .and_then(|()| self.run_shim(spec, &meta, &bundle));
        match result {
            Ok(StartReport::Started { pid, started_at }) => Ok(RunningContainer {
                id,
                pid,
                started_at,
                bundle,
            }),
            Ok(StartReport::Failed { message }) => {
                self.cleanup_failed(&meta, &bundle);
                Err(ContainerError::Create { id, message })
            }
            Err(e) => {
                self.cleanup_failed(&meta, &bundle);
                Err(e)
            }
        }
    }

    fn cleanup_failed(&self, meta: &ContainerMeta, bundle: &Path) {
        let _ = Self::runtime_for(meta).delete(&meta.id, true);
        let _ = bundle::remove_bundle(bundle);
    }

    fn run_shim(
        &self,
        spec: &ContainerSpec,
        meta: &ContainerMeta,
        bundle: &Path,
    ) -> Result<StartReport, ContainerError> {
        let shim_err = |message: String| ContainerError::Shim {
            id: meta.id.clone(),
            message,
        };
        let args = ShimArgs {
            bundle: bundle.to_path_buf(),
            id: meta.id.clone(),
            runtime: meta.runtime,
            runtime_binary: meta.runtime_binary.clone(),
            runtime_root: meta.runtime_root.clone(),
            log: spec.log.path.clone(),
            log_max_size: spec.log.max_size,
            log_max_files: spec.log.max_files,
            exit_file: meta.exit_file.clone(),
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            tty: spec.tty,
            daemon: false,
        };
        let shim_log = bundle.join(shim::SHIM_LOG);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map_err(|e| shim_err(format!("failed to open {}: {e}", shim_log.display())))?;
        let mut child = Command::new(&self.config.shim_exe)
            .arg("shim")
            .args(args.to_args())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                shim_err(format!(
                    "failed to run {}: {e}",
                    self.config.shim_exe.display()
                ))
            })?;
        let mut out = String::new();
        let read = child
            .stdout
            .take()
            .map(|mut s| s.read_to_string(&mut out))
            .unwrap_or(Ok(0));
        // The intermediate exits right after spawning the daemon; reap it.
        let _ = child.wait();
        read.map_err(|e| shim_err(format!("failed to read its report: {e}")))?;
        match out.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => serde_json::from_str(line)
                .map_err(|e| shim_err(format!("failed to parse its report {line:?}: {e}"))),
            None => {
                let log = fs::read_to_string(&shim_log).unwrap_or_default();
                Err(shim_err(format!(
                    "it exited without reporting: {}",
                    log.trim()
                )))
            }
        }
    }

    /// The container's status, from its files and `/proc` only.
    pub fn status(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        let meta = self.meta(id)?;
        let state_err = |source| ContainerError::State {
            id: id.to_string(),
            source,
        };
        if let Some(exit) = read_json::<ExitRecord>(&meta.exit_file).map_err(state_err)? {
            return Ok(exited(exit));
        }
        let state: Option<ShimState> =
            read_json(&self.bundle_dir(id).join(shim::STATE_FILE)).map_err(state_err)?;
        let Some(state) = state else {
            return Ok(ContainerStatus::Unknown {
                reason: "the shim has not recorded a start".to_string(),
            });
        };
        if process_alive(state.pid, state.pid_start_ticks) {
            return Ok(ContainerStatus::Running {
                pid: state.pid,
                started_at: state.started_at,
            });
        }
        // The init is gone; its shim is about to record the exit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(state.shim_pid, state.shim_start_ticks) && Instant::now() < deadline {
            if meta.exit_file.exists() {
                break;
            }
            std::thread::sleep(POLL);
        }
        match read_json::<ExitRecord>(&meta.exit_file).map_err(state_err)? {
            Some(exit) => Ok(exited(exit)),
            None => Ok(ContainerStatus::Unknown {
                reason: "the shim exited without recording an exit status".to_string(),
            }),
        }
    }

    /// Sends `signal` (the image's STOPSIGNAL, usually SIGTERM), waits up to `grace` for the
    /// container to exit, then SIGKILLs it; returns the final status.
    pub fn stop(
        &self,
        id: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ContainerStatus, ContainerError> {
        let meta = self.meta(id)?;
        let ContainerStatus::Running { pid, .. } = self.status(id)? else {
            return self.status(id);
        };
        let runtime = Self::runtime_for(&meta);
        self.signal(&runtime, id, pid, signal);
        if !self.wait_exit(&meta, grace) {
            self.signal(&runtime, id, pid, libc::SIGKILL);
            self.wait_exit(&meta, Duration::from_secs(10));
        }
        self.status(id)
    }

    fn signal(&self, runtime: &CliRuntime, id: &str, pid: i32, signal: i32) {
        if runtime.kill(id, signal, false).is_err() {
            // The runtime lost track (or the container is on its way out): signal directly,
            // but only the process we started.
            if let Ok(Some(state)) =
                read_json::<ShimState>(&self.bundle_dir(id).join(shim::STATE_FILE))
            {
                if state.pid == pid && process_alive(pid, state.pid_start_ticks) {
                    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                    }
                }
            }
        }
    }

    /// Waits until the shim recorded the exit, or until both the container and its shim
    /// are gone (a shim killed from outside never records one).
    fn wait_exit(&self, meta: &ContainerMeta, timeout: Duration) -> bool {
        let state: Option<ShimState> = read_json(&self.bundle_dir(&meta.id).join(shim::STATE_FILE))
            .ok()
            .flatten();
        let deadline = Instant::now() + timeout;
        loop {
            if meta.exit_file.exists() {
                return true;
            }
            if let Some(st) = &state {
                if !process_alive(st.pid, st.pid_start_ticks)
                    && !process_alive(st.shim_pid, st.shim_start_ticks)
                {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Deletes the runtime state, unmounts the root filesystem and deletes the bundle (the
    /// log stays). A missing container is fine; a running one is an error.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let meta = match self.meta(id) {
            Ok(m) => m,
            Err(ContainerError::NotFound(_)) => {
                // A half-made bundle without meta.json: still clean it up.
                let bundle = self.bundle_dir(id);
                return bundle::remove_bundle(&bundle).map_err(|source| ContainerError::Bundle {
                    id: id.to_string(),
                    source,
                });
            }
            Err(e) => return Err(e),
        };
        if let ContainerStatus::Running { .. } = self.status(id)? {
            return Err(ContainerError::StillRunning(id.to_string()));
        }
        // Let a shim that just recorded the exit finish deleting the runtime state, so the
        // two deletes do not race.
        if let Ok(Some(state)) = read_json::<ShimState>(&self.bundle_dir(id).join(shim::STATE_FILE))
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(state.shim_pid, state.shim_start_ticks) && Instant::now() < deadline
            {
                std::thread::sleep(POLL);
            }
        }
        if let Err(e) = Self::runtime_for(&meta).delete(id, true) {
            if !e.is_not_found() {
                return Err(e.into());
            }
        }
        bundle::remove_bundle(&self.bundle_dir(id)).map_err(|source| ContainerError::Bundle {
            id: id.to_string(),
            source,
        })
    }
}

fn exited(e: ExitRecord) -> ContainerStatus {
    ContainerStatus::Exited {
        code: e.exit_code,
        signal: e.signal,
        oom_killed: e.oom_killed,
        started_at: e.started_at,
        finished_at: e.finished_at,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("abc-1_2.x"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
        assert!(!valid_id(".hidden"));
    }

    #[test]
    fn unknown_container_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let m = ContainerManager::new(ManagerConfig {
            state_dir: dir.path().to_path_buf(),
            runtime: RuntimeKind::Crun,
            runtime_binary: None,
            shim_exe: PathBuf::from("/nonexistent"),
        });
        assert!(matches!(m.status("x"), Err(ContainerError::NotFound(_))));
        assert!(m.remove("x").is_ok());
        assert!(m.list().is_empty());
    }
}
