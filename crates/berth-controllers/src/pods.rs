//! What every workload controller does with the objects it owns (as upstream's controller
//! utilities): controller references, claiming (adopt matching orphans, release what no
//! longer matches), pods from templates, pod readiness and availability, which pods to
//! delete first, creation/deletion expectations, and Events.

use k8s_openapi::api::core::v1::{
    Event as CoreEvent, EventSource, ObjectReference, Pod, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The annotation ranking pods for deletion (lower goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The controller reference among `meta`'s ownerReferences.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The queue key (`namespace/name`) of the `K` that controls the object with `meta`, if a
/// `K` does.
pub fn controller_key<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> Option<String> {
    let r = controller_of(meta)?;
    (r.kind == K::kind(&()) && r.api_version == K::api_version(&()))
        .then(|| crate::queue::key(meta.namespace.as_deref().unwrap_or_default(), &r.name))
}

/// The ownerReference a controller puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A label selector as a matcher; `None` for an empty or invalid one (which selects nothing
/// for a controller).
pub fn selector_of(s: Option<&LabelSelector>) -> Option<Selector> {
    let s = s?;
    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return None;
    }
    Selector::try_from(s.clone()).ok()
}

fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// The result of claiming objects for a controller.
pub struct Claim<K> {
    /// Controlled by the owner and matching its selector.
    pub owned: Vec<Arc<K>>,
    /// Orphans matching the selector, to adopt.
    pub adopt: Vec<Arc<K>>,
    /// Controlled by the owner but no longer matching, to release.
    pub release: Vec<Arc<K>>,
}

/// Sorts `candidates` as upstream's ControllerRefManager does.
pub fn claim<K: Resource>(
    owner_uid: &str,
    owner_deleting: bool,
    selector: Option<&Selector>,
    candidates: impl IntoIterator<Item = Arc<K>>,
) -> Claim<K> {
    let mut c = Claim {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for o in candidates {
        let meta = o.meta();
        let matches = selector.is_some_and(|s| s.matches(&labels(meta)));
        match controller_of(meta) {
            Some(r) if r.uid == owner_uid => {
                if matches {
                    c.owned.push(o);
                } else if !owner_deleting && meta.deletion_timestamp.is_none() {
                    c.release.push(o);
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && meta.deletion_timestamp.is_none() {
                    c.adopt.push(o);
                }
            }
        }
    }
    c
}

/// Adds `owner` as the controller of `obj` (strategic merge by uid, guarded by the
/// object's uid). Returns the updated object, `None` if it is gone.
pub async fn adopt<K>(
    api: &Api<K>,
    obj: &K,
    owner: &OwnerReference,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "metadata": {"ownerReferences": [owner], "uid": obj.meta().uid}
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `owner_uid` from `obj`'s ownerReferences.
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": obj.meta().uid}
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A new pod from a controller's template (`generateName: <prefix>`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_string()),
            namespace: Some(namespace.to_string()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && phase != Some("Succeeded")
        && phase != Some("Failed")
}

/// When the pod's Ready condition turned true, if it is Ready.
pub fn ready_since(pod: &Pod) -> Option<Option<DateTime<Utc>>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t + chrono_secs(min_ready_seconds) <= now,
    }
}

/// How long until a Ready pod becomes available (`None` if not Ready or already available).
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    let t = ready_since(pod)??;
    (t + chrono_secs(min_ready_seconds) - now)
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
}

fn chrono_secs(s: i32) -> k8s_openapi::chrono::Duration {
    k8s_openapi::chrono::Duration::seconds(i64::from(s))
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Upstream's deletion preference between two active pods with their ranks (how many of the
/// related pods share their node): `Less` means `a` goes first. Unscheduled before
/// scheduled, Pending before Unknown before Running, not Ready before Ready, lower
/// deletion cost first, more doubled-up first, recently Ready before long Ready, more
/// restarts first, newer before older.
pub fn deletion_order(a: (&Pod, usize), b: (&Pod, usize)) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    let assigned = |p: &Pod| !node_of(p).is_empty();
    assigned(pa)
        .cmp(&assigned(pb))
        .then_with(|| phase_rank(pa).cmp(&phase_rank(pb)))
        .then_with(|| is_ready(pa).cmp(&is_ready(pb)))
        .then_with(|| deletion_cost(pa).cmp(&deletion_cost(pb)))
        .then_with(|| rb.cmp(&ra))
        .then_with(
            || match (ready_since(pa).flatten(), ready_since(pb).flatten()) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            },
        )
        .then_with(|| restarts(pb).cmp(&restarts(pa)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (created(pa), created(pb)) {
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (x, y) => y.cmp(&x),
            }
        })
}

/// The `n` pods of `pods` to delete first; `related` are the pods of every ReplicaSet of
/// the same owner (they rank pods that share a node).
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        let node = node_of(p);
        if !node.is_empty() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        let node = node_of(p);
        if node.is_empty() {
            0
        } else {
            per_node.get(node).copied().unwrap_or(0)
        }
    };
    let mut ranked: Vec<(Arc<Pod>, usize)> = pods.iter().map(|p| (p.clone(), rank(p))).collect();
    ranked.sort_by(|a, b| deletion_order((&a.0, a.1), (&b.0, b.1)));
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

/// How long expectations are trusted before a controller acts anyway (upstream's TTL).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

struct Expected {
    adds: i64,
    deletes: HashSet<String>,
    at: Instant,
}

/// Creations and deletions a controller made and has not yet seen through its watch: while
/// some are outstanding it does not act on the (stale) cache again.
#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller of `key` may act.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        self.lock().insert(
            key.to_string(),
            Expected {
                adds: i64::try_from(n).unwrap_or(i64::MAX),
                deletes: HashSet::new(),
                at: Instant::now(),
            },
        );
    }

    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        self.lock().insert(
            key.to_string(),
            Expected {
                adds: 0,
                deletes: pods.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// A creation was seen (or will never happen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The deletion of pod `pod` was seen (or will never happen).
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod);
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// How long repeats of one Event are counted on it rather than recorded anew.
const EVENT_AGGREGATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How many recent Events are remembered for counting repeats.
const EVENT_CACHE: usize = 4096;

struct RecentEvent {
    name: String,
    namespace: String,
    count: i32,
    at: Instant,
}

/// Deletes `victims`, pods owned by the controller queued as `owner_key` (whose object
/// `reference` gets the `SuccessfulDelete`/`FailedDelete` Events), all at once, each guarded
/// by its uid, as upstream's pod control does. The expectations learn of every deletion a
/// watch will not report (the pod was already gone or replaced, or the delete failed).
pub async fn delete_pods(
    api: &Api<Pod>,
    events: &Events,
    reference: &ObjectReference,
    expectations: &Expectations,
    owner_key: &str,
    victims: &[Arc<Pod>],
) -> Result<(), String> {
    let ns = api_namespace(victims);
    expectations.expect_deletions(
        owner_key,
        victims
            .iter()
            .map(|p| crate::queue::key(&ns, &p.name_any())),
    );
    let deletes = victims.iter().map(|p| async {
        let name = p.name_any();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                events
                    .normal(
                        reference,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    )
                    .await;
                Ok(())
            }
            // Gone already, or replaced by a pod of the same name (another uid).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                expectations.deletion_observed(owner_key, &crate::queue::key(&ns, &name));
                Ok(())
            }
            Err(e) => {
                expectations.deletion_observed(owner_key, &crate::queue::key(&ns, &name));
                events
                    .warning(reference, "FailedDelete", format!("Error deleting: {e}"))
                    .await;
                Err(e.to_string())
            }
        }
    });
    let results = futures::future::join_all(deletes).await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// The namespace of the first of `pods` (all of one controller's pods share it).
fn api_namespace(pods: &[Arc<Pod>]) -> String {
    pods.first().and_then(|p| p.namespace()).unwrap_or_default()
}

/// Records core/v1 Events about objects as one controller, as upstream's recorder does:
/// `kubectl describe` shows them, and a repeat of the same reason and message on the same
/// object is counted on one Event.
#[derive(Clone)]
pub struct Events {
    client: Client,
    component: String,
    recent: Arc<Mutex<HashMap<String, RecentEvent>>>,
}

impl Events {
    pub fn new(client: Client, component: &str) -> Self {
        Events {
            client,
            component: component.into(),
            recent: Arc::default(),
        }
    }

    pub async fn normal(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.publish(regarding, "Normal", reason, note).await;
    }

    pub async fn warning(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.publish(regarding, "Warning", reason, note).await;
    }

    async fn publish(&self, regarding: &ObjectReference, type_: &str, reason: &str, note: String) {
        let now = Utc::now();
        let stamp = Time(now);
        let key = [
            regarding.uid.as_deref().unwrap_or(""),
            type_,
            reason,
            note.as_str(),
        ]
        .join("\0");
        let repeat = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent
                .get(&key)
                .filter(|r| r.at.elapsed() < EVENT_AGGREGATE_WINDOW)
                .map(|r| (r.name.clone(), r.namespace.clone(), r.count + 1))
        };
        if let Some((name, namespace, count)) = repeat {
            let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({"count": count, "lastTimestamp": stamp});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.remember(key, name, namespace, count);
                return;
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.component),
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let event = CoreEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.into()),
            message: Some(note),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Default::default()
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => self.remember(key, name, namespace, 1),
            Err(e) => tracing::debug!("failed to record event {reason}: {e}"),
        }
    }

    fn remember(&self, key: String, name: String, namespace: String, count: i32) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= EVENT_CACHE {
            recent.retain(|_, r| r.at.elapsed() < EVENT_AGGREGATE_WINDOW);
            if recent.len() >= EVENT_CACHE {
                recent.clear();
            }
        }
        recent.insert(
            key,
            RecentEvent {
                name,
                namespace,
                count,
                at: Instant::now(),
            },
        );
    }
}

/// The canonical text of a JSON value (object keys sorted), what the template hash reads.
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// FNV-1a (32 bit) of `bytes`, continuing from `h` (`0x811c9dc5` to start).
pub fn fnv32a(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Upstream's safe encoding: each byte mapped into an alphabet without vowels (no words).
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn controller_key_names_only_a_controller_of_the_asked_kind() {
        let rs = k8s_openapi::api::apps::v1::ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut meta = ObjectMeta {
            namespace: Some("ns".into()),
            owner_references: Some(vec![controller_ref(&rs)]),
            ..Default::default()
        };
        type Rs = k8s_openapi::api::apps::v1::ReplicaSet;
        type Job = k8s_openapi::api::batch::v1::Job;
        assert_eq!(controller_key::<Rs>(&meta).as_deref(), Some("ns/web-1"));
        assert_eq!(controller_key::<Job>(&meta), None);
        if let Some(refs) = meta.owner_references.as_mut() {
            refs[0].controller = Some(false);
        }
        assert_eq!(controller_key::<Rs>(&meta), None);
    }

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready_secs_ago: Option<i64>,
        created_secs_ago: i64,
    ) -> Arc<Pod> {
        let now = Utc::now();
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    now - k8s_openapi::chrono::Duration::seconds(created_secs_ago),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_secs_ago.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(
                            now - k8s_openapi::chrono::Duration::seconds(s),
                        )),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    fn names(p: &[Arc<Pod>]) -> Vec<String> {
        p.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_then_newer() {
        let pods = vec![
            pod("running-old", "n1", "Running", Some(100), 300),
            pod("running-new", "n1", "Running", Some(100), 10),
            pod("unscheduled", "", "Pending", None, 500),
            pod("pending", "n1", "Pending", None, 500),
            pod("unready", "n1", "Running", None, 500),
            pod("recently-ready", "n1", "Running", Some(5), 500),
        ];
        let order = pods_to_delete(&pods, &pods, 6);
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending",
                "unready",
                "recently-ready",
                "running-new",
                "running-old"
            ]
        );
    }

    #[test]
    fn deletion_prefers_doubled_up_nodes() {
        let a = pod("alone", "n1", "Running", Some(100), 100);
        let b = pod("crowded", "n2", "Running", Some(100), 100);
        let c = pod("crowded-2", "n2", "Running", Some(100), 100);
        let order = pods_to_delete(&[a.clone(), b.clone()], &[a, b, c], 1);
        assert_eq!(names(&order), ["crowded"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", "n", "Running", Some(5), 10);
        let now = Utc::now();
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 10, now));
        assert!(until_available(&p, 10, now).is_some());
        assert!(!is_available(&pod("q", "n", "Running", None, 10), 0, now));
    }

    #[test]
    fn expectations_hold_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/a".to_string()]);
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/a");
        assert!(e.satisfied("ns/rs"));
    }
}
