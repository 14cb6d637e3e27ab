//! Patch algorithms of the Kubernetes API over `serde_json::Value`.
//!
//! This crate owns the four ways a client can change an object in place:
//! - [`json_patch`]: RFC 6902 (`application/json-patch+json`),
//! - [`merge_patch`]: RFC 7386 (`application/merge-patch+json`),
//! - [`strategic_merge_patch`]: Kubernetes' strategic merge patch
//!   (`application/strategic-merge-patch+json`), driven by OpenAPI v2 definitions,
//! - [`managed_fields`]: server-side apply (`application/apply-patch+yaml`) and the
//!   `metadata.managedFields` bookkeeping of ordinary updates.
//!
//! Schema information comes as data (an OpenAPI v2 `definitions` map, see [`Schema`]); when a
//! definition or a field is unknown, objects are merged recursively and lists are replaced.

pub mod managed_fields;
mod schema;
mod strategic;

use serde_json::Value;

pub use strategic::strategic_merge_patch;

/// OpenAPI v2 schema information: the `definitions` map of a swagger document
/// (definition name, e.g. `io.k8s.api.apps.v1.Deployment`, to its schema).
#[derive(Clone, Copy, Debug)]
pub struct Schema<'a> {
    /// Definition name → schema object, exactly like upstream's `swagger.json` `definitions`.
    pub definitions: &'a serde_json::Map<String, Value>,
}

/// Why a patch could not be applied. Every message says what failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum PatchError {
    /// The JSON patch document is not a valid list of RFC 6902 operations.
    #[error("failed to decode JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch `test` operation did not match.
    #[error(
        "failed to apply JSON patch: test operation failed at path '{path}': value did not match"
    )]
    TestFailed {
        /// JSON pointer of the failing test operation.
        path: String,
    },
    /// A JSON patch operation could not be applied (missing path, bad pointer...).
    #[error("failed to apply JSON patch: {0}")]
    JsonPatchFailed(String),
    /// The patch document has the wrong JSON type (e.g. a merge patch that is not an object).
    #[error("failed to apply patch: the patch must be a JSON {expected}, got {got}")]
    PatchNotObject {
        /// Expected JSON type.
        expected: &'static str,
        /// JSON type that was given.
        got: &'static str,
    },
    /// The document being patched has the wrong JSON type.
    #[error("failed to apply patch: the object being patched must be a JSON object, got {got}")]
    DocumentNotObject {
        /// JSON type that was given.
        got: &'static str,
    },
    /// A patch value has a JSON type the schema does not allow at this field.
    #[error("failed to apply strategic merge patch at {path}: expected {expected}, got {got}")]
    TypeMismatch {
        /// Field path like `.spec.containers`.
        path: String,
        /// JSON type the schema wants.
        expected: &'static str,
        /// JSON type the patch has.
        got: &'static str,
    },
    /// `$patch` has a value other than `replace`, `delete` or `merge`.
    #[error("failed to apply strategic merge patch at {path}: unknown patch type: {directive}")]
    UnknownDirective {
        /// Field path.
        path: String,
        /// The unknown directive value.
        directive: String,
    },
    /// A list element of a merging list lacks the merge key.
    #[error("failed to apply strategic merge patch at {path}: map: {item} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// Field path of the list.
        path: String,
        /// The offending element.
        item: String,
        /// The merge key.
        key: String,
    },
    /// Any other malformed strategic merge patch.
    #[error("failed to apply strategic merge patch at {path}: {reason}")]
    InvalidPatch {
        /// Field path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Name of a JSON value's type, for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`) to `doc`.
///
/// The patch must be an array of operations; a failing `test` operation is an error.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        return Err(PatchError::PatchNotObject {
            expected: "array",
            got: json_type(patch),
        });
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    let mut out = doc.clone();
    if let Err(e) = json_patch::patch(&mut out, &ops.0) {
        return Err(match e.kind {
            json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed {
                path: e.path.to_string(),
            },
            _ => PatchError::JsonPatchFailed(e.to_string()),
        });
    }
    Ok(out)
}

/// Applies an RFC 7386 JSON merge patch (`application/merge-patch+json`) to `doc`.
///
/// The patch must be a JSON object; `null` values delete keys, everything else replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::PatchNotObject {
            expected: "object",
            got: json_type(patch),
        });
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
mod tests;
