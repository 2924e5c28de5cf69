//! `GET /services`: the CSM release in force (and why), what a run can repopulate on it, and
//! the steps a run takes for each.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{problem::ApiError, state::SharedState};
use crate::{handlers, model::Service, release::ReleaseInForce, runner::RunnerError};

#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    /// The release whose runbook the runs follow, and the evidence it was detected from.
    pub csm_release: ReleaseInForce,
    pub items: Vec<ServiceInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceInfo {
    pub service: Service,
    pub description: String,
    /// Whether a run can repopulate it (always, for the services of the release listed here).
    pub supported: bool,
    pub steps: Vec<StepInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct StepInfo {
    pub name: String,
    pub description: String,
}

/// The services the runbook of the CSM release in force lists, with the steps a run takes for
/// each (from the current configuration).
#[utoipa::path(get, path = "/services", tag = "services", operation_id = "list_services",
    responses(
        (status = 200, description = "The release in force and its services", body = ServiceList),
        (status = 409, description = "`csm_release = \"auto\"` and the cluster matches no release, or several", body = super::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_services(
    State(state): State<SharedState>,
) -> Result<Json<ServiceList>, ApiError> {
    let config = state.runner.config();
    let release = state.runner.release().await.map_err(RunnerError::from)?;
    let profile = release.profile();
    let items = profile
        .services
        .iter()
        .filter_map(|&service| {
            let steps = handlers::plan(
                service,
                config,
                profile,
                crate::model::EtcdMode::Check,
                None,
                false,
                &[],
            )?;
            Some(ServiceInfo {
                service,
                description: handlers::description(service, profile),
                supported: true,
                steps: steps
                    .iter()
                    .map(|step| StepInfo {
                        name: step.name.clone(),
                        description: step.describe(),
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(Json(ServiceList {
        csm_release: release,
        items,
    }))
}
