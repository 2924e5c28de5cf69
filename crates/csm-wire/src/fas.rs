//! FAS images, actions and snapshots (`fas.yaml`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `ImageGet` from `fas.yaml`; unknown fields are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FasImage {
    #[serde(rename = "imageID")]
    pub image_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub device_type: String,
    pub manufacturer: String,
    pub models: Vec<String>,
    pub target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub software_ids: Vec<String>,
    pub tags: Vec<String>,
    pub firmware_version: String,
    pub semantic_firmware_version: String,
    #[serde(rename = "updateURI", skip_serializing_if = "Option::is_none")]
    pub update_uri: Option<String>,
    pub need_manual_reboot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_time_before_manual_reboot_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_time_after_reboot_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polling_speed_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_reset_type: Option<String>,
    #[serde(rename = "s3URL")]
    pub s3_url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowable_device_states: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `ActionSummary`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FasActionSummary {
    #[serde(rename = "actionID")]
    pub action_id: String,
    #[serde(rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    pub override_dryrun: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// new, configure, blocked, running, completed, abortSignaled, aborted.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_counts: Option<OperationCounts>,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl FasActionSummary {
    /// An action still in flight: it will not survive the etcd rebuild and must be recreated.
    pub fn is_in_flight(&self) -> bool {
        !matches!(self.state.as_str(), "completed" | "aborted")
    }
}

/// `OperationCounts`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OperationCounts {
    pub total: i64,
    pub initial: i64,
    pub configured: i64,
    pub blocked: i64,
    pub needs_verified: i64,
    pub verifying: i64,
    pub in_progress: i64,
    pub failed: i64,
    pub success: i64,
    pub no_solution: i64,
    pub no_operation: i64,
    pub aborted: i64,
    pub unknown: i64,
}

/// `SnapshotSummary`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FasSnapshotSummary {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    pub ready: bool,
    pub related_actions: Vec<RelatedSnapshotAction>,
    pub unique_device_count: i64,
}

/// `RelatedSnapshotActions`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RelatedSnapshotAction {
    #[serde(rename = "actionID")]
    pub action_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub state: String,
}

/// `LoaderStatus`: `busy` while a load runs, `ready` otherwise, and the runs it knows.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoaderStatus {
    pub loader_status: String,
    pub loader_run_list: Option<Vec<String>>,
}

/// `LoaderRunID`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct LoaderRunId {
    #[serde(rename = "loaderRunID")]
    pub loader_run_id: String,
}
