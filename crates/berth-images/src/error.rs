//! The one error type of the image store. Every variant says what failed ("failed to X")
//! and keeps its cause, so callers (the node agent, the `berth images` CLI) can show it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while importing, resolving, unpacking or removing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation on the store or an unpacked layer failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. "create directory".
        action: &'static str,
        /// The path we were doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An image reference (`name:tag`, `name@digest`, id) could not be parsed.
    #[error("failed to parse image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is not valid.
        reason: &'static str,
    },
    /// A string that should be a digest (`sha256:<64 hex>`) is not one.
    #[error("failed to parse digest {0:?}: expected sha256:<64 lowercase hex>")]
    InvalidDigest(String),
    /// Content did not hash to the digest that names it.
    #[error("failed to verify {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob path, "diff_id of layer N", ...).
        what: String,
        /// The digest the content should have.
        expected: String,
        /// The digest the content has.
        actual: String,
    },
    /// Content had a different size than its descriptor says.
    #[error("failed to verify size of {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Size of the content.
        actual: u64,
    },
    /// A JSON document (index, manifest, config) could not be parsed.
    #[error("failed to parse {what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The tarball or one of its layers is not a valid archive.
    #[error("failed to read archive {what}: {source}")]
    Archive {
        /// Which archive (the tarball or a layer digest).
        what: String,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The tarball is neither an OCI image layout nor a `docker save` archive, or is
    /// missing something it refers to.
    #[error("failed to import image: {0}")]
    InvalidImage(String),
    /// A layer media type or image format we cannot handle (e.g. zstd layers).
    #[error("failed to handle unsupported {what}: {value}")]
    Unsupported {
        /// What kind of thing (media type, platform, ...).
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A tar entry would be written outside the directory being unpacked.
    #[error("failed to unpack entry {entry:?}: {reason}")]
    UnsafePath {
        /// The entry path as found in the archive.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The reference names no image in the store.
    #[error("failed to find image {0:?}")]
    NotFound(String),
    /// A blob the index refers to is missing from the store.
    #[error("failed to find blob {0} in the store")]
    MissingBlob(String),
    /// A pull failed; wraps why, worded like containerd's CRI plugin.
    #[error("failed to pull and unpack image \"{reference}\": {source}")]
    Pull {
        /// The normalised reference being pulled.
        reference: String,
        /// Why it failed.
        #[source]
        source: Box<ImageError>,
    },
    /// The registry could not turn a reference into a manifest.
    #[error("failed to resolve reference \"{reference}\": {source}")]
    Resolve {
        /// The normalised reference.
        reference: String,
        /// Why it failed.
        #[source]
        source: Box<ImageError>,
    },
    /// No registry endpoint has the manifest the reference names.
    #[error("{0}: not found")]
    ManifestNotFound(String),
    /// A registry answered with a status we cannot go on from (`401 Unauthorized`, ...).
    #[error(
        "unexpected status from {method} request to {url}: {status}{}",
        server_message(message)
    )]
    RegistryStatus {
        /// `GET`, `HEAD`.
        method: &'static str,
        /// The URL requested.
        url: String,
        /// Status code and reason, e.g. `401 Unauthorized`.
        status: String,
        /// The registry's error message from the body, if any.
        message: String,
    },
    /// A request to a registry could not be made or its answer not read.
    #[error("failed to do request: {method} {url:?}: {reason}")]
    Request {
        /// `GET`, `HEAD`.
        method: &'static str,
        /// The URL requested.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A registry token could not be fetched.
    #[error("failed to fetch {kind} token: {source}")]
    Token {
        /// `anonymous` or `oauth` (with credentials), as containerd says.
        kind: &'static str,
        /// Why it failed.
        #[source]
        source: Box<ImageError>,
    },
    /// A registry's `WWW-Authenticate` challenge could not be answered.
    #[error("failed to authorize with {url}: {reason}")]
    Authorize {
        /// The URL that was refused.
        url: String,
        /// Why.
        reason: String,
    },
    /// The registry configuration (`registries.yaml`) or credentials could not be used.
    #[error("failed to load registry configuration {}: {reason}", path.display())]
    RegistryConfig {
        /// The file (or secret) that is wrong.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Docker credentials (a `.dockerconfigjson`/`.dockercfg`) could not be parsed.
    #[error("failed to parse docker credentials: {0}")]
    DockerConfig(String),
}

/// `: server message: ...` when a registry said why, as containerd prints it.
fn server_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" (server message: {message})")
    }
}

impl ImageError {
    /// Builds an [`ImageError::Io`] from an action, a path and an error.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for attaching an action and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Maps the error into [`ImageError::Io`].
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &std::path::Path) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(action, path, e))
    }
}
