//! Image references, normalised the way Docker and the kubelet do: `busybox` is
//! `docker.io/library/busybox:latest`, `quay.io/x/y` is `quay.io/x/y:latest`, and a digest
//! (`name@sha256:...`) is kept.

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry assumed when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag assumed when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Full repository name including the registry, e.g. `docker.io/library/busybox`.
    pub repository: String,
    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The manifest digest, if the reference pins one.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `r`.
    pub fn parse(r: &str) -> Result<Self, ImageError> {
        let bad = |reason| ImageError::InvalidReference {
            reference: r.to_string(),
            reason,
        };
        if r.is_empty() {
            return Err(bad("empty reference"));
        }
        if r.len() > 4096 {
            return Err(bad("reference too long"));
        }
        let (rest, digest) = match r.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
            None => (r, None),
        };
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|s| colon > s) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(bad("invalid tag"));
            }
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, path.to_string())
            }
            _ => (DEFAULT_DOMAIN, name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        let valid_domain = domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        if !valid_domain {
            return Err(bad("invalid registry host"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        for component in path.split('/') {
            let valid = !component.is_empty()
                && component.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && component.starts_with(|c: char| c.is_ascii_alphanumeric())
                && component.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid {
                return Err(bad(
                    "repository name components must be lowercase letters, digits and separators",
                ));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            repository: format!("{domain}/{path}"),
            tag,
            digest,
        })
    }

    /// `repository:tag`, if the reference has a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.repository))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalises an image reference like Docker: `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/x:1` stays, `name@sha256:...` keeps its digest.
pub fn normalize_reference(r: &str) -> Result<String, ImageError> {
    Ok(Reference::parse(r)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() -> Result<(), ImageError> {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:x",
                "docker.io/library/busybox:x",
            ),
            ("myorg/app:v1", "docker.io/myorg/app:v1"),
            ("quay.io/coreos/etcd", "quay.io/coreos/etcd:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("127.0.0.1:5000/app:2", "127.0.0.1:5000/app:2"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input)?, want, "{input}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_reference(&format!("busybox@{d}"))?,
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            normalize_reference(&format!("busybox:1@{d}"))?,
            format!("docker.io/library/busybox:1@{d}")
        );
        Ok(())
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "busybox@sha256:abc",
            "bad name",
            "x/../y",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad:?}");
        }
    }
}
