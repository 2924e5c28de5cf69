//! `[webhooks]`: the generic webhook's key and replay window, and which Alertmanager alerts
//! start runs for which services.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::model::Service;

/// `[webhooks]` in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The HMAC-SHA256 key of `POST /webhooks/generic` (the file's bytes, without a trailing
    /// newline). Unset or empty: that webhook is disabled.
    pub hmac_key_file: Option<PathBuf>,
    /// How far a signed request's timestamp may be from the service's clock.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    pub alertmanager: AlertmanagerConfig,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            hmac_key_file: None,
            replay_window: Duration::from_secs(300),
            alertmanager: AlertmanagerConfig::default(),
        }
    }
}

/// `[webhooks.alertmanager]`: which alerts start runs for which services.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Only alerts with one of these `alertname`s start runs; empty means any.
    pub alertnames: Vec<String>,
    /// Labels naming the etcd cluster, tried in order.
    pub cluster_labels: Vec<String>,
    /// etcd cluster -> the services whose data lives in it. Replaces the default map.
    pub clusters: BTreeMap<String, Vec<Service>>,
    /// Start dry runs only (to try the rules out).
    pub dry_run: bool,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        use Service::{Bos, Bss, Cps, Crus, Externaldns, Fas, Hmnfd, Meds, Reds};
        // One etcd cluster per service (the runbook), with two exceptions: BSS is repopulated
        // by re-running the REDS init Job, which is still keyed to cray-bss-etcd; and MEDS has
        // no etcd cluster of its own on a standard system: it is restarted with REDS, whose
        // endpoint discovery it complements (a cray-meds-etcd, where it exists, maps to it).
        let clusters = [
            ("cray-bos-etcd", vec![Bos]),
            ("cray-bss-etcd", vec![Bss]),
            ("cray-cps-etcd", vec![Cps]),
            ("cray-crus-etcd", vec![Crus]),
            ("cray-externaldns-etcd", vec![Externaldns]),
            ("cray-fas-etcd", vec![Fas]),
            ("cray-hmnfd-etcd", vec![Hmnfd]),
            ("cray-meds-etcd", vec![Meds]),
            ("cray-reds-etcd", vec![Reds, Meds]),
        ];
        AlertmanagerConfig {
            alertnames: Vec::new(),
            cluster_labels: vec!["etcd_cluster".to_owned(), "cluster".to_owned()],
            clusters: clusters
                .into_iter()
                .map(|(name, services)| (name.to_owned(), services))
                .collect(),
            dry_run: false,
        }
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replay_window.is_zero() {
            return Err(ConfigError::invalid(
                "webhooks.replay_window",
                "must be greater than zero",
            ));
        }
        let am = &self.alertmanager;
        if am.cluster_labels.iter().all(|l| l.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "webhooks.alertmanager.cluster_labels",
                "must name at least one label",
            ));
        }
        if let Some((cluster, _)) = am.clusters.iter().find(|(_, s)| s.is_empty()) {
            return Err(ConfigError::invalid(
                format!("webhooks.alertmanager.clusters.{cluster}"),
                "must name at least one service",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_map_every_etcd_cluster_of_the_runbook() {
        let rules = AlertmanagerConfig::default();
        for service in Service::ALL {
            assert!(
                rules.clusters.values().any(|s| s.contains(&service)),
                "{service} has no etcd cluster"
            );
        }
        assert_eq!(rules.clusters["cray-bss-etcd"], [Service::Bss]);
    }
}
