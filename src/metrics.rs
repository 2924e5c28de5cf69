//! Prometheus metrics of the service, every name prefixed `etcd_repopulator_`. One registry per
//! `Metrics` value (owned by the runner, reached through `AppState`), never a global: tests run
//! many services in one process and each must count only its own runs.

use std::time::Duration;

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

use crate::model::{Service, State};

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
        Metrics {
            registry,
            runs_started,
            runs_finished,
            active_runs,
            run_duration,
            service_duration,
            step_duration,
            webhook_deliveries,
        }
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
