//! Why a caller is refused, and why authentication could not be set up.

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::role::Role;
use crate::api::problem::{ApiError, Refusal};

const REALM: &str = "etcd-repopulator";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an `Authorization: Bearer <token>` header")]
    Missing,
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    #[error("{name} may not {action}: it needs the {} role", required.as_str())]
    Forbidden {
        name: String,
        required: Role,
        action: String,
    },
    #[error("tokens cannot be verified right now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The status, problem kind and title of the refusal, and its `WWW-Authenticate` challenge
    /// (empty: none).
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            AuthError::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                format!("Bearer realm=\"{REALM}\""),
            ),
            AuthError::Invalid(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            ),
            AuthError::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
            ),
            AuthError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth-unavailable",
                "Authentication unavailable",
                String::new(),
            ),
        }
    }
}

/// The refusal as a problem (naming the role needed, for a 403) with its challenge.
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        let (status, kind, title, challenge) = err.parts();
        let required_role = match &err {
            AuthError::Forbidden { required, .. } => Some(required.as_str()),
            _ => None,
        };
        ApiError::Refused(Box::new(Refusal {
            status,
            kind,
            title,
            detail: err.to_string(),
            required_role,
            challenge: HeaderValue::from_str(&challenge)
                .ok()
                .filter(|_| !challenge.is_empty()),
        }))
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// A problem while setting up authentication at start (the service does not start).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read the token file {path} (auth.tokens_file): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("creating the HTTP client for the JWKS: {0}")]
    Client(reqwest::Error),
}
