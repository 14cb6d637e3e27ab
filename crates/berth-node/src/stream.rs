//! `exec` and `attach` over the WebSocket remote command protocol kubectl speaks
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`): every binary message starts with a
//! channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (the final `metav1.Status`: success,
//! or `NonZeroExitCode` with an `ExitCode` cause), 4 terminal resize (`{"Width":..,
//! "Height":..}`) and, in v5, 255 to close a stream (its id follows).
//!
//! Exec runs the command through the OCI runtime's `exec` (with a terminal from the
//! runtime's console socket for `tty`); attach connects to the shim's attach socket, which
//! relays the container's own stdio.

use crate::server::{bad_request, full, status_response, Body, NodeServer, Target};
use berth_runtime::{ContainerManager, ContainerStatus, ExecSpec};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

/// The sub-protocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel bytes.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: closes the stream whose id follows.
pub const CLOSE: u8 = 255;

/// What the client asked for (`command`, `stdin`/`input`, `stdout`/`output`,
/// `stderr`/`error`, `tty`, as kubectl and the API server spell them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    /// Reads the options from a query string.
    pub fn from_query(query: &str) -> Self {
        let mut o = StreamOptions::default();
        let on = |v: &str| matches!(v, "1" | "true" | "True");
        for (k, v) in crate::logs::url_pairs(query) {
            match k.as_str() {
                "command" => o.command.push(v),
                "stdin" | "input" => o.stdin = on(&v),
                "stdout" | "output" => o.stdout = on(&v),
                "stderr" | "error" => o.stderr = on(&v),
                "tty" => o.tty = on(&v),
                _ => {}
            }
        }
        // A terminal merges stderr into stdout, as upstream.
        if o.tty {
            o.stderr = false;
        }
        o
    }
}

/// The protocol to use from the client's `Sec-WebSocket-Protocol` offers.
pub fn select_protocol(offered: &str) -> Option<&'static str> {
    let offers: Vec<&str> = offered.split(',').map(str::trim).collect();
    PROTOCOLS.into_iter().find(|p| offers.contains(p))
}

/// One message a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Stdin(Vec<u8>),
    /// v5: the client closed stdin.
    CloseStdin,
    Resize {
        width: u16,
        height: u16,
    },
    /// Anything else (ignored).
    Other,
}

/// Decodes one binary message from the client.
pub fn decode(data: &[u8]) -> ClientMessage {
    match data.split_first() {
        Some((&STDIN, rest)) => ClientMessage::Stdin(rest.to_vec()),
        Some((&CLOSE, [STDIN, ..])) => ClientMessage::CloseStdin,
        Some((&RESIZE, rest)) => {
            let v: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
            let dim = |k: &str| {
                v.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
            };
            match (dim("Width"), dim("Height")) {
                (Some(width), Some(height)) => ClientMessage::Resize { width, height },
                _ => ClientMessage::Other,
            }
        }
        _ => ClientMessage::Other,
    }
}

/// A message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// The error channel's final `metav1.Status` for an exit code, as the kubelet words it.
pub fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error channel's `metav1.Status` for a failure that is not an exit code.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// The exit code for a runtime that could not exec the command, as shells (and cri-o)
/// report it: 127 when it does not exist, 126 when it cannot be run.
pub fn exec_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("permission denied") || m.contains("is a directory") {
        126
    } else {
        127
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers an exec or attach request: checks it, upgrades to a WebSocket and runs the session.
pub async fn serve(
    node: Arc<NodeServer>,
    req: hyper::Request<Incoming>,
    attach: bool,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let opts = StreamOptions::from_query(req.uri().query().unwrap_or(""));
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if !attach && opts.command.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    let h = req.headers();
    let header_has = |name: header::HeaderName, want: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(want))
    };
    if !header_has(header::UPGRADE, "websocket") {
        return bad_request(
            "upgrade to a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) is required; SPDY is not supported",
        );
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return bad_request("missing Sec-WebSocket-Key");
    };
    let offered = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let Some(protocol) = select_protocol(&offered) else {
        return bad_request(&format!(
            "none of the offered sub-protocols {offered:?} is supported; use one of {PROTOCOLS:?}"
        ));
    };
    let target = match node.target(ns, pod, container).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(id) = running_attempt(&node.containers, &target).await else {
        return bad_request(&format!("container not found ({container:?})"));
    };
    let session = if attach {
        let stdin_allowed = target.container.stdin.unwrap_or(false);
        let tty = target.container.tty.unwrap_or(false);
        if opts.stdin && !stdin_allowed {
            return bad_request(&format!(
                "container {container} in pod {pod} does not have stdin enabled (stdin: true)"
            ));
        }
        let socket = node
            .containers
            .bundle_dir(&id)
            .join(berth_runtime::shim::ATTACH_SOCKET);
        Session::Attach { socket, tty }
    } else {
        let containers = node.containers.clone();
        let spec = ExecSpec {
            args: opts.command.clone(),
            tty: opts.tty,
            ..Default::default()
        };
        let id2 = id.clone();
        match tokio::task::spawn_blocking(move || containers.exec_command(&id2, &spec)).await {
            Ok(Ok(exec)) => Session::Exec(Box::new(exec)),
            Ok(Err(berth_runtime::ContainerError::NotRunning(_))) => {
                return bad_request(&format!("container not found ({container:?})"))
            }
            Ok(Err(e)) => return status_response(500, "InternalError", &e.to_string()),
            Err(e) => return status_response(500, "InternalError", &e.to_string()),
        }
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("failed to upgrade an exec connection: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let v5 = protocol.starts_with("v5");
        match session {
            Session::Exec(exec) => run_exec(ws, v5, opts, *exec).await,
            Session::Attach { socket, tty } => run_attach(ws, v5, opts, socket, tty).await,
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full("")))
}

enum Session {
    Exec(Box<berth_runtime::ExecCommand>),
    Attach {
        socket: std::path::PathBuf,
        tty: bool,
    },
}

/// The runtime id of the container's running attempt.
async fn running_attempt(containers: &ContainerManager, t: &Target) -> Option<String> {
    let (containers, uid, name) = (containers.clone(), t.uid.clone(), t.container.name.clone());
    tokio::task::spawn_blocking(move || {
        let latest = crate::server::attempts(&containers, &uid, &name).pop()?;
        let id = format!("{uid}-{name}-{latest}");
        matches!(containers.status(&id), Ok(ContainerStatus::Running { .. })).then_some(id)
    })
    .await
    .ok()
    .flatten()
}

/// Sends the writer's messages to the client; ends when every sender is gone.
fn spawn_writer(
    mut sink: futures::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    })
}

/// Copies `from` to the client on `channel`, counting bytes in `progress`.
fn spawn_copy(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    out: mpsc::Sender<Message>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    if out
                        .send(Message::binary(frame(channel, &buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits for the output copiers: to their end, or until output stops flowing for a moment
/// (a process left in the background may hold the pipes open).
async fn drain(copiers: Vec<tokio::task::JoinHandle<()>>, progress: &AtomicU64) {
    let all = futures::future::join_all(copiers);
    tokio::pin!(all);
    let mut last = progress.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = &mut all => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = progress.load(Ordering::Relaxed);
                if now == last {
                    return;
                }
                last = now;
            }
        }
    }
}

/// Reads the pty master to the client (a blocking thread: a pty is not pollable by tokio's
/// file I/O); ends at EIO, when the terminal's last user is gone.
fn spawn_pty_reader(
    mut master: std::fs::File,
    out: mpsc::Sender<Message>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match master.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    if out
                        .blocking_send(Message::binary(frame(STDOUT, &buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Where the client's stdin goes.
enum Input {
    None,
    Pipe(tokio::process::ChildStdin),
    Pty(std::sync::mpsc::Sender<Vec<u8>>),
}

async fn run_exec(ws: Ws, v5: bool, opts: StreamOptions, mut exec: berth_runtime::ExecCommand) {
    let (sink, mut incoming) = ws.split();
    let (out, rx) = mpsc::channel::<Message>(16);
    let writer = spawn_writer(sink, rx);
    // The kubelet's first message: an empty frame on the lowest writable channel.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = out.send(Message::binary(vec![first])).await;
    let std_cmd = std::mem::replace(&mut exec.command, std::process::Command::new("true"));
    let mut cmd = tokio::process::Command::from(std_cmd);
    let tty = opts.tty;
    if tty {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    } else {
        cmd.stdin(if opts.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    }
    let mut child = match cmd.kill_on_drop(true).spawn() {
        Ok(c) => c,
        Err(e) => {
            finish(
                &out,
                failure_status(&format!("failed to run the runtime: {e}")),
            )
            .await;
            drop(out);
            let _ = writer.await;
            return;
        }
    };
    let exec = Arc::new(exec);
    let progress = Arc::new(AtomicU64::new(0));
    let mut copiers = Vec::new();
    let mut master = None;
    let mut input = Input::None;
    if tty {
        let (e, pid) = (exec.clone(), child.id());
        let received = tokio::task::spawn_blocking(move || {
            e.receive_terminal(Duration::from_secs(10), || {
                pid.is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            })
        })
        .await;
        match received {
            Ok(Ok(fd)) => {
                let file = std::fs::File::from(fd);
                if let (Ok(r), Ok(w)) = (file.try_clone(), file.try_clone()) {
                    copiers.push(spawn_pty_reader(r, out.clone(), progress.clone()));
                    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
                    std::thread::spawn(move || {
                        let mut w = w;
                        while let Ok(data) = rx.recv() {
                            if w.write_all(&data).is_err() {
                                return;
                            }
                        }
                    });
                    if opts.stdin {
                        input = Input::Pty(tx);
                    }
                }
                master = Some(file);
            }
            _ => {
                // The runtime failed before handing over a terminal; its error follows.
            }
        }
    } else {
        if let Some(stdin) = child.stdin.take() {
            input = Input::Pipe(stdin);
        }
        if let Some(o) = child.stdout.take() {
            if opts.stdout {
                copiers.push(spawn_copy(o, STDOUT, out.clone(), progress.clone()));
            } else {
                copiers.push(spawn_copy(o, STDOUT, mpsc::channel(1).0, progress.clone()));
            }
        }
        if let Some(e) = child.stderr.take() {
            let to = if opts.stderr {
                out.clone()
            } else {
                mpsc::channel(1).0
            };
            copiers.push(spawn_copy(e, STDERR, to, progress.clone()));
        }
    }
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.ok(),
            m = incoming.next() => match m {
                Some(Ok(Message::Binary(data))) => match decode(&data) {
                    ClientMessage::Stdin(d) => match &mut input {
                        Input::Pipe(p) => {
                            if p.write_all(&d).await.is_err() {
                                input = Input::None;
                            }
                        }
                        Input::Pty(tx) => {
                            let _ = tx.send(d);
                        }
                        Input::None => {}
                    },
                    ClientMessage::CloseStdin if v5 => {
                        // A terminal has no end of input; a pipe closes.
                        if matches!(input, Input::Pipe(_)) {
                            input = Input::None;
                        }
                    }
                    ClientMessage::Resize { width, height } => {
                        if let Some(m) = &master {
                            let _ = berth_runtime::console::set_window_size(
                                std::os::fd::AsFd::as_fd(m), width, height);
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client is gone: the process goes too.
                    let e = exec.clone();
                    let _ = tokio::task::spawn_blocking(move || e.kill()).await;
                    let _ = child.kill().await;
                    drop(out);
                    let _ = writer.await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    drop(input);
    drain(copiers, &progress).await;
    drop(master);
    let code = status.map_or(-1, |s| {
        use std::os::unix::process::ExitStatusExt;
        s.code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(-1)
    });
    let result = if code == 255 {
        match exec.runtime_error() {
            Some(message) => {
                // The runtime could not start the command: say why on stderr (stdout for a
                // terminal) and exit as a shell would.
                let ch = if tty { STDOUT } else { STDERR };
                if (tty && opts.stdout) || (!tty && opts.stderr) {
                    let _ = out
                        .send(Message::binary(frame(
                            ch,
                            format!("{message}\n").as_bytes(),
                        )))
                        .await;
                }
                exit_status(exec_failure_code(&message), &opts.command)
            }
            None => exit_status(code, &opts.command),
        }
    } else {
        exit_status(code, &opts.command)
    };
    finish(&out, result).await;
    drop(out);
    let _ = writer.await;
}

/// Sends the final status on the error channel and closes the connection.
async fn finish(out: &mpsc::Sender<Message>, status: Value) {
    let _ = out
        .send(Message::binary(frame(
            ERROR,
            &serde_json::to_vec(&status).unwrap_or_default(),
        )))
        .await;
    // A normal closure: clients take it as the end of every stream.
    let _ = out
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

async fn run_attach(ws: Ws, v5: bool, opts: StreamOptions, socket: std::path::PathBuf, tty: bool) {
    let (sink, mut incoming) = ws.split();
    let (out, rx) = mpsc::channel::<Message>(16);
    let writer = spawn_writer(sink, rx);
    let conn = match tokio::net::UnixStream::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            finish(
                &out,
                failure_status(&format!("failed to attach to the container: {e}")),
            )
            .await;
            drop(out);
            let _ = writer.await;
            return;
        }
    };
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = out.send(Message::binary(vec![first])).await;
    let (mut from_shim, mut to_shim) = conn.into_split();
    // The shim's framing: one stream byte, a big-endian u32 length, the data.
    let relay = {
        let out = out.clone();
        let (want_out, want_err) = (opts.stdout, opts.stderr || tty);
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 5];
                if from_shim.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut data = vec![0u8; len];
                if from_shim.read_exact(&mut data).await.is_err() {
                    return;
                }
                let channel = match head[0] {
                    berth_runtime::shim::ATTACH_STDOUT if want_out => STDOUT,
                    berth_runtime::shim::ATTACH_STDERR if want_err && !tty => STDERR,
                    berth_runtime::shim::ATTACH_STDERR if tty && want_out => STDOUT,
                    _ => continue,
                };
                if out
                    .send(Message::binary(frame(channel, &data)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut relay = relay;
    loop {
        tokio::select! {
            _ = &mut relay => break,
            m = incoming.next() => match m {
                Some(Ok(Message::Binary(data))) => {
                    let msg = match decode(&data) {
                        ClientMessage::Stdin(d) if opts.stdin => {
                            berth_runtime::shim::attach_frame(berth_runtime::shim::ATTACH_STDIN, &d)
                        }
                        ClientMessage::CloseStdin if v5 && opts.stdin && !tty => {
                            berth_runtime::shim::attach_frame(berth_runtime::shim::ATTACH_CLOSE_STDIN, &[])
                        }
                        ClientMessage::Resize { width, height } => {
                            let mut d = width.to_be_bytes().to_vec();
                            d.extend_from_slice(&height.to_be_bytes());
                            berth_runtime::shim::attach_frame(berth_runtime::shim::ATTACH_RESIZE, &d)
                        }
                        _ => continue,
                    };
                    if to_shim.write_all(&msg).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    relay.abort();
                    drop(out);
                    let _ = writer.await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    // The container's output ended: it exited.
    finish(&out, exit_status(0, &[])).await;
    drop(out);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_kubectl_and_apiserver_queries() {
        let o = StreamOptions::from_query(
            "command=sh&command=-c&command=echo+a%26b&container=web&stdin=true&stdout=true&stderr=true&tty=false",
        );
        assert_eq!(o.command, vec!["sh", "-c", "echo a&b"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let o = StreamOptions::from_query("command=ls&input=1&output=1&error=1&tty=1");
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "a terminal has no separate stderr");
    }

    #[test]
    fn protocol_selection_prefers_v5() {
        assert_eq!(
            select_protocol("v4.channel.k8s.io, v5.channel.k8s.io"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            select_protocol("v4.channel.k8s.io"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            select_protocol("channel.k8s.io,base64.channel.k8s.io"),
            None
        );
    }

    #[test]
    fn channel_framing() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
        assert_eq!(decode(&[0, b'x']), ClientMessage::Stdin(b"x".to_vec()));
        assert_eq!(decode(&[255, 0]), ClientMessage::CloseStdin);
        assert_eq!(
            decode(b"\x04{\"Width\":120,\"Height\":40}"),
            ClientMessage::Resize {
                width: 120,
                height: 40
            }
        );
        assert_eq!(decode(b"\x04nonsense"), ClientMessage::Other);
        assert_eq!(decode(&[]), ClientMessage::Other);
    }

    #[test]
    fn exit_statuses_as_the_kubelet_words_them() {
        assert_eq!(exit_status(0, &[])["status"], "Success");
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            exec_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(exec_failure_code("exec /etc: permission denied"), 126);
    }
}
