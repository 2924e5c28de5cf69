//! Every ending that is not a success puts the StatefulSet back (see the module's rules).

use chrono::Utc;

use crate::cluster::Mode;
use crate::recovery::{journal, wait::Deadline};
use crate::step::StepError;

use super::{Recover, env::*, state::*};
use crate::recovery::wait::healthy_report;

impl Recover<'_, '_> {
    /// Puts the StatefulSet back (replica count, environment) after `err` stopped the
    /// sequence (in phase `attempted`, or between phases), waits until its members are back
    /// and it is healthy (unless the service is stopping), journals it, and returns the error
    /// saying what was measured then. Before the scale-down was sent, nothing was changed and
    /// nothing is put back.
    /// Puts the StatefulSet back (replica count, environment) after `err` stopped the
    /// sequence (in phase `attempted`, or between phases), waits until its members are back
    /// and it is healthy (unless the service is stopping), journals it, and returns the error
    /// saying what was measured then. Before the scale-down was sent, nothing was changed and
    /// nothing is put back.
    pub(super) async fn put_back(&mut self, err: StepError, attempted: Option<Phase>) -> StepError {
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
        if let Err(e) = journal::save(ctx.journal, &self.saved).await {
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
            .scale_statefulset(&self.saved.cluster, self.saved.replicas, Mode::Apply)
            .await
        {
            errors.push(format!("replicas: {e}"));
        }
        // The step ends once the cluster is back, not while its pods are still starting
        // (unless the service is stopping: the next start marks the run interrupted), when it
        // can come back: its data PVCs untouched, or the cluster recovered.
        let back = if errors.is_empty() && data_kept && !ctx.shutdown.is_cancelled() {
            let deadline = Deadline::after(PUT_BACK_WAIT);
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
                Ok(_) => healthy_report(ctx, &self.found, deadline, token)
                    .await
                    .err(),
                Err(e) => Some(StepError::from(e)),
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
            let deadline = Deadline::after(PUT_BACK_WAIT);
            match ctx
                .cluster
                .wait_statefulset_rolled_out(&self.saved.cluster, PUT_BACK_WAIT, ctx.shutdown)
                .await
            {
                Ok(()) => healthy_report(ctx, &self.found, deadline, ctx.shutdown)
                    .await
                    .err(),
                Err(e) => Some(StepError::from(e)),
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
        if let Err(e) = journal::save(ctx.journal, &self.saved).await {
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
                self.describe_recovery(),
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
