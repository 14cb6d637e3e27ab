//! The watch cache: one store watch per collection (resource and version), whose events are
//! decoded once and fanned out to every watcher of that collection from memory, each
//! event's JSON watch line encoded once and shared, as upstream's cacher does.
//!
//! A [`Feed`] keeps the raw events of its newest revisions (every event above its `floor`),
//! so a watch starting at a recent revision (a list's `resourceVersion`) replays the gap
//! from memory and then follows the live events with no gap and no duplicate. A watch
//! starting below the floor, or a watcher that falls [`QUEUE`] events behind, is not served
//! here: the caller watches the store itself, with its history replay and `410 Gone`, until
//! it has caught up and the feed holds every event after its last one again.

use crate::objects::decode;
use crate::status::ApiError;
use berth_api::registry::ResourceInfo;
use berth_store::{Event, Revision, Store};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

/// Raw events a feed keeps for watches that start a little behind it.
const RECENT: usize = 512;
/// Events queued for one watcher before it counts as too slow for the shared feed.
pub const QUEUE: usize = 4096;

/// One store event, decoded once for every watcher of its collection.
pub struct Shared {
    pub revision: Revision,
    pub key: String,
    /// `ADDED`, `MODIFIED` or `DELETED`, as a watcher without selectors sees it.
    pub kind: &'static str,
    /// The object (for a deletion, its last state at the deletion's revision), or the
    /// `Status` of the error decoding it.
    pub object: Result<Value, Value>,
    /// The stored value before a modification and its revision, decoded on first use
    /// (only watchers with selectors need it).
    prev: Option<(Vec<u8>, Revision)>,
    prev_object: OnceLock<Option<Value>>,
    /// The watch line of `kind` and `object`, encoded on first use.
    line: OnceLock<Bytes>,
}

impl Shared {
    /// Decodes a store event of `resource`.
    pub fn new(resource: &ResourceInfo, event: Event) -> Self {
        let revision = event.revision();
        let (key, kind, object, prev) = match event {
            Event::Put { kv, prev } => {
                let object = decode(resource, &kv.value, kv.mod_revision);
                let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
                (
                    kv.key,
                    kind,
                    object,
                    prev.map(|p| (p.value, p.mod_revision)),
                )
            }
            Event::Delete { prev, revision } => {
                let object = decode(resource, &prev.value, revision);
                (prev.key, "DELETED", object, None)
            }
        };
        Shared {
            revision,
            key,
            kind,
            object: object.map_err(|e| e.to_status()),
            prev,
            prev_object: OnceLock::new(),
            line: OnceLock::new(),
        }
    }

    /// The object before a modification (`None` for a creation or deletion, or when it
    /// cannot be decoded).
    pub fn prev_object(&self, resource: &ResourceInfo) -> Option<&Value> {
        self.prev_object
            .get_or_init(|| {
                let (bytes, revision) = self.prev.as_ref()?;
                decode(resource, bytes, *revision).ok()
            })
            .as_ref()
    }

    /// Whether the event modified an existing object.
    pub fn has_prev(&self) -> bool {
        self.prev.is_some()
    }

    /// `{"type": kind, "object": object}` and a newline, encoded once.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| match &self.object {
                Ok(object) => super::encode_line(self.kind, object),
                Err(status) => super::encode_line("ERROR", status),
            })
            .clone()
    }
}

/// What a watcher gets from a feed when it subscribes.
pub struct Subscription {
    /// Events after the requested revision that the feed already had, oldest first.
    pub backlog: Vec<Arc<Shared>>,
    /// Live events after those; it closes when the feed ends or the watcher fell behind.
    pub live: mpsc::Receiver<Arc<Shared>>,
}

/// The feeds of every watched collection.
#[derive(Clone, Default)]
pub struct Feeds {
    feeds: Arc<Mutex<HashMap<String, Arc<Feed>>>>,
}

/// One collection's fan-out.
struct Feed {
    resource: &'static ResourceInfo,
    state: Mutex<FeedState>,
}

struct FeedState {
    /// Every event of the collection with a revision above `floor` is in `recent` or is
    /// still to come from the store.
    floor: Revision,
    recent: VecDeque<Event>,
    subscribers: Vec<mpsc::Sender<Arc<Shared>>>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store prefix holding every object of `r` (all namespaces).
fn collection_prefix(r: &ResourceInfo) -> String {
    crate::objects::prefix(r, None)
}

impl Feeds {
    /// Subscribes to `r`'s feed for the events after `after` (starting the feed if none
    /// runs). `None` when the feed no longer holds every event after `after`: the caller
    /// must watch the store itself.
    pub async fn subscribe(
        &self,
        store: &Arc<dyn Store>,
        r: &'static ResourceInfo,
        after: Revision,
    ) -> Result<Option<Subscription>, ApiError> {
        let prefix = collection_prefix(r);
        let id = format!("{}|{}|{}", r.group, r.version, prefix);
        let existing = lock(&self.feeds).get(&id).cloned();
        let feed = match existing {
            Some(feed) => feed,
            None => self.start(store, r, id, prefix).await?,
        };
        Ok(feed.subscribe(after))
    }

    /// Starts a feed of `r` at the store's current revision and registers it, unless
    /// another watch registered one meanwhile.
    async fn start(
        &self,
        store: &Arc<dyn Store>,
        r: &'static ResourceInfo,
        id: String,
        prefix: String,
    ) -> Result<Arc<Feed>, ApiError> {
        let floor = store.current_revision().await?;
        let stream = store.watch(&prefix, floor).await?;
        let feed = Arc::new(Feed {
            resource: r,
            state: Mutex::new(FeedState {
                floor,
                recent: VecDeque::new(),
                subscribers: Vec::new(),
                closed: false,
            }),
        });
        {
            let mut feeds = lock(&self.feeds);
            if let Some(other) = feeds.get(&id) {
                return Ok(other.clone());
            }
            feeds.insert(id.clone(), feed.clone());
        }
        let feeds = self.clone();
        let running = feed.clone();
        tokio::spawn(async move {
            running.run(stream).await;
            let mut map = lock(&feeds.feeds);
            if map.get(&id).is_some_and(|f| Arc::ptr_eq(f, &running)) {
                map.remove(&id);
            }
        });
        Ok(feed)
    }
}

impl Feed {
    fn subscribe(&self, after: Revision) -> Option<Subscription> {
        let mut st = lock(&self.state);
        if st.closed || after < st.floor {
            return None;
        }
        let backlog = st
            .recent
            .iter()
            .filter(|e| e.revision() > after)
            .map(|e| Arc::new(Shared::new(self.resource, e.clone())))
            .collect();
        let (tx, live) = mpsc::channel(QUEUE);
        st.subscribers.push(tx);
        Some(Subscription { backlog, live })
    }

    /// Forwards the store's events until its watch ends, then closes every subscription.
    async fn run(&self, mut stream: berth_store::WatchStream) {
        while let Some(next) = stream.next().await {
            let event = match next {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(
                        resource = self.resource.plural,
                        "watch cache feed ended: {e}"
                    );
                    break;
                }
            };
            let watched = !lock(&self.state).subscribers.is_empty();
            // Decoding happens outside the lock; nobody listening, nobody decodes.
            let shared = watched.then(|| Arc::new(Shared::new(self.resource, event.clone())));
            let mut st = lock(&self.state);
            st.recent.push_back(event);
            while st.recent.len() > RECENT {
                if let Some(old) = st.recent.pop_front() {
                    st.floor = old.revision();
                }
            }
            match shared {
                Some(shared) => st
                    .subscribers
                    .retain(|tx| match tx.try_send(shared.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::debug!(
                                resource = self.resource.plural,
                                "a watcher fell {QUEUE} events behind the watch cache"
                            );
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }),
                // A subscriber that arrived while this event was not decoded yet.
                None if !st.subscribers.is_empty() => {
                    let shared = st
                        .recent
                        .back()
                        .map(|e| Arc::new(Shared::new(self.resource, e.clone())));
                    if let Some(shared) = shared {
                        st.subscribers
                            .retain(|tx| tx.try_send(shared.clone()).is_ok());
                    }
                }
                None => {}
            }
        }
        let mut st = lock(&self.state);
        st.closed = true;
        st.subscribers.clear();
        st.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::MemoryStore;
    use serde_json::json;

    fn configmaps() -> &'static ResourceInfo {
        berth_api::registry::find("", "v1", "configmaps").expect("configmaps are registered")
    }

    async fn put(store: &Arc<dyn Store>, name: &str) -> Revision {
        let key = format!("/registry/core/configmaps/default/{name}");
        let value =
            serde_json::to_vec(&json!({"metadata": {"name": name, "namespace": "default"}}))
                .unwrap_or_default();
        store
            .create(&key, value)
            .await
            .map(|kv| kv.mod_revision)
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn watchers_share_decoded_events_and_replay_recent_ones() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let feeds = Feeds::default();
        let start = store.current_revision().await.unwrap_or(0);
        let Ok(Some(mut first)) = feeds.subscribe(&store, configmaps(), start).await else {
            panic!("a feed at the current revision serves the watch");
        };
        let a = put(&store, "a").await;
        let b = put(&store, "b").await;
        // A second watcher starting after `a` gets `b` from the feed's recent events.
        let Ok(Some(second)) = feeds.subscribe(&store, configmaps(), a).await else {
            panic!("a recent revision is served from memory");
        };
        let one = first.live.recv().await.expect("event a");
        let two = first.live.recv().await.expect("event b");
        assert_eq!((one.revision, two.revision), (a, b));
        assert_eq!(one.kind, "ADDED");
        // `b` is replayed or arrives live (the feed may not have seen the writes yet, so
        // events up to `a` may come too: the watcher skips those).
        let mut events: VecDeque<Arc<Shared>> = second.backlog.into();
        let mut live = second.live;
        let mut got = None;
        while got.is_none() {
            let next = match events.pop_front() {
                Some(e) => Some(e),
                None => live.recv().await,
            };
            let Some(next) = next else { break };
            if next.revision > a {
                got = Some(next.revision);
            }
        }
        assert_eq!(got, Some(b));
        let line: Value = serde_json::from_slice(&two.line()).unwrap_or_default();
        assert_eq!(line["type"], "ADDED");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], b.to_string());
        // A revision older than the feed's floor is not served here.
        assert!(matches!(
            feeds.subscribe(&store, configmaps(), start - 1).await,
            Ok(None)
        ));
    }
}
