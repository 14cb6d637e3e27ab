//! The durable, default backend of the [`Store`] contract: one SQLite database in WAL mode.
//!
//! Writes go to a single writer thread that owns the write connection. It takes every request
//! waiting (up to [`SqliteOptions::max_batch`]), applies them in one transaction — each write
//! gets its own revision, compare-and-swap checks run in order — and commits once, so one
//! fsync (`synchronous=FULL`) covers the whole batch (group commit). Only then are the
//! callers answered and the events published to watchers.
//!
//! Reads run on a small pool of read-only connections through `spawn_blocking`; a WAL reader
//! sees every transaction committed before it started, hence every acknowledged write.
//!
//! The writer thread also compacts on its own every [`SqliteOptions::compaction_interval`]:
//! it forgets history beyond the retention window, then vacuums freed pages and truncates the
//! WAL so the files stay bounded under churn.
//!
//! Schema: `kv` holds current values, `log` one row per revision (history for watch replay,
//! with the previous value, create and mod revisions), `meta` the current and compacted
//! revisions. An index on `log(key, rev)` serves lists at a past revision: a key written after
//! revision R had, at R, the previous value of its earliest write after R (or did not exist if
//! that write created it); a key not written after R has its current value. Compaction removes
//! only rows at or before the compacted revision, so this holds for any R not older than it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};
use tokio::sync::{broadcast, oneshot, Semaphore};

use crate::watch::{self, Batch, EventSource, History};
use crate::{
    prefix_end, Event, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream,
};

/// Options of a [`SqliteStore`]. `SqliteOptions::default()` is full durability with
/// production retention.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Most concurrent read connections.
    pub read_connections: usize,
    /// Live batches buffered per watcher before it lags and resyncs from history.
    pub watch_buffer: usize,
    /// How often history is compacted automatically; `Duration::ZERO` disables it.
    pub compaction_interval: Duration,
    /// Automatic compaction keeps at most this many of the newest revisions...
    pub retain_revisions: i64,
    /// ...and forgets revisions older than this (measured at compaction ticks).
    pub retain_duration: Duration,
    /// The WAL file is truncated to at most this many bytes after each checkpoint.
    pub wal_size_limit: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            read_connections: 4,
            watch_buffer: 1024,
            compaction_interval: Duration::from_secs(30),
            retain_revisions: 10_000,
            retain_duration: Duration::from_secs(5 * 60),
            wal_size_limit: 4 << 20,
        }
    }
}

/// Counters of a [`SqliteStore`], since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Successful writes (creates, updates, deletes).
    pub writes: u64,
    /// Committed write transactions (each one fsync); `writes / commits` is the batch size.
    pub commits: u64,
    /// Compactions that forgot history.
    pub compactions: u64,
}

/// The SQLite-backed [`Store`]. Cloning gives another handle to the same database; the writer
/// stops when the last handle is dropped or on [`SqliteStore::close`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    /// Weak so that the channel closes (and watches end) when the writer thread stops.
    events: broadcast::WeakSender<Batch>,
    readers: Arc<ReadPool>,
    shared: Arc<Shared>,
}

/// State the writer thread publishes to readers.
#[derive(Default)]
struct Shared {
    revision: AtomicI64,
    compacted: AtomicI64,
    closed: AtomicBool,
    writes: AtomicU64,
    commits: AtomicU64,
    compactions: AtomicU64,
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Write(WriteOp, Reply<KeyValue>),
    Compact(Revision, Reply<()>),
    Shutdown(oneshot::Sender<()>),
}

fn backend(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |err| StoreError::Backend(format!("failed to {what}: {err}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    op INTEGER NOT NULL,
    value BLOB,
    create_rev INTEGER NOT NULL,
    prev_value BLOB,
    prev_mod_rev INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// The key-values with a key in `[?1, ?2)` as they were at revision `?3`, as
/// `key, value, create_rev, mod_rev`. The two sides have distinct keys: a `kv` row last written
/// at or before `?3` has no log row after it. From the log, each key's earliest row after `?3`
/// (no earlier row after `?3` exists) gives its previous state, unless that row created the key
/// (`prev_mod_rev = 0`: the key did not exist then).
const AT_REVISION: &str = "
SELECT key, value, create_rev, mod_rev FROM kv
 WHERE key >= ?1 AND key < ?2 AND mod_rev <= ?3
UNION ALL
SELECT l.key, l.prev_value, l.create_rev, l.prev_mod_rev FROM log AS l
 WHERE l.key >= ?1 AND l.key < ?2 AND l.rev > ?3 AND l.prev_mod_rev > 0
   AND NOT EXISTS (SELECT 1 FROM log AS e WHERE e.key = l.key AND e.rev > ?3 AND e.rev < l.rev)";

/// The smallest byte string greater than `key`: `key > k` is `key >= successor(k)`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

/// How long a write waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a checkpoint waits for readers; writers are queued behind it.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

const OP_PUT: i64 = 0;
const OP_DELETE: i64 = 1;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    ///
    /// This does blocking file IO; from async code prefer [`SqliteStore::open_async`].
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_writer(path, &opts)?;
        let (revision, compacted) = read_revisions(&mut conn)?;
        let shared = Arc::new(Shared::default());
        shared.revision.store(revision, Ordering::SeqCst);
        shared.compacted.store(compacted, Ordering::SeqCst);

        let (events, _) = broadcast::channel(opts.watch_buffer.max(1));
        let weak_events = events.downgrade();
        let (commands, command_rx) = mpsc::channel();
        let readers = Arc::new(ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(opts.read_connections.max(1))),
        });
        let writer = Writer {
            conn,
            shared: Arc::clone(&shared),
            events,
            revision,
            compacted,
            samples: VecDeque::new(),
            writes_since_checkpoint: 0,
            opts,
        };
        std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer.run(command_rx))
            .map_err(|e| StoreError::Backend(format!("failed to start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                events: weak_events,
                readers,
                shared,
            }),
        })
    }

    /// [`SqliteStore::open`] on a blocking thread.
    pub async fn open_async(path: &Path, opts: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open(&path, opts))
            .await
            .map_err(|e| StoreError::Backend(format!("failed to open the datastore: {e}")))?
    }

    /// Stops the writer after the writes already queued and ends every watch. Later calls
    /// fail with [`StoreError::Closed`]. Idempotent.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown(tx)).is_ok() {
            // An error means the writer is already gone, which is what we want.
            let _ = rx.await;
        }
        self.inner.shared.closed.store(true, Ordering::SeqCst);
        self.inner.readers.clear();
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> SqliteStats {
        let s = &self.inner.shared;
        SqliteStats {
            writes: s.writes.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            compactions: s.compactions.load(Ordering::Relaxed),
        }
    }

    /// [`Store::list`] at a past `revision`, in one read transaction: the `kv` rows last written
    /// at or before it merged, in key order, with the state the `log` gives keys written after
    /// it. Both sides stream from indexes, so the limit bounds the work of the page itself.
    async fn list_at(
        &self,
        prefix: &str,
        opts: ListOptions,
        revision: Revision,
    ) -> Result<ListResult, StoreError> {
        let hi = prefix_end(prefix);
        let lo = match opts.start_after {
            Some(after) if after.as_str() >= prefix => successor(after.into_bytes()),
            _ => prefix.as_bytes().to_vec(),
        };
        let limit = opts
            .limit
            .filter(|l| *l > 0)
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or(-1);
        self.inner
            .read(move |tx| {
                let current = meta(tx, "revision")?;
                let compacted = meta(tx, "compacted")?;
                if revision > current {
                    return Err(StoreError::FutureRevision(revision));
                }
                if revision < compacted {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        compacted,
                    });
                }
                let items = tx
                    .prepare_cached(&format!("{AT_REVISION} ORDER BY 1 LIMIT ?4"))
                    .and_then(|mut stmt| {
                        stmt.query_map(params![lo, hi, revision, limit], kv_from_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("list keys at a past revision"))?;
                let remaining = match items.last() {
                    Some(last) if limit > 0 && items.len() as i64 == limit => {
                        let after = successor(last.key.as_bytes().to_vec());
                        tx.prepare_cached(&format!("SELECT count(*) FROM ({AT_REVISION})"))
                            .and_then(|mut stmt| {
                                stmt.query_row(params![after, hi, revision], |r| r.get(0))
                            })
                            .map_err(backend("count the remaining keys at a past revision"))?
                    }
                    _ => 0,
                };
                Ok(ListResult {
                    items,
                    more: remaining > 0,
                    remaining,
                    revision,
                })
            })
            .await
    }

    async fn write(&self, op: WriteOp) -> Result<KeyValue, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Write(op, tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn open_writer(path: &Path, opts: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend("open the database"))?;
    // auto_vacuum only takes effect before the first table exists, so it comes first.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(backend("set auto_vacuum"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(backend("enable WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "failed to enable WAL mode: journal mode is {mode}"
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = {};",
        opts.wal_size_limit.max(0)
    ))
    .map_err(backend("configure the database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(backend("configure the database"))?;
    conn.execute_batch(SCHEMA)
        .map_err(backend("create the schema"))?;
    Ok(conn)
}

/// The current and compacted revisions stored in the database.
fn read_revisions(conn: &mut Connection) -> Result<(Revision, Revision), StoreError> {
    let tx = conn.transaction().map_err(backend("read the revisions"))?;
    let stored = meta(&tx, "revision")?;
    let compacted = meta(&tx, "compacted")?;
    let logged: Option<Revision> = tx
        .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))
        .map_err(backend("read the newest revision"))?;
    Ok((stored.max(logged.unwrap_or(0)), compacted))
}

fn meta(conn: &Connection, name: &str) -> Result<Revision, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map_err(backend("read the store metadata"))
    .map(|v| v.unwrap_or(0))
}

/// Read-only connections, opened on demand, at most `permits` at once.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend("open a read connection"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(backend("configure a read connection"))?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Inner {
    /// Runs `f` in a read transaction on a pooled connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.take()?;
            let result = conn
                .transaction()
                .map_err(backend("begin a read"))
                .and_then(|tx| f(&tx));
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("failed to run a read: {e}")))?
    }
}

fn key_of(row: &Row<'_>, idx: usize) -> rusqlite::Result<String> {
    let bytes: Vec<u8> = row.get(idx)?;
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_of(row, 0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let revision: Revision = row.get(0)?;
    let key = key_of(row, 1)?;
    let op: i64 = row.get(2)?;
    let value: Option<Vec<u8>> = row.get(3)?;
    let create_revision: Revision = row.get(4)?;
    let prev_value: Option<Vec<u8>> = row.get(5)?;
    let prev_mod: Revision = row.get(6)?;
    if op == OP_DELETE {
        return Ok(Event::Delete {
            prev: KeyValue {
                key,
                value: prev_value.unwrap_or_default(),
                create_revision,
                mod_revision: revision,
            },
            revision,
        });
    }
    let prev = match prev_value {
        Some(value) if prev_mod > 0 => Some(KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: prev_mod,
        }),
        _ => None,
    };
    Ok(Event::Put {
        kv: KeyValue {
            key,
            value: value.unwrap_or_default(),
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
}

#[async_trait::async_trait]
impl EventSource for Inner {
    fn subscribe(&self) -> Option<broadcast::Receiver<Batch>> {
        self.events.upgrade().map(|tx| tx.subscribe())
    }

    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<History, StoreError> {
        let lo = prefix.as_bytes().to_vec();
        let hi = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |tx| {
            let revision = meta(tx, "revision")?;
            let compacted = meta(tx, "compacted")?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted,
                });
            }
            let mut stmt = tx
                .prepare_cached(
                    // The unary `+` keeps the planner on the revision order (the primary key)
                    // rather than the `log(key, rev)` index, which would need a sort.
                    "SELECT rev, key, op, value, create_rev, prev_value, prev_mod_rev FROM log
                     WHERE rev > ?1 AND +key >= ?2 AND +key < ?3 ORDER BY rev LIMIT ?4",
                )
                .map_err(backend("read the history"))?;
            let events = stmt
                .query_map(params![after, lo, hi, limit], event_from_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend("read the history"))?;
            Ok(History { events, revision })
        })
        .await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.as_bytes().to_vec();
        self.inner
            .read(move |tx| {
                tx.prepare_cached("SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1")
                    .and_then(|mut stmt| stmt.query_row([key], kv_from_row).optional())
                    .map_err(backend("read a key"))
            })
            .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        if let Some(revision) = opts.revision {
            return self.list_at(prefix, opts, revision).await;
        }
        let hi = prefix_end(prefix);
        // Start strictly after the cursor when it is inside the prefix range, else at the prefix.
        let (lo, exclusive) = match opts.start_after {
            Some(after) if after.as_str() >= prefix => (after.into_bytes(), true),
            _ => (prefix.as_bytes().to_vec(), false),
        };
        let limit = opts
            .limit
            .filter(|l| *l > 0)
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or(-1);
        self.inner
            .read(move |tx| {
                let revision = meta(tx, "revision")?;
                let sql = if exclusive {
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT ?3"
                } else {
                    "SELECT key, value, create_rev, mod_rev FROM kv
                     WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3"
                };
                let items = tx
                    .prepare_cached(sql)
                    .and_then(|mut stmt| {
                        stmt.query_map(params![lo, hi, limit], kv_from_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("list keys"))?;
                let remaining = match items.last() {
                    Some(last) if limit > 0 && items.len() as i64 == limit => tx
                        .prepare_cached("SELECT count(*) FROM kv WHERE key > ?1 AND key < ?2")
                        .and_then(|mut stmt| {
                            stmt.query_row(params![last.key.as_bytes(), hi], |r| r.get(0))
                        })
                        .map_err(backend("count the remaining keys"))?,
                    _ => 0,
                };
                Ok(ListResult {
                    items,
                    more: remaining > 0,
                    remaining,
                    revision,
                })
            })
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64, StoreError> {
        let lo = prefix.as_bytes().to_vec();
        let hi = prefix_end(prefix);
        self.inner
            .read(move |tx| {
                tx.prepare_cached("SELECT count(*) FROM kv WHERE key >= ?1 AND key < ?2")
                    .and_then(|mut stmt| stmt.query_row(params![lo, hi], |r| r.get(0)))
                    .map_err(backend("count keys"))
            })
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(WriteOp::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        self.write(WriteOp::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(WriteOp::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if self.inner.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        watch::watch(&self.inner, prefix, after).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.shared.revision.load(Ordering::SeqCst))
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.shared.compacted.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Compact(revision, tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer thread: owns the write connection, the revision counter and compaction.
struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    events: broadcast::Sender<Batch>,
    /// The newest committed revision.
    revision: Revision,
    compacted: Revision,
    /// `(time, revision)` at past compaction ticks, to find the revision of a past moment.
    samples: VecDeque<(Instant, Revision)>,
    writes_since_checkpoint: u64,
    opts: SqliteOptions,
}

/// The outcome of one write inside a batch: `Err` is the caller's error (the write is skipped).
type Applied = Result<(KeyValue, Event), StoreError>;

impl Writer {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let interval = self.opts.compaction_interval;
        let mut next_tick = Instant::now() + interval;
        let mut shutdown = None;
        loop {
            let first = if interval.is_zero() {
                match commands.recv() {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvError) => break,
                }
            } else {
                match commands.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.auto_compact();
                        next_tick = Instant::now() + interval;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            // Take every write already waiting, up to the cap; a control command ends the batch.
            let mut batch = Vec::new();
            let mut control = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Write(op, reply) => batch.push((op, reply)),
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if batch.len() < self.opts.max_batch.max(1) {
                    next = commands.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            match control {
                Some(Command::Compact(revision, reply)) => {
                    let _ = reply.send(self.compact(revision));
                }
                Some(Command::Shutdown(reply)) => {
                    shutdown = Some(reply);
                    break;
                }
                Some(Command::Write(..)) | None => {}
            }
            // Under steady load the receive never times out, so check the deadline here too.
            if !interval.is_zero() && Instant::now() >= next_tick {
                self.auto_compact();
                next_tick = Instant::now() + interval;
            }
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        // Closing the connection and dropping the sender ends every watch.
        drop(self);
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Applies `batch` in one transaction and commits once, then answers and publishes.
    fn commit_batch(&mut self, batch: Vec<(WriteOp, Reply<KeyValue>)>) {
        let start = self.revision;
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcome = self.apply_batch(&ops);
        match outcome {
            Ok((results, next)) => {
                let mut events = Vec::with_capacity(results.len());
                let mut answers = Vec::with_capacity(results.len());
                for result in results {
                    match result {
                        Ok((kv, event)) => {
                            events.push(event);
                            answers.push(Ok(kv));
                        }
                        Err(err) => answers.push(Err(err)),
                    }
                }
                if next > start {
                    self.revision = next;
                    self.shared.revision.store(next, Ordering::SeqCst);
                    self.shared
                        .writes
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    self.writes_since_checkpoint += events.len() as u64;
                    // Publish before answering: a caller that saw its write acknowledged finds
                    // the event queued for every watcher already subscribed.
                    let _ = self.events.send(Arc::new(events));
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "datastore write batch failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(err.to_string())));
                }
            }
        }
    }

    /// Runs the batch in one transaction; an `Err` rolls everything back.
    fn apply_batch(&mut self, ops: &[WriteOp]) -> Result<(Vec<Applied>, Revision), String> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| format!("failed to begin a write transaction: {e}"))?;
        let mut next = self.revision;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let applied =
                apply(&tx, op, next + 1).map_err(|e| format!("failed to apply a write: {e}"))?;
            if applied.is_ok() {
                next += 1;
            }
            results.push(applied);
        }
        if next > self.revision {
            tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [next])
                .map_err(|e| format!("failed to record the revision: {e}"))?;
            tx.commit()
                .map_err(|e| format!("failed to commit writes: {e}"))?;
        }
        // Without a successful write the transaction rolls back on drop: nothing to fsync.
        Ok((results, next))
    }

    fn compact(&mut self, revision: Revision) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision(revision));
        }
        if revision <= self.compacted {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction()
            .map_err(backend("begin a compaction"))?;
        tx.execute("DELETE FROM log WHERE rev <= ?1", [revision])
            .map_err(backend("delete compacted history"))?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [revision],
        )
        .map_err(backend("record the compacted revision"))?;
        tx.commit().map_err(backend("commit a compaction"))?;
        self.compacted = revision;
        self.shared.compacted.store(revision, Ordering::SeqCst);
        self.shared.compactions.fetch_add(1, Ordering::Relaxed);
        self.shrink_files()
    }

    /// Returns freed pages to the file system and truncates the WAL.
    fn shrink_files(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA incremental_vacuum;")
            .map_err(backend("vacuum free pages"))?;
        // A TRUNCATE checkpoint waits for readers of old WAL frames; writes queue meanwhile,
        // so wait briefly only. Busy is not an error: the next tick retries.
        self.conn
            .busy_timeout(CHECKPOINT_BUSY_TIMEOUT)
            .map_err(backend("configure the checkpoint"))?;
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(backend("checkpoint the WAL"));
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(backend("configure the database"))?;
        if checkpoint? != 0 {
            tracing::debug!("WAL checkpoint was busy, retrying at the next compaction tick");
        }
        self.writes_since_checkpoint = 0;
        Ok(())
    }

    /// A compaction tick: forgets revisions beyond the retention window.
    fn auto_compact(&mut self) {
        let now = Instant::now();
        self.samples.push_back((now, self.revision));
        let mut by_age = 0;
        while let Some(&(at, revision)) = self.samples.front() {
            if now.duration_since(at) < self.opts.retain_duration {
                break;
            }
            by_age = revision;
            self.samples.pop_front();
        }
        let by_count = self.revision - self.opts.retain_revisions.max(0);
        let target = by_age.max(by_count).min(self.revision);
        let result = if target > self.compacted {
            self.compact(target)
        } else if self.writes_since_checkpoint > 0 {
            self.shrink_files()
        } else {
            Ok(())
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "automatic datastore compaction failed");
        }
    }
}

/// Applies one write at `revision`. The outer error is a database failure (the batch fails),
/// the inner one the caller's (not found, conflict...).
fn apply(tx: &Transaction<'_>, op: &WriteOp, revision: Revision) -> rusqlite::Result<Applied> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let current = tx
        .prepare_cached("SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?1")?
        .query_row([key.as_bytes()], kv_from_row)
        .optional()?;
    match (op, current) {
        (WriteOp::Create { .. }, Some(_)) => Ok(Err(StoreError::AlreadyExists(key.clone()))),
        (WriteOp::Create { value, .. }, None) => {
            tx.prepare_cached(
                "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![key.as_bytes(), value, revision])?;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, op, value, create_rev, prev_value, prev_mod_rev)
                 VALUES (?1, ?2, ?3, ?4, ?1, NULL, 0)",
            )?
            .execute(params![revision, key.as_bytes(), OP_PUT, value])?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            };
            let event = Event::Put {
                kv: kv.clone(),
                prev: None,
            };
            Ok(Ok((kv, event)))
        }
        (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
            Ok(Err(StoreError::NotFound(key.clone())))
        }
        (WriteOp::Update { expected, .. }, Some(prev)) if prev.mod_revision != *expected => {
            Ok(Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                actual: prev.mod_revision,
            }))
        }
        (
            WriteOp::Delete {
                expected: Some(expected),
                ..
            },
            Some(prev),
        ) if prev.mod_revision != *expected => Ok(Err(StoreError::Conflict {
            key: key.clone(),
            expected: *expected,
            actual: prev.mod_revision,
        })),
        (WriteOp::Update { value, .. }, Some(prev)) => {
            tx.prepare_cached("UPDATE kv SET value = ?2, mod_rev = ?3 WHERE key = ?1")?
                .execute(params![key.as_bytes(), value, revision])?;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, op, value, create_rev, prev_value, prev_mod_rev)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                revision,
                key.as_bytes(),
                OP_PUT,
                value,
                prev.create_revision,
                prev.value,
                prev.mod_revision
            ])?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.create_revision,
                mod_revision: revision,
            };
            let event = Event::Put {
                kv: kv.clone(),
                prev: Some(prev),
            };
            Ok(Ok((kv, event)))
        }
        (WriteOp::Delete { .. }, Some(prev)) => {
            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key.as_bytes()])?;
            tx.prepare_cached(
                "INSERT INTO log (rev, key, op, value, create_rev, prev_value, prev_mod_rev)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6)",
            )?
            .execute(params![
                revision,
                key.as_bytes(),
                OP_DELETE,
                prev.create_revision,
                prev.value,
                prev.mod_revision
            ])?;
            let deleted = KeyValue {
                mod_revision: revision,
                ..prev
            };
            let event = Event::Delete {
                prev: deleted.clone(),
                revision,
            };
            Ok(Ok((deleted, event)))
        }
    }
}
