//! Prometheus metrics of the service, every name prefixed `etcd_repopulator_`. One registry per
//! `Metrics` value (owned by the runner, reached through `AppState`), never a global: tests run
//! many services in one process and each must count only its own runs.
//!
//! Here: the runs, steps, recoveries and webhook deliveries, counted as they happen. The etcd
//! clusters, their backups and drills, and the runs waiting for a person are in [`clusters`]
//! (measured by `crate::collector`). The README's "Metrics" section lists every metric.

mod clusters;
mod recovery;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::model::{EtcdLayout, EtcdMode, Service, State};
pub use clusters::{
    BackupSample, ClusterLabels, ClusterSample, ClusterSnapshot, EtcdSample, NewestBackup,
    RunsSample,
};
use recovery::{RecoveryBuckets, RecoveryLabels};

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    service: String,
    step: String,
    state: String,
}

/// How a run execution can end: its final state, or `aborted` when the store failed under it.
const OUTCOMES: [&str; 6] = [
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "action_required",
    "aborted",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: String,
    outcome: String,
}

/// Buckets from 1 s to about 1.1 h: a step is a pod restart (seconds) or a Job re-run
/// (minutes), bounded by timeouts of 5 to 15 minutes.
#[derive(Clone)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(1.0, 2.0, 13))
    }
}

/// Where a webhook delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// At least one run was started.
    Started,
    /// Valid and authenticated, but nothing to start (firing, unmapped, duplicate, busy).
    Ignored,
    /// Missing or bad signature, stale timestamp, or missing credentials.
    Unauthorized,
    /// Not a payload the endpoint understands.
    Invalid,
    /// The service could not act on it (store failure, shutting down); the sender should retry.
    Error,
}

impl WebhookOutcome {
    fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Started => "started",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Invalid => "invalid",
            WebhookOutcome::Error => "error",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    runs_started: Counter,
    runs_finished: Family<StateLabels, Counter>,
    active_runs: Gauge,
    run_duration: Family<StateLabels, Histogram, DurationBuckets>,
    service_duration: Family<ServiceLabels, Histogram, DurationBuckets>,
    step_duration: Family<StepLabels, Histogram, DurationBuckets>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    recovery_runs: Family<RecoveryLabels, Counter>,
    recovery_duration: Family<RecoveryLabels, Histogram, RecoveryBuckets>,
    clusters: Arc<clusters::ClusterMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("etcd_repopulator");
        let runs_started = Counter::default();
        let runs_finished = Family::<StateLabels, Counter>::default();
        let active_runs = Gauge::default();
        let run_duration = Family::new_with_constructor(DurationBuckets);
        let service_duration = Family::new_with_constructor(DurationBuckets);
        let step_duration = Family::new_with_constructor(DurationBuckets);
        let webhook_deliveries = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "runs_started",
            "Run executions started (new runs and resumes)",
            runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Run executions finished, by final state",
            runs_finished.clone(),
        );
        registry.register("active_runs", "Runs executing now", active_runs.clone());
        registry.register_with_unit(
            "run_duration",
            "Duration of run executions, by final state",
            Unit::Seconds,
            run_duration.clone(),
        );
        registry.register_with_unit(
            "service_duration",
            "Duration of one service's part of a run, by service and final state",
            Unit::Seconds,
            service_duration.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Duration of steps, by service, step and final state",
            Unit::Seconds,
            step_duration.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries, by source (alertmanager, generic) and outcome",
            webhook_deliveries.clone(),
        );
        let start_time = Gauge::<i64>::default();
        start_time.set(Utc::now().timestamp());
        registry.register_with_unit(
            "start_time",
            "When the service started (Unix time)",
            Unit::Seconds,
            start_time,
        );
        let recovery_runs = Family::<RecoveryLabels, Counter>::default();
        let recovery_duration = Family::new_with_constructor(RecoveryBuckets);
        // Every outcome of every recovering mode is a series from the start, so that an
        // `increase()` sees the first failure.
        for mode in EtcdMode::ALL
            .into_iter()
            .filter(|m| m.is_destructive() || *m == EtcdMode::Repair)
        {
            for outcome in OUTCOMES {
                drop(recovery_runs.get_or_create(&RecoveryLabels {
                    mode: mode.as_str().to_owned(),
                    outcome: outcome.to_owned(),
                }));
            }
        }
        let clusters = Arc::new(clusters::ClusterMetrics::new(
            recovery_runs.clone(),
            recovery_duration.clone(),
        ));
        registry.register_collector(Box::new(clusters.clone()));
        Metrics {
            registry,
            runs_started,
            runs_finished,
            active_runs,
            run_duration,
            service_duration,
            step_duration,
            webhook_deliveries,
            recovery_runs,
            recovery_duration,
            clusters,
        }
    }

    /// A run execution ended in `state` (see [`Metrics::run_finished`]); counted as a
    /// recovery when the run is real and its etcd mode restores, rebuilds or decides (`auto`),
    /// or repairs and `acted` (a member replaced, space given back, members started: a
    /// repair that found nothing to do is no recovery).
    pub fn run_ended(
        &self,
        mode: EtcdMode,
        dry_run: bool,
        acted: bool,
        state: State,
        took: Duration,
    ) {
        let recovery = mode.is_destructive() || (mode == EtcdMode::Repair && acted);
        if dry_run || !recovery {
            return;
        }
        let labels = RecoveryLabels {
            mode: mode.as_str().to_owned(),
            outcome: state.as_str().to_owned(),
        };
        self.recovery_runs.get_or_create(&labels).inc();
        self.recovery_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The result of a restore drill of a cluster, which ended at `finished_at`: the drill
    /// metrics (`etcd_repopulator_drill_*`) of that cluster. Kept until the next drill of it;
    /// call it at start too with each cluster's newest stored drill, so that a restart does
    /// not lose them.
    pub fn record_drill(
        &self,
        cluster: &str,
        service: &str,
        layout: EtcdLayout,
        finished_at: DateTime<Utc>,
        passed: bool,
    ) {
        let labels = ClusterLabels::new(cluster, service, layout);
        self.clusters.record_drill(&labels, finished_at, passed);
    }

    /// Replaces the metrics of the etcd clusters, their backups and the stored runs with those
    /// of `snapshot` (one pass of the collector).
    pub fn publish(&self, snapshot: &ClusterSnapshot) {
        self.clusters.publish(snapshot);
    }

    pub fn run_started(&self) {
        self.runs_started.inc();
        self.active_runs.inc();
    }

    /// A run execution ended; `state` is absent when the store failed under it (it is left
    /// for the next start to mark interrupted).
    pub fn run_finished(&self, state: Option<State>, took: Duration) {
        self.active_runs.dec();
        let state = state.map_or("aborted", State::as_str).to_owned();
        let labels = StateLabels { state };
        self.runs_finished.get_or_create(&labels).inc();
        self.run_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn service_finished(&self, service: Service, state: State, took: Duration) {
        self.service_duration
            .get_or_create(&ServiceLabels {
                service: service.as_str().to_owned(),
                state: state.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn step_finished(&self, service: Service, step: &str, state: State, took: Duration) {
        self.step_duration
            .get_or_create(&StepLabels {
                service: service.as_str().to_owned(),
                step: step.to_owned(),
                state: state.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn webhook_delivery(&self, source: &str, outcome: WebhookOutcome) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                source: source.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed() {
        let metrics = Metrics::new();
        metrics.run_started();
        metrics.run_finished(Some(State::Succeeded), Duration::from_secs(3));
        metrics.service_finished(Service::Reds, State::Succeeded, Duration::from_secs(2));
        metrics.step_finished(
            Service::Reds,
            "restart-pods",
            State::Succeeded,
            Duration::from_secs(2),
        );
        metrics.webhook_delivery("generic", WebhookOutcome::Started);
        let text = metrics.encode().unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("etcd_repopulator_"), "{line}");
        }
        assert!(text.contains("etcd_repopulator_runs_finished_total{state=\"succeeded\"} 1"));
        assert!(text.contains("etcd_repopulator_active_runs 0"));
    }
}
