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

use serde::{Deserialize, Serialize};

use super::CsmError;
use super::http::Endpoint;

/// `ContentAttribute` from `cps.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ContentAttribute {
    #[serde(rename = "artifactID")]
    pub artifact_id: String,
    pub s3path: String,
    #[serde(rename = "exportStatus")]
    pub export_status: Vec<ExportStatus>,
    pub transports: Vec<String>,
    #[serde(rename = "contentReplicas", skip_serializing_if = "Option::is_none")]
    pub content_replicas: Option<ContentReplicas>,
    #[serde(rename = "exportPath", skip_serializing_if = "Option::is_none")]
    pub export_path: Option<String>,
    #[serde(rename = "ERROR", skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ContentAttribute {
    /// True when some transport exports this content ready for clients to mount.
    pub fn is_exported(&self) -> bool {
        self.export_status.iter().any(|e| e.status == "ready")
    }
}

/// `ExportStatus`: `status` is one of ready, notready, error.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ExportStatus {
    #[serde(rename = "type")]
    pub transport: String,
    pub status: String,
}

/// `ContentReplicasData`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ContentReplicas {
    pub ready: i64,
    pub total: i64,
    pub status: Vec<ReplicaStatus>,
}

/// `ReplicaStatus`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReplicaStatus {
    #[serde(rename = "replicaID")]
    pub replica_id: String,
    pub status: String,
    pub detail: String,
}

/// `WokerNodeData` (sic, in `cps.yaml`): the cm-pm pod on one worker node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkerNodeData {
    pub node: String,
    pub podname: String,
    pub cpspods: Vec<ContainerStatus>,
}

impl WorkerNodeData {
    /// A cm-pm pod serves content only when all its containers are ready.
    pub fn is_serving(&self) -> bool {
        !self.cpspods.is_empty() && self.cpspods.iter().all(|c| c.readiness)
    }
}

/// `ContainerStatus`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ContainerStatus {
    pub name: String,
    pub readiness: bool,
    pub restartcount: i64,
    pub state: String,
}

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
