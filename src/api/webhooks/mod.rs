//! Webhooks that start runs: Prometheus Alertmanager's (a resolved etcd alert means the
//! cluster was rebuilt and is healthy again, so its services need their data back) and a
//! generic one for other automation, authenticated by an HMAC-SHA256 signature of its body.

pub mod alertmanager;
pub mod generic;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::problem::{ApiError, ErrorReport, Problem, problem_response};
use crate::{metrics::WebhookOutcome, runner::RunnerError};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    BadSignature(String),
    #[error(
        "POST /webhooks/generic is disabled: no HMAC key is configured (webhooks.hmac_key_file)"
    )]
    NotConfigured,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<RunnerError> for WebhookError {
    fn from(err: RunnerError) -> Self {
        WebhookError::Api(ApiError::Runner(err))
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, kind, title) = match self {
            WebhookError::Api(err) => return err.into_response(),
            WebhookError::BadSignature(_) => (
                StatusCode::UNAUTHORIZED,
                "bad-signature",
                "Missing or invalid signature",
            ),
            // Not a server fault: the endpoint is switched off by configuration.
            WebhookError::NotConfigured => (
                StatusCode::NOT_FOUND,
                "webhook-disabled",
                "Webhook not configured",
            ),
        };
        let response =
            problem_response(status, &Problem::new(status, kind, title, self.to_string()));
        ErrorReport::attach(response, self)
    }
}

impl WebhookError {
    pub(super) fn outcome(&self) -> WebhookOutcome {
        match self {
            WebhookError::BadSignature(_) => WebhookOutcome::Unauthorized,
            WebhookError::NotConfigured => WebhookOutcome::Error,
            WebhookError::Api(err) => match err.problem().status {
                s if s >= 500 => WebhookOutcome::Error,
                409 => WebhookOutcome::Ignored,
                _ => WebhookOutcome::Invalid,
            },
        }
    }
}
