//! The HTTPS listener: TLS with optional client certificates, HTTP/1.1 and HTTP/2,
//! authentication of every request, body limits, and graceful shutdown.

use crate::auth::{user_from_certificate, TokenAuthenticator, UserInfo};
use crate::handlers::{error_response, Api, Body, Request, MAX_BODY};
use crate::request::Query;
use crate::status::ApiError;
use http::header;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors setting up the listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to load TLS material: {0}")]
    Tls(String),
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Builds the rustls server config: our serving cert, client certs from the cluster CA optional.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<rustls::ServerConfig, ServeError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| ServeError::Tls(format!("serving key: {e}")))?
        .ok_or_else(|| ServeError::Tls("serving key: no key in PEM".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| ServeError::Tls(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServeError::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    api: Api,
    tokens: Arc<TokenAuthenticator>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
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
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let tokens = tokens.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| user_from_certificate(c.as_ref()));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let api = api.clone();
                let tokens = tokens.clone();
                let cert_user = cert_user.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(api, &tokens, cert_user, req).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                }
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

fn authenticate(
    tokens: &TokenAuthenticator,
    cert_user: Option<UserInfo>,
    headers: &http::HeaderMap,
) -> Option<UserInfo> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return tokens.authenticate(token.trim());
    }
    cert_user
}

async fn handle(
    api: Api,
    tokens: &TokenAuthenticator,
    cert_user: Option<UserInfo>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let public = matches!(
        path.as_str(),
        "/healthz" | "/livez" | "/readyz" | "/version"
    );
    let user = match authenticate(tokens, cert_user, &parts.headers) {
        Some(u) => u,
        None if public => UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        },
        None => return error_response(&ApiError::unauthorized()),
    };
    // Pod logs, exec and attach stream from the pod's node (bodies and upgrades as they are).
    if let Some((ns, pod, sub)) = crate::proxy::streaming_target(&path) {
        let req = hyper::Request::from_parts(parts, body);
        let dialer = api.node_dialer.clone();
        return crate::proxy::serve(&api, &dialer, req, &ns, &pod, &sub).await;
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut resp = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                error_response(&ApiError::too_large())
            } else {
                error_response(&ApiError::bad_request(format!(
                    "failed to read the request body: {e}"
                )))
            };
            // The rest of the body is still on an HTTP/1 connection: tell the client not to
            // reuse it, or its next request would be read as part of this body.
            if parts.version < http::Version::HTTP_2 {
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            return resp;
        }
    };
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let resp = api
        .handle(Request {
            method: parts.method,
            path: path.clone(),
            query: Query::parse(parts.uri.query()),
            headers: parts.headers,
            body,
            user,
        })
        .await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}
