//! The scheduling queue, as upstream's: pending pods wait in an active queue (highest
//! priority first, then oldest); a pod that fits nowhere waits as unschedulable until a
//! cluster change that may help it (a node added or changed, a pod gone), then goes back
//! through a back-off (1 s doubling to 10 s per failed attempt) before its next try.

use crate::podinfo::PodInfo;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod stays unschedulable without a helpful event before it is retried anyway
/// (upstream's `podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

type ActiveKey = (Reverse<i32>, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active(ActiveKey),
    Backoff((Instant, u64)),
    /// Failed; waiting for a cluster change matching the mask of failed filter kinds.
    Unschedulable {
        since: Instant,
        kinds: u8,
    },
    /// Popped and being scheduled.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    state: State,
    attempts: u32,
    last_attempt: Option<Instant>,
}

/// Pending pods waiting for a node.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BTreeMap<ActiveKey, String>,
    backoff: BTreeMap<(Instant, u64), String>,
    /// The unschedulable pods and the filter kinds they failed.
    unschedulable: HashMap<String, u8>,
    seq: u64,
}

impl SchedulingQueue {
    /// How many pods the queue holds (in any state).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds no pods.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the queue holds the pod.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether a pod is ready to be tried.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn activate(&mut self, key: &str) {
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let k = (Reverse(e.pod.priority), seq);
        self.detach(key);
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Active(k);
        }
        self.active.insert(k, key.to_string());
    }

    fn back_off(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        let until = e
            .last_attempt
            .map(|t| t + backoff_duration(e.attempts))
            .unwrap_or(now);
        if until <= now {
            self.activate(key);
            return;
        }
        let seq = self.next_seq();
        self.detach(key);
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Backoff((until, seq));
        }
        self.backoff.insert((until, seq), key.to_string());
    }

    /// Takes the pod out of the active or back-off index (not out of the queue).
    fn detach(&mut self, key: &str) {
        if let Some(e) = self.entries.get(key) {
            match e.state {
                State::Active(k) => {
                    self.active.remove(&k);
                }
                State::Backoff(k) => {
                    self.backoff.remove(&k);
                }
                State::Unschedulable { .. } => {
                    self.unschedulable.remove(key);
                }
                State::InFlight => {}
            }
        }
    }

    /// Adds a new pending pod, or updates a queued one. An update of its spec or labels
    /// retries an unschedulable pod (the change may make it fit).
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key();
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        state: State::InFlight,
                        attempts: 0,
                        last_attempt: None,
                    },
                );
                self.activate(&key);
            }
            Some(e) => {
                let changed = e.pod.pod.spec != pod.pod.spec || e.pod.labels != pod.labels;
                e.pod = pod;
                if changed && matches!(e.state, State::Unschedulable { .. }) {
                    self.back_off(&key, now);
                }
            }
        }
    }

    /// Removes a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, key: &str) {
        self.detach(key);
        self.entries.remove(key);
    }

    /// The next pod to try; it stays in the queue as in flight until [`Self::done`] or
    /// [`Self::unschedulable`].
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        let (_, key) = self.active.pop_first()?;
        let e = self.entries.get_mut(&key)?;
        e.state = State::InFlight;
        e.attempts += 1;
        e.last_attempt = Some(now);
        Some(e.pod.clone())
    }

    /// The pod got a node: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The pod fits no node; it waits for a change touching one of `kinds` (filter kinds).
    pub fn unschedulable(&mut self, key: &str, kinds: u8, now: Instant) {
        self.detach(key);
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Unschedulable { since: now, kinds };
            self.unschedulable.insert(key.to_string(), kinds);
        }
    }

    /// Puts back a pod whose binding failed, after its back-off.
    pub fn retry(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key();
        let attempts = self.entries.get(&key).map(|e| e.attempts).unwrap_or(1);
        self.detach(&key);
        self.entries.insert(
            key.clone(),
            Entry {
                pod,
                state: State::InFlight,
                attempts: attempts.max(1),
                last_attempt: Some(now),
            },
        );
        self.back_off(&key, now);
    }

    /// A cluster change that may help pods failing with any of `kinds`: they go to the
    /// back-off queue (or straight to active when their back-off is over). Returns how many
    /// moved.
    pub fn move_unschedulable(&mut self, kinds: u8, now: Instant) -> usize {
        if self.unschedulable.is_empty() {
            return 0;
        }
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, k)| **k & kinds != 0)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.back_off(k, now);
        }
        keys.len()
    }

    /// Moves pods whose back-off is over to the active queue, and pods unschedulable for
    /// longer than [`MAX_UNSCHEDULABLE`] to back-off.
    pub fn flush(&mut self, now: Instant) {
        while let Some((&(until, seq), _)) = self.backoff.first_key_value() {
            if until > now {
                break;
            }
            if let Some(key) = self.backoff.remove(&(until, seq)) {
                self.activate(&key);
            }
        }
        if self.unschedulable.is_empty() {
            return;
        }
        let stale: Vec<String> = self
            .unschedulable
            .keys()
            .filter(|k| {
                self.entries.get(*k).is_some_and(|e| {
                    matches!(e.state, State::Unschedulable { since, .. } if now.duration_since(since) >= MAX_UNSCHEDULABLE)
                })
            })
            .cloned()
            .collect();
        for k in &stale {
            self.back_off(k, now);
        }
    }

    /// When the next back-off ends or the oldest unschedulable pod is due for a retry.
    pub fn next_deadline(&self) -> Option<Instant> {
        let backoff = self.backoff.keys().next().map(|(t, _)| *t);
        let unschedulable = self
            .unschedulable
            .keys()
            .filter_map(|k| self.entries.get(k))
            .filter_map(|e| match e.state {
                State::Unschedulable { since, .. } => Some(since + MAX_UNSCHEDULABLE),
                _ => None,
            })
            .min();
        match (backoff, unschedulable) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Keys of every queued pod.
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

/// Upstream's per-pod back-off: 1 s, doubling per failed attempt, at most 10 s.
fn backoff_duration(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use serde_json::json;

    fn p(name: &str, priority: i32) -> Arc<PodInfo> {
        pod(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [], "priority": priority}}),
        )
    }

    #[test]
    fn priority_then_age() {
        let mut q = SchedulingQueue::default();
        let now = Instant::now();
        q.add_or_update(p("a", 0), now);
        q.add_or_update(p("b", 10), now);
        q.add_or_update(p("c", 0), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|p| p.name.clone())).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert_eq!(q.len(), 3);
        q.done("default/a");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn unschedulable_pods_wait_for_helpful_events_and_back_off() {
        let mut q = SchedulingQueue::default();
        let t0 = Instant::now();
        q.add_or_update(p("a", 0), t0);
        let a = q.pop(t0);
        assert!(a.is_some());
        q.unschedulable("default/a", crate::filters::kind::RESOURCES, t0);
        assert!(!q.has_active());
        // A change that cannot help (a node property) leaves it.
        assert_eq!(q.move_unschedulable(crate::filters::kind::PORTS, t0), 0);
        assert_eq!(q.move_unschedulable(crate::filters::kind::RESOURCES, t0), 1);
        // Back-off of 1 s after the first attempt.
        q.flush(t0 + Duration::from_millis(500));
        assert!(!q.has_active());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_secs(1));
        assert!(q.has_active());
        // The second failure backs off 2 s.
        let t1 = t0 + Duration::from_secs(1);
        q.pop(t1);
        q.unschedulable("default/a", crate::filters::kind::NODE, t1);
        q.move_unschedulable(crate::filters::kind::NODE, t1);
        assert_eq!(q.next_deadline(), Some(t1 + Duration::from_secs(2)));
    }

    #[test]
    fn backoff_grows_to_ten_seconds() {
        assert_eq!(backoff_duration(1), Duration::from_secs(1));
        assert_eq!(backoff_duration(3), Duration::from_secs(4));
        assert_eq!(backoff_duration(20), Duration::from_secs(10));
    }
}
