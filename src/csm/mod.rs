//! Typed clients for the CSM REST APIs (BOS, BSS, CPS, CRUS, FAS, HMNFD, HSM).
//!
//! Each service has one small module with its request/response types (field names exactly as in
//! the services' public OpenAPI documents, the ones the `cray` CLI is generated from) and the
//! few operations the handlers need. The HTTP
//! mechanics (URLs, headers, bearer token, retries, error mapping) live once, in [`http`].

mod bos;
mod bss;
mod config;
mod cps;
mod crus;
mod error;
mod fas;
mod hmnfd;
mod hsm;
mod http;

pub use bos::BosClient;
pub use bss::BssClient;
pub use config::{CsmConfig, RetryConfig};
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
