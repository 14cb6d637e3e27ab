//! Upstream validation: the field errors the Kubernetes API server returns as a 422
//! `Invalid` Status (`pkg/apis/*/validation`), with upstream's `reason`, `field` and
//! per-field message text (without the field prefix), plus [`check_types`], the decode step
//! that turns a wrongly typed field into a 400 `BadRequest`.
//!
//! Everything reads `serde_json::Value` of any shape; a wrongly typed field is skipped here
//! (type checking reports it), never a panic. Values inside messages are printed the way
//! Go's `field.Error` prints them (`"quoted"` strings, bare numbers, `%#v` for maps and
//! selectors).

mod cron;
mod rules;
mod text;

use serde_json::Value;

use crate::registry::ResourceInfo;

/// Upstream's `metav1.CauseType` of a field error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CauseType {
    /// A referenced value does not exist.
    #[serde(rename = "FieldValueNotFound")]
    NotFound,
    /// A required value is missing.
    #[serde(rename = "FieldValueRequired")]
    Required,
    /// A value that must be unique is repeated.
    #[serde(rename = "FieldValueDuplicate")]
    Duplicate,
    /// A value is malformed or out of range.
    #[serde(rename = "FieldValueInvalid")]
    Invalid,
    /// A value is not one of the supported values.
    #[serde(rename = "FieldValueNotSupported")]
    NotSupported,
    /// A value may not be set or changed.
    #[serde(rename = "FieldValueForbidden")]
    Forbidden,
    /// A value is too long.
    #[serde(rename = "FieldValueTooLong")]
    TooLong,
    /// A list has too many items.
    #[serde(rename = "FieldValueTooMany")]
    TooMany,
    /// A value has the wrong type.
    #[serde(rename = "FieldValueTypeInvalid")]
    TypeInvalid,
}

impl CauseType {
    /// The wire name (`FieldValueInvalid`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CauseType::NotFound => "FieldValueNotFound",
            CauseType::Required => "FieldValueRequired",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// One field error, serialized as upstream's `metav1.StatusCause`
/// (`{"reason", "message", "field"}`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cause {
    /// The kind of error.
    #[serde(rename = "reason")]
    pub kind: CauseType,
    /// Upstream's message without the field, e.g. `Required value` or
    /// `Invalid value: "Foo": a lowercase RFC 1123 ...`.
    pub message: String,
    /// The field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// `field: message`, the form upstream joins into the Status message.
    pub fn to_field_message(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Validates `obj` (already defaulted) as upstream does on create (`old == None`) or
/// update (`old == Some(previous object)`), returning every field error found.
pub fn validate(resource: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut v = rules::Validator::default();
    v.object(resource, obj, old);
    v.into_causes()
}

/// Decodes `obj` into the k8s-openapi type of `resource`, as upstream's decoder does before
/// validation. `Err` carries the decode error message (a 400 `BadRequest` upstream).
///
/// Like upstream, `null` means unset, JSON numbers are accepted for quantities, and a
/// missing required field is left for [`validate`] to report as `Required value`.
pub fn check_types(resource: &ResourceInfo, obj: &Value) -> Result<(), String> {
    let mut v = obj.clone();
    normalize_for_decode(&mut v, None);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(resource.api_version()));
        m.insert("kind".into(), Value::String(resource.kind.to_string()));
    }
    let result = decode(resource.definition, v);
    match result {
        Err(e) if e.starts_with("missing field") => Ok(()),
        other => other,
    }
}

macro_rules! decoders {
    ($def:expr, $v:expr, { $($name:literal => $ty:ty),* $(,)? }) => {
        match $def {
            $($name => serde_json::from_value::<$ty>($v).map(|_| ()).map_err(|e| e.to_string()),)*
            _ => Ok(()),
        }
    };
}

fn decode(definition: &str, v: Value) -> Result<(), String> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
        policy::v1 as policy, rbac::v1 as rbac,
    };
    decoders!(definition, v, {
        "io.k8s.api.core.v1.Namespace" => core::Namespace,
        "io.k8s.api.core.v1.Pod" => core::Pod,
        "io.k8s.api.core.v1.Service" => core::Service,
        "io.k8s.api.core.v1.Endpoints" => core::Endpoints,
        "io.k8s.api.core.v1.ConfigMap" => core::ConfigMap,
        "io.k8s.api.core.v1.Secret" => core::Secret,
        "io.k8s.api.core.v1.ServiceAccount" => core::ServiceAccount,
        "io.k8s.api.core.v1.Event" => core::Event,
        "io.k8s.api.core.v1.Node" => core::Node,
        "io.k8s.api.core.v1.PersistentVolumeClaim" => core::PersistentVolumeClaim,
        "io.k8s.api.core.v1.PersistentVolume" => core::PersistentVolume,
        "io.k8s.api.apps.v1.Deployment" => apps::Deployment,
        "io.k8s.api.apps.v1.ReplicaSet" => apps::ReplicaSet,
        "io.k8s.api.apps.v1.StatefulSet" => apps::StatefulSet,
        "io.k8s.api.apps.v1.DaemonSet" => apps::DaemonSet,
        "io.k8s.api.apps.v1.ControllerRevision" => apps::ControllerRevision,
        "io.k8s.api.batch.v1.Job" => batch::Job,
        "io.k8s.api.batch.v1.CronJob" => batch::CronJob,
        "io.k8s.api.coordination.v1.Lease" => coordination::Lease,
        "io.k8s.api.discovery.v1.EndpointSlice" => discovery::EndpointSlice,
        "io.k8s.api.events.v1.Event" => events::Event,
        "io.k8s.api.policy.v1.PodDisruptionBudget" => policy::PodDisruptionBudget,
        "io.k8s.api.networking.v1.Ingress" => networking::Ingress,
        "io.k8s.api.networking.v1.IngressClass" => networking::IngressClass,
        "io.k8s.api.networking.v1.NetworkPolicy" => networking::NetworkPolicy,
        "io.k8s.api.rbac.v1.Role" => rbac::Role,
        "io.k8s.api.rbac.v1.RoleBinding" => rbac::RoleBinding,
        "io.k8s.api.rbac.v1.ClusterRole" => rbac::ClusterRole,
        "io.k8s.api.rbac.v1.ClusterRoleBinding" => rbac::ClusterRoleBinding,
    })
}

/// Keys whose object values map resource names to quantities.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "overhead",
    "hard",
    "used",
    "allocatedResources",
];

/// Drops `null`s (unset upstream) and turns numeric quantities into strings.
fn normalize_for_decode(v: &mut Value, key: Option<&str>) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            let quantities = key.is_some_and(|k| QUANTITY_MAPS.contains(&k));
            for (k, x) in m.iter_mut() {
                if (quantities || k == "sizeLimit") && x.is_number() {
                    *x = Value::String(x.to_string());
                } else {
                    normalize_for_decode(x, Some(k));
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                normalize_for_decode(x, None);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
