//! Section `[csm]` of the service configuration: where the CSM services are, and how their
//! clients retry.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `[csm]` of the service configuration. The defaults are the services' in-cluster URLs
/// on a CSM system (`http://cray-bos`, `http://cray-smd/hsm/v2`, ...), so a deployment inside
/// CSM needs no configuration at all.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CsmConfig {
    /// BOS; operations use `/v2/...` below it.
    pub bos_url: String,
    /// BSS; operations use `/boot/v1/...` below it.
    pub bss_url: String,
    /// CPS. `cps.yaml` only names the gateway prefix `/apis/v2/cps`; like every other CSM
    /// service behind the gateway, we assume the prefix is stripped, so in-cluster paths are
    /// `/contents`, `/deployment`, ... directly below the service.
    pub cps_url: String,
    /// CRUS; `crus.json` lists `/` as its "Cluster Internal API access" server.
    pub crus_url: String,
    /// FAS. `fas.yaml`'s servers are the gateway `/apis/fas/v1` and the pod itself; the chart's
    /// probes hit `/service/status` on the pod, so in-cluster paths have no prefix.
    pub fas_url: String,
    /// HMNFD, including its `/hmi/v2` prefix (from `hmnfd.yaml`'s in-mesh server).
    pub hmnfd_url: String,
    /// HSM (cray-smd), including the `/hsm/v2` prefix.
    pub hsm_url: String,
    /// File holding a Keycloak bearer token, needed only when going through the API gateway.
    /// Re-read for every request so a rotated Secret is picked up; its content is never logged.
    pub token_file: Option<PathBuf>,
    /// Per-request timeout (connect + response), e.g. "30s".
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of idempotent requests on transient failures.
    pub retry: RetryConfig,
}

impl Default for CsmConfig {
    fn default() -> Self {
        Self {
            bos_url: "http://cray-bos".into(),
            bss_url: "http://cray-bss".into(),
            cps_url: "http://cray-cps".into(),
            crus_url: "http://cray-crus".into(),
            fas_url: "http://cray-fas".into(),
            hmnfd_url: "http://cray-hmnfd/hmi/v2".into(),
            hsm_url: "http://cray-smd/hsm/v2".into(),
            token_file: None,
            timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
        }
    }
}

/// Exponential backoff for idempotent requests (GET, PUT) that failed with a connect error, a
/// timeout, or 429/502/503/504: the answers a CSM service gives while its pod restarts or its
/// Istio sidecar has no healthy upstream, which is exactly the situation after an etcd rebuild.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Total attempts including the first one (1 disables retries).
    pub max_attempts: usize,
    /// Delay before the first retry; doubles for each further one.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Upper bound of a single delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Upper bound of all delays of one request together.
    #[serde(with = "humantime_serde")]
    pub max_total_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_total_delay: Duration::from_secs(20),
        }
    }
}
