//! `GET /metrics`: Prometheus metrics (OpenMetrics text).

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use super::{problem::ApiError, state::SharedState};
use crate::metrics::CONTENT_TYPE;

/// Prometheus metrics of runs, steps and webhook deliveries.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    responses(
        (status = 200, description = "Every metric, prefixed `etcd_repopulator_`", content_type = "application/openmetrics-text", body = String),
    ))]
pub async fn metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let text = state
        .runner
        .metrics()
        .encode()
        .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
