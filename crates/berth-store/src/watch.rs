//! Watch streams shared by the backends: history replay followed by live events with no gap
//! and no duplicate, and resynchronisation from history when a watcher lags behind the live
//! broadcast.
//!
//! A backend publishes each committed batch of events, in revision order, on a
//! [`broadcast`] channel and answers history queries ([`EventSource`]). A watch subscribes to
//! the broadcast *before* reading history, so every event is either in the history read or
//! arrives live; events at or below the last revision already handled are dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{Event, Revision, StoreError, WatchStream};

/// One committed batch of events, in revision order.
pub(crate) type Batch = Arc<Vec<Event>>;

/// Most history events read at once, so that replaying a long history stays bounded in memory.
pub(crate) const HISTORY_PAGE: usize = 1000;

/// One page of history.
pub(crate) struct History {
    pub events: Vec<Event>,
    /// The store revision the page was read at.
    pub revision: Revision,
}

impl History {
    /// The revision a watch has handled after queueing this page, and whether the history is
    /// exhausted (a full page may have more after it).
    fn progress(&self, limit: usize, after: Revision) -> (Revision, bool) {
        match self.events.last() {
            Some(last) if self.events.len() >= limit => (last.revision(), false),
            _ => (self.revision.max(after), true),
        }
    }
}

/// What a backend gives the watch machinery.
#[async_trait::async_trait]
pub(crate) trait EventSource: Send + Sync + 'static {
    /// A new receiver of live batches; `None` once the store is closed.
    fn subscribe(&self) -> Option<broadcast::Receiver<Batch>>;

    /// At most `limit` events of keys starting with `prefix` with a revision greater than
    /// `after`, in revision order. `Compacted` if `after` is older than the compacted revision.
    async fn history(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<History, StoreError>;

    /// The newest revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Starts a watch of `prefix` after `after` (`0`: from now on) on `source`.
pub(crate) async fn watch<S: EventSource>(
    source: &Arc<S>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    let rx = source.subscribe().ok_or(StoreError::Closed)?;
    let (queue, last, caught_up) = if after == 0 {
        (VecDeque::new(), source.revision().await?, true)
    } else {
        let page = source.history(prefix, after, HISTORY_PAGE).await?;
        let (last, caught_up) = page.progress(HISTORY_PAGE, after);
        (VecDeque::from(page.events), last, caught_up)
    };
    let state = WatchState {
        source: Arc::downgrade(source),
        prefix: prefix.to_owned(),
        rx,
        last,
        queue,
        caught_up,
        done: false,
    };
    Ok(futures::stream::unfold(state, next_event).boxed())
}

struct WatchState<S> {
    /// Weak, so that an open watch does not keep a dropped store alive.
    source: Weak<S>,
    prefix: String,
    rx: broadcast::Receiver<Batch>,
    /// The highest revision already queued or skipped; later events must be above it.
    last: Revision,
    queue: VecDeque<Event>,
    /// False while history after `last` remains to be read before live events.
    caught_up: bool,
    /// Set after a terminal error: the queue drains, then the stream ends.
    done: bool,
}

async fn next_event<S: EventSource>(
    mut st: WatchState<S>,
) -> Option<(Result<Event, StoreError>, WatchState<S>)> {
    loop {
        if let Some(event) = st.queue.pop_front() {
            return Some((Ok(event), st));
        }
        if st.done {
            return None;
        }
        if !st.caught_up {
            let source = st.source.upgrade()?;
            if let Err(err) = read_history(&mut st, source.as_ref()).await {
                st.done = true;
                return Some((Err(err), st));
            }
            continue;
        }
        match st.rx.recv().await {
            Ok(batch) => {
                for event in batch.iter() {
                    let revision = event.revision();
                    if revision <= st.last {
                        continue;
                    }
                    st.last = revision;
                    if event.key().starts_with(&st.prefix) {
                        st.queue.push_back(event.clone());
                    }
                }
            }
            Err(RecvError::Closed) => return None,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    prefix = %st.prefix,
                    missed,
                    after = st.last,
                    "watcher lagged behind live events, resyncing from history"
                );
                let source = st.source.upgrade()?;
                // Subscribe again before reading history, as when the watch started.
                st.rx = source.subscribe()?;
                st.caught_up = false;
            }
        }
    }
}

/// Queues the next page of history after `st.last`.
async fn read_history<S: EventSource>(
    st: &mut WatchState<S>,
    source: &S,
) -> Result<(), StoreError> {
    let page = source.history(&st.prefix, st.last, HISTORY_PAGE).await?;
    let (last, caught_up) = page.progress(HISTORY_PAGE, st.last);
    st.queue.extend(page.events);
    st.last = last;
    st.caught_up = caught_up;
    Ok(())
}
