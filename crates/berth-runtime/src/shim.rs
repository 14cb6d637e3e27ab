//! The per-container shim: a small process (our own binary re-executed as
//! `<exe> shim --bundle B --id ID ...`) that owns one container for its whole life.
//!
//! It detaches from its caller (new session, reparented to init by a short-lived
//! intermediate), becomes the child subreaper of the container, creates and starts it
//! through the OCI runtime with pipes as its stdout/stderr, copies those into a CRI-format
//! log, waits for the container's init to exit and records the exit status (code or
//! signal, OOM kill, times) atomically to the exit file, then deletes the runtime state and
//! exits. Because the shim, not the node agent, is the container's parent, the node agent
//! can restart at will; everything it needs to adopt the container again is on disk:
//! [`STATE_FILE`] while running, the exit file once stopped.
//!
//! Start protocol: the caller reads the shim's stdout to EOF; the shim writes one JSON
//! line ([`StartReport`]) once the container runs (or failed to), then closes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupMode};
use crate::logs::{copy_stream_with, CriLogWriter, Stream};
use crate::runtime::{CliRuntime, OciRuntime, RuntimeKind};

/// The shim's record of a started container, in the bundle.
pub const STATE_FILE: &str = "state.json";
/// The container init's pid, written by the runtime.
pub const PID_FILE: &str = "container.pid";
/// The shim's own diagnostics (its stderr).
pub const SHIM_LOG: &str = "shim.log";
/// The unix socket in the bundle where clients attach to the container's stdio.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Attach frames (one byte stream id, a big-endian u32 length, the data): the shim sends
/// the container's output on [`ATTACH_STDOUT`]/[`ATTACH_STDERR`]; clients send input on
/// [`ATTACH_STDIN`], end it with [`ATTACH_CLOSE_STDIN`], and resize a terminal with
/// [`ATTACH_RESIZE`] (columns and rows, big-endian u16 each).
pub const ATTACH_STDIN: u8 = 0;
/// The container's stdout (a terminal's output too).
pub const ATTACH_STDOUT: u8 = 1;
/// The container's stderr.
pub const ATTACH_STDERR: u8 = 2;
/// A terminal's new size.
pub const ATTACH_RESIZE: u8 = 4;
/// The client's input ended.
pub const ATTACH_CLOSE_STDIN: u8 = 255;

/// A unix socket path usable whatever the length of the real one: `sun_path` holds only 108
/// bytes, less than `<data-dir>/containers/<64-hex id>/attach.sock` under a long data dir.
/// The socket's directory is opened (`O_PATH`) and the socket named through
/// `/proc/self/fd/<fd>/<name>`; the directory stays open as long as this value lives.
pub struct SocketPath {
    _dir: File,
    path: PathBuf,
}

impl SocketPath {
    /// The short name of the socket at `path`.
    pub fn new(path: &Path) -> std::io::Result<SocketPath> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a socket path", path.display()),
            ));
        };
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath { _dir: dir, path })
    }

    /// The path to bind or connect to (valid in this process only).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One attach frame.
pub fn attach_frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 5);
    v.push(stream);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Errors inside the shim (reported to the caller, or to the shim's log).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The command line is incomplete or wrong.
    #[error("failed to parse the shim arguments: {0}")]
    Args(String),
    /// A file could not be read or written.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("failed to {action}: {source}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// The shim's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimArgs {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container id.
    pub id: String,
    /// The OCI runtime.
    pub runtime: RuntimeKind,
    /// The runtime executable.
    pub runtime_binary: PathBuf,
    /// The runtime's state directory.
    pub runtime_root: PathBuf,
    /// The container log.
    pub log: PathBuf,
    /// Rotate the log past this size.
    pub log_max_size: u64,
    /// Keep this many log files.
    pub log_max_files: u32,
    /// Where the exit status goes.
    pub exit_file: PathBuf,
    /// Keep the container's stdin open for attach clients.
    pub stdin: bool,
    /// Close stdin when the first attach client ends its input.
    pub stdin_once: bool,
    /// Run the container on a terminal.
    pub tty: bool,
    /// Set on the detached (second) process.
    pub daemon: bool,
}

impl ShimArgs {
    /// The command-line arguments (after `shim`) that [`ShimArgs::parse`] reads back.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--bundle".to_string(),
            self.bundle.display().to_string(),
            "--id".to_string(),
            self.id.clone(),
            "--runtime".to_string(),
            self.runtime.name().to_string(),
            "--runtime-binary".to_string(),
            self.runtime_binary.display().to_string(),
            "--runtime-root".to_string(),
            self.runtime_root.display().to_string(),
            "--log".to_string(),
            self.log.display().to_string(),
            "--log-max-size".to_string(),
            self.log_max_size.to_string(),
            "--log-max-files".to_string(),
            self.log_max_files.to_string(),
            "--exit-file".to_string(),
            self.exit_file.display().to_string(),
        ];
        for (on, flag) in [
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
            (self.tty, "--tty"),
            (self.daemon, "--daemon"),
        ] {
            if on {
                v.push(flag.to_string());
            }
        }
        v
    }

    /// Parses the arguments after `shim` (a leading `shim` word is skipped too).
    pub fn parse(args: &[String]) -> Result<Self, ShimError> {
        let mut it = args.iter().skip_while(|a| !a.starts_with("--"));
        let mut get = std::collections::HashMap::new();
        let (mut daemon, mut stdin, mut stdin_once, mut tty) = (false, false, false, false);
        while let Some(flag) = it.next() {
            let switch = match flag.as_str() {
                "--daemon" => Some(&mut daemon),
                "--stdin" => Some(&mut stdin),
                "--stdin-once" => Some(&mut stdin_once),
                "--tty" => Some(&mut tty),
                _ => None,
            };
            if let Some(on) = switch {
                *on = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| ShimError::Args(format!("{flag} needs a value")))?;
            get.insert(flag.trim_start_matches("--").to_string(), value.clone());
        }
        let need = |k: &str| {
            get.get(k)
                .cloned()
                .ok_or_else(|| ShimError::Args(format!("--{k} is required")))
        };
        let num = |k: &str, default: u64| -> Result<u64, ShimError> {
            match get.get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| ShimError::Args(format!("--{k} {v:?} is not a number"))),
            }
        };
        Ok(Self {
            bundle: need("bundle")?.into(),
            id: need("id")?,
            runtime: need("runtime")?.parse()?,
            runtime_binary: need("runtime-binary")?.into(),
            runtime_root: need("runtime-root")?.into(),
            log: need("log")?.into(),
            log_max_size: num("log-max-size", 10 << 20)?,
            log_max_files: u32::try_from(num("log-max-files", 5)?)
                .map_err(|_| ShimError::Args("--log-max-files is too large".to_string()))?,
            exit_file: need("exit-file")?.into(),
            stdin,
            stdin_once,
            tty,
            daemon,
        })
    }
}

/// What the shim tells its caller on stdout once the container runs or failed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartReport {
    /// The container runs.
    Started {
        /// The container's init pid (host pid namespace).
        pid: i32,
        /// When it was started.
        started_at: DateTime<Utc>,
    },
    /// The container could not be created or started; the runtime's message.
    Failed {
        /// The error.
        message: String,
    },
}

/// The shim's record of a running container ([`STATE_FILE`]); with `/proc` it tells
/// whether the container still runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// The shim's pid.
    pub shim_pid: i32,
    /// The shim's start time in clock ticks since boot (guards against pid reuse).
    pub shim_start_ticks: u64,
    /// The container init's pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot.
    pub pid_start_ticks: u64,
    /// When the container was started.
    pub started_at: DateTime<Utc>,
}

/// How a container ended (the exit file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; for a signal, 128 + the signal number (as Kubernetes reports it).
    pub exit_code: i32,
    /// The signal that killed the init process, if one did.
    pub signal: Option<i32>,
    /// Whether the kernel OOM-killed a process of the container.
    pub oom_killed: bool,
    /// When the container was started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it exited.
    pub finished_at: DateTime<Utc>,
}

/// The start time (clock ticks since boot) of process `pid`, from `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parens; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 overall is the 20th after the name (state is field 3).
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` is alive and is the same process that started at `start_ticks`
/// (a zombie counts as gone).
pub fn process_alive(pid: i32, start_ticks: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next();
    if state == Some("Z") || state == Some("X") {
        return false;
    }
    proc_start_ticks(pid) == Some(start_ticks)
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ShimError> {
    let tmp = path.with_extension("tmp");
    let io_err = |action| {
        move |source| ShimError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let data = serde_json::to_vec(value).map_err(|e| ShimError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let mut f = File::create(&tmp).map_err(io_err("create"))?;
    f.write_all(&data).map_err(io_err("write"))?;
    f.sync_all().map_err(io_err("sync"))?;
    fs::rename(&tmp, path).map_err(io_err("rename"))
}

/// Reads a JSON file written by [`write_json_atomic`]; `None` if it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ShimError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| ShimError::Io {
                action: "decode",
                path: path.to_path_buf(),
                source: io::Error::other(e),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The shim's entry point: `berth shim --bundle B --id ID ...` calls this with the
/// arguments after `shim` and exits with what it returns.
pub fn shim_main(args: Vec<String>) -> i32 {
    let parsed = match ShimArgs::parse(&args) {
        Ok(a) => a,
        Err(e) => {
            report(&StartReport::Failed {
                message: e.to_string(),
            });
            return 2;
        }
    };
    let result = if parsed.daemon {
        run_daemon(&parsed)
    } else {
        spawn_daemon(&parsed)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth shim {}: {e}", parsed.id);
            1
        }
    }
}

fn report(r: &StartReport) {
    if let Ok(line) = serde_json::to_string(r) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The intermediate: re-executes itself detached (`--daemon`) and exits at once, so the
/// daemon is reparented to init (or the nearest subreaper) and the caller only has to
/// reap this short-lived process. The daemon inherits our stdout (the caller's pipe).
fn spawn_daemon(args: &ShimArgs) -> Result<(), ShimError> {
    let exe = std::env::current_exe().map_err(|source| ShimError::Io {
        action: "find",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let log_path = args.bundle.join(SHIM_LOG);
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| ShimError::Io {
            action: "open",
            path: log_path.clone(),
            source,
        })?;
    let mut daemon_args = args.clone();
    daemon_args.daemon = true;
    Command::new(exe)
        .arg("shim")
        .args(daemon_args.to_args())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(stderr)
        .spawn()
        .map_err(|source| ShimError::Io {
            action: "spawn the shim daemon",
            path: log_path,
            source,
        })?;
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| ShimError::Sys {
        action: "create a pipe",
        source,
    })
}

/// The detached shim: runs the container and records how it ended.
fn run_daemon(args: &ShimArgs) -> Result<(), ShimError> {
    // A session of our own: no controlling terminal, no signals meant for the caller's
    // process group. Failing only means we already lead one.
    let _ = nix::unistd::setsid();
    // The container's init is created by the runtime, which exits; as subreaper we become
    // its parent and can wait for its real exit status.
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| ShimError::Sys {
        action: "become child subreaper",
        source,
    })?;
    match start_container(args) {
        Ok((pid, started_at, copiers)) => {
            report(&StartReport::Started { pid, started_at });
            close_stdout();
            crate::pages::release_startup_pages();
            wait_and_record(args, pid, started_at, copiers)
        }
        Err(e) => {
            let message = match &e {
                ShimError::Runtime(r) => r.runtime_message(),
                other => other.to_string(),
            };
            report(&StartReport::Failed { message });
            close_stdout();
            let runtime = runtime_of(args);
            let _ = runtime.delete(&args.id, true);
            Err(e)
        }
    }
}

fn close_stdout() {
    // The caller reads our stdout to EOF; point fd 1 at /dev/null so it gets one.
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

fn runtime_of(args: &ShimArgs) -> CliRuntime {
    CliRuntime::with_binary(args.runtime, &args.runtime_binary, &args.runtime_root)
}

type Copiers = mpsc::Receiver<()>;

/// Where attach clients' input goes: the container's stdin pipe, or its terminal.
type Input = Arc<Mutex<Option<File>>>;

/// The connected attach clients (their output side).
type Clients = Arc<Mutex<Vec<UnixStream>>>;

/// Sends `data` from `stream` to every attach client; a client that cannot keep up within
/// a second (or is gone) is dropped, so it never holds up the container.
fn broadcast(clients: &Clients, stream: u8, data: &[u8]) {
    let Ok(mut list) = clients.lock() else {
        return;
    };
    if list.is_empty() {
        return;
    }
    let frame = attach_frame(stream, data);
    list.retain_mut(|c| c.write_all(&frame).is_ok());
}

/// Serves the attach socket: each client gets the output from now on and may send input
/// (if the container has stdin) and terminal sizes.
fn serve_attach(
    listener: UnixListener,
    clients: Clients,
    input: Option<Input>,
    master: Option<Arc<File>>,
    stdin_once: bool,
) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        if let Ok(out) = conn.try_clone() {
            if let Ok(mut list) = clients.lock() {
                list.push(out);
            }
        }
        let (input, master) = (input.clone(), master.clone());
        std::thread::spawn(move || attach_input(conn, input, master, stdin_once));
    }
}

/// Reads one attach client's frames until it goes away.
fn attach_input(
    mut conn: UnixStream,
    input: Option<Input>,
    master: Option<Arc<File>>,
    stdin_once: bool,
) {
    let close_stdin = |input: &Option<Input>| {
        if let Some(i) = input {
            if let Ok(mut i) = i.lock() {
                *i = None;
            }
        }
    };
    let mut sent_input = false;
    loop {
        let mut head = [0u8; 5];
        if conn.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len.min(1 << 20)];
        if conn.read_exact(&mut data).is_err() {
            break;
        }
        match head[0] {
            ATTACH_STDIN => {
                sent_input = true;
                if let Some(i) = &input {
                    if let Ok(mut guard) = i.lock() {
                        if let Some(f) = guard.as_mut() {
                            if f.write_all(&data).is_err() {
                                *guard = None;
                            }
                        }
                    }
                }
            }
            ATTACH_CLOSE_STDIN if stdin_once => close_stdin(&input),
            ATTACH_RESIZE if data.len() == 4 => {
                if let Some(m) = &master {
                    let cols = u16::from_be_bytes([data[0], data[1]]);
                    let rows = u16::from_be_bytes([data[2], data[3]]);
                    let _ = crate::console::set_window_size(
                        std::os::fd::AsFd::as_fd(m.as_ref()),
                        cols,
                        rows,
                    );
                }
            }
            _ => {}
        }
    }
    // The first attach session that gave input is over: stdinOnce closes stdin.
    if stdin_once && sent_input {
        close_stdin(&input);
    }
}

fn start_container(args: &ShimArgs) -> Result<(i32, DateTime<Utc>, Copiers), ShimError> {
    let log =
        CriLogWriter::open(&args.log, args.log_max_size, args.log_max_files).map_err(|source| {
            ShimError::Io {
                action: "open the container log",
                path: args.log.clone(),
                source,
            }
        })?;
    let log = Arc::new(Mutex::new(log));
    let clients: Clients = Arc::new(Mutex::new(Vec::new()));
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ShimError::Io {
            action,
            path,
            source,
        }
    };
    let attach_path = args.bundle.join(ATTACH_SOCKET);
    let _ = fs::remove_file(&attach_path);
    let listener = SocketPath::new(&attach_path)
        .and_then(|short| UnixListener::bind(short.path()))
        .map_err(io_err("listen on the attach socket", &attach_path))?;
    let (done_tx, done_rx) = mpsc::channel();
    let runtime = runtime_of(args);
    let pid_file = args.bundle.join(PID_FILE);
    let spawn_copier = |from: File, stream: Stream, tag: u8| {
        let (log, done, clients) = (Arc::clone(&log), done_tx.clone(), clients.clone());
        std::thread::spawn(move || {
            copy_stream_with(from, stream, log, |d| broadcast(&clients, tag, d));
            let _ = done.send(());
        });
    };
    let (input, master) = if args.tty {
        // The terminal: the runtime hands over its master; output and input go through it.
        let console_dir = args
            .bundle
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("console"))
            .unwrap_or_else(|| args.bundle.clone());
        let socket = crate::console::ConsoleSocket::bind(&console_dir)
            .map_err(io_err("make a console socket in", &console_dir))?;
        let null = || Stdio::null();
        runtime.create(
            &args.id,
            &args.bundle,
            &pid_file,
            [null(), null(), null()],
            Some(socket.path()),
        )?;
        let master = socket
            .receive(Duration::from_secs(10), || false)
            .map_err(io_err("receive the terminal from", socket.path()))?;
        let master = File::from(master);
        let reader = master
            .try_clone()
            .map_err(io_err("duplicate the terminal", &attach_path))?;
        let writer = master
            .try_clone()
            .map_err(io_err("duplicate the terminal", &attach_path))?;
        // A single copier: the second "done" is sent at once.
        let _ = done_tx.send(());
        spawn_copier(reader, Stream::Stdout, ATTACH_STDOUT);
        let input = args.stdin.then(|| Arc::new(Mutex::new(Some(writer))));
        (input, Some(Arc::new(master)))
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        spawn_copier(File::from(out_r), Stream::Stdout, ATTACH_STDOUT);
        spawn_copier(File::from(err_r), Stream::Stderr, ATTACH_STDERR);
        let (stdin, input) = if args.stdin {
            let (in_r, in_w) = pipe()?;
            (
                Stdio::from(in_r),
                Some(Arc::new(Mutex::new(Some(File::from(in_w))))),
            )
        } else {
            (Stdio::null(), None)
        };
        // The write ends go to the runtime (and the container); ours close when `create`
        // returns, so the copiers see EOF once the container's processes are gone.
        runtime.create(
            &args.id,
            &args.bundle,
            &pid_file,
            [stdin, Stdio::from(out_w), Stdio::from(err_w)],
            None,
        )?;
        (input, None)
    };
    {
        let (clients, stdin_once) = (clients.clone(), args.stdin_once);
        std::thread::spawn(move || serve_attach(listener, clients, input, master, stdin_once));
    }
    let pid: i32 = fs::read_to_string(&pid_file)
        .map_err(|source| ShimError::Io {
            action: "read",
            path: pid_file.clone(),
            source,
        })?
        .trim()
        .parse()
        .map_err(|_| ShimError::Args(format!("bad pid in {}", pid_file.display())))?;
    let pid_start_ticks = proc_start_ticks(pid).unwrap_or(0);
    runtime.start(&args.id)?;
    let started_at = Utc::now();
    let me = std::process::id() as i32;
    write_json_atomic(
        &args.bundle.join(STATE_FILE),
        &ShimState {
            shim_pid: me,
            shim_start_ticks: proc_start_ticks(me).unwrap_or(0),
            pid,
            pid_start_ticks,
            started_at,
        },
    )?;
    Ok((pid, started_at, done_rx))
}

fn wait_and_record(
    args: &ShimArgs,
    pid: i32,
    started_at: DateTime<Utc>,
    copiers: Copiers,
) -> Result<(), ShimError> {
    let mode = CgroupMode::detect();
    // Found while the container runs: the runtime removes the cgroup on delete.
    let memory_dir = cgroup::memory_cgroup_dir(pid, mode);
    let (exit_code, signal) = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => break (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                break (128 + sig as i32, Some(sig as i32))
            }
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(ShimError::Sys {
                    action: "wait for the container",
                    source,
                })
            }
        }
    };
    let finished_at = Utc::now();
    let oom_killed = memory_dir
        .as_deref()
        .and_then(|d| cgroup::oom_kill_count(d, mode))
        .is_some_and(|n| n > 0);
    // Let the copiers drain what the container wrote last; a process that escaped the
    // container could hold the pipes open, so do not wait for ever.
    for _ in 0..2 {
        let _ = copiers.recv_timeout(Duration::from_secs(2));
    }
    write_json_atomic(
        &args.exit_file,
        &ExitRecord {
            exit_code,
            signal,
            oom_killed,
            started_at: Some(started_at),
            finished_at,
        },
    )?;
    let runtime = runtime_of(args);
    if let Err(e) = runtime.delete(&args.id, false) {
        if !e.is_not_found() {
            runtime.delete(&args.id, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sockets_bind_under_paths_longer_than_sun_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d".repeat(60)).join("e".repeat(64));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(ATTACH_SOCKET);
        assert!(path.as_os_str().len() > 108);
        assert!(UnixListener::bind(&path).is_err());
        let listener = UnixListener::bind(SocketPath::new(&path).unwrap().path()).unwrap();
        assert!(path.exists());
        let client = SocketPath::new(&path).unwrap();
        let mut conn = UnixStream::connect(client.path()).unwrap();
        conn.write_all(b"x").unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }

    #[test]
    fn args_round_trip() {
        let a = ShimArgs {
            bundle: "/b".into(),
            id: "c".into(),
            runtime: RuntimeKind::Runc,
            runtime_binary: "/usr/sbin/runc".into(),
            runtime_root: "/r".into(),
            log: "/l".into(),
            log_max_size: 100,
            log_max_files: 2,
            exit_file: "/e".into(),
            stdin: true,
            stdin_once: false,
            tty: true,
            daemon: true,
        };
        let mut argv = vec!["shim".to_string()];
        argv.extend(a.to_args());
        assert_eq!(ShimArgs::parse(&argv).unwrap(), a);
        assert!(ShimArgs::parse(&["--id".to_string()]).is_err());
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let ticks = proc_start_ticks(me).unwrap();
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
    }
}
