//! `GET /services`: what a run can repopulate, and the steps it takes for each.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::SharedState;
use crate::{handlers, model::Service};

#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    pub items: Vec<ServiceInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceInfo {
    pub service: Service,
    pub description: String,
    /// Whether this build can repopulate it (a POST naming an unsupported service gets 422).
    pub supported: bool,
    pub steps: Vec<StepInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct StepInfo {
    pub name: String,
    pub description: String,
}

/// The services a run can repopulate, with the steps a run takes for each (from the current
/// configuration).
#[utoipa::path(get, path = "/services", tag = "services", operation_id = "list_services",
    responses((status = 200, description = "Supported services", body = ServiceList)))]
pub async fn list_services(State(state): State<SharedState>) -> Json<ServiceList> {
    let config = state.runner.config();
    let items = Service::ALL
        .into_iter()
        .map(|service| {
            let steps = handlers::plan(service, config);
            ServiceInfo {
                service,
                description: handlers::description(service).to_owned(),
                supported: steps.is_some(),
                steps: steps
                    .unwrap_or_default()
                    .iter()
                    .map(|step| StepInfo {
                        name: step.name.clone(),
                        description: step.describe(),
                    })
                    .collect(),
            }
        })
        .collect();
    Json(ServiceList { items })
}
