//! `etcd-recover` on the Bitnami layout (CSM ≥ 1.5): what CSM's `restore_from_backup` and
//! `rebuild_cluster` do, crash-safe and idempotent. Phases, each journalled (with a failpoint
//! `etcd-recover:<phase>` after it) before the next starts:
//!
//! 1. `stored`: the StatefulSet's replica count and the original values of the four
//!    environment variables of its etcd container, before anything changes;
//! 2. `scaled-down`: scaled to 0 (the `scale` subresource) and its pods gone;
//! 3. `env-set`: `ETCD_INITIAL_CLUSTER_STATE=new` (a restore also sets
//!    `ETCD_START_FROM_SNAPSHOT=yes`, `ETCD_INIT_SNAPSHOTS_DIR=/snapshots/<sts>` and
//!    `ETCD_INIT_SNAPSHOT_FILENAME=<file>`) in the pod template;
//! 4. `pvcs-deleted`: the PVCs `data-<sts>-N` (N < replicas) deleted and gone;
//! 5. `scaled-up`: scaled back to the stored count;
//! 6. `healthy`: every member pod Ready (watched) and the cluster healthy through its client
//!    Service;
//! 7. `env-restored`: `ETCD_INITIAL_CLUSTER_STATE=existing`, `ETCD_START_FROM_SNAPSHOT=no`
//!    (when it was set), the snapshot variables as they were;
//! 8. `settled`: the rollout of that change complete and the cluster healthy again.
//!
//! The rules that govern every ending, stated once:
//!
//! - **Point of no return.** Once the data PVCs are being deleted (phase `pvcs-deleted` and
//!   after), the old data is gone: a cancel no longer stops the sequence, which goes on to a
//!   healthy cluster with its environment back, and the step then ends `cancelled`, saying
//!   so. Only the service stopping (SIGTERM) interrupts it there, at the next journalled
//!   phase, leaving the journal for a resume to carry on from.
//! - **A restore that fails past that point** (its pods crash-loop, or it times out) does not
//!   leave an empty cluster crash-looping with `existing`: the sequence runs again from
//!   `scaled-down` with this run's safety snapshot (what the cluster held when the run began)
//!   when there is one, else as a rebuild (empty, `new`); the step ends `failed` and says which.
//! - **Before that point**, a failure, timeout or cancel puts the StatefulSet back (replicas
//!   and environment) and waits until its members are back and it is healthy, before the step
//!   ends; the message says what was measured then. A later attempt after a put-back starts
//!   over from `scaled-down`, unless the cluster had been recovered (`healthy`): then it carries
//!   on with `env-restored` and `settled`.
//! - **A resume** continues after the last journalled phase (each phase sets absolute values,
//!   so redoing one a crash interrupted is harmless), but only if the StatefulSet is as the
//!   journal left it (`observed`: generation, replicas, environment, PVCs; see
//!   [`resume_blocker`]) and, before the data is deleted, if the cluster holds nothing newer
//!   than what the assessment weighed.
//! - No ending leaves `ETCD_INITIAL_CLUSTER_STATE=new`, `ETCD_START_FROM_SNAPSHOT=yes` or the
//!   snapshot variables on the template, and a StatefulSet found with them (left mid-recovery)
//!   is cleaned of them.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::EnvVar};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use tokio_util::sync::CancellationToken;

use super::assess::{Assessment, Decision, Discarded, assessed};
use crate::{
    cluster::{Cluster, ClusterError, ObjectRef},
    etcd::{
        backups::Backups,
        layout::{self, EtcdLayout, Found},
    },
    model::State,
    recovery::ETCD_SAFETY_SNAPSHOT,
    step::{StepContext, StepError, StepOutcome},
};

pub const STATE_VAR: &str = "ETCD_INITIAL_CLUSTER_STATE";
pub const START_VAR: &str = "ETCD_START_FROM_SNAPSHOT";
pub const DIR_VAR: &str = "ETCD_INIT_SNAPSHOTS_DIR";
pub const FILE_VAR: &str = "ETCD_INIT_SNAPSHOT_FILENAME";
/// CSM's cray-etcd-base sets it to `yes`: a member that starts with data and finds no quorum
/// restores `/snapshots/db-*` (see the put-back).
pub const DR_VAR: &str = "ETCD_DISASTER_RECOVERY";
const VARS: [&str; 5] = [STATE_VAR, START_VAR, DIR_VAR, FILE_VAR, DR_VAR];

/// Where the Bitnami pods mount the snapshotter PVC (`restore_from_backup`'s
/// `/snapshots/<cluster>-bitnami-etcd`).
pub const POD_SNAPSHOTS_DIR: &str = "/snapshots";

/// The failpoint armed in a put-back, between the environment and the replica count.
pub const PUT_BACK_FAILPOINT: &str = "etcd-recover:putting-back";

/// CSM's scripts scale back to three members; used only when the set is found at 0 replicas
/// with no data PVCs to count.
const CSM_REPLICAS: i32 = 3;

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
    const ALL: [Phase; 8] = [
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
struct PhaseRecord {
    phase: Phase,
    at: DateTime<Utc>,
    what: String,
}

/// The StatefulSet put back after a failure, timeout or cancel.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PutBack {
    at: DateTime<Utc>,
    /// Why the sequence stopped.
    why: String,
    /// The last phase completed before it stopped.
    after: Option<Phase>,
    replicas: i32,
    env: Vec<EnvVar>,
    /// What could not be put back (empty: all of it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    cluster: String,
    statefulset_uid: String,
    decision: Decision,
    /// The replica count to scale back to.
    replicas: i32,
    /// Where it came from when the set was not at its count (found at 0 replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas_from: Option<String>,
    /// The etcd container: its index in the pod template and name.
    container_index: usize,
    container: String,
    /// The four variables as they were (absent ones are not listed).
    original_env: Vec<EnvVar>,
    /// What is set for the recovery (absent: removed).
    recovery_env: Vec<EnvVar>,
    /// What is set afterwards.
    restored_env: Vec<EnvVar>,
    /// The PVCs deleted (`data-<sts>-N`, N < replicas).
    pvcs: Vec<String>,
    /// The last phase completed.
    phase: Option<Phase>,
    /// Every phase completed, in every attempt.
    phases: Vec<PhaseRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    put_back: Vec<PutBack>,
    /// Set by a put-back: the next attempt starts over after `stored`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    start_over: bool,
    /// The member pods Ready after the scale-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<String>,
    /// The cluster's health at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    /// The StatefulSet as the last journalled write left it (what a resume compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed: Option<Observed>,
    /// The restore failed after its data PVCs were deleted; what the run did instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback: Option<Fallback>,
    /// A cancel that arrived once the data PVCs were being deleted: the recovery was finished
    /// first. Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancel_deferred: Option<String>,
    /// What the first look found left by an earlier recovery (and cleaned up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leftover: Option<String>,
}

/// The StatefulSet after a journalled write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Observed {
    generation: i64,
    replicas: i32,
    /// The four variables.
    env: Vec<EnvVar>,
    /// The data PVCs (`data-<sts>-N`) and their uids.
    pvcs: BTreeMap<String, String>,
}

/// A failed restore, and the recovery run instead.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fallback {
    at: DateTime<Utc>,
    /// What failed.
    from: Decision,
    /// What was done instead: this run's safety snapshot restored, or a rebuild.
    to: Decision,
    why: String,
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, StepError> {
    serde_json::to_value(value).map_err(|e| StepError::BadData(e.to_string()))
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// `list` with the variables of `wanted` set to their values and the other `VARS` removed;
/// the rest is kept, in order; new ones go last.
fn with_vars(list: &[EnvVar], wanted: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = list
        .iter()
        .filter(|v| !VARS.contains(&v.name.as_str()) || wanted.iter().any(|w| w.name == v.name))
        .map(|v| {
            wanted
                .iter()
                .find(|w| w.name == v.name)
                .cloned()
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    for w in wanted {
        if !out.iter().any(|v| v.name == w.name) {
            out.push(w.clone());
        }
    }
    out
}

/// What the names of the StatefulSet's data PVCs start with (`data-<sts>-N`, as CSM's scripts
/// delete them: by name).
fn data_pvc_prefix(sts: &str) -> String {
    format!("data-{sts}-")
}

/// The four variables as `list` has them.
fn vars_of(list: &[EnvVar]) -> Vec<EnvVar> {
    list.iter()
        .filter(|v| VARS.contains(&v.name.as_str()))
        .cloned()
        .collect()
}

fn describe_env(vars: &[EnvVar]) -> String {
    let mut parts: Vec<String> = vars
        .iter()
        .map(|v| match (&v.value, &v.value_from) {
            (Some(value), _) => format!("{}={value}", v.name),
            (None, Some(_)) => format!("{}=(from a reference)", v.name),
            (None, None) => format!("{}=", v.name),
        })
        .collect();
    if parts.is_empty() {
        parts.push("none of the etcd variables set".to_owned());
    }
    parts.join(", ")
}

/// The etcd container of the set's pod template: `etcd`, else the first.
fn etcd_container(set: &StatefulSet) -> Option<(usize, String, Vec<EnvVar>)> {
    let containers = &set.spec.as_ref()?.template.spec.as_ref()?.containers;
    let index = containers
        .iter()
        .position(|c| c.name == "etcd")
        .or((!containers.is_empty()).then_some(0))?;
    let c = &containers[index];
    Some((index, c.name.clone(), c.env.clone().unwrap_or_default()))
}

fn container_env(set: &StatefulSet, index: usize) -> Vec<EnvVar> {
    set.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.get(index))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

/// What the recovery sets, and what is set back afterwards (CSM's `set env` calls).
fn recovery_envs(
    decision: &Decision,
    cluster: &str,
    original: &[EnvVar],
) -> (Vec<EnvVar>, Vec<EnvVar>) {
    let original_of = |name: &str| original.iter().find(|v| v.name == name).cloned();
    let mut during = vec![env(STATE_VAR, "new")];
    let mut after = vec![env(STATE_VAR, "existing")];
    let restoring = match decision {
        Decision::Restore { file, .. } => {
            during.push(env(START_VAR, "yes"));
            during.push(env(DIR_VAR, &format!("{POD_SNAPSHOTS_DIR}/{cluster}")));
            during.push(env(FILE_VAR, file));
            true
        }
        _ => {
            // A rebuild does not start from a snapshot, whatever the set says.
            if original_of(START_VAR).is_some() {
                during.push(env(START_VAR, "no"));
            }
            false
        }
    };
    if restoring || original_of(START_VAR).is_some() {
        after.push(env(START_VAR, "no"));
    }
    // Disaster recovery stays as it was (it only matters to a member that starts with data).
    during.extend(original_of(DR_VAR));
    after.extend(original_of(DR_VAR));
    // The snapshot variables are removed afterwards: with `ETCD_START_FROM_SNAPSHOT=no` they
    // mean nothing, and left behind they name a snapshot the next restore may not want.
    if !restoring {
        during.extend([DIR_VAR, FILE_VAR].into_iter().filter_map(original_of));
    }
    (during, after)
}

struct Recover<'a, 'b> {
    ctx: &'a StepContext<'b>,
    found: Found,
    object: ObjectRef,
    deadline: Instant,
    /// `[recovery] timeout`, which `deadline` is.
    timeout: Duration,
    saved: Saved,
    /// What `etcd-assess` weighed (a resume checks it still holds before it deletes data).
    assessment: Assessment,
    /// The safety snapshot step `etcd-safety-snapshot` took, if it took one.
    safety: Option<SafetyTaken>,
    /// Starting over after an earlier attempt's put-back, which may not have completed (a
    /// crash in it): a stop before the scale-down puts the set back too.
    restarting: bool,
}

pub async fn run(
    ctx: &StepContext<'_>,
    cluster: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let deadline = Instant::now() + timeout;
    let assessment = assessed(ctx).await?;
    let decision = assessment.decision.clone();
    if decision == Decision::LeaveAlone {
        return StepOutcome::with_state(
            State::Skipped,
            format!(
                "nothing to recover: {} (step etcd-assess)",
                assessment.reason
            ),
            serde_json::json!({ "cluster": cluster, "decision": decision }),
        );
    }
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the StatefulSet {cluster} does not exist in namespace {}: a restore or rebuild \
             needs it (it is installed by the service's Helm chart, cray-etcd-base)",
            ctx.cluster.namespace()
        )));
    };
    if found.layout != EtcdLayout::Bitnami {
        return Err(StepError::Failed(format!(
            "{cluster} is an {} cluster, not a Bitnami StatefulSet",
            found.layout.as_str()
        )));
    }
    let object = found.layout.object(&found.name);
    let earlier: Option<Saved> = ctx
        .saved
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .filter(|s: &Saved| s.phase.is_some() && !s.dry_run);
    let saved = match earlier {
        Some(saved) => saved,
        None => first_look(ctx, &found, decision).await?,
    };
    let recover = Recover {
        ctx,
        found,
        object,
        deadline,
        timeout,
        saved,
        assessment,
        safety: safety_taken(ctx).await?,
        restarting: false,
    };
    if ctx.dry_run {
        return recover.plan().await;
    }
    recover.execute().await
}

/// A safety snapshot this run took, as step `etcd-safety-snapshot` stored it.
#[derive(Clone, Debug, Deserialize)]
struct SafetyTaken {
    #[serde(rename = "backup")]
    name: String,
    #[serde(default)]
    empty: bool,
}

async fn safety_taken(ctx: &StepContext<'_>) -> Result<Option<SafetyTaken>, StepError> {
    Ok(ctx
        .journal
        .earlier_step_data(ETCD_SAFETY_SNAPSHOT)
        .await?
        .and_then(|data| serde_json::from_value(data).ok()))
}

/// What the step stores before it changes anything.
async fn first_look(
    ctx: &StepContext<'_>,
    found: &Found,
    decision: Decision,
) -> Result<Saved, StepError> {
    let name = &found.name;
    let set = ctx
        .cluster
        .statefulset(name)
        .await?
        .ok_or_else(|| StepError::Failed(format!("the StatefulSet {name} disappeared")))?;
    let Some((container_index, container, env)) = etcd_container(&set) else {
        return Err(StepError::Failed(format!(
            "the StatefulSet {name} has no container in its pod template"
        )));
    };
    let pvcs_found: Vec<String> = ctx
        .cluster
        .list_pvcs(&data_pvc_prefix(name))
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    let mut replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut replicas_from = None;
    if replicas == 0 {
        let counted = (0..)
            .take_while(|n| pvcs_found.contains(&format!("data-{name}-{n}")))
            .count() as i32;
        replicas = if counted > 0 { counted } else { CSM_REPLICAS };
        replicas_from = Some(format!(
            "the StatefulSet was at 0 replicas; {replicas} from {}",
            if counted > 0 {
                "its data PVCs"
            } else {
                "CSM's default (its scripts scale back to 3)"
            }
        ));
    }
    let (original_env, leftover) = without_leftovers(&vars_of(&env));
    if let Some(leftover) = &leftover {
        ctx.journal
            .log(&format!(
                "StatefulSet {name} carries {leftover} ({} replica(s)): those values are not \
                 kept; it ends with ETCD_INITIAL_CLUSTER_STATE=existing and without them",
                set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            ))
            .await;
    }
    let (recovery_env, restored_env) = recovery_envs(&decision, name, &original_env);
    let pvcs = (0..replicas)
        .filter_map(|n| found.layout.data_pvc(name, i64::from(n)))
        .collect();
    Ok(Saved {
        cluster: name.clone(),
        statefulset_uid: set.uid().unwrap_or_default(),
        decision,
        replicas,
        replicas_from,
        container_index,
        container,
        original_env,
        recovery_env,
        restored_env,
        pvcs,
        phase: None,
        phases: Vec::new(),
        put_back: Vec::new(),
        start_over: false,
        members: Vec::new(),
        health: None,
        dry_run: false,
        observed: None,
        fallback: None,
        cancel_deferred: None,
        leftover,
    })
}

/// The four variables as a clean set has them, and what an earlier recovery left on it
/// (`ETCD_INITIAL_CLUSTER_STATE=new`, `ETCD_START_FROM_SNAPSHOT=yes`, the snapshot variables),
/// if anything.
fn without_leftovers(vars: &[EnvVar]) -> (Vec<EnvVar>, Option<String>) {
    let value = |name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.clone())
    };
    let mid_recovery =
        value(STATE_VAR).as_deref() == Some("new") || value(START_VAR).as_deref() == Some("yes");
    let snapshot_vars = vars.iter().any(|v| v.name == DIR_VAR || v.name == FILE_VAR);
    if !mid_recovery && !snapshot_vars {
        return (vars.to_vec(), None);
    }
    let left: Vec<EnvVar> = vars
        .iter()
        .filter(|v| v.name != STATE_VAR && v.name != START_VAR)
        .filter(|v| v.name != DIR_VAR && v.name != FILE_VAR)
        .cloned()
        .chain([env(STATE_VAR, "existing")])
        .chain(value(START_VAR).map(|_| env(START_VAR, "no")))
        .collect();
    let found = describe_env(&vars_of(vars));
    (
        left,
        Some(if mid_recovery {
            format!("left mid-recovery: {found}")
        } else {
            format!("snapshot variables an earlier restore left: {found}")
        }),
    )
}

/// How long a put-back waits for the members to be back and the cluster healthy before the
/// step ends (within the runner's margin beyond `[recovery] timeout`).
const PUT_BACK_WAIT: Duration = Duration::from_secs(120);
/// A member pod restarted this many times and waiting in `CrashLoopBackOff` fails the
/// recovery's wait at once, rather than at the timeout.
const CRASH_LOOP_RESTARTS: i32 = 2;
/// The annotation a recovery sets on the StatefulSet it changes: the run that changed it last.
pub const RUN_ANNOTATION: &str = "etcd-repopulator.cray-hpe.github.io/recovery-run";

impl Phase {
    /// The phase after `done` (the first one when nothing is done).
    fn after(done: Option<Phase>) -> Option<Phase> {
        match done {
            None => Some(Phase::Stored),
            Some(done) => Phase::ALL.into_iter().find(|p| *p > done),
        }
    }
}

impl Recover<'_, '_> {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn what(&self) -> String {
        let cluster = &self.saved.cluster;
        let now = match &self.saved.decision {
            Decision::Restore { backup, .. } => format!("restore of {cluster} from {backup}"),
            _ => format!("rebuild of {cluster}"),
        };
        match &self.saved.fallback {
            Some(fallback) => format!("{now} (after the {} failed)", describe(&fallback.from)),
            None => now,
        }
    }

    /// The dry run: the plan, with each write sent as a server-side dry run (so permissions
    /// and the objects are checked) and nothing changed.
    async fn plan(mut self) -> Result<StepOutcome, StepError> {
        let ctx = self.ctx;
        let cluster = ctx.cluster;
        let s = &self.saved;
        cluster.scale_statefulset(&s.cluster, 0, true).await?;
        let set = cluster.statefulset(&s.cluster).await?.unwrap_or_default();
        let current = container_env(&set, s.container_index);
        cluster
            .set_container_env(
                &s.cluster,
                s.container_index,
                &s.container,
                &with_vars(&current, &s.recovery_env),
                true,
            )
            .await?;
        let existing: Vec<(String, String)> = cluster
            .list_pvcs(&data_pvc_prefix(&s.cluster))
            .await?
            .iter()
            .filter(|p| s.pvcs.contains(&p.name_any()))
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect();
        for (name, uid) in &existing {
            cluster
                .delete_and_wait_gone(
                    &ObjectRef::persistent_volume_claim(name),
                    uid,
                    true,
                    self.remaining(),
                    ctx.cancel,
                )
                .await?;
        }
        let discarded = match &self.assessment.discarded {
            Some(lost) => format!(
                "; it discards what the cluster holds beyond the backup ({}), kept in the \
                 safety snapshot",
                lost.summary
            ),
            None => String::new(),
        };
        let message = format!(
            "dry run: the {} would scale StatefulSet {} from {} replica(s) to 0 and wait until \
             its pods are gone; set {} in container {}; delete the PVCs {}; scale back to {}; \
             wait until every member is Ready and the cluster is healthy through Service {}; \
             then set {} and wait for that rollout{discarded}",
            self.what(),
            s.cluster,
            s.replicas,
            describe_env(&s.recovery_env),
            s.container,
            if existing.is_empty() {
                "(none exist)".to_owned()
            } else {
                existing
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            s.replicas,
            self.found.layout.client_service(&s.cluster),
            describe_env(&s.restored_env),
        );
        self.saved.dry_run = true;
        StepOutcome::done(message, to_value(&self.saved)?)
    }

    async fn execute(mut self) -> Result<StepOutcome, StepError> {
        let ctx = self.ctx;
        if self.saved.start_over {
            let stopped = self.saved.phase.map(Phase::as_str).unwrap_or("nothing");
            ctx.journal
                .log(&format!(
                    "an earlier attempt stopped after {stopped} and put the StatefulSet back (or \
                     was stopped itself while it did); starting over from the stored replica \
                     count and environment"
                ))
                .await;
            self.saved.phase = Some(Phase::Stored);
            self.saved.start_over = false;
            self.restarting = true;
        } else if let Some(phase) = self.saved.phase {
            ctx.journal
                .log(&format!(
                    "resuming the {} after phase {} (journalled by an earlier attempt)",
                    self.what(),
                    phase.as_str()
                ))
                .await;
        }
        // An earlier attempt decided on what the cluster held then: before its data is
        // deleted, a resume makes sure nothing newer has been written since.
        if ctx.saved.is_some()
            && self.saved.phase < Some(Phase::EnvSet)
            && let Some(changed) = self.newer_than_assessed().await?
        {
            let err = StepError::Failed(format!(
                "the cluster changed since step etcd-assess weighed it: {changed}; this run's \
                 decision ({}) no longer holds. Start a new run, which weighs it again",
                self.what()
            ));
            return Err(self.stop(err, None).await);
        }
        let uid = self.saved.statefulset_uid.clone();
        if self.saved.phase.is_none() {
            ctx.announce(
                &self.object,
                &uid,
                true,
                "EtcdRecover",
                &format!(
                    "{}: scaling to 0, deleting the data PVCs, scaling back to {}",
                    self.what(),
                    self.saved.replicas
                ),
            )
            .await;
        }
        while let Some(phase) = Phase::after(self.saved.phase) {
            // Between the deletion of the data PVCs and a healthy cluster, the old data is gone
            // and the new is not there yet: a cancel is noted and the recovery finished (to
            // its end); the process stopping interrupts it at a phase boundary, leaving the
            // StatefulSet to come up as it was set and the journal for a resume.
            let no_return = (Phase::PvcsDeleted..=Phase::Healthy).contains(&phase);
            let committed = no_return || self.saved.cancel_deferred.is_some();
            if no_return && ctx.shutdown.is_cancelled() {
                return Err(self.interrupted(phase));
            }
            if committed && !ctx.shutdown.is_cancelled() {
                self.note_cancel(phase).await?;
            } else if ctx.cancel.is_cancelled() {
                let why = format!("cancelled before phase {}", phase.as_str());
                return Err(self.stop(StepError::Cancelled(why), None).await);
            }
            let token = if committed { ctx.shutdown } else { ctx.cancel };
            // A cancel that arrives while a committed phase waits is noted at once (the run's
            // log and journal say the recovery is being finished first), not at its end.
            let base = self.saved.clone();
            let doing = self.what();
            let logged = std::sync::atomic::AtomicBool::new(false);
            let noted = async {
                if !committed || base.cancel_deferred.is_some() {
                    return std::future::pending().await;
                }
                ctx.cancel.cancelled().await;
                let mut noted = base.clone();
                let why = deferred_cancel(phase, &base.cluster);
                ctx.journal
                    .log(&format!("{why}: finishing the {doing} first"))
                    .await;
                noted.cancel_deferred = Some(why);
                if let Ok(value) = to_value(&noted) {
                    let _ = ctx.journal.save(&value).await;
                }
                logged.store(true, std::sync::atomic::Ordering::Relaxed);
                std::future::pending().await
            };
            let work = async {
                tokio::select! {
                    result = self.phase(phase, token) => result,
                    result = noted => result,
                }
            };
            let result = work.await;
            if logged.load(std::sync::atomic::Ordering::Relaxed) {
                self.saved.cancel_deferred = Some(deferred_cancel(phase, &self.saved.cluster));
            }
            let what = match result {
                Ok(what) => what,
                Err(err) if no_return && err.is_cancelled() => return Err(self.interrupted(phase)),
                Err(err) => {
                    let err = self.timed_out(err);
                    // The restore (or bootstrap) itself failed in the pods: bring the cluster
                    // back some other way rather than leave it empty.
                    let failed_in_pods = matches!(phase, Phase::ScaledUp | Phase::Healthy);
                    if failed_in_pods
                        && self.saved.fallback.is_none()
                        && let Some(to) = self.fallback_for(&err).await
                    {
                        self.fall_back(to, &err).await?;
                        continue;
                    }
                    return Err(self.stop(err, Some(phase)).await);
                }
            };
            self.journal_phase(phase, what).await?;
        }
        self.finish(&uid).await
    }

    /// The step's ending once every phase is done: succeeded; `failed` when the cluster was
    /// brought back from a fallback; `cancelled` when a cancel came past the point of no
    /// return.
    async fn finish(&mut self, uid: &str) -> Result<StepOutcome, StepError> {
        let ctx = self.ctx;
        let measured = self.measure().await;
        let done = format!(
            "{}: done; {} member(s) Ready ({}), {}; {measured}",
            self.what(),
            self.saved.members.len(),
            self.saved.members.join(", "),
            describe_env(&self.saved.restored_env)
        );
        let discarded = match &self.assessment.discarded {
            Some(lost) if self.saved.fallback.is_none() => self.discarded_note(lost),
            _ => String::new(),
        };
        let warning = self.saved.fallback.is_some() || self.saved.cancel_deferred.is_some();
        ctx.announce(&self.object, uid, warning, "EtcdRecovered", &done)
            .await;
        if let Some(fallback) = self.saved.fallback.clone() {
            let instead = match &fallback.to {
                Decision::Restore { backup, .. } => format!(
                    "it was brought back from this run's safety snapshot {backup}: it holds what \
                     it held when this run began"
                ),
                _ => "there was no safety snapshot (the cluster did not answer when this run \
                      began), so it was brought up EMPTY (rebuilt)"
                    .to_owned(),
            };
            let message = format!(
                "the {} failed after its data PVCs were deleted ({}); {instead}. {done}. \
                 Backups: {}",
                describe(&fallback.from),
                fallback.why,
                self.remaining_backups()
            );
            return StepOutcome::failed(message, to_value(&self.saved)?);
        }
        if let Some(why) = self.saved.cancel_deferred.clone() {
            return Err(StepError::Cancelled(format!(
                "{why}; the recovery was finished first, so the run ends here: {done}{discarded}"
            )));
        }
        StepOutcome::done(format!("{done}{discarded}"), to_value(&self.saved)?)
    }

    /// What the message says of data a restore or rebuild discarded: where it is kept and the
    /// request that brings it back.
    fn discarded_note(&self, lost: &Discarded) -> String {
        let service = self.found.service_name();
        match self.safety.as_ref().map(|s| &s.name) {
            Some(snapshot) => format!(
                ". It discarded what the cluster held beyond the backup ({}); the safety \
                 snapshot {snapshot} holds it: to bring it back, POST /repopulations \
                 {{\"services\": [\"{service}\"], \"etcd\": \"restore\", \"backup\": \
                 \"{snapshot}\", \"confirm\": [\"{}\"], \"discard_newer\": true}}",
                lost.summary, self.saved.cluster
            ),
            None => format!(
                ". It discarded what the cluster held beyond the backup ({}); no safety \
                 snapshot could be taken of it",
                lost.summary
            ),
        }
    }

    /// A cancel that arrives past the point of no return is journalled and logged once; the
    /// recovery goes on.
    async fn note_cancel(&mut self, phase: Phase) -> Result<(), StepError> {
        if !self.ctx.cancel.is_cancelled() || self.saved.cancel_deferred.is_some() {
            return Ok(());
        }
        let why = deferred_cancel(phase, &self.saved.cluster);
        self.ctx
            .journal
            .log(&format!("{why}: finishing the {} first", self.what()))
            .await;
        self.saved.cancel_deferred = Some(why);
        self.ctx.journal.save(&to_value(&self.saved)?).await
    }

    /// The service is stopping past the point of no return: the step stops where it is,
    /// without a put-back; the journal says where a resume carries on.
    fn interrupted(&self, phase: Phase) -> StepError {
        let after = self.saved.phase.map(Phase::as_str).unwrap_or("nothing");
        StepError::Cancelled(format!(
            "the service stopped during the {}, before phase {} (after {after}; its data PVCs \
             were being deleted or are gone): resume this run to carry on from there",
            self.what(),
            phase.as_str()
        ))
    }

    /// A wait that ran out, said as `[recovery] timeout`'s.
    fn timed_out(&self, err: StepError) -> StepError {
        match err {
            StepError::Cluster(ClusterError::Timeout {
                waiting_for,
                last_seen,
                ..
            }) => StepError::Failed(format!(
                "[recovery] timeout ({}) ran out waiting for {waiting_for}; last seen: {last_seen}",
                humantime::format_duration(self.timeout)
            )),
            other => other,
        }
    }

    /// What to recover instead once the data PVCs are gone and the recovery failed: this run's
    /// safety snapshot (what the cluster held when the run began), fetched into the snapshotter
    /// directory if it is only in S3; else, after a failed restore, a rebuild. `None`: nothing
    /// better than a put-back (a rebuild that failed, without a safety snapshot).
    async fn fallback_for(&self, err: &StepError) -> Option<Decision> {
        let ctx = self.ctx;
        if let Some(name) = self.safety.as_ref().filter(|s| !s.empty).map(|s| &s.name) {
            let backups = Backups::new(ctx.recovery).recording(ctx.store);
            let fetched = async {
                let listed = backups
                    .list(&self.found.csm_service, &self.saved.cluster)
                    .await?;
                let Some(backup) = listed.iter().find(|b| &b.name == name) else {
                    return Ok(None);
                };
                backups.fetch(backup, &self.saved.cluster).await.map(Some)
            }
            .await;
            match fetched {
                Ok(Some(_)) => {
                    return Some(Decision::Restore {
                        backup: name.clone(),
                        file: name.clone(),
                    });
                }
                Ok(None) => {
                    ctx.journal
                        .log(&format!("the safety snapshot {name} is no longer listed"))
                        .await;
                }
                Err(e) => {
                    ctx.journal
                        .log(&format!(
                            "the safety snapshot {name} could not be fetched: {e}"
                        ))
                        .await;
                }
            }
        }
        let restoring = matches!(self.saved.decision, Decision::Restore { .. });
        if !restoring {
            ctx.journal
                .log(&format!(
                    "the rebuild failed ({err}) and there is no safety snapshot to bring the \
                     cluster back from"
                ))
                .await;
        }
        restoring.then_some(Decision::Rebuild)
    }

    /// Starts the sequence over from `scaled-down` to recover `to` instead, journalled first.
    async fn fall_back(&mut self, to: Decision, err: &StepError) -> Result<(), StepError> {
        let ctx = self.ctx;
        let from = self.saved.decision.clone();
        ctx.journal
            .log(&format!(
                "the {} failed after its data PVCs were deleted ({err}); bringing the cluster \
                 back with the {} instead",
                describe(&from),
                describe(&to)
            ))
            .await;
        let (during, after) = recovery_envs(&to, &self.saved.cluster, &self.saved.original_env);
        self.saved.fallback = Some(Fallback {
            at: Utc::now(),
            from,
            to: to.clone(),
            why: err.to_string(),
        });
        self.saved.decision = to;
        self.saved.recovery_env = during;
        self.saved.restored_env = after;
        self.saved.phase = Some(Phase::Stored);
        self.deadline = Instant::now() + self.timeout;
        ctx.journal.save(&to_value(&self.saved)?).await
    }

    /// Journals `phase` as done, with the StatefulSet as it left it, then the failpoint.
    async fn journal_phase(&mut self, phase: Phase, what: String) -> Result<(), StepError> {
        let ctx = self.ctx;
        self.saved.phase = Some(phase);
        self.saved.phases.push(PhaseRecord {
            phase,
            at: Utc::now(),
            what: what.clone(),
        });
        self.saved.observed = self.observe().await?;
        ctx.journal.save(&to_value(&self.saved)?).await?;
        ctx.journal
            .log(&format!("{}: {what}", phase.as_str()))
            .await;
        crate::failpoint::hit(&phase.failpoint());
        Ok(())
    }

    /// The StatefulSet and its data PVCs as they are now.
    async fn observe(&self) -> Result<Option<Observed>, StepError> {
        observe(self.ctx.cluster, &self.saved).await
    }

    /// The cluster's state, measured, in words: whether it serves and how many keys.
    async fn measure(&self) -> String {
        let ctx = self.ctx;
        match layout::report(ctx.cluster, &self.found, ctx.etcd).await {
            Ok(report) => describe_report(&report),
            Err(err) => format!("its state could not be read: {err}"),
        }
    }

    /// The backups a person could restore from now, newest first (a few).
    fn remaining_backups(&self) -> String {
        let usable: Vec<String> = self
            .assessment
            .backups
            .iter()
            .filter(|b| b.corrupt.is_none() && !b.empty)
            .take(3)
            .map(|b| format!("{} ({} old)", b.name, b.age))
            .collect();
        if usable.is_empty() {
            format!(
                "none usable was listed (GET /etcd-clusters/{}/backups)",
                self.saved.cluster
            )
        } else {
            format!(
                "{} (GET /etcd-clusters/{}/backups lists them all)",
                usable.join(", "),
                self.saved.cluster
            )
        }
    }

    /// What the cluster holds now that it did not when step etcd-assess weighed it, if
    /// anything.
    async fn newer_than_assessed(&self) -> Result<Option<String>, StepError> {
        let ctx = self.ctx;
        let report = layout::report(ctx.cluster, &self.found, ctx.etcd).await?;
        let now = match (report.serving, report.revision, report.keys) {
            (true, Some(revision), Some(keys)) => Some((revision, keys, "the cluster".to_owned())),
            _ => layout::probe_member_pods(ctx.cluster, &self.found, ctx.etcd)
                .await?
                .into_iter()
                .filter_map(|m| {
                    Some((
                        m.revision?,
                        m.keys.unwrap_or(0),
                        format!("member pod {}", m.pod),
                    ))
                })
                .max_by_key(|(revision, ..)| *revision),
        };
        Ok(match (&self.assessment.live, now) {
            (_, None) => None,
            (None, Some((revision, keys, source))) => (keys > 0).then(|| {
                format!(
                    "nothing answered then; now {source} holds {keys} key(s) at revision {revision}"
                )
            }),
            (Some(then), Some((revision, keys, source))) => (revision > then.revision).then(|| {
                format!(
                    "it was at revision {} then; now {source} is at revision {revision} ({keys} \
                     key(s))",
                    then.revision
                )
            }),
        })
    }

    /// Performs `phase`, its waits cancelled by `token`; returns what it did.
    async fn phase(
        &mut self,
        phase: Phase,
        token: &CancellationToken,
    ) -> Result<String, StepError> {
        let ctx = self.ctx;
        let cluster = ctx.cluster;
        let name = self.saved.cluster.clone();
        let selector = self.found.pod_selector();
        match phase {
            Phase::Stored => Ok(format!(
                "stored {} replica(s){} and the etcd environment ({}) of StatefulSet {name}",
                self.saved.replicas,
                self.saved
                    .replicas_from
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default(),
                describe_env(&self.saved.original_env)
            )),
            Phase::ScaledDown => {
                cluster
                    .annotate_statefulset(&name, RUN_ANNOTATION, &ctx.run_id.to_string())
                    .await?;
                cluster.scale_statefulset(&name, 0, false).await?;
                cluster
                    .wait_members_gone(&name, &selector, self.remaining(), token)
                    .await?;
                Ok(format!("scaled {name} to 0; its pods are gone"))
            }
            Phase::EnvSet => {
                let env = self.saved.recovery_env.clone();
                self.set_env(&env).await?;
                Ok(format!(
                    "set {} in container {}",
                    describe_env(&env),
                    self.saved.container
                ))
            }
            Phase::PvcsDeleted => {
                let pvcs = cluster.list_pvcs(&data_pvc_prefix(&name)).await?;
                let mut deleted = Vec::new();
                for pvc in pvcs
                    .iter()
                    .filter(|p| self.saved.pvcs.contains(&p.name_any()))
                {
                    let pvc_name = pvc.name_any();
                    cluster
                        .delete_and_wait_gone(
                            &ObjectRef::persistent_volume_claim(&pvc_name),
                            &pvc.uid().unwrap_or_default(),
                            false,
                            self.remaining(),
                            token,
                        )
                        .await?;
                    deleted.push(pvc_name);
                }
                Ok(if deleted.is_empty() {
                    format!("none of the PVCs {} exist", self.saved.pvcs.join(", "))
                } else {
                    format!("deleted the PVCs {}", deleted.join(", "))
                })
            }
            Phase::ScaledUp => {
                cluster
                    .scale_statefulset(&name, self.saved.replicas, false)
                    .await?;
                Ok(format!("scaled {name} back to {}", self.saved.replicas))
            }
            Phase::Healthy => {
                let ready = cluster.wait_members_ready(
                    &name,
                    &selector,
                    self.saved.replicas as usize,
                    self.remaining(),
                    token,
                );
                let members = tokio::select! {
                    members = ready => members?,
                    looping = self.crash_loop(token) => return Err(looping),
                };
                let health = self.wait_healthy(token).await?;
                self.saved.members = members.clone();
                self.saved.health = Some(health);
                Ok(format!(
                    "{} Ready and the cluster healthy through Service {}",
                    members.join(", "),
                    self.found.layout.client_service(&name)
                ))
            }
            Phase::EnvRestored => {
                self.set_env(&self.saved.restored_env.clone()).await?;
                Ok(format!(
                    "set {} in container {}",
                    describe_env(&self.saved.restored_env),
                    self.saved.container
                ))
            }
            Phase::Settled => {
                cluster
                    .wait_statefulset_rolled_out(&name, self.remaining(), token)
                    .await?;
                let health = self.wait_healthy(token).await?;
                self.saved.health = Some(health);
                Ok(format!(
                    "the rollout of the environment change is complete and {name} is healthy"
                ))
            }
        }
    }

    /// Resolves when a member pod crash-loops (the restore or bootstrap fails in it), with
    /// the error that says so; never while they start normally.
    async fn crash_loop(&self, token: &CancellationToken) -> StepError {
        let ctx = self.ctx;
        let selector = self.found.pod_selector();
        loop {
            match ctx
                .cluster
                .crash_looping_members(&self.saved.cluster, &selector, CRASH_LOOP_RESTARTS)
                .await
            {
                Ok(looping) if !looping.is_empty() => {
                    return StepError::Failed(format!(
                        "member pod(s) of {} crash-loop: {}",
                        self.saved.cluster,
                        looping.join("; ")
                    ));
                }
                Ok(_) => {}
                Err(err) => return StepError::Cluster(err),
            }
            tokio::select! {
                () = token.cancelled() => std::future::pending::<()>().await,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Sets the four variables to `wanted` (and removes the others), unless they are already.
    async fn set_env(&self, wanted: &[EnvVar]) -> Result<(), StepError> {
        let cluster = self.ctx.cluster;
        let s = &self.saved;
        let set = cluster
            .statefulset(&s.cluster)
            .await?
            .ok_or_else(|| StepError::Failed(format!("the StatefulSet {} is gone", s.cluster)))?;
        let current = container_env(&set, s.container_index);
        let target = with_vars(&current, wanted);
        if target != current {
            cluster
                .set_container_env(&s.cluster, s.container_index, &s.container, &target, false)
                .await?;
        }
        Ok(())
    }

    /// The cluster's report, once it says healthy, within the recovery's deadline.
    async fn wait_healthy(&self, token: &CancellationToken) -> Result<Value, StepError> {
        let report = wait_healthy(self.ctx, &self.found, self.deadline, token).await?;
        to_value(&report)
    }

    /// Puts the StatefulSet back (replica count, environment) after `err` stopped the
    /// sequence (in phase `attempted`, or between phases), waits until its members are back
    /// and it is healthy (unless the service is stopping), journals it, and returns the error
    /// saying what was measured then. Before the scale-down was sent, nothing was changed and
    /// nothing is put back.
    async fn stop(&mut self, err: StepError, attempted: Option<Phase>) -> StepError {
        let ctx = self.ctx;
        let after = self.saved.phase;
        let cancelled = err.is_cancelled();
        let why = err.to_string();
        let why = why
            .strip_prefix("cancelled while ")
            .unwrap_or(&why)
            .to_owned();
        let stopped_after = after.map(Phase::as_str).unwrap_or("nothing");
        if !self.restarting && after.max(attempted) < Some(Phase::ScaledDown) {
            let note = format!(
                "nothing was changed: StatefulSet {} was not scaled down",
                self.saved.cluster
            );
            ctx.journal.log(&note).await;
            let message = format!("{why}; {note}");
            return if cancelled {
                StepError::Cancelled(message)
            } else {
                StepError::Failed(message)
            };
        }
        let mut errors = Vec::new();
        // After `healthy` the cluster was recovered, and the put-back is what `env-restored`
        // does: a resume carries on from there (the environment, its rollout) and does not
        // delete the recovered data again. Before, a resume starts over from the scale to 0;
        // journalled before the first write, so that a crash during the put-back (the set half
        // put back, scaled up with its data PVCs in use) does not carry on after the last
        // journalled phase.
        let recovered = after >= Some(Phase::Healthy);
        self.saved.start_over = !recovered;
        if let Ok(value) = to_value(&self.saved)
            && let Err(e) = ctx.journal.save(&value).await
        {
            errors.push(format!("journal: {e}"));
        }
        let restored = self.saved.restored_env.clone();
        let data_kept = recovered || after.max(attempted) < Some(Phase::PvcsDeleted);
        // Scaled back up with their data, the members all start at once and none sees a
        // quorum: with ETCD_DISASTER_RECOVERY=yes (CSM's default) the image then looks for a
        // snapshot to restore at /snapshots/db-* (CSM keeps them in /snapshots/<sts>/), finds
        // none, and exits, for ever. So they come up with it off, and get it back (a rolling
        // update, one member at a time beside a healthy quorum) once the cluster is healthy.
        let scaled_down = !recovered && data_kept;
        let coming_up = match (scaled_down, disaster_recovery_off(&restored)) {
            (true, Some(off)) => off,
            _ => restored.clone(),
        };
        if let Err(e) = self.set_env(&coming_up).await {
            errors.push(format!("environment: {e}"));
        }
        crate::failpoint::hit(PUT_BACK_FAILPOINT);
        if let Err(e) = ctx
            .cluster
            .scale_statefulset(&self.saved.cluster, self.saved.replicas, false)
            .await
        {
            errors.push(format!("replicas: {e}"));
        }
        // The step ends once the cluster is back, not while its pods are still starting
        // (unless the service is stopping: the next start marks the run interrupted), when it
        // can come back: its data PVCs untouched, or the cluster recovered.
        let back = if errors.is_empty() && data_kept && !ctx.shutdown.is_cancelled() {
            let deadline = Instant::now() + PUT_BACK_WAIT;
            let token = ctx.shutdown;
            let members = ctx
                .cluster
                .wait_members_ready(
                    &self.saved.cluster,
                    &self.found.pod_selector(),
                    self.saved.replicas as usize,
                    PUT_BACK_WAIT,
                    token,
                )
                .await;
            match members {
                Ok(_) => wait_healthy(ctx, &self.found, deadline, token).await.err(),
                Err(e) => Some(StepError::Cluster(e)),
            }
        } else {
            None
        };
        // Whatever came of it, the environment ends as it was (with disaster recovery back).
        let back = if coming_up == restored {
            back
        } else if let Err(e) = self.set_env(&restored).await {
            errors.push(format!("environment: {e}"));
            back
        } else if back.is_none() && !ctx.shutdown.is_cancelled() {
            let deadline = Instant::now() + PUT_BACK_WAIT;
            match ctx
                .cluster
                .wait_statefulset_rolled_out(&self.saved.cluster, PUT_BACK_WAIT, ctx.shutdown)
                .await
            {
                Ok(()) => wait_healthy(ctx, &self.found, deadline, ctx.shutdown)
                    .await
                    .err(),
                Err(e) => Some(StepError::Cluster(e)),
            }
        } else {
            back
        };
        let measured = self.measure().await;
        let put_back = PutBack {
            at: Utc::now(),
            why: why.clone(),
            after,
            replicas: self.saved.replicas,
            env: restored.clone(),
            errors: errors.clone(),
        };
        self.saved.put_back.push(put_back);
        match self.observe().await {
            Ok(observed) => self.saved.observed = observed,
            Err(e) => errors.push(format!("reading it back: {e}")),
        }
        if let Ok(value) = to_value(&self.saved)
            && let Err(e) = ctx.journal.save(&value).await
        {
            errors.push(format!("journal: {e}"));
        }
        let next = if cancelled {
            "start a new run to recover it"
        } else {
            "resume this run, or start a new one"
        };
        let data_note = match after.max(attempted) {
            _ if recovered => format!(
                "; the {} itself was complete (the cluster was healthy after it) and the \
                 put-back did not touch its data{}",
                self.what(),
                if cancelled {
                    ""
                } else {
                    ": resuming this run waits for the rollout of the environment without \
                     redoing it"
                }
            ),
            Some(p) if p >= Phase::PvcsDeleted => format!(
                "; its data PVCs had been deleted: {next} (\"etcd\": \"restore\" or \
                 \"rebuild\")"
            ),
            _ => "; its data PVCs were not touched".to_owned(),
        };
        let back_note = match back {
            Some(e) => format!(
                "; it did not come back within {}: {e}",
                humantime::format_duration(PUT_BACK_WAIT)
            ),
            None => String::new(),
        };
        let note = if errors.is_empty() {
            format!(
                "the StatefulSet {} was put back: {} replica(s), {}{back_note}; now {measured}\
                 {data_note}",
                self.saved.cluster,
                self.saved.replicas,
                describe_env(&restored)
            )
        } else {
            format!(
                "putting the StatefulSet {} back FAILED ({}): check its replicas ({}) and \
                 environment ({}) by hand{}; now {measured}",
                self.saved.cluster,
                errors.join("; "),
                self.saved.replicas,
                describe_env(&restored),
                if cancelled { "" } else { ", or resume the run" }
            )
        };
        ctx.journal.log(&note).await;
        let uid = self.saved.statefulset_uid.clone();
        ctx.announce(&self.object, &uid, true, "EtcdRecoverStopped", &note)
            .await;
        let message = format!("{why} (after phase {stopped_after}); {note}");
        if cancelled {
            StepError::Cancelled(message)
        } else {
            StepError::Failed(message)
        }
    }
}

/// Why a cancel during `phase` (once the data PVCs of `cluster` were being deleted) waits.
fn deferred_cancel(phase: Phase, cluster: &str) -> String {
    format!(
        "cancelled during phase {}, once the data PVCs of {cluster} were being deleted (the old \
         data is gone, and stopping now would leave the cluster empty and crash-looping)",
        phase.as_str()
    )
}

/// `env` with ETCD_DISASTER_RECOVERY=no, when it has it on (`None` when it is off or unset).
fn disaster_recovery_off(env: &[EnvVar]) -> Option<Vec<EnvVar>> {
    let on = env
        .iter()
        .any(|v| v.name == DR_VAR && v.value.as_deref() == Some("yes"));
    on.then(|| {
        env.iter()
            .map(|v| {
                if v.name == DR_VAR {
                    self::env(DR_VAR, "no")
                } else {
                    v.clone()
                }
            })
            .collect()
    })
}

/// What `decision` does, in words.
fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Restore { backup, .. } => format!("restore from {backup}"),
        Decision::Rebuild => "rebuild".to_owned(),
        Decision::LeaveAlone => "nothing".to_owned(),
    }
}

/// A cluster's report in words: serving or not, healthy or what is wrong, its keys.
pub fn describe_report(report: &layout::EtcdClusterReport) -> String {
    let keys = report
        .keys
        .map(|k| format!(", {k} key(s)"))
        .unwrap_or_default();
    if report.healthy {
        format!("{} is healthy{keys}", report.name)
    } else if report.serving {
        format!(
            "{} serves{keys} but is degraded ({})",
            report.name,
            report.problems.join("; ")
        )
    } else {
        format!(
            "{} does NOT serve ({})",
            report.name,
            report.problems.join("; ")
        )
    }
}

/// The cluster's report once it says healthy, asked again with a growing pause (from 0.1 s to
/// 2 s: etcd has nothing to watch for health) until `deadline` or `token`.
async fn wait_healthy(
    ctx: &StepContext<'_>,
    found: &Found,
    deadline: Instant,
    token: &CancellationToken,
) -> Result<layout::EtcdClusterReport, StepError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let report = layout::report(ctx.cluster, found, ctx.etcd).await?;
        if report.healthy {
            return Ok(report);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(StepError::Cluster(ClusterError::Timeout {
                after: started.elapsed(),
                waiting_for: format!("{} to be healthy", found.name),
                last_seen: report.problems.join("; "),
            }));
        }
        tokio::select! {
            () = token.cancelled() => {
                return Err(StepError::Cancelled(format!(
                    "waiting for {} to be healthy ({})",
                    found.name,
                    report.problems.join("; ")
                )));
            }
            () = tokio::time::sleep(pause.min(remaining)) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A Bitnami StatefulSet's replicas and recovery environment in words, saying when it was left
/// mid-recovery; `None` for other layouts or when it cannot be read.
pub async fn describe_statefulset(cluster: &Cluster, found: &Found) -> Option<String> {
    if found.layout != EtcdLayout::Bitnami {
        return None;
    }
    let set = cluster.statefulset(&found.name).await.ok()??;
    let (_, _, env) = etcd_container(&set)?;
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (_, leftover) = without_leftovers(&vars_of(&env));
    Some(match leftover {
        Some(leftover) => format!(
            "StatefulSet {} has {replicas} replica(s) and carries {leftover}: the next recovery \
             run of it cleans that up",
            found.name
        ),
        None => format!(
            "StatefulSet {} has {replicas} replica(s), {}",
            found.name,
            describe_env(&vars_of(&env))
        ),
    })
}

/// The StatefulSet of `saved` and its data PVCs as they are now (`None`: the set is gone).
async fn observe(cluster: &Cluster, saved: &Saved) -> Result<Option<Observed>, StepError> {
    let Some(set) = cluster.statefulset(&saved.cluster).await? else {
        return Ok(None);
    };
    let pvcs = cluster
        .list_pvcs(&data_pvc_prefix(&saved.cluster))
        .await?
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    Ok(Some(Observed {
        generation: set.metadata.generation.unwrap_or(0),
        replicas: set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        env: vars_of(&container_env(&set, saved.container_index)),
        pvcs,
    }))
}

/// Why a resume of the `etcd-recover` step whose journal is `data` must not go on: what
/// changed the StatefulSet since its last journalled write, beyond what the phase the resume
/// redoes writes itself (and, when its annotation says so, which run). `None`: it is as the
/// journal left it (or the step changed nothing yet).
pub async fn resume_blocker(
    cluster: &Cluster,
    data: &Value,
    run_id: &str,
) -> Result<Option<String>, StepError> {
    let Ok(saved) = serde_json::from_value::<Saved>(data.clone()) else {
        return Ok(None);
    };
    let (Some(observed), Some(done)) = (&saved.observed, saved.phase) else {
        return Ok(None);
    };
    if saved.dry_run || done == Phase::Settled {
        return Ok(None);
    }
    let name = &saved.cluster;
    let Some(set) = cluster.statefulset(name).await? else {
        return Ok(Some(format!("the StatefulSet {name} is gone")));
    };
    let by = set
        .annotations()
        .get(RUN_ANNOTATION)
        .filter(|by| by.as_str() != run_id)
        .map(|by| format!(" (run {by} recovered it since)"))
        .unwrap_or_default();
    if set.uid().unwrap_or_default() != saved.statefulset_uid {
        return Ok(Some(format!(
            "the StatefulSet {name} was deleted and created again since this run's last \
             journalled phase{by}"
        )));
    }
    let Some(now) = observe(cluster, &saved).await? else {
        return Ok(Some(format!("the StatefulSet {name} is gone")));
    };
    // What the phase a resume redoes first may already have written (a crash in it), and
    // what an interrupted put-back writes.
    let next = if saved.start_over {
        Some(Phase::ScaledDown)
    } else {
        Phase::after(Some(done))
    };
    let mut replicas = vec![observed.replicas];
    let mut envs = vec![observed.env.clone()];
    match next {
        Some(Phase::ScaledDown) => replicas.push(0),
        Some(Phase::EnvSet) => envs.push(saved.recovery_env.clone()),
        Some(Phase::ScaledUp) => replicas.push(saved.replicas),
        Some(Phase::EnvRestored) => envs.push(saved.restored_env.clone()),
        _ => {}
    }
    if saved.start_over || !saved.put_back.is_empty() {
        replicas.push(saved.replicas);
        envs.push(saved.restored_env.clone());
        envs.extend(disaster_recovery_off(&saved.restored_env));
    }
    let sorted = |vars: &[EnvVar]| {
        let mut vars = vars_of(vars);
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        vars
    };
    let same_env = |a: &[EnvVar], b: &[EnvVar]| sorted(a) == sorted(b);
    let mut changed = Vec::new();
    if !replicas.contains(&now.replicas) {
        changed.push(format!(
            "it has {} replica(s), this run left {}",
            now.replicas, observed.replicas
        ));
    }
    if !envs.iter().any(|env| same_env(env, &now.env)) {
        changed.push(format!(
            "its environment is {}, this run left {}",
            describe_env(&now.env),
            describe_env(&observed.env)
        ));
    }
    // Once the environment is set, the run itself may have deleted the data PVCs (the phase
    // after it, or a crash in it); a PVC it saw that now has another uid was made again by
    // someone else's scale-up.
    let pvcs_may_go = done >= Phase::EnvSet;
    for (pvc, uid) in &observed.pvcs {
        match now.pvcs.get(pvc) {
            Some(now_uid) if now_uid != uid => {
                changed.push(format!("PVC {pvc} was deleted and created again"));
            }
            None if !pvcs_may_go => changed.push(format!("PVC {pvc} was deleted")),
            _ => {}
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "StatefulSet {name} changed since this run's last journalled phase ({}, generation {} \
         then, {} now): {}{by}",
        done.as_str(),
        observed.generation,
        now.generation,
        changed.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(vars: &[EnvVar]) -> Vec<String> {
        vars.iter()
            .map(|v| format!("{}={}", v.name, v.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn rebuild_sets_new_then_existing_and_keeps_the_rest() {
        let original = vec![
            env(STATE_VAR, "existing"),
            env("ALLOW_NONE_AUTHENTICATION", "yes"),
        ];
        let (during, after) = recovery_envs(
            &Decision::Rebuild,
            "cray-bss-bitnami-etcd",
            &vars_of(&original),
        );
        assert_eq!(names(&during), ["ETCD_INITIAL_CLUSTER_STATE=new"]);
        assert_eq!(names(&after), ["ETCD_INITIAL_CLUSTER_STATE=existing"]);
        assert_eq!(
            names(&with_vars(&original, &during)),
            [
                "ETCD_INITIAL_CLUSTER_STATE=new",
                "ALLOW_NONE_AUTHENTICATION=yes"
            ]
        );
    }

    #[test]
    fn restore_sets_the_snapshot_and_then_turns_it_off() {
        let original = vec![env(STATE_VAR, "existing"), env(START_VAR, "no")];
        let decision = Decision::Restore {
            backup: "cray-bss/db-2026-11-30_10-00".to_owned(),
            file: "db-2026-11-30_10-00".to_owned(),
        };
        let (during, after) = recovery_envs(&decision, "cray-bss-bitnami-etcd", &original);
        assert_eq!(
            names(&with_vars(&original, &during)),
            [
                "ETCD_INITIAL_CLUSTER_STATE=new",
                "ETCD_START_FROM_SNAPSHOT=yes",
                "ETCD_INIT_SNAPSHOTS_DIR=/snapshots/cray-bss-bitnami-etcd",
                "ETCD_INIT_SNAPSHOT_FILENAME=db-2026-11-30_10-00",
            ]
        );
        // The snapshot variables were not set before: they are removed again.
        assert_eq!(
            names(&with_vars(&with_vars(&original, &during), &after)),
            [
                "ETCD_INITIAL_CLUSTER_STATE=existing",
                "ETCD_START_FROM_SNAPSHOT=no"
            ]
        );
    }

    #[test]
    fn phases_are_ordered_and_each_has_a_failpoint() {
        assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Phase::Stored.failpoint(), "etcd-recover:stored");
        assert_eq!(Phase::Settled.failpoint(), "etcd-recover:settled");
    }
}
