//! CPS contents and cm-pm deployment (`cps.yaml`).

use serde::{Deserialize, Serialize};

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
