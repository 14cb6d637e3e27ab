//! The OCI runtime driver: the [`OciRuntime`] trait (create, start, state, kill, delete)
//! and [`CliRuntime`], which runs the `crun` or `runc` command line.
//!
//! Every runtime invocation gets `--root <state dir>` so two berth servers on one machine
//! (different data dirs) never see each other's containers. Errors keep the runtime's own
//! message, which becomes a container's `CreateContainerError`/`ContainerCannotRun` reason.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Which OCI runtime to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// crun (the default: fast to start, small).
    #[default]
    Crun,
    /// runc.
    Runc,
}

impl RuntimeKind {
    /// The command name (`crun` or `runc`).
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runc => "runc",
        }
    }

    /// Finds the runtime's executable on `PATH` or in the usual system directories.
    pub fn find_binary(self) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(
                ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
                    .iter()
                    .map(PathBuf::from),
            )
            .map(|dir| dir.join(self.name()))
            .find(|p| p.is_file())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crun" => Ok(RuntimeKind::Crun),
            "runc" => Ok(RuntimeKind::Runc),
            other => Err(RuntimeError::UnknownRuntime(other.to_string())),
        }
    }
}

/// Errors from the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime name is neither `crun` nor `runc`.
    #[error("failed to select the OCI runtime: unknown runtime {0:?} (want crun or runc)")]
    UnknownRuntime(String),
    /// The runtime's executable is not installed.
    #[error("failed to find the {0} executable")]
    NotInstalled(&'static str),
    /// The runtime could not be started at all.
    #[error("failed to run {binary}: {source}")]
    Spawn {
        /// The executable.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime ran and failed; `message` is what it said.
    #[error("failed to {op} container {id}: {message}")]
    Command {
        /// The runtime operation (create, start, state, kill, delete).
        op: &'static str,
        /// The container id.
        id: String,
        /// The runtime's error message.
        message: String,
    },
    /// The runtime's `state` output could not be parsed.
    #[error("failed to parse the state of container {id}: {source}")]
    ParseState {
        /// The container id.
        id: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl RuntimeError {
    /// Whether the runtime said the container does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::Command { message, .. } => {
                message.contains("does not exist") || message.contains("No such file or directory")
            }
            _ => false,
        }
    }

    /// The runtime's own message, for a container status reason.
    pub fn runtime_message(&self) -> String {
        match self {
            RuntimeError::Command { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// The runtime's view of a container (`<runtime> state <id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeState {
    /// The container id.
    pub id: String,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The container's init process (0 once stopped).
    #[serde(default)]
    pub pid: i32,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// An OCI runtime's lifecycle operations. Blocking: call from a thread or `spawn_blocking`.
pub trait OciRuntime: Send + Sync {
    /// Which runtime this is.
    fn kind(&self) -> RuntimeKind;

    /// Creates container `id` from `bundle`, writing its init pid to `pid_file`; the
    /// container's stdio is `stdio` (stdin, stdout, stderr), or, for a terminal, the pty
    /// whose master the runtime sends to `console_socket`.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdio: [Stdio; 3],
        console_socket: Option<&Path>,
    ) -> Result<(), RuntimeError>;

    /// Starts the user process of a created container.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// The runtime's state of the container.
    fn state(&self, id: &str) -> Result<RuntimeState, RuntimeError>;

    /// Sends `signal` to the container's init process (`all`: to every process in it).
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError>;

    /// Deletes the runtime's state (and cgroup) of a stopped container; `force` kills it first.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
}

/// The runtime log file `create` writes into the bundle (the runtime's own errors, kept
/// apart from the container's stderr, which is the same file descriptor).
pub const RUNTIME_LOG: &str = "runtime.log";

/// An [`OciRuntime`] that runs the crun or runc command line.
#[derive(Clone, Debug)]
pub struct CliRuntime {
    kind: RuntimeKind,
    binary: PathBuf,
    root: PathBuf,
}

impl CliRuntime {
    /// A driver for `kind` found on this machine, keeping its state under `root`.
    pub fn new(kind: RuntimeKind, root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let binary = kind
            .find_binary()
            .ok_or(RuntimeError::NotInstalled(kind.name()))?;
        Ok(Self::with_binary(kind, binary, root))
    }

    /// A driver running `binary` as runtime `kind`, keeping its state under `root`.
    pub fn with_binary(
        kind: RuntimeKind,
        binary: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            kind,
            binary: binary.into(),
            root: root.into(),
        }
    }

    /// The runtime executable.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The runtime's state directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// Runs `cmd`, returning its stdout, or the runtime's message on failure.
    fn run(&self, op: &'static str, id: &str, mut cmd: Command) -> Result<Vec<u8>, RuntimeError> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::Command {
                op,
                id: id.to_string(),
                message: message_from_stderr(&out.stderr, out.status),
            })
        }
    }
}

/// The runtime's message from its stderr: the last `msg="..."` of runc's logrus lines, or
/// the text as is (crun).
fn message_from_stderr(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.find("msg=\"") {
            Some(i) => line[i + 5..]
                .trim_end()
                .trim_end_matches('"')
                .replace("\\\"", "\""),
            None => line.trim().to_string(),
        })
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        format!("exited with {status}")
    } else {
        lines.join("; ")
    }
}

/// The error messages in a runtime's JSON log (`{"level":"error","msg":...}` lines).
pub fn messages_from_log(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let level = v.get("level")?.as_str()?;
            if level == "error" || level == "fatal" {
                Some(v.get("msg")?.as_str()?.to_string())
            } else {
                None
            }
        })
        .collect();
    if msgs.is_empty() {
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    } else {
        Some(msgs.join("; "))
    }
}

impl OciRuntime for CliRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdio: [Stdio; 3],
        console_socket: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let [stdin, stdout, stderr] = stdio;
        let log = bundle.join(RUNTIME_LOG);
        // A fresh log per attempt: only this create's messages count.
        let _ = fs::remove_file(&log);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg(format!("--log={}", log.display()))
            .arg("--log-format=json")
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id).stdin(stdin).stdout(stdout).stderr(stderr);
        let status = cmd.status().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Command {
                op: "create",
                id: id.to_string(),
                message: messages_from_log(&log)
                    .unwrap_or_else(|| format!("{} exited with {status}", self.kind.name())),
            })
        }
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("start").arg(id);
        self.run("start", id, cmd).map(|_| ())
    }

    fn state(&self, id: &str) -> Result<RuntimeState, RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("state").arg(id);
        let out = self.run("state", id, cmd)?;
        serde_json::from_slice(&out).map_err(|source| RuntimeError::ParseState {
            id: id.to_string(),
            source,
        })
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run("kill", id, cmd).map(|_| ())
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut cmd = self.command();
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.run("delete", id, cmd).map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn parses_runtime_messages() {
        let st = std::process::ExitStatus::from_raw(256);
        assert_eq!(
            message_from_stderr(
                b"time=\"x\" level=error msg=\"container does not exist\"\n",
                st
            ),
            "container does not exist"
        );
        assert_eq!(message_from_stderr(b"crun: boom\n", st), "crun: boom");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("l");
        fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"msg\":\"exec: /nope\",\"level\":\"error\"}\n",
        )
        .unwrap();
        assert_eq!(messages_from_log(&log).as_deref(), Some("exec: /nope"));
        assert!("kata".parse::<RuntimeKind>().is_err());
    }
}
