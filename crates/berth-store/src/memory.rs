//! The in-memory backend of the [`Store`] contract, for tests: a `BTreeMap` of current values,
//! a bounded history log for watch replay and past-revision lists, and a broadcast channel for
//! live events. Same semantics as the SQLite backend, nothing survives the process.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;
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
    /// One entry per revision after `compacted`, consecutive, oldest first.
    history: VecDeque<Logged>,
}

/// One write of the history.
struct Logged {
    event: Event,
    /// The key's `mod_revision` before the write (`0` for a creation). A deletion event only
    /// carries the deletion's revision, so this is what lets a past list rebuild the key.
    prev_mod_revision: Revision,
}

impl Logged {
    fn revision(&self) -> Revision {
        self.event.revision()
    }

    /// The key's state just before this write: `None` if the write created it.
    fn before(&self) -> Option<KeyValue> {
        match &self.event {
            Event::Put { prev, .. } => prev.clone(),
            Event::Delete { prev, .. } => Some(KeyValue {
                mod_revision: self.prev_mod_revision,
                ..prev.clone()
            }),
        }
    }
}

struct Entry {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
}

impl State {
    /// [`Store::list`] at a past `revision`: keys whose last write is at or before it are
    /// current; for a key written after it, the earliest later write tells its state then.
    fn list_at(
        &self,
        prefix: &str,
        opts: &ListOptions,
        revision: Revision,
    ) -> Result<ListResult, StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision(revision));
        }
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        let in_range =
            |k: &str| k.starts_with(prefix) && opts.start_after.as_deref().is_none_or(|s| k > s);
        // History revisions are consecutive, so the first one after `revision` is at a known
        // index. The first write of a key after `revision` holds its state at `revision`.
        let first = self.history.front().map_or(0, Logged::revision);
        let skip = usize::try_from(revision + 1 - first).unwrap_or(0);
        let mut rewound: BTreeMap<&str, Option<KeyValue>> = BTreeMap::new();
        for logged in self.history.iter().skip(skip) {
            let key = logged.event.key();
            if in_range(key) && !rewound.contains_key(key) {
                rewound.insert(key, logged.before());
            }
        }
        // Keys last written at or before `revision` have their current value; every other key
        // was written after it and is in `rewound`, so the two sides never share a key.
        let current = self
            .kv
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, e)| e.mod_revision <= revision && in_range(k))
            .map(|(k, e)| Past::Current(k, e));
        let past = rewound.into_values().flatten().map(Past::Rewound);
        let mut merged = MergeByKey {
            a: current.peekable(),
            b: past.peekable(),
        };
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let items: Vec<KeyValue> = merged.by_ref().take(limit).map(Past::into_kv).collect();
        let remaining = i64::try_from(merged.count()).unwrap_or(i64::MAX);
        Ok(ListResult {
            items,
            more: remaining > 0,
            remaining,
            revision,
        })
    }
}

/// A key-value of a past list: borrowed from the current map, or rebuilt from history.
enum Past<'a> {
    Current(&'a String, &'a Entry),
    Rewound(KeyValue),
}

impl Past<'_> {
    fn key(&self) -> &str {
        match self {
            Past::Current(k, _) => k,
            Past::Rewound(kv) => &kv.key,
        }
    }

    fn into_kv(self) -> KeyValue {
        match self {
            Past::Current(k, e) => e.to_kv(k),
            Past::Rewound(kv) => kv,
        }
    }
}

/// Merges two key-ordered iterators with distinct keys into one, in key order.
struct MergeByKey<'a, A: Iterator<Item = Past<'a>>, B: Iterator<Item = Past<'a>>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A: Iterator<Item = Past<'a>>, B: Iterator<Item = Past<'a>>> Iterator
    for MergeByKey<'a, A, B>
{
    type Item = Past<'a>;

    fn next(&mut self) -> Option<Past<'a>> {
        let order = match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) => a.key().cmp(b.key()),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        if order == Ordering::Greater {
            self.b.next()
        } else {
            self.a.next()
        }
    }
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
    /// that events are published in revision order. `prev_mod_revision` is the key's
    /// `mod_revision` before the write (`0` for a creation).
    fn commit(&self, state: &mut State, event: Event, prev_mod_revision: Revision) {
        state.revision = event.revision();
        state.history.push_back(Logged {
            event: event.clone(),
            prev_mod_revision,
        });
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
            .map(|logged| &logged.event)
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
        if let Some(revision) = opts.revision {
            return state.list_at(prefix, &opts, revision);
        }
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
        self.inner.commit(&mut state, event, 0);
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
        let prev_mod_revision = prev.mod_revision;
        let event = Event::Put {
            kv: kv.clone(),
            prev: Some(prev),
        };
        self.inner.commit(&mut state, event, prev_mod_revision);
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
        let prev_mod_revision = prev.mod_revision;
        prev.mod_revision = revision;
        state.kv.remove(key);
        let event = Event::Delete {
            prev: prev.clone(),
            revision,
        };
        self.inner.commit(&mut state, event, prev_mod_revision);
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
