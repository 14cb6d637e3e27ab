//! `exec` and `attach` over the remote command protocol (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`) in either transport kubectl speaks:
//! - a WebSocket (kubectl's default): every binary message starts with a channel byte — 0
//!   stdin, 1 stdout, 2 stderr, 3 error (the final `metav1.Status`: success, or
//!   `NonZeroExitCode` with an `ExitCode` cause), 4 terminal resize (`{"Width":..,
//!   "Height":..}`) and, in v5, 255 to close a stream (its id follows);
//! - SPDY/3.1 (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, older clients): the client opens one
//!   stream per channel (header `streamType`: `error`, `stdin`, `stdout`, `stderr`, `resize`)
//!   before anything runs; the end of stdin is the stdin stream's FIN, resizes are JSON
//!   objects on the resize stream, and the final status is written on the error stream,
//!   after which every stream is finished and the connection closed.
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
    let values = |name: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (transport, protocol) = if header_has(header::UPGRADE, "websocket") {
        let Some(key) = h
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| k.as_bytes().to_vec())
        else {
            return bad_request("missing Sec-WebSocket-Key");
        };
        let offered = values(header::SEC_WEBSOCKET_PROTOCOL.as_str());
        let Some(protocol) = select_protocol(&offered) else {
            return bad_request(&format!(
                "none of the offered sub-protocols {offered:?} is supported; use one of {PROTOCOLS:?}"
            ));
        };
        (Transport::WebSocket { key }, protocol)
    } else if header_has(header::UPGRADE, "spdy/3.1") {
        let offered = values(STREAM_PROTOCOL_HEADER);
        let Some(protocol) = select_protocol(&offered) else {
            return bad_request(&format!(
                "none of the offered stream protocols {offered:?} is supported; use one of {PROTOCOLS:?}"
            ));
        };
        (Transport::Spdy, protocol)
    } else {
        return bad_request(
            "upgrade to a WebSocket or to SPDY/3.1 (v5.channel.k8s.io or v4.channel.k8s.io) is required",
        );
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
    let spdy = matches!(transport, Transport::Spdy);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("failed to upgrade an exec connection: {e}");
                return;
            }
        };
        let conn = if spdy {
            match spdy_connection(io, &opts).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("exec/attach over SPDY ended before it began: {e}");
                    return;
                }
            }
        } else {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            websocket_connection(ws, protocol.starts_with("v5"))
        };
        match session {
            Session::Exec(exec) => run_exec(conn, opts, *exec).await,
            Session::Attach { socket, tty } => run_attach(conn, opts, socket, tty).await,
        }
    });
    let response = match transport {
        Transport::WebSocket { key } => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
            )
            .header(header::SEC_WEBSOCKET_PROTOCOL, protocol),
        Transport::Spdy => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header(STREAM_PROTOCOL_HEADER, protocol),
    };
    response
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// The header SPDY clients offer (and the server names) the stream protocol in.
pub const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// How long a SPDY client may take to open its streams (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output a writer gathers into one write to the connection.
const WRITE_BATCH: usize = 256 * 1024;

/// How the session reaches the client.
enum Transport {
    WebSocket { key: Vec<u8> },
    Spdy,
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

/// What goes to a connection's writer.
enum Item {
    /// Bytes of the transport (a WebSocket message's payload, or whole SPDY frames).
    Frame(Vec<u8>),
    /// The session is over: close the connection.
    End,
}

/// The SPDY streams the client opened, by channel.
#[derive(Clone, Copy, Debug, Default)]
struct SpdyStreams {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// The session's way to the client, whatever the transport: output on a channel, the final
/// status. Cheap to clone (one per copier).
#[derive(Clone)]
struct Output {
    tx: mpsc::Sender<Item>,
    /// None: a WebSocket.
    spdy: Option<SpdyStreams>,
}

impl Output {
    /// The encoded `data` on `channel` (None when the client has no such stream).
    fn encode(&self, channel: u8, data: &[u8]) -> Option<Item> {
        match &self.spdy {
            None => Some(Item::Frame(frame(channel, data))),
            Some(st) => {
                let id = match channel {
                    STDOUT => st.stdout?,
                    STDERR => st.stderr?,
                    ERROR => st.error,
                    _ => return None,
                };
                Some(Item::Frame(crate::spdy::data(id, 0, data)))
            }
        }
    }

    /// Sends `data` on `channel`; false once the client is gone.
    async fn send(&self, channel: u8, data: &[u8]) -> bool {
        match self.encode(channel, data) {
            Some(item) => self.tx.send(item).await.is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// [`Output::send`] from a blocking thread.
    fn blocking_send(&self, channel: u8, data: &[u8]) -> bool {
        match self.encode(channel, data) {
            Some(item) => self.tx.blocking_send(item).is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// The kubelet's first WebSocket message: an empty frame on the lowest writable channel
    /// (SPDY has no such thing).
    async fn start(&self, opts: &StreamOptions) {
        if self.spdy.is_some() {
            return;
        }
        let first = if opts.stdout {
            STDOUT
        } else if opts.stderr {
            STDERR
        } else {
            ERROR
        };
        let _ = self.tx.send(Item::Frame(vec![first])).await;
    }

    /// Sends the final status on the error channel, ends every stream and closes.
    async fn finish(&self, status: Value) {
        let json = serde_json::to_vec(&status).unwrap_or_default();
        match &self.spdy {
            None => {
                let _ = self.tx.send(Item::Frame(frame(ERROR, &json))).await;
            }
            Some(st) => {
                let mut frames = crate::spdy::data(st.error, crate::spdy::FLAG_FIN, &json);
                for id in [st.stdout, st.stderr].into_iter().flatten() {
                    frames.extend(crate::spdy::data(id, crate::spdy::FLAG_FIN, &[]));
                }
                let _ = self.tx.send(Item::Frame(frames)).await;
            }
        }
        let _ = self.tx.send(Item::End).await;
    }
}

/// The client's messages, in order; ends when the client goes away.
type ClientMessages = std::pin::Pin<Box<dyn futures::Stream<Item = ClientMessage> + Send>>;

/// A connection to a client, ready for a session.
struct Conn {
    out: Output,
    incoming: ClientMessages,
    writer: tokio::task::JoinHandle<()>,
    /// A task reading the client (SPDY), stopped with the session.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Conn {
    /// Waits for what was sent to reach the client, then lets the connection go.
    async fn close(self) {
        let Conn {
            out,
            incoming,
            writer,
            reader,
        } = self;
        drop(out);
        let _ = writer.await;
        drop(incoming);
        if let Some(r) = reader {
            r.abort();
        }
    }
}

/// A WebSocket connection: messages written as they come, flushed when no more are waiting.
fn websocket_connection(ws: Ws, v5: bool) -> Conn {
    let (mut sink, stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Item>(32);
    let writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let (message, end) = match item {
                Item::Frame(v) => (Message::binary(v), false),
                // A normal closure: clients take it as the end of every stream.
                Item::End => (
                    Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })),
                    true,
                ),
            };
            if sink.feed(message).await.is_err() {
                break;
            }
            if (end || rx.is_empty()) && sink.flush().await.is_err() {
                break;
            }
            if end {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let incoming = stream
        .map(move |m| match m {
            Ok(Message::Binary(data)) => match decode(&data) {
                // v4 has no way to close stdin.
                ClientMessage::CloseStdin if !v5 => Some(Some(ClientMessage::Other)),
                m => Some(Some(m)),
            },
            Ok(Message::Close(_)) | Err(_) => None,
            Ok(_) => Some(Some(ClientMessage::Other)),
        })
        .take_while(|m| std::future::ready(m.is_some()))
        .filter_map(|m| async move { m.flatten() });
    Conn {
        out: Output { tx, spdy: None },
        incoming: Box::pin(incoming),
        writer,
        reader: None,
    }
}

/// Errors setting up a SPDY session.
#[derive(Debug, thiserror::Error)]
enum SpdySetupError {
    #[error("failed to read the client's streams: {0}")]
    Read(String),
    #[error("the client did not open its streams within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Spdy(#[from] crate::spdy::SpdyError),
}

/// A SPDY connection: waits until the client has opened the streams `opts` needs (answering
/// each), then reads stdin, its end and resizes from them.
async fn spdy_connection(
    io: TokioIo<hyper::upgrade::Upgraded>,
    opts: &StreamOptions,
) -> Result<Conn, SpdySetupError> {
    use crate::spdy::{self, Frame, FrameReader, HeaderReader, HeaderWriter};
    let (mut r, mut w) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Item>(32);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut end = false;
        while let Some(mut item) = rx.recv().await {
            loop {
                match item {
                    Item::Frame(v) => batch.extend_from_slice(&v),
                    Item::End => end = true,
                }
                if end || batch.len() >= WRITE_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => item = next,
                    Err(_) => break,
                }
            }
            if w.write_all(&batch).await.is_err() {
                break;
            }
            batch.clear();
            if end {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut frames = FrameReader::default();
    let mut headers_in = HeaderReader::default();
    let mut headers_out = HeaderWriter::default();
    let mut streams = SpdyStreams::default();
    let mut error = None;
    let mut resize = None;
    let wanted = |st: &SpdyStreams, error: Option<u32>, resize: Option<u32>| {
        error.is_some()
            && (!opts.stdin || st.stdin.is_some())
            && (!opts.stdout || st.stdout.is_some())
            && (!opts.stderr || st.stderr.is_some())
            && (!opts.tty || resize.is_some())
    };
    let mut buf = vec![0u8; 64 * 1024];
    let setup = async {
        while !wanted(&streams, error, resize) {
            while let Some(f) = frames.next_frame()? {
                let Frame::Control { kind, payload, .. } = f else {
                    continue;
                };
                match kind {
                    spdy::SYN_STREAM => {
                        let Some(id) = spdy::stream_id(&payload) else {
                            continue;
                        };
                        let headers = headers_in.read(payload.get(10..).unwrap_or_default())?;
                        let _ = tx.send(Item::Frame(headers_out.syn_reply(id))).await;
                        match headers.get("streamtype").map(String::as_str) {
                            Some("error") => error = Some(id),
                            Some("stdin") => streams.stdin = Some(id),
                            Some("stdout") => streams.stdout = Some(id),
                            Some("stderr") => streams.stderr = Some(id),
                            Some("resize") => resize = Some(id),
                            _ => {
                                let _ = tx
                                    .send(Item::Frame(spdy::rst_stream(id, spdy::PROTOCOL_ERROR)))
                                    .await;
                            }
                        }
                    }
                    spdy::PING => {
                        let _ = tx
                            .send(Item::Frame(spdy::control(spdy::PING, 0, &payload)))
                            .await;
                    }
                    _ => {}
                }
            }
            if wanted(&streams, error, resize) {
                break;
            }
            match r.read(&mut buf).await {
                Ok(0) => return Err(SpdySetupError::Read("the client went away".into())),
                Ok(n) => frames.extend(&buf[..n]),
                Err(e) => return Err(SpdySetupError::Read(e.to_string())),
            }
        }
        Ok::<_, SpdySetupError>(())
    };
    let done = tokio::time::timeout(STREAM_CREATION_TIMEOUT, setup).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            writer.abort();
            return Err(e);
        }
        Err(_) => {
            writer.abort();
            return Err(SpdySetupError::Timeout(STREAM_CREATION_TIMEOUT));
        }
    }
    streams.error = error.unwrap_or_default();
    streams.resize = resize;
    // The client's side from here: stdin, its end (FIN), resizes, pings.
    let (to_session, from_client) = mpsc::channel::<ClientMessage>(32);
    let pings = tx.clone();
    let reader = tokio::spawn(async move {
        let mut resize_buf = Vec::new();
        let next = |frames: &mut FrameReader| frames.next_frame().ok().flatten();
        loop {
            while let Some(f) = next(&mut frames) {
                let message = match f {
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } => {
                        let fin = flags & spdy::FLAG_FIN != 0;
                        if Some(stream) == streams.stdin {
                            if !data.is_empty()
                                && to_session.send(ClientMessage::Stdin(data)).await.is_err()
                            {
                                return;
                            }
                            if fin && to_session.send(ClientMessage::CloseStdin).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        if Some(stream) == streams.resize {
                            resize_buf.extend_from_slice(&data);
                            for size in take_resizes(&mut resize_buf) {
                                if to_session.send(size).await.is_err() {
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                    Frame::Control { kind, payload, .. } => (kind, payload),
                };
                match message {
                    (spdy::PING, payload) => {
                        let _ = pings
                            .send(Item::Frame(spdy::control(spdy::PING, 0, &payload)))
                            .await;
                    }
                    (spdy::GOAWAY, _) => return,
                    _ => {}
                }
            }
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => frames.extend(&buf[..n]),
            }
        }
    });
    let incoming = futures::stream::unfold(from_client, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    });
    Ok(Conn {
        out: Output {
            tx,
            spdy: Some(streams),
        },
        incoming: Box::pin(incoming),
        writer,
        reader: Some(reader),
    })
}

/// The whole resize messages (JSON objects, back to back) at the front of `buf`, removed
/// from it; an incomplete one stays for the next data.
fn take_resizes(buf: &mut Vec<u8>) -> Vec<ClientMessage> {
    let mut out = Vec::new();
    let mut used = 0;
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    loop {
        let v = match it.next() {
            Some(Ok(v)) => v,
            // Not JSON: nothing more can be read from it.
            Some(Err(e)) if !e.is_eof() => {
                used = buf.len();
                break;
            }
            _ => break,
        };
        used = it.byte_offset();
        let mut m = vec![RESIZE];
        m.extend_from_slice(v.to_string().as_bytes());
        if let ClientMessage::Resize { width, height } = decode(&m) {
            out.push(ClientMessage::Resize { width, height });
        }
    }
    buf.drain(..used);
    out
}

/// Copies `from` to the client on `channel`, counting bytes in `progress`.
/// (None: the client did not ask for it; it is read and dropped so the process never blocks.)
fn spawn_copy(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    out: Option<Output>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(out) = &out {
                        if !out.send(channel, &buf[..n]).await {
                            return;
                        }
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
    out: Output,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match master.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    if !out.blocking_send(STDOUT, &buf[..n]) {
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

async fn run_exec(mut conn: Conn, opts: StreamOptions, mut exec: berth_runtime::ExecCommand) {
    let out = conn.out.clone();
    out.start(&opts).await;
    let std_cmd = std::mem::replace(&mut exec.command, std::process::Command::new("true"));
    let mut cmd = tokio::process::Command::from(std_cmd);
    let tty = opts.tty;
    // A terminal exec's stdio is the runtime command's business (see `ExecCommand`).
    if !tty {
        cmd.stdin(if opts.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    }
    let spawned = cmd.kill_on_drop(true).spawn();
    // Our copies of the child's stdio (a terminal's other side) must not outlive it.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            out.finish(failure_status(&format!("failed to run the runtime: {e}")))
                .await;
            drop(out);
            conn.close().await;
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
            let to = opts.stdout.then(|| out.clone());
            copiers.push(spawn_copy(o, STDOUT, to, progress.clone()));
        }
        if let Some(e) = child.stderr.take() {
            let to = opts.stderr.then(|| out.clone());
            copiers.push(spawn_copy(e, STDERR, to, progress.clone()));
        }
    }
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.ok(),
            m = conn.incoming.next() => match m {
                Some(message) => match message {
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
                    ClientMessage::CloseStdin => {
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
                    ClientMessage::Other => {}
                },
                None => {
                    // The client is gone: the process goes too.
                    let e = exec.clone();
                    let _ = tokio::task::spawn_blocking(move || e.kill()).await;
                    let _ = child.kill().await;
                    drop(out);
                    conn.close().await;
                    return;
                }
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
                    out.send(ch, format!("{message}\n").as_bytes()).await;
                }
                exit_status(exec_failure_code(&message), &opts.command)
            }
            None => exit_status(code, &opts.command),
        }
    } else {
        exit_status(code, &opts.command)
    };
    out.finish(result).await;
    drop(out);
    conn.close().await;
}

async fn run_attach(mut conn: Conn, opts: StreamOptions, socket: std::path::PathBuf, tty: bool) {
    let out = conn.out.clone();
    let connected = match berth_runtime::shim::SocketPath::new(&socket) {
        Ok(short) => tokio::net::UnixStream::connect(short.path()).await,
        Err(e) => Err(e),
    };
    let shim = match connected {
        Ok(c) => c,
        Err(e) => {
            out.finish(failure_status(&format!(
                "failed to attach to the container: {e}"
            )))
            .await;
            drop(out);
            conn.close().await;
            return;
        }
    };
    out.start(&opts).await;
    let (mut from_shim, mut to_shim) = shim.into_split();
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
                if !out.send(channel, &data).await {
                    return;
                }
            }
        })
    };
    let mut relay = relay;
    loop {
        tokio::select! {
            _ = &mut relay => break,
            m = conn.incoming.next() => match m {
                Some(message) => {
                    let msg = match message {
                        ClientMessage::Stdin(d) if opts.stdin => {
                            berth_runtime::shim::attach_frame(berth_runtime::shim::ATTACH_STDIN, &d)
                        }
                        ClientMessage::CloseStdin if opts.stdin && !tty => {
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
                None => {
                    relay.abort();
                    drop(out);
                    conn.close().await;
                    return;
                }
            },
        }
    }
    // The container's output ended: it exited.
    out.finish(exit_status(0, &[])).await;
    drop(out);
    conn.close().await;
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
