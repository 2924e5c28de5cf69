//! Fake FAS: `GET /images`, `GET /actions`, `GET /snapshots`, and the loader (`fas.yaml`):
//! `POST /loader/nexus` starts a load from Nexus (`loaderRunID`; 429 while one runs), `GET
//! /loader` says `busy` until it has run for [`LOAD_DURATION`], then `ready` with the run in
//! `loaderRunList`, and the images are back.
//!
//! Seeded with the image list the `cray-fas-loader` Job would create (BMC and BIOS images for
//! Cray, Gigabyte and HPE nodes), one running action and one snapshot.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::time::{Duration, Instant};

use super::hub::FakeCsm;
use csm_wire::{
    FasActionSummary, FasImage, FasSnapshotSummary, LoaderRunId, LoaderStatus, OperationCounts,
    RelatedSnapshotAction,
};

#[derive(Default)]
pub(super) struct FasState {
    pub(super) images: Vec<FasImage>,
    pub(super) actions: Vec<FasActionSummary>,
    pub(super) snapshots: Vec<FasSnapshotSummary>,
    /// Loader runs, oldest first, and when the running one finishes.
    pub(super) loader_runs: Vec<String>,
    pub(super) loading_until: Option<Instant>,
}

/// How long a load from Nexus takes in the simulation.
pub const LOAD_DURATION: Duration = Duration::from_millis(300);

impl FasState {
    pub(super) fn seeded() -> Self {
        let running = "fcac1eec-e93b-4549-90aa-6a59fda0f4c6";
        Self {
            images: loader_images(),
            actions: vec![FasActionSummary {
                action_id: running.into(),
                override_dryrun: true,
                start_time: Some("2024-05-02T09:12:44.000Z".into()),
                state: "running".into(),
                operation_counts: Some(OperationCounts {
                    total: 8,
                    in_progress: 3,
                    success: 5,
                    ..OperationCounts::default()
                }),
                description: "Update Cray nodeBMC firmware".into(),
                ..FasActionSummary::default()
            }],
            snapshots: vec![FasSnapshotSummary {
                name: "pre_system_upgrade".into(),
                capture_time: Some("2024-05-01T17:03:10.000Z".into()),
                ready: true,
                related_actions: vec![RelatedSnapshotAction {
                    action_id: running.into(),
                    start_time: Some("2024-05-02T09:12:44.000Z".into()),
                    end_time: None,
                    state: "running".into(),
                }],
                unique_device_count: 12,
                ..FasSnapshotSummary::default()
            }],
            ..Self::default()
        }
    }

    /// Actions and snapshots exist only in etcd: an etcd rebuild loses them for good (and a
    /// load in progress with them).
    pub(super) fn wipe(&mut self) {
        *self = Self::default();
    }

    /// Finishes the running load once its time has come: the images are back.
    fn settle_loader(&mut self) {
        if self
            .loading_until
            .is_some_and(|until| Instant::now() >= until)
        {
            self.loading_until = None;
            self.reload_images();
        }
    }

    /// The `cray-fas-loader` Job reloads images only; actions and snapshots stay lost.
    pub(super) fn reload_images(&mut self) {
        self.images = loader_images();
    }
}

/// What the loader creates from the firmware RPMs in Nexus. Image IDs are fixed so tests can
/// compare lists before and after a reload (the real loader assigns fresh UUIDs).
fn loader_images() -> Vec<FasImage> {
    let image = |id: &str,
                 device_type: &str,
                 manufacturer: &str,
                 models: &[&str],
                 target: &str,
                 version: &str,
                 semver: &str| FasImage {
        image_id: id.into(),
        create_time: Some("2024-04-30T08:00:00Z".into()),
        device_type: device_type.into(),
        manufacturer: manufacturer.into(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        target: target.into(),
        tags: vec!["default".into()],
        firmware_version: version.into(),
        semantic_firmware_version: semver.into(),
        need_manual_reboot: false,
        polling_speed_seconds: Some(30),
        s3_url: format!("s3://fw-update/{id}/{manufacturer}-{target}-{semver}.itb"),
        allowable_device_states: vec!["On".into(), "Off".into()],
        ..FasImage::default()
    };
    vec![
        image(
            "1d2e3f4a-0001-4b5c-8d9e-0f1a2b3c4d5e",
            "nodeBMC",
            "cray",
            &["WindomNodeCard", "WNC"],
            "BMC",
            "nc.1.6.13-shasta-release.arm.2024-03-01T15:22:08+00:00.f6d5c3b",
            "1.6.13",
        ),
        image(
            "1d2e3f4a-0002-4b5c-8d9e-0f1a2b3c4d5e",
            "nodeBMC",
            "cray",
            &["WindomNodeCard", "WNC"],
            "Node0.BIOS",
            "wnc.bios-1.7.2",
            "1.7.2",
        ),
        image(
            "1d2e3f4a-0003-4b5c-8d9e-0f1a2b3c4d5e",
            "nodeBMC",
            "gigabyte",
            &["R272-Z30-00"],
            "BMC",
            "12.84.09",
            "12.84.9",
        ),
        image(
            "1d2e3f4a-0004-4b5c-8d9e-0f1a2b3c4d5e",
            "nodeBMC",
            "gigabyte",
            &["R272-Z30-00"],
            "BIOS",
            "C27",
            "21.2.1",
        ),
        image(
            "1d2e3f4a-0005-4b5c-8d9e-0f1a2b3c4d5e",
            "nodeBMC",
            "hpe",
            &["ProLiant DL325 Gen10 Plus"],
            "iLO 5",
            "2.78 Dec 16 2022",
            "2.78.0",
        ),
    ]
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new()
        .route("/images", get(list_images))
        .route("/actions", get(list_actions))
        .route("/snapshots", get(list_snapshots))
        .route("/loader", get(loader_status))
        .route("/loader/nexus", post(load_from_nexus))
}

async fn loader_status(State(fake): State<FakeCsm>) -> Response {
    let status = fake.part(|s: &mut FasState| {
        s.settle_loader();
        LoaderStatus {
            loader_status: if s.loading_until.is_some() {
                "busy"
            } else {
                "ready"
            }
            .into(),
            loader_run_list: Some(s.loader_runs.clone()),
        }
    });
    axum::Json(status).into_response()
}

async fn load_from_nexus(State(fake): State<FakeCsm>) -> Response {
    let started = fake.part(|s: &mut FasState| {
        s.settle_loader();
        if s.loading_until.is_some() {
            return None;
        }
        let id = uuid::Uuid::now_v7().to_string();
        s.loader_runs.push(id.clone());
        s.loading_until = Some(Instant::now() + LOAD_DURATION);
        Some(id)
    });
    match started {
        Some(id) => axum::Json(LoaderRunId { loader_run_id: id }).into_response(),
        None => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "application/problem+json")],
            axum::Json(json!({
                "type": "about:blank",
                "title": "Loader busy",
                "detail": "Loader busy, try again later",
                "status": 429,
            })),
        )
            .into_response(),
    }
}

async fn list_images(State(fake): State<FakeCsm>) -> Response {
    axum::Json(json!({ "images": fake.part(|s: &mut FasState| s.images.clone()) })).into_response()
}

async fn list_actions(State(fake): State<FakeCsm>) -> Response {
    axum::Json(json!({ "actions": fake.part(|s: &mut FasState| s.actions.clone()) }))
        .into_response()
}

async fn list_snapshots(State(fake): State<FakeCsm>) -> Response {
    axum::Json(json!({ "snapshots": fake.part(|s: &mut FasState| s.snapshots.clone()) }))
        .into_response()
}
