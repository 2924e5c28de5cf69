//! `[metrics]`: how often, and how patiently, `/metrics` measures the etcd clusters, their
//! backups and the stored runs (the collector `serve` starts).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// `[metrics]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Time between two passes over every etcd cluster (one report and one backup listing
    /// each, as `GET /etcd-clusters/{name}` and `.../backups` make). A pass that takes longer
    /// delays the next; two never run at once.
    #[serde(with = "humantime_serde")]
    pub cluster_interval: Duration,
    /// Upper bound of one cluster's part of a pass (its etcd checks, then its backups); a
    /// cluster that takes longer counts as not checked (`etcd_repopulator_collection_success`
    /// 0, unhealthy) for that pass.
    #[serde(with = "humantime_serde")]
    pub cluster_timeout: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            cluster_interval: Duration::from_secs(60),
            cluster_timeout: Duration::from_secs(30),
        }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "metrics.cluster_interval",
                "must be at least 1s",
            ));
        }
        if self.cluster_timeout.is_zero() || self.cluster_timeout > self.cluster_interval {
            return Err(ConfigError::invalid(
                "metrics.cluster_timeout",
                "must be greater than zero and at most metrics.cluster_interval",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        let metrics = Config::default().metrics;
        assert_eq!(metrics.cluster_interval, Duration::from_secs(60));
        assert_eq!(metrics.cluster_timeout, Duration::from_secs(30));
        let config =
            Config::from_toml("[metrics]\ncluster_interval = \"5m\"\ncluster_timeout = \"1m\"\n")
                .unwrap();
        assert_eq!(config.metrics.cluster_interval, Duration::from_secs(300));
        for (text, key) in [
            ("cluster_interval = \"0s\"", "metrics.cluster_interval"),
            ("cluster_interval = \"500ms\"", "metrics.cluster_interval"),
            ("cluster_timeout = \"0s\"", "metrics.cluster_timeout"),
            ("cluster_timeout = \"2m\"", "metrics.cluster_timeout"),
        ] {
            match Config::from_toml(&format!("[metrics]\n{text}\n")) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
