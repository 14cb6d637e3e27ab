//! The `/openapi/v2` document in protobuf form
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, the gnostic `openapi.v2`
//! messages), which is what client-go's `OpenAPISchema()` asks for and decodes
//! unconditionally (kubectl `explain --output plaintext-openapiv2`, its OpenAPI v2 patch and
//! validation fallbacks). Encoded straight from the JSON document with a tiny protobuf
//! writer; vendor extensions travel as YAML (JSON text is valid YAML) in `Any.yaml`.

use serde_json::{Map, Value};

/// Appends a varint.
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// A string field, skipped when empty (proto3 default).
fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes(buf, field, s.as_bytes());
    }
}

fn str_of<'a>(obj: &'a Map<String, Value>, k: &str) -> &'a str {
    obj.get(k).and_then(Value::as_str).unwrap_or("")
}

fn boolean(buf: &mut Vec<u8>, field: u32, b: bool) {
    if b {
        key(buf, field, 0);
        buf.push(1);
    }
}

fn int64(buf: &mut Vec<u8>, field: u32, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
        key(buf, field, 0);
        varint(buf, n as u64);
    }
}

fn double(buf: &mut Vec<u8>, field: u32, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_f64) {
        key(buf, field, 1);
        buf.extend_from_slice(&n.to_le_bytes());
    }
}

/// A submessage field, always present (even when empty).
fn message(buf: &mut Vec<u8>, field: u32, encode: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    encode(&mut inner);
    bytes(buf, field, &inner);
}

fn strings(buf: &mut Vec<u8>, field: u32, v: Option<&Value>) {
    for s in v.and_then(Value::as_array).into_iter().flatten() {
        if let Some(s) = s.as_str() {
            bytes(buf, field, s.as_bytes());
        }
    }
}

/// `Any { yaml = 2 }`.
fn any(buf: &mut Vec<u8>, field: u32, v: &Value) {
    let yaml = serde_json::to_string(v).unwrap_or_default();
    message(buf, field, |b| string(b, 2, &yaml));
}

/// `repeated NamedAny vendor_extension` from the `x-` keys of an object.
fn extensions(buf: &mut Vec<u8>, field: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        message(buf, field, |b| {
            string(b, 1, k);
            any(b, 2, v);
        });
    }
}

/// The whole document.
pub(super) fn document(doc: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(doc) = doc.as_object() else {
        return buf;
    };
    string(&mut buf, 1, str_of(doc, "swagger"));
    if let Some(info) = doc.get("info").and_then(Value::as_object) {
        message(&mut buf, 2, |b| {
            string(b, 1, str_of(info, "title"));
            string(b, 2, str_of(info, "version"));
        });
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        message(&mut buf, 8, |b| {
            for (path, item) in paths {
                message(b, 2, |b| {
                    string(b, 1, path);
                    message(b, 2, |b| path_item(b, item));
                });
            }
        });
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        message(&mut buf, 9, |b| {
            for (name, s) in defs {
                message(b, 1, |b| {
                    string(b, 1, name);
                    message(b, 2, |b| schema(b, s));
                });
            }
        });
    }
    buf
}

fn path_item(buf: &mut Vec<u8>, item: &Value) {
    let Some(item) = item.as_object() else {
        return;
    };
    for (verb, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(verb).and_then(Value::as_object) {
            message(buf, field, |b| operation(b, op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message(buf, 9, |b| parameter(b, p));
    }
    extensions(buf, 10, item);
}

fn operation(buf: &mut Vec<u8>, op: &Map<String, Value>) {
    strings(buf, 1, op.get("tags"));
    string(buf, 2, str_of(op, "summary"));
    string(buf, 3, str_of(op, "description"));
    string(buf, 5, str_of(op, "operationId"));
    strings(buf, 6, op.get("produces"));
    strings(buf, 7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message(buf, 8, |b| parameter(b, p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        message(buf, 9, |b| {
            for (code, resp) in responses {
                let Some(resp) = resp.as_object() else {
                    continue;
                };
                // NamedResponseValue { name, ResponseValue { Response response = 1 } }
                message(b, 1, |b| {
                    string(b, 1, code);
                    message(b, 2, |b| {
                        message(b, 1, |b| {
                            string(b, 1, str_of(resp, "description"));
                            if let Some(s) = resp.get("schema") {
                                message(b, 2, |b| message(b, 1, |b| schema(b, s)));
                            }
                            extensions(b, 5, resp);
                        })
                    });
                });
            }
        });
    }
    strings(buf, 10, op.get("schemes"));
    boolean(buf, 11, op.get("deprecated") == Some(&Value::Bool(true)));
    extensions(buf, 13, op);
}

/// `ParametersItem { Parameter parameter = 1 }` (or a `JsonReference`).
fn parameter(buf: &mut Vec<u8>, p: &Value) {
    let Some(p) = p.as_object() else {
        return;
    };
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        message(buf, 2, |b| string(b, 1, r));
        return;
    }
    message(buf, 1, |b| {
        let location = str_of(p, "in");
        if location == "body" {
            message(b, 1, |b| {
                string(b, 1, str_of(p, "description"));
                string(b, 2, str_of(p, "name"));
                string(b, 3, location);
                boolean(b, 4, p.get("required") == Some(&Value::Bool(true)));
                if let Some(s) = p.get("schema") {
                    message(b, 5, |b| schema(b, s));
                }
                extensions(b, 6, p);
            });
            return;
        }
        // NonBodyParameter: header = 1, formData = 2, query = 3, path = 4. The sub-schemas
        // share field numbers 1-4 (required, in, description, name); query and formData have
        // allow_empty_value at 5, shifting type/format/unique_items by one.
        let (which, shift) = match location {
            "header" => (1, 0),
            "formData" => (2, 1),
            "path" => (4, 0),
            _ => (3, 1),
        };
        message(b, 2, |b| {
            message(b, which, |b| {
                boolean(b, 1, p.get("required") == Some(&Value::Bool(true)));
                string(b, 2, location);
                string(b, 3, str_of(p, "description"));
                string(b, 4, str_of(p, "name"));
                string(b, 5 + shift, str_of(p, "type"));
                string(b, 6 + shift, str_of(p, "format"));
                boolean(
                    b,
                    19 + shift,
                    p.get("uniqueItems") == Some(&Value::Bool(true)),
                );
                extensions(b, 22 + shift, p);
            })
        });
    });
}

fn schema(buf: &mut Vec<u8>, s: &Value) {
    let Some(s) = s.as_object() else {
        return;
    };
    string(buf, 1, str_of(s, "$ref"));
    string(buf, 2, str_of(s, "format"));
    string(buf, 3, str_of(s, "title"));
    string(buf, 4, str_of(s, "description"));
    if let Some(d) = s.get("default") {
        any(buf, 5, d);
    }
    double(buf, 6, s.get("multipleOf"));
    double(buf, 7, s.get("maximum"));
    boolean(
        buf,
        8,
        s.get("exclusiveMaximum") == Some(&Value::Bool(true)),
    );
    double(buf, 9, s.get("minimum"));
    boolean(
        buf,
        10,
        s.get("exclusiveMinimum") == Some(&Value::Bool(true)),
    );
    int64(buf, 11, s.get("maxLength"));
    int64(buf, 12, s.get("minLength"));
    string(buf, 13, str_of(s, "pattern"));
    int64(buf, 14, s.get("maxItems"));
    int64(buf, 15, s.get("minItems"));
    boolean(buf, 16, s.get("uniqueItems") == Some(&Value::Bool(true)));
    int64(buf, 17, s.get("maxProperties"));
    int64(buf, 18, s.get("minProperties"));
    strings(buf, 19, s.get("required"));
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        any(buf, 20, e);
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let b = *b;
            message(buf, 21, |m| {
                key(m, 2, 0);
                m.push(u8::from(b));
            });
        }
        Some(a @ Value::Object(_)) => message(buf, 21, |m| message(m, 1, |m| schema(m, a))),
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => message(buf, 22, |m| string(m, 1, t)),
        Some(t @ Value::Array(_)) => message(buf, 22, |m| strings(m, 1, Some(t))),
        _ => {}
    }
    match s.get("items") {
        Some(i @ Value::Object(_)) => message(buf, 23, |m| message(m, 1, |m| schema(m, i))),
        Some(Value::Array(items)) => message(buf, 23, |m| {
            for i in items {
                message(m, 1, |m| schema(m, i));
            }
        }),
        _ => {}
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        message(buf, 24, |m| schema(m, a));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        message(buf, 25, |m| {
            for (name, p) in props {
                message(m, 1, |m| {
                    string(m, 1, name);
                    message(m, 2, |m| schema(m, p));
                });
            }
        });
    }
    boolean(buf, 27, s.get("readOnly") == Some(&Value::Bool(true)));
    if let Some(e) = s.get("example") {
        any(buf, 30, e);
    }
    extensions(buf, 31, s);
}
