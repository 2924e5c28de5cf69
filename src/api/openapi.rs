//! The OpenAPI document of the API: every operation, and how callers authenticate.

use axum::{Json, extract::State};
use utoipa::OpenApi;

use super::{
    auth, drills, etcd_clusters, events, health, metrics, runs, services, snapshots,
    state::SharedState, webhooks,
};
use crate::config::AuthMode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "etcd-repopulator",
        description = "Repopulates the data of CSM services (BOS, BSS, CPS, CRUS, External DNS, \
                       FAS, HMNFD, MEDS, REDS) after their etcd clusters are rebuilt.",
        license(name = "MIT")
    ),
    paths(
        runs::create_run,
        runs::list_runs,
        runs::get_run,
        runs::cancel_run,
        runs::resume_run,
        runs::abandon_run,
        services::list_services,
        etcd_clusters::list_etcd_clusters,
        etcd_clusters::get_etcd_cluster,
        etcd_clusters::list_etcd_cluster_backups,
        etcd_clusters::check_etcd_cluster_backup,
        drills::create_drill,
        drills::list_drills,
        drills::get_drill,
        snapshots::create_snapshots,
        snapshots::list_snapshots,
        health::healthz,
        health::readyz,
        events::follow_events,
        webhooks::alertmanager::receive,
        webhooks::generic::receive,
        metrics::metrics,
    ),
    tags(
        (name = "repopulations", description = "Repopulation runs and their history"),
        (name = "services", description = "The services a run can repopulate"),
        (name = "etcd", description = "The services' etcd clusters, in either layout, their health and their backups"),
        (name = "snapshots", description = "Captured BOS session templates and HMNFD subscriptions"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "webhooks", description = "Runs started by Alertmanager and other automation"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document of a service that authenticates its callers (`auth.mode` token or
/// jwt), committed at `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_for(AuthMode::Token)
}

/// The document a service in `mode` serves at `/openapi.json`: with `auth.mode = "none"` no
/// operation asks for a bearer token.
pub fn openapi_for(mode: AuthMode) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    auth::document_security(&mut doc, mode);
    doc
}

/// The OpenAPI document, as it applies to this service's `auth.mode`.
pub async fn openapi_json(State(state): State<SharedState>) -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_for(state.auth.mode()))
}
