//! CPS contents and cm-pm deployment (`cps.yaml`: `GET /contents`, `GET /deployment`).
//!
//! The runbook asks "are clients using CPS content, and which nodes?". `cps.yaml` has no
//! resource listing clients or mounts: CPS serves content over DVS and never learns who mounts
//! it. What the API does show is (a) which artifacts are exported and ready to mount
//! (`exportStatus` of a content) and (b) which worker nodes run a cm-pm pod serving them
//! (`/deployment`). We therefore assume: content is in use when at least one artifact has an
//! export in status `ready`, and the nodes with content mounted *as far as CPS can tell* are the
//! worker nodes whose cm-pm pods project it. The compute nodes that booted from that content
//! must be found elsewhere (BOS boot sets with `rootfs_provider: cpss3`, HSM).

use std::collections::BTreeSet;

use super::http::Endpoint;
use csm_wire::{ContentAttribute, WorkerNodeData};

use super::error::CsmError;

#[derive(Clone, Debug)]
pub struct CpsClient {
    endpoint: Endpoint,
}

impl CpsClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /contents`: every artifact in CPS-managed storage.
    pub async fn list_contents(&self) -> Result<Vec<ContentAttribute>, CsmError> {
        self.endpoint.get_json(&["contents"], &[]).await
    }

    /// `GET /deployment`: the cm-pm pods on all worker nodes.
    pub async fn list_deployments(&self) -> Result<Vec<WorkerNodeData>, CsmError> {
        self.endpoint.get_json(&["deployment"], &[]).await
    }

    /// The worker nodes projecting exported content (see the module documentation for why this
    /// is the closest the CPS API comes to "nodes with content mounted"). Empty when no content
    /// is exported, i.e. when no client can be using CPS.
    pub async fn nodes_with_mounted_content(&self) -> Result<BTreeSet<String>, CsmError> {
        let contents = self.list_contents().await?;
        if !contents.iter().any(ContentAttribute::is_exported) {
            return Ok(BTreeSet::new());
        }
        let deployments = self.list_deployments().await?;
        Ok(deployments
            .into_iter()
            .filter(WorkerNodeData::is_serving)
            .map(|d| d.node)
            .collect())
    }
}
