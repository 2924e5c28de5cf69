//! A repopulation run as the API shows it and the store keeps it: what was asked, and per
//! service, per step, what happened; its summary in the history, and its log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    model::{EtcdMode, Service, State},
    release::ReleaseInForce,
};

/// A run as the history lists it: what was asked and how it ended, per service; the steps are
/// at `GET /repopulations/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub state: State,
    pub reason: Option<String>,
    pub dry_run: bool,
    /// What the run does with the services' etcd clusters (`check` for runs recorded before
    /// runs could recover them).
    #[serde(default)]
    pub etcd: EtcdMode,
    pub requested_by: String,
    /// 1 for the first execution, incremented by every resume.
    pub attempt: i64,
    /// How the run ended, in one line (e.g. "3 succeeded; 2 need action: cps, fas").
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub services: Vec<ServiceSummary>,
}

/// One service of a run in the history: which, and its state.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceSummary {
    pub service: Service,
    pub state: State,
}

impl From<&Run> for RunSummary {
    fn from(run: &Run) -> Self {
        RunSummary {
            id: run.id,
            state: run.state,
            reason: run.reason.clone(),
            dry_run: run.dry_run,
            etcd: run.etcd,
            requested_by: run.requested_by.clone(),
            attempt: run.attempt,
            message: run.message.clone(),
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            services: run
                .services
                .iter()
                .map(|task| ServiceSummary {
                    service: task.service,
                    state: task.state,
                })
                .collect(),
        }
    }
}

/// One page of the run history: each run's summary (its steps are at
/// `GET /repopulations/{id}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunSummary>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A repopulation run: what was asked, and per service, per step, what happened.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: Uuid,
    pub state: State,
    pub reason: Option<String>,
    pub dry_run: bool,
    /// What the run does with the services' etcd clusters before repopulating (`check` for
    /// runs recorded before runs could recover them).
    #[serde(default)]
    pub etcd: EtcdMode,
    /// The backup a `restore` run restores from, as requested; `null`: the newest.
    #[serde(default)]
    pub backup: Option<String>,
    /// The etcd clusters the request confirmed the run may rebuild or restore.
    #[serde(default)]
    pub confirm: Vec<String>,
    /// The request accepted that a restore or rebuild throws away what the live cluster holds
    /// beyond the backup (or all of it, for a rebuild).
    #[serde(default)]
    pub discard_newer: bool,
    pub requested_by: String,
    /// 1 for the first execution, incremented by every resume.
    pub attempt: i64,
    /// How the run ended, in one line (e.g. "3 succeeded; 2 need action: cps, fas"); each
    /// service's own message is on the service.
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The CSM release whose runbook the run follows, and why (the evidence detection found,
    /// or `configured`); `null` for runs recorded before the service recorded it.
    pub csm_release: Option<ReleaseInForce>,
    pub services: Vec<ServiceTask>,
}

/// One service's part of a run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceTask {
    pub service: Service,
    pub state: State,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
}

/// One step of a service task.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub name: String,
    pub state: State,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
    /// What the step saw or saved (pods restarted, manifests stored before a delete, ...).
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// What the step did in earlier attempts of the run, oldest first (a resume runs the steps
    /// that did not succeed again); absent when it ran once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<StepAttempt>,
}

/// How a step ended in an earlier attempt of its run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepAttempt {
    /// The run's attempt (1 for the first execution).
    pub attempt: i64,
    pub state: State,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// An outline of the data the step had stored then: its fields, with lists and objects
    /// reduced to their sizes and long strings shortened (the data itself stays on the step).
    #[schema(value_type = Option<Object>)]
    pub data_summary: Option<Value>,
}

/// One line of a run's log.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the run's log (increasing); usable as SSE `Last-Event-ID`.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    pub service: Option<Service>,
    pub step: Option<String>,
    pub message: String,
}
