//! Watch: streams ADDED/MODIFIED/DELETED (and BOOKMARK) events of a collection as
//! newline-delimited JSON, with selectors, initial events, bookmarks and timeouts.

use crate::handlers::{table_of, Body, Format};
use crate::objects::{decode, ListQuery, Objects};
use crate::request::Query;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use berth_api::registry::ResourceInfo;
use berth_store::{Event, Revision};
use bytes::Bytes;
use futures::StreamExt;
use http::{header, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
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
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
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
    let mut stream = objects.store.watch(&prefix, start).await?;

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
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(event_line("BOOKMARK", bookmark(r, last, false), r, format, &q)).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => {
                    let line = match next {
                        None => return,
                        Some(Err(e)) => {
                            let err: ApiError = e.into();
                            let _ = tx.send(event_line("ERROR", err.to_status(), r, format, &q)).await;
                            return;
                        }
                        Some(Ok(event)) => {
                            last = event.revision();
                            match translate(r, &event, &filter) {
                                Ok(Some((kind, obj))) => event_line(kind, obj, r, format, &q),
                                Ok(None) => continue,
                                Err(e) => event_line("ERROR", e.to_status(), r, format, &q),
                            }
                        }
                    };
                    if tx.send(line).await.is_err() {
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
