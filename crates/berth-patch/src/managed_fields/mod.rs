//! Server-side apply and `metadata.managedFields` bookkeeping.
//!
//! [`apply`] implements `application/apply-patch+yaml`: it merges an applied configuration
//! into the live object, removes fields the applier stopped applying, detects conflicts with
//! other managers and records ownership. [`record_update`] records the fields an ordinary
//! create/update/patch changed as owned by its manager (operation `Update`).

mod fieldset;
mod walk;

use serde_json::{Map, Value};

use self::fieldset::{display_path, FieldSet, Path, PathElement};
use crate::schema::Shape;
use crate::Schema;

/// Manager recorded as owning every field of an object that had no managed fields before
/// its first apply.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One conflicting field of a server-side apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Name of the manager that owns the field.
    pub manager: String,
    /// API version that manager used.
    pub api_version: String,
    /// The field, like `.spec.replicas` or `.spec.containers[name="app"].image`.
    pub field: String,
    /// The owning manager's operation (`Apply` or `Update`).
    pub operation: String,
    /// The owning manager's subresource, if any.
    pub subresource: Option<String>,
}

impl Conflict {
    /// Upstream's description of the owning manager: `"kubectl" using apps/v1` for updaters,
    /// `"kubectl"` for appliers, with ` with subresource "status"` when relevant.
    pub fn manager_description(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The message of this conflict's `FieldManagerConflict` status cause.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// Why a server-side apply failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Fields the configuration changes are owned by other managers (HTTP 409).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The configuration or the live object is malformed (HTTP 422/400).
    #[error("failed to apply: {0}")]
    Invalid(String),
}

/// Upstream's conflict message, e.g.
/// `Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas`.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_description(),
            c.field
        );
    }
    let mut managers: Vec<String> = conflicts
        .iter()
        .map(Conflict::manager_description)
        .collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| &c.manager_description() == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// One decoded `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// Upstream's manager identity: appliers are identified regardless of API version.
    fn same_manager(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        sub: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == sub
            && (operation == APPLY || self.api_version == api_version)
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }
}

fn managed_fields_of(obj: &Value) -> Option<&Value> {
    obj.get("metadata")?.get("managedFields")
}

/// Decodes `metadata.managedFields`; entries that cannot be decoded are dropped.
fn decode(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(entries)) = managed_fields_of(obj) else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
    entries
        .iter()
        .filter_map(|e| {
            let set = match e.get("fieldsV1") {
                Some(f) => FieldSet::from_fields_v1(f).ok()?,
                None => FieldSet::default(),
            };
            Some(Entry {
                manager: s(e, "manager").unwrap_or_default(),
                operation: s(e, "operation").unwrap_or_else(|| UPDATE.into()),
                api_version: s(e, "apiVersion").unwrap_or_default(),
                time: s(e, "time"),
                subresource: s(e, "subresource").filter(|s| !s.is_empty()),
                set,
            })
        })
        .collect()
}

/// Writes the entries (sorted like upstream) into `obj.metadata.managedFields`.
fn write(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else { return };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

/// A copy of `obj` without `metadata.managedFields`.
fn strip_managed(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        meta.shift_remove("managedFields");
    }
    out
}

fn path(elems: &[&str]) -> Path {
    elems
        .iter()
        .map(|e| PathElement::Field((*e).to_string()))
        .collect()
}

/// Fields never owned by anyone (removed exactly, not recursively).
fn strip_set() -> FieldSet {
    let mut s = FieldSet::default();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        s.insert(&path(p));
    }
    s
}

/// Fields reset by the resource's strategy for this (sub)resource (removed recursively).
fn reset_set(shape: Shape, subresource: Option<&str>) -> FieldSet {
    let mut s = FieldSet::default();
    match subresource {
        None => {
            if !matches!(shape, Shape::Struct { .. }) || shape.declares("status") {
                s.insert(&path(&["status"]));
            }
        }
        Some("status") => s.insert(&path(&["spec"])),
        Some(_) => {}
    }
    s
}

fn owned(set: &FieldSet, shape: Shape, subresource: Option<&str>) -> FieldSet {
    set.recursive_difference(&reset_set(shape, subresource))
        .difference(&strip_set())
}

/// Server-side apply (`application/apply-patch+yaml`, already parsed to JSON).
///
/// `live` is `Value::Null` when the object does not exist yet. Returns the new object with
/// `metadata.managedFields` updated; identity/system metadata (uid, resourceVersion...) of
/// `live` is kept. `now` (RFC 3339) becomes the applier's entry time.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    schema: &Schema,
    definition: &str,
    api_version: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::Invalid(format!(
            "the applied configuration must be a JSON object, got {}",
            crate::json_type(config)
        )));
    }
    if managed_fields_of(config).is_some_and(|m| !m.is_null()) {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    if !(live.is_object() || live.is_null()) {
        return Err(ApplyError::Invalid(format!(
            "the live object must be a JSON object, got {}",
            crate::json_type(live)
        )));
    }
    let shape = schema.definition_shape(definition);
    let live_s = if live.is_null() {
        Value::Object(Map::new())
    } else {
        strip_managed(live)
    };

    let mut entries = decode(live);
    if entries.is_empty() && !live.is_null() {
        // Objects that never had managed fields: everything belongs to one manager.
        let set = owned(
            &walk::to_field_set(schema, &live_s, shape).unwrap_or_default(),
            shape,
            None,
        );
        if !set.is_empty() {
            entries.push(Entry {
                manager: BEFORE_FIRST_APPLY.into(),
                operation: UPDATE.into(),
                api_version: api_version.into(),
                time: Some(now.into()),
                subresource: None,
                set,
            });
        }
    }

    let new_set = owned(
        &walk::to_field_set(schema, config, shape).map_err(ApplyError::Invalid)?,
        shape,
        None,
    );
    let mut merged = walk::merge(schema, Some(&live_s), Some(config), shape)
        .unwrap_or_else(|| Value::Object(Map::new()));

    let mine = entries
        .iter()
        .position(|e| e.same_manager(manager, APPLY, api_version, None));
    let last_set = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let others = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mine)
        .fold(FieldSet::default(), |acc, (_, e)| acc.union(&e.set));
    prune(&mut merged, &last_set, &new_set, &others);

    let mut cmp = walk::compare(schema, &live_s, &merged, shape);
    cmp.filter(&reset_set(shape, None));
    let changed = cmp.modified.union(&cmp.added);

    let mut conflicts = Vec::new();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let c = e.set.intersection(&changed);
        if c.is_empty() {
            e.set = e.set.difference(&cmp.removed);
            continue;
        }
        if !force {
            for p in c.paths() {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: display_path(&p),
                    operation: e.operation.clone(),
                    subresource: e.subresource.clone(),
                });
            }
        }
        e.set = e.set.difference(&c).difference(&cmp.removed);
    }
    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| a.manager.cmp(&b.manager));
        return Err(ApplyError::Conflicts(conflicts));
    }

    let object_changed = live.is_null() || merged != live_s;
    match mine {
        Some(i) => {
            let e = &mut entries[i];
            if object_changed || e.set != new_set || e.time.is_none() {
                e.time = Some(now.into());
            }
            e.set = new_set;
            e.api_version = api_version.into();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: APPLY.into(),
            api_version: api_version.into(),
            time: Some(now.into()),
            subresource: None,
            set: new_set,
        }),
    }
    write(&mut merged, entries);
    Ok(merged)
}

/// Removes from `obj` what the applier owned in `last` but no longer applies (`new`), unless
/// another manager owns it (or something below it); then drops emptied parents.
fn prune(obj: &mut Value, last: &FieldSet, new: &FieldSet, others: &FieldSet) {
    if last.is_empty() {
        return;
    }
    for p in last.paths() {
        if new.contains(&p) || new.has_prefix(&p) || others.has_prefix(&p) {
            continue;
        }
        walk::remove_path(obj, &p);
    }
    for p in last.interior_paths() {
        if new.has_prefix(&p) || others.has_prefix(&p) {
            continue;
        }
        let empty = match walk::get_path(obj, &p) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            walk::remove_path(obj, &p);
        }
    }
}

/// Records a create (`old` is `Value::Null`) or update by `manager` (operation `Update`) into
/// `new`'s `metadata.managedFields` and returns the result.
///
/// The manager gains every field it added or changed (taken away from other managers);
/// fields it removed are dropped from every manager; managers left without fields are
/// dropped. `subresource` is e.g. `Some("status")` for `/status` writes.
#[allow(clippy::too_many_arguments)]
pub fn record_update(
    old: &Value,
    new: &Value,
    manager: &str,
    schema: &Schema,
    definition: &str,
    api_version: &str,
    now: &str,
    subresource: Option<&str>,
) -> Value {
    if !new.is_object() {
        return new.clone();
    }
    let shape = schema.definition_shape(definition);
    // A client may replace managedFields explicitly; otherwise the live ones carry over.
    let mut entries = match (managed_fields_of(old), managed_fields_of(new)) {
        (_, Some(n)) if old.is_null() || managed_fields_of(old) != Some(n) => decode(new),
        _ => decode(old),
    };
    let old_s = if old.is_null() {
        walk::zero_value(schema, shape)
    } else {
        strip_managed(old)
    };
    let new_s = strip_managed(new);

    let mut cmp = walk::compare(schema, &old_s, &new_s, shape);
    cmp.filter(&reset_set(shape, subresource));
    let changed = cmp.modified.union(&cmp.added);
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    let gained = owned(&changed, shape, subresource);
    if !gained.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_manager(manager, UPDATE, api_version, subresource))
        {
            Some(e) => {
                e.set = e.set.union(&gained);
                e.time = Some(now.into());
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: UPDATE.into(),
                api_version: api_version.into(),
                time: Some(now.into()),
                subresource: subresource.map(str::to_string),
                set: gained,
            }),
        }
    }
    let mut out = new.clone();
    write(&mut out, entries);
    out
}
