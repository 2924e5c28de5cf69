//! What the runner refuses, and why, in words a caller can act on.

use uuid::Uuid;

use crate::{
    model::{EtcdMode, Service, State},
    release::Release,
    store::StoreError,
};

use super::detect::DetectError;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("service {service} is already being repopulated by run {run_id}")]
    Conflict { service: Service, run_id: Uuid },
    #[error("idempotency key {key:?} was used for run {run_id} with a different request")]
    IdempotencyMismatch { key: String, run_id: Uuid },
    #[error("no handler for {}: this build supports {}", list(.requested), list(.supported))]
    NotImplemented {
        requested: Vec<Service>,
        supported: Vec<Service>,
    },
    #[error("{}: not part of CSM {release} (its runbook lists {})", quoted(.services), list(.supported))]
    NotInRelease {
        services: Vec<Service>,
        release: Release,
        supported: Vec<Service>,
    },
    #[error(
        "a real etcd {mode} run may rebuild or restore every etcd cluster it touches: confirm \
         exactly {} (\"confirm\": {}); the request confirmed {}",
        names(.needed), json_list(.needed), names(.given)
    )]
    Unconfirmed {
        mode: EtcdMode,
        /// The clusters the run may touch: what `confirm` must name.
        needed: Vec<String>,
        /// What the request's `confirm` named.
        given: Vec<String>,
    },
    #[error(
        "backup {backup:?} is one backup of one etcd cluster, but this run would restore {}: \
         name one service's cluster per run, or leave backup out to restore each from its newest",
        names(.clusters)
    )]
    BackupAmbiguous {
        backup: String,
        clusters: Vec<String>,
    },
    #[error(transparent)]
    Release(#[from] DetectError),
    #[error("run {0} not found")]
    NotFound(Uuid),
    #[error("run {run_id} is {state}; only {allowed} runs can be {verb}")]
    WrongState {
        run_id: Uuid,
        state: State,
        allowed: &'static str,
        verb: &'static str,
    },
    #[error(
        "run {run_id} was interrupted while it recovered the etcd cluster {cluster}, and may \
         have left it mid-recovery: resume it (POST /repopulations/{run_id}/resume), or abandon \
         it (POST /repopulations/{run_id}/abandon, role recover) to start a new recovery of \
         {cluster}"
    )]
    InterruptedRecovery { run_id: Uuid, cluster: String },
    #[error(
        "run {run_id} cannot be resumed: {why}. Resuming it would act on a cluster it no longer \
         knows; abandon it (POST /repopulations/{run_id}/abandon) and start a new run, which \
         weighs the cluster as it is"
    )]
    ResumeStale { run_id: Uuid, why: String },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn quoted(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| format!("{:?}", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names for a message: `a, b`, or `none`.
pub(super) fn names(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Names as the JSON array a request would carry.
pub(super) fn json_list(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_default()
}

pub(super) fn list(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
