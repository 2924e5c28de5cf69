//! `/snapshots`: take a snapshot of BOS session templates and HMNFD subscriptions now, and list
//! the stored ones.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    SharedState,
    problem::{ApiError, PROBLEM, Problem, QueryParams, page_limit, parse_param, problem_response},
};
use crate::snapshots::{CaptureReport, Snapshot, SnapshotSource, Snapshotter};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    /// Newest first.
    pub items: Vec<Snapshot>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// Only snapshots of this source.
    #[param(value_type = Option<SnapshotSource>)]
    pub source: Option<String>,
    /// Include each snapshot's content (default false: metadata only).
    #[param(value_type = Option<bool>)]
    pub content: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// Capture BOS session templates and HMNFD subscriptions now.
#[utoipa::path(post, path = "/snapshots", tag = "snapshots", operation_id = "create_snapshots",
    responses(
        (status = 201, description = "What was stored (with content, secrets removed), and which sources could not be read", body = CaptureReport),
        (status = 502, description = "No source could be read", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_snapshots(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let runner = &state.runner;
    let snapshotter = Snapshotter::new(
        runner.csm().clone(),
        state.store.clone(),
        runner.config().snapshots.retain,
    );
    let report = snapshotter.capture(Utc::now()).await?;
    if report.stored.is_empty() {
        let detail = report
            .failed
            .iter()
            .map(|f| f.error.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let status = StatusCode::BAD_GATEWAY;
        let problem = Problem::new(
            status,
            "csm-unavailable",
            "CSM service unavailable",
            format!("no snapshot could be taken: {detail}"),
        );
        return Ok(problem_response(status, &problem));
    }
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

/// The stored snapshots, newest first.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots", operation_id = "list_snapshots",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "Snapshots, newest first", body = SnapshotList),
        (status = 400, description = "Invalid source, content or limit", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_snapshots(
    State(state): State<SharedState>,
    QueryParams(query): QueryParams<SnapshotQuery>,
) -> Result<Json<SnapshotList>, ApiError> {
    let source = parse_param::<SnapshotSource>("source", query.source.as_deref())?;
    let with_content = match query.content.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(raw) => {
            return Err(ApiError::invalid(
                "content",
                format!("content must be true or false, got {raw:?}"),
            ));
        }
    };
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let items = state
        .store
        .list_snapshots(source, with_content, limit)
        .await?;
    Ok(Json(SnapshotList { items }))
}
