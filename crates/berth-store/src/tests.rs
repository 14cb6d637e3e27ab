//! Contract tests run against every backend, plus backend-specific ones (durability, group
//! commit, automatic compaction, bounded files).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{
    Event, KeyValue, ListOptions, ListResult, MemoryOptions, MemoryStore, Revision, SqliteOptions,
    SqliteStore, Store, StoreError, WatchStream,
};

const WAIT: Duration = Duration::from_secs(10);

async fn next(w: &mut WatchStream) -> Event {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("watch event in time")
        .expect("watch still open")
        .expect("watch event")
}

async fn crud<S: Store>(s: &S) {
    let base = s.current_revision().await.unwrap();
    let a = s.create("/pods/default/a", b"1".to_vec()).await.unwrap();
    assert_eq!(a.create_revision, base + 1);
    assert_eq!(a.mod_revision, base + 1);
    assert_eq!(s.current_revision().await.unwrap(), base + 1);
    assert_eq!(s.get("/pods/default/a").await.unwrap(), Some(a.clone()));
    assert!(s.get("/pods/default/missing").await.unwrap().is_none());

    let err = s
        .create("/pods/default/a", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(k) if k == "/pods/default/a"));
    // A failed write does not consume a revision.
    assert_eq!(s.current_revision().await.unwrap(), base + 1);

    let b = s
        .update("/pods/default/a", b"2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    assert_eq!(b.create_revision, a.create_revision);
    assert_eq!(b.mod_revision, base + 2);
    assert_eq!(b.value, b"2");

    let err = s
        .update("/pods/default/a", b"3".to_vec(), a.mod_revision)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict { expected, actual, .. } if expected == a.mod_revision && actual == b.mod_revision
    ));
    let err = s
        .update("/pods/default/nope", b"3".to_vec(), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));

    let err = s
        .delete("/pods/default/a", Some(a.mod_revision))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    let d = s
        .delete("/pods/default/a", Some(b.mod_revision))
        .await
        .unwrap();
    assert_eq!(d.value, b"2");
    assert_eq!(d.mod_revision, base + 3);
    assert_eq!(d.create_revision, a.create_revision);
    assert!(s.get("/pods/default/a").await.unwrap().is_none());
    let err = s.delete("/pods/default/a", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));

    // Re-creating gets a new create revision; unconditional delete works.
    let c = s.create("/pods/default/a", b"new".to_vec()).await.unwrap();
    assert_eq!(c.create_revision, base + 4);
    let d = s.delete("/pods/default/a", None).await.unwrap();
    assert_eq!(d.mod_revision, base + 5);
    assert_eq!(s.current_revision().await.unwrap(), base + 5);
}

async fn list_pagination<S: Store>(s: &S) {
    for i in 1..=5 {
        s.create(&format!("/a/{i}"), vec![i]).await.unwrap();
    }
    s.create("/ab", b"x".to_vec()).await.unwrap();
    s.create("/b/1", b"x".to_vec()).await.unwrap();
    s.create("/a", b"x".to_vec()).await.unwrap();
    let rev = s.current_revision().await.unwrap();

    let all = s.list("/a/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]);
    assert!(!all.more);
    assert_eq!(all.remaining, 0);
    assert_eq!(all.revision, rev);
    assert_eq!(s.count("/a/").await.unwrap(), 5);
    assert_eq!(s.count("/").await.unwrap(), 8);
    assert_eq!(s.count("").await.unwrap(), 8);
    assert_eq!(s.count("/zzz/").await.unwrap(), 0);

    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: None,
                limit: Some(2),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/1", "/a/2"]);
    assert!(page.more);
    assert_eq!(page.remaining, 3);

    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/a/2".into()),
                limit: Some(2),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/3", "/a/4"]);
    assert!(page.more);
    assert_eq!(page.remaining, 1);

    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/a/4".into()),
                limit: Some(2),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/5"]);
    assert!(!page.more);
    assert_eq!(page.remaining, 0);

    // Exactly `limit` items left: no more.
    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/a/3".into()),
                limit: Some(2),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(!page.more);

    // A cursor before the prefix starts at the prefix; limit 0 means all.
    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/".into()),
                limit: Some(0),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);

    let page = s
        .list(
            "/a/",
            ListOptions {
                start_after: Some("/a/5".into()),
                limit: None,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert!(!page.more);
}

/// Lists `prefix` as of `revision` (`limit` 0: all).
async fn list_at<S: Store>(
    s: &S,
    prefix: &str,
    revision: Revision,
    start_after: Option<&str>,
    limit: usize,
) -> Result<ListResult, StoreError> {
    s.list(
        prefix,
        ListOptions {
            start_after: start_after.map(str::to_owned),
            limit: Some(limit),
            revision: Some(revision),
        },
    )
    .await
}

/// Asserts that the whole of `prefix` at `revision` is exactly `expected`.
async fn assert_at<S: Store>(s: &S, prefix: &str, revision: Revision, expected: &[&KeyValue]) {
    let page = list_at(s, prefix, revision, None, 0).await.unwrap();
    let expected: Vec<KeyValue> = expected.iter().map(|kv| (*kv).clone()).collect();
    assert_eq!(
        page.items, expected,
        "list of {prefix} at revision {revision}"
    );
    assert_eq!(page.revision, revision);
    assert!(!page.more);
    assert_eq!(page.remaining, 0);
}

/// Lists at past revisions give the key-values (and their revisions) of that moment.
async fn list_at_past_revisions<S: Store>(s: &S) {
    let base = s
        .create("/mu/1", b"outside".to_vec())
        .await
        .unwrap()
        .mod_revision;
    let a = s.create("/mv/a", b"a".to_vec()).await.unwrap();
    let b = s.create("/mv/b", b"b".to_vec()).await.unwrap();
    let c = s.create("/mv/c", b"c".to_vec()).await.unwrap();
    let b2 = s
        .update("/mv/b", b"b2".to_vec(), b.mod_revision)
        .await
        .unwrap();
    // Writes outside the prefix, on both sides of it, are not listed.
    s.create("/mv", b"outside".to_vec()).await.unwrap();
    s.create("/mw/1", b"outside".to_vec()).await.unwrap();
    let c_deleted = s.delete("/mv/c", None).await.unwrap().mod_revision;
    let d = s.create("/mv/d", b"d".to_vec()).await.unwrap();
    // A key deleted then re-created: its older life is still visible at older revisions.
    let a_deleted = s.delete("/mv/a", None).await.unwrap().mod_revision;
    let a2 = s.create("/mv/a", b"a2".to_vec()).await.unwrap();
    let b3 = s
        .update("/mv/b", b"b3".to_vec(), b2.mod_revision)
        .await
        .unwrap();

    assert_at(s, "/mv/", base, &[]).await;
    assert_at(s, "/mv/", a.mod_revision, &[&a]).await;
    assert_at(s, "/mv/", b.mod_revision, &[&a, &b]).await;
    assert_at(s, "/mv/", c.mod_revision, &[&a, &b, &c]).await;
    assert_at(s, "/mv/", b2.mod_revision, &[&a, &b2, &c]).await;
    assert_at(s, "/mv/", b2.mod_revision + 1, &[&a, &b2, &c]).await;
    assert_at(s, "/mv/", c_deleted, &[&a, &b2]).await;
    assert_at(s, "/mv/", d.mod_revision, &[&a, &b2, &d]).await;
    assert_at(s, "/mv/", a_deleted, &[&b2, &d]).await;
    assert_at(s, "/mv/", a2.mod_revision, &[&a2, &b2, &d]).await;
    assert_at(s, "/mv/", b3.mod_revision, &[&a2, &b3, &d]).await;
    // At the current revision it is the current list.
    let now = s.current_revision().await.unwrap();
    assert_eq!(now, b3.mod_revision);
    let current = s.list("/mv/", ListOptions::default()).await.unwrap();
    assert_eq!(current.items, vec![a2.clone(), b3.clone(), d.clone()]);
    assert_eq!(current.revision, now);
    // A wider prefix sees the outside keys as they were.
    let wide = list_at(s, "/m", c.mod_revision, None, 0).await.unwrap();
    let keys: Vec<_> = wide.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/mu/1", "/mv/a", "/mv/b", "/mv/c"]);

    // Paging at a past revision: limit, cursor, more and remaining as for current lists.
    let page = list_at(s, "/mv/", d.mod_revision, None, 2).await.unwrap();
    assert_eq!(page.items, vec![a.clone(), b2.clone()]);
    assert!(page.more);
    assert_eq!(page.remaining, 1);
    let page = list_at(s, "/mv/", d.mod_revision, Some("/mv/a"), 1)
        .await
        .unwrap();
    assert_eq!(page.items, vec![b2.clone()]);
    assert!(page.more);
    assert_eq!(page.remaining, 1);
    let page = list_at(s, "/mv/", d.mod_revision, Some("/mv/b2"), 1)
        .await
        .unwrap();
    assert_eq!(page.items, vec![d.clone()]);
    assert!(!page.more);
    // A cursor before the prefix starts at the prefix; exactly `limit` left: no more.
    let page = list_at(s, "/mv/", c.mod_revision, Some("/"), 3)
        .await
        .unwrap();
    assert_eq!(page.items, vec![a.clone(), b.clone(), c.clone()]);
    assert!(!page.more);
    assert_eq!(page.remaining, 0);
    let page = list_at(s, "/mv/", c.mod_revision, Some("/mv/c"), 3)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert!(!page.more);

    // The future is refused.
    match list_at(s, "/mv/", now + 1, None, 0).await {
        Err(StoreError::FutureRevision(r)) => assert_eq!(r, now + 1),
        other => panic!("unexpected {other:?}"),
    }

    // After compaction the compacted revision itself and later ones are still readable.
    s.compact(c.mod_revision).await.unwrap();
    match list_at(s, "/mv/", b.mod_revision, None, 0).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, b.mod_revision);
            assert_eq!(compacted, c.mod_revision);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_at(s, "/mv/", c.mod_revision, &[&a, &b, &c]).await;
    assert_at(s, "/mv/", c_deleted, &[&a, &b2]).await;
    assert_at(s, "/mv/", a_deleted, &[&b2, &d]).await;
    s.compact(now).await.unwrap();
    assert_at(s, "/mv/", now, &[&a2, &b3, &d]).await;
    assert!(matches!(
        list_at(s, "/mv/", now - 1, None, 0).await,
        Err(StoreError::Compacted { .. })
    ));
}

/// Paging through a past revision while other writes change the same keys gives exactly the
/// snapshot of that revision.
async fn list_at_revision_pages_under_writes<S: Store + Clone>(s: &S) {
    let mut expected = Vec::new();
    for i in 0..60 {
        expected.push(s.create(&format!("/pg/{i:02}"), vec![i]).await.unwrap());
    }
    let at = s.current_revision().await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let s = s.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut round = 0u8;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round = round.wrapping_add(1);
                for i in (0..60).step_by(3) {
                    let key = format!("/pg/{i:02}");
                    match s.get(&key).await.unwrap() {
                        Some(kv) if round.is_multiple_of(2) => {
                            s.delete(&key, Some(kv.mod_revision)).await.unwrap();
                        }
                        Some(kv) => {
                            s.update(&key, vec![round], kv.mod_revision).await.unwrap();
                        }
                        None => {
                            s.create(&key, vec![round]).await.unwrap();
                        }
                    }
                    // New keys between the snapshot's ones.
                    s.create(&format!("/pg/{i:02}-{round}"), vec![]).await.ok();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // Let the writer make progress between pages.
        while s.current_revision().await.unwrap() < at + 20 * (pages + 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let page = list_at(s, "/pg/", at, cursor.as_deref(), 7).await.unwrap();
        assert_eq!(page.revision, at);
        pages += 1;
        let left = expected.len() - seen.len() - page.items.len();
        assert_eq!(page.remaining, left as i64);
        assert_eq!(page.more, left > 0);
        cursor = page.items.last().map(|kv| kv.key.clone());
        seen.extend(page.items);
        if !page.more {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    assert_eq!(pages, 9);
    assert_eq!(seen, expected);
    // The current state did move on meanwhile.
    assert_ne!(
        s.list("/pg/", ListOptions::default()).await.unwrap().items,
        expected
    );
}

async fn watch_replay_then_live<S: Store>(s: &S) {
    let k = |n: &str| format!("/w/{n}");
    let a = s.create(&k("a"), b"1".to_vec()).await.unwrap();
    let start = a.mod_revision;
    let a2 = s.update(&k("a"), b"2".to_vec(), start).await.unwrap();
    s.create("/other/x", b"x".to_vec()).await.unwrap();
    let b = s.create(&k("b"), b"b".to_vec()).await.unwrap();

    let mut w = s.watch("/w/", start).await.unwrap();
    // Replay: the update of a (with prev) and the creation of b, not /other.
    match next(&mut w).await {
        Event::Put { kv, prev } => {
            assert_eq!(kv, a2);
            assert_eq!(prev, Some(a.clone()));
        }
        other => panic!("unexpected {other:?}"),
    }
    match next(&mut w).await {
        Event::Put { kv, prev } => {
            assert_eq!(kv, b);
            assert_eq!(prev, None);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Live.
    let d = s.delete(&k("a"), None).await.unwrap();
    s.create("/other/y", b"y".to_vec()).await.unwrap();
    let c = s.create(&k("c"), b"c".to_vec()).await.unwrap();
    match next(&mut w).await {
        Event::Delete { prev, revision } => {
            assert_eq!(revision, d.mod_revision);
            assert_eq!(prev, d);
            assert_eq!(prev.value, b"2");
        }
        other => panic!("unexpected {other:?}"),
    }
    match next(&mut w).await {
        Event::Put { kv, .. } => assert_eq!(kv, c),
        other => panic!("unexpected {other:?}"),
    }

    // after == 0: only future events.
    let mut now = s.watch("/w/", 0).await.unwrap();
    let e = s.create(&k("e"), b"e".to_vec()).await.unwrap();
    assert_eq!(next(&mut now).await.revision(), e.mod_revision);
    assert_eq!(next(&mut w).await.revision(), e.mod_revision);
}

async fn watch_under_concurrency<S: Store + Clone>(s: &S) {
    // Watching after revision 0 would mean "from now on".
    let start = s.create("/seed", vec![]).await.unwrap().mod_revision;
    // A watcher started mid-stream must see every event after its revision exactly once.
    let mut early = s.watch("/cc/", start).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.create(&format!("/cc/{t}/{i}"), vec![0; 64])
                    .await
                    .unwrap();
            }
        }));
    }
    let mut mid = start;
    while mid == start {
        tokio::time::sleep(Duration::from_millis(1)).await;
        mid = s.current_revision().await.unwrap();
    }
    let mut late = s.watch("/cc/", mid).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let end = s.current_revision().await.unwrap();
    assert_eq!(end, start + 500);
    for (w, from) in [(&mut early, start), (&mut late, mid)] {
        let mut expected = from + 1;
        while expected <= end {
            assert_eq!(next(w).await.revision(), expected);
            expected += 1;
        }
    }
}

async fn watch_compacted<S: Store>(s: &S) {
    for i in 0..5 {
        s.create(&format!("/c/{i}"), vec![]).await.unwrap();
    }
    let rev = s.current_revision().await.unwrap();
    s.compact(rev - 2).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), rev - 2);
    // Compacting older is a no-op; the future is refused.
    s.compact(rev - 3).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), rev - 2);
    assert!(matches!(
        s.compact(rev + 1).await,
        Err(StoreError::FutureRevision(r)) if r == rev + 1
    ));

    match s.watch("/c/", rev - 3).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, rev - 3);
            assert_eq!(compacted, rev - 2);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("watch from a compacted revision succeeded"),
    }
    let mut w = s.watch("/c/", rev - 2).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), rev - 1);
    assert_eq!(next(&mut w).await.revision(), rev);
    // Current values survive compaction.
    assert_eq!(s.count("/c/").await.unwrap(), 5);
}

async fn concurrent_writers<S: Store + Clone>(s: &S) {
    let start = s.current_revision().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                let kv = s
                    .create(&format!("/cw/{t:03}/{i:02}"), vec![1; 16])
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for rev in t.await.unwrap() {
            assert!(rev > start);
            assert!(all.insert(rev), "revision {rev} given twice");
        }
    }
    assert_eq!(all.len(), 5000);
    assert_eq!(s.current_revision().await.unwrap(), start + 5000);
    assert_eq!(s.count("/cw/").await.unwrap(), 5000);
}

/// CAS races: of many concurrent updates against the same revision exactly one wins.
async fn cas_race<S: Store + Clone>(s: &S) {
    let kv = s.create("/race", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let s = s.clone();
        let expected = kv.mod_revision;
        tasks.push(tokio::spawn(async move {
            s.update("/race", vec![i], expected).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(s.current_revision().await.unwrap(), kv.mod_revision + 1);
}

/// A replay longer than one history page arrives whole and in order, then live events follow.
async fn watch_long_replay<S: Store + Clone>(s: &S) {
    // Watching after revision 0 would mean "from now on".
    let start = s.create("/seed", vec![]).await.unwrap().mod_revision;
    let mut tasks = Vec::new();
    for t in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                // Every fifth key is outside the watched prefix.
                let prefix = if i % 5 == 0 { "/other" } else { "/long" };
                s.create(&format!("{prefix}/{t}/{i}"), vec![])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = s.current_revision().await.unwrap();
    assert_eq!(end, start + 2500);
    let mut w = s.watch("/long/", start).await.unwrap();
    let live = s.create("/long/live", vec![]).await.unwrap();
    let mut seen = 0;
    let mut last = start;
    loop {
        let e = next(&mut w).await;
        assert!(e.key().starts_with("/long/"));
        assert!(e.revision() > last);
        last = e.revision();
        seen += 1;
        if e.revision() == live.mod_revision {
            break;
        }
    }
    assert_eq!(seen, 2001);
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&crate::MemoryStore::new()).await;
                }
            )*
        }
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let s = crate::SqliteStore::open(
                        &dir.path().join("db.sqlite"),
                        crate::SqliteOptions::default(),
                    )
                    .unwrap();
                    super::$name(&s).await;
                    s.close().await;
                }
            )*
        }
    };
}

contract_tests!(
    crud,
    list_pagination,
    watch_replay_then_live,
    watch_under_concurrency,
    watch_long_replay,
    watch_compacted,
    concurrent_writers,
    cas_race,
    list_at_past_revisions,
    list_at_revision_pages_under_writes,
);

/// A watcher that does not read while many batches pass resyncs from history and still sees
/// every event, in order.
async fn lagging_watcher_resyncs<S: Store>(s: &S) {
    // Watching after revision 0 would mean "from now on".
    let start = s.create("/seed", vec![]).await.unwrap().mod_revision;
    let mut w = s.watch("/lag/", start).await.unwrap();
    for i in 0..100 {
        s.create(&format!("/lag/{i}"), vec![]).await.unwrap();
    }
    for i in 1..=100 {
        assert_eq!(next(&mut w).await.revision(), start + i);
    }
}

/// A lagging watcher whose history is gone gets `Compacted` as its last item.
async fn lagging_watcher_compacted<S: Store>(s: &S) {
    // Watching after revision 0 would mean "from now on".
    let start = s.create("/seed", vec![]).await.unwrap().mod_revision;
    let w = s.watch("/lag/", start).await.unwrap();
    for i in 0..100 {
        s.create(&format!("/lag/{i}"), vec![]).await.unwrap();
    }
    let rev = s.current_revision().await.unwrap();
    s.compact(rev - 10).await.unwrap();
    let items: Vec<_> = tokio::time::timeout(WAIT, w.collect::<Vec<_>>())
        .await
        .unwrap();
    let (last, events) = items.split_last().unwrap();
    assert!(matches!(last, Err(StoreError::Compacted { .. })));
    // Whatever was delivered before is in order without gaps.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.as_ref().unwrap().revision(), start + 1 + i as i64);
    }
}

#[tokio::test]
async fn memory_lagging_watcher() {
    let opts = MemoryOptions {
        history_limit: 1000,
        watch_buffer: 4,
    };
    lagging_watcher_resyncs(&MemoryStore::with_options(opts.clone())).await;
    lagging_watcher_compacted(&MemoryStore::with_options(opts)).await;
}

#[tokio::test]
async fn memory_history_limit_compacts() {
    let s = MemoryStore::with_options(MemoryOptions {
        history_limit: 10,
        watch_buffer: 16,
    });
    for i in 0..30 {
        s.create(&format!("/h/{i}"), vec![]).await.unwrap();
    }
    assert_eq!(s.compacted_revision().await.unwrap(), 20);
    assert!(matches!(
        s.watch("/h/", 19).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut w = s.watch("/h/", 20).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), 21);
    // Lists at past revisions follow the same automatic compaction.
    assert!(matches!(
        list_at(&s, "/h/", 19, None, 0).await,
        Err(StoreError::Compacted {
            requested: 19,
            compacted: 20
        })
    ));
    assert_eq!(
        list_at(&s, "/h/", 20, None, 0).await.unwrap().items.len(),
        20
    );
}

fn sqlite_opts() -> SqliteOptions {
    SqliteOptions {
        compaction_interval: Duration::ZERO,
        ..SqliteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lagging_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        watch_buffer: 4,
        ..sqlite_opts()
    };
    let s = SqliteStore::open(&dir.path().join("a.db"), opts.clone()).unwrap();
    lagging_watcher_resyncs(&s).await;
    let s = SqliteStore::open(&dir.path().join("b.db"), opts).unwrap();
    lagging_watcher_compacted(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    let a = s.create("/k/a", b"a".to_vec()).await.unwrap();
    let b = s.create("/k/b", b"b".to_vec()).await.unwrap();
    let b2 = s
        .update("/k/b", b"b2".to_vec(), b.mod_revision)
        .await
        .unwrap();
    let c = s.create("/k/c", b"c".to_vec()).await.unwrap();
    s.delete("/k/c", Some(c.mod_revision)).await.unwrap();
    let rev = s.current_revision().await.unwrap();
    drop(s);

    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.get("/k/a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get("/k/b").await.unwrap(), Some(b2.clone()));
    assert!(s.get("/k/c").await.unwrap().is_none());
    // Lists at past revisions too.
    assert_at(&s, "/k/", b.mod_revision, &[&a, &b]).await;
    assert_at(&s, "/k/", c.mod_revision, &[&a, &b2, &c]).await;
    assert_at(&s, "/k/", rev, &[&a, &b2]).await;
    // History survives too.
    let mut w = s.watch("/k/", a.mod_revision).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), b.mod_revision);

    // Compact everything: the revision counter must still survive.
    s.compact(rev).await.unwrap();
    s.close().await;
    assert!(matches!(
        s.create("/k/z", vec![]).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(s.get("/k/a").await, Err(StoreError::Closed)));
    // Closing ends watches.
    let rest: Vec<_> = tokio::time::timeout(WAIT, w.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(rest.len() <= 3);
    drop(s);

    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.compacted_revision().await.unwrap(), rev);
    let d = s.create("/k/d", vec![]).await.unwrap();
    assert_eq!(d.mod_revision, rev + 1);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite"), sqlite_opts()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.create(&format!("/g/{t}/{i}"), vec![0; 100])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.stats();
    assert_eq!(stats.writes, 2000);
    assert!(
        stats.commits * 5 < stats.writes,
        "group commit did not batch: {stats:?}"
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_new_database_uses_incremental_vacuum_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    s.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let auto_vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "auto_vacuum must be INCREMENTAL");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A database made before the `log(key, rev)` index existed opens, gets the index and serves
/// lists at past revisions from the history it already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_without_log_index_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    let a = s.create("/u/a", b"a".to_vec()).await.unwrap();
    let a2 = s
        .update("/u/a", b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    s.close().await;
    drop(s);
    let index_count = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'log_key_rev'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP INDEX log_key_rev").unwrap();
        assert_eq!(index_count(&conn), 0);
    }
    let s = SqliteStore::open(&path, sqlite_opts()).unwrap();
    assert_at(&s, "/u/", a.mod_revision, &[&a]).await;
    assert_at(&s, "/u/", a2.mod_revision, &[&a2]).await;
    s.close().await;
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(index_count(&conn), 1);
}

/// Under churn with automatic compaction, the database file and the WAL stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_stay_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let wal = dir.path().join("db.sqlite-wal");
    let s = SqliteStore::open(
        &path,
        SqliteOptions {
            compaction_interval: Duration::from_millis(25),
            retain_revisions: 200,
            retain_duration: Duration::from_secs(1),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    const KEYS: usize = 16;
    const UPDATES: usize = 20_000;
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/churn/{k}");
            let mut rev = s.create(&key, vec![0; 4096]).await.unwrap().mod_revision;
            for i in 0..UPDATES / KEYS {
                rev = s
                    .update(&key, vec![(i % 251) as u8; 4096], rev)
                    .await
                    .unwrap()
                    .mod_revision;
            }
        }));
    }
    let limit = 8 << 20;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut max_db = 0;
    let mut max_wal = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        max_db = max_db.max(size(&path));
        max_wal = max_wal.max(size(&wal));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let a last compaction tick run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = s.stats();
    assert!(stats.compactions > 0, "{stats:?}");
    assert!(s.compacted_revision().await.unwrap() > 0);
    max_db = max_db.max(size(&path));
    max_wal = max_wal.max(size(&wal));
    assert!(max_db < limit, "database file grew to {max_db} bytes");
    assert!(max_wal < limit, "WAL grew to {max_wal} bytes");
    assert_eq!(s.count("/churn/").await.unwrap(), KEYS as i64);
    s.close().await;
}

/// Dropping the last handle stops the writer and ends watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_drop_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite"), sqlite_opts()).unwrap();
    let w = s.watch("/", 0).await.unwrap();
    drop(s);
    let rest: Vec<_> = tokio::time::timeout(WAIT, w.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(rest.is_empty());
}

/// Shared so the compile checks that both backends are usable as `Arc<dyn Store>`.
#[test]
fn stores_are_object_safe() {
    let _m: Arc<dyn Store> = Arc::new(MemoryStore::new());
    fn assert_store<T: Store + Clone>() {}
    assert_store::<SqliteStore>();
}

/// Prints write throughput with 1 and 100 concurrent writers (`--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn sqlite_throughput_scales_with_concurrency() {
    for writers in [1usize, 10, 100] {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db.sqlite"), SqliteOptions::default()).unwrap();
        let total = 3000;
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for t in 0..writers {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..total / writers {
                    s.create(&format!("/t/{t}/{i}"), vec![0; 512])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{writers} writers: {:.0} writes/s, {:?}",
            total as f64 / secs,
            s.stats()
        );
        s.close().await;
    }
}
