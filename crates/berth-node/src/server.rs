//! The node's authenticated HTTPS endpoint (the kubelet's port, 10250 by default): TLS with
//! a serving certificate, client certificates from the cluster CA required, and only the
//! API server's identity (group `system:masters`) allowed. It serves the kubelet's
//! streaming paths, which the API server proxies `pods/log`, `pods/exec` and `pods/attach`
//! to: `GET /containerLogs/{ns}/{pod}/{container}`, `GET|POST /exec/{ns}/{pod}/{container}`
//! and `GET|POST /attach/{ns}/{pod}/{container}` (WebSocket upgrades), and
//! `GET|POST /portForward/{ns}/{pod}` (SPDY, or SPDY tunnelled in a WebSocket).

use crate::logs::LogOptions;
use berth_runtime::{ContainerManager, ContainerStatus};
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::Api;
use kube::ResourceExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The group whose client certificates the endpoint accepts (the API server's).
pub const ALLOWED_GROUP: &str = "system:masters";

/// Set (to `self-signed`) on a Node whose endpoint certificate is not from the cluster CA:
/// the API server then does not verify it.
pub const SELF_SIGNED_ANNOTATION: &str = "node.berth.dev/kubelet-serving-cert";

/// The response body of the endpoint.
pub type Body = BoxBody<Bytes, Infallible>;

/// The endpoint's TLS material, PEM-encoded.
#[derive(Clone)]
pub struct KubeletTls {
    /// The node's serving certificate (chain).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The CA client certificates must chain to (the cluster CA).
    pub client_ca_pem: String,
}

impl std::fmt::Debug for KubeletTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletTls { .. }")
    }
}

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to load the node's TLS material: {0}")]
    Tls(String),
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers need: the API (to find pods), the containers and their logs.
pub struct NodeServer {
    pub client: kube::Client,
    pub node_name: String,
    pub containers: ContainerManager,
    pub logs_dir: PathBuf,
}

/// The rustls config: our certificate, client certificates from the CA required.
pub fn tls_config(tls: &KubeletTls) -> Result<rustls::ServerConfig, ServerError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ServerError::Tls(format!("{what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut tls.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad("serving certificate", &e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut tls.key_pem.as_bytes())
        .map_err(|e| bad("serving key", &e))?
        .ok_or_else(|| ServerError::Tls("serving key: no key in PEM".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut tls.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| bad("client CA", &e))?;
        roots.add(ca).map_err(|e| bad("client CA", &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Unauthenticated clients get through the handshake so they can be told 401.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| bad("client verifier", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad("serving certificate", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The user (CN) and groups (O) of a verified client certificate.
fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let s = cert.subject();
    let cn = s.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = s
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, groups))
}

/// Binds the endpoint; [`serve`] then runs it.
pub async fn bind(port: u16) -> Result<tokio::net::TcpListener, ServerError> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })
}

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    node: Arc<NodeServer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("failed to accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let node = node.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            let who = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject(c.as_ref()));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let node = node.clone();
                let who = who.clone();
                async move { Ok::<_, Infallible>(node.handle(who, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!("node connection from {peer} ended: {e}");
            }
        });
    }
}

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A `metav1.Status` failure response, as the API server passes it on to clients.
pub fn status_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// A 400 Bad Request.
pub fn bad_request(message: &str) -> Response<Body> {
    status_response(400, "BadRequest", message)
}

/// A container's attempts on this node (runtime ids `<uid>-<name>-<n>`), oldest first.
/// Blocking.
pub fn attempts(containers: &ContainerManager, uid: &str, name: &str) -> Vec<u32> {
    let prefix = format!("{uid}-{name}-");
    let mut v: Vec<u32> = containers
        .list()
        .iter()
        .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// A container of a pod as the handlers need it.
pub struct Target {
    pub pod: Pod,
    pub uid: String,
    pub container: Container,
}

impl Target {
    /// The runtime id of attempt `n`.
    pub fn container_id(&self, n: u32) -> String {
        format!("{}-{}-{n}", self.uid, self.container.name)
    }

    /// The container's waiting reason in the pod's status, if it has one.
    pub fn waiting_reason(&self) -> String {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == self.container.name))
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .unwrap_or_else(|| "ContainerCreating".into())
    }
}

/// Who a request handed over in memory comes from: the API server of this process.
const IN_PROCESS_API_SERVER: &str = "kube-apiserver (in process)";

impl NodeServer {
    /// Answers a request the API server in this process (`berth server`) hands over in
    /// memory instead of over TLS, after it authenticated the user and checked the request:
    /// the same handlers, with the API server's identity.
    pub async fn serve_in_process(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> Response<Body> {
        let who = (
            IN_PROCESS_API_SERVER.to_string(),
            vec![ALLOWED_GROUP.to_string()],
        );
        self.handle(Some(who), req).await
    }

    async fn handle(
        self: Arc<Self>,
        who: Option<(String, Vec<String>)>,
        req: hyper::Request<Incoming>,
    ) -> Response<Body> {
        let Some((user, groups)) = who else {
            return status_response(401, "Unauthorized", "Unauthorized");
        };
        if !groups.iter().any(|g| g == ALLOWED_GROUP) {
            return status_response(
                403,
                "Forbidden",
                &format!("user {user:?} may not use the node's API"),
            );
        }
        let path: Vec<String> = req
            .uri()
            .path()
            .trim_matches('/')
            .split('/')
            .map(percent_encoding_decode)
            .collect();
        let query = req.uri().query().unwrap_or("").to_string();
        match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["healthz"] => Response::new(full("ok")),
            ["containerLogs", ns, pod, container] => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.logs(&ns, &pod, &container, &query).await
            }
            [verb @ ("exec" | "attach"), ns, pod, container] => {
                let attach = *verb == "attach";
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                crate::stream::serve(self.clone(), req, attach, &ns, &pod, &container).await
            }
            ["portForward", ns, pod] => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                crate::portforward::serve(self.clone(), req, &ns, &pod).await
            }
            _ => status_response(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        }
    }

    /// Finds a container of a pod bound to this node.
    pub async fn target(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Target, Response<Body>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
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
        let spec = p.spec.clone().unwrap_or_default();
        if spec.node_name.as_deref() != Some(self.node_name.as_str()) {
            return Err(status_response(
                404,
                "NotFound",
                &format!("pod {pod} is not on node {}", self.node_name),
            ));
        }
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == container)
            .cloned();
        let Some(c) = c else {
            return Err(bad_request(&format!(
                "container {container} is not valid for pod {pod}"
            )));
        };
        Ok(Target {
            uid: p.uid().unwrap_or_default(),
            pod: p,
            container: c,
        })
    }

    async fn logs(&self, ns: &str, pod: &str, container: &str, query: &str) -> Response<Body> {
        let opts = match LogOptions::from_query(query) {
            Ok(o) => o,
            Err(e) => return bad_request(&e.to_string()),
        };
        let t = match self.target(ns, pod, container).await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let containers = self.containers.clone();
        let tries = {
            let (containers, uid, name) =
                (containers.clone(), t.uid.clone(), t.container.name.clone());
            match tokio::task::spawn_blocking(move || attempts(&containers, &uid, &name)).await {
                Ok(v) => v,
                Err(e) => return status_response(500, "InternalError", &e.to_string()),
            }
        };
        let attempt = if opts.previous {
            match tries.len().checked_sub(2).map(|i| tries[i]) {
                Some(a) => a,
                None => {
                    return bad_request(&format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ))
                }
            }
        } else {
            match tries.last() {
                Some(a) => *a,
                None => {
                    return bad_request(&format!(
                        "container \"{container}\" in pod \"{pod}\" is waiting to start: {}",
                        t.waiting_reason()
                    ))
                }
            }
        };
        let path = self
            .logs_dir
            .join(format!("{ns}_{pod}_{}", t.uid))
            .join(container)
            .join(format!("{attempt}.log"));
        let id = t.container_id(attempt);
        let previous = opts.previous;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        tokio::task::spawn_blocking(move || {
            let exited = || {
                previous || !matches!(containers.status(&id), Ok(ContainerStatus::Running { .. }))
            };
            let send = |d: Vec<u8>| {
                if d.is_empty() {
                    !tx.is_closed()
                } else {
                    tx.blocking_send(Bytes::from(d)).is_ok()
                }
            };
            if let Err(e) = crate::logs::stream(&path, &opts, exited, send) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(log = %path.display(), "failed to read a container log: {e}");
                }
            }
        });
        let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        }));
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(BodyExt::boxed(body))
            .unwrap_or_else(|_| Response::new(full("")))
    }
}

fn percent_encoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
