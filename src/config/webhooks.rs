//! `[webhooks]`: the generic webhook's key and replay window, which Alertmanager alerts start
//! runs for which services, and on which etcd clusters webhook runs may rebuild or restore.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::model::{EtcdLayout, EtcdMode, Service};

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
    /// etcd cluster -> the `etcd` mode (`restore`, `rebuild` or `auto`) runs started by
    /// webhooks may use on it, e.g. `{ "cray-bss-bitnami-etcd" = "auto" }`. A cluster not
    /// listed is never rebuilt or restored by a webhook run (those runs are `check`); a listed
    /// one counts as confirmed for such runs. Empty by default.
    pub recover_clusters: BTreeMap<String, EtcdMode>,
    pub alertmanager: AlertmanagerConfig,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            hmac_key_file: None,
            replay_window: Duration::from_secs(300),
            recover_clusters: BTreeMap::new(),
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
        // Each cluster under both its names: the etcd operator's (CSM <= 1.4) and the Bitnami
        // chart's (CSM >= 1.5).
        let clusters = [
            ("cray-bos", vec![Bos]),
            ("cray-bss", vec![Bss]),
            ("cray-cps", vec![Cps]),
            ("cray-crus", vec![Crus]),
            ("cray-externaldns", vec![Externaldns]),
            ("cray-fas", vec![Fas]),
            ("cray-hmnfd", vec![Hmnfd]),
            ("cray-meds", vec![Meds]),
            ("cray-reds", vec![Reds, Meds]),
        ];
        AlertmanagerConfig {
            alertnames: Vec::new(),
            cluster_labels: vec!["etcd_cluster".to_owned(), "cluster".to_owned()],
            clusters: clusters
                .into_iter()
                .flat_map(|(csm, services)| {
                    [EtcdLayout::Operator, EtcdLayout::Bitnami]
                        .map(|layout| (layout.cluster_name(csm), services.clone()))
                })
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
        for (cluster, mode) in &self.recover_clusters {
            let key = format!("webhooks.recover_clusters.{cluster}");
            if EtcdLayout::parse_name(cluster).is_none() {
                return Err(ConfigError::invalid(
                    key,
                    "is not an etcd cluster name (cray-<service>-etcd or \
                     cray-<service>-bitnami-etcd)",
                ));
            }
            if !mode.is_destructive() {
                return Err(ConfigError::invalid(
                    key,
                    "check is what webhook runs do on every cluster not listed; list a cluster \
                     with restore, rebuild or auto",
                ));
            }
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
        assert_eq!(rules.clusters["cray-bss-bitnami-etcd"], [Service::Bss]);
        assert_eq!(
            rules.clusters["cray-reds-bitnami-etcd"],
            [Service::Reds, Service::Meds]
        );
    }

    #[test]
    fn recover_clusters_name_clusters_and_destructive_modes() {
        let invalid = |toml: &str| {
            let config: WebhooksConfig = toml::from_str(toml).unwrap();
            match config.validate() {
                Err(ConfigError::Invalid { key, .. }) => key,
                other => panic!("{toml}: {other:?}"),
            }
        };
        let ok: WebhooksConfig =
            toml::from_str(r#"recover_clusters = { "cray-bss-bitnami-etcd" = "auto" }"#).unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.recover_clusters["cray-bss-bitnami-etcd"], EtcdMode::Auto);
        assert_eq!(
            invalid(r#"recover_clusters = { "cray-bss-etcd" = "check" }"#),
            "webhooks.recover_clusters.cray-bss-etcd"
        );
        assert_eq!(
            invalid(r#"recover_clusters = { "bss" = "rebuild" }"#),
            "webhooks.recover_clusters.bss"
        );
        assert!(
            toml::from_str::<WebhooksConfig>(r#"recover_clusters = { "cray-bss-etcd" = "wipe" }"#)
                .is_err()
        );
    }
}
