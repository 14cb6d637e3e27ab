//! Field sets: the set of paths a manager owns, and their `FieldsV1` JSON encoding
//! (`{"f:spec":{"f:replicas":{}}}`, `"k:{\"name\":\"app\"}"`, `"v:\"x\""`, `"i:0"`, `"."`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One step of a field path. The derived order (fields, then keys, values, indexes) is the
/// order in which upstream serializes `FieldsV1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// A list-map item, as the compact JSON object of its key fields.
    Key(String),
    /// A set item, as its compact JSON value.
    Value(String),
    /// A list item by position (only when nothing better identifies it).
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key of this element.
    pub(crate) fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<PathElement, String> {
        if let Some(f) = s.strip_prefix("f:") {
            return Ok(PathElement::Field(f.to_string()));
        }
        if let Some(k) = s.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k)
                .map_err(|e| format!("failed to parse key path element {s:?}: {e}"))?;
            if !v.is_object() {
                return Err(format!(
                    "failed to parse key path element {s:?}: not an object"
                ));
            }
            return Ok(PathElement::Key(v.to_string()));
        }
        if let Some(k) = s.strip_prefix("v:") {
            let v: Value = serde_json::from_str(k)
                .map_err(|e| format!("failed to parse value path element {s:?}: {e}"))?;
            return Ok(PathElement::Value(v.to_string()));
        }
        if let Some(i) = s.strip_prefix("i:") {
            let i = i
                .parse()
                .map_err(|e| format!("failed to parse index path element {s:?}: {e}"))?;
            return Ok(PathElement::Index(i));
        }
        Err(format!(
            "failed to parse path element {s:?}: unknown prefix"
        ))
    }

    /// Upstream's human form: `.name`, `[k="v",k2=1]`, `[="x"]`, `[0]`.
    pub(crate) fn display(&self) -> String {
        match self {
            PathElement::Field(f) => format!(".{f}"),
            PathElement::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![k.clone()],
                };
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// A field path.
pub(crate) type Path = Vec<PathElement>;

/// Human form of a path, like `.spec.containers[name="app"].image`.
pub(crate) fn display_path(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A set of field paths, stored as a tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// Whether the set has no path.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is ignored).
    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [pe] => {
                self.members.insert(pe.clone());
            }
            [pe, rest @ ..] => self.children.entry(pe.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` itself is in the set.
    pub(crate) fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [pe] => self.members.contains(pe),
            [pe, rest @ ..] => self.children.get(pe).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether the set has `path` or any path below it.
    pub(crate) fn has_prefix(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [pe] => {
                self.members.contains(pe) || self.children.get(pe).is_some_and(|c| !c.is_empty())
            }
            [pe, rest @ ..] => self.children.get(pe).is_some_and(|c| c.has_prefix(rest)),
        }
    }

    /// Paths in either set.
    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Paths in `self` but not in `other`.
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Paths in both sets.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Paths of `self` that neither are nor lie below a path of `prefixes`.
    pub(crate) fn recursive_difference(&self, prefixes: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self
                .members
                .difference(&prefixes.members)
                .cloned()
                .collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if prefixes.members.contains(pe) {
                continue;
            }
            let d = match prefixes.children.get(pe) {
                Some(p) => c.recursive_difference(p),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Every path of the set, in serialization order (parents before children).
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out, false);
        out
    }

    /// Every interior node (a path with paths below it), deepest first.
    pub(crate) fn interior_paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out, true);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>, interior: bool) {
        let keys: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            prefix.push(pe.clone());
            if !interior && self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(pe) {
                c.collect_paths(prefix, out, interior);
                if interior && !c.is_empty() {
                    out.push(prefix.clone());
                }
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON encoding.
    pub(crate) fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode())
    }

    fn encode(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let keys: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            let child = self.children.get(pe).filter(|c| !c.is_empty());
            let v = match child {
                Some(c) => {
                    let mut cm = Map::new();
                    if self.members.contains(pe) {
                        cm.insert(".".into(), Value::Object(Map::new()));
                    }
                    cm.extend(c.encode());
                    cm
                }
                None => Map::new(),
            };
            m.insert(pe.encode(), Value::Object(v));
        }
        m
    }

    /// Decodes a `FieldsV1` JSON object.
    pub(crate) fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err("failed to decode fieldsV1: not a JSON object".into());
        };
        let mut s = FieldSet::default();
        for (k, v) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let Value::Object(vm) = v else {
                return Err(format!(
                    "failed to decode fieldsV1 at {k:?}: not a JSON object"
                ));
            };
            if vm.is_empty() || vm.contains_key(".") {
                s.members.insert(pe.clone());
            }
            if vm.keys().any(|k| k != ".") {
                let c = FieldSet::from_fields_v1(v)?;
                if !c.is_empty() {
                    s.children.insert(pe, c);
                }
            }
        }
        Ok(s)
    }
}
