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

/// What a backend gives the watch machinery.
#[async_trait::async_trait]
pub(crate) trait EventSource: Send + Sync + 'static {
    /// A new receiver of live batches; `None` once the store is closed.
    fn subscribe(&self) -> Option<broadcast::Receiver<Batch>>;

    /// Events of keys starting with `prefix` with a revision greater than `after`, in revision
    /// order, and the revision the history was read at. `Compacted` if `after` is older than
    /// the compacted revision.
    async fn history(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<Event>, Revision), StoreError>;

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
    let (queue, last) = if after == 0 {
        (VecDeque::new(), source.revision().await?)
    } else {
        let (events, read_at) = source.history(prefix, after).await?;
        (VecDeque::from(events), read_at.max(after))
    };
    let state = WatchState {
        source: Arc::downgrade(source),
        prefix: prefix.to_owned(),
        rx,
        last,
        queue,
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
                match source.history(&st.prefix, st.last).await {
                    Ok((events, read_at)) => {
                        st.queue.extend(events);
                        st.last = st.last.max(read_at);
                    }
                    Err(err) => {
                        st.done = true;
                        return Some((Err(err), st));
                    }
                }
            }
        }
    }
}
