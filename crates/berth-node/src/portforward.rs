//! `kubectl port-forward`: the node's `/portForward/{ns}/{pod}` speaks the port-forward
//! protocol (`portforward.k8s.io`) over SPDY/3.1, either tunnelled inside a WebSocket
//! (sub-protocol `SPDY/3.1+portforward.k8s.io`, kubectl's default since 1.31) or over a
//! plain `Upgrade: SPDY/3.1` connection (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`). Each
//! forwarded connection is a pair of streams with one `requestID`: `data` and `error`;
//! the node connects to the port on the pod's IP (pods have addresses on the node's
//! bridge; 127.0.0.1 for hostNetwork pods), copies both ways, and reports a failure on the
//! error stream as the kubelet does.

use crate::server::{bad_request, full, status_response, Body, NodeServer};
use crate::spdy::{self, Frame, FrameReader, HeaderReader, HeaderWriter};
use crate::wsframe;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

/// The port-forward protocol.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket sub-protocol that tunnels SPDY.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// How much of the pod's data one read (and one data frame) carries.
const READ_BUFFER: usize = 128 * 1024;

/// How much of the client's bytes one read takes at most.
const CLIENT_READ: usize = 64 * 1024;

/// Room before a SPDY frame in its buffer: the WebSocket header goes there.
const ROOM: usize = wsframe::MAX_HEADER;

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// The way SPDY frames go to the client: the upgraded connection's writing half, shared by
/// the session and its forwarded connections. Each frame is written whole (in a WebSocket
/// binary message of its own when tunnelled) and flushed: no queue, no task in between,
/// and the pod's data is written from the buffer it was read into.
struct Out {
    io: tokio::sync::Mutex<WriteHalf<Io>>,
    websocket: bool,
}

impl Out {
    /// Writes the SPDY frame in `buf[ROOM..]`, putting the WebSocket header (when tunnelled)
    /// in the room before it.
    async fn write(&self, buf: &mut [u8]) -> std::io::Result<()> {
        let start = if self.websocket {
            wsframe::put_header(buf, ROOM, wsframe::BINARY)
        } else {
            ROOM
        };
        let mut io = self.io.lock().await;
        io.write_all(&buf[start..]).await?;
        io.flush().await
    }

    /// Writes a frame built elsewhere (control frames, errors).
    async fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.write(&mut wsframe::with_room(frame)).await
    }

    /// Answers a WebSocket control frame (a ping's pong, the closing handshake).
    async fn control(&self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut buf = wsframe::with_room(payload);
        let start = wsframe::put_header(&mut buf, ROOM, opcode);
        let mut io = self.io.lock().await;
        io.write_all(&buf[start..]).await?;
        io.flush().await
    }

    /// Ends the connection: a WebSocket close frame (normal closure) first when tunnelled.
    async fn close(&self) {
        if self.websocket {
            let _ = self.control(wsframe::CLOSE, &1000u16.to_be_bytes()).await;
        }
        let _ = self.io.lock().await.shutdown().await;
    }
}

/// The SPDY bytes of a plain `SPDY/3.1` upgrade, as they are read.
fn spdy_bytes(r: ReadHalf<Io>) -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
    Box::pin(futures::stream::unfold(r, |mut r| async move {
        let mut buf = BytesMut::with_capacity(CLIENT_READ);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((buf.freeze(), r)),
        }
    }))
}

/// The SPDY bytes tunnelled in the client's WebSocket binary messages; pings are answered,
/// and a close frame (or a broken frame) ends them.
fn tunnel_frames(r: ReadHalf<Io>, out: Arc<Out>) -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
    let state = (r, wsframe::FrameReader::default(), out);
    Box::pin(futures::stream::unfold(
        state,
        |(mut r, mut frames, out)| async move {
            loop {
                match frames.next_frame() {
                    Ok(Some(f)) => match f.opcode {
                        wsframe::BINARY | wsframe::CONTINUATION if !f.payload.is_empty() => {
                            return Some((f.payload, (r, frames, out)));
                        }
                        wsframe::PING => {
                            out.control(wsframe::PONG, &f.payload).await.ok()?;
                        }
                        wsframe::CLOSE => return None,
                        _ => {}
                    },
                    Ok(None) => match r.read_buf(frames.buffer(CLIENT_READ)).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    },
                    Err(e) => {
                        tracing::debug!("port-forward tunnel: {e}");
                        return None;
                    }
                }
            }
        },
    ))
}

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the SPDY session reaches the client.
enum Transport {
    WebSocket { key: Vec<u8> },
    Spdy,
}

/// Answers a port-forward request: finds the pod's address, upgrades, runs the session.
pub async fn serve(
    node: Arc<NodeServer>,
    req: hyper::Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let h = req.headers();
    let values = |name: header::HeaderName| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let upgrade = values(header::UPGRADE).to_ascii_lowercase();
    let transport = if upgrade.contains("websocket") {
        let offered = values(header::SEC_WEBSOCKET_PROTOCOL);
        if !offered.split(',').any(|p| p.trim() == TUNNEL_PROTOCOL) {
            return bad_request(&format!(
                "none of the offered sub-protocols {offered:?} is supported; use {TUNNEL_PROTOCOL:?}"
            ));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return bad_request("missing Sec-WebSocket-Key");
        };
        Transport::WebSocket {
            key: key.as_bytes().to_vec(),
        }
    } else if upgrade.contains("spdy/3.1") {
        let versions = values(header::HeaderName::from_static("x-stream-protocol-version"));
        if !versions.is_empty() && !versions.split(',').any(|p| p.trim() == PROTOCOL) {
            return bad_request(&format!(
                "none of the offered stream protocols {versions:?} is supported; use {PROTOCOL:?}"
            ));
        }
        Transport::Spdy
    } else {
        return bad_request(&format!(
            "upgrade to SPDY/3.1 or to a WebSocket ({TUNNEL_PROTOCOL}) is required"
        ));
    };
    let address = match pod_address(&node, ns, pod).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let on_upgrade = hyper::upgrade::on(req);
    let pod_name = pod.to_string();
    let websocket = matches!(transport, Transport::WebSocket { .. });
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("failed to upgrade a port-forward connection: {e}");
                return;
            }
        };
        let (r, w) = tokio::io::split(io);
        let out = Arc::new(Out {
            io: tokio::sync::Mutex::new(w),
            websocket,
        });
        let incoming = if websocket {
            tunnel_frames(r, out.clone())
        } else {
            spdy_bytes(r)
        };
        session(incoming, out.clone(), address, pod_name).await;
        out.close().await;
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
            .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL),
        Transport::Spdy => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", PROTOCOL),
    };
    response
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// The address forwarded ports are reached at: the pod's IP, or loopback for hostNetwork.
async fn pod_address(node: &NodeServer, ns: &str, pod: &str) -> Result<IpAddr, Response<Body>> {
    let api: Api<Pod> = Api::namespaced(node.client.clone(), ns);
    let found = api.get_opt(pod).await.map_err(|e| {
        status_response(
            500,
            "InternalError",
            &format!("failed to read pod {pod}: {e}"),
        )
    })?;
    let Some(p) = found else {
        return Err(status_response(
            404,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
        ));
    };
    let spec = p.spec.unwrap_or_default();
    if spec.node_name.as_deref() != Some(node.node_name.as_str()) {
        return Err(status_response(
            404,
            "NotFound",
            &format!("pod {pod} is not on node {}", node.node_name),
        ));
    }
    if spec.host_network == Some(true) {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    p.status
        .and_then(|s| s.pod_ip)
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            bad_request(&format!(
                "unable to forward port because pod {pod} has no IP address yet"
            ))
        })
}

/// A forwarded connection's streams as they are opened.
#[derive(Default)]
struct Pair {
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    error: Option<u32>,
    port: Option<u16>,
}

/// Runs one SPDY session until the client goes away.
async fn session(
    mut incoming: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    out: Arc<Out>,
    address: IpAddr,
    pod: String,
) {
    let mut frames = FrameReader::default();
    let mut headers_in = HeaderReader::default();
    let mut headers_out = HeaderWriter::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Where a client's data frames go, by stream id (dropped at the client's FIN).
    let mut to_pod: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    // Each forwarded connection's reset signal, by data stream id. A forwarder is told to stop,
    // never aborted: an abort in the middle of a write would leave half a frame on the
    // connection (and the error stream unclosed, which kubectl waits for).
    let mut forwarders: HashMap<u32, watch::Sender<bool>> = HashMap::new();
    'session: while let Some(chunk) = incoming.next().await {
        frames.extend(&chunk);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("port-forward to {pod}: {e}");
                    break 'session;
                }
            };
            match frame {
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(tx) = to_pod.get(&stream) {
                        if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
                            to_pod.remove(&stream);
                        }
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        to_pod.remove(&stream);
                    }
                }
                Frame::Control { kind, payload, .. } => match kind {
                    spdy::SYN_STREAM => {
                        let Some(id) = spdy::stream_id(&payload) else {
                            continue;
                        };
                        let headers = match payload.get(10..).map(|b| headers_in.read(b)) {
                            Some(Ok(h)) => h,
                            Some(Err(e)) => {
                                tracing::warn!("port-forward to {pod}: {e}");
                                break 'session;
                            }
                            None => continue,
                        };
                        if out.send(&headers_out.syn_reply(id)).await.is_err() {
                            break 'session;
                        }
                        let request = headers.get("requestid").cloned().unwrap_or_default();
                        let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                        let pair = pairs.entry(request.clone()).or_default();
                        pair.port = pair.port.or(port);
                        match headers.get("streamtype").map(String::as_str) {
                            Some("data") => {
                                let (tx, rx) = mpsc::channel(32);
                                to_pod.insert(id, tx);
                                pair.data = Some((id, rx));
                            }
                            Some("error") => pair.error = Some(id),
                            _ => {
                                let rst = spdy::rst_stream(id, spdy::PROTOCOL_ERROR);
                                let _ = out.send(&rst).await;
                                continue;
                            }
                        }
                        if pair.data.is_some() && pair.error.is_some() {
                            let Some(p) = pairs.remove(&request) else {
                                continue;
                            };
                            if let (Some((data, rx)), Some(error)) = (p.data, p.error) {
                                let (reset, on_reset) = watch::channel(false);
                                tokio::spawn(forward(
                                    address,
                                    p.port,
                                    (data, error),
                                    rx,
                                    on_reset,
                                    out.clone(),
                                    pod.clone(),
                                ));
                                forwarders.retain(|_, r| !r.is_closed());
                                forwarders.insert(data, reset);
                            }
                        }
                    }
                    spdy::RST_STREAM => {
                        if let Some(id) = spdy::stream_id(&payload) {
                            to_pod.remove(&id);
                            if let Some(reset) = forwarders.remove(&id) {
                                let _ = reset.send(true);
                            }
                        }
                    }
                    spdy::PING => {
                        // Answer the client's ping with the same id.
                        let pong = out.send(&spdy::control(spdy::PING, 0, &payload)).await;
                        if pong.is_err() {
                            break 'session;
                        }
                    }
                    spdy::GOAWAY => break 'session,
                    // SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: nothing to do.
                    _ => {}
                },
            }
        }
    }
    // Dropping the reset signals stops the forwarders that are left.
    drop(forwarders);
}

/// Forwards one connection: connects to the port and copies both ways.
async fn forward(
    address: IpAddr,
    port: Option<u16>,
    (data, error): (u32, u32),
    mut from_client: mpsc::Receiver<Bytes>,
    on_reset: watch::Receiver<bool>,
    out: Arc<Out>,
    pod: String,
) {
    let fail = |message: String| {
        let out = out.clone();
        async move {
            let _ = out
                .send(&spdy::data(error, spdy::FLAG_FIN, message.as_bytes()))
                .await;
            let _ = out.send(&spdy::data(data, spdy::FLAG_FIN, &[])).await;
        }
    };
    let Some(port) = port.filter(|p| *p > 0) else {
        fail(format!("invalid port for pod {pod}")).await;
        return;
    };
    let target = SocketAddr::new(address, port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            fail(format!(
                "error forwarding port {port} to pod {pod}: failed to connect to {target}: {e}"
            ))
            .await;
            return;
        }
        Err(_) => {
            fail(format!(
                "error forwarding port {port} to pod {pod}: failed to connect to {target}: timed out"
            ))
            .await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut r, mut w) = tcp.into_split();
    // The client reset the data stream (or went away): both directions stop between writes.
    let (mut reset_up, mut reset_down) = (on_reset.clone(), on_reset);
    let up = async move {
        loop {
            let b = tokio::select! {
                b = from_client.recv() => b,
                _ = reset_up.changed() => return,
            };
            let Some(b) = b else { break };
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        // The client finished sending: so does the connection to the pod.
        let _ = w.shutdown().await;
    };
    let down = async {
        // One buffer for the whole connection: [room for the WebSocket header][SPDY data
        // frame header][what one read of the pod returned].
        let at = ROOM + spdy::HEADER;
        let mut buf = vec![0u8; at + READ_BUFFER];
        loop {
            let n = tokio::select! {
                n = r.read(&mut buf[at..]) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = reset_down.changed() => {
                    // The data stream is gone; the error stream still ends, as kubectl waits.
                    let _ = out.send(&spdy::data(error, spdy::FLAG_FIN, &[])).await;
                    return;
                }
            };
            let mut header = [0u8; spdy::HEADER];
            spdy::put_data_header(&mut header, data, 0, n);
            buf[ROOM..at].copy_from_slice(&header);
            if out.write(&mut buf[..at + n]).await.is_err() {
                return;
            }
        }
        let _ = out.send(&spdy::data(data, spdy::FLAG_FIN, &[])).await;
        let _ = out.send(&spdy::data(error, spdy::FLAG_FIN, &[])).await;
    };
    tokio::join!(up, down);
}
