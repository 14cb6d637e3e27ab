//! Watch: streams ADDED/MODIFIED/DELETED (and BOOKMARK) events of a collection as
//! newline-delimited JSON, with selectors, initial events, bookmarks and timeouts. Watchers
//! of a collection share one feed of decoded events ([`cache`]); each event's line is
//! encoded once for all of them, and a watcher sends the events ready at once in one chunk.

mod cache;

pub use cache::Feeds;

use crate::handlers::{table_of, Body, Format};
use crate::objects::{decode, ListQuery, Objects};
use crate::request::Query;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use berth_api::registry::ResourceInfo;
use berth_store::{Event, Revision, WatchStream};
use bytes::{Bytes, BytesMut};
use cache::{Shared, Subscription};
use futures::{FutureExt, StreamExt};
use http::{header, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    name: Option<String>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let name_ok = match &self.name {
            Some(n) => obj.pointer("/metadata/name").and_then(Value::as_str) == Some(n.as_str()),
            None => true,
        };
        name_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// True when every object matches (no name, no selectors).
    fn everything(&self) -> bool {
        self.name.is_none() && self.labels.is_empty() && self.fields.is_empty()
    }
}

/// Most bytes of events gathered into one chunk of the response.
const CHUNK: usize = 64 << 10;

/// `{"type": kind, "object": object}` and a newline.
fn encode_line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut line = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn event_line(kind: &str, object: Value, r: &ResourceInfo, format: Format, q: &Query) -> Bytes {
    let object = if format == Format::Table && kind != "BOOKMARK" && kind != "ERROR" {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        table_of(
            r,
            std::slice::from_ref(&object),
            json!({"resourceVersion": rv}),
            q,
        )
    } else {
        object
    };
    encode_line(kind, &object)
}

fn bookmark(r: &ResourceInfo, revision: Revision, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta})
}

/// Starts a watch and returns the streaming response.
pub async fn serve(
    objects: Objects,
    r: &'static ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r)?;
    let filter = Filter {
        labels,
        fields,
        name: name.map(str::to_string),
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout =
        Duration::from_secs(q.int("timeoutSeconds")?.filter(|t| *t > 0).unwrap_or(1800) as u64);
    let rv = q.int("resourceVersion")?.unwrap_or(0);
    let send_initial = match q.get("sendInitialEvents") {
        Some("true") => true,
        Some(_) => false,
        None => rv == 0,
    };
    if q.get("sendInitialEvents") == Some("true")
        && q.get("resourceVersionMatch") != Some("NotOlderThan")
    {
        return Err(ApiError::invalid(
            r,
            "",
            vec![crate::status::Cause {
                reason: "FieldValueNotSupported".into(),
                message: "Unsupported value: \"\": supported values: \"NotOlderThan\"".into(),
                field: "resourceVersionMatch".into(),
            }],
        ));
    }
    let prefix = crate::objects::prefix(r, namespace);

    // The initial state, then changes after the revision it was read at.
    let mut initial = Vec::new();
    let start = if send_initial {
        let page = objects
            .list(
                r,
                namespace,
                &ListQuery::all(&filter.labels, &filter.fields),
            )
            .await?;
        let at = page.resource_version.max(rv);
        initial = page
            .items
            .into_iter()
            .filter(|o| filter.matches(o))
            .collect();
        at
    } else {
        rv
    };
    let start = if start == 0 {
        objects.store.current_revision().await?
    } else {
        start
    };
    let mut source = Source::start(&objects, r, &prefix, start).await?;

    let (tx, rx) = mpsc::channel::<Bytes>(128);
    let q = q.clone();
    let explicit_initial = q.get("sendInitialEvents") == Some("true");
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last = start;
        for obj in initial {
            if tx
                .send(event_line("ADDED", obj, r, format, &q))
                .await
                .is_err()
            {
                return;
            }
        }
        if explicit_initial
            && bookmarks
            && tx
                .send(event_line(
                    "BOOKMARK",
                    bookmark(r, start, true),
                    r,
                    format,
                    &q,
                ))
                .await
                .is_err()
        {
            return;
        }
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let view = View {
            r,
            prefix: &prefix,
            filter: &filter,
            format,
            q: &q,
        };
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(event_line("BOOKMARK", bookmark(r, last, false), r, format, &q)).await.is_err() {
                        return;
                    }
                }
                next = source.next(&objects, r, &prefix, last) => {
                    let mut chunk = BytesMut::new();
                    let mut end = false;
                    let mut item = next;
                    // The first event, then those ready at once, up to a chunk.
                    loop {
                        match item {
                            None => {
                                end = true;
                                break;
                            }
                            Some(Err(e)) => {
                                chunk.extend_from_slice(&event_line("ERROR", e.to_status(), r, format, &q));
                                end = true;
                                break;
                            }
                            Some(Ok(item)) => {
                                if item.revision() <= last {
                                    // Already sent (a resubscription replays from `last`).
                                } else {
                                    last = item.revision();
                                    if let Some(line) = view.line(&item) {
                                        chunk.extend_from_slice(&line);
                                    }
                                }
                            }
                        }
                        if chunk.len() >= CHUNK {
                            break;
                        }
                        match source.ready() {
                            Some(next) => item = Some(Ok(next)),
                            None => break,
                        }
                    }
                    if !chunk.is_empty() && tx.send(chunk.freeze()).await.is_err() {
                        return;
                    }
                    if end {
                        return;
                    }
                }
            }
        }
    });

    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b))),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Where a watcher's events come from: the collection's shared feed, or (starting below
/// what the feed holds, or after falling behind it) the store's own watch.
enum Source {
    Feed {
        backlog: VecDeque<Arc<Shared>>,
        live: mpsc::Receiver<Arc<Shared>>,
    },
    Store(WatchStream),
}

/// One event for a watcher.
enum Item {
    Shared(Arc<Shared>),
    Store(Event),
}

impl Item {
    fn revision(&self) -> Revision {
        match self {
            Item::Shared(s) => s.revision,
            Item::Store(e) => e.revision(),
        }
    }
}

impl Source {
    /// Events of `prefix` after `after`: from the feed when it has them all, else the store.
    async fn start(
        objects: &Objects,
        r: &'static ResourceInfo,
        prefix: &str,
        after: Revision,
    ) -> Result<Self, ApiError> {
        Ok(
            match objects.feeds.subscribe(&objects.store, r, after).await? {
                Some(Subscription { backlog, live }) => Source::Feed {
                    backlog: backlog.into(),
                    live,
                },
                None => Source::Store(objects.store.watch(prefix, after).await?),
            },
        )
    }

    /// The next event; `None` when the watch ends. Cancel-safe: nothing is consumed
    /// unless returned.
    async fn next(
        &mut self,
        objects: &Objects,
        r: &'static ResourceInfo,
        prefix: &str,
        last: Revision,
    ) -> Option<Result<Item, ApiError>> {
        loop {
            match self {
                Source::Feed { backlog, live } => {
                    if let Some(shared) = backlog.pop_front() {
                        return Some(Ok(Item::Shared(shared)));
                    }
                    if let Some(shared) = live.recv().await {
                        return Some(Ok(Item::Shared(shared)));
                    }
                    // The feed ended or dropped this watcher as too slow: follow on from
                    // `last`, from a (new) feed if it reaches back that far.
                    match Source::start(objects, r, prefix, last).await {
                        Ok(source) => *self = source,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Source::Store(stream) => {
                    let event = match stream.next().now_or_never() {
                        Some(event) => event,
                        None => {
                            // Caught up with the store: back to the shared feed once it
                            // holds every event after `last` (decoding once for everyone).
                            if let Ok(Some(Subscription { backlog, live })) =
                                objects.feeds.subscribe(&objects.store, r, last).await
                            {
                                *self = Source::Feed {
                                    backlog: backlog.into(),
                                    live,
                                };
                                continue;
                            }
                            stream.next().await
                        }
                    };
                    return event.map(|e| e.map(Item::Store).map_err(ApiError::from));
                }
            }
        }
    }

    /// An event ready without waiting, from the feed.
    fn ready(&mut self) -> Option<Item> {
        match self {
            Source::Feed { backlog, live } => backlog
                .pop_front()
                .or_else(|| live.try_recv().ok())
                .map(Item::Shared),
            Source::Store(_) => None,
        }
    }
}

/// How one watcher sees events: its collection, selectors and format.
struct View<'a> {
    r: &'static ResourceInfo,
    /// The watched namespace's prefix (the feed carries every namespace).
    prefix: &'a str,
    filter: &'a Filter,
    format: Format,
    q: &'a Query,
}

impl View<'_> {
    /// The watch line of `item` for this watcher, if it sees the event.
    fn line(&self, item: &Item) -> Option<Bytes> {
        let (r, format, q) = (self.r, self.format, self.q);
        match item {
            Item::Store(event) => match translate(r, event, self.filter) {
                Ok(Some((kind, obj))) => Some(event_line(kind, obj, r, format, q)),
                Ok(None) => None,
                Err(e) => Some(event_line("ERROR", e.to_status(), r, format, q)),
            },
            Item::Shared(shared) => {
                if !shared.key.starts_with(self.prefix) {
                    return None;
                }
                let object = match &shared.object {
                    Ok(object) => object,
                    Err(_) => return Some(shared.line()),
                };
                let kind = if self.filter.everything() {
                    shared.kind
                } else if shared.kind == "DELETED" {
                    self.filter.matches(object).then_some("DELETED")?
                } else {
                    let old_match = shared.has_prev()
                        && shared
                            .prev_object(r)
                            .is_some_and(|p| self.filter.matches(p));
                    match (old_match, self.filter.matches(object)) {
                        (true, true) => "MODIFIED",
                        (false, true) => "ADDED",
                        (true, false) => "DELETED",
                        (false, false) => return None,
                    }
                };
                if kind == shared.kind && format != Format::Table {
                    Some(shared.line())
                } else {
                    Some(event_line(kind, object.clone(), r, format, q))
                }
            }
        }
    }
}

/// Maps a store event to a watch event, as seen through the selectors: an object that
/// stops matching is DELETED for this watcher, one that starts matching is ADDED.
fn translate(
    r: &ResourceInfo,
    event: &Event,
    filter: &Filter,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    match event {
        Event::Put { kv, prev } => {
            let new = decode(r, &kv.value, kv.mod_revision)?;
            let old_match = match prev {
                Some(p) => filter.matches(&decode(r, &p.value, p.mod_revision)?),
                None => false,
            };
            let new_match = filter.matches(&new);
            Ok(match (prev.is_some() && old_match, new_match) {
                (true, true) => Some(("MODIFIED", new)),
                (false, true) => Some(("ADDED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            })
        }
        Event::Delete { prev, revision } => {
            let old = decode(r, &prev.value, *revision)?;
            Ok(filter.matches(&old).then_some(("DELETED", old)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_ips::ServiceCidr;
    use berth_store::{MemoryStore, Store};

    #[tokio::test]
    async fn a_watch_behind_the_feed_rejoins_it_once_caught_up() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let cidr = ServiceCidr::parse("10.43.0.0/16").expect("service CIDR");
        let objects = Objects::new(store.clone(), cidr);
        let r = berth_api::registry::find("", "v1", "configmaps").expect("configmaps");
        let prefix = crate::objects::prefix(r, None);
        let first = format!("{prefix}default/first");
        let start = store
            .create(&first, b"{\"metadata\":{\"name\":\"first\"}}".to_vec())
            .await
            .expect("create")
            .mod_revision;
        // A feed starts at `start`, then moves on past what it keeps in memory.
        let Ok(Some(mut feed)) = objects.feeds.subscribe(&store, r, start).await else {
            panic!("a feed serves the current revision");
        };
        let mut last = start;
        for i in 0..600 {
            let key = format!("{prefix}default/cm-{i}");
            let value = serde_json::to_vec(&json!({"metadata": {"name": format!("cm-{i}")}}))
                .expect("json");
            last = store
                .create(&key, value)
                .await
                .expect("create")
                .mod_revision;
        }
        while feed.live.recv().await.is_some_and(|e| e.revision < last) {}
        let mut source = Source::start(&objects, r, &prefix, start)
            .await
            .expect("watch");
        assert!(
            matches!(source, Source::Store(_)),
            "a watch older than the feed's memory reads the store"
        );
        let mut seen = start;
        while seen < last {
            let next = tokio::time::timeout(
                Duration::from_secs(5),
                source.next(&objects, r, &prefix, seen),
            )
            .await
            .unwrap_or_else(|_| panic!("an event in time after {seen} (last {last})"));
            seen = next.expect("event").expect("no error").revision();
        }
        // Caught up: the next event comes from the feed.
        let writer = store.clone();
        let key = format!("{prefix}default/late");
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer
                .create(&key, b"{\"metadata\":{\"name\":\"late\"}}".to_vec())
                .await
                .expect("create")
                .mod_revision
        });
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            source.next(&objects, r, &prefix, seen),
        )
        .await
        .expect("an event in time")
        .expect("event")
        .expect("no error");
        assert_eq!(Some(next.revision()), late.await.ok());
        assert!(matches!(next, Item::Shared(_)), "served from the feed");
        assert!(matches!(source, Source::Feed { .. }));
    }
}
