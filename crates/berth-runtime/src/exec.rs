//! Running another process inside a running container (`crun exec` / `runc exec`, with the
//! `--root` the container was started with): the building block of exec probes, lifecycle
//! hooks and `kubectl exec`.
//!
//! The process is described by a full OCI process spec (`--process`): the container's own
//! `config.json` process (environment, user, capabilities, rlimits, no-new-privileges) with
//! the arguments, extra environment, working directory and user of the [`ExecSpec`]. Both
//! runtimes then behave alike (crun 1.8's `--env` replaces the container's environment
//! instead of adding to it).
//!
//! Killing `crun exec` or `runc exec` does not kill the process it started in the container:
//! that process is reparented and runs on. So each exec writes the process's host pid to a
//! pid file (`--pid-file`), and [`ExecCommand::kill`] kills that process's whole process
//! group (both runtimes start it in a session of its own) after checking it still lives in
//! the container's pid namespace.
//!
//! With [`ExecSpec::tty`] the process gets a terminal, and [`ExecCommand::receive_terminal`]
//! gives the master side to talk to it through. crun: the command carries the runtime's
//! `--console-socket`, and the master is the pty the runtime hands over (the runtime's own
//! stdio is unused). runc: its non-detached exec ignores a console socket and relays the
//! container's terminal through its own stdio, which must itself be a terminal; so runc runs
//! on a pty of ours (raw, its controlling terminal, so a window size set on our master reaches
//! runc as SIGWINCH and runc resizes the container's terminal), and our master is the one.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bundle::CONFIG_FILE;
use crate::container::{ContainerError, ContainerManager, ContainerStatus};

/// The most output [`ContainerManager::exec_output`] keeps per stream (upstream's exec
/// probes read 10 KiB); the rest is read and dropped so the process never blocks on a
/// full pipe.
pub const MAX_EXEC_OUTPUT: usize = 64 << 10;

/// The runtime's own log of one exec (its errors, apart from the process's stderr).
const EXEC_LOG_SUFFIX: &str = ".log";

/// What to run inside a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The command and its arguments (looked up on the container's `PATH`).
    pub args: Vec<String>,
    /// Variables added to the container's environment (replacing ones of the same name).
    pub env: Vec<(String, String)>,
    /// The working directory (default: the container's).
    pub cwd: Option<String>,
    /// The user and group to run as (default: the container's).
    pub user: Option<(u32, u32)>,
    /// Whether the process gets a terminal (see [`ExecCommand::receive_terminal`]).
    pub tty: bool,
}

/// How an exec'd process ended and what it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit code (128 + the signal when a signal killed it).
    pub exit_code: i32,
    /// Its standard output (at most [`MAX_EXEC_OUTPUT`] bytes).
    pub stdout: Vec<u8>,
    /// Its standard error (at most [`MAX_EXEC_OUTPUT`] bytes).
    pub stderr: Vec<u8>,
}

/// A runtime command that execs one process in a container. Spawn [`ExecCommand::command`]
/// with the stdio you want (nothing is buffered here); [`ExecCommand::kill`] kills the
/// process inside the container. Dropping it removes its files from the bundle.
#[derive(Debug)]
pub struct ExecCommand {
    /// `crun|runc --root R --log L exec --process P --pid-file F <id>`. For a terminal
    /// exec its stdio is set (null, or runc's pty): take it out, spawn it and drop it, so the
    /// terminal ends with the process.
    pub command: Command,
    id: String,
    process_file: PathBuf,
    pid_file: PathBuf,
    log_file: PathBuf,
    /// The container init's pid namespace (to recognise the exec'd process).
    pid_namespace: Option<PathBuf>,
    seen: Mutex<Option<Seen>>,
    terminal: Terminal,
}

/// Where a terminal exec's master comes from.
#[derive(Debug)]
enum Terminal {
    None,
    /// crun hands it over on this socket.
    ConsoleSocket(crate::console::ConsoleSocket),
    /// runc runs on a pty of ours: its master (taken once).
    HostPty(Mutex<Option<std::os::fd::OwnedFd>>),
}

static EXEC_COUNTER: AtomicU64 = AtomicU64::new(0);

fn exec_err(id: &str, message: impl Into<String>) -> ContainerError {
    ContainerError::Exec {
        id: id.to_string(),
        message: message.into(),
    }
}

/// The process spec for an exec: the container's process with `spec` applied.
fn process_spec(config: &Value, spec: &ExecSpec) -> Value {
    let mut process = config.get("process").cloned().unwrap_or_else(|| json!({}));
    process["args"] = json!(spec.args);
    process["terminal"] = json!(spec.tty);
    let mut env: Vec<String> = process
        .get("env")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for (name, value) in &spec.env {
        let prefix = format!("{name}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{name}={value}"));
    }
    if spec.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    process["env"] = json!(env);
    if let Some(cwd) = &spec.cwd {
        process["cwd"] = json!(cwd);
    }
    if process.get("cwd").and_then(Value::as_str).is_none() {
        process["cwd"] = json!("/");
    }
    if let Some((uid, gid)) = spec.user {
        process["user"] = json!({"uid": uid, "gid": gid});
    }
    process
}

/// A field of `/proc/<pid>/stat` after the command name (0 = state, 2 = pgid).
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n).map(str::to_string)
}

/// The exec'd process as first seen: pid, start time (clock ticks) and process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    pid: i32,
    start_ticks: u64,
    pgid: i32,
}

impl ExecCommand {
    /// The host pid of the exec'd process, once the runtime started it.
    pub fn pid(&self) -> Option<i32> {
        self.observe().map(|s| s.pid)
    }

    /// Reads the pid file once the runtime wrote it and remembers who the process is.
    fn observe(&self) -> Option<Seen> {
        let mut seen = self.seen.lock().ok()?;
        if seen.is_none() {
            let pid = self.pid_from_file()?;
            let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            if ns.is_none() || ns != self.pid_namespace {
                return None;
            }
            *seen = Some(Seen {
                pid,
                start_ticks: crate::shim::proc_start_ticks(pid)?,
                pgid: stat_field(pid, 2)?.parse().ok()?,
            });
        }
        *seen
    }

    /// Whether the exec'd process has exited (false while it runs or before it started).
    pub fn exited(&self) -> bool {
        match self.observe() {
            Some(s) => !crate::shim::process_alive(s.pid, s.start_ticks),
            // A pid file for a process that is already gone (it ended before we looked).
            None => self.pid_from_file().is_some_and(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != self.pid_namespace
                    || stat_field(pid, 0).as_deref() == Some("Z")
            }),
        }
    }

    /// Kills the exec'd process and the processes it started in its process group (the
    /// runtimes start it in a session of its own) with SIGKILL — only processes in the
    /// container's pid namespace. Returns whether the process was known. Killing the
    /// runtime command itself is the caller's business (it owns the child).
    pub fn kill(&self) -> bool {
        let Some(seen) = self.observe() else {
            return false;
        };
        let own = nix::unistd::getpgrp().as_raw();
        self.kill_where(|pid, pgid| {
            (pgid == seen.pgid && pgid != own)
                || (pid == seen.pid && crate::shim::process_alive(pid, seen.start_ticks))
        });
        true
    }

    /// The pid the runtime wrote, whether or not the process still runs.
    fn pid_from_file(&self) -> Option<i32> {
        fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
    }

    /// SIGKILLs the processes of the container's pid namespace for which `select(pid,
    /// pgid)` holds.
    fn kill_where(&self, select: impl Fn(i32, i32) -> bool) {
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Some(pgid) = stat_field(pid, 2).and_then(|v| v.parse::<i32>().ok()) else {
                continue;
            };
            if !select(pid, pgid)
                || fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != self.pid_namespace
            {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The runtime's own error (not the process's), if it failed to exec.
    pub fn runtime_error(&self) -> Option<String> {
        crate::runtime::messages_from_log(&self.log_file)
    }

    /// The container id.
    pub fn container_id(&self) -> &str {
        &self.id
    }

    /// For a terminal exec: waits (blocking, up to `timeout`) for the runtime to hand over
    /// the terminal's master, or until `gave_up()` (the runtime exited first).
    pub fn receive_terminal(
        &self,
        timeout: Duration,
        gave_up: impl Fn() -> bool,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        let none =
            || std::io::Error::new(std::io::ErrorKind::InvalidInput, "the exec has no terminal");
        match &self.terminal {
            Terminal::ConsoleSocket(c) => c.receive(timeout, gave_up),
            Terminal::HostPty(master) => master.lock().map_err(|_| none())?.take().ok_or_else(none),
            Terminal::None => Err(none()),
        }
    }
}

impl Drop for ExecCommand {
    fn drop(&mut self) {
        for f in [&self.process_file, &self.pid_file, &self.log_file] {
            let _ = fs::remove_file(f);
        }
    }
}

/// Gives `command` a new pseudo-terminal as its stdio and controlling terminal (raw: the
/// process on it does its own line editing); returns the master.
fn host_pty(command: &mut Command) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::termios;
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    let mut mode = termios::tcgetattr(&pty.slave).map_err(std::io::Error::from)?;
    termios::cfmakeraw(&mut mode);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &mode)
        .map_err(std::io::Error::from)?;
    command
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    set_controlling_terminal(command);
    Ok(pty.master)
}

/// Makes the child a session leader whose controlling terminal is its stdin.
#[allow(unsafe_code)]
fn set_controlling_terminal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only setsid(2)
    // and ioctl(2), which are async-signal-safe; it touches no memory of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads `from` to EOF, keeping at most [`MAX_EXEC_OUTPUT`] bytes in `into`.
fn drain(mut from: impl Read, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Ok(mut v) = into.lock() {
                    let room = MAX_EXEC_OUTPUT.saturating_sub(v.len());
                    v.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

fn take(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    buf.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

impl ContainerManager {
    /// Prepares the runtime command that runs `spec` inside running container `id`.
    pub fn exec_command(&self, id: &str, spec: &ExecSpec) -> Result<ExecCommand, ContainerError> {
        let meta = self.meta(id)?;
        if spec.args.is_empty() {
            return Err(exec_err(id, "no command given"));
        }
        let ContainerStatus::Running { pid, .. } = self.status(id)? else {
            return Err(ContainerError::NotRunning(id.to_string()));
        };
        let bundle = self.bundle_dir(id);
        let config_path = bundle.join(CONFIG_FILE);
        let config: Value = fs::read(&config_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| exec_err(id, format!("failed to read {}: {e}", config_path.display())))?;
        let n = EXEC_COUNTER.fetch_add(1, Ordering::Relaxed);
        let stem = format!("exec-{}-{n}", std::process::id());
        let process_file = bundle.join(format!("{stem}.json"));
        let pid_file = bundle.join(format!("{stem}.pid"));
        let log_file = bundle.join(format!("{stem}{EXEC_LOG_SUFFIX}"));
        let process = serde_json::to_vec(&process_spec(&config, spec))
            .map_err(|e| exec_err(id, format!("failed to encode the process: {e}")))?;
        fs::write(&process_file, process).map_err(|e| {
            exec_err(
                id,
                format!("failed to write {}: {e}", process_file.display()),
            )
        })?;
        let mut command = Command::new(&meta.runtime_binary);
        command
            .arg("--root")
            .arg(&meta.runtime_root)
            .arg(format!("--log={}", log_file.display()))
            .arg("--log-format=json")
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        let terminal = match (spec.tty, meta.runtime) {
            (false, _) => Terminal::None,
            (true, crate::runtime::RuntimeKind::Runc) => {
                command.arg("--tty");
                let master = host_pty(&mut command)
                    .map_err(|e| exec_err(id, format!("failed to make a terminal: {e}")))?;
                Terminal::HostPty(Mutex::new(Some(master)))
            }
            (true, _) => {
                let socket = crate::console::ConsoleSocket::bind(&self.console_dir())
                    .map_err(|e| exec_err(id, format!("failed to make a console socket: {e}")))?;
                command.arg("--console-socket").arg(socket.path());
                // The runtime's own stdio carries nothing.
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                Terminal::ConsoleSocket(socket)
            }
        };
        command.arg(id).current_dir("/");
        Ok(ExecCommand {
            command,
            id: id.to_string(),
            process_file,
            pid_file,
            log_file,
            pid_namespace: fs::read_link(format!("/proc/{pid}/ns/pid")).ok(),
            seen: Mutex::new(None),
            terminal,
        })
    }

    /// Runs `args` in container `id` and collects its exit code and output. After `timeout`
    /// the process (and its process group) is killed and the result is
    /// [`ContainerError::ExecTimedOut`]. When the runtime itself fails to exec (no such
    /// executable, bad working directory) the result is [`ContainerError::Exec`] with the
    /// runtime's message. Blocking.
    ///
    /// Processes the command leaves in the background keep running under crun; runc's
    /// exec waits for them, so under runc they are killed at the timeout and the
    /// command's own exit code is returned.
    pub fn exec_output(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ContainerError> {
        let mut exec = self.exec_command(
            id,
            &ExecSpec {
                args: args.to_vec(),
                ..Default::default()
            },
        )?;
        let mut child = exec
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| exec_err(id, format!("failed to run the runtime: {e}")))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = mpsc::channel();
        let mut readers = 0;
        let mut read_into = |pipe: Option<Box<dyn Read + Send>>, buf: &Arc<Mutex<Vec<u8>>>| {
            if let Some(pipe) = pipe {
                readers += 1;
                let (done, buf) = (done_tx.clone(), buf.clone());
                std::thread::spawn(move || {
                    drain(pipe, buf);
                    let _ = done.send(());
                });
            }
        };
        read_into(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            &stdout,
        );
        read_into(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            &stderr,
        );
        let deadline = Instant::now().checked_add(timeout);
        let past = |d: Option<Instant>| d.is_some_and(|d| Instant::now() >= d);
        let status = loop {
            // Note who the process is while it runs (for the kill at the deadline).
            let _ = exec.pid();
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if past(deadline) => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    exec.kill();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(exec_err(id, format!("failed to wait for the runtime: {e}")));
                }
            }
        };
        let status = match status {
            Some(status) => status,
            None => {
                // runc waits until the processes the command left in the background close
                // its output; when the command itself is done, those are killed and its
                // exit code still counts.
                let finished = exec.exited();
                if finished {
                    // What it left in the background: its process group (runc makes it a
                    // group leader, so the group id is its pid).
                    let leader = exec.pid_from_file().unwrap_or(0);
                    exec.kill_where(|_, pgid| pgid == leader && leader > 1);
                }
                // The process may not have a pid file yet if the runtime is slow to start it.
                let grace = Instant::now() + Duration::from_secs(1);
                while !finished && !exec.kill() && Instant::now() < grace {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut reaped = None;
                if finished {
                    while reaped.is_none() && Instant::now() < grace {
                        reaped = child.try_wait().ok().flatten();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                match reaped {
                    Some(status) => status,
                    None => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(ContainerError::ExecTimedOut {
                            id: id.to_string(),
                            command: args.join(" "),
                            timeout,
                        });
                    }
                }
            }
        };
        // The output ends when every process holding the pipes is gone; one left running
        // in the background (`cmd &`) must not hold us: what the command wrote is in the
        // pipes already.
        let wait_until = Instant::now() + Duration::from_millis(200);
        for _ in 0..readers {
            let left = wait_until.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        // 255 with an error in the runtime's log: the runtime failed to exec, not the process.
        if exit_code == 255 {
            if let Some(message) = exec.runtime_error() {
                return Err(exec_err(id, message));
            }
        }
        Ok(ExecOutput {
            exit_code,
            stdout: take(&stdout),
            stderr: take(&stderr),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn process_spec_keeps_the_container_process() {
        let config = json!({"process": {
            "args": ["sleep", "1000"],
            "env": ["PATH=/bin", "FOO=old"],
            "cwd": "/srv",
            "user": {"uid": 0, "gid": 0, "additionalGids": [5]},
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": true,
        }});
        let p = process_spec(
            &config,
            &ExecSpec {
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("FOO".into(), "new".into()), ("BAR".into(), "1".into())],
                ..Default::default()
            },
        );
        assert_eq!(p["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "FOO=new", "BAR=1"]));
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(p["user"]["additionalGids"], json!([5]));
        assert_eq!(p["capabilities"]["bounding"], json!(["CAP_KILL"]));
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["terminal"], false);
        let p = process_spec(
            &json!({}),
            &ExecSpec {
                args: vec!["true".into()],
                cwd: Some("/tmp".into()),
                user: Some((1000, 100)),
                ..Default::default()
            },
        );
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"], json!({"uid": 1000, "gid": 100}));
    }
}
