//! The metrics of the etcd clusters, their backups and drills, and of the runs that wait for a
//! person. The collector (`crate::collector`) measures them once per pass and publishes one
//! [`ClusterSnapshot`]; every scrape encodes the last one whole, so a scrape never sees half a
//! pass and a cluster that is gone leaves no stale series. The drill results are set one at a
//! time by the drills ([`super::Metrics::record_drill`]) and kept.
//!
//! Every metric here is described (`# HELP`, `# TYPE`) from the start, with or without series,
//! so that the chart's alert rules and dashboard name metrics that exist before the first pass
//! (prometheus-client leaves an empty family out: hence a collector of our own).

use std::{
    collections::BTreeMap,
    fmt,
    sync::{RwLock, atomic::AtomicU64},
};

use chrono::{DateTime, Utc};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::MetricType,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Unit,
};

use super::recovery::{RecoveryBuckets, RecoveryLabels};
use crate::{
    etcd::quota::Quota,
    model::{EtcdLayout, EtcdMode, State},
};

/// The labels of every per-cluster series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ClusterLabels {
    /// `cray-bss-bitnami-etcd`, `cray-bss-etcd`.
    pub cluster: String,
    /// `bss`, or the CSM service (`cray-uas-mgr`) of a cluster this tool does not repopulate.
    pub service: String,
    /// `bitnami` or `etcd-operator`.
    pub layout: String,
}

impl ClusterLabels {
    pub fn new(cluster: &str, service: &str, layout: EtcdLayout) -> ClusterLabels {
        ClusterLabels {
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            layout: layout.as_str().to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    #[prometheus(flatten)]
    cluster: ClusterLabels,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    #[prometheus(flatten)]
    cluster: ClusterLabels,
    alarm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    #[prometheus(flatten)]
    cluster: ClusterLabels,
    location: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    #[prometheus(flatten)]
    cluster: ClusterLabels,
    part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    state: String,
    mode: String,
}

/// What etcd said of a cluster (its report, as `GET /etcd-clusters/{name}` shows it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdSample {
    pub healthy: bool,
    /// Member pods that are Ready (started).
    pub members_ready: i64,
    /// Members that answered healthy.
    pub members_healthy: i64,
    pub has_leader: bool,
    pub db_size: Option<u64>,
    pub db_size_in_use: Option<u64>,
    /// Active alarm type (`NOSPACE`, `CORRUPT`) → members raising it.
    pub alarms: BTreeMap<String, i64>,
}

/// The newest backup of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewestBackup {
    /// Where it is: its S3 URL and/or its path in the snapshotter PVC, comma-separated.
    pub location: String,
    pub taken_at: DateTime<Utc>,
    pub age_seconds: u64,
}

/// A cluster's backups, as listed in one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupSample {
    Listed {
        count: usize,
        /// The newest, safety snapshots of an empty cluster left out.
        newest: Option<NewestBackup>,
    },
    /// Listing failed or did not finish in time (the log says why).
    Failed,
}

/// One cluster in one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSample {
    pub labels: ClusterLabels,
    /// `spec.size` (EtcdCluster) or `spec.replicas` (StatefulSet).
    pub members_wanted: i64,
    /// Its backend quota, and where that comes from.
    pub quota: Quota,
    /// `None`: the cluster could not be checked in time, or Kubernetes failed (the log says
    /// why); it counts as unhealthy.
    pub etcd: Option<EtcdSample>,
    /// `None`: its backups are not listed (no backups configured, or an etcd-operator cluster,
    /// whose backups CSM did not keep in S3 or the snapshotter PVC).
    pub backups: Option<BackupSample>,
}

/// What the store says of the runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunsSample {
    /// Real runs `interrupted` or `action_required`, by state and etcd mode.
    pub waiting: Vec<(State, EtcdMode, i64)>,
    /// When the newest real run that ended in a state ended, by state and etcd mode.
    pub last_finished: Vec<(State, EtcdMode, DateTime<Utc>)>,
    /// When the newest successful recovery (a real run's `etcd-recover` that restored or
    /// rebuilt the cluster) of each cluster ended.
    pub last_recovery: Vec<(ClusterLabels, DateTime<Utc>)>,
}

/// One pass of the collector.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSnapshot {
    /// `None` when the clusters could not be listed (the previous pass's clusters are dropped).
    pub clusters: Option<Vec<ClusterSample>>,
    /// `None` when the store could not be read.
    pub runs: Option<RunsSample>,
    pub finished_at: DateTime<Utc>,
    pub took_seconds: f64,
}

type ClusterGauges = Family<ClusterLabels, Gauge>;

/// The series of one snapshot.
#[derive(Debug, Default)]
struct SnapshotFamilies {
    healthy: ClusterGauges,
    members_wanted: ClusterGauges,
    members_ready: ClusterGauges,
    members_healthy: ClusterGauges,
    has_leader: ClusterGauges,
    db_size: ClusterGauges,
    db_size_in_use: ClusterGauges,
    quota: Family<QuotaLabels, Gauge>,
    alarms: Family<AlarmLabels, Gauge>,
    backups: ClusterGauges,
    backup_age: Family<BackupLabels, Gauge>,
    backup_timestamp: Family<BackupLabels, Gauge>,
    collection_success: Family<PartLabels, Gauge>,
    recovery_last_success: ClusterGauges,
    runs_waiting: Family<RunLabels, Gauge>,
    runs_last_finished: Family<RunLabels, Gauge>,
    collection_timestamp: Unlabelled<Gauge>,
    collection_duration: Unlabelled<Gauge<f64, AtomicU64>>,
}

/// A metric without labels that has no sample until it is first set (a bare gauge would say 0
/// before the first pass).
#[derive(Debug, Default)]
struct Unlabelled<M>(Option<M>);

impl<M: EncodeMetric> EncodeMetric for Unlabelled<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), fmt::Error> {
        match &self.0 {
            Some(metric) => metric.encode(encoder),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

fn set<L>(family: &Family<L, Gauge>, labels: L, value: i64)
where
    L: Clone + fmt::Debug + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + 'static,
{
    family.get_or_create(&labels).set(value);
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn run_labels(state: State, mode: EtcdMode) -> RunLabels {
    RunLabels {
        state: state.as_str().to_owned(),
        mode: mode.as_str().to_owned(),
    }
}

impl SnapshotFamilies {
    fn of(snapshot: &ClusterSnapshot) -> SnapshotFamilies {
        let mut families = SnapshotFamilies::default();
        for sample in snapshot.clusters.iter().flatten() {
            families.add_cluster(sample);
        }
        if let Some(runs) = &snapshot.runs {
            // Every state a person must act on, in every mode, is a series (0 when none), so
            // that `> 0` and the dashboard see the zeros too.
            for state in [State::Interrupted, State::ActionRequired] {
                for mode in EtcdMode::ALL {
                    set(&families.runs_waiting, run_labels(state, mode), 0);
                }
            }
            for (state, mode, count) in &runs.waiting {
                set(&families.runs_waiting, run_labels(*state, *mode), *count);
            }
            for (state, mode, at) in &runs.last_finished {
                set(
                    &families.runs_last_finished,
                    run_labels(*state, *mode),
                    at.timestamp(),
                );
            }
            for (labels, at) in &runs.last_recovery {
                set(
                    &families.recovery_last_success,
                    labels.clone(),
                    at.timestamp(),
                );
            }
        }
        let finished_at = Gauge::<i64>::default();
        finished_at.set(snapshot.finished_at.timestamp());
        families.collection_timestamp = Unlabelled(Some(finished_at));
        let took = Gauge::<f64, AtomicU64>::default();
        took.set(snapshot.took_seconds);
        families.collection_duration = Unlabelled(Some(took));
        families
    }

    fn add_cluster(&self, sample: &ClusterSample) {
        let labels = &sample.labels;
        let part = |part: &str| PartLabels {
            cluster: labels.clone(),
            part: part.to_owned(),
        };
        set(&self.members_wanted, labels.clone(), sample.members_wanted);
        set(
            &self.quota,
            QuotaLabels {
                cluster: labels.clone(),
                source: sample.quota.source.as_str().to_owned(),
            },
            saturating(sample.quota.bytes),
        );
        let etcd = sample.etcd.as_ref();
        set(
            &self.collection_success,
            part("etcd"),
            i64::from(etcd.is_some()),
        );
        set(
            &self.healthy,
            labels.clone(),
            i64::from(etcd.is_some_and(|e| e.healthy)),
        );
        if let Some(etcd) = etcd {
            set(&self.members_ready, labels.clone(), etcd.members_ready);
            set(&self.members_healthy, labels.clone(), etcd.members_healthy);
            set(&self.has_leader, labels.clone(), i64::from(etcd.has_leader));
            if let Some(size) = etcd.db_size {
                set(&self.db_size, labels.clone(), saturating(size));
            }
            if let Some(size) = etcd.db_size_in_use {
                set(&self.db_size_in_use, labels.clone(), saturating(size));
            }
            for (alarm, members) in &etcd.alarms {
                let alarm = AlarmLabels {
                    cluster: labels.clone(),
                    alarm: alarm.clone(),
                };
                set(&self.alarms, alarm, *members);
            }
        }
        match &sample.backups {
            None => {}
            Some(BackupSample::Failed) => set(&self.collection_success, part("backups"), 0),
            Some(BackupSample::Listed { count, newest }) => {
                set(&self.collection_success, part("backups"), 1);
                set(
                    &self.backups,
                    labels.clone(),
                    i64::try_from(*count).unwrap_or(i64::MAX),
                );
                if let Some(newest) = newest {
                    let backup = BackupLabels {
                        cluster: labels.clone(),
                        location: newest.location.clone(),
                    };
                    set(
                        &self.backup_age,
                        backup.clone(),
                        saturating(newest.age_seconds),
                    );
                    set(&self.backup_timestamp, backup, newest.taken_at.timestamp());
                }
            }
        }
    }
}

/// The drill results, set one at a time and kept.
#[derive(Debug, Default)]
struct DrillFamilies {
    last_timestamp: ClusterGauges,
    last_success: ClusterGauges,
    last_success_timestamp: ClusterGauges,
}

/// Every metric of this module, and the recoveries' (which the alerts and the dashboard use
/// too, so they are described from the start), registered as one collector.
#[derive(Debug)]
pub(super) struct ClusterMetrics {
    snapshot: RwLock<SnapshotFamilies>,
    drills: DrillFamilies,
    recovery_runs: Family<RecoveryLabels, Counter>,
    recovery_duration: Family<RecoveryLabels, Histogram, RecoveryBuckets>,
}

/// A metric as `/metrics` describes it: name (after the `etcd_repopulator_` prefix, before
/// the unit), help, unit.
type Description<'a> = (
    &'static str,
    &'static str,
    Option<Unit>,
    &'a dyn EncodeMetric,
);

impl ClusterMetrics {
    /// With the recoveries' metrics, which the runner sets.
    pub(super) fn new(
        recovery_runs: Family<RecoveryLabels, Counter>,
        recovery_duration: Family<RecoveryLabels, Histogram, RecoveryBuckets>,
    ) -> ClusterMetrics {
        ClusterMetrics {
            snapshot: RwLock::default(),
            drills: DrillFamilies::default(),
            recovery_runs,
            recovery_duration,
        }
    }

    pub(super) fn publish(&self, snapshot: &ClusterSnapshot) {
        let families = SnapshotFamilies::of(snapshot);
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = families;
    }

    pub(super) fn record_drill(
        &self,
        labels: &ClusterLabels,
        finished_at: DateTime<Utc>,
        passed: bool,
    ) {
        let drills = &self.drills;
        set(
            &drills.last_timestamp,
            labels.clone(),
            finished_at.timestamp(),
        );
        set(&drills.last_success, labels.clone(), i64::from(passed));
        if passed {
            set(
                &drills.last_success_timestamp,
                labels.clone(),
                finished_at.timestamp(),
            );
        }
    }
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = &self.drills;
        let described: [Description<'_>; 23] = [
            (
                "recovery_runs",
                "Executions of real runs that recover etcd clusters (etcd mode restore, rebuild or auto), by mode and outcome (the run's state, or aborted)",
                None,
                &self.recovery_runs,
            ),
            (
                "recovery_run_duration",
                "Duration of executions of real runs that recover etcd clusters, by mode and outcome",
                Some(Unit::Seconds),
                &self.recovery_duration,
            ),
            (
                "etcd_healthy",
                "1 when the etcd cluster is healthy: every member healthy, a leader, no alarm, every member pod Ready; 0 otherwise, or when it could not be checked in time",
                None,
                &s.healthy,
            ),
            (
                "etcd_members_wanted",
                "Members the etcd cluster should have (StatefulSet spec.replicas, EtcdCluster spec.size)",
                None,
                &s.members_wanted,
            ),
            (
                "etcd_members_ready",
                "Member pods of the etcd cluster that are started and Ready",
                None,
                &s.members_ready,
            ),
            (
                "etcd_members_healthy",
                "Members of the etcd cluster that answer healthy",
                None,
                &s.members_healthy,
            ),
            (
                "etcd_has_leader",
                "1 when the etcd cluster has a leader",
                None,
                &s.has_leader,
            ),
            (
                "etcd_db_size",
                "Size of the etcd cluster's backend database (etcd's dbSize)",
                Some(Unit::Bytes),
                &s.db_size,
            ),
            (
                "etcd_db_size_in_use",
                "Bytes of the etcd cluster's backend database in use (etcd's dbSizeInUse; the rest is freed by a defrag)",
                Some(Unit::Bytes),
                &s.db_size_in_use,
            ),
            (
                "etcd_quota",
                "Backend quota of the etcd cluster: beyond it etcd raises NOSPACE and refuses writes (source: env = ETCD_QUOTA_BACKEND_BYTES of the StatefulSet or EtcdCluster, etcd-default = etcd's default 2 GiB)",
                Some(Unit::Bytes),
                &s.quota,
            ),
            (
                "etcd_alarms",
                "Members of the etcd cluster raising an alarm, one series per active alarm type (NOSPACE, CORRUPT)",
                None,
                &s.alarms,
            ),
            (
                "backups",
                "Backups of the etcd cluster listed in S3 and the snapshotter PVC",
                None,
                &s.backups,
            ),
            (
                "backup_newest_age",
                "Age of the etcd cluster's newest backup when last listed (location: where it is)",
                Some(Unit::Seconds),
                &s.backup_age,
            ),
            (
                "backup_newest_timestamp",
                "When the etcd cluster's newest backup was taken (Unix time; location: where it is)",
                Some(Unit::Seconds),
                &s.backup_timestamp,
            ),
            (
                "collection_success",
                "1 when the last pass of the collector read this part (etcd, backups) of the cluster in time, 0 when it failed",
                None,
                &s.collection_success,
            ),
            (
                "collection_last_timestamp",
                "When the collector's last pass over the etcd clusters, their backups and the stored runs ended (Unix time)",
                Some(Unit::Seconds),
                &s.collection_timestamp,
            ),
            (
                "collection_duration",
                "How long the collector's last pass took",
                Some(Unit::Seconds),
                &s.collection_duration,
            ),
            (
                "recovery_last_success_timestamp",
                "When the newest successful recovery (restore or rebuild by a real run) of the etcd cluster ended (Unix time)",
                Some(Unit::Seconds),
                &s.recovery_last_success,
            ),
            (
                "runs_waiting",
                "Real runs waiting for a person, by state (interrupted: resume it; action_required: its messages say what to do) and etcd mode",
                None,
                &s.runs_waiting,
            ),
            (
                "runs_last_finished_timestamp",
                "When the newest real run that ended in this state ended, by state and etcd mode (Unix time)",
                Some(Unit::Seconds),
                &s.runs_last_finished,
            ),
            (
                "drill_last_timestamp",
                "When the newest restore drill of the etcd cluster ended (Unix time)",
                Some(Unit::Seconds),
                &d.last_timestamp,
            ),
            (
                "drill_last_success",
                "1 when the newest restore drill of the etcd cluster passed, 0 when it failed",
                None,
                &d.last_success,
            ),
            (
                "drill_last_success_timestamp",
                "When the newest restore drill of the etcd cluster that passed ended (Unix time)",
                Some(Unit::Seconds),
                &d.last_success_timestamp,
            ),
        ];
        for (name, help, unit, metric) in described {
            let metric_encoder =
                encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            metric.encode(metric_encoder)?;
        }
        Ok(())
    }
}
