//! `GET /repopulations/{id}/events`: the run's log as Server-Sent Events. The stored log comes
//! first (after `Last-Event-ID`), then lines as they are appended, until the run stops
//! executing. The database is the source of truth for order and completeness: the store's
//! broadcast only says "something was appended", and each wake-up reads the log after the
//! last event sent (services append concurrently, so broadcast order need not be id order).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    problem::{ApiError, PROBLEM, Problem},
    runs::parse_id,
    state::SharedState,
};
use crate::{
    model::State as RunState,
    run::Run,
    store::{Store, StoreError},
};

/// The last SSE message: the run stopped executing, in this state.
#[derive(Serialize, ToSchema)]
pub struct StreamEnd {
    pub state: RunState,
}

/// Follow a run's log live (Server-Sent Events).
///
/// Messages: `log` (one line of the run's log, `id` = its position, usable as `Last-Event-ID`
/// to resume), `run` (the whole run, sent first and whenever a state of the run, a service or
/// a step changed) and `end` (the run stopped; the stream closes). A finished run's stream is
/// its stored log, its `run` and `end`.
#[utoipa::path(get, path = "/repopulations/{id}/events", tag = "repopulations", operation_id = "follow_repopulation_events",
    params(
        ("id" = String, Path, format = Uuid, description = "Run id (a UUID)"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[ \\t]*[0-9]{1,18}[ \\t]*$",
            description = "Resume after this log event id (the `id` of an event of this stream)"),
    ),
    responses(
        (status = 200, description = "An event stream of `log` (Event), `run` (Run) and a final `end` (StreamEnd) messages",
            content_type = "text/event-stream", body = SseFrame),
        (status = 400, description = "Malformed id or Last-Event-ID", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such run", body = Problem, content_type = PROBLEM),
    ))]
pub async fn follow_events(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    let after = last_event_id(&headers)?;
    // Subscribe before looking at anything, so nothing appended from here on is missed, and
    // ask whether the run executes before reading its log: a run that is not executing now
    // has its whole log stored.
    let appended = state.store.subscribe();
    let active = state.runner.is_active(id).await;
    let run = state
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} not found")))?;
    let (tx, rx) = mpsc::channel(64);
    let follower = Follower {
        state: state.clone(),
        id,
        last: after,
        tx,
        shown: None,
    };
    tokio::spawn(follower.run(run, active, appended));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn last_event_id(headers: &HeaderMap) -> Result<i64, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Last-Event-ID",
                "Last-Event-ID must be the id of an event of this stream",
            )
        })
}

/// The states of the run, its services and their steps: a `run` message is sent when they
/// change.
type StateSignature = (RunState, Vec<(RunState, Vec<RunState>)>);

fn signature(run: &Run) -> StateSignature {
    (
        run.state,
        run.services
            .iter()
            .map(|t| (t.state, t.steps.iter().map(|s| s.state).collect()))
            .collect(),
    )
}

/// The task that feeds one SSE connection. It ends when the run stops, the client goes away
/// (a send fails) or the store fails.
struct Follower {
    state: SharedState,
    id: Uuid,
    last: i64,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    shown: Option<StateSignature>,
}

/// The client disconnected.
struct Gone;

impl Follower {
    async fn run(
        mut self,
        run: Run,
        active: bool,
        mut appended: tokio::sync::broadcast::Receiver<crate::store::AppendedEvent>,
    ) {
        let result: Result<(), FollowError> = async {
            self.send_log().await?;
            self.send_run(&run).await?;
            if active {
                let runner = self.state.runner.clone();
                let stopped = runner.wait_inactive(self.id);
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        received = appended.recv() => match received {
                            Ok(event) if event.run_id != self.id => {}
                            Ok(_) | Err(RecvError::Lagged(_)) => {
                                self.catch_up().await?;
                            }
                            Err(RecvError::Closed) => break,
                        },
                        () = &mut stopped => break,
                    }
                }
            }
            // Everything the execution appended is stored now.
            let run = self.catch_up().await?;
            self.send(
                SseEvent::default().event("end"),
                &StreamEnd { state: run.state },
            )
            .await?;
            Ok(())
        }
        .await;
        if let Err(FollowError::Store(err)) = result {
            tracing::error!(run_id = %self.id, error = %err, "following a run's events failed");
        }
    }

    /// Sends the log after the last event sent, then the run if its states changed.
    async fn catch_up(&mut self) -> Result<Run, FollowError> {
        self.send_log().await?;
        let run = self
            .store()
            .get_run(self.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {} vanished", self.id)))?;
        self.send_run(&run).await?;
        Ok(run)
    }

    async fn send_log(&mut self) -> Result<(), FollowError> {
        for event in self.store().events(self.id, self.last).await? {
            self.last = event.id;
            self.send(
                SseEvent::default().event("log").id(event.id.to_string()),
                &event,
            )
            .await?;
        }
        Ok(())
    }

    async fn send_run(&mut self, run: &Run) -> Result<(), FollowError> {
        let now = signature(run);
        if self.shown.as_ref() != Some(&now) {
            self.send(SseEvent::default().event("run"), run).await?;
            self.shown = Some(now);
        }
        Ok(())
    }

    async fn send<T: Serialize>(&self, message: SseEvent, data: &T) -> Result<(), FollowError> {
        let message = message
            .json_data(data)
            .map_err(|e| StoreError::Corrupt(format!("cannot serialize an event: {e}")))?;
        self.tx.send(Ok(message)).await.map_err(|_| Gone)?;
        Ok(())
    }

    fn store(&self) -> &Store {
        &self.state.store
    }
}

enum FollowError {
    Gone,
    Store(StoreError),
}

impl From<Gone> for FollowError {
    fn from(_: Gone) -> Self {
        FollowError::Gone
    }
}

impl From<StoreError> for FollowError {
    fn from(err: StoreError) -> Self {
        FollowError::Store(err)
    }
}

/// One Server-Sent Events frame of the stream, as a client sees it: `event` is `log`, `run` or
/// `end`, and `data` the JSON of an `Event`, a `Run` or a `StreamEnd`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}
