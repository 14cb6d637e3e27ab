//! ControllerRevisions, the history of StatefulSets and DaemonSets (as upstream's controller
//! history): the revision data (the pod template as the strategic merge patch that
//! `kubectl rollout undo` applies), hashing, `<owner>-<hash>` names, creation with hash
//! collision handling, revision numbers, rollback by renumbering, and history pruning.

use crate::pods::{self, canonical, safe_encode};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Selector;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The pod label naming the revision a pod was made from.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// The label of a StatefulSet's revisions holding their hash.
pub const CONTROLLER_HASH: &str = "controller.kubernetes.io/hash";
/// How many old revisions are kept when `revisionHistoryLimit` is unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// The longest prefix of a revision name (upstream's limit, leaving room for the hash).
const MAX_PREFIX: usize = 223;

/// The data of a revision: `{"spec":{"template":{...,"$patch":"replace"}}}`, the strategic
/// merge patch that restores the template.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision's data restores (`None` if the data holds none).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// FNV-1 (32 bit) of `bytes`, continuing from `h` (`0x811c9dc5` to start).
fn fnv32(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, b| h.wrapping_mul(0x0100_0193) ^ u32::from(*b))
}

/// Upstream's HashControllerRevision: FNV-1 of the data's JSON, then of the collision count
/// in decimal when set, rendered in decimal and safe encoded.
pub fn hash_data(data: &Value, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical(data, &mut text);
    let mut h = fnv32(0x811c_9dc5, text.as_bytes());
    if let Some(c) = collision_count {
        h = fnv32(h, c.to_string().as_bytes());
    }
    safe_encode(&h.to_string())
}

/// `<prefix>-<hash>`, the prefix cut to upstream's length.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let mut cut = prefix.len().min(MAX_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &prefix[..cut])
}

/// The highest revision number plus one.
pub fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Sorts revisions oldest first: by revision number, then creation, then name.
pub fn sort(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t = |r: &ControllerRevision| r.metadata.creation_timestamp.clone().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// Whether two revisions hold the same data.
pub fn equal_data(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The revisions to delete to keep `limit` old ones: the oldest of those no live revision
/// name is in (`revisions` sorted oldest first).
pub fn to_prune(
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Vec<Arc<ControllerRevision>> {
    let history: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if history.len() <= limit {
        return Vec::new();
    }
    history[..history.len() - limit]
        .iter()
        .map(|r| (*r).clone())
        .collect()
}

/// A new revision of `owner` holding `data`.
pub fn new_revision(
    name: String,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
    data: Value,
    revision: i64,
) -> ControllerRevision {
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// What creating a revision came to.
pub enum Created {
    /// The revision (new, or an existing one of the same owner holding the same data).
    Revision(Box<ControllerRevision>),
    /// A different revision already has this name: the owner must raise its collisionCount.
    Collision,
}

/// Creates `rev`; an existing one of the same name is returned when it holds the same data
/// for the same owner, and is a hash collision otherwise.
pub async fn create(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
) -> Result<Created, kube::Error> {
    match api.create(&PostParams::default(), rev).await {
        Ok(r) => Ok(Created::Revision(Box::new(r))),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&rev.name_any()).await?;
            let same_owner = pods::controller_of(&existing.metadata).map(|r| &r.uid)
                == pods::controller_of(&rev.metadata).map(|r| &r.uid);
            let same_data = existing.data.as_ref().map(|d| &d.0) == rev.data.as_ref().map(|d| &d.0);
            if same_owner && same_data {
                Ok(Created::Revision(Box::new(existing)))
            } else {
                Ok(Created::Collision)
            }
        }
        Err(e) => Err(e),
    }
}

/// Gives `rev` revision number `revision` (a rollback to an earlier template).
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, kube::Error> {
    api.patch(
        &rev.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"revision": revision})),
    )
    .await
}

/// Deletes `rev` (guarded by its uid; one already gone is fine).
pub async fn delete(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: rev.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&rev.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The revisions of an owner (uid `owner_uid`, selector `selector`) among `candidates`,
/// adopting matching orphans and releasing those that stop matching; sorted oldest first.
pub async fn claim(
    api: &Api<ControllerRevision>,
    owner: &OwnerReference,
    owner_deleting: bool,
    selector: Option<&Selector>,
    candidates: Vec<Arc<ControllerRevision>>,
) -> Result<Vec<Arc<ControllerRevision>>, kube::Error> {
    let c = pods::claim(&owner.uid, owner_deleting, selector, candidates);
    let mut owned = c.owned;
    for r in &c.adopt {
        if let Some(adopted) = pods::adopt(api, r, owner).await? {
            owned.push(Arc::new(adopted));
        }
    }
    for r in &c.release {
        pods::release(api, r, &owner.uid).await?;
    }
    sort(&mut owned);
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn rev(name: &str, n: i64) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: None,
            revision: n,
        })
    }

    #[test]
    fn data_restores_the_template_and_hashes_stably() {
        let t = template("busybox:1");
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let r = new_revision(
            "web-x".into(),
            "default",
            OwnerReference::default(),
            BTreeMap::new(),
            None,
            data.clone(),
            1,
        );
        assert_eq!(template_of(&r), Some(t));
        let h = hash_data(&data, None);
        assert_eq!(h, hash_data(&data, None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, hash_data(&data, Some(1)));
        assert_ne!(h, hash_data(&template_patch(&template("busybox:2")), None));
    }

    #[test]
    fn fnv1_matches_the_reference_vectors() {
        // FNV-1 32 of "a" is 0x050c5d7e, of "foobar" 0x31f0b262.
        assert_eq!(fnv32(0x811c_9dc5, b"a"), 0x050c_5d7e);
        assert_eq!(fnv32(0x811c_9dc5, b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn names_cut_long_prefixes() {
        assert_eq!(revision_name("web", "abc"), "web-abc");
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), MAX_PREFIX + 2);
    }

    #[test]
    fn pruning_keeps_live_and_the_newest_history() {
        let mut revs = vec![
            rev("r3", 3),
            rev("r1", 1),
            rev("r2", 2),
            rev("r4", 4),
            rev("r5", 5),
        ];
        sort(&mut revs);
        assert_eq!(next_revision(&revs), 6);
        let live: HashSet<String> = ["r5".to_string(), "r1".to_string()].into();
        let gone: Vec<String> = to_prune(&revs, &live, 1)
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(gone, ["r2", "r3"]);
        assert!(to_prune(&revs, &live, 3).is_empty());
        assert_eq!(to_prune(&revs, &live, 0).len(), 3);
    }
}
