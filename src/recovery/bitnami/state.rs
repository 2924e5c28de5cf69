//! What the Bitnami sequence journals: its phases, and what it saved before each.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::EnvVar;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recovery::decision::Decision;

pub const STATE_VAR: &str = "ETCD_INITIAL_CLUSTER_STATE";
pub const START_VAR: &str = "ETCD_START_FROM_SNAPSHOT";
pub const DIR_VAR: &str = "ETCD_INIT_SNAPSHOTS_DIR";
pub const FILE_VAR: &str = "ETCD_INIT_SNAPSHOT_FILENAME";
/// CSM's cray-etcd-base sets it to `yes`: a member that starts with data and finds no quorum
/// restores `/snapshots/db-*` (see the put-back).
pub const DR_VAR: &str = "ETCD_DISASTER_RECOVERY";
pub(super) const VARS: [&str; 5] = [STATE_VAR, START_VAR, DIR_VAR, FILE_VAR, DR_VAR];

/// Where the Bitnami pods mount the snapshotter PVC (`restore_from_backup`'s
/// `/snapshots/<cluster>-bitnami-etcd`).
pub const POD_SNAPSHOTS_DIR: &str = "/snapshots";

/// The failpoint armed in a put-back, between the environment and the replica count.
pub const PUT_BACK_FAILPOINT: &str = "etcd-recover:putting-back";

/// CSM's scripts scale back to three members; used only when the set is found at 0 replicas
/// with no data PVCs to count.
pub(super) const CSM_REPLICAS: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Stored,
    ScaledDown,
    EnvSet,
    PvcsDeleted,
    ScaledUp,
    Healthy,
    EnvRestored,
    Settled,
}

impl Phase {
    pub(super) const ALL: [Phase; 8] = [
        Phase::Stored,
        Phase::ScaledDown,
        Phase::EnvSet,
        Phase::PvcsDeleted,
        Phase::ScaledUp,
        Phase::Healthy,
        Phase::EnvRestored,
        Phase::Settled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stored => "stored",
            Phase::ScaledDown => "scaled-down",
            Phase::EnvSet => "env-set",
            Phase::PvcsDeleted => "pvcs-deleted",
            Phase::ScaledUp => "scaled-up",
            Phase::Healthy => "healthy",
            Phase::EnvRestored => "env-restored",
            Phase::Settled => "settled",
        }
    }

    /// The failpoint armed after this phase is journalled.
    pub fn failpoint(self) -> String {
        format!("etcd-recover:{}", self.as_str())
    }
}

/// One journalled phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PhaseRecord {
    pub(super) phase: Phase,
    pub(super) at: DateTime<Utc>,
    pub(super) what: String,
}

/// The StatefulSet put back after a failure, timeout or cancel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PutBack {
    pub(super) at: DateTime<Utc>,
    /// Why the sequence stopped.
    pub(super) why: String,
    /// The last phase completed before it stopped.
    pub(super) after: Option<Phase>,
    pub(super) replicas: i32,
    pub(super) env: Vec<EnvVar>,
    /// What could not be put back (empty: all of it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StatefulSetJournal {
    pub(super) cluster: String,
    pub(super) statefulset_uid: String,
    pub(super) decision: Decision,
    /// The replica count to scale back to.
    pub(super) replicas: i32,
    /// Where it came from when the set was not at its count (found at 0 replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) replicas_from: Option<String>,
    /// The etcd container: its index in the pod template and name.
    pub(super) container_index: usize,
    pub(super) container: String,
    /// The four variables as they were (absent ones are not listed).
    pub(super) original_env: Vec<EnvVar>,
    /// What is set for the recovery (absent: removed).
    pub(super) recovery_env: Vec<EnvVar>,
    /// What is set afterwards.
    pub(super) restored_env: Vec<EnvVar>,
    /// The PVCs deleted (`data-<sts>-N`, N < replicas).
    pub(super) pvcs: Vec<String>,
    /// The last phase completed.
    pub(super) phase: Option<Phase>,
    /// Every phase completed, in every attempt.
    pub(super) phases: Vec<PhaseRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) put_back: Vec<PutBack>,
    /// Set by a put-back: the next attempt starts over after `stored`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) start_over: bool,
    /// The member pods Ready after the scale-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) members: Vec<String>,
    /// The cluster's health at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) health: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) dry_run: bool,
    /// The StatefulSet as the last journalled write left it (what a resume compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) observed: Option<Observed>,
    /// The restore failed after its data PVCs were deleted; what the run did instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fallback: Option<Fallback>,
    /// A cancel that arrived once the data PVCs were being deleted: the recovery was finished
    /// first. Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cancel_deferred: Option<String>,
    /// What the first look found left by an earlier recovery (and cleaned up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) leftover: Option<String>,
}

/// The StatefulSet after a journalled write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Observed {
    pub(super) generation: i64,
    pub(super) replicas: i32,
    /// The four variables.
    pub(super) env: Vec<EnvVar>,
    /// The data PVCs (`data-<sts>-N`) and their uids.
    pub(super) pvcs: BTreeMap<String, String>,
}

/// A failed restore, and the recovery run instead.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Fallback {
    pub(super) at: DateTime<Utc>,
    /// What failed.
    pub(super) from: Decision,
    /// What was done instead: this run's safety snapshot restored, or a rebuild.
    pub(super) to: Decision,
    pub(super) why: String,
}

/// How long a put-back waits for the members to be back and the cluster healthy before the
/// step ends (within the runner's margin beyond `[recovery] timeout`).
pub(super) const PUT_BACK_WAIT: Duration = Duration::from_secs(120);
/// A member pod restarted this many times and waiting in `CrashLoopBackOff` fails the
/// recovery's wait at once, rather than at the timeout.
pub(super) const CRASH_LOOP_RESTARTS: i32 = 2;
/// The annotation a recovery sets on the StatefulSet it changes: the run that changed it last.
pub const RUN_ANNOTATION: &str = "etcd-repopulator.cray-hpe.github.io/recovery-run";

impl Phase {
    /// The phase after `done` (the first one when nothing is done).
    pub(super) fn after(done: Option<Phase>) -> Option<Phase> {
        match done {
            None => Some(Phase::Stored),
            Some(done) => Phase::ALL.into_iter().find(|p| *p > done),
        }
    }
}
