//! Members that crash-loop with their data, started with it (`Decision::StartWithData`).
//!
//! After a restart of the whole cluster (a power-on: CSM 1.7 lists etcd pods in
//! CrashLoopBackOff after one as a known issue) each member finds the others not responding
//! and, with `ETCD_DISASTER_RECOVERY=yes` (as cray-etcd-base sets it), looks for a snapshot
//! directly in `/snapshots`, where CSM's snapshotter never writes one: "There was no snapshot to
//! restore!", exit 1, for ever. Their data is intact. This starts them with it, deleting
//! nothing, as the image's own message suggests ("the cluster will try to recover on its own"):
//!
//! 1. **stored**: the StatefulSet's `ETCD_DISASTER_RECOVERY` as it is;
//! 2. **env-set**: `ETCD_DISASTER_RECOVERY=no` on its pod template;
//! 3. **restarted**: the member pods deleted, all at once (a rolling update never replaces a pod
//!    that is not Ready, and the chart's `Parallel` policy starts them together), and waited
//!    for until all are Ready: each starts etcd with its data and they elect a leader;
//! 4. **env-restored**: the variable back as it was, once the cluster is healthy; the rollout
//!    that follows restarts healthy members one at a time, and the step waits for it.
//!
//! A resume carries on after the last journalled phase (each sets absolute values). A failure
//! or cancel before the cluster is healthy puts the variable back and deletes the pods again,
//! so that they run as the template says: the cluster is then as it was found.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::EnvVar;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::env::{container_env, env, etcd_container};
use crate::{
    cluster::Mode,
    etcd::layout::{self, LocatedCluster},
    recovery::{
        journal::Journaled,
        wait::{Deadline, healthy_report},
    },
    step::{StepContext, StepError, StepOutcome},
};

const DR_VAR: &str = "ETCD_DISASTER_RECOVERY";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartPhase {
    #[default]
    Planned,
    Stored,
    EnvSet,
    Restarted,
    EnvRestored,
}

/// What `etcd-recover` journals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StartWithData {
    pub cluster: String,
    pub phase: StartPhase,
    /// The etcd container's index and name in the pod template.
    pub container_index: usize,
    pub container: String,
    /// `ETCD_DISASTER_RECOVERY` as the StatefulSet had it (`None`: unset).
    pub original: Option<EnvVar>,
    /// When each phase was done.
    pub phases: Vec<(StartPhase, DateTime<Utc>)>,
}

/// `etcd-recover` for [`crate::recovery::decision::Decision::StartWithData`]: see the module.
pub async fn perform(
    ctx: &StepContext<'_>,
    found: &LocatedCluster,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let cluster = &found.name;
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "dry run: would set ETCD_DISASTER_RECOVERY=no on StatefulSet {cluster}, delete its \
                 crash-looping member pods so that they start with their data and find each \
                 other, wait until every member is Ready and the cluster healthy, then set the \
                 variable back; nothing is deleted from any volume"
            ),
            serde_json::json!({ "cluster": cluster }),
        );
    }
    let journal = Journaled::<StartWithData>::resume(ctx);
    let deadline = Deadline::after(timeout);
    let set_phase = |phase| {
        journal.update(move |s| {
            s.phase = phase;
            s.phases.push((phase, Utc::now()));
        })
    };
    if journal.get().phase < StartPhase::Stored {
        let set = ctx.cluster.statefulset(cluster).await?.ok_or_else(|| {
            StepError::Failed(format!("the StatefulSet {cluster} does not exist"))
        })?;
        let (index, container, vars) = etcd_container(&set).ok_or_else(|| {
            StepError::Failed(format!("StatefulSet {cluster} has no etcd container"))
        })?;
        let original = vars.iter().find(|v| v.name == DR_VAR).cloned();
        journal
            .update(|s| {
                s.cluster = cluster.clone();
                s.container_index = index;
                s.container = container;
                s.original = original;
            })
            .await?;
        set_phase(StartPhase::Stored).await?;
    }
    let saved = journal.get();
    if saved.phase < StartPhase::EnvSet {
        set_dr(ctx, &saved, Some(env(DR_VAR, "no"))).await?;
        set_phase(StartPhase::EnvSet).await?;
        crate::failpoint::hit("start-with-data:env-set");
    }
    if saved.phase < StartPhase::Restarted {
        let restarted = restart(ctx, found, deadline).await;
        if let Err(err) = restarted {
            return Err(put_back(ctx, found, &journal.get(), err).await);
        }
        set_phase(StartPhase::Restarted).await?;
        crate::failpoint::hit("start-with-data:restarted");
    }
    if saved.phase < StartPhase::EnvRestored {
        set_dr(ctx, &saved, saved.original.clone()).await?;
        ctx.cluster
            .wait_statefulset_rolled_out(cluster, deadline.left(), ctx.cancel)
            .await?;
        healthy_report(ctx, found, deadline, ctx.cancel).await?;
        set_phase(StartPhase::EnvRestored).await?;
    }
    let report = layout::report(ctx.cluster, found, ctx.etcd).await?;
    StepOutcome::done(
        format!(
            "{cluster}'s members started with their data and found each other: healthy, {} \
             key(s) at revision {}; ETCD_DISASTER_RECOVERY is back as it was",
            report.keys.unwrap_or_default(),
            report.revision.unwrap_or_default()
        ),
        journal.get(),
    )
}

/// The etcd container's `ETCD_DISASTER_RECOVERY` set to `value` (`None`: removed).
async fn set_dr(
    ctx: &StepContext<'_>,
    saved: &StartWithData,
    value: Option<EnvVar>,
) -> Result<(), StepError> {
    let set = ctx
        .cluster
        .statefulset(&saved.cluster)
        .await?
        .ok_or_else(|| StepError::Failed(format!("the StatefulSet {} is gone", saved.cluster)))?;
    let current = container_env(&set, saved.container_index);
    let mut target: Vec<EnvVar> = current
        .iter()
        .filter(|v| v.name != DR_VAR || value.is_some())
        .map(|v| match (&value, v.name == DR_VAR) {
            (Some(value), true) => value.clone(),
            _ => v.clone(),
        })
        .collect();
    if let Some(value) = value.filter(|_| !current.iter().any(|v| v.name == DR_VAR)) {
        target.push(value);
    }
    if target != current {
        ctx.cluster
            .set_container_env(
                &saved.cluster,
                saved.container_index,
                &saved.container,
                &target,
                Mode::Apply,
            )
            .await?;
    }
    Ok(())
}

/// Deletes the member pods and waits until their replacements are all Ready, then until the
/// cluster is healthy.
async fn restart(
    ctx: &StepContext<'_>,
    found: &LocatedCluster,
    deadline: Deadline,
) -> Result<(), StepError> {
    let plan = ctx.cluster.plan_restart(&found.pod_selector()).await?;
    ctx.cluster
        .restart(plan, Mode::Apply, deadline.left(), ctx.cancel)
        .await?;
    healthy_report(ctx, found, deadline, ctx.cancel).await?;
    Ok(())
}

/// After `err` before the cluster was healthy: the variable back, and the pods deleted again so
/// that they run as the template says (they do not come up either way: as found). Returns the
/// error to end the step with, saying what was done.
async fn put_back(
    ctx: &StepContext<'_>,
    found: &LocatedCluster,
    saved: &StartWithData,
    err: StepError,
) -> StepError {
    let back = async {
        set_dr(ctx, saved, saved.original.clone()).await?;
        let plan = ctx.cluster.plan_restart(&found.pod_selector()).await?;
        // Not waited for (they crash-loop, as they did), nor stopped by the cancel that may
        // have brought us here.
        ctx.cluster
            .restart(plan, Mode::Apply, Duration::ZERO, &CancellationToken::new())
            .await
            .map(drop)
            .or_else(|e| match e {
                crate::cluster::ClusterError::Timeout { .. } => Ok(()),
                e => Err(StepError::from(e)),
            })
    }
    .await;
    let put = match back {
        Ok(()) => {
            "ETCD_DISASTER_RECOVERY is back as it was and the pods restarted with it".to_owned()
        }
        Err(e) => format!("putting ETCD_DISASTER_RECOVERY back failed too: {e}"),
    };
    let why = format!(
        "the members of {} did not come back with their data ({err}); {put}. See GET \
         /etcd-clusters/{}: a member whose data is gone needs a restore",
        found.name, found.name
    );
    match err {
        StepError::Cancelled(_) => StepError::Cancelled(why),
        _ => StepError::Failed(why),
    }
}
