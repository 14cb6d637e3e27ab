//! The datastore contract of berth: a revisioned key-value store with watch and compaction.
//!
//! Every write bumps one global revision (the Kubernetes `resourceVersion`). The API server is
//! the only writer; backends: [`sqlite::SqliteStore`] (durable, default) and
//! [`memory::MemoryStore`] (tests).

pub mod memory;
pub mod sqlite;
mod watch;

#[cfg(test)]
mod tests;

use futures::stream::BoxStream;

pub use memory::{MemoryOptions, MemoryStore};
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore};

/// A global, strictly increasing revision number. `0` means "no revision".
pub type Revision = i64;

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a deletion event: the deletion's revision).
    pub mod_revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was created (`prev` is `None`) or updated (`prev` is the value before).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is the last value it had.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision of the write that produced this event.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// Options of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (a pagination cursor).
    pub start_after: Option<String>,
    /// At most this many items (`None` or `Some(0)`: all).
    pub limit: Option<usize>,
    /// Read the keys as they were at this revision (an MVCC read, like etcd's); `None` reads
    /// the current state. `Some(0)` is the empty state before the first write. A revision
    /// newer than the current one fails with [`StoreError::FutureRevision`], one older than
    /// the compacted revision with [`StoreError::Compacted`].
    pub revision: Option<Revision>,
}

/// The answer of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    /// Matching key-values in key order.
    pub items: Vec<KeyValue>,
    /// True when more keys match after the last returned one.
    pub more: bool,
    /// Number of matching keys after the returned ones (when `more`).
    pub remaining: i64,
    /// The store's revision the list was read at: the requested
    /// [`ListOptions::revision`], else the current revision.
    pub revision: Revision,
}

/// A stream of watch events, in revision order. It ends when the store shuts down or the
/// watcher falls too far behind (then its last item is `Err(StoreError::Compacted)`).
pub type WatchStream = BoxStream<'static, Result<Event, StoreError>>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// Compare-and-swap failed: the key's current `mod_revision` differs from the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The requested revision is older than the compacted revision.
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the current one.
    #[error("revision {0} is in the future")]
    FutureRevision(Revision),
    #[error("failed to access the datastore: {0}")]
    Backend(String),
    #[error("the datastore is shutting down")]
    Closed,
}

/// A revisioned key-value store with watch. Keys are `/`-separated paths; prefixes end in `/`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix`, in key order, at the current revision or, with
    /// [`ListOptions::revision`], as they were at that past revision (with the create and mod
    /// revisions they had then). Paging with `start_after` at a fixed revision gives a
    /// consistent snapshot while writes continue, until that revision is compacted.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError>;

    /// Number of keys starting with `prefix`.
    async fn count(&self, prefix: &str) -> Result<i64, StoreError>;

    /// Creates `key`; fails with `AlreadyExists` if it exists. Durable when it returns.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key` if its `mod_revision` equals `expected` (`Conflict` otherwise, `NotFound`
    /// if absent). Durable when it returns.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes `key`, if `expected` is given only when its `mod_revision` equals it. Returns the
    /// deleted value with `mod_revision` set to the deletion's revision. Durable when it returns.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Events for keys starting with `prefix` with a revision greater than `after`
    /// (`after == 0`: only events from now on). `Compacted` if `after` is older than the
    /// compacted revision.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision a watch may start after.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// Forgets the history at and before `revision` (current values stay).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}

/// The smallest byte string greater than every key starting with `prefix`.
///
/// Keys are UTF-8, whose bytes never reach `0xFF`, so incrementing the last byte cannot
/// overflow and `[0xFF]` bounds every key (the empty prefix).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    match end.last_mut() {
        Some(last) => *last = last.saturating_add(1),
        None => end.push(0xFF),
    }
    end
}
