//! Fake CRUS: `GET /session`, `GET /session/{upgrade_id}` (`crus.json`).
//!
//! Seeded with the runbook's example session (UPDATING, not completed) and a completed one.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{hub::FakeCsm, problem::problem};
use csm_wire::{CrusSession, CsmService};

#[derive(Default)]
pub(super) struct CrusState {
    pub(super) sessions: Vec<CrusSession>,
}

impl CrusState {
    pub(super) fn seeded() -> Self {
        let session =
            |upgrade_id: &str, state: &str, completed: bool, messages: &[&str]| CrusSession {
                upgrade_id: upgrade_id.into(),
                state: state.into(),
                completed,
                messages: messages.iter().map(|m| (*m).to_owned()).collect(),
                kind: "ComputeUpgradeSession".into(),
                api_version: "1.0.0".into(),
                upgrade_template_id: "boot-template".into(),
                starting_label: "slurm-nodes".into(),
                upgrading_label: "upgrading-nodes".into(),
                failed_label: "failed-nodes".into(),
                workload_manager_type: "slurm".into(),
                upgrade_step_size: 50,
            };
        Self {
            sessions: vec![
                session(
                    "3b2a7e5c-8f1d-4c6e-9a0b-1d2e3f4a5b6c",
                    "READY",
                    true,
                    &[
                        "Quiesce requested in step 0: moving to QUIESCING",
                        "All nodes quiesced in step 0: moving to QUIESCED",
                        "Began the boot session for step 0: moving to BOOTING",
                        "Upgrade Session Completed",
                    ],
                ),
                session(
                    "e0131663-dbee-47c2-aa5c-13fe9b110242",
                    "UPDATING",
                    false,
                    &[
                        "Quiesce requested in step 0: moving to QUIESCING",
                        "All nodes quiesced in step 0: moving to QUIESCED",
                        "Began the boot session for step 0: moving to BOOTING",
                    ],
                ),
            ],
        }
    }
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new()
        .route("/session", get(list_sessions))
        .route("/session/{upgrade_id}", get(get_session))
}

async fn list_sessions(State(fake): State<FakeCsm>) -> Response {
    axum::Json(fake.part(|s: &mut CrusState| s.sessions.clone())).into_response()
}

async fn get_session(State(fake): State<FakeCsm>, Path(upgrade_id): Path<String>) -> Response {
    let found = fake.part(|s: &mut CrusState| {
        s.sessions
            .iter()
            .find(|x| x.upgrade_id == upgrade_id)
            .cloned()
    });
    match found {
        Some(session) => axum::Json(session).into_response(),
        None => problem(
            CsmService::Crus,
            StatusCode::NOT_FOUND,
            format!("Upgrade Session {upgrade_id} not found"),
        ),
    }
}
