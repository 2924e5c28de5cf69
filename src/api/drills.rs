//! Restore drills of an etcd cluster's backups (see `crate::drills`): start one, list them,
//! read one.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    auth::Principal,
    etcd_clusters::find_cluster,
    problem::{
        ApiError, BodyProblems, PROBLEM, Problem, QueryParams, RawBody, content_type,
        json_from_bytes, page_limit,
    },
    state::SharedState,
};
use crate::drills::{Drill, DrillError, Trigger};

/// Drills listed by default, and at most.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// What to drill (the body is optional: without it, the newest backup).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDrill {
    /// The backup to drill (`db-2025-01-01_00-00`); absent: the cluster's newest backup (not
    /// a safety snapshot of an empty cluster).
    pub backup: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DrillList {
    /// Newest first.
    pub items: Vec<Drill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
}

impl From<DrillError> for ApiError {
    fn from(err: DrillError) -> ApiError {
        match err {
            DrillError::Backups(e) => ApiError::Backups(e),
            DrillError::Store(e) => e.into(),
            other => ApiError::Drill(other),
        }
    }
}

/// Starts a restore drill of one of the cluster's backups: restored with etcd's own tool into
/// a scratch directory of the service, served by a real etcd on loopback, its keys counted by
/// the data the service keeps and compared with the live cluster (which is only read). It runs
/// in the background: 202 with the drill (`running`) and its `Location`; `GET` it until its
/// `state` is no longer `running`.
#[utoipa::path(post, path = "/etcd-clusters/{name}/drills", tag = "etcd", operation_id = "create_etcd_cluster_drill",
    params(("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet")),
    request_body(content = Option<CreateDrill>, content_type = "application/json", description = "Optional: the backup to drill"),
    responses(
        (status = 202, description = "The drill started", body = Drill,
            headers(("Location" = String, description = "URL of the drill"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No etcd cluster, or no backup, of that name", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A drill of the cluster is running (the problem names it)", body = Problem, content_type = PROBLEM),
        BodyProblems,
        (status = 422, description = "Unknown field", body = Problem, content_type = PROBLEM),
        (status = 502, description = "S3 refused the request (its keys) or failed, or the snapshotter directory could not be read", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Neither S3 nor the snapshotter directory is configured, or what is configured is missing; or the service is shutting down", body = Problem, content_type = PROBLEM),
        (status = 504, description = "S3 did not answer within [recovery] timeout", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_drill(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    principal: Principal,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    // No body, or `null`: the newest backup.
    let request: CreateDrill = if body.iter().all(u8::is_ascii_whitespace) {
        CreateDrill::default()
    } else {
        json_from_bytes::<Option<CreateDrill>>(content_type(&headers).as_deref(), &body)?
            .unwrap_or_default()
    };
    let found = find_cluster(state.runner.cluster(), &name).await?;
    let trigger = Trigger::Api {
        requested_by: principal.name,
    };
    let drill = state
        .drills
        .start_drill(&found, request.backup.as_deref(), trigger)
        .await?;
    let location =
        HeaderValue::from_str(&format!("/etcd-clusters/{name}/drills/{}", drill.record.id))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(drill),
    )
        .into_response())
}

/// The cluster's drills, newest first, each with what it found: integrity, restore time, the
/// scratch etcd, and the keys by data compared with the live cluster.
#[utoipa::path(get, path = "/etcd-clusters/{name}/drills", tag = "etcd", operation_id = "list_etcd_cluster_drills",
    params(
        ("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "At most this many (default 20)"),
    ),
    responses(
        (status = 200, description = "The cluster's drills, newest first", body = DrillList),
        (status = 400, description = "A bad `limit`, or an unknown parameter", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No etcd cluster of that name", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_drills(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<DrillList>, ApiError> {
    let limit = page_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    find_cluster(state.runner.cluster(), &name).await?;
    let items = state.drills.list(&name, limit).await?;
    Ok(Json(DrillList { items }))
}

/// One drill of the cluster.
#[utoipa::path(get, path = "/etcd-clusters/{name}/drills/{id}", tag = "etcd", operation_id = "get_etcd_cluster_drill",
    params(
        ("name" = String, Path, description = "Name of the cluster: the EtcdCluster or the StatefulSet"),
        ("id" = String, Path, format = Uuid, description = "The drill's id"),
    ),
    responses(
        (status = 200, description = "The drill", body = Drill),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such drill of that cluster", body = Problem, content_type = PROBLEM),
    ))]
pub async fn get_drill(
    State(state): State<SharedState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Drill>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("{id:?} is not a drill id (a UUID)")))?;
    state
        .drills
        .get(&name, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no drill {id} of the etcd cluster {name:?}")))
}
