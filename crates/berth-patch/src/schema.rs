//! Navigation of OpenAPI v2 definitions: resolves `$ref`s and classifies every schema node
//! into a [`Shape`] (struct, map, list, scalar, opaque, unknown) with the list/map extensions
//! (`x-kubernetes-patch-*`, `x-kubernetes-list-*`, `x-kubernetes-map-type`) that drive
//! strategic merge patch and server-side apply.

use serde_json::{Map, Value};

use crate::Schema;

/// Maximum `$ref` chain followed before giving up (guards against cyclic definitions).
const MAX_REF_DEPTH: usize = 32;

/// Definitions that are JSON scalars although their Go type is a struct.
const SCALAR_DEFINITIONS: &[&str] = &[
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
];

/// Definitions whose content is arbitrary JSON that is never looked into.
const OPAQUE_DEFINITIONS: &[&str] = &[
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
];

/// The classification of one schema node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape<'a> {
    /// An object with declared `properties`.
    Struct {
        props: &'a Map<String, Value>,
        atomic: bool,
    },
    /// A map with `additionalProperties` (values share one schema).
    Map {
        elem: Option<&'a Value>,
        atomic: bool,
    },
    /// An array; `prop` is the array schema carrying the list extensions.
    List { prop: &'a Value },
    /// A string, number, boolean, IntOrString, Quantity, Time...
    Scalar,
    /// RawExtension / FieldsV1 / JSON: arbitrary content, treated as one value.
    Opaque,
    /// No schema information: objects are merged, lists replaced.
    Unknown,
}

/// How server-side apply treats a list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ListKind<'a> {
    /// Replaced as a whole.
    Atomic,
    /// Items identified by value.
    Set,
    /// Items identified by these key fields.
    Map(Vec<&'a str>),
}

impl<'a> Schema<'a> {
    /// Shape of a named definition (`Unknown` if the definition is missing).
    pub(crate) fn definition_shape(&self, name: &str) -> Shape<'a> {
        self.ref_shape(name, false, 0)
    }

    /// Shape of a schema node (a property schema, `items`, `additionalProperties`...).
    pub(crate) fn shape(&self, node: Option<&'a Value>) -> Shape<'a> {
        match node {
            Some(n) => self.node_shape(n, false, 0),
            None => Shape::Unknown,
        }
    }

    fn node_shape(&self, node: &'a Value, atomic_outer: bool, depth: usize) -> Shape<'a> {
        if depth > MAX_REF_DEPTH {
            return Shape::Unknown;
        }
        let atomic = atomic_outer || is_atomic_map(node);
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            return self.ref_shape(ref_name(r), atomic, depth + 1);
        }
        if let Some(Value::Array(all)) = node.get("allOf") {
            if let Some(r) = all
                .iter()
                .find_map(|s| s.get("$ref").and_then(Value::as_str))
            {
                return self.ref_shape(ref_name(r), atomic, depth + 1);
            }
        }
        classify(node, atomic)
    }

    fn ref_shape(&self, name: &str, atomic: bool, depth: usize) -> Shape<'a> {
        if SCALAR_DEFINITIONS.contains(&name) {
            return Shape::Scalar;
        }
        if OPAQUE_DEFINITIONS.contains(&name) {
            return Shape::Opaque;
        }
        match self.definitions.get(name) {
            Some(def) => self.node_shape(def, atomic, depth),
            None => Shape::Unknown,
        }
    }
}

fn ref_name(r: &str) -> &str {
    r.strip_prefix("#/definitions/")
        .or_else(|| r.strip_prefix("#/components/schemas/"))
        .unwrap_or(r)
}

fn is_atomic_map(node: &Value) -> bool {
    node.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
}

fn classify(node: &Value, atomic: bool) -> Shape<'_> {
    if node
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Shape::Scalar;
    }
    let ty = node.get("type").and_then(Value::as_str);
    if ty == Some("array") {
        return Shape::List { prop: node };
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        if !props.is_empty() {
            return Shape::Struct { props, atomic };
        }
    }
    match ty {
        Some("string" | "integer" | "number" | "boolean") => Shape::Scalar,
        _ => match node.get("additionalProperties") {
            Some(ap @ Value::Object(_)) => Shape::Map {
                elem: Some(ap),
                atomic,
            },
            _ => Shape::Unknown,
        },
    }
}

impl<'a> Shape<'a> {
    /// Shape of the value under key `name` of an object of this shape.
    pub(crate) fn field(&self, schema: &Schema<'a>, name: &str) -> Shape<'a> {
        match self {
            Shape::Struct { props, .. } => schema.shape(props.get(name)),
            Shape::Map { elem, .. } => schema.shape(*elem),
            _ => Shape::Unknown,
        }
    }

    /// Whether `name` is a declared property of this struct (as opposed to a map entry).
    pub(crate) fn declares(&self, name: &str) -> bool {
        match self {
            Shape::Struct { props, .. } => props.contains_key(name),
            _ => false,
        }
    }

    /// Shape of the items of a list of this shape.
    pub(crate) fn item(&self, schema: &Schema<'a>) -> Shape<'a> {
        match self {
            Shape::List { prop } => schema.shape(prop.get("items")),
            _ => Shape::Unknown,
        }
    }

    /// The `default` declared for property `name` of a struct, if any.
    pub(crate) fn field_default(&self, schema: &Schema<'a>, name: &str) -> Option<&'a Value> {
        let Shape::Struct { props, .. } = self else {
            return None;
        };
        let prop = props.get(name)?;
        if let Some(d) = prop.get("default") {
            return Some(d);
        }
        // A `$ref`'d property may carry its default on the definition.
        let r = prop.get("$ref").and_then(Value::as_str)?;
        schema.definitions.get(ref_name(r))?.get("default")
    }

    /// `x-kubernetes-patch-strategy` of a list (empty if none).
    pub(crate) fn patch_strategy(&self) -> &'a str {
        match self {
            Shape::List { prop } => prop
                .get("x-kubernetes-patch-strategy")
                .and_then(Value::as_str)
                .unwrap_or(""),
            _ => "",
        }
    }

    /// Whether a list is merged (rather than replaced) by strategic merge patch.
    pub(crate) fn smp_merges(&self) -> bool {
        self.patch_strategy()
            .split(',')
            .any(|s| s.trim() == "merge")
    }

    /// `x-kubernetes-patch-merge-key` of a list.
    pub(crate) fn merge_key(&self) -> Option<&'a str> {
        match self {
            Shape::List { prop } => prop
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str),
            _ => None,
        }
    }

    /// How server-side apply treats this list.
    pub(crate) fn list_kind(&self) -> ListKind<'a> {
        let Shape::List { prop } = self else {
            return ListKind::Atomic;
        };
        match prop.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("atomic") => ListKind::Atomic,
            Some("set") => ListKind::Set,
            Some("map") => {
                let keys: Vec<&str> = prop
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !keys.is_empty() {
                    ListKind::Map(keys)
                } else if let Some(k) = self.merge_key() {
                    ListKind::Map(vec![k])
                } else {
                    ListKind::Atomic
                }
            }
            _ => {
                if self.smp_merges() {
                    match self.merge_key() {
                        Some(k) => ListKind::Map(vec![k]),
                        None => ListKind::Set,
                    }
                } else {
                    ListKind::Atomic
                }
            }
        }
    }
}
