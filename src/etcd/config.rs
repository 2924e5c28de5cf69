//! Section `[etcd]` of the service configuration: how the service reaches the etcd clusters.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

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
