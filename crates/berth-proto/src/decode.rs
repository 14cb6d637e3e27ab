//! Turns one encoded message into JSON, driven by the message table, with upstream's
//! special JSON forms for `IntOrString`, `Quantity`, `Time`, `MicroTime`, `Duration`,
//! `RawExtension`, `FieldsV1`, the apiextensions `JSON*` helpers and `[]string` wrappers.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::table::{table, Field, Kind, Message};
use crate::wire::{Reader, WireValue};
use crate::DecodeError;

/// Nesting limit (messages inside messages), against stack exhaustion on hostile input.
const MAX_DEPTH: usize = 100;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
const APIEXT: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.";

/// The parts of a `runtime.Unknown` envelope.
pub struct Envelope<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
    pub content_encoding: String,
    pub content_type: String,
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes a `runtime.Unknown` (without the magic prefix).
pub fn envelope(buf: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut r = Reader::new(buf);
    while let Some((tag, v)) = r.next_field()? {
        let WireValue::Bytes(b) = v else {
            continue;
        };
        match tag {
            1 => {
                let mut tm = Reader::new(b);
                while let Some((t, v)) = tm.next_field().map_err(|e| e.within("typeMeta"))? {
                    match (t, v) {
                        (1, WireValue::Bytes(s)) => env.api_version = string(s),
                        (2, WireValue::Bytes(s)) => env.kind = string(s),
                        _ => {}
                    }
                }
            }
            2 => env.raw = b,
            3 => env.content_encoding = string(b),
            4 => env.content_type = string(b),
            _ => {}
        }
    }
    Ok(env)
}

/// All fields of a message, in wire order.
fn fields(buf: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.next_field()? {
        out.push(f);
    }
    Ok(out)
}

fn last_varint(fs: &[(u32, WireValue<'_>)], tag: u32) -> Option<u64> {
    fs.iter().rev().find_map(|(t, v)| match v {
        WireValue::Varint(n) if *t == tag => Some(*n),
        _ => None,
    })
}

fn last_bytes<'a>(fs: &[(u32, WireValue<'a>)], tag: u32) -> Option<&'a [u8]> {
    fs.iter().rev().find_map(|(t, v)| match v {
        WireValue::Bytes(b) if *t == tag => Some(*b),
        _ => None,
    })
}

fn all_bytes<'a>(fs: &[(u32, WireValue<'a>)], tag: u32) -> Vec<&'a [u8]> {
    fs.iter()
        .filter_map(|(t, v)| match v {
            WireValue::Bytes(b) if *t == tag => Some(*b),
            _ => None,
        })
        .collect()
}

/// Decodes one message of type `name` into its JSON form.
pub fn message(name: &str, buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::invalid("messages nested too deeply"));
    }
    if let Some(v) = special(name, buf, depth)? {
        return Ok(v);
    }
    let t = table();
    let msg = t
        .messages
        .get(name)
        .ok_or_else(|| DecodeError::invalid(format!("unknown message type {name}")))?;
    if t.arrays.contains(name) {
        let items = generic(msg, buf, depth)?;
        return Ok(match items {
            Value::Object(mut m) => m.remove("items").unwrap_or(Value::Array(Vec::new())),
            _ => Value::Array(Vec::new()),
        });
    }
    generic(msg, buf, depth)
}

/// The upstream types whose JSON form is not an object of their fields.
fn special(name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, DecodeError> {
    let Some(short) = name
        .strip_prefix(META)
        .or_else(|| name.strip_prefix("io.k8s.apimachinery.pkg.util.intstr."))
        .or_else(|| name.strip_prefix("io.k8s.apimachinery.pkg.api.resource."))
        .or_else(|| name.strip_prefix("io.k8s.apimachinery.pkg.runtime."))
        .or_else(|| {
            name.strip_prefix(APIEXT)
                .and_then(|rest| rest.split_once('.').map(|(_, kind)| kind))
        })
    else {
        return Ok(None);
    };
    let fs = fields(buf)?;
    let value = match short {
        "Time" | "MicroTime" => {
            if buf.is_empty() {
                return Ok(Some(Value::Null));
            }
            let secs = last_varint(&fs, 1).unwrap_or(0) as i64;
            let nanos = last_varint(&fs, 2).unwrap_or(0) as i64 as i32;
            if short == "Time" {
                let t = chrono::DateTime::from_timestamp(secs, 0)
                    .ok_or_else(|| DecodeError::invalid("time out of range"))?;
                Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            } else {
                let nanos = u32::try_from(nanos)
                    .map_err(|_| DecodeError::invalid("negative nanoseconds"))?;
                let t = chrono::DateTime::from_timestamp(secs, nanos)
                    .ok_or_else(|| DecodeError::invalid("time out of range"))?;
                Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            }
        }
        "Duration" => Value::String(go_duration(last_varint(&fs, 1).unwrap_or(0) as i64)),
        "IntOrString" => {
            if last_varint(&fs, 1) == Some(1) {
                Value::String(last_bytes(&fs, 3).map(string).unwrap_or_default())
            } else {
                Value::from(last_varint(&fs, 2).unwrap_or(0) as i64 as i32)
            }
        }
        "Quantity" => Value::String(
            last_bytes(&fs, 1)
                .map(string)
                .unwrap_or_else(|| "0".to_string()),
        ),
        "RawExtension" | "FieldsV1" | "JSON" => raw_json(last_bytes(&fs, 1), depth)?,
        "JSONSchemaPropsOrArray" => {
            let schema = format!("{}JSONSchemaProps", name.trim_end_matches(short));
            let many = all_bytes(&fs, 2);
            if !many.is_empty() {
                let items = many
                    .into_iter()
                    .map(|b| message(&schema, b, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::Array(items)
            } else if let Some(b) = last_bytes(&fs, 1) {
                message(&schema, b, depth + 1)?
            } else {
                Value::Null
            }
        }
        "JSONSchemaPropsOrBool" => {
            let schema = format!("{}JSONSchemaProps", name.trim_end_matches(short));
            if let Some(b) = last_bytes(&fs, 2) {
                message(&schema, b, depth + 1)?
            } else {
                Value::Bool(last_varint(&fs, 1).is_some_and(|v| v != 0))
            }
        }
        "JSONSchemaPropsOrStringArray" => {
            let schema = format!("{}JSONSchemaProps", name.trim_end_matches(short));
            let many = all_bytes(&fs, 2);
            if !many.is_empty() {
                Value::Array(many.into_iter().map(|b| Value::String(string(b))).collect())
            } else if let Some(b) = last_bytes(&fs, 1) {
                message(&schema, b, depth + 1)?
            } else {
                Value::Null
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

/// Embedded raw JSON (or a nested protobuf body), `null` when empty.
fn raw_json(raw: Option<&[u8]>, depth: usize) -> Result<Value, DecodeError> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(b) if b.starts_with(crate::MAGIC) => crate::decode_at(b, depth + 1),
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| DecodeError::invalid(format!("embedded JSON: {e}"))),
    }
}

/// Formats nanoseconds as Go's `time.Duration.String()` does (`1m30s`, `1.5ms`, `0s`).
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |whole: u64, rest: u64, digits: usize| -> String {
        let mut s = whole.to_string();
        if rest != 0 {
            let f = format!("{rest:0digits$}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        s
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u / 1_000, u % 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u / 1_000_000, u % 1_000_000, 6));
    }
    let secs = u / 1_000_000_000;
    let mut out = format!("{}s", frac(secs % 60, u % 1_000_000_000, 9));
    let mins = secs / 60;
    if mins > 0 {
        out = format!("{}m{out}", mins % 60);
        let hours = mins / 60;
        if hours > 0 {
            out = format!("{hours}h{out}");
        }
    }
    format!("{sign}{out}")
}

/// What one field has collected so far.
enum Slot {
    One(Value),
    Many(Vec<Value>),
    Map(Map<String, Value>),
}

fn wire_name(v: &WireValue<'_>) -> &'static str {
    match v {
        WireValue::Varint(_) => "varint",
        WireValue::Fixed64(_) => "fixed64",
        WireValue::Bytes(_) => "length-delimited",
        WireValue::Fixed32 => "fixed32",
    }
}

/// One scalar or message value of `kind`.
fn value(kind: &Kind, v: WireValue<'_>, depth: usize) -> Result<Value, DecodeError> {
    Ok(match (kind, v) {
        (Kind::String, WireValue::Bytes(b)) => Value::String(string(b)),
        (Kind::Bytes, WireValue::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Bool, WireValue::Varint(n)) => Value::Bool(n != 0),
        (Kind::Int32, WireValue::Varint(n)) => Value::from(n as i64 as i32),
        (Kind::Int64, WireValue::Varint(n)) => Value::from(n as i64),
        (Kind::Double, WireValue::Fixed64(n)) => {
            Number::from_f64(f64::from_bits(n)).map_or(Value::Null, Value::Number)
        }
        (Kind::Message(name), WireValue::Bytes(b)) => message(name, b, depth + 1)?,
        (kind, v) => {
            return Err(DecodeError::invalid(format!(
                "{} value for a {kind:?} field",
                wire_name(&v)
            )))
        }
    })
}

/// The value of a map field's absent entry key or value.
fn zero(kind: &Kind, depth: usize) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::String | Kind::Bytes => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::Int32 | Kind::Int64 | Kind::Double => Value::from(0),
        Kind::Message(name) => message(name, &[], depth + 1)?,
        Kind::Map(_) | Kind::Other => Value::Null,
    })
}

/// Adds one wire value of field `f` to its slot.
fn collect(
    f: &Field,
    v: WireValue<'_>,
    slot: &mut Option<Slot>,
    depth: usize,
) -> Result<(), DecodeError> {
    match &f.kind {
        Kind::Other => {}
        Kind::Map(vk) => {
            let WireValue::Bytes(entry) = v else {
                return Err(DecodeError::invalid("map entry is not length-delimited"));
            };
            let mut key = String::new();
            let mut val = None;
            for (t, ev) in fields(entry)? {
                match (t, ev) {
                    (1, WireValue::Bytes(k)) => key = string(k),
                    (2, ev) => val = Some(value(vk, ev, depth).map_err(|e| e.within("[]"))?),
                    _ => {}
                }
            }
            let val = match val {
                Some(v) => v,
                None => zero(vk, depth)?,
            };
            match slot {
                Some(Slot::Map(m)) => {
                    m.insert(key, val);
                }
                _ => {
                    let mut m = Map::new();
                    m.insert(key, val);
                    *slot = Some(Slot::Map(m));
                }
            }
        }
        kind if f.repeated => {
            let mut items = Vec::new();
            match (kind, v) {
                (Kind::Bool | Kind::Int32 | Kind::Int64, WireValue::Bytes(b)) => {
                    let mut r = Reader::new(b);
                    while !r.at_end() {
                        items.push(value(kind, WireValue::Varint(r.varint()?), depth)?);
                    }
                }
                (Kind::Double, WireValue::Bytes(b)) => {
                    if b.len() % 8 != 0 {
                        return Err(DecodeError::invalid("packed doubles of odd length"));
                    }
                    for c in b.chunks_exact(8) {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        items.push(value(
                            kind,
                            WireValue::Fixed64(u64::from_le_bytes(a)),
                            depth,
                        )?);
                    }
                }
                (kind, v) => items.push(value(kind, v, depth)?),
            }
            match slot {
                Some(Slot::Many(all)) => all.extend(items),
                _ => *slot = Some(Slot::Many(items)),
            }
        }
        kind => *slot = Some(Slot::One(value(kind, v, depth)?)),
    }
    Ok(())
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// A message as a JSON object of its fields, in declaration order.
fn generic(msg: &Message, buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let mut slots: Vec<Option<Slot>> = Vec::new();
    slots.resize_with(msg.fields.len(), || None);
    let mut r = Reader::new(buf);
    while let Some((tag, v)) = r.next_field()? {
        let Some(i) = msg.index(tag) else {
            continue;
        };
        let (Some(f), Some(slot)) = (msg.fields.get(i), slots.get_mut(i)) else {
            continue;
        };
        collect(f, v, slot, depth).map_err(|e| e.within(&format!(".{}", f.json)))?;
    }
    let mut out = Map::new();
    for (f, slot) in msg.fields.iter().zip(slots) {
        if f.json == "-" {
            continue;
        }
        if f.json.is_empty() {
            // An embedded (`json:",inline"`) struct: its fields belong to this object.
            if let Some(Slot::One(Value::Object(inner))) = slot {
                out.extend(inner);
            }
            continue;
        }
        match slot {
            Some(Slot::One(v))
                if matches!(f.kind, Kind::Message(_)) || f.keep_zero || !is_zero(&v) =>
            {
                out.insert(f.json.clone(), v);
            }
            Some(Slot::Many(items)) if !items.is_empty() => {
                out.insert(f.json.clone(), Value::Array(items));
            }
            Some(Slot::Map(m)) if !m.is_empty() => {
                out.insert(f.json.clone(), Value::Object(m));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}
