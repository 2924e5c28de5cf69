//! The HTTP API: axum routers, request/response types with their OpenAPI schemas, and the
//! mapping of every error to `application/problem+json`.

pub mod auth;
mod drills;
mod etcd_clusters;
mod events;
mod health;
mod metrics;
pub mod problem;
mod runs;
mod services;
mod snapshots;
pub mod webhooks;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use utoipa::OpenApi;

use crate::{config::AuthMode, runner::Runner, store::Store};

/// Where Alertmanager delivers its notifications (`webhooks::alertmanager`).
pub const ALERTMANAGER_PATH: &str = "/webhooks/alertmanager";
/// Where other automation starts runs with a signed request (`webhooks::generic`).
pub const GENERIC_PATH: &str = "/webhooks/generic";

/// Request bodies above this size are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub runner: Runner,
    /// Whether a Kubernetes client is configured (for `/readyz`).
    pub cluster_configured: bool,
    /// Who may call the API (`[auth]`).
    pub auth: auth::Authenticator,
    /// Keys and rules of the webhooks (`[webhooks]`).
    pub webhooks: webhooks::Webhooks,
    /// Restore drills of the etcd clusters' backups.
    pub drills: crate::drills::Drills,
}

pub type SharedState = Arc<AppState>;

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

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route(
            "/repopulations",
            post(runs::create_run).get(runs::list_runs),
        )
        .route("/repopulations/{id}", get(runs::get_run))
        .route("/repopulations/{id}/cancel", post(runs::cancel_run))
        .route("/repopulations/{id}/resume", post(runs::resume_run))
        .route("/repopulations/{id}/abandon", post(runs::abandon_run))
        .route("/repopulations/{id}/events", get(events::follow_events))
        .route(ALERTMANAGER_PATH, post(webhooks::alertmanager::receive))
        .route(GENERIC_PATH, post(webhooks::generic::receive))
        .route("/metrics", get(metrics::metrics))
        .route("/services", get(services::list_services))
        .route("/etcd-clusters", get(etcd_clusters::list_etcd_clusters))
        .route(
            "/etcd-clusters/{name}",
            get(etcd_clusters::get_etcd_cluster),
        )
        .route(
            "/etcd-clusters/{name}/backups",
            get(etcd_clusters::list_etcd_cluster_backups),
        )
        .route(
            "/etcd-clusters/{name}/backups/{backup}/check",
            post(etcd_clusters::check_etcd_cluster_backup),
        )
        .route(
            "/etcd-clusters/{name}/drills",
            post(drills::create_drill).get(drills::list_drills),
        )
        .route("/etcd-clusters/{name}/drills/{id}", get(drills::get_drill))
        .route(
            "/snapshots",
            post(snapshots::create_snapshots)
                .layer(DefaultBodyLimit::max(
                    crate::snapshots::bos_export::MAX_EXPORT_BYTES,
                ))
                .get(snapshots::list_snapshots),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(health::openapi_json))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        // In front of every route, so that routes added later are protected by default.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        // Around the authorization too, so that its refusals are logged the same way.
        .layer(middleware::from_fn(problem::log_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(health::panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
