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

use std::time::Duration;

use kube::ResourceExt;

use super::{
    Decided, SafetySnapshot,
    assess::Assessment,
    decision::{Decision, Discarded},
    journal::{self, to_value},
    nothing_to_recover,
    wait::Deadline,
};
use crate::{
    cluster::{Mode, ObjectRef},
    etcd::{
        backups::Backups,
        layout::{self, LocatedCluster},
    },
    model::EtcdLayout,
    step::{StepContext, StepError, StepOutcome},
};

mod env;
mod observe;
mod phases;
mod put_back;
mod start_with_data;
mod state;
#[cfg(test)]
mod tests;

use env::*;
pub use observe::{describe_report, describe_statefulset, resume_blocker};
use state::*;

struct Recover<'a, 'b> {
    ctx: &'a StepContext<'b>,
    found: LocatedCluster,
    object: ObjectRef,
    deadline: Deadline,
    /// `[recovery] timeout`, which `deadline` is.
    timeout: Duration,
    saved: StatefulSetJournal,
    /// What `etcd-assess` weighed (a resume checks it still holds before it deletes data).
    assessment: Assessment,
    /// The safety snapshot step `etcd-safety-snapshot` took, if it took one.
    safety: Option<SafetySnapshot>,
    /// Starting over after an earlier attempt's put-back, which may not have completed (a
    /// crash in it): a stop before the scale-down puts the set back too.
    restarting: bool,
}

pub async fn run(
    ctx: &StepContext<'_>,
    decided: &Decided,
    cluster: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let deadline = Deadline::after(timeout);
    let assessment = decided.assessment()?.clone();
    let decision = assessment.decision.clone();
    if decision == Decision::LeaveAlone {
        return nothing_to_recover(cluster, &assessment);
    }
    if decision == Decision::ReclaimSpace {
        return super::space::perform(ctx, cluster).await;
    }
    if let Decision::ReplaceMembers { members } = &decision {
        return super::replace::perform(ctx, cluster, members).await;
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
    if decision == Decision::StartWithData {
        return start_with_data::perform(ctx, &found, timeout).await;
    }
    if let (Decision::RestoreFromMember { pod, revision }, true) =
        (&decision, ctx.mode.is_dry_run())
    {
        return StepOutcome::done(
            format!(
                "dry run: would check the snapshot etcd-safety-snapshot takes through member pod \
                 {pod} (an etcd database holding revision {revision}), then restore every member \
                 of {cluster} from it as a restore from a backup does (scale to 0, \
                 ETCD_INITIAL_CLUSTER_STATE=new and the snapshot to start from, the data PVCs \
                 deleted, scaled back, the environment set back)"
            ),
            serde_json::json!({ "cluster": cluster, "decision": decision }),
        );
    }
    let object = found.layout.object(&found.name);
    let earlier =
        journal::earlier::<StatefulSetJournal>(ctx).filter(|s| s.phase.is_some() && !s.dry_run);
    let saved = match earlier {
        Some(saved) => saved,
        None => {
            let decision = match decision {
                Decision::RestoreFromMember { pod, revision } => {
                    member_snapshot(ctx, decided, &found, &pod, revision).await?
                }
                other => other,
            };
            first_look(ctx, &found, decision).await?
        }
    };
    let recover = Recover {
        ctx,
        found,
        object,
        deadline,
        timeout,
        saved,
        assessment,
        safety: decided.safety_snapshot().cloned(),
        restarting: false,
    };
    if ctx.mode.is_dry_run() {
        return recover.plan().await;
    }
    recover.execute().await
}

/// What the step stores before it changes anything.
async fn first_look(
    ctx: &StepContext<'_>,
    found: &LocatedCluster,
    decision: Decision,
) -> Result<StatefulSetJournal, StepError> {
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
    Ok(StatefulSetJournal {
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

impl Recover<'_, '_> {
    fn remaining(&self) -> Duration {
        self.deadline.remaining()
    }

    fn describe_recovery(&self) -> String {
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
        cluster
            .scale_statefulset(&s.cluster, 0, Mode::DryRun)
            .await?;
        let set = cluster.statefulset(&s.cluster).await?.unwrap_or_default();
        let current = container_env(&set, s.container_index);
        cluster
            .set_container_env(
                &s.cluster,
                s.container_index,
                &s.container,
                &with_vars(&current, &s.recovery_env),
                Mode::DryRun,
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
                    Mode::DryRun,
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
            self.describe_recovery(),
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
                    self.describe_recovery(),
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
                self.describe_recovery()
            ));
            return Err(self.put_back(err, None).await);
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
                    self.describe_recovery(),
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
                return Err(self.put_back(StepError::Cancelled(why), None).await);
            }
            let token = if committed { ctx.shutdown } else { ctx.cancel };
            // A cancel that arrives while a committed phase waits is noted at once (the run's
            // log and journal say the recovery is being finished first), not at its end.
            let base = self.saved.clone();
            let doing = self.describe_recovery();
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
                let _ = journal::save(ctx.journal, &noted).await;
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
                    return Err(self.put_back(err, Some(phase)).await);
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
            self.describe_recovery(),
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
}

/// Why a cancel during `phase` (once the data PVCs of `cluster` were being deleted) waits.
fn deferred_cancel(phase: Phase, cluster: &str) -> String {
    format!(
        "cancelled during phase {}, once the data PVCs of {cluster} were being deleted (the old \
         data is gone, and stopping now would leave the cluster empty and crash-looping)",
        phase.as_str()
    )
}

/// For a restore from member pod `pod` (quorum lost): the restore of the safety snapshot taken
/// through it, once it is in the snapshotter directory and proven to be an etcd database that
/// holds `revision` (what the member held when it was assessed). Nothing is changed otherwise.
async fn member_snapshot(
    ctx: &StepContext<'_>,
    decided: &Decided,
    found: &LocatedCluster,
    pod: &str,
    revision: i64,
) -> Result<Decision, StepError> {
    let cluster = &found.name;
    let unchanged = "; nothing was changed";
    let Some(safety) = decided.safety_snapshot().filter(|s| !s.empty) else {
        return Err(StepError::Failed(format!(
            "{cluster}: no snapshot of member pod {pod} was taken (step etcd-safety-snapshot), \
             so there is nothing to restore it from{unchanged}"
        )));
    };
    let backups = Backups::new(ctx.recovery).recording(ctx.store);
    let failed = |e: String| StepError::Failed(format!("{cluster}: {e}{unchanged}"));
    let listed = backups
        .list(&found.csm_service, cluster)
        .await
        .map_err(|e| failed(format!("listing the backups: {e}")))?;
    let backup = listed
        .iter()
        .find(|b| b.name == safety.name)
        .ok_or_else(|| failed(format!("the snapshot {} is not listed", safety.name)))?;
    {
        let fetched = backups
            .fetch(backup, cluster)
            .await
            .map_err(|e| failed(format!("the snapshot {} of {pod}: {e}", safety.name)))?;
        let held = i64::try_from(fetched.check.snapshot.revision).unwrap_or(i64::MAX);
        if held < revision {
            return Err(failed(format!(
                "the snapshot {} of {pod} holds revision {held}, less than the {revision} the \
                 member held when it was assessed",
                safety.name
            )));
        }
        ctx.journal
            .log(&format!(
                "the snapshot {} of member pod {pod} is an etcd database at revision {held} \
                 ({} key(s)): restoring every member from it",
                safety.name, fetched.check.snapshot.live_keys
            ))
            .await;
    }
    Ok(Decision::Restore {
        backup: safety.name.clone(),
        file: safety.name.clone(),
    })
}

/// What `decision` does, in words.
fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Restore { backup, .. } => format!("restore from {backup}"),
        Decision::Rebuild => "rebuild".to_owned(),
        Decision::ReclaimSpace => "space reclaim".to_owned(),
        Decision::ReplaceMembers { .. } => "member replacement".to_owned(),
        Decision::RestoreFromMember { pod, .. } => format!("restore from member pod {pod}"),
        Decision::StartWithData => "a start of the members with their data".to_owned(),
        Decision::LeaveAlone => "nothing".to_owned(),
    }
}
