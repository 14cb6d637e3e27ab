//! Registry authentication: parsing `WWW-Authenticate` challenges (Basic and Bearer, RFC 7235
//! syntax) and picking credentials for an image out of Docker config JSON
//! (`.dockerconfigjson` and the older `.dockercfg`), matching registry keys the way the
//! kubelet does.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::ImageError;
use crate::reference::DEFAULT_DOMAIN;
use crate::registries::Credentials;

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="..."`: send the credentials with every request.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: fetch a token from `realm`.
    Bearer {
        /// The token server URL.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The `scope` parameter to pass on.
        scope: Option<String>,
    },
}

/// Parses every challenge of a `WWW-Authenticate` header value; unknown schemes are skipped.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut cur: Option<(String, BTreeMap<String, String>)> = None;
    let mut rest = header.trim();
    let finish = |c: Option<(String, BTreeMap<String, String>)>, out: &mut Vec<Challenge>| {
        let Some((scheme, mut params)) = c else {
            return;
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic),
            "bearer" => {
                if let Some(realm) = params.remove("realm") {
                    out.push(Challenge::Bearer {
                        realm,
                        service: params.remove("service"),
                        scope: params.remove("scope"),
                    });
                }
            }
            _ => {}
        }
    };
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (token, after) = rest.split_at(token_end);
        if token.is_empty() {
            break;
        }
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=') {
            // A parameter of the current challenge.
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        other => value.push(other),
                    }
                }
                (value, &quoted[end.min(quoted.len())..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_string(), &value_part[end..])
            };
            if let Some((_, params)) = cur.as_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining;
        } else {
            // A new challenge's scheme.
            finish(cur.take(), &mut out);
            cur = Some((token.to_string(), BTreeMap::new()));
            rest = after;
        }
    }
    finish(cur, &mut out);
    out
}

/// One entry of a Docker config's `auths`.
#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

/// The credentials a Docker config JSON (`{"auths": {...}}` of a
/// `kubernetes.io/dockerconfigjson` secret, or the bare map of a `kubernetes.io/dockercfg`
/// one) holds for `repository` (`127.0.0.1:5000/test/busybox`, `docker.io/library/x`), most
/// specific key first.
pub fn docker_config_credentials(
    json: &[u8],
    repository: &str,
) -> Result<Vec<Credentials>, ImageError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| ImageError::DockerConfig(e.to_string()))?;
    let auths = match value.get("auths") {
        Some(a) => a.clone(),
        None => value,
    };
    let auths: BTreeMap<String, DockerAuth> =
        serde_json::from_value(auths).map_err(|e| ImageError::DockerConfig(e.to_string()))?;
    let mut matched: Vec<(&String, &DockerAuth)> = auths
        .iter()
        .filter(|(key, _)| key_matches(key, repository))
        .collect();
    matched.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
    let mut out = Vec::new();
    for (key, a) in matched {
        let creds = match (&a.username, &a.auth) {
            (Some(u), _) if !u.is_empty() => Credentials {
                username: u.clone(),
                password: a.password.clone().unwrap_or_default(),
            },
            (_, Some(auth)) if !auth.is_empty() => Credentials::from_auth(auth)
                .map_err(|e| ImageError::DockerConfig(format!("{key}: {e}")))?,
            _ => continue,
        };
        if !out.contains(&creds) {
            out.push(creds);
        }
    }
    Ok(out)
}

/// Docker Hub's names for itself.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    DEFAULT_DOMAIN,
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Whether a Docker config key (`127.0.0.1:5000`, `https://index.docker.io/v1/`,
/// `*.example.com/team`) applies to `repository`: same host (globs per label, Docker Hub's
/// aliases), same port, and the key's path a prefix of the repository's.
fn key_matches(key: &str, repository: &str) -> bool {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (repo_host, repo_path) = repository.split_once('/').unwrap_or((repository, ""));
    let key_host = key_host.to_ascii_lowercase();
    let hub = |h: &str| DOCKER_HUB_ALIASES.contains(&h);
    if hub(&key_host) && hub(repo_host) {
        // Docker Hub keys carry the API version (`/v1/`), not a repository path.
        let p = key_path.trim_matches('/');
        return p.is_empty() || p == "v1" || p == "v2" || path_prefix(p, repo_path);
    }
    if !host_matches(&key_host, repo_host) {
        return false;
    }
    path_prefix(key_path.trim_matches('/'), repo_path)
}

fn path_prefix(prefix: &str, path: &str) -> bool {
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// `host[:port]` against a pattern whose labels may be `*`.
fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(']') || h.starts_with('[') => {
                (name.to_string(), port.to_string())
            }
            _ => (h.to_string(), String::new()),
        }
    };
    let (pname, pport) = split(pattern);
    let (hname, hport) = split(host);
    if pport != hport {
        return false;
    }
    let plabels: Vec<&str> = pname.split('.').collect();
    let hlabels: Vec<&str> = hname.split('.').collect();
    plabels.len() == hlabels.len()
        && plabels
            .iter()
            .zip(&hlabels)
            .all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="basic-realm""#),
            vec![Challenge::Basic]
        );
        // Several challenges, unquoted values, commas inside quotes, odd spacing and case.
        let c = parse_challenges(
            r#"Negotiate abc, basic realm=x , bearer  realm = "http://h/t?a=1" ,scope="repository:a/b:pull,push", service=svc"#,
        );
        assert_eq!(
            c,
            vec![
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "http://h/t?a=1".into(),
                    service: Some("svc".into()),
                    scope: Some("repository:a/b:pull,push".into()),
                }
            ]
        );
        // Escapes in quoted strings; a Bearer challenge without a realm is useless.
        assert_eq!(
            parse_challenges(r#"Bearer realm="a\"b""#),
            vec![Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            }]
        );
        assert!(parse_challenges("Bearer service=x").is_empty());
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn picks_docker_config_credentials() -> Result<(), ImageError> {
        let json = br#"{"auths": {
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "127.0.0.1:5000/team": {"auth": "dGVhbTpzZWNyZXQ="},
            "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="},
            "*.example.com": {"username": "glob", "password": "g"},
            "127.0.0.1:5001": {"username": "other", "password": "o"},
            "empty.example.org": {}
        }}"#;
        let names = |repo: &str| -> Result<Vec<String>, ImageError> {
            Ok(docker_config_credentials(json, repo)?
                .into_iter()
                .map(|c| format!("{}:{}", c.username, c.password))
                .collect())
        };
        assert_eq!(names("127.0.0.1:5000/team/app")?, ["team:secret", "u:p"]);
        assert_eq!(names("127.0.0.1:5000/teamx/app")?, ["u:p"]);
        assert_eq!(names("docker.io/library/busybox")?, ["hub:hub"]);
        assert_eq!(names("registry.example.com/x")?, ["glob:g"]);
        assert!(names("a.b.example.com/x")?.is_empty());
        assert!(names("quay.io/x")?.is_empty());
        assert!(names("empty.example.org/x")?.is_empty());
        // The older .dockercfg format: the bare map.
        let old = br#"{"127.0.0.1:5000": {"auth": "dTpw"}}"#;
        let c = docker_config_credentials(old, "127.0.0.1:5000/x")?;
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].username.as_str(), c[0].password.as_str()), ("u", "p"));
        assert!(docker_config_credentials(b"[1]", "x/y").is_err());
        assert!(docker_config_credentials(br#"{"auths": {"h": {"auth": "!"}}}"#, "h/y").is_err());
        Ok(())
    }
}
