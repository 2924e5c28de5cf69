//! The collector of `/metrics`' etcd cluster, backup and stored-run metrics: `serve` starts it,
//! and once per `[metrics] cluster_interval` it makes one pass over every etcd cluster of the
//! namespace (both layouts) and the store, and publishes what it found as one snapshot
//! ([`Metrics::publish`]).
//!
//! A scrape never waits for etcd, and etcd is asked once per pass whatever the number of
//! scrapers: each cluster gets its report (`GET /etcd-clusters/{name}`'s, a handful of small
//! requests to its members) and its backup listing (`.../backups`'), both bounded by
//! `[metrics] cluster_timeout`, the clusters side by side (each is its own etcd). Passes never
//! overlap: one task runs them one after the other, and a pass asked for while one runs
//! (a test's [`Collector::collect`]) waits for it to end.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use futures::future::join_all;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    cluster::Cluster,
    etcd::{
        EtcdConfig,
        backups::{BackupError, Backups},
        layout::{self, EtcdClusterReport, LocatedCluster},
    },
    metrics::{
        BackupSample, ClusterLabels, ClusterSample, ClusterSnapshot, EtcdSample, Metrics,
        NewestBackup, RunsSample,
    },
    model::EtcdLayout,
    recovery::ETCD_RECOVER,
    runner::Runner,
    store::{Store, StoreError},
};

/// Measures the etcd clusters, their backups and the stored runs into the runner's metrics.
pub struct Collector {
    cluster: Cluster,
    etcd: EtcdConfig,
    backups: Backups,
    store: Store,
    metrics: Arc<Metrics>,
    interval: Duration,
    timeout: Duration,
    /// Held for the length of a pass.
    pass: tokio::sync::Mutex<()>,
}

/// Stops the collector's task when dropped.
pub struct Running(#[allow(dead_code)] DropGuard);

impl Collector {
    /// A collector of what `runner` acts on, as its configuration's `[metrics]` says.
    pub fn new(runner: &Runner) -> Collector {
        let config = runner.config();
        Collector {
            cluster: runner.cluster().clone(),
            etcd: config.etcd.clone(),
            backups: Backups::new(&config.recovery),
            store: runner.store().clone(),
            metrics: runner.metrics().clone(),
            interval: config.metrics.cluster_interval,
            timeout: config.metrics.cluster_timeout,
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs a pass now and then once per interval (a pass that takes longer delays the next),
    /// until the returned value is dropped.
    pub fn start(self) -> Running {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tracing::info!(interval = %humantime::format_duration(self.interval), timeout = %humantime::format_duration(self.timeout), "measuring the etcd clusters and their backups for /metrics");
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = self.collect() => {}
                }
            }
        });
        Running(stop.drop_guard())
    }

    /// One pass: measures, publishes, and returns what it published.
    pub async fn collect(&self) -> ClusterSnapshot {
        let _pass = self.pass.lock().await;
        let started = Instant::now();
        let (clusters, runs) = tokio::join!(self.clusters(), self.runs());
        let snapshot = ClusterSnapshot {
            clusters,
            runs: runs
                .inspect_err(|err| {
                    tracing::warn!(error = %err, "metrics: reading the stored runs failed");
                })
                .ok(),
            finished_at: Utc::now(),
            took_seconds: started.elapsed().as_secs_f64(),
        };
        self.metrics.publish(&snapshot);
        snapshot
    }

    async fn clusters(&self) -> Option<Vec<ClusterSample>> {
        let found = match layout::find_all(&self.cluster).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: listing the etcd clusters failed");
                return None;
            }
        };
        Some(join_all(found.iter().map(|f| self.sample(f))).await)
    }

    /// One cluster: its report and its backups side by side, both by the same deadline.
    async fn sample(&self, found: &LocatedCluster) -> ClusterSample {
        let deadline = Instant::now() + self.timeout;
        let labels = ClusterLabels::new(&found.name, &found.service_name(), found.layout);
        let report = timeout_at(deadline, layout::report(&self.cluster, found, &self.etcd));
        let (report, backups) = tokio::join!(report, self.backups(found, deadline));
        let etcd = match report {
            Ok(Ok(report)) => Some(etcd_sample(&report)),
            Ok(Err(err)) => {
                tracing::warn!(cluster = %found.name, error = %err, "metrics: checking the etcd cluster failed");
                None
            }
            Err(_) => {
                tracing::warn!(cluster = %found.name, timeout = ?self.timeout, "metrics: checking the etcd cluster took longer than [metrics] cluster_timeout");
                None
            }
        };
        ClusterSample {
            labels,
            members_wanted: found.desired,
            quota: found.quota,
            etcd,
            backups,
        }
    }

    /// The backups of a Bitnami cluster (CSM keeps none of an etcd-operator cluster's in S3
    /// or the snapshotter PVC), when backups are configured.
    async fn backups(&self, found: &LocatedCluster, deadline: Instant) -> Option<BackupSample> {
        if found.layout != EtcdLayout::Bitnami || !self.backups.configured() {
            return None;
        }
        let listing = self.backups.list(&found.csm_service, &found.name);
        let failed = |error: &dyn std::fmt::Display| {
            tracing::warn!(cluster = %found.name, %error, "metrics: listing the backups failed");
            Some(BackupSample::Failed)
        };
        match timeout_at(deadline, listing).await {
            Ok(Ok(backups)) => {
                let newest = backups
                    .iter()
                    .find(|b| !b.safety.as_ref().is_some_and(|s| s.empty))
                    .map(|b| NewestBackup {
                        location: b.locations().join(", "),
                        taken_at: b.last_modified,
                        age_seconds: b.age_seconds,
                    });
                Some(BackupSample::Listed {
                    count: backups.len(),
                    newest,
                })
            }
            Ok(Err(BackupError::NotConfigured)) => None,
            Ok(Err(err)) => failed(&err),
            Err(_) => failed(&"it took longer than [metrics] cluster_timeout"),
        }
    }

    async fn runs(&self) -> Result<RunsSample, StoreError> {
        let (waiting, last_finished, recoveries) = tokio::try_join!(
            self.store.waiting_runs(),
            self.store.last_finished_runs(),
            self.store.last_recoveries(ETCD_RECOVER),
        )?;
        let last_recovery = recoveries
            .into_iter()
            .filter_map(|recovery| {
                let (layout, _) = EtcdLayout::parse_name(&recovery.cluster)?;
                let labels =
                    ClusterLabels::new(&recovery.cluster, recovery.service.as_str(), layout);
                Some((labels, recovery.finished_at))
            })
            .collect();
        Ok(RunsSample {
            waiting,
            last_finished,
            last_recovery,
        })
    }
}

fn etcd_sample(report: &EtcdClusterReport) -> EtcdSample {
    let mut alarms: BTreeMap<String, i64> = BTreeMap::new();
    for alarm in &report.alarms {
        *alarms.entry(alarm.alarm.clone()).or_default() += 1;
    }
    EtcdSample {
        healthy: report.healthy,
        members_ready: report.ready,
        members_healthy: report.member_health.iter().filter(|m| m.healthy).count() as i64,
        has_leader: report.leader.is_some(),
        db_size: report.db_size,
        db_size_in_use: report.db_size_in_use,
        alarms,
    }
}
