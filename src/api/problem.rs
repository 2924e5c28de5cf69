//! Errors as RFC 9457 `application/problem+json`, one type per kind of failure; and the
//! extractors that turn every malformed request into such a problem instead of a plain 4xx.

use std::{fmt::Display, str::FromStr};

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::{IntoResponses, ToSchema};
use uuid::Uuid;

use crate::{model::Service, runner::RunnerError, store::StoreError};

const TYPE_PREFIX: &str = "urn:etcd-repopulator:problem:";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem (`urn:etcd-repopulator:problem:<kind>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// What is wrong, for a person.
    pub detail: String,
    /// The request field at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The active run that conflicts with the request (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_run: Option<Uuid>,
}

impl Problem {
    /// A problem of `kind` (the last part of its `type`), for errors defined next to their
    /// endpoints (authentication, webhooks).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: String) -> Problem {
        Problem {
            type_: format!("{TYPE_PREFIX}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field: None,
            active_run: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{detail}")]
    InvalidBody {
        detail: String,
        field: Option<String>,
    },
    #[error("unknown service(s): {}; known services: {}", .0.join(", "), known_services())]
    UnknownServices(Vec<String>),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0:?} is not a valid run id (expected a UUID)")]
    InvalidId(String),
    #[error("{detail}")]
    InvalidParameter { detail: String, field: String },
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed on this resource")]
    MethodNotAllowed(String),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("internal error")]
    Internal(String),
}

fn known_services() -> String {
    Service::ALL.map(|s| s.as_str()).join(", ")
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::MalformedJson(_) => (S::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            ApiError::InvalidBody { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid request",
            ),
            ApiError::UnknownServices(_) => (
                S::UNPROCESSABLE_ENTITY,
                "unknown-service",
                "Unknown service",
            ),
            ApiError::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::InvalidId(_) => (S::BAD_REQUEST, "invalid-id", "Invalid run id"),
            ApiError::InvalidParameter { .. } => {
                (S::BAD_REQUEST, "invalid-parameter", "Invalid parameter")
            }
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Runner(err) => match err {
                RunnerError::Conflict { .. } => (
                    S::CONFLICT,
                    "run-conflict",
                    "Service already being repopulated",
                ),
                RunnerError::IdempotencyMismatch { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused with a different request",
                ),
                RunnerError::NotImplemented { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "service-not-implemented",
                    "Service not supported by this build",
                ),
                RunnerError::NotInRelease { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "service-not-in-release",
                    "Service not part of the CSM release",
                ),
                RunnerError::Release(_) => (
                    S::CONFLICT,
                    "csm-release-undetermined",
                    "CSM release could not be determined",
                ),
                RunnerError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
                RunnerError::WrongState { .. } => (
                    S::CONFLICT,
                    "invalid-state",
                    "Run is not in a state that allows this",
                ),
                RunnerError::ShuttingDown => {
                    (S::SERVICE_UNAVAILABLE, "shutting-down", "Shutting down")
                }
                RunnerError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            },
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let detail = match self {
            ApiError::Internal(_) | ApiError::Runner(RunnerError::Store(_)) => {
                "an internal error occurred; the service log has the details".to_owned()
            }
            other => other.to_string(),
        };
        let field = match self {
            ApiError::InvalidBody { field, .. } => field.clone(),
            ApiError::UnknownServices(_)
            | ApiError::Runner(
                RunnerError::NotImplemented { .. } | RunnerError::NotInRelease { .. },
            ) => Some("services".to_owned()),
            ApiError::InvalidParameter { field, .. } => Some(field.clone()),
            _ => None,
        };
        let active_run = match self {
            ApiError::Runner(RunnerError::Conflict { run_id, .. }) => Some(*run_id),
            _ => None,
        };
        Problem {
            type_: format!("{TYPE_PREFIX}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field,
            active_run,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let internal = match &self {
            ApiError::Internal(cause) => Some(cause.clone()),
            ApiError::Runner(err @ RunnerError::Store(_)) => Some(err.to_string()),
            _ => None,
        };
        if let Some(cause) = internal {
            // The one place an internal cause is logged; the client gets a generic detail.
            tracing::error!(%cause, "internal error");
        }
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        problem_response(status, &problem)
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

/// The problems of an endpoint that addresses one run by its id (OpenAPI documentation).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum RunIdProblems {
    #[response(
        status = 400,
        description = "Malformed id",
        content_type = "application/problem+json"
    )]
    MalformedId(Problem),
    #[response(
        status = 404,
        description = "No such run",
        content_type = "application/problem+json"
    )]
    NoSuchRun(Problem),
}

/// The problems of a JSON body that is too large or not JSON (OpenAPI documentation).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BodyProblems {
    #[response(
        status = 413,
        description = "Body over 64 KiB",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "Body is not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
}

impl ApiError {
    /// A 400 naming the query parameter or header at fault.
    pub fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter {
            detail: detail.into(),
            field: field.to_owned(),
        }
    }
}

/// The query string as `T`; one that does not fit (an unknown parameter, a repeated one) is a
/// problem naming `query`. The values are strings, checked by the handler with [`parse_param`]
/// and [`page_limit`] so that each bad value gets its own message.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| QueryParams(query))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// An optional parameter parsed with `FromStr`; a value that does not parse is a 400 naming
/// `field`, with the parser's message.
pub fn parse_param<T>(field: &str, raw: Option<&str>) -> Result<Option<T>, ApiError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.map(|raw| {
        raw.parse::<T>()
            .map_err(|e| ApiError::invalid(field, e.to_string()))
    })
    .transpose()
}

/// The `limit` of a listing: `default` when absent, otherwise 1 to `max`.
pub fn page_limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("limit must be 1 to {max}, got {raw:?}"))
            }),
    }
}

/// A JSON request body. An empty body means `T::default()` (so `POST /repopulations` with no
/// body repopulates everything); anything else must be JSON, and every failure is a problem.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(req.headers());
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge(super::BODY_LIMIT)
                    } else {
                        ApiError::MalformedJson(rejection.body_text())
                    }
                })?;
        json_from_bytes(content_type.as_deref(), &bytes).map(JsonBody)
    }
}

/// A JSON body already read (e.g. after checking its signature), parsed as [`JsonBody`] does.
pub fn json_from_bytes<T>(content_type: Option<&str>, bytes: &[u8]) -> Result<T, ApiError>
where
    T: DeserializeOwned + Default,
{
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if let Some(ct) = content_type
        && !(ct.starts_with("application/json") || ct.contains("+json"))
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected content-type application/json, got {ct:?}"
        )));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => ApiError::InvalidBody {
                field: offending_field(&err.to_string()),
                detail: err.to_string(),
            },
            _ => ApiError::MalformedJson(format!("request body is not valid JSON: {err}")),
        }
    })
}

pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
}

/// The field named in a serde message such as "unknown field `foo`, expected ...".
fn offending_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource; see /openapi.json for the API".to_owned())
}

pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_serde_complains_about() {
        assert_eq!(
            offending_field("unknown field `servics`, expected one of `services`").as_deref(),
            Some("servics")
        );
        assert_eq!(offending_field("expected a string"), None);
    }
}
