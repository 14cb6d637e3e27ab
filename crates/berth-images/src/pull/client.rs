//! The HTTP side of a pull: GETs against one registry endpoint (`<base>/<repo>/manifests/<ref>`,
//! `.../blobs/<digest>`), answering `401` challenges once per request — Basic with the
//! credentials, Bearer by fetching a token from the challenge's realm (with the credentials,
//! if any, as Basic auth) — and turning registry errors into [`ImageError`]s.

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use ureq::http::{Response, StatusCode};
use ureq::Body;

use super::auth::{parse_challenges, Challenge};
use crate::error::ImageError;
use crate::registries::{Credentials, Endpoint};

/// Largest error or token body we read.
const MAX_SMALL_BODY: u64 = 1 << 20;

/// A client for one repository on one registry endpoint. Keeps the authorization it
/// earned (token or Basic) for the requests that follow.
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

impl Client {
    /// A client for `repository` (the path on the registry, e.g. `library/busybox`).
    pub(crate) fn new(
        endpoint: Endpoint,
        repository: &str,
        credentials: Option<Credentials>,
    ) -> Result<Self, ImageError> {
        let mut tls =
            ureq::tls::TlsConfig::builder().disable_verification(endpoint.tls.insecure_skip_verify);
        if let Some(ca_file) = &endpoint.tls.ca_file {
            let bad = |reason: String| ImageError::RegistryConfig {
                path: ca_file.clone(),
                reason,
            };
            let pem = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".to_string()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            endpoint,
            repository: repository.to_string(),
            credentials,
            authorization: None,
        })
    }

    /// The endpoint this client talks to.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// GETs `<repo>/<kind>/<reference>` (`kind`: `manifests` or `blobs`). `Ok(None)` on 404.
    pub(crate) fn get(
        &mut self,
        kind: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Option<Response<Body>>, ImageError> {
        let url = format!(
            "{}/{}/{kind}/{reference}",
            self.endpoint.base_url(),
            self.repository
        );
        let mut response = self.send(&url, accept)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenges: Vec<Challenge> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            if self.authorize(&challenges)? {
                response = self.send(&url, accept)?;
            }
        }
        match response.status() {
            StatusCode::OK => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error("GET", &url, response)),
        }
    }

    fn send(&self, url: &str, accept: &[&str]) -> Result<Response<Body>, ImageError> {
        let mut request = self.agent.get(url);
        if !accept.is_empty() {
            request = request.header("Accept", accept.join(", "));
        }
        if let Some(a) = &self.authorization {
            request = request.header("Authorization", a);
        }
        request.call().map_err(|e| ImageError::Request {
            method: "GET",
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// Earns an authorization for the challenges of a `401`; `false` if there is none
    /// to be had (no challenge we know, or Basic without credentials).
    fn authorize(&mut self, challenges: &[Challenge]) -> Result<bool, ImageError> {
        for c in challenges {
            if let Challenge::Bearer {
                realm,
                service,
                scope,
            } = c
            {
                let token = self.fetch_token(realm, service.as_deref(), scope.as_deref())?;
                self.authorization = Some(format!("Bearer {token}"));
                return Ok(true);
            }
        }
        if challenges.contains(&Challenge::Basic) {
            if let Some(c) = &self.credentials {
                let basic = basic_auth(c);
                if self.authorization.as_deref() != Some(basic.as_str()) {
                    self.authorization = Some(basic);
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Fetches a bearer token from `realm` (Docker's token protocol: GET with `service`
    /// and `scope`, Basic auth when we have credentials).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, ImageError> {
        let kind = if self.credentials.is_some() {
            "oauth"
        } else {
            "anonymous"
        };
        let fail = |source: ImageError| ImageError::Token {
            kind,
            source: Box::new(source),
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(fail(ImageError::Authorize {
                url: self.endpoint.base_url(),
                reason: format!("token realm {realm:?} is not an http(s) URL"),
            }));
        }
        let scope = scope
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut request = self.agent.get(realm).query("scope", &scope);
        if let Some(s) = service {
            request = request.query("service", s);
        }
        if let Some(c) = &self.credentials {
            request = request.header("Authorization", basic_auth(c));
        }
        let response = request.call().map_err(|e| {
            fail(ImageError::Request {
                method: "GET",
                url: realm.to_string(),
                reason: e.to_string(),
            })
        })?;
        if response.status() != StatusCode::OK {
            return Err(fail(status_error("GET", realm, response)));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = read_small(response);
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            fail(ImageError::Json {
                what: format!("token response from {realm}"),
                source: e,
            })
        })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                fail(ImageError::Authorize {
                    url: realm.to_string(),
                    reason: "token response has no token".to_string(),
                })
            })
    }
}

fn basic_auth(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Reads at most [`MAX_SMALL_BODY`] bytes of a body (best effort).
fn read_small(response: Response<Body>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(MAX_SMALL_BODY)
        .read_to_end(&mut out);
    out
}

/// An [`ImageError::RegistryStatus`] with the registry's error messages from the body
/// (`{"errors": [{"code": "...", "message": "..."}]}`).
pub(crate) fn status_error(
    method: &'static str,
    url: &str,
    response: Response<Body>,
) -> ImageError {
    let status = response.status();
    let status_text = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<RegistryErr>,
    }
    #[derive(Deserialize)]
    struct RegistryErr {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = read_small(response);
    let message = serde_json::from_slice::<Errors>(&body)
        .map(|e| {
            e.errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code.to_lowercase(), e.message),
                    (false, true) => e.code.to_lowercase(),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    ImageError::RegistryStatus {
        method,
        url: url.to_string(),
        status: status_text.trim_end().to_string(),
        message,
    }
}
