//! The labels and buckets of the recovery metrics, which the run counters (`mod.rs`) and the
//! clusters' samples (`clusters.rs`) share.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        family::MetricConstructor,
        histogram::{Histogram, exponential_buckets},
    },
};

/// A recovery's mode (`restore`, `rebuild`, ...) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RecoveryLabels {
    pub(super) mode: String,
    pub(super) outcome: String,
}

/// Buckets from 10 s to about 5.7 h: a recovery restores or rebuilds a cluster (minutes), then
/// repopulates its service, bounded by `[recovery] timeout` and the steps' timeouts.
#[derive(Clone, Debug)]
pub(crate) struct RecoveryBuckets;

impl MetricConstructor<Histogram> for RecoveryBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(10.0, 2.0, 12))
    }
}
