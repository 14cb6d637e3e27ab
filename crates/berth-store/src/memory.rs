//! The in-memory backend of the [`Store`] contract, for tests: a `BTreeMap` of current values,
//! a bounded history log for watch replay and a broadcast channel for live events. Same
//! semantics as the SQLite backend, nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::watch::{self, Batch, EventSource, History};
use crate::{Event, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// Options of a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Events kept for watch replay; older ones are compacted away automatically.
    pub history_limit: usize,
    /// Live batches buffered per watcher before it lags and resyncs from history.
    pub watch_buffer: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            watch_buffer: 1024,
        }
    }
}

/// An in-memory [`Store`]. Cloning gives another handle to the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Batch>,
    history_limit: usize,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Entry>,
    revision: Revision,
    compacted: Revision,
    history: VecDeque<Event>,
}

struct Entry {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
}

impl Entry {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with default options.
    pub fn new() -> Self {
        Self::with_options(MemoryOptions::default())
    }

    /// An empty store with the given options.
    pub fn with_options(opts: MemoryOptions) -> Self {
        let (events, _) = broadcast::channel(opts.watch_buffer.max(1));
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                history_limit: opts.history_limit.max(1),
            }),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated without panicking paths, so a poisoned lock still holds
        // consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `event` at the next revision and publishes it; called with the lock held so
    /// that events are published in revision order.
    fn commit(&self, state: &mut State, event: Event) {
        state.revision = event.revision();
        state.history.push_back(event.clone());
        while state.history.len() > self.history_limit {
            if let Some(old) = state.history.pop_front() {
                state.compacted = old.revision();
            }
        }
        // No receivers is not an error: nobody watches.
        let _ = self.events.send(Arc::new(vec![event]));
    }
}

#[async_trait::async_trait]
impl EventSource for Inner {
    fn subscribe(&self) -> Option<broadcast::Receiver<Batch>> {
        Some(self.events.subscribe())
    }

    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<History, StoreError> {
        let state = self.lock();
        if after < state.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: state.compacted,
            });
        }
        // History revisions are consecutive, so the first one after `after` is at a known index.
        let skip = state
            .history
            .front()
            .map_or(0, |first| (after + 1 - first.revision()).max(0));
        let events = state
            .history
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .filter(|e| e.revision() > after && e.key().starts_with(prefix))
            .take(limit)
            .cloned()
            .collect();
        Ok(History {
            events,
            revision: state.revision,
        })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.inner.lock().kv.get(key).map(|e| e.to_kv(key)))
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let state = self.inner.lock();
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut matching = state
            .kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| opts.start_after.as_deref().is_none_or(|s| k.as_str() > s));
        let items: Vec<KeyValue> = matching
            .by_ref()
            .take(limit)
            .map(|(k, e)| e.to_kv(k))
            .collect();
        let remaining = i64::try_from(matching.count()).unwrap_or(i64::MAX);
        Ok(ListResult {
            items,
            more: remaining > 0,
            remaining,
            revision: state.revision,
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64, StoreError> {
        let state = self.inner.lock();
        let n = state
            .kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count();
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let mut state = self.inner.lock();
        if state.kv.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        let revision = state.revision + 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        };
        state.kv.insert(
            key.to_owned(),
            Entry {
                value: kv.value.clone(),
                create_revision: revision,
                mod_revision: revision,
            },
        );
        let event = Event::Put {
            kv: kv.clone(),
            prev: None,
        };
        self.inner.commit(&mut state, event);
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let mut state = self.inner.lock();
        let revision = state.revision + 1;
        let entry = state
            .kv
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
        if entry.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: entry.mod_revision,
            });
        }
        let prev = entry.to_kv(key);
        entry.value.clone_from(&value);
        entry.mod_revision = revision;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: entry.create_revision,
            mod_revision: revision,
        };
        let event = Event::Put {
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.inner.commit(&mut state, event);
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let mut state = self.inner.lock();
        let entry = state
            .kv
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
        if let Some(expected) = expected {
            if entry.mod_revision != expected {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                    expected,
                    actual: entry.mod_revision,
                });
            }
        }
        let revision = state.revision + 1;
        let mut prev = entry.to_kv(key);
        prev.mod_revision = revision;
        state.kv.remove(key);
        let event = Event::Delete {
            prev: prev.clone(),
            revision,
        };
        self.inner.commit(&mut state, event);
        Ok(prev)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        watch::watch(&self.inner, prefix, after).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.inner.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision(revision));
        }
        if revision <= state.compacted {
            return Ok(());
        }
        while state
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            state.history.pop_front();
        }
        state.compacted = revision;
        Ok(())
    }
}
