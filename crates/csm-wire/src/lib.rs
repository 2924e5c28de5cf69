//! The CSM REST APIs' wire types (request and response bodies, field names exactly as in the
//! services' OpenAPI documents) shared by the service's CSM clients (`etcd-repopulator`'s
//! `csm` module, which re-exports them) and the simulated CSM services (`etcd-repopulator-sim`).
//! Only types and the few methods on them live here: no HTTP, no configuration.

mod bos;
mod bss;
mod cps;
mod crus;
mod fas;
mod hmnfd;
mod hsm;
mod service;

pub use bos::SESSION_TEMPLATE_READ_ONLY_FIELDS;
pub use bss::BootParams;
pub use cps::{
    ContainerStatus, ContentAttribute, ContentReplicas, ExportStatus, ReplicaStatus, WorkerNodeData,
};
pub use crus::CrusSession;
pub use fas::{
    FasActionSummary, FasImage, FasSnapshotSummary, LoaderRunId, LoaderStatus, OperationCounts,
    RelatedSnapshotAction,
};
pub use hmnfd::Subscription;
pub use hsm::HsmComponent;
pub use service::CsmService;
