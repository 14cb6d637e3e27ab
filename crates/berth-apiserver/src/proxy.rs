//! The streaming proxy to nodes: `pods/log`, `pods/exec`, `pods/attach` and
//! `pods/portforward` are answered by the node running the pod. The API server checks the
//! request (the pod exists, is bound, the container is valid), finds the node's endpoint
//! (`status.addresses` and `status.daemonEndpoints.kubeletEndpoint.Port`), connects with
//! TLS as `kube-apiserver-kubelet-client` (a client certificate from the cluster CA), sends
//! the request on under the node's path, and then either streams the response body back
//! (logs: every chunk is flushed as it arrives) or, for an upgrade (WebSocket), splices
//! the two connections both ways. A node whose endpoint runs in this process (the node agent
//! of `berth server`) is reached in memory instead: the same request, checked the same way,
//! goes to its handler without a TLS connection, and an upgrade is answered by the node on
//! the client's own connection (no second TLS pass, no splice).

use crate::handlers::{error_response, full, Api, Body};
use crate::request::Query;
use crate::status::ApiError;
use berth_api::registry::ResourceInfo;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The user the API server is on nodes (its client certificate's CN).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The annotation a node with a self-signed endpoint certificate carries (its value:
/// `self-signed`); such an endpoint is not verified against the cluster CA.
pub const SELF_SIGNED_ANNOTATION: &str = "node.berth.dev/kubelet-serving-cert";

/// The pod subresources served by nodes.
pub const STREAMING_SUBRESOURCES: [&str; 4] = ["log", "exec", "attach", "portforward"];

/// The buffer of each direction of a spliced upgrade (exec, attach, port-forward).
const SPLICE_BUFFER: usize = 256 * 1024;

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors building the node client.
#[derive(Debug, thiserror::Error)]
#[error("failed to set up the node client: {0}")]
pub struct DialerError(String);

/// A node endpoint served by this process: answers a request the API server has
/// authenticated and checked, addressed with the node's path (`/portForward/{ns}/{pod}`,
/// ...), as the node's HTTPS endpoint answers the API server.
pub type LocalNodeHandler = Arc<
    dyn Fn(hyper::Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// The nodes whose endpoints run in this process, by Node name (`berth server`'s own node).
#[derive(Clone, Default)]
pub struct LocalNodes(Arc<RwLock<HashMap<String, LocalNodeHandler>>>);

impl LocalNodes {
    /// Reaches node `name`'s endpoint through `handler` from now on.
    pub fn register(&self, name: &str, handler: LocalNodeHandler) {
        let mut nodes = self.0.write().unwrap_or_else(|e| e.into_inner());
        nodes.insert(name.to_string(), handler);
    }

    /// Node `name`'s endpoint is no longer in this process.
    pub fn remove(&self, name: &str) {
        let mut nodes = self.0.write().unwrap_or_else(|e| e.into_inner());
        nodes.remove(name);
    }

    fn get(&self, name: &str) -> Option<LocalNodeHandler> {
        let nodes = self.0.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(name).cloned()
    }
}

/// Connects to nodes' endpoints with the API server's client certificate, or in memory to
/// the [`LocalNodes`].
pub struct NodeDialer {
    verified: Arc<rustls::ClientConfig>,
    self_signed: Arc<rustls::ClientConfig>,
    /// Nodes served by this process.
    pub local: LocalNodes,
}

impl NodeDialer {
    /// A dialer trusting `ca_pem` for node certificates, presenting `cert_pem`/`key_pem`.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, DialerError> {
        let bad = |e: &dyn std::fmt::Display| DialerError(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&e))?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| bad(&e))?
            .ok_or_else(|| DialerError("no key in the client key PEM".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(&e))
        };
        let mut verified = builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad(&e))?;
        verified.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Nodes that announce a self-signed endpoint certificate (see the README's "Not
        // done yet"): any certificate whose handshake signatures hold.
        let mut self_signed = berth_tls::insecure_client_builder()
            .map_err(|e| bad(&e))?
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad(&e))?;
        self_signed.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            verified: Arc::new(verified),
            self_signed: Arc::new(self_signed),
            local: LocalNodes::default(),
        })
    }
}

/// The pod streaming subresource a path addresses (`log`, `exec`, ...), with the
/// namespace and pod name.
pub fn streaming_target(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, sub]
            if STREAMING_SUBRESOURCES.contains(sub) =>
        {
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((d(ns), d(pod), sub.to_string()))
        }
        _ => None,
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for, as upstream chooses it: the one named, or the pod's
/// only container.
pub fn choose_container(
    pod: &Value,
    name: &str,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    let containers = str_list(pod.pointer("/spec/containers"));
    let init = str_list(pod.pointer("/spec/initContainers"));
    let ephemeral = str_list(pod.pointer("/spec/ephemeralContainers"));
    match requested {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The node's endpoint: address, port, and whether its certificate is self-signed.
fn node_endpoint(node: &Value, name: &str) -> Result<(String, u16, bool), ApiError> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let find = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_string)
    };
    let address = find("InternalIP")
        .or_else(|| find("ExternalIP"))
        .or_else(|| find("Hostname"))
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {name} has no address"),
            )
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    let self_signed = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SELF_SIGNED_ANNOTATION))
        .and_then(Value::as_str)
        == Some("self-signed");
    Ok((address, port, self_signed))
}

fn pods() -> &'static ResourceInfo {
    berth_api::registry::find("", "v1", "pods").unwrap_or(&berth_api::registry::RESOURCES[0])
}

fn nodes() -> &'static ResourceInfo {
    berth_api::registry::find("", "v1", "nodes").unwrap_or(&berth_api::registry::RESOURCES[0])
}

/// Answers a pod streaming request by proxying it to the pod's node.
pub async fn serve(
    api: &Api,
    dialer: &NodeDialer,
    req: hyper::Request<Incoming>,
    ns: &str,
    pod_name: &str,
    sub: &str,
) -> Response<Body> {
    match forward(api, dialer, req, ns, pod_name, sub).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn forward(
    api: &Api,
    dialer: &NodeDialer,
    mut req: hyper::Request<Incoming>,
    ns: &str,
    pod_name: &str,
    sub: &str,
) -> Result<Response<Body>, ApiError> {
    let allowed = match sub {
        "log" => req.method() == Method::GET,
        _ => req.method() == Method::GET || req.method() == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            req.method()
        )));
    }
    let query_str = req.uri().query().unwrap_or("").to_string();
    let query = Query::parse(Some(&query_str));
    let pod = api.objects.get(pods(), Some(ns), pod_name).await?;
    let container = if sub == "portforward" {
        None
    } else {
        Some(choose_container(&pod, pod_name, query.get("container"))?)
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {pod_name} does not have a host assigned"))
        })?;
    let node = api.objects.get(nodes(), None, node_name).await?;
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path = match (sub, &container) {
        ("log", Some(c)) => format!("/containerLogs/{}/{}/{}", enc(ns), enc(pod_name), enc(c)),
        ("exec", Some(c)) => format!("/exec/{}/{}/{}", enc(ns), enc(pod_name), enc(c)),
        ("attach", Some(c)) => format!("/attach/{}/{}/{}", enc(ns), enc(pod_name), enc(c)),
        _ => format!("/portForward/{}/{}", enc(ns), enc(pod_name)),
    };
    let uri = if query_str.is_empty() {
        path
    } else {
        format!("{path}?{query_str}")
    };
    // The node runs in this process: its handler gets the client's request itself (an
    // upgrade then happens on the client's connection, which the node writes to directly).
    if let Some(local) = dialer.local.get(node_name) {
        let (mut parts, body) = req.into_parts();
        parts.uri = uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiError::bad_request(e.to_string()))?;
        parts.headers.remove(header::AUTHORIZATION);
        return Ok(local(hyper::Request::from_parts(parts, body)).await);
    }
    let (address, port, self_signed) = node_endpoint(&node, node_name)?;
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("failed to reach node {node_name} at {address}:{port}: {e}"),
        )
    };
    // Connect and handshake with the node.
    let tls_config = if self_signed {
        dialer.self_signed.clone()
    } else {
        dialer.verified.clone()
    };
    let server_name = ServerName::try_from(address.clone()).map_err(|e| unavailable(&e))?;
    let host = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&host))
        .await
        .map_err(|e| unavailable(&e))?
        .map_err(|e| unavailable(&e))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls_config).connect(server_name, tcp),
    )
    .await
    .map_err(|e| unavailable(&e))?
    .map_err(|e| unavailable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("node connection ended: {e}");
        }
    });
    let upgrade = is_upgrade(req.headers());
    let mut out = http::Request::builder()
        .method(req.method().clone())
        .uri(uri)
        .header(header::HOST, host.as_str());
    for (k, v) in req.headers() {
        if k == header::HOST || k == header::AUTHORIZATION || k == header::CONTENT_LENGTH {
            continue;
        }
        out = out.header(k, v);
    }
    let out = out
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unavailable(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::new(
                502,
                "InternalError",
                "the node upgraded a request that asked for no upgrade",
            ));
        };
        let node_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match (client_upgrade.await, node_upgrade.await) {
                (Ok(c), Ok(n)) => {
                    let (c_read, c_write) = tokio::io::split(TokioIo::new(c));
                    let (n_read, n_write) = tokio::io::split(TokioIo::new(n));
                    tokio::join!(splice(c_read, n_write), splice(n_read, c_write));
                }
                (Err(e), _) | (_, Err(e)) => tracing::debug!("failed to splice an upgrade: {e}"),
            }
        });
        let mut r = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            r = r.header(k, v);
        }
        return r
            .body(full(Bytes::new()))
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()));
    }
    // A plain response (logs, or an error before any upgrade): streamed back as it comes.
    let status = resp.status();
    let mut r = Response::builder().status(status);
    for (k, v) in resp.headers() {
        if k == header::CONTENT_LENGTH || k == header::TRANSFER_ENCODING || k == header::CONNECTION
        {
            continue;
        }
        r = r.header(k, v);
    }
    let body = resp.into_body();
    let stream = futures::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        loop {
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => return Some((Ok::<_, Infallible>(Frame::data(d)), Some(body))),
                    Err(_) => continue,
                },
                // The node went away: the response just ends.
                Some(Err(_)) | None => return None,
            }
        }
    });
    r.body(BodyExt::boxed(StreamBody::new(stream)))
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

/// Copies one direction of an upgraded connection until its end, then ends the other side's
/// writing. A TLS stream hands out one record's worth per read; what has arrived is gathered
/// (up to [`SPLICE_BUFFER`]) and written at once, so the other connection sends few, full
/// records in one write instead of one small write per record.
async fn splice(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) {
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; SPLICE_BUFFER];
    loop {
        let mut filled = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while filled < buf.len() {
            match from.read(&mut buf[filled..]).now_or_never() {
                Some(Ok(n)) if n > 0 => filled += n,
                _ => break,
            }
        }
        if to.write_all(&buf[..filled]).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("upgrade"))
        && h.contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn streaming_paths() {
        assert_eq!(
            streaming_target("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default".into(), "web".into(), "exec".into()))
        );
        assert!(streaming_target("/api/v1/namespaces/default/pods/web/status").is_none());
        assert!(streaming_target("/api/v1/namespaces/default/pods/web").is_none());
    }

    #[test]
    fn container_choice_as_upstream() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(
            choose_container(&one, "web", None).ok().as_deref(),
            Some("app")
        );
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let e = choose_container(&two, "web", None).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]")
        );
        assert_eq!(
            choose_container(&two, "web", Some("i")).ok().as_deref(),
            Some("i")
        );
        let e = choose_container(&two, "web", Some("x"))
            .err()
            .map(|e| e.message);
        assert_eq!(e.as_deref(), Some("container x is not valid for pod web"));
    }

    #[test]
    fn node_endpoints() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(
            node_endpoint(&n, "n1").ok(),
            Some(("10.0.0.5".into(), 10251, false))
        );
        assert!(node_endpoint(&json!({}), "n1").is_err());
    }
}
