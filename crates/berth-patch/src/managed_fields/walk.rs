//! Schema-aware walks over objects for server-side apply: the field set of an applied
//! configuration, the added/modified/removed comparison of two objects, the structural merge
//! of a configuration into a live object, and removal of paths.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Path, PathElement};
use crate::schema::{ListKind, Shape};
use crate::Schema;

/// How one node is walked.
enum Node<'a> {
    /// Compared and replaced as a whole.
    Leaf,
    /// An object walked key by key; `shape` gives the children's schemas.
    Object(Shape<'a>),
    /// A list walked item by item; `keys` is empty for sets.
    List {
        keys: Option<Vec<&'a str>>,
        item: Shape<'a>,
    },
}

/// Classifies a node from its schema and the values present there (`None` = absent).
/// `null` counts as an empty container; any other mismatch makes the node a leaf.
fn node<'a>(schema: &Schema<'a>, shape: Shape<'a>, values: &[Option<&Value>]) -> Node<'a> {
    let present = || values.iter().flatten().filter(|v| !v.is_null());
    match shape {
        Shape::Struct { atomic: true, .. } | Shape::Map { atomic: true, .. } => Node::Leaf,
        Shape::Struct { .. } | Shape::Map { .. } => {
            if present().all(|v| v.is_object()) {
                Node::Object(shape)
            } else {
                Node::Leaf
            }
        }
        Shape::Unknown => {
            if present().count() > 0 && present().all(|v| v.is_object()) {
                Node::Object(shape)
            } else {
                Node::Leaf
            }
        }
        Shape::List { .. } => {
            if !present().all(|v| v.is_array()) {
                return Node::Leaf;
            }
            match shape.list_kind() {
                ListKind::Atomic => Node::Leaf,
                ListKind::Set => Node::List {
                    keys: None,
                    item: shape.item(schema),
                },
                ListKind::Map(keys) => Node::List {
                    keys: Some(keys),
                    item: shape.item(schema),
                },
            }
        }
        Shape::Scalar | Shape::Opaque => Node::Leaf,
    }
}

/// The path element naming list item `v` at position `i`.
///
/// With `strict`, a list-map item missing a key field without a schema default is an error.
pub(crate) fn item_pe(
    schema: &Schema,
    keys: &Option<Vec<&str>>,
    item: Shape,
    v: &Value,
    i: usize,
    strict: bool,
) -> Result<PathElement, String> {
    let Some(keys) = keys else {
        return Ok(PathElement::Value(v.to_string()));
    };
    let Value::Object(m) = v else {
        if strict {
            return Err(format!(
                "associative list with keys has an element that is not a map: {v}"
            ));
        }
        return Ok(PathElement::Index(i));
    };
    let mut key = Map::new();
    for k in keys {
        if let Some(kv) = m.get(*k) {
            key.insert((*k).to_string(), kv.clone());
        } else if let Some(d) = item.field_default(schema, k) {
            key.insert((*k).to_string(), d.clone());
        } else if strict {
            return Err(format!(
                "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
            ));
        }
    }
    if key.is_empty() {
        return Ok(PathElement::Index(i));
    }
    Ok(PathElement::Key(Value::Object(key).to_string()))
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

/// The fields set by an applied configuration (upstream `ToFieldSet`).
pub(crate) fn to_field_set(schema: &Schema, v: &Value, shape: Shape) -> Result<FieldSet, String> {
    let mut out = FieldSet::default();
    tfs(schema, v, shape, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn tfs(
    schema: &Schema,
    v: &Value,
    shape: Shape,
    path: &mut Path,
    out: &mut FieldSet,
) -> Result<(), String> {
    match node(schema, shape, &[Some(v)]) {
        Node::Leaf => out.insert(path),
        Node::Object(shape) => {
            if let Value::Object(m) = v {
                for (k, cv) in m {
                    path.push(PathElement::Field(k.clone()));
                    tfs(schema, cv, shape.field(schema, k), path, out)?;
                    if cv.is_null() || is_empty_object(cv) || !shape.declares(k) {
                        out.insert(path);
                    }
                    path.pop();
                }
            }
        }
        Node::List { keys, item } => {
            if let Value::Array(a) = v {
                for (i, it) in a.iter().enumerate() {
                    path.push(item_pe(schema, &keys, item, it, i, true)?);
                    tfs(schema, it, item, path, out)?;
                    out.insert(path);
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

/// Paths added, modified and removed between two objects (upstream `Compare`).
#[derive(Default, Debug)]
pub(crate) struct Comparison {
    pub(crate) added: FieldSet,
    pub(crate) modified: FieldSet,
    pub(crate) removed: FieldSet,
}

impl Comparison {
    /// Drops paths at or below `ignored`.
    pub(crate) fn filter(&mut self, ignored: &FieldSet) {
        self.added = self.added.recursive_difference(ignored);
        self.modified = self.modified.recursive_difference(ignored);
        self.removed = self.removed.recursive_difference(ignored);
    }
}

/// Compares `old` and `new` objects of the given shape.
pub(crate) fn compare(schema: &Schema, old: &Value, new: &Value, shape: Shape) -> Comparison {
    let mut c = Comparison::default();
    cmp(schema, Some(old), Some(new), shape, &mut Vec::new(), &mut c);
    c
}

fn as_obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

fn as_arr(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

fn cmp(
    schema: &Schema,
    l: Option<&Value>,
    r: Option<&Value>,
    shape: Shape,
    path: &mut Path,
    c: &mut Comparison,
) {
    if l.is_none() && r.is_none() {
        return;
    }
    let mut kind = node(schema, shape, &[l, r]);
    if let Node::Object(_) = kind {
        let empty = |v: Option<&Value>| as_obj(v).is_none_or(Map::is_empty);
        if empty(l) && empty(r) {
            kind = Node::Leaf;
        }
    }
    if let Node::List { .. } = kind {
        if as_arr(l).is_empty() && as_arr(r).is_empty() {
            kind = Node::Leaf;
        }
    }
    match kind {
        Node::Leaf => {
            match (l, r) {
                (None, _) => c.added.insert(path),
                (_, None) => c.removed.insert(path),
                (Some(a), Some(b)) if a != b => c.modified.insert(path),
                _ => {}
            }
            return;
        }
        Node::Object(shape) => {
            let (lo, ro) = (as_obj(l), as_obj(r));
            let mut seen = HashSet::new();
            for (k, rv) in ro.into_iter().flatten() {
                seen.insert(k.as_str());
                path.push(PathElement::Field(k.clone()));
                cmp(
                    schema,
                    lo.and_then(|m| m.get(k)),
                    Some(rv),
                    shape.field(schema, k),
                    path,
                    c,
                );
                path.pop();
            }
            for (k, lv) in lo.into_iter().flatten() {
                if seen.contains(k.as_str()) {
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                cmp(schema, Some(lv), None, shape.field(schema, k), path, c);
                path.pop();
            }
        }
        Node::List { keys, item } => {
            let index = |a: &[Value]| -> Vec<PathElement> {
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        item_pe(schema, &keys, item, v, i, false).unwrap_or(PathElement::Index(i))
                    })
                    .collect()
            };
            let (la, ra) = (as_arr(l), as_arr(r));
            let (lpes, rpes) = (index(la), index(ra));
            let lmap: HashMap<&PathElement, &Value> = lpes.iter().zip(la).collect();
            let rmap: HashMap<&PathElement, &Value> = rpes.iter().zip(ra).collect();
            let mut done = HashSet::new();
            for (pe, rv) in rpes.iter().zip(ra) {
                if !done.insert(pe) {
                    continue;
                }
                path.push(pe.clone());
                cmp(schema, lmap.get(pe).copied(), Some(rv), item, path, c);
                path.pop();
            }
            for (pe, lv) in lpes.iter().zip(la) {
                if rmap.contains_key(pe) || !done.insert(pe) {
                    continue;
                }
                path.push(pe.clone());
                cmp(schema, Some(lv), None, item, path, c);
                path.pop();
            }
        }
    }
    if l.is_none() {
        c.added.insert(path);
    } else if r.is_none() {
        c.removed.insert(path);
    }
}

/// Drops `null`-valued keys, recursively: in an applied configuration they mean "unset".
pub(crate) fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges an applied configuration `r` into the live object `l` (upstream `Merge`).
pub(crate) fn merge(
    schema: &Schema,
    l: Option<&Value>,
    r: Option<&Value>,
    shape: Shape,
) -> Option<Value> {
    let (l, r) = match (l, r) {
        (None, None) => return None,
        (Some(l), None) => return Some(l.clone()),
        (None, Some(r)) => return Some(strip_nulls(r)),
        (Some(l), Some(r)) => (l, r),
    };
    if r.is_null() {
        return None;
    }
    match node(schema, shape, &[Some(l), Some(r)]) {
        Node::Leaf => Some(strip_nulls(r)),
        Node::Object(shape) => {
            let (Value::Object(lo), Value::Object(ro)) = (l, r) else {
                return Some(strip_nulls(r));
            };
            let mut out = lo.clone();
            for (k, rv) in ro {
                match merge(schema, lo.get(k), Some(rv), shape.field(schema, k)) {
                    Some(v) => {
                        out.insert(k.clone(), v);
                    }
                    None => {
                        out.shift_remove(k);
                    }
                }
            }
            Some(Value::Object(out))
        }
        Node::List { keys, item } => {
            let (Value::Array(la), Value::Array(ra)) = (l, r) else {
                return Some(strip_nulls(r));
            };
            Some(Value::Array(merge_list(schema, la, ra, &keys, item)))
        }
    }
}

/// Merges list items by identity, keeping live-only items in place and shared items in
/// configuration order.
fn merge_list(
    schema: &Schema,
    la: &[Value],
    ra: &[Value],
    keys: &Option<Vec<&str>>,
    item: Shape,
) -> Vec<Value> {
    let index = |a: &[Value]| -> Vec<PathElement> {
        a.iter()
            .enumerate()
            .map(|(i, v)| item_pe(schema, keys, item, v, i, false).unwrap_or(PathElement::Index(i)))
            .collect()
    };
    let (lpes, rpes) = (index(la), index(ra));
    let mut lobs: HashMap<&PathElement, usize> = HashMap::new();
    for (i, pe) in lpes.iter().enumerate() {
        lobs.entry(pe).or_insert(i);
    }
    let mut robs: HashMap<&PathElement, usize> = HashMap::new();
    for (i, pe) in rpes.iter().enumerate() {
        robs.entry(pe).or_insert(i);
    }
    let mut shared = rpes.iter().filter(|pe| lobs.contains_key(pe));
    let mut next_shared = shared.next();
    let mut merged_r: HashSet<&PathElement> = HashSet::new();
    let mut out = Vec::with_capacity(la.len().max(ra.len()));
    let (mut li, mut ri) = (0, 0);
    while li < la.len() || ri < ra.len() {
        if li < la.len() && ri < ra.len() {
            if lpes[li] == rpes[ri] {
                merged_r.insert(&rpes[ri]);
                if let Some(v) = merge(schema, Some(&la[li]), Some(&ra[ri]), item) {
                    out.push(v);
                }
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if robs.contains_key(&lpes[li]) && next_shared.is_some_and(|s| *s != lpes[li]) {
                li += 1;
                continue;
            }
        }
        if li < la.len() {
            let pe = &lpes[li];
            if !robs.contains_key(pe) {
                out.push(la[li].clone());
                li += 1;
                continue;
            }
            if merged_r.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ri < ra.len() {
            let pe = &rpes[ri];
            merged_r.insert(pe);
            let lv = lobs.get(pe).map(|&i| &la[i]);
            if let Some(v) = merge(schema, lv, Some(&ra[ri]), item) {
                out.push(v);
            }
            ri += 1;
            if next_shared.is_some_and(|s| s == pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// Whether list item `v` (at position `i`) is the one named by `pe`.
fn item_matches(pe: &PathElement, v: &Value, i: usize) -> bool {
    match pe {
        PathElement::Index(n) => *n == i,
        PathElement::Value(s) => serde_json::from_str::<Value>(s).is_ok_and(|x| x == *v),
        PathElement::Key(k) => match (serde_json::from_str::<Value>(k), v) {
            (Ok(Value::Object(km)), Value::Object(m)) => {
                km.iter().all(|(kk, kv)| m.get(kk).is_none_or(|x| x == kv))
            }
            _ => false,
        },
        PathElement::Field(_) => false,
    }
}

/// The value at `path`, if present.
pub(crate) fn get_path<'v>(v: &'v Value, path: &[PathElement]) -> Option<&'v Value> {
    let Some((pe, rest)) = path.split_first() else {
        return Some(v);
    };
    let child = match (pe, v) {
        (PathElement::Field(f), Value::Object(m)) => m.get(f)?,
        (_, Value::Array(a)) => a
            .iter()
            .enumerate()
            .find(|(i, it)| item_matches(pe, it, *i))
            .map(|(_, it)| it)?,
        _ => return None,
    };
    get_path(child, rest)
}

/// Removes the value at `path`, if present.
pub(crate) fn remove_path(v: &mut Value, path: &[PathElement]) {
    let Some((pe, rest)) = path.split_first() else {
        return;
    };
    match (pe, v) {
        (PathElement::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.shift_remove(f);
            } else if let Some(c) = m.get_mut(f) {
                remove_path(c, rest);
            }
        }
        (_, Value::Array(a)) => {
            let Some(pos) = a
                .iter()
                .enumerate()
                .position(|(i, it)| item_matches(pe, it, i))
            else {
                return;
            };
            if rest.is_empty() {
                a.remove(pos);
            } else {
                remove_path(&mut a[pos], rest);
            }
        }
        _ => {}
    }
}

/// Struct fields that are non-pointer structs in the Go types (present, empty, in a zero
/// object) and list fields without `omitempty` (present as `null`).
const ZERO_STRUCT_FIELDS: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "jobTemplate",
];
const ZERO_NULL_FIELDS: &[&str] = &["containers", "rules"];

/// An approximation of the Go zero value of an object of this shape, as upstream compares a
/// created object against it when recording the creator's fields.
pub(crate) fn zero_value(schema: &Schema, shape: Shape) -> Value {
    zero(schema, shape, 0)
}

fn zero(schema: &Schema, shape: Shape, depth: usize) -> Value {
    let mut m = Map::new();
    if let Shape::Struct { props, .. } = shape {
        if depth < 6 {
            for name in props.keys() {
                let child = shape.field(schema, name);
                match child {
                    Shape::Struct { atomic: false, .. }
                        if ZERO_STRUCT_FIELDS.contains(&name.as_str()) =>
                    {
                        m.insert(name.clone(), zero(schema, child, depth + 1));
                    }
                    Shape::List { .. } if ZERO_NULL_FIELDS.contains(&name.as_str()) => {
                        m.insert(name.clone(), Value::Null);
                    }
                    _ => {}
                }
            }
        }
    }
    Value::Object(m)
}
