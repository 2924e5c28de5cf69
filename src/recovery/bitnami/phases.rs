//! The phases of the sequence, each journalled before the next starts.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::EnvVar;
use kube::ResourceExt;
use serde_json::Value;

use tokio_util::sync::CancellationToken;

use crate::recovery::{
    decision::Decision,
    journal::{self, to_value},
    wait::{Deadline, healthy_report},
};
use crate::{
    cluster::{ClusterError, Mode, ObjectRef},
    etcd::{backups::Backups, layout},
    step::StepError,
};

use super::{Recover, deferred_cancel, describe, env::*, observe::*, state::*};

impl Recover<'_, '_> {
    /// A cancel that arrives past the point of no return is journalled and logged once; the
    /// recovery goes on.
    /// A cancel that arrives past the point of no return is journalled and logged once; the
    /// recovery goes on.
    pub(super) async fn note_cancel(&mut self, phase: Phase) -> Result<(), StepError> {
        if !self.ctx.cancel.is_cancelled() || self.saved.cancel_deferred.is_some() {
            return Ok(());
        }
        let why = deferred_cancel(phase, &self.saved.cluster);
        self.ctx
            .journal
            .log(&format!(
                "{why}: finishing the {} first",
                self.describe_recovery()
            ))
            .await;
        self.saved.cancel_deferred = Some(why);
        journal::save(self.ctx.journal, &self.saved).await
    }

    /// The service is stopping past the point of no return: the step stops where it is,
    /// without a put-back; the journal says where a resume carries on.
    pub(super) fn interrupted(&self, phase: Phase) -> StepError {
        let after = self.saved.phase.map(Phase::as_str).unwrap_or("nothing");
        StepError::Cancelled(format!(
            "the service stopped during the {}, before phase {} (after {after}; its data PVCs \
             were being deleted or are gone): resume this run to carry on from there",
            self.describe_recovery(),
            phase.as_str()
        ))
    }

    /// A wait that ran out, said as `[recovery] timeout`'s.
    pub(super) fn timed_out(&self, err: StepError) -> StepError {
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
    pub(super) async fn fallback_for(&self, err: &StepError) -> Option<Decision> {
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
    pub(super) async fn fall_back(
        &mut self,
        to: Decision,
        err: &StepError,
    ) -> Result<(), StepError> {
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
        self.deadline = Deadline::after(self.timeout);
        journal::save(ctx.journal, &self.saved).await
    }

    /// Journals `phase` as done, with the StatefulSet as it left it, then the failpoint.
    pub(super) async fn journal_phase(
        &mut self,
        phase: Phase,
        what: String,
    ) -> Result<(), StepError> {
        let ctx = self.ctx;
        self.saved.phase = Some(phase);
        self.saved.phases.push(PhaseRecord {
            phase,
            at: Utc::now(),
            what: what.clone(),
        });
        self.saved.observed = self.observe().await?;
        journal::save(ctx.journal, &self.saved).await?;
        ctx.journal
            .log(&format!("{}: {what}", phase.as_str()))
            .await;
        crate::failpoint::hit(&phase.failpoint());
        Ok(())
    }

    /// The StatefulSet and its data PVCs as they are now.
    pub(super) async fn observe(&self) -> Result<Option<Observed>, StepError> {
        observe(self.ctx.cluster, &self.saved).await
    }

    /// The cluster's state, measured, in words: whether it serves and how many keys.
    pub(super) async fn measure(&self) -> String {
        let ctx = self.ctx;
        match layout::report(ctx.cluster, &self.found, ctx.etcd).await {
            Ok(report) => describe_report(&report),
            Err(err) => format!("its state could not be read: {err}"),
        }
    }

    /// The backups a person could restore from now, newest first (a few).
    pub(super) fn remaining_backups(&self) -> String {
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
    pub(super) async fn newer_than_assessed(&self) -> Result<Option<String>, StepError> {
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
    pub(super) async fn phase(
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
                cluster.scale_statefulset(&name, 0, Mode::Apply).await?;
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
                            Mode::Apply,
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
                    .scale_statefulset(&name, self.saved.replicas, Mode::Apply)
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
    pub(super) async fn crash_loop(&self, token: &CancellationToken) -> StepError {
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
                Err(err) => return StepError::from(err),
            }
            tokio::select! {
                () = token.cancelled() => std::future::pending::<()>().await,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Sets the four variables to `wanted` (and removes the others), unless they are already.
    pub(super) async fn set_env(&self, wanted: &[EnvVar]) -> Result<(), StepError> {
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
                .set_container_env(
                    &s.cluster,
                    s.container_index,
                    &s.container,
                    &target,
                    Mode::Apply,
                )
                .await?;
        }
        Ok(())
    }

    /// The cluster's report, once it says healthy, within the recovery's deadline.
    pub(super) async fn wait_healthy(&self, token: &CancellationToken) -> Result<Value, StepError> {
        let report = healthy_report(self.ctx, &self.found, self.deadline, token).await?;
        to_value(&report)
    }
}
