//! The middleware in front of every route: the caller authenticated (see `auth`), the role the
//! method needs checked, the caller left in the request for the handlers. Being in front of
//! every route means a new route is protected without anyone remembering to ask for it; only
//! the paths in [`OPEN_PATHS`] are not.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    auth::Role,
    paths::{ALERTMANAGER_PATH, OPEN_PATHS},
    state::SharedState,
};
use crate::metrics::WebhookOutcome;

/// The middleware in front of every route: see the module documentation.
pub async fn authorize(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let is_alertmanager = path == ALERTMANAGER_PATH;
    let required = Role::required_for(request.method());
    let result = state
        .auth
        .authenticate(request.headers())
        .await
        .and_then(|principal| principal.require(required));
    match result {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            if is_alertmanager {
                state
                    .runner
                    .metrics()
                    .webhook_delivery("alertmanager", WebhookOutcome::Unauthorized);
            }
            err.into_response()
        }
    }
}
