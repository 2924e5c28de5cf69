//! The service's etcd client and what it knows of etcd clusters: where they are
//! ([`layout`]), how they are doing, their backups ([`backups`]) and how they are restored.
//!
//! The client ([`EtcdClient`]) talks to etcd through its own JSON gateway, which every etcd
//! 3.4+ serves on the client port: [`client`] has the connection and the key-value reads,
//! [`members`] the membership calls, [`maintenance`] one member's status, alarms and snapshot.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub mod backup_check;
pub mod backup_drill;
pub mod backups;
mod client;
pub mod layout;
mod maintenance;
mod members;
pub mod quota;
mod recovery_config;
pub mod restore_tool;
pub mod snapshot_db;

pub use client::{EtcdClient, EtcdStatus, KeyEntry, KeyPage};
pub use maintenance::{EtcdAlarm, MemberStatus};
pub use members::EtcdMember;
pub use recovery_config::{InvalidSetting, RecoveryConfig};

/// Where the etcd clusters are and whether to check them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Check each service's etcd cluster before repopulating it (and count its keys after).
    pub enabled: bool,
    /// Client URL of every cluster, overriding discovery: `{cluster}` is the cluster's name
    /// (`cray-bss-etcd`, `cray-bss-bitnami-etcd`) and `{namespace}` the services' namespace.
    /// Empty (the default): the client Service of the cluster's layout (`<cluster>-client` for
    /// etcd-operator, `<cluster>` for Bitnami), found in the cluster (see `etcd::layout`).
    pub endpoint: String,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM CA bundle that signed the clusters' server certificates (`https://` endpoints);
    /// without it, public CA roots are used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for clusters that require client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            enabled: true,
            endpoint: String::new(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl EtcdConfig {
    /// The client URL of `cluster` from the `endpoint` template; `None` when endpoints are
    /// discovered.
    pub fn endpoint_of(&self, cluster: &str, namespace: &str) -> Option<String> {
        (!self.endpoint.trim().is_empty()).then(|| {
            self.endpoint
                .replace("{cluster}", cluster)
                .replace("{namespace}", namespace)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd TLS setup: {0} (see [etcd] ca_file, cert_file, key_file)")]
    Tls(String),
    #[error("etcd at {url} is unreachable: {}", crate::errors::error_chain(.source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("etcd at {url} is not healthy: {reason}")]
    Unhealthy { url: String, reason: String },
    #[error("etcd at {url} answered {what} that cannot be read: {detail}")]
    Invalid {
        url: String,
        what: &'static str,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_template_names_the_cluster_and_namespace() {
        assert_eq!(
            EtcdConfig::default().endpoint_of("cray-bss-etcd", "services"),
            None
        );
        let config = EtcdConfig {
            endpoint: "http://{cluster}-client.{namespace}.svc:2379".to_owned(),
            ..EtcdConfig::default()
        };
        assert_eq!(
            config.endpoint_of("cray-bss-etcd", "services").as_deref(),
            Some("http://cray-bss-etcd-client.services.svc:2379")
        );
    }
}
