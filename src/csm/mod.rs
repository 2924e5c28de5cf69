//! Typed clients for the CSM REST APIs (BOS, BSS, CPS, CRUS, FAS, HMNFD, HSM).
//!
//! Each service has one small module with its request/response types (field names exactly as in
//! the services' public OpenAPI documents, the ones the `cray` CLI is generated from) and the
//! few operations the handlers need. The HTTP
//! mechanics (URLs, headers, bearer token, retries, error mapping) live once, in [`http`].

mod bos;
mod bss;
mod cps;
mod crus;
mod error;
mod fas;
mod hmnfd;
mod hsm;
mod http;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use bos::BosClient;
pub use bss::BssClient;
pub use cps::CpsClient;
pub use crus::CrusClient;
/// The wire types, shared with the simulated CSM services (crates/csm-wire).
pub use csm_wire::{
    BootParams, ContainerStatus, ContentAttribute, ContentReplicas, CrusSession, CsmService,
    ExportStatus, FasActionSummary, FasImage, FasSnapshotSummary, HsmComponent, LoaderRunId,
    LoaderStatus, OperationCounts, RelatedSnapshotAction, ReplicaStatus,
    SESSION_TEMPLATE_READ_ONLY_FIELDS, Subscription, WorkerNodeData,
};
pub use error::CsmError;
pub use fas::FasClient;
pub use hmnfd::{HmnfdClient, subscriber_nodes};
pub use hsm::{ComponentFilter, HsmClient};

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

/// One client per CSM service, all sharing one connection pool.
#[derive(Clone, Debug)]
pub struct CsmClients {
    pub bos: BosClient,
    pub bss: BssClient,
    pub cps: CpsClient,
    pub crus: CrusClient,
    pub fas: FasClient,
    pub hmnfd: HmnfdClient,
    pub hsm: HsmClient,
}

impl CsmClients {
    /// Validates the URLs and the token file (fail at start, not at the first run).
    pub fn new(cfg: &CsmConfig) -> Result<Self, CsmError> {
        let shared = http::Shared::new(cfg)?;
        let endpoint = |service, url: &str| http::Endpoint::new(service, url, shared.clone());
        Ok(Self {
            bos: BosClient::new(endpoint(CsmService::Bos, &cfg.bos_url)?),
            bss: BssClient::new(endpoint(CsmService::Bss, &cfg.bss_url)?),
            cps: CpsClient::new(endpoint(CsmService::Cps, &cfg.cps_url)?),
            crus: CrusClient::new(endpoint(CsmService::Crus, &cfg.crus_url)?),
            fas: FasClient::new(endpoint(CsmService::Fas, &cfg.fas_url)?),
            hmnfd: HmnfdClient::new(endpoint(CsmService::Hmnfd, &cfg.hmnfd_url)?),
            hsm: HsmClient::new(endpoint(CsmService::Hsm, &cfg.hsm_url)?),
        })
    }
}
