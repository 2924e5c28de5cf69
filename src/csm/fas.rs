//! FAS images, actions and snapshots (`fas.yaml`: `GET /images`, `/actions`, `/snapshots`).
//!
//! All three live in FAS's etcd: after a rebuild images come back by re-running the
//! `cray-fas-loader` Job, while actions and snapshots are lost for good, so the handler records
//! what it can still see.

use serde::Deserialize;

use super::http::Endpoint;
use csm_wire::{FasActionSummary, FasImage, FasSnapshotSummary, LoaderRunId, LoaderStatus};

use super::error::CsmError;

/// The wrappers FAS puts around its lists (`ImageList`, `ActionSummarys`, `SnapshotAll`).
/// Go encodes an empty list as `null`, hence `Option`.
#[derive(Deserialize)]
struct ImageList {
    images: Option<Vec<FasImage>>,
}
#[derive(Deserialize)]
struct ActionList {
    actions: Option<Vec<FasActionSummary>>,
}
#[derive(Deserialize)]
struct SnapshotList {
    snapshots: Option<Vec<FasSnapshotSummary>>,
}

#[derive(Clone, Debug)]
pub struct FasClient {
    endpoint: Endpoint,
}

impl FasClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /images`: the image list the `cray-fas-loader` Job creates.
    pub async fn list_images(&self) -> Result<Vec<FasImage>, CsmError> {
        let list: ImageList = self.endpoint.get_json(&["images"], &[]).await?;
        Ok(list.images.unwrap_or_default())
    }

    /// `GET /actions`: summaries of all firmware actions.
    pub async fn list_actions(&self) -> Result<Vec<FasActionSummary>, CsmError> {
        let list: ActionList = self.endpoint.get_json(&["actions"], &[]).await?;
        Ok(list.actions.unwrap_or_default())
    }

    /// `GET /loader`: whether the loader is busy, and its runs.
    pub async fn loader_status(&self) -> Result<LoaderStatus, CsmError> {
        self.endpoint.get_json(&["loader"], &[]).await
    }

    /// `POST /loader/nexus`: load the firmware library from Nexus (CSM 1.2+'s "Load Firmware
    /// from Nexus"); a busy loader (429) is waited for by the retries.
    pub async fn load_from_nexus(&self) -> Result<LoaderRunId, CsmError> {
        self.endpoint.post_json(&["loader", "nexus"]).await
    }

    /// `GET /snapshots`: summaries of all stored snapshots.
    pub async fn list_snapshots(&self) -> Result<Vec<FasSnapshotSummary>, CsmError> {
        let list: SnapshotList = self.endpoint.get_json(&["snapshots"], &[]).await?;
        Ok(list.snapshots.unwrap_or_default())
    }
}
