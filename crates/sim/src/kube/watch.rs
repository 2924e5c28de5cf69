//! Watch streams: newline-delimited `{"type":..,"object":..}` events over a chunked response,
//! as the real server's watch handler sends them for `?watch=true`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::resources::ResourceDef;
use super::selector::Selectors;
use super::store::{EventType, Store, StoreEvent};
use super::table::TableRequest;

/// How often a watch that allows bookmarks gets one (the real server sends them about once a
/// minute; sooner keeps tests and resumptions quick).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// The real server picks a timeout between 30 and 60 minutes when the client gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// Events carry a one-row Table of the object (`kubectl get -w`).
    pub table: Option<TableRequest>,
    pub selectors: Selectors,
    /// `None` for "" and "0": start with synthetic ADDED events for the current state.
    pub from_rv: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
}

/// An event's object as the watcher asked for it: itself, or a one-row Table.
fn shown(def: &ResourceDef, table: Option<TableRequest>, object: &Value) -> Value {
    let object = def.view(object);
    match table {
        Some(table) => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            table.render(def, std::slice::from_ref(&*object), rv)
        }
        None => object.into_owned(),
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({ "type": kind, "object": object }).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({
        "kind": def.kind,
        "apiVersion": def.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line("BOOKMARK", &obj)
}

/// What a watcher with `sel` sees of a store event: an object that starts or stops matching
/// the selector is sent as ADDED or DELETED, as the real watch cache does. Selectors match the
/// stored form; the watcher gets its own version of the object.
fn visible(ev: &StoreEvent, sel: &Selectors) -> Option<&'static str> {
    let now = sel.matches(&ev.object);
    let before = ev.old.as_ref().is_some_and(|o| sel.matches(o));
    match ev.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => (now || before).then_some("DELETED"),
        EventType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

struct WatchStream {
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<StoreEvent>>,
    def: &'static ResourceDef,
    ns: Option<String>,
    selectors: Selectors,
    table: Option<TableRequest>,
    last_rv: u64,
    bookmarks: bool,
    deadline: Instant,
    epoch: watch::Receiver<u64>,
    cancel: CancellationToken,
    next_bookmark: Instant,
}

impl WatchStream {
    fn relevant(&self, ev: &StoreEvent) -> bool {
        let stored = self.def.storage();
        ev.def.is(stored.group, stored.plural)
            && self.ns.as_deref().is_none_or(|ns| ns == ev.namespace)
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            let bookmark_at = if self.bookmarks {
                self.next_bookmark
            } else {
                self.deadline
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.cancel.cancelled() => return None,
                changed = self.epoch.changed() => {
                    // Dropped by fault injection (or the injector is gone).
                    let _ = changed;
                    return None;
                }
                _ = tokio::time::sleep_until(bookmark_at), if self.bookmarks => {
                    self.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                    return Some(bookmark(self.def, self.last_rv, false));
                }
                ev = self.rx.recv() => match ev {
                    Ok(ev) => {
                        self.last_rv = self.last_rv.max(ev.rv);
                        if self.relevant(&ev)
                            && let Some(kind) = visible(&ev, &self.selectors)
                        {
                            return Some(line(kind, &shown(self.def, self.table, &ev.object)));
                        }
                    }
                    // Too slow a reader: end the stream; the client re-watches from its last
                    // resourceVersion (the real server closes slow watchers too).
                    Err(broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// The watch of `def` objects (in `ns`) as a streamed response. `epoch` changes when fault
/// injection drops every open watch; `shutdown` ends the stream with the server.
pub fn serve(
    store: &Store,
    epoch: watch::Receiver<u64>,
    shutdown: CancellationToken,
    def: &'static ResourceDef,
    ns: Option<String>,
    params: WatchParams,
) -> Response {
    let start = match store.watch_from(def, ns.as_deref(), params.from_rv) {
        Ok(s) => s,
        Err(err @ ApiError::Expired { .. }) => {
            // The watch cache answers a too-old resourceVersion inside the stream: 200, then
            // one ERROR event carrying the 410 Status.
            let body = line("ERROR", &err.status());
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Err(other) => return other.into_response(),
    };
    let mut pending = VecDeque::new();
    for ev in &start.initial {
        if let Some(kind) = visible(ev, &params.selectors) {
            pending.push_back(line(kind, &shown(def, params.table, &ev.object)));
        }
    }
    if params.send_initial_events && params.bookmarks {
        pending.push_back(bookmark(def, start.start_rv, true));
    }
    let stream = WatchStream {
        pending,
        rx: start.receiver,
        def,
        ns,
        selectors: params.selectors,
        table: params.table,
        last_rv: start.start_rv,
        bookmarks: params.bookmarks,
        deadline: Instant::now() + params.timeout.unwrap_or(DEFAULT_TIMEOUT),
        epoch,
        cancel: shutdown,
        next_bookmark: Instant::now() + BOOKMARK_INTERVAL,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), s))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}
