//! One run executing: its services concurrently, each service's steps in order, every
//! transition written to the store first.

use std::{sync::Arc, time::Instant};

use futures::future::join_all;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    cluster::{Mode, RunEvents},
    handlers::{self, Action, Earlier, StepContext},
    model::{Service, State},
    run::{Run, ServiceTask},
    store::{StepKey, StoreError},
};

use super::{journal::StoreJournal, state::*};

pub(super) async fn execute_run(inner: Arc<Inner>, id: Uuid, mode: Mode, control: Control) {
    let started = Instant::now();
    let state = match drive_run(&inner, id, mode, &control).await {
        Ok(state) => Some(state),
        Err(err) => {
            // The store failed under us: leave the run as it is (pending/running); the next
            // start marks it interrupted, and it can be resumed.
            tracing::error!(error = %err, "run aborted: the store failed");
            None
        }
    };
    inner.metrics.run_finished(state, started.elapsed());
    let mut active = inner.active.lock().await;
    active.runs.remove(&id);
    active.services.retain(|_, run| *run != id);
    drop(active);
    inner.finished.notify_waiters();
}

pub(super) async fn drive_run(
    inner: &Arc<Inner>,
    id: Uuid,
    mode: Mode,
    control: &Control,
) -> Result<State, StoreError> {
    let (store, started) = (&inner.store, Instant::now());
    store.start_run(id, now()).await?;
    tracing::info!("run started");
    let services = store.pending_tasks(id).await?;
    let tasks = services.into_iter().map(|service| {
        let span = tracing::info_span!("task", service = %service);
        run_task(inner, id, service, mode, control).instrument(span)
    });
    let mut acted = false;
    for result in join_all(tasks).await {
        acted |= result?;
    }
    let run = store
        .get_run(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
    let (state, message) = (run_state(&run, control), summary_line(&run.services));
    store.finish_run(id, state, &message, now()).await?;
    store
        .append_event(
            id,
            level_of(state),
            None,
            None,
            &format!("run {state}: {message}"),
            now(),
        )
        .await?;
    tracing::info!(state = %state, "{message}");
    inner
        .metrics
        .run_ended(run.etcd, run.dry_run, acted, state, started.elapsed());
    Ok(state)
}

/// The run's final state from its tasks: failure wins, then stops, then work left for a person.
pub(super) fn run_state(run: &Run, control: &Control) -> State {
    let any = |state: State| run.services.iter().any(|t| t.state == state);
    if any(State::Failed) {
        State::Failed
    } else if any(State::Interrupted)
        || (any(State::Cancelled) && control.stopped_state() == State::Interrupted)
    {
        State::Interrupted
    } else if any(State::Cancelled) {
        State::Cancelled
    } else if any(State::ActionRequired) {
        State::ActionRequired
    } else {
        State::Succeeded
    }
}

/// The run's message: one line counting its services by state and naming those that did not
/// succeed, e.g. "3 succeeded; 2 need action: cps, fas" (each service's own message says more).
pub(super) fn summary_line(tasks: &[ServiceTask]) -> String {
    const ORDER: [State; 8] = [
        State::Succeeded,
        State::Failed,
        State::Interrupted,
        State::Cancelled,
        State::ActionRequired,
        State::Skipped,
        State::Running,
        State::Pending,
    ];
    let mut groups = Vec::new();
    for state in ORDER {
        let names: Vec<&str> = tasks
            .iter()
            .filter(|t| t.state == state)
            .map(|t| t.service.as_str())
            .collect();
        let label = match (state, names.len()) {
            (_, 0) => continue,
            (State::Succeeded, n) => {
                groups.push(format!("{n} succeeded"));
                continue;
            }
            (State::ActionRequired, 1) => "needs action",
            (State::ActionRequired, _) => "need action",
            (other, _) => other.as_str(),
        };
        groups.push(format!("{} {label}: {}", names.len(), names.join(", ")));
    }
    groups.join("; ")
}

pub(super) fn level_of(state: State) -> &'static str {
    match state {
        State::Succeeded | State::Pending | State::Running => "info",
        State::ActionRequired
        | State::Cancelled
        | State::Interrupted
        | State::Skipped
        | State::Abandoned => "warn",
        State::Failed => "error",
    }
}

pub(super) async fn run_task(
    inner: &Arc<Inner>,
    run_id: Uuid,
    service: Service,
    mode: Mode,
    control: &Control,
) -> Result<bool, StoreError> {
    let store = &inner.store;
    let started = Instant::now();
    store.start_task(run_id, service, now()).await?;
    store
        .append_event(run_id, "info", Some(service), None, "started", now())
        .await?;
    let steps = store.task_steps(run_id, service).await?;
    // What the steps a resumed run already took told the steps after them.
    let mut earlier = Earlier::default();
    for step in steps.iter().filter(|s| s.state == State::Succeeded) {
        if let (Ok(action), Some(data)) = (
            serde_json::from_value::<Action>(step.spec.clone()),
            &step.data,
        ) {
            action.learn(data, &mut earlier);
        }
    }
    let mut outcome = (State::Succeeded, String::new());
    let mut notes = Vec::new();
    // Once a step fails or the run is stopped, the state and message of the steps not started.
    let mut not_started: Option<(State, String)> = None;
    for step in steps.iter().filter(|s| s.state != State::Succeeded) {
        if not_started.is_none() && control.token.is_cancelled() {
            let state = control.stopped_state();
            not_started = Some((state, format!("not started: run {state}")));
            outcome = (state, format!("{state} before step {}", step.name));
        }
        if let Some((state, message)) = &not_started {
            let key = StepKey {
                run_id,
                service,
                ordinal: step.ordinal,
            };
            store.finish_step(key, *state, message, None, now()).await?;
            continue;
        }
        let span = tracing::info_span!("step", step = %step.name);
        let (state, message) = run_step(inner, run_id, service, step, mode, control, &mut earlier)
            .instrument(span)
            .await?;
        match state {
            // A step that had nothing to do says why (its message) and the task goes on.
            State::Succeeded | State::Skipped => {}
            State::ActionRequired => notes.push(message),
            other => {
                outcome = (other, format!("step {} {other}: {message}", step.name));
                not_started = Some(match other {
                    State::Failed => (
                        State::Skipped,
                        format!("not started because step {} failed", step.name),
                    ),
                    stopped => (stopped, format!("not started: run {stopped}")),
                });
            }
        }
    }
    let (state, message) = match outcome {
        (State::Succeeded, _) if !notes.is_empty() => (State::ActionRequired, notes.join("; ")),
        (State::Succeeded, _) => (
            State::Succeeded,
            if mode.is_dry_run() {
                "dry run planned".to_owned()
            } else {
                "repopulated".to_owned()
            },
        ),
        other => other,
    };
    store
        .finish_task(run_id, service, state, &message, now())
        .await?;
    inner
        .metrics
        .service_finished(service, state, started.elapsed());
    store
        .append_event(
            run_id,
            level_of(state),
            Some(service),
            None,
            &format!("{state}: {message}"),
            now(),
        )
        .await?;
    // Whether the service's etcd cluster was recovered (or a recovery was attempted): what
    // the recovery steps decided was more than leaving it alone.
    Ok(earlier.recovery().planned_recovery().is_some())
}

pub(super) async fn run_step(
    inner: &Arc<Inner>,
    run_id: Uuid,
    service: Service,
    step: &crate::store::StepRecord,
    mode: Mode,
    control: &Control,
    earlier: &mut Earlier,
) -> Result<(State, String), StoreError> {
    let store = &inner.store;
    let started = Instant::now();
    let key = StepKey {
        run_id,
        service,
        ordinal: step.ordinal,
    };
    store.start_step(key, now()).await?;
    store
        .append_event(
            run_id,
            "info",
            Some(service),
            Some(&step.name),
            "started",
            now(),
        )
        .await?;
    let journal = StoreJournal::new(store.clone(), key, &step.name);
    let (state, message, data) = match serde_json::from_value::<Action>(step.spec.clone()) {
        Err(err) => (
            State::Failed,
            format!("the stored plan of this step is unreadable ({err}); start a new run"),
            None,
        ),
        Ok(action) => {
            let events = RunEvents::new(
                inner.cluster.client().clone(),
                run_id,
                service.as_str(),
                &step.name,
                mode,
            );
            let ctx = StepContext {
                run_id,
                cluster: &inner.cluster,
                csm: &inner.csm,
                mode,
                cancel: &control.token,
                shutdown: &control.shutdown,
                journal: &journal,
                saved: step.data.clone(),
                ssh: &inner.config.ssh,
                etcd: &inner.config.etcd,
                recovery: &inner.config.recovery,
                store: &inner.store,
                events: &events,
            };
            let limit = action.time_limit(&inner.config);
            match tokio::time::timeout(limit, handlers::execute(&action, &ctx, earlier)).await {
                Ok(Ok(outcome)) => {
                    action.learn(&outcome.data, earlier);
                    (outcome.state, outcome.message, Some(outcome.data))
                }
                Ok(Err(err)) if err.is_cancelled() => {
                    (control.stopped_state(), err.to_string(), None)
                }
                Ok(Err(err)) => (State::Failed, err.to_string(), None),
                Err(_) => (
                    State::Failed,
                    format!(
                        "step exceeded the step timeout of {}",
                        humantime::format_duration(limit)
                    ),
                    None,
                ),
            }
        }
    };
    store
        .finish_step(key, state, &message, data.as_ref(), now())
        .await?;
    inner
        .metrics
        .step_finished(service, &step.name, state, started.elapsed());
    store
        .append_event(
            run_id,
            level_of(state),
            Some(service),
            Some(&step.name),
            &format!("{state}: {message}"),
            now(),
        )
        .await?;
    match state {
        State::Failed => tracing::warn!(state = %state, "{message}"),
        _ => tracing::info!(state = %state, "{message}"),
    }
    Ok((state, message))
}
