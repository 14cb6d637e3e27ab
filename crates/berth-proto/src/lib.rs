//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into the JSON form the JSON API carries.
//!
//! A body is the 4 magic bytes `k8s\0` followed by a `runtime.Unknown` message
//! (`typeMeta` {apiVersion, kind}, `raw`, `contentEncoding`, `contentType`); `raw` is the
//! object's own message as defined by upstream's `generated.proto` files. Field numbers,
//! JSON names and wire kinds come from a generated table (`src/messages.json`, see
//! `tools/gen_messages.py`).

mod decode;
mod table;
mod wire;

use serde_json::{Map, Value};

/// The protobuf media type of the Kubernetes API.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with `k8s\0`.
    #[error("failed to decode protobuf body: missing the k8s\\0 prefix")]
    NotProtobuf,
    /// `typeMeta` names no kind known to the decoder.
    #[error("failed to decode protobuf body: no protobuf type known for kind {kind:?} in {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    /// The envelope asks for something not supported (e.g. a content encoding).
    #[error("failed to decode protobuf body: {0}")]
    Unsupported(String),
    /// The bytes are not a valid encoding of the message.
    #[error("failed to decode protobuf body: {reason}{}", if path.is_empty() { String::new() } else { format!(" (at {path})") })]
    Invalid { path: String, reason: String },
}

impl DecodeError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            path: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path of an `Invalid` error with `segment`.
    pub(crate) fn within(self, segment: &str) -> Self {
        match self {
            DecodeError::Invalid { path, reason } => DecodeError::Invalid {
                path: format!("{segment}{path}"),
                reason,
            },
            other => other,
        }
    }
}

/// Decodes a whole protobuf body (`k8s\0` + `runtime.Unknown`) into the object's JSON,
/// with `apiVersion` and `kind` from the envelope's `typeMeta` first.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    decode_at(body, 0)
}

/// Whether a `Content-Type` header value names the protobuf media type (parameters ignored).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

pub(crate) fn decode_at(body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let rest = body.strip_prefix(MAGIC).ok_or(DecodeError::NotProtobuf)?;
    let env = decode::envelope(rest)?;
    if !env.content_encoding.is_empty() {
        return Err(DecodeError::Unsupported(format!(
            "content encoding {:?}",
            env.content_encoding
        )));
    }
    let inner = if env.content_type.is_empty() || is_protobuf(&env.content_type) {
        if env.kind.is_empty() {
            return Err(DecodeError::invalid("typeMeta.kind is empty"));
        }
        let name =
            message_for(&env.api_version, &env.kind).ok_or_else(|| DecodeError::UnknownKind {
                api_version: env.api_version.clone(),
                kind: env.kind.clone(),
            })?;
        decode::message(&name, env.raw, depth)?
    } else if env.content_type.starts_with("application/json") {
        serde_json::from_slice(env.raw)
            .map_err(|e| DecodeError::invalid(format!("raw JSON: {e}")))?
    } else {
        return Err(DecodeError::Unsupported(format!(
            "content type {:?}",
            env.content_type
        )));
    };
    let Value::Object(fields) = inner else {
        return Err(DecodeError::invalid("object is not a JSON object"));
    };
    let mut out = Map::new();
    if !env.api_version.is_empty() {
        out.insert("apiVersion".into(), Value::String(env.api_version));
    }
    if !env.kind.is_empty() {
        out.insert("kind".into(), Value::String(env.kind));
    }
    for (k, v) in fields {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

/// The fully qualified message name for `apiVersion` + `kind`: the registry's definition,
/// the request-only kinds (`Eviction`, `Scale`, `DeleteOptions`), or the upstream package
/// derived from the group (`apps` → `io.k8s.api.apps.v1`) when the table has it.
fn message_for(api_version: &str, kind: &str) -> Option<String> {
    let messages = &table::table().messages;
    if let Some(r) = berth_api::registry::find_kind(api_version, kind) {
        if messages.contains_key(r.definition) {
            return Some(r.definition.to_string());
        }
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let meta = format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}");
    if matches!(kind, "DeleteOptions" | "Status" | "WatchEvent") && messages.contains_key(&meta) {
        return Some(meta);
    }
    let package = match group {
        "" => "core".to_string(),
        "apiextensions.k8s.io" => {
            let name =
                format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}");
            return messages.contains_key(&name).then_some(name);
        }
        "apiregistration.k8s.io" => {
            let name = format!("io.k8s.kube-aggregator.pkg.apis.apiregistration.{version}.{kind}");
            return messages.contains_key(&name).then_some(name);
        }
        "internal.apiserver.k8s.io" => "apiserverinternal".to_string(),
        g => g.split('.').next().unwrap_or(g).to_string(),
    };
    let name = format!("io.k8s.api.{package}.{version}.{kind}");
    messages.contains_key(&name).then_some(name)
}

pub use decode::go_duration;

/// The JSON names of a message's fields in the table, in declaration order (empty for an
/// unknown message); for checks against the OpenAPI definitions.
#[doc(hidden)]
pub fn table_fields(message: &str) -> Vec<String> {
    table::table()
        .messages
        .get(message)
        .map(|m| m.fields.iter().map(|f| f.json.clone()).collect())
        .unwrap_or_default()
}
