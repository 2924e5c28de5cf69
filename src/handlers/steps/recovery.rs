//! The recovery steps of a service's etcd cluster (`"etcd": "restore" | "rebuild" | "auto"`):
//! they name what runs; `crate::recovery` does it. The sequences are described once, here, in
//! the words the plan shows; their phases and rules are in the modules that perform them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    config::Config,
    handlers::kind::{Earlier, StepKind, wait},
    model::EtcdMode,
    recovery::{self, Decided},
    step::{StepContext, StepError, StepOutcome},
};

/// What the recovery steps may take beyond `[recovery] timeout`: a listing and a download or
/// a snapshot, and the time to put the StatefulSet back, so that the runner never cuts a
/// recovery short without its put-back.
const MARGIN: Duration = Duration::from_secs(180);

/// Report the cluster's health and the backups seen, and decide what to do: nothing,
/// restore (which backup) or rebuild (`mode`, `backup` as the run asked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssessEtcd {
    pub cluster: String,
    pub mode: EtcdMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(with = "humantime_serde")]
    pub restore_max_age: Duration,
    /// The request accepts losing what the live cluster holds beyond the backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discard_newer: bool,
    /// The request's `confirm` names the cluster: a `repair` may replace its broken members
    /// (every real `restore`, `rebuild` and `auto` run confirms its clusters).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

#[async_trait::async_trait]
impl StepKind for AssessEtcd {
    fn describe(&self) -> String {
        let Self {
            cluster,
            mode,
            backup,
            restore_max_age,
            discard_newer,
            confirmed,
        } = self;
        let weigh = if *discard_newer {
            "; what the cluster holds beyond the backup is discarded, as the request accepts (it \
             is kept in the safety snapshot)"
        } else {
            "; stop, changing nothing, if the cluster (or a member) holds data newer than the \
             backup"
        };
        match (mode, backup) {
            (EtcdMode::Repair, _) => format!(
                "report the health of {cluster}; if its database is full (alarm NOSPACE), give \
                 it its space back without deleting a key (compaction, defragmentation one \
                 member at a time, the alarm disarmed); {}; if every member crash-loops with \
                 its data (disaster recovery finding no snapshot), start them with it; \
                 otherwise leave it alone, saying what is wrong",
                if *confirmed {
                    "if a minority of its members is broken for good (crash-looping, corrupt) \
                     while the others serve, replace them one at a time (their PVCs deleted); \
                     if it lost its quorum and the members but one do not come back by \
                     themselves, restore every member from that one's snapshot"
                } else {
                    "if members are broken, say so (replacing them needs confirm)"
                },
            ),
            (EtcdMode::Restore, Some(backup)) => format!(
                "report the health of {cluster}; prove backup {backup} is an etcd database and \
                 restore it{weigh}"
            ),
            (EtcdMode::Restore, None) => format!(
                "report the health of {cluster} and its backups; restore it from the newest \
                 backup proven to be an etcd database{weigh}"
            ),
            (EtcdMode::Auto, _) => format!(
                "report the health of {cluster} and its backups; if it serves (a quorum answers \
                 reads), leave it alone, but give a full database (alarm NOSPACE) its space back \
                 without deleting a key, and replace a broken minority of members one at a \
                 time; if it lost its quorum and the members but one do not come back by \
                 themselves, restore every member from that one's snapshot when it holds more \
                 than any backup; if every member crash-loops with its data (disaster recovery \
                 finding no snapshot), start them with it; otherwise restore it from the newest usable backup \
                 younger than {}, unless a member holds newer data, else rebuild it if no member \
                 holds any",
                wait(restore_max_age)
            ),
            _ => format!(
                "report the health of {cluster}; rebuild it{}",
                if *discard_newer {
                    ", discarding what it holds (kept in the safety snapshot)"
                } else {
                    "; stop, changing nothing, if it holds keys"
                }
            ),
        }
    }

    /// A listing of the backups and a check of the chosen one (a download, at worst).
    fn time_limit(&self, config: &Config) -> Duration {
        twice_the_recovery_timeout(config)
    }

    fn learn(&self, data: &Value, earlier: &mut Earlier) {
        earlier.entry::<Decided>().learn_assessment(data);
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        recovery::assess::assess(
            ctx,
            &self.cluster,
            self.mode,
            self.backup.as_deref(),
            self.restore_max_age,
            self.discard_newer,
            self.confirmed || self.mode.is_destructive(),
        )
        .await
    }
}

/// Before a cluster that still answers is restored or rebuilt: a snapshot of it, kept
/// where backups are kept and named so that it is listed as one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SafetySnapshot {
    pub cluster: String,
}

#[async_trait::async_trait]
impl StepKind for SafetySnapshot {
    fn describe(&self) -> String {
        let cluster = &self.cluster;
        format!(
            "if {cluster} still answers, take a snapshot of it through its gateway and keep it \
             where backups are kept, listed as a backup (repopulator-<time>-<run id>)"
        )
    }

    fn time_limit(&self, config: &Config) -> Duration {
        twice_the_recovery_timeout(config)
    }

    fn learn(&self, data: &Value, earlier: &mut Earlier) {
        earlier.entry::<Decided>().learn_safety_snapshot(data);
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        recovery::safety_snapshot::safety_snapshot(ctx, earlier.recovery(), &self.cluster).await
    }
}

/// Bitnami (CSM 1.5+): restore or rebuild the StatefulSet `cluster` as `etcd-assess`
/// decided, within `[recovery] timeout` (`timeout` is what it was when the run was planned; an
/// attempt uses the one in force, so a run that ran out of it can be resumed with a longer
/// one). The phases and the rules of every ending: `recovery::bitnami`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoverBitnami {
    pub cluster: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for RecoverBitnami {
    fn describe(&self) -> String {
        let Self { cluster, timeout } = self;
        format!(
            "as decided: store the replica count and etcd environment of StatefulSet {cluster}, \
             scale it to 0, set ETCD_INITIAL_CLUSTER_STATE=new (and the snapshot to start \
             from), delete its data PVCs, scale it back, wait up to {} until every member is \
             Ready and the cluster healthy, set the environment back; any other ending puts the \
             replicas and environment back",
            wait(timeout)
        )
    }

    fn time_limit(&self, config: &Config) -> Duration {
        recovery_timeout(config)
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        recovery::bitnami::run(ctx, earlier.recovery(), &self.cluster, ctx.recovery.timeout).await
    }
}

/// etcd-operator (CSM ≤ 1.4): rebuild or restore the EtcdCluster `cluster` as `etcd-assess`
/// decided, as the CSM 1.3 pages do it, within `[recovery] timeout` (`timeout` as for
/// [`RecoverBitnami`]). The sequences: `recovery::operator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoverOperator {
    pub cluster: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for RecoverOperator {
    fn describe(&self) -> String {
        let Self { cluster, timeout } = self;
        let deployment = recovery::operator::paired_deployment(cluster).unwrap_or_default();
        format!(
            "as decided: rebuild the EtcdCluster {cluster} (store the replica count of \
             Deployment {deployment} and scale it to 0; store the sanitized manifest, delete the \
             cluster, wait until its pods are gone, create it again and wait until its members \
             run and etcd is healthy; scale {deployment} back, on every ending), or restore it \
             (create the EtcdRestore {cluster}, wait until the restore operator has replaced \
             the cluster and its members run, delete the EtcdRestore), within {}",
            wait(timeout)
        )
    }

    fn time_limit(&self, config: &Config) -> Duration {
        recovery_timeout(config)
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        recovery::operator::run(ctx, earlier.recovery(), &self.cluster, ctx.recovery.timeout).await
    }
}

/// The step timeout, or the recovery's own bound and its put-back if longer.
fn recovery_timeout(config: &Config) -> Duration {
    config
        .step_timeout
        .max(config.recovery.timeout.saturating_add(MARGIN))
}

fn twice_the_recovery_timeout(config: &Config) -> Duration {
    config.step_timeout.max(
        config
            .recovery
            .timeout
            .saturating_mul(2)
            .saturating_add(MARGIN),
    )
}
