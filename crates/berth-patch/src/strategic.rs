//! Strategic merge patch (`application/strategic-merge-patch+json`): lists merged by
//! `x-kubernetes-patch-merge-key`, primitive merge lists unioned, `null` deleting keys, and the
//! `$patch`, `$retainKeys`, `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>`
//! directives. The result never contains directives.

use serde_json::{Map, Value};

use crate::schema::Shape;
use crate::{json_type, PatchError, Schema};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `doc`, an object of OpenAPI definition `definition`.
///
/// `patch` must be a JSON object. Lists whose schema says `x-kubernetes-patch-strategy: merge`
/// are merged by their `x-kubernetes-patch-merge-key` (primitive lists are unioned); other
/// lists are replaced; objects are merged recursively; `null` deletes a key. When the
/// definition or a field is not in `schema`, objects are merged and lists replaced.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &Schema,
    definition: &str,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::PatchNotObject {
            expected: "object",
            got: json_type(patch),
        });
    };
    let original = match doc {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::DocumentNotObject {
                got: json_type(other),
            })
        }
    };
    let shape = schema.definition_shape(definition);
    Ok(Value::Object(merge_map(original, p, shape, schema, "")?))
}

fn child_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

fn is_directive_key(k: &str) -> bool {
    k == PATCH
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || k.starts_with(SET_ELEMENT_ORDER)
}

fn directive_list<'p>(v: &'p Value, path: &str, what: &str) -> Result<&'p Vec<Value>, PatchError> {
    v.as_array().ok_or_else(|| PatchError::InvalidPatch {
        path: shown(path),
        reason: format!("{what} must be a list, got {}", json_type(v)),
    })
}

/// Merges `patch` into the object `original`.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    shape: Shape,
    schema: &Schema,
    path: &str,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.get(PATCH) {
        match d.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.shift_remove(PATCH);
                return merge_map(Map::new(), &rest, shape, schema, path);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::UnknownDirective {
                    path: shown(path),
                    directive: d.to_string(),
                })
            }
        }
    }

    if let Some(rk) = patch.get(RETAIN_KEYS) {
        let list = directive_list(rk, path, RETAIN_KEYS)?;
        let mut keys = Vec::with_capacity(list.len());
        for k in list {
            let Some(k) = k.as_str() else {
                return Err(PatchError::InvalidPatch {
                    path: shown(path),
                    reason: format!("{RETAIN_KEYS} must be a list of strings"),
                });
            };
            keys.push(k);
        }
        for (k, v) in patch {
            if v.is_null() || is_directive_key(k) {
                continue;
            }
            if !keys.contains(&k.as_str()) {
                return Err(PatchError::InvalidPatch {
                    path: shown(path),
                    reason: format!("field {k:?} is not present in the {RETAIN_KEYS} list"),
                });
            }
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
    }

    // Parallel deletion lists for primitive lists.
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let del = directive_list(v, path, k)?;
        if let Some(Value::Array(cur)) = original.get_mut(field) {
            cur.retain(|x| !del.contains(x));
        }
    }

    // Remember the live order of lists that get an explicit element order.
    let mut orders: Vec<(&str, &Vec<Value>, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let order = directive_list(v, path, k)?;
        let live = match original.get(field) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        orders.push((field, order, live));
    }

    for (k, pv) in patch {
        if is_directive_key(k) {
            continue;
        }
        let cpath = child_path(path, k);
        if pv.is_null() {
            original.shift_remove(k);
            continue;
        }
        let child = shape.field(schema, k);
        let existing = original.get_mut(k).map(Value::take);
        match merge_value(existing, pv, child, schema, &cpath)? {
            Some(v) => {
                original.insert(k.clone(), v);
            }
            None => {
                original.shift_remove(k);
            }
        }
    }

    for (field, order, live) in orders {
        let child = shape.field(schema, field);
        let key = child.merge_key();
        if let Some(Value::Array(cur)) = original.get_mut(field) {
            let order_ids: Vec<Value> = order
                .iter()
                .filter_map(|o| match key {
                    Some(k) => o.get(k).cloned(),
                    None => Some(o.clone()),
                })
                .collect();
            let live_ids: Vec<Value> = live.iter().filter_map(|o| item_id(o, key)).collect();
            let items = std::mem::take(cur);
            *cur = normalize_order(items, &order_ids, &live_ids, key);
        }
    }
    Ok(original)
}

/// Merges one patch value into an (optional) existing value. `None` means "absent".
fn merge_value(
    existing: Option<Value>,
    pv: &Value,
    shape: Shape,
    schema: &Schema,
    path: &str,
) -> Result<Option<Value>, PatchError> {
    match shape {
        Shape::Struct { .. } | Shape::Map { .. } => {
            let Value::Object(pm) = pv else {
                return Err(PatchError::TypeMismatch {
                    path: shown(path),
                    expected: "object",
                    got: json_type(pv),
                });
            };
            merge_object_value(existing, pm, shape, schema, path)
        }
        Shape::List { .. } => {
            let Value::Array(pa) = pv else {
                return Err(PatchError::TypeMismatch {
                    path: shown(path),
                    expected: "array",
                    got: json_type(pv),
                });
            };
            let base = match existing {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            let item = shape.item(schema);
            let merged = if shape.smp_merges() {
                merge_list(base, pa, item, shape.merge_key(), schema, path)?
            } else {
                replace_list(pa, item, schema, path)?
            };
            Ok(Some(Value::Array(merged)))
        }
        Shape::Scalar => {
            if pv.is_object() || pv.is_array() {
                return Err(PatchError::TypeMismatch {
                    path: shown(path),
                    expected: "a scalar",
                    got: json_type(pv),
                });
            }
            Ok(Some(pv.clone()))
        }
        Shape::Opaque | Shape::Unknown => match pv {
            Value::Object(pm) => merge_object_value(existing, pm, Shape::Unknown, schema, path),
            Value::Array(pa) => Ok(Some(Value::Array(replace_list(
                pa,
                Shape::Unknown,
                schema,
                path,
            )?))),
            other => Ok(Some(other.clone())),
        },
    }
}

fn merge_object_value(
    existing: Option<Value>,
    pm: &Map<String, Value>,
    shape: Shape,
    schema: &Schema,
    path: &str,
) -> Result<Option<Value>, PatchError> {
    let base = match existing {
        Some(Value::Object(m)) => m,
        None if pm.get(PATCH).and_then(Value::as_str) == Some("delete") => return Ok(None),
        _ => Map::new(),
    };
    Ok(Some(Value::Object(merge_map(
        base, pm, shape, schema, path,
    )?)))
}

/// A replaced list: the patch items, cleaned of directives and nulls.
fn replace_list(
    patch: &[Value],
    item: Shape,
    schema: &Schema,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for p in patch {
        match p {
            Value::Object(pm) => {
                if pm.contains_key(PATCH) {
                    // Directives only make sense in merging lists; validate, then drop.
                    merge_map(Map::new(), pm, item, schema, path)?;
                    continue;
                }
                out.push(Value::Object(merge_map(
                    Map::new(),
                    pm,
                    item,
                    schema,
                    path,
                )?));
            }
            Value::Array(inner) => out.push(Value::Array(replace_list(
                inner,
                Shape::Unknown,
                schema,
                path,
            )?)),
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn item_id(v: &Value, key: Option<&str>) -> Option<Value> {
    match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    }
}

/// Merges a patch list into a list with merge strategy.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    item: Shape,
    merge_key: Option<&str>,
    schema: &Schema,
    path: &str,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let (mut maps, mut scalars) = (false, false);
    for v in original.iter().chain(patch) {
        match v {
            Value::Array(_) => {
                return Err(PatchError::InvalidPatch {
                    path: shown(path),
                    reason: "lists of lists are not supported".into(),
                })
            }
            Value::Object(_) => maps = true,
            _ => scalars = true,
        }
    }
    if maps && scalars {
        return Err(PatchError::InvalidPatch {
            path: shown(path),
            reason: "list element types are not identical".into(),
        });
    }

    if !maps {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        return Ok(normalize_order(merged, patch, &original, None));
    }

    let Some(key) = merge_key else {
        return Err(PatchError::InvalidPatch {
            path: shown(path),
            reason: "cannot merge lists without merge key".into(),
        });
    };

    let mut original = original;
    let mut replace = false;
    let mut plain: Vec<&Map<String, Value>> = Vec::new();
    for p in patch {
        let Value::Object(pm) = p else { continue };
        match pm.get(PATCH) {
            None => plain.push(pm),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(kv) = pm.get(key) else {
                        return Err(missing_key(path, pm, key));
                    };
                    original.retain(|o| o.get(key) != Some(kv));
                }
                Some("replace") => replace = true,
                Some("merge") => plain.push(pm),
                _ => {
                    return Err(PatchError::UnknownDirective {
                        path: shown(path),
                        directive: d.to_string(),
                    })
                }
            },
        }
    }

    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for pm in plain {
            let mut pm = pm.clone();
            pm.shift_remove(PATCH);
            out.push(Value::Object(merge_map(
                Map::new(),
                &pm,
                item,
                schema,
                path,
            )?));
        }
        return Ok(out);
    }

    let live_ids: Vec<Value> = original
        .iter()
        .filter_map(|o| item_id(o, Some(key)))
        .collect();
    let mut order_ids = Vec::with_capacity(plain.len());
    let mut merged = original;
    for pm in plain {
        let Some(kv) = pm.get(key) else {
            return Err(missing_key(path, pm, key));
        };
        order_ids.push(kv.clone());
        let ipath = format!("{path}[{key}={kv}]");
        match merged.iter().position(|o| o.get(key) == Some(kv)) {
            Some(i) => {
                let base = match merged[i].take() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(base, pm, item, schema, &ipath)?);
            }
            None => merged.push(Value::Object(merge_map(
                Map::new(),
                pm,
                item,
                schema,
                &ipath,
            )?)),
        }
    }
    Ok(normalize_order(merged, &order_ids, &live_ids, Some(key)))
}

fn missing_key(path: &str, item: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::MissingMergeKey {
        path: shown(path),
        item: Value::Object(item.clone()).to_string(),
        key: key.to_string(),
    }
}

fn index_of(ids: &[Value], id: &Option<Value>) -> Option<usize> {
    let id = id.as_ref()?;
    ids.iter().position(|x| x == id)
}

/// Orders a merged list: items named by the patch (or `$setElementOrder`) follow that order,
/// server-only items keep their live order, and the two are interleaved by live position.
fn normalize_order(
    merged: Vec<Value>,
    order_ids: &[Value],
    live_ids: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut patch_items, mut server_only): (Vec<_>, Vec<_>) = merged
        .into_iter()
        .map(|v| (item_id(&v, key), v))
        .partition(|(id, _)| index_of(order_ids, id).is_some());
    patch_items.sort_by_key(|(id, _)| index_of(order_ids, id).unwrap_or(usize::MAX));
    server_only.sort_by_key(|(id, _)| index_of(live_ids, id).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((lid, _)), Some((rid, _))) => {
                match (index_of(live_ids, lid), index_of(live_ids, rid)) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, v)) = next {
            out.push(v);
        }
    }
    out
}
