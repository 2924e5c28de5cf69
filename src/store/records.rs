//! What the store is given and gives back about runs: a new run's plan, a step's key and
//! record, the history's filters, the runs a restart found interrupted, an appended event.

use serde_json::Value;
use uuid::Uuid;

use crate::{
    model::{Service, State},
    run::Event,
};

/// Which step a write is about: the run, the service task in it and the step's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepKey {
    pub run_id: Uuid,
    pub service: Service,
    pub ordinal: i64,
}

/// What a new run consists of, fully planned before anything is executed.
pub struct NewRun {
    pub id: Uuid,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub requested_by: String,
    pub idempotency: Option<(String, String)>,
    /// The release the run follows (see [`crate::run::Run::csm_release`]).
    pub csm_release: Option<crate::release::ReleaseInForce>,
    /// What the run does with the etcd clusters (see [`crate::run::Run::etcd`]).
    pub etcd: crate::model::EtcdMode,
    pub backup: Option<String>,
    pub confirm: Vec<String>,
    pub discard_newer: bool,
    pub tasks: Vec<NewTask>,
}

pub struct NewTask {
    pub service: Service,
    pub steps: Vec<NewStep>,
}

pub struct NewStep {
    pub name: String,
    pub spec: Value,
}

/// A step as the runner needs it to execute: its position, plan and anything saved earlier.
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub ordinal: i64,
    pub name: String,
    pub spec: Value,
    pub state: State,
    pub data: Option<Value>,
}

/// History filters and keyset pagination for `GET /repopulations`.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub state: Option<State>,
    pub service: Option<Service>,
    /// Only runs older than this id (the previous page's last id).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// A run interrupted by the end of the previous process, as found at start.
#[derive(Clone, Debug)]
pub struct Interrupted {
    pub run_id: Uuid,
    pub steps: Vec<(Service, String)>,
}

/// An event just appended to a run's log, as broadcast to live followers (SSE).
#[derive(Clone, Debug)]
pub struct AppendedEvent {
    pub run_id: Uuid,
    pub event: Event,
}
