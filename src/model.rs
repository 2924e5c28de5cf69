//! The vocabulary every layer shares: services, states, and the run as the API shows it.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A CSM service whose data lives in a rebuilt etcd cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Bos,
    Bss,
    Cps,
    Crus,
    Externaldns,
    Fas,
    Hmnfd,
    Meds,
    Reds,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Bos,
        Service::Bss,
        Service::Cps,
        Service::Crus,
        Service::Externaldns,
        Service::Fas,
        Service::Hmnfd,
        Service::Meds,
        Service::Reds,
    ];

    /// The CSM service whose etcd cluster holds this service's data and that a rebuild
    /// empties (`cray-bss`: cluster `cray-bss-etcd` or `cray-bss-bitnami-etcd`, see
    /// `etcd::layout`); `None` for MEDS (no cluster of its own on a standard system) and
    /// External DNS (its cluster is what the run re-creates).
    pub fn etcd_service(self) -> Option<&'static str> {
        match self {
            Service::Bos => Some("cray-bos"),
            Service::Bss => Some("cray-bss"),
            Service::Cps => Some("cray-cps"),
            Service::Crus => Some("cray-crus"),
            Service::Fas => Some("cray-fas"),
            Service::Hmnfd => Some("cray-hmnfd"),
            Service::Reds => Some("cray-reds"),
            Service::Meds | Service::Externaldns => None,
        }
    }

    /// The service whose etcd cluster belongs to the CSM service `csm` (`cray-bss`), if any.
    pub fn of_etcd_service(csm: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|s| s.etcd_service() == Some(csm))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Bos => "bos",
            Service::Bss => "bss",
            Service::Cps => "cps",
            Service::Crus => "crus",
            Service::Externaldns => "externaldns",
            Service::Fas => "fas",
            Service::Hmnfd => "hmnfd",
            Service::Meds => "meds",
            Service::Reds => "reds",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown service {0:?}")]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.as_str() == s)
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

/// What a run does with the etcd cluster of each service it repopulates, before repopulating.
/// Every mode but `check` may delete the cluster's data: a real run with one of them names the
/// clusters it may touch in `confirm` and needs the `recover` role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EtcdMode {
    /// Leave the cluster alone: stop if it is unhealthy (the runbook starts after a rebuild).
    #[default]
    Check,
    /// Restore the cluster from a backup (`backup`, else the newest), then run the repopulation
    /// steps the backup does not cover. Destructive: the cluster's current data is replaced.
    Restore,
    /// Rebuild the cluster empty, then repopulate every service on it. Destructive.
    Rebuild,
    /// Leave a healthy cluster alone; otherwise restore from the newest recent backup, else
    /// rebuild. Destructive when the cluster is unhealthy.
    Auto,
}

impl EtcdMode {
    pub const ALL: [EtcdMode; 4] = [
        EtcdMode::Check,
        EtcdMode::Restore,
        EtcdMode::Rebuild,
        EtcdMode::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EtcdMode::Check => "check",
            EtcdMode::Restore => "restore",
            EtcdMode::Rebuild => "rebuild",
            EtcdMode::Auto => "auto",
        }
    }

    /// Whether a run in this mode may delete or replace an etcd cluster's data.
    pub fn is_destructive(self) -> bool {
        self != EtcdMode::Check
    }
}

impl fmt::Display for EtcdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown etcd mode {0:?} (expected check, restore, rebuild or auto)")]
pub struct UnknownEtcdMode(pub String);

impl FromStr for EtcdMode {
    type Err = UnknownEtcdMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EtcdMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownEtcdMode(s.to_owned()))
    }
}

/// The state of a run, of one service's task in it, or of one step of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The process stopped while this was pending or running; `resume` continues it.
    Interrupted,
    /// Finished, but a person still has work to do (the message says what).
    ActionRequired,
    /// A step that did not run because an earlier step of its service did not succeed (the
    /// message names it).
    Skipped,
    /// An interrupted or failed run a person gave up on (`POST .../abandon`): it can never be
    /// resumed, and no longer holds back a new recovery of its etcd clusters.
    Abandoned,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Pending,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::Interrupted,
        State::ActionRequired,
        State::Skipped,
        State::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Interrupted => "interrupted",
            State::ActionRequired => "action_required",
            State::Skipped => "skipped",
            State::Abandoned => "abandoned",
        }
    }

    /// Whether nothing more will happen without a person (resume) asking for it.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

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
    pub csm_release: Option<crate::release::ReleaseInForce>,
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

/// A new, sortable run id (UUIDv7): the one place ids are made.
pub fn new_run_id() -> Uuid {
    Uuid::now_v7()
}
