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
//! A resume continues after the last journalled phase (each phase sets absolute values, so
//! redoing one a crash interrupted is harmless). Every other ending (failure, timeout, cancel)
//! puts the StatefulSet back, replicas and environment, before the step ends, and says so: a
//! run never leaves `ETCD_INITIAL_CLUSTER_STATE=new` or 0 replicas behind. A later attempt after
//! such a put-back starts over from `scaled-down`, unless the cluster had been recovered
//! (`healthy`): then it carries on with `env-restored` and `settled`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::EnvVar};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::recovery::{Decision, assessed};
use crate::{
    cluster::{ClusterError, ObjectRef},
    etcd::layout::{self, EtcdLayout, Found},
    handlers::{StepContext, StepError, StepOutcome},
    model::State,
};

pub const STATE_VAR: &str = "ETCD_INITIAL_CLUSTER_STATE";
pub const START_VAR: &str = "ETCD_START_FROM_SNAPSHOT";
pub const DIR_VAR: &str = "ETCD_INIT_SNAPSHOTS_DIR";
pub const FILE_VAR: &str = "ETCD_INIT_SNAPSHOT_FILENAME";
const VARS: [&str; 4] = [STATE_VAR, START_VAR, DIR_VAR, FILE_VAR];

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
    // The snapshot variables go back to what they were (removed when they were not set).
    after.extend([DIR_VAR, FILE_VAR].into_iter().filter_map(original_of));
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
    if decision == Decision::None {
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
        restarting: false,
    };
    if ctx.dry_run {
        return recover.plan().await;
    }
    recover.execute().await
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
    let original_env = vars_of(&env);
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
    })
}

impl Recover<'_, '_> {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn what(&self) -> String {
        match &self.saved.decision {
            Decision::Restore { backup, .. } => {
                format!("restore of {} from {backup}", self.saved.cluster)
            }
            _ => format!("rebuild of {}", self.saved.cluster),
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
        let message = format!(
            "dry run: the {} would scale StatefulSet {} from {} replica(s) to 0 and wait until \
             its pods are gone; set {} in container {}; delete the PVCs {}; scale back to {}; \
             wait until every member is Ready and the cluster is healthy through Service {}; \
             then set {} and wait for that rollout",
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
        for phase in Phase::ALL {
            if self.saved.phase.is_some_and(|done| done >= phase) {
                continue;
            }
            if ctx.cancel.is_cancelled() {
                let why = format!("cancelled before phase {}", phase.as_str());
                return Err(self.stop(StepError::Cancelled(why), None).await);
            }
            let what = match self.phase(phase).await {
                Ok(what) => what,
                Err(StepError::Cluster(ClusterError::Timeout {
                    waiting_for,
                    last_seen,
                    ..
                })) => {
                    let err = StepError::Failed(format!(
                        "[recovery] timeout ({}) ran out waiting for {waiting_for}; last seen: \
                         {last_seen}",
                        humantime::format_duration(self.timeout)
                    ));
                    return Err(self.stop(err, Some(phase)).await);
                }
                Err(err) => return Err(self.stop(err, Some(phase)).await),
            };
            self.saved.phase = Some(phase);
            self.saved.phases.push(PhaseRecord {
                phase,
                at: Utc::now(),
                what: what.clone(),
            });
            ctx.journal.save(&to_value(&self.saved)?).await?;
            ctx.journal
                .log(&format!("{}: {what}", phase.as_str()))
                .await;
            crate::failpoint::hit(&phase.failpoint());
        }
        let message = format!(
            "{}: done; {} member(s) Ready ({}), healthy, {}",
            self.what(),
            self.saved.members.len(),
            self.saved.members.join(", "),
            describe_env(&self.saved.restored_env)
        );
        ctx.announce(&self.object, &uid, false, "EtcdRecovered", &message)
            .await;
        StepOutcome::done(message, to_value(&self.saved)?)
    }

    /// Performs `phase`; returns what it did.
    async fn phase(&mut self, phase: Phase) -> Result<String, StepError> {
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
                cluster.scale_statefulset(&name, 0, false).await?;
                cluster
                    .wait_members_gone(&name, &selector, self.remaining(), ctx.cancel)
                    .await?;
                Ok(format!("scaled {name} to 0; its pods are gone"))
            }
            Phase::EnvSet => {
                let env = self.recovery_env_now().await?;
                Ok(format!("set {env} in container {}", self.saved.container))
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
                            ctx.cancel,
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
                let members = cluster
                    .wait_members_ready(
                        &name,
                        &selector,
                        self.saved.replicas as usize,
                        self.remaining(),
                        ctx.cancel,
                    )
                    .await?;
                let health = self.wait_healthy().await?;
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
                    .wait_statefulset_rolled_out(&name, self.remaining(), ctx.cancel)
                    .await?;
                let health = self.wait_healthy().await?;
                self.saved.health = Some(health);
                Ok(format!(
                    "the rollout of the environment change is complete and {name} is healthy"
                ))
            }
        }
    }

    async fn recovery_env_now(&mut self) -> Result<String, StepError> {
        let env = self.saved.recovery_env.clone();
        self.set_env(&env).await?;
        Ok(describe_env(&env))
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

    /// The cluster's report, once it says healthy. etcd has nothing to watch for health, so
    /// it is asked again with a growing pause (from 0.1 s to 2 s) until the deadline.
    async fn wait_healthy(&self) -> Result<Value, StepError> {
        let ctx = self.ctx;
        let mut pause = Duration::from_millis(100);
        loop {
            let report = layout::report(ctx.cluster, &self.found, ctx.etcd).await?;
            if report.healthy {
                return to_value(&report);
            }
            if self.remaining().is_zero() {
                return Err(StepError::Cluster(ClusterError::Timeout {
                    after: self.deadline.elapsed(),
                    waiting_for: format!("{} to be healthy", self.saved.cluster),
                    last_seen: report.problems.join("; "),
                }));
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::Cancelled(format!(
                        "waiting for {} to be healthy ({})",
                        self.saved.cluster,
                        report.problems.join("; ")
                    )));
                }
                _ = tokio::time::sleep(pause.min(self.remaining())) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Puts the StatefulSet back (replica count, environment) after `err` stopped the
    /// sequence (in phase `attempted`, or between phases), journals it, and returns the error
    /// saying so. Before the scale-down was sent, nothing was changed and nothing is put back.
    async fn stop(&mut self, err: StepError, attempted: Option<Phase>) -> StepError {
        let ctx = self.ctx;
        let after = self.saved.phase;
        let why = err.to_string();
        let stopped_after = after.map(Phase::as_str).unwrap_or("nothing");
        if !self.restarting && after.max(attempted) < Some(Phase::ScaledDown) {
            let note = format!(
                "nothing was changed: StatefulSet {} was not scaled down",
                self.saved.cluster
            );
            ctx.journal.log(&note).await;
            let why = why.strip_prefix("cancelled while ").unwrap_or(&why);
            let message = format!("{why}; {note}");
            return if err.is_cancelled() {
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
        if let Err(e) = self.set_env(&restored).await {
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
        let put_back = PutBack {
            at: Utc::now(),
            why: why.clone(),
            after,
            replicas: self.saved.replicas,
            env: restored.clone(),
            errors: errors.clone(),
        };
        self.saved.put_back.push(put_back);
        if let Ok(value) = to_value(&self.saved)
            && let Err(e) = ctx.journal.save(&value).await
        {
            errors.push(format!("journal: {e}"));
        }
        let data_note = match after.max(attempted) {
            _ if recovered => format!(
                "; the {} itself was complete (the cluster was healthy after it) and the \
                 put-back did not touch its data: resuming this run (failed or interrupted) \
                 waits for the rollout of the environment without redoing it",
                self.what()
            ),
            Some(Phase::PvcsDeleted) if after < Some(Phase::PvcsDeleted) => {
                "; some of its data PVCs may have been deleted, so the cluster may have lost its \
                 data: restore or rebuild it (resume this run unless it was cancelled, or start one with \"etcd\": \
                 \"restore\")"
                    .to_owned()
            }
            Some(p) if p >= Phase::PvcsDeleted => {
                "; its data PVCs had been deleted, so the cluster is empty until a run restores \
                 or rebuilds it (resume this run unless it was cancelled, or start one with \"etcd\": \"restore\")"
                    .to_owned()
            }
            _ => "; its data PVCs were not touched".to_owned(),
        };
        let note = if errors.is_empty() {
            format!(
                "the StatefulSet {} was put back: {} replica(s), {}{data_note}",
                self.saved.cluster,
                self.saved.replicas,
                describe_env(&restored)
            )
        } else {
            format!(
                "putting the StatefulSet {} back FAILED ({}): check its replicas ({}) and \
                 environment ({}) by hand, or resume the run",
                self.saved.cluster,
                errors.join("; "),
                self.saved.replicas,
                describe_env(&restored)
            )
        };
        ctx.journal.log(&note).await;
        let uid = self.saved.statefulset_uid.clone();
        ctx.announce(&self.object, &uid, true, "EtcdRecoverStopped", &note)
            .await;
        let why = why.strip_prefix("cancelled while ").unwrap_or(&why);
        let message = format!("{why} (after phase {stopped_after}); {note}");
        if err.is_cancelled() {
            StepError::Cancelled(message)
        } else {
            StepError::Failed(message)
        }
    }
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
