//! Liveness and readiness, and the answer to a handler's panic.

use std::any::Any;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    problem::{INTERNAL_DETAIL, Problem, problem_response},
    state::SharedState,
};

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is not ready.
    pub status: String,
    pub checks: Vec<Check>,
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        checks: Vec::new(),
    })
}

/// The database is reachable and a cluster client is configured.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready; `checks` says why", body = Health),
    ))]
pub async fn readyz(State(state): State<SharedState>) -> Response {
    let database = state.store.ping().await;
    let checks = vec![
        Check {
            name: "database".to_owned(),
            ok: database.is_ok(),
            detail: database.err().map(|e| e.to_string()),
        },
        Check {
            name: "cluster".to_owned(),
            ok: state.cluster_configured,
            detail: (!state.cluster_configured).then(|| "no Kubernetes client".to_owned()),
        },
    ];
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let health = Health {
        status: if ready { "ok" } else { "not ready" }.to_owned(),
        checks,
    };
    (status, Json(health)).into_response()
}

/// A handler panicked: answer 500 as a problem (the panic itself is logged), keep serving.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    tracing::error!(panic = %what, "request handler panicked");
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    problem_response(
        status,
        &Problem::new(
            status,
            "internal",
            "Internal error",
            INTERNAL_DETAIL.to_owned(),
        ),
    )
}
