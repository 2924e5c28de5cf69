//! The simulated cluster's controls of its etcd clusters, under `/sim/etcd/{cluster}` (the
//! README lists them next to `/sim/faults`): wipe a fake service's data, and, when the cluster
//! runs for real, list its members and break one the ways the field does
//! (`controllers::etcd_member::faults`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::controllers::Ctx;
use super::controllers::etcd_member::RealEtcd;
use super::controllers::etcd_member::faults::{Damage, FaultError};
use super::seed::NAMESPACE;
use crate::csm::FakeCsm;

#[derive(Clone)]
struct Routes {
    csm: FakeCsm,
    etcd: Option<Arc<RealEtcd>>,
    ctx: Ctx,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

impl IntoResponse for FaultError {
    fn into_response(self) -> Response {
        let status = match self {
            FaultError::NotFound(_) => StatusCode::NOT_FOUND,
            FaultError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FaultError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self)
    }
}

impl Routes {
    fn etcd(&self) -> Result<&Arc<RealEtcd>, FaultError> {
        self.etcd.as_ref().ok_or_else(|| {
            FaultError::Invalid(
                "the simulated cluster runs no real etcd (SimOptions::real_etcd)".into(),
            )
        })
    }
}

/// `POST /sim/etcd/{cluster}/wipe`: the fake service that keeps its data in `cluster` loses it.
async fn wipe(State(r): State<Routes>, Path(cluster): Path<String>) -> Response {
    if r.csm.wipe_async(&cluster).await {
        (StatusCode::OK, Json(json!({ "wiped": cluster }))).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no simulated service keeps its data in {cluster}"),
        )
    }
}

/// `GET /sim/etcd/{cluster}/members`.
async fn members(
    State(r): State<Routes>,
    Path(cluster): Path<String>,
) -> Result<Response, FaultError> {
    let members: Vec<_> = r
        .etcd()?
        .members(&r.ctx, NAMESPACE, &cluster)
        .into_iter()
        .map(|m| {
            json!({
                "pod": m.pod, "ip": m.ip, "client_url": m.client_url, "healthy": m.healthy,
                "restarts": m.restarts, "stopped": m.stopped,
                "volume": m.volume, "log": m.log,
            })
        })
        .collect();
    if members.is_empty() {
        return Err(FaultError::NotFound(format!(
            "no member of {cluster} runs for real"
        )));
    }
    Ok(Json(members).into_response())
}

/// `POST /sim/etcd/{cluster}/members/{pod}/stop`.
async fn stop(
    State(r): State<Routes>,
    Path((_, pod)): Path<(String, String)>,
) -> Result<StatusCode, FaultError> {
    r.etcd()?.stop_member(&r.ctx, NAMESPACE, &pod).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sim/etcd/{cluster}/members/{pod}/start`.
async fn start(
    State(r): State<Routes>,
    Path((_, pod)): Path<(String, String)>,
) -> Result<StatusCode, FaultError> {
    r.etcd()?.start_member(&r.ctx, NAMESPACE, &pod)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DamageRequest {
    damage: Damage,
}

/// `POST /sim/etcd/{cluster}/members/{pod}/damage` with `{"damage": "corrupt-db"}`.
async fn damage(
    State(r): State<Routes>,
    Path((_, pod)): Path<(String, String)>,
    Json(body): Json<DamageRequest>,
) -> Result<StatusCode, FaultError> {
    r.etcd()?
        .damage_member(&r.ctx, NAMESPACE, &pod, body.damage)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sim/etcd/{cluster}/fill`.
async fn fill(
    State(r): State<Routes>,
    Path(cluster): Path<String>,
) -> Result<Response, FaultError> {
    let filled = r.etcd()?.fill_quota(&r.ctx, NAMESPACE, &cluster).await?;
    Ok(Json(filled).into_response())
}

/// The routes, for the simulated cluster's listener.
pub fn router(csm: FakeCsm, etcd: Option<Arc<RealEtcd>>, ctx: Ctx) -> axum::Router {
    axum::Router::new()
        .route("/sim/etcd/{cluster}/wipe", post(wipe))
        .route("/sim/etcd/{cluster}/members", get(members))
        .route("/sim/etcd/{cluster}/members/{pod}/stop", post(stop))
        .route("/sim/etcd/{cluster}/members/{pod}/start", post(start))
        .route("/sim/etcd/{cluster}/members/{pod}/damage", post(damage))
        .route("/sim/etcd/{cluster}/fill", post(fill))
        .with_state(Routes { csm, etcd, ctx })
}
