//! The HTTP API: axum routers, request/response types with their OpenAPI schemas, and the
//! mapping of every error to `application/problem+json`.

pub mod auth;
mod authorize;
mod drills;
mod etcd_clusters;
mod events;
mod health;
mod metrics;
mod openapi;
mod paths;
pub mod problem;
mod runs;
mod services;
mod snapshots;
mod state;
pub mod webhook_setup;
pub mod webhooks;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

pub use openapi::{ApiDoc, openapi, openapi_for};
pub use paths::{ALERTMANAGER_PATH, GENERIC_PATH, OPEN_PATHS};
pub use problem::BODY_LIMIT;
pub use state::{AppState, SharedState};

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
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        // In front of every route, so that routes added later are protected by default.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authorize::authorize,
        ))
        // Around the authorization too, so that its refusals are logged the same way.
        .layer(middleware::from_fn(problem::log_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(health::panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
