//! `/snapshots`: take a snapshot of BOS session templates and HMNFD subscriptions now, and list
//! the stored ones.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    problem::{ApiError, PROBLEM, Problem, QueryParams, page_limit, parse_param, problem_response},
    state::SharedState,
};
use crate::snapshots::{CaptureReport, Snapshot, SnapshotSource, Snapshotter, bos_export};

/// An archive of `export_bos_data.sh` (a `tgz`), or a JSON file of BOS session templates.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BosExportArchive(#[allow(dead_code)] Vec<u8>);

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

/// Capture BOS session templates and HMNFD subscriptions now; or, with a body, import BOS
/// session templates exported by CSM's `export_bos_data.sh` as a snapshot (taken at the
/// export's time), for the BOS step to restore templates from.
#[utoipa::path(post, path = "/snapshots", tag = "snapshots", operation_id = "create_snapshots",
    request_body(content = Option<BosExportArchive>, content_type = "application/octet-stream", description = "Optional: an export of `export_bos_data.sh` (`bos-export-<time>-<id>.tgz`, or the JSON file older versions wrote) to import instead of capturing. Read by its bytes (gzip magic, else JSON), whatever its Content-Type (`application/gzip` as curl sends it is fine)"),
    responses(
        (status = 201, description = "What was stored (with content, secrets removed), and which sources could not be read", body = CaptureReport),
        (status = 413, description = "The export is larger than 16 MiB", body = Problem, content_type = PROBLEM),
        (status = 422, description = "The body is not an export of BOS session templates", body = Problem, content_type = PROBLEM),
        (status = 502, description = "No source could be read", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_snapshots(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let runner = &state.runner;
    // No body, or `{}` (what clients send for "no options"): a capture.
    let capture = body.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
            .is_ok_and(|options| options.is_empty());
    if !capture {
        let export = bos_export::read(&body).map_err(|e| ApiError::InvalidBody {
            detail: format!("not an export of BOS session templates (export_bos_data.sh): {e}"),
            field: None,
        })?;
        let snapshotter = Snapshotter::new(
            runner.csm().clone(),
            state.store.clone(),
            runner.config().snapshots.retain,
        );
        let stored = snapshotter.import_bos_export(export, Utc::now()).await?;
        let report = CaptureReport {
            stored: vec![stored],
            failed: Vec::new(),
        };
        return Ok((StatusCode::CREATED, Json(report)).into_response());
    }
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
