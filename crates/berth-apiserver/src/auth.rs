//! Authentication: client certificates signed by the cluster CA (user = CN, groups = O) and
//! static bearer tokens from a `--token-auth-file` (upstream's CSV format).

use std::collections::HashMap;
use std::path::Path;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Errors reading the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("failed to read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to parse token file {path} line {line}: {why}")]
    Parse {
        path: String,
        line: usize,
        why: String,
    },
}

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Bearer tokens from `token,user,uid[,"group1,group2"]` lines.
#[derive(Debug, Clone, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(TokenFileError::Parse {
                    path: path.into(),
                    line: i + 1,
                    why: "expected at least token,user,uid".into(),
                });
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                f[0].clone(),
                UserInfo {
                    name: f[1].clone(),
                    uid: f[2].clone(),
                    groups,
                },
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// The user of an `Authorization: Bearer` token.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

/// The user named by a verified client certificate (DER).
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_token_csv() {
        let t = TokenAuthenticator::parse("abc,alice,1,\"dev,ops\"\n# c\nxyz,bob,2\n", "f")
            .expect("parse");
        let a = t.authenticate("abc").expect("alice");
        assert_eq!(a.name, "alice");
        assert_eq!(a.groups, vec!["dev", "ops"]);
        assert_eq!(t.authenticate("xyz").map(|u| u.groups.len()), Some(0));
        assert!(t.authenticate("nope").is_none());
        assert!(TokenAuthenticator::parse("onlytoken\n", "f").is_err());
    }
}
