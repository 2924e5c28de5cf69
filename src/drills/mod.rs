//! Restore drills: a backup of an etcd cluster (its newest, or a named one) restored with
//! etcd's own tooling into a scratch etcd that is not the live cluster, a real `etcd` serving
//! it, and what it holds counted through that etcd by the data each service keeps and compared
//! with the live cluster. A backup is proven before the night it is needed, and `auto`
//! (`recovery`) can prefer one whose drill passed ([`last_drill`]).
//!
//! # Where the scratch etcd runs, and why
//!
//! In the service's own pod, as a child process: `etcdutl snapshot restore` (or etcd 3.4's
//! `etcdctl snapshot restore`, `[recovery] etcdutl`) into `<[drills] scratch_dir>/drill-<id>`,
//! then `etcd` (`[drills] etcd`) on loopback (ports free at start, `--data-dir` the restored
//! directory, a backend quota the database fits in), its keys listed and counted through its
//! JSON gateway as [`crate::etcd::EtcdClient`] reads any cluster, the live cluster read the
//! same way at its client endpoint (`layout::endpoint`), then etcd killed and the directory
//! removed. Rather than a Kubernetes Job with the cluster's own etcd image, because:
//!
//! - it is real etcd in the cluster and in the simulated cluster alike (the image carries the
//!   `etcd` and `etcdutl` of the etcd release CSM runs, copied from the official etcd image;
//!   the tests use Debian's etcd-server), so what the tests prove is what runs;
//! - it never touches the live cluster: its pods, PVCs and Services are not involved, and the
//!   live cluster only answers range requests;
//! - cleanup is local and certain: the etcd is this process's child (killed when its guard is
//!   dropped, however the drill ends: done, failed, timed out, cancelled, the future dropped),
//!   its directory is removed after it; after a crash the next start removes what is left (see
//!   [`scratch`]). A Job would need a second image pull path, RBAC to create Jobs and Pods on
//!   etcd images, a volume for the snapshot, and a channel to report its counts back, and
//!   after a crash its pod and volume would be the cluster's to clean.
//!
//! The price: the pod needs room and memory for the largest restored backup (the chart's
//! `drills` values: an emptyDir for the scratch directory, the memory limit), and the backup
//! is served by the etcd of the image, not necessarily the cluster's own version (both are
//! CSM's etcd 3.5 from 1.5 on; a 3.4 backup restores in 3.5).
//!
//! # What a drill checks, and when it fails
//!
//! Integrity (the SHA-256 trailer, the database read whole: revision, total keys, size, hash;
//! see [`crate::etcd::backups::check`], whose verdict is remembered as every check's is), the
//! restore by the real tool (how long it took: an estimate of the restore part of a real
//! recovery), etcd serving exactly the live keys the database holds, and, compared with the
//! live cluster, the keys of each kind of data the service keeps ([`data`]): only live (written
//! since the backup), only in the backup (deleted since), changed since. It fails when any of
//! these is wrong, or when the backup has none of a kind of data (or no key at all) the live
//! cluster has: restoring it would lose all of it. A drill that could not be carried out (no
//! tool, no room, S3 unreachable, too slow) ends `error`, no verdict on the backup. A live
//! cluster that does not answer is noted, and the verdict stands on the backup alone.
//!
//! One drill of a cluster at a time (a second is 409 naming the first); the schedule
//! ([`schedule`]) drills one cluster after the other.

mod compare;
pub mod data;
pub mod report;
mod run;
pub mod schedule;
pub mod scratch;
mod scratch_etcd;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::Utc;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    etcd::{
        backups::{Backup, BackupError, Backups},
        layout::LocatedCluster,
    },
    runner::Runner,
    store::{
        CheckedCopy, DrillEnd, DrillRecord, DrillState, DrilledCopy, NewDrill, Store, StoreError,
    },
};
pub use report::DrillReport;

/// Why a drill was not started.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("a drill of {cluster} is running: {drill} (one drill of a cluster at a time)")]
    Busy { cluster: String, drill: Uuid },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Backups(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asked for a drill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// An API caller (the CLI is one), by name.
    Api { requested_by: String },
    /// `[drills]`'s schedule.
    Schedule,
}

impl Trigger {
    fn as_str(&self) -> &'static str {
        match self {
            Trigger::Api { .. } => "api",
            Trigger::Schedule => "schedule",
        }
    }
}

/// A drill, as `GET /etcd-clusters/{name}/drills` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Drill {
    #[serde(flatten)]
    pub record: DrillRecord,
    pub took_seconds: Option<f64>,
    /// Everything it found, step by step (absent while it runs).
    pub report: Option<DrillReport>,
}

impl From<DrillRecord> for Drill {
    fn from(mut record: DrillRecord) -> Drill {
        Drill {
            took_seconds: record
                .finished_at
                .map(|end| (end - record.started_at).as_seconds_f64()),
            report: record
                .report
                .take()
                .and_then(|value| serde_json::from_value(value).ok()),
            record,
        }
    }
}

pub use crate::etcd::backup_drill::{DrillOutcome, last_drill};

/// The drills of one service instance: at most one per cluster at a time, each a task that
/// the service's shutdown cancels.
#[derive(Clone)]
pub struct Drills {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    /// The running drill of each cluster.
    active: Mutex<HashMap<String, Uuid>>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// A cluster's slot, freed when dropped.
struct Slot {
    inner: Arc<Inner>,
    cluster: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.cluster);
    }
}

impl Drills {
    /// The drills of the service `runner` runs: drills a previous process left running are
    /// marked interrupted, their scratch directories (and etcd) removed, and `/metrics` gets
    /// each cluster's newest drill back.
    pub async fn start(runner: &Runner) -> Result<Drills, StoreError> {
        let store = runner.store();
        for id in store.mark_drills_interrupted(Utc::now()).await? {
            tracing::warn!(drill_id = %id, "drill interrupted by the previous stop");
        }
        let scratch_dir = runner.config().drills.scratch_dir.clone();
        let removed =
            tokio::task::spawn_blocking(move || scratch::remove_leftovers(&scratch_dir)).await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "looking for what crashed drills left");
        }
        let (reported, passed) = store.newest_drills().await?;
        // The newest pass first: `record_drill` keeps the time of the newest pass it was given.
        for drill in passed.iter().chain(&reported) {
            record_metrics(runner, drill);
        }
        Ok(Drills {
            inner: Arc::new(Inner {
                runner: runner.clone(),
                active: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        })
    }

    fn store(&self) -> &Store {
        self.inner.runner.store()
    }

    /// Starts a drill of `found`'s backup `backup` (its newest when `None`) in the
    /// background; returns it as stored (`running`). The backups are listed first: a named
    /// backup that does not exist, or backups that cannot be listed, are errors and no drill.
    pub async fn start_drill(
        &self,
        found: &LocatedCluster,
        backup: Option<&str>,
        trigger: Trigger,
    ) -> Result<Drill, DrillError> {
        self.launch(found, backup, trigger)
            .await
            .map(|(drill, _)| drill)
    }

    /// Like [`Drills::start_drill`], returning the task too, to wait for its end.
    async fn launch(
        &self,
        found: &LocatedCluster,
        backup: Option<&str>,
        trigger: Trigger,
    ) -> Result<(Drill, JoinHandle<()>), DrillError> {
        let id = Uuid::now_v7();
        let slot = self.reserve(&found.name, id)?;
        let chosen = self.choose(found, backup).await?;
        let record = NewDrill {
            id,
            cluster: found.name.clone(),
            service: found.service_name(),
            layout: found.layout.as_str().to_owned(),
            trigger: trigger.as_str().to_owned(),
            requested_by: match &trigger {
                Trigger::Api { requested_by } => Some(requested_by.clone()),
                Trigger::Schedule => None,
            },
            backup: chosen.as_ref().and_then(drilled_copy),
            started_at: Utc::now(),
        };
        self.store().insert_drill(&record).await?;
        tracing::info!(drill_id = %id, cluster = %found.name, backup = chosen.as_ref().map(|b| b.name.as_str()), trigger = record.trigger, "drill started");
        let stored = self
            .store()
            .get_drill(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("drill {id} was not stored")))?;
        let task =
            self.inner
                .tracker
                .spawn(execute(self.inner.clone(), slot, id, found.clone(), chosen));
        Ok((stored.into(), task))
    }

    /// Takes `cluster`'s slot for the drill `id`.
    fn reserve(&self, cluster: &str, id: Uuid) -> Result<Slot, DrillError> {
        if self.inner.stop.is_cancelled() {
            return Err(DrillError::ShuttingDown);
        }
        let mut active = self
            .inner
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&drill) = active.get(cluster) {
            return Err(DrillError::Busy {
                cluster: cluster.to_owned(),
                drill,
            });
        }
        active.insert(cluster.to_owned(), id);
        Ok(Slot {
            inner: self.inner.clone(),
            cluster: cluster.to_owned(),
        })
    }

    /// The backup `name` of `found`, or its newest one worth drilling (not a safety snapshot
    /// of an empty cluster, which holds nothing by design); `None` when it has none.
    async fn choose(
        &self,
        found: &LocatedCluster,
        name: Option<&str>,
    ) -> Result<Option<Backup>, BackupError> {
        let backups = Backups::new(&self.inner.runner.config().recovery);
        let listed = backups.list(&found.csm_service, &found.name).await?;
        match name {
            Some(name) => listed
                .into_iter()
                .find(|b| b.name == name)
                .map(Some)
                .ok_or_else(|| BackupError::NotFound {
                    service: found.csm_service.clone(),
                    name: name.to_owned(),
                }),
            None => Ok(listed
                .into_iter()
                .find(|b| !b.safety.as_ref().is_some_and(|s| s.empty))),
        }
    }

    /// The drill `id` of `cluster`.
    pub async fn get(&self, cluster: &str, id: Uuid) -> Result<Option<Drill>, StoreError> {
        Ok(self
            .store()
            .get_drill(id)
            .await?
            .filter(|d| d.cluster == cluster)
            .map(Drill::from))
    }

    /// The drills of `cluster`, newest first.
    pub async fn list(&self, cluster: &str, limit: u32) -> Result<Vec<Drill>, StoreError> {
        Ok(self
            .store()
            .list_drills(cluster, limit)
            .await?
            .into_iter()
            .map(Drill::from)
            .collect())
    }

    /// Stops the running drills (each ends `cancelled`, its etcd killed and its directory
    /// removed) and refuses new ones; waits up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drills still running after the shutdown grace period");
        }
    }
}

fn drilled_copy(backup: &Backup) -> Option<DrilledCopy> {
    // The copy a drill reads: the snapshotter's when there is one.
    let copy = backup.snapshotter.as_ref().or(backup.s3.as_ref())?;
    Some(DrilledCopy {
        backup: backup.name.clone(),
        copy: CheckedCopy {
            location: copy.location.clone(),
            size: copy.size,
            last_modified: copy.last_modified,
        },
    })
}

/// The drill `id` of `found` in the background: bounded by `[drills] timeout`, stopped by the
/// shutdown; its end stored, then `/metrics` told.
async fn execute(
    inner: Arc<Inner>,
    slot: Slot,
    id: Uuid,
    found: LocatedCluster,
    backup: Option<Backup>,
) {
    let runner = &inner.runner;
    let config = runner.config();
    let timeout = config.drills.timeout;
    let ctx = run::Context {
        cluster: runner.cluster(),
        config,
        store: runner.store(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let drilled = tokio::time::timeout_at(
        deadline,
        run::drill(&ctx, id, &found, backup.as_ref(), deadline),
    );
    let ended = tokio::select! {
        ended = drilled => ended.unwrap_or_else(|_| run::Ended {
            state: DrillState::Error,
            detail: format!(
                "the drill did not finish within {} ([drills] timeout)",
                humantime::format_duration(timeout)
            ),
            report: DrillReport::default(),
        }),
        () = inner.stop.cancelled() => run::Ended {
            state: DrillState::Cancelled,
            detail: "cancelled: the service stopped during the drill".to_owned(),
            report: DrillReport::default(),
        },
    };
    let report = &ended.report;
    let end = DrillEnd {
        state: ended.state,
        finished_at: Utc::now(),
        detail: ended.detail.clone(),
        // etcd's word when it served it (an etcd that never wrote a key is at revision 1,
        // where the database's highest revision is 0).
        backup_revision: report
            .scratch_etcd
            .as_ref()
            .map(|e| e.revision)
            .or(report.integrity.as_ref().map(|c| c.snapshot.revision)),
        live_revision: report.live.as_ref().and_then(|l| l.revision),
        backup_age_seconds: report.backup.as_ref().map(|b| b.age_seconds),
        restore_seconds: report.restore.as_ref().map(|r| r.seconds),
        report: serde_json::to_value(report).ok(),
    };
    match ended.state {
        DrillState::Passed => {
            tracing::info!(drill_id = %id, cluster = %found.name, detail = %end.detail, "drill passed");
        }
        state => {
            tracing::warn!(drill_id = %id, cluster = %found.name, %state, detail = %end.detail, "drill did not pass");
        }
    }
    match runner.store().finish_drill(id, &end).await {
        Ok(()) => {
            if let Ok(Some(stored)) = runner.store().get_drill(id).await {
                record_metrics(runner, &stored);
            }
        }
        Err(e) => {
            tracing::error!(drill_id = %id, error = %e, "storing a drill's end failed; it is marked interrupted at the next start");
        }
    }
    drop(slot);
}

/// `/metrics`' drill series of the drill's cluster, when the drill is one it reports.
fn record_metrics(runner: &Runner, drill: &DrillRecord) {
    let Some(layout) = crate::model::EtcdLayout::parse_name(&drill.cluster).map(|(l, _)| l) else {
        return;
    };
    if !drill.state.is_reported() {
        return;
    }
    runner.metrics().record_drill(
        &drill.cluster,
        &drill.service,
        layout,
        drill.finished_at.unwrap_or(drill.started_at),
        drill.state == DrillState::Passed,
    );
}
