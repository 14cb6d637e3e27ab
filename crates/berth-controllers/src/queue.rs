//! The work queue every controller runs on: keys are deduplicated while they wait, one key
//! is never reconciled twice at once, failures are retried with a per-key exponential
//! back-off, and each reconcile runs as its own task so a panic only fails that key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The first retry delay after a failure; it doubles per consecutive failure.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(300);

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    /// The earliest pending delayed add of each key.
    waiting: HashMap<T, Instant>,
    shut_down: bool,
}

/// A rate-limited, deduplicating work queue of keys.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Queue<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                waiting: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` now (a key already waiting is not queued twice).
    pub fn add(&self, key: T) {
        let mut s = self.lock();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay` (keeping only the earliest pending delay per key).
    pub fn add_after(self: &Arc<Self>, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.shut_down || s.waiting.get(&key).is_some_and(|w| *w <= at) {
                return;
            }
            s.waiting.insert(key.clone(), at);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(q) = queue.upgrade() {
                let due = {
                    let mut s = q.lock();
                    if s.waiting.get(&key) == Some(&at) {
                        s.waiting.remove(&key);
                        true
                    } else {
                        false
                    }
                };
                if due {
                    q.add(key);
                }
            }
        });
    }

    /// Queues `key` after its back-off (which grows with each failure until `forget`).
    pub fn add_rate_limited(self: &Arc<Self>, key: T) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, backoff(n));
    }

    /// Resets the back-off of `key` (after a successful reconcile).
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on, or `None` once shut down.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` done; if it was queued again meanwhile it becomes available.
    pub fn done(&self, key: &T) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    /// How many keys wait (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(30);
    BASE_DELAY
        .saturating_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .min(MAX_DELAY)
}

/// The queue key of a namespaced object: `namespace/name`.
pub fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// What a successful reconcile asks for next.
pub type Requeue = Option<Duration>;

/// How soon a reconcile that lost a race ([`ReconcileError::is_conflict`]) runs again.
const CONFLICT_RETRY: Duration = Duration::from_millis(100);

/// An error of a reconcile. A lost race — a write refused with 409 Conflict because the
/// object changed meanwhile (usually by the controller's own previous write, not yet in the
/// cache) — is retried shortly, without a warning or back-off: the newer object's event
/// queues the key anyway.
pub trait ReconcileError: Display + Send + 'static {
    /// Whether the error is such a lost race.
    fn is_conflict(&self) -> bool {
        false
    }
}

impl ReconcileError for std::convert::Infallible {}

/// Whether the API server answered 409 Conflict.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs `workers` workers on `queue` until `stop` turns true. Each key's reconcile runs as a
/// task: an error or a panic requeues the key with back-off and never stops the others.
pub async fn run_workers<T, F, Fut, E>(
    name: &'static str,
    queue: Arc<Queue<T>>,
    workers: usize,
    reconcile: F,
    stop: watch::Receiver<bool>,
) where
    T: Hash + Eq + Clone + Display + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Requeue, E>> + Send + 'static,
    E: ReconcileError,
{
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let key = tokio::select! {
                    k = queue.get() => k,
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(key) = key else { return };
                let mut task = tokio::spawn(reconcile(key.clone()));
                let result = tokio::select! {
                    r = &mut task => r,
                    _ = stop.wait_for(|s| *s) => {
                        task.abort();
                        return;
                    }
                };
                match result {
                    Ok(Ok(requeue)) => {
                        queue.forget(&key);
                        if let Some(after) = requeue {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Ok(Err(e)) if e.is_conflict() => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), CONFLICT_RETRY);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("{name} {key}: {e}");
                        queue.add_rate_limited(key.clone());
                    }
                    Err(e) => {
                        tracing::error!("{name} {key}: reconcile failed: {e}");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    queue.shut_down();
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(40), MAX_DELAY);
    }

    #[tokio::test]
    async fn keys_are_deduplicated_and_requeued_after_done() {
        let q = Queue::<String>::new();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        let a = q.get().await;
        assert_eq!(a.as_deref(), Some("a"));
        // Queued again while processing: handed out only after done.
        q.add("a".into());
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
        q.done(&"a".to_string());
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[derive(Debug)]
    struct Lost;

    impl std::fmt::Display for Lost {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the object has been modified")
        }
    }

    impl ReconcileError for Lost {
        fn is_conflict(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_lost_race_is_retried_shortly_without_back_off() {
        let q = Queue::<String>::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let a = attempts.clone();
        let runner = tokio::spawn(run_workers(
            "test",
            q.clone(),
            1,
            move |_k: String| {
                let a = a.clone();
                async move {
                    let n = {
                        let mut v = a.lock().unwrap_or_else(|e| e.into_inner());
                        v.push(Instant::now());
                        v.len()
                    };
                    if n < 4 {
                        Err(Lost)
                    } else {
                        Ok(None)
                    }
                }
            },
            stop_rx,
        ));
        q.add("k".into());
        for _ in 0..300 {
            if attempts.lock().unwrap_or_else(|e| e.into_inner()).len() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        let _ = runner.await;
        let v = attempts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(v.len(), 4, "retried until it succeeded");
        for w in v.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= CONFLICT_RETRY && gap < CONFLICT_RETRY * 5, "{gap:?}");
        }
        assert!(q.lock().failures.is_empty(), "no back-off was counted");
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_retried_and_others_go_on() {
        let q = Queue::<String>::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let runner = tokio::spawn(run_workers(
            "test",
            q.clone(),
            1,
            move |k: String| {
                let s = s.clone();
                async move {
                    let attempts = {
                        let mut v = s.lock().unwrap_or_else(|e| e.into_inner());
                        v.push(k.clone());
                        v.iter().filter(|x| **x == k).count()
                    };
                    if k == "bad" && attempts < 3 {
                        panic!("boom");
                    }
                    Ok::<_, std::convert::Infallible>(None)
                }
            },
            stop_rx,
        ));
        q.add("bad".into());
        q.add("good".into());
        for _ in 0..200 {
            let done = {
                let v = seen.lock().unwrap_or_else(|e| e.into_inner());
                v.iter().filter(|x| *x == "bad").count() == 3 && v.contains(&"good".to_string())
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        let _ = runner.await;
        let v = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(v.iter().filter(|x| *x == "bad").count(), 3, "{v:?}");
        assert!(v.contains(&"good".to_string()));
    }
}
