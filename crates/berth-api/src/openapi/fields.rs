//! Unknown-field detection for `fieldValidation=Strict|Warn`: walks an object against its
//! definition and reports fields the schema doesn't declare, with paths like upstream's
//! strict-decoding errors (`.spec.foo`, `.spec.template.spec.containers[0].bogus`).

use serde_json::{Map, Value};

use super::definitions;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The paths of the fields of `obj` that the schema of `definition` (e.g.
/// `io.k8s.api.apps.v1.Deployment`) doesn't declare, in document order: `.spec.foo`,
/// `.spec.template.spec.containers[0].bogus`. Keys of maps (`additionalProperties`, e.g.
/// labels) are all accepted and their values checked; opaque objects (`RawExtension`,
/// `FieldsV1`, anything without declared properties) accept anything;
/// `metadata.managedFields` is skipped. An unknown definition yields no paths.
pub fn unknown_fields(definition: &str, obj: &Value) -> Vec<String> {
    let defs = definitions();
    let mut out = Vec::new();
    if let Some(schema) = defs.get(definition) {
        let mut path = String::new();
        walk(defs, Some(definition), schema, obj, &mut path, &mut out);
    }
    out
}

/// Follows `$ref`s to the schema that describes a value, with the definition name if any.
fn resolve<'a>(
    defs: &'a Map<String, Value>,
    mut name: Option<&'a str>,
    mut schema: &'a Value,
) -> (Option<&'a str>, &'a Value) {
    // Bounded: references never chain more than a few levels.
    for _ in 0..8 {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/definitions/"))
        else {
            break;
        };
        match defs.get_key_value(target) {
            Some((n, s)) => {
                name = Some(n.as_str());
                schema = s;
            }
            None => break,
        }
    }
    (name, schema)
}

fn walk(
    defs: &Map<String, Value>,
    name: Option<&str>,
    schema: &Value,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
) {
    let (name, schema) = resolve(defs, name, schema);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if let Some(properties) = properties {
                for (key, v) in fields {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    match properties.get(key) {
                        Some(_) if name == Some(OBJECT_META) && key == "managedFields" => {}
                        Some(s) => walk(defs, None, s, v, path, out),
                        None => out.push(path.clone()),
                    }
                    path.truncate(len);
                }
            } else if let Some(additional) = additional {
                for (key, v) in fields {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    walk(defs, None, additional, v, path, out);
                    path.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(defs, None, item_schema, v, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}
