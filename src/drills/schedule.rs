//! `[drills]`'s schedule, which `serve` starts when `enabled`: passes over every etcd cluster
//! of the namespace (both layouts), one cluster at a time, drilling the newest backup of each
//! whose newest drill (on demand or scheduled, whatever its end) started longer than
//! `interval` ago, or that was never drilled. A restart does not drill again what was drilled
//! within the interval: the times are the store's. A cluster whose backups cannot be listed
//! gets a drill that ended `error`, saying why, so that `/metrics` and its alert see it; with
//! no backups configured at all there is nothing to drill, and nothing is stored.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::DropGuard;
use uuid::Uuid;

use super::{DrillError, Drills, Trigger, record_metrics};
use crate::{
    etcd::{backups::Backups, layout},
    store::{DrillEnd, DrillState, NewDrill},
};

/// The next pass after a pass that could not list the clusters.
const RETRY: Duration = Duration::from_secs(60);
/// The shortest wait between two passes.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// Stops the schedule when dropped (a drill it runs is then left to the shutdown).
pub struct Schedule(#[allow(dead_code)] DropGuard);

impl Drills {
    /// Starts the schedule; it runs until the returned value is dropped or the drills shut
    /// down.
    pub fn schedule(&self) -> Schedule {
        let guard = self.inner.stop.child_token();
        let token = guard.clone();
        let drills = self.clone();
        let interval = self.inner.runner.config().drills.interval;
        tracing::info!(interval = %humantime::format_duration(interval), "restore drills of every etcd cluster's newest backup scheduled");
        tokio::spawn(async move {
            loop {
                let wait = tokio::select! {
                    () = token.cancelled() => return,
                    wait = drills.pass() => wait,
                };
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        Schedule(guard.drop_guard())
    }

    /// One pass: drills each cluster that is due, one after the other; returns how long
    /// until the next is due.
    async fn pass(&self) -> Duration {
        let runner = &self.inner.runner;
        let interval = runner.config().drills.interval;
        if !Backups::new(&runner.config().recovery).configured() {
            tracing::info!("no backups are configured ([recovery]): no drill to run");
            return interval;
        }
        let clusters = match layout::find_all(runner.cluster()).await {
            Ok(clusters) => clusters,
            Err(e) => {
                tracing::warn!(error = %e, "drills: listing the etcd clusters failed");
                return RETRY;
            }
        };
        let mut next = interval;
        for found in clusters {
            let last = match self.store().list_drills(&found.name, 1).await {
                Ok(drills) => drills.into_iter().next(),
                Err(e) => {
                    tracing::warn!(cluster = %found.name, error = %e, "drills: reading the last drill failed");
                    next = next.min(RETRY);
                    continue;
                }
            };
            if let Some(last) = last {
                let since = (Utc::now() - last.started_at).to_std().unwrap_or_default();
                if since < interval {
                    next = next.min(interval - since);
                    continue;
                }
            }
            match self.launch(&found, None, Trigger::Schedule).await {
                Ok((_, task)) => {
                    let _ = task.await;
                }
                // Drilled on demand right now: its end counts as this interval's.
                Err(DrillError::Busy { .. }) => {}
                Err(DrillError::ShuttingDown) => return interval,
                Err(DrillError::Backups(e)) => {
                    self.record_error(&found, &format!("listing its backups: {e}"))
                        .await;
                }
                Err(DrillError::Store(e)) => {
                    tracing::warn!(cluster = %found.name, error = %e, "drills: storing a drill failed");
                    next = next.min(RETRY);
                }
            }
        }
        next.max(MIN_WAIT)
    }

    /// Stores a scheduled drill of `found` that could not start, for `why`.
    async fn record_error(&self, found: &layout::LocatedCluster, why: &str) {
        let now = Utc::now();
        let id = Uuid::now_v7();
        let drill = NewDrill {
            id,
            cluster: found.name.clone(),
            service: found.service_name(),
            layout: found.layout.as_str().to_owned(),
            trigger: Trigger::Schedule.as_str().to_owned(),
            requested_by: None,
            backup: None,
            started_at: now,
        };
        let end = DrillEnd {
            state: DrillState::Error,
            finished_at: now,
            detail: format!("the drill could not be carried out: {why}"),
            backup_revision: None,
            live_revision: None,
            backup_age_seconds: None,
            restore_seconds: None,
            report: None,
        };
        tracing::warn!(drill_id = %id, cluster = %found.name, detail = %end.detail, "drill did not pass");
        let stored = async {
            self.store().insert_drill(&drill).await?;
            self.store().finish_drill(id, &end).await?;
            self.store().get_drill(id).await
        };
        match stored.await {
            Ok(Some(stored)) => record_metrics(&self.inner.runner, &stored),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(cluster = %found.name, error = %e, "drills: storing a drill failed")
            }
        }
    }
}
