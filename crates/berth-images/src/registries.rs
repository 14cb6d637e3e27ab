//! Registry configuration: `<data-dir>/registries.yaml` in k3s's format (a subset): which
//! endpoints serve a registry (`mirrors`), and per endpoint host the credentials and TLS
//! settings (`configs`). The endpoint URL's scheme decides HTTP or HTTPS.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//!   "127.0.0.1:5000":                 # a registry that is its own (plain HTTP) mirror
//!     endpoint: ["http://127.0.0.1:5000"]
//! configs:
//!   "127.0.0.1:5000":
//!     auth: {username: me, password: secret}   # or {auth: base64("me:secret")}
//!     tls: {insecure_skip_verify: false, ca_file: /etc/berth/registry-ca.pem}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::ImageError;
use crate::reference::DEFAULT_DOMAIN;

/// The host Docker Hub's API is served from.
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// The parsed `registries.yaml`. Missing file, empty file: no mirrors, no configs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RegistriesConfig {
    /// Registry host (`docker.io`, `127.0.0.1:5000`, or `*` for every registry) → its mirrors.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host → credentials and TLS settings.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// The endpoints that serve one registry, tried in order.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Mirror {
    /// Endpoint URLs (`https://mirror.example.com`, `http://127.0.0.1:5000`).
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// Settings for one endpoint host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Credentials sent when the endpoint asks for them.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings for HTTPS endpoints.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Credentials in `registries.yaml`: `username`/`password`, or `auth` (base64 `user:pass`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: Option<String>,
}

/// TLS settings of an endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct TlsConfig {
    /// Accept any certificate (for testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM file of the CA(s) that sign the registry's certificate (instead of the public roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (or token used as one).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Decodes Docker's `auth` field: base64 of `username:password`.
    pub fn from_auth(auth: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8".to_string())?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| "auth is not base64 of username:password".to_string())?;
        Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

/// One place to fetch a registry's content from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API root, `/v2` unless the endpoint URL names another path.
    pub api_root: String,
    /// Credentials from `configs` for this host.
    pub credentials: Option<Credentials>,
    /// TLS settings from `configs` for this host.
    pub tls: TlsConfig,
    /// Whether this is the registry itself rather than a configured mirror (explicit
    /// credentials, e.g. from pull secrets, are sent to it).
    pub is_registry_host: bool,
}

impl Endpoint {
    /// `scheme://host/v2`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.api_root)
    }
}

impl RegistriesConfig {
    /// Reads `path`; a missing file is the default configuration, a bad one an error that
    /// names the file.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ImageError::RegistryConfig {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Self::parse(&text).map_err(|reason| ImageError::RegistryConfig {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the YAML text of a `registries.yaml`, checking endpoints and credentials.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: RegistriesConfig = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        for (registry, mirror) in &config.mirrors {
            for url in &mirror.endpoint {
                parse_endpoint_url(url)
                    .map_err(|e| format!("mirrors.{registry:?}.endpoint {url:?}: {e}"))?;
            }
        }
        for (host, c) in &config.configs {
            if let Some(auth) = &c.auth {
                auth_credentials(auth).map_err(|e| format!("configs.{host:?}.auth: {e}"))?;
            }
        }
        Ok(config)
    }

    /// The endpoints to try for `registry` (a host as in a normalised reference, e.g.
    /// `docker.io`), in order: its mirrors (or the `*` mirrors), then the registry itself
    /// unless a mirror already is it. Loopback registries default to plain HTTP, as
    /// containerd's; every other default is HTTPS.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mirrors = self
            .mirrors
            .get(registry)
            .or_else(|| self.mirrors.get("*"))
            .map(|m| m.endpoint.as_slice())
            .unwrap_or_default();
        let default_host = if registry == DEFAULT_DOMAIN {
            DOCKER_HUB_HOST
        } else {
            registry
        };
        let mut out = Vec::new();
        for url in mirrors {
            // Checked when loaded; a URL that does not parse is skipped.
            let Ok((scheme, host, path)) = parse_endpoint_url(url) else {
                continue;
            };
            let is_registry_host = host == registry || host == default_host;
            out.push(self.endpoint(scheme, host, path, is_registry_host, registry));
        }
        if !out.iter().any(|e| e.is_registry_host) {
            let scheme = if is_loopback(default_host) {
                "http"
            } else {
                "https"
            };
            out.push(self.endpoint(
                scheme.to_string(),
                default_host.to_string(),
                "/v2".to_string(),
                true,
                registry,
            ));
        }
        out
    }

    fn endpoint(
        &self,
        scheme: String,
        host: String,
        api_root: String,
        is_registry_host: bool,
        registry: &str,
    ) -> Endpoint {
        let config = self.configs.get(&host).or_else(|| {
            is_registry_host
                .then(|| self.configs.get(registry))
                .flatten()
        });
        Endpoint {
            scheme,
            api_root,
            credentials: config
                .and_then(|c| c.auth.as_ref())
                .and_then(|a| auth_credentials(a).ok()),
            tls: config.and_then(|c| c.tls.clone()).unwrap_or_default(),
            is_registry_host,
            host,
        }
    }
}

/// Credentials from an `auth` block: `username`/`password`, else the base64 `auth`.
fn auth_credentials(a: &AuthConfig) -> Result<Credentials, String> {
    match (&a.username, &a.password, &a.auth) {
        (Some(u), p, _) if !u.is_empty() => Ok(Credentials {
            username: u.clone(),
            password: p.clone().unwrap_or_default(),
        }),
        (_, _, Some(auth)) if !auth.is_empty() => Credentials::from_auth(auth),
        _ => Err("needs username and password, or auth".to_string()),
    }
}

/// Splits `scheme://host[:port][/path]` into scheme, host and API root.
fn parse_endpoint_url(url: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("must start with http:// or https://".to_string());
    }
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid_host {
        return Err("has no valid host".to_string());
    }
    let path = path.trim_end_matches('/');
    let api_root = if path.is_empty() { "/v2" } else { path };
    Ok((scheme, host.to_string(), api_root.to_string()))
}

/// Whether `host[:port]` is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors_and_configs() -> Result<(), String> {
        let c = RegistriesConfig::parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
  "127.0.0.1:5001":
    endpoint: ["http://127.0.0.1:5001"]
configs:
  "127.0.0.1:5000":
    auth:
      username: me
      password: secret
  "127.0.0.1:5001":
    auth:
      auth: bWU6c2VjcmV0
    tls:
      insecure_skip_verify: true
      ca_file: /etc/ca.pem
"#,
        )?;
        let hub = c.endpoints("docker.io");
        assert_eq!(hub.len(), 2, "{hub:?}");
        assert_eq!(hub[0].base_url(), "http://127.0.0.1:5000/v2");
        assert!(!hub[0].is_registry_host);
        let me = Credentials {
            username: "me".into(),
            password: "secret".into(),
        };
        assert_eq!(hub[0].credentials.as_ref(), Some(&me));
        assert_eq!(hub[1].base_url(), "https://registry-1.docker.io/v2");
        assert!(hub[1].is_registry_host && hub[1].credentials.is_none());

        let own = c.endpoints("127.0.0.1:5001");
        assert_eq!(own.len(), 1, "its own mirror: no second, default endpoint");
        assert_eq!(own[0].base_url(), "http://127.0.0.1:5001/v2");
        assert_eq!(own[0].credentials.as_ref(), Some(&me));
        assert!(own[0].tls.insecure_skip_verify);
        assert_eq!(
            own[0].tls.ca_file.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );

        let other = c.endpoints("quay.io");
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].base_url(), "https://quay.io/v2");
        let local = c.endpoints("localhost:5002");
        assert_eq!(local[0].base_url(), "http://localhost:5002/v2");
        Ok(())
    }

    #[test]
    fn empty_and_missing_files_are_defaults() -> Result<(), ImageError> {
        assert_eq!(
            RegistriesConfig::parse("").ok(),
            Some(RegistriesConfig::default())
        );
        let dir = tempfile::tempdir().map_err(|e| ImageError::io("tempdir", "/tmp", e))?;
        let c = RegistriesConfig::load(&dir.path().join("registries.yaml"))?;
        assert_eq!(c, RegistriesConfig::default());
        Ok(())
    }

    #[test]
    fn bad_files_name_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("registries.yaml");
        for bad in [
            "mirrors: [1, 2]",
            "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
            "configs:\n  x:\n    auth: {auth: \"!!\"}\n",
            "configs:\n  x:\n    auth: {}\n",
        ] {
            std::fs::write(&path, bad)?;
            let e = match RegistriesConfig::load(&path) {
                Err(e) => e.to_string(),
                Ok(c) => return Err(format!("{bad:?} was accepted: {c:?}").into()),
            };
            assert!(
                e.starts_with(&format!(
                    "failed to load registry configuration {}",
                    path.display()
                )),
                "{e}"
            );
        }
        Ok(())
    }
}
