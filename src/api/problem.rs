//! Errors as RFC 9457 `application/problem+json`, one type per kind of failure; and the
//! extractors that turn every malformed request into such a problem instead of a plain 4xx.

use std::{fmt::Display, str::FromStr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::{IntoResponses, ToSchema};
use uuid::Uuid;

use crate::{etcd::backups::BackupError, model::Service, runner::RunnerError, store::StoreError};

/// The media type of every error response (RFC 9457).
pub const PROBLEM: &str = "application/problem+json";

/// What a client learns of an internal error (the cause is in the service's log).
pub const INTERNAL_DETAIL: &str = "an internal error occurred; the service log has the details";

/// The start of every problem's `type`; the kind of problem follows.
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
    /// The interrupted recovery run that holds back a new recovery of the same etcd cluster
    /// (409): resume it or abandon it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_run: Option<Uuid>,
    /// The role the request needs (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_role: Option<String>,
    /// Exactly what the request's `confirm` must be (422 of a run that may rebuild or restore
    /// etcd clusters without confirming them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Vec<String>>,
    /// What the request's `confirm` named (with `confirm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_given: Option<Vec<String>>,
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
            interrupted_run: None,
            required_role: None,
            confirm: None,
            confirm_given: None,
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
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
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
    /// The backups could not be listed, fetched or taken (S3, the snapshotter directory).
    #[error(transparent)]
    Backups(#[from] BackupError),
    /// Refused by the authentication layer, which describes its refusals itself (`api::auth`
    /// converts them): e.g. the caller lacks the role a request needs, beyond what the
    /// authorization middleware checks from the method alone.
    #[error("{}", .0.detail)]
    Refused(Box<Refusal>),
    /// A drill could not start (see `api::drills` for the conversion: its backup and store
    /// errors become those variants).
    #[error(transparent)]
    Drill(crate::drills::DrillError),
    /// A webhook asked for something its configuration does not allow.
    #[error("{0}")]
    NotAllowed(String),
    /// A fault of the service; the cause is logged, the client gets [`INTERNAL_DETAIL`].
    #[error("{0}")]
    Internal(String),
}

/// A refusal described by the layer that refused (authentication): its problem, and the
/// challenge the response carries.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    /// The last part of the problem's `type`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The role the request needs (403).
    pub required_role: Option<&'static str>,
    /// The `WWW-Authenticate` header of the response, if any.
    pub challenge: Option<HeaderValue>,
}

fn known_services() -> String {
    Service::ALL.map(Service::as_str).join(", ")
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
            ApiError::UnreadableBody(_) => {
                (S::BAD_REQUEST, "unreadable-body", "Unreadable request body")
            }
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
                RunnerError::Unconfirmed { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "etcd-clusters-not-confirmed",
                    "etcd clusters not confirmed",
                ),
                RunnerError::BackupAmbiguous { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "invalid-request",
                    "Invalid request",
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
                RunnerError::InterruptedRecovery { .. } => (
                    S::CONFLICT,
                    "recovery-interrupted",
                    "An interrupted recovery run holds this etcd cluster",
                ),
                RunnerError::ResumeStale { .. } => (
                    S::CONFLICT,
                    "resume-stale",
                    "The cluster changed since the run's journal",
                ),
                RunnerError::ShuttingDown => {
                    (S::SERVICE_UNAVAILABLE, "shutting-down", "Shutting down")
                }
                RunnerError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            },
            ApiError::Backups(err) => match err {
                BackupError::NotFound { .. } => {
                    (S::NOT_FOUND, "backup-not-found", "No such backup")
                }
                BackupError::Corrupt { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "backup-corrupt",
                    "Backup is corrupt",
                ),
                BackupError::S3Denied { .. } => {
                    (S::BAD_GATEWAY, "s3-refused", "S3 refused the request")
                }
                BackupError::S3 { .. } | BackupError::Etcd { .. } | BackupError::Io { .. } => (
                    S::BAD_GATEWAY,
                    "backup-storage-failed",
                    "Backup storage failed",
                ),
                BackupError::Timeout { .. } => (
                    S::GATEWAY_TIMEOUT,
                    "backup-storage-timeout",
                    "Backup storage did not answer in time",
                ),
                BackupError::NotConfigured
                | BackupError::NoSnapshotsDir { .. }
                | BackupError::SnapshotsDirMissing(_)
                | BackupError::Credentials { .. } => (
                    S::SERVICE_UNAVAILABLE,
                    "backups-not-configured",
                    "Backups not configured",
                ),
            },
            ApiError::Refused(refusal) => (refusal.status, refusal.kind, refusal.title),
            ApiError::Drill(crate::drills::DrillError::Busy { .. }) => (
                S::CONFLICT,
                "drill-conflict",
                "A drill of the cluster is running",
            ),
            ApiError::Drill(_) => (S::SERVICE_UNAVAILABLE, "shutting-down", "Shutting down"),
            ApiError::NotAllowed(_) => (
                S::FORBIDDEN,
                "not-allowed-by-configuration",
                "Not allowed by the configuration",
            ),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let detail = match self {
            ApiError::Internal(_) | ApiError::Runner(RunnerError::Store(_)) => {
                INTERNAL_DETAIL.to_owned()
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
            ApiError::Runner(RunnerError::Unconfirmed { .. }) => Some("confirm".to_owned()),
            ApiError::Runner(RunnerError::BackupAmbiguous { .. }) => Some("backup".to_owned()),
            _ => None,
        };
        let active_run = match self {
            ApiError::Runner(RunnerError::Conflict { run_id, .. }) => Some(*run_id),
            _ => None,
        };
        let mut problem = Problem::new(status, kind, title, detail);
        problem.field = field;
        problem.active_run = active_run;
        if let ApiError::Refused(refusal) = self {
            problem.required_role = refusal.required_role.map(str::to_owned);
        }
        if let ApiError::Runner(RunnerError::InterruptedRecovery { run_id, .. }) = self {
            problem.interrupted_run = Some(*run_id);
        }
        if let ApiError::Runner(RunnerError::Unconfirmed { needed, given, .. }) = self {
            problem.confirm = Some(needed.clone());
            problem.confirm_given = Some(given.clone());
        }
        problem
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = problem_response(status, &problem);
        if let ApiError::Refused(refusal) = &self
            && let Some(challenge) = &refusal.challenge
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        ErrorReport::attach(response, self)
    }
}

/// The error behind an error response, left in the response's extensions for [`log_errors`]:
/// whoever builds the response says what went wrong, and one layer decides what is logged (the
/// shape of axum's `error-handling` example). Internal causes reach the log, never the client.
#[derive(Clone)]
pub struct ErrorReport(Arc<dyn std::error::Error + Send + Sync>);

impl ErrorReport {
    /// `response`, carrying `error` for the log.
    pub fn attach(
        mut response: Response,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Response {
        response
            .extensions_mut()
            .insert(ErrorReport(Arc::new(error)));
        response
    }
}

/// The one place errors of requests are logged: server errors with their cause at `error`,
/// refused requests at `debug` (the request itself is in the trace span around this).
pub async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(ErrorReport(error)) = response.extensions().get::<ErrorReport>() {
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::error!(status, %error, "request failed");
        } else {
            tracing::debug!(status, %error, "request refused");
        }
    }
    response
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, PROBLEM)], body).into_response()
}

/// The problems of an endpoint that addresses one run by its id (OpenAPI documentation).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum RunIdProblems {
    #[response(
        status = 400,
        description = "Malformed id",
        content_type = PROBLEM
    )]
    MalformedId(Problem),
    #[response(
        status = 404,
        description = "No such run",
        content_type = PROBLEM
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
        content_type = PROBLEM
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "Body not sent as `content-type: application/json`",
        content_type = PROBLEM
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

/// Request bodies above this size are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A request body of at most [`BODY_LIMIT`] bytes; a larger one is a 413
/// problem (axum's own rejection would be `text/plain`).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection: BytesRejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(BODY_LIMIT)
                } else {
                    ApiError::UnreadableBody(rejection.body_text())
                }
            })
    }
}

/// A JSON request body, sent as `content-type: application/json`: every endpoint that takes a
/// body takes it this way, and every failure is a problem (see [`json_from_bytes`]).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(req.headers());
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        json_from_bytes(content_type.as_deref(), &bytes).map(JsonBody)
    }
}

/// The one JSON body parser, also for bodies already read (e.g. after checking a signature).
/// A body that does not say it is JSON is 415, an empty or malformed one 400, and one that does
/// not fit `T` 422 naming the field at fault.
pub fn json_from_bytes<T>(content_type: Option<&str>, bytes: &[u8]) -> Result<T, ApiError>
where
    T: DeserializeOwned,
{
    let Some(content_type) = content_type else {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with content-type: application/json (the request has no \
             content type)"
                .to_owned(),
        ));
    };
    if !is_json(content_type) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected content-type application/json, got {content_type:?}"
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the request body is empty: this endpoint takes a JSON object".to_owned(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(|err| {
        let field = field_at(&err);
        let err = err.into_inner();
        if err.classify() == serde_json::error::Category::Data {
            ApiError::InvalidBody {
                field,
                detail: err.to_string(),
            }
        } else {
            // serde_json calls a value of the wrong type for an enum (`"status": 1`) a syntax
            // error; in valid JSON it is a wrong type, which the document's tree names.
            type_error::<T>(bytes).unwrap_or_else(|| not_json(&err))
        }
    })?;
    // Nothing may follow the document (as serde_json::from_slice checks).
    deserializer.end().map_err(|err| not_json(&err))?;
    Ok(value)
}

/// Why `bytes`, valid JSON, is not a `T`: the field and serde's message, read from the parsed
/// document (`None` for a body that is not JSON, or that is a `T` after all).
fn type_error<T: DeserializeOwned>(bytes: &[u8]) -> Option<ApiError> {
    let document: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let err = serde_path_to_error::deserialize::<_, T>(document).err()?;
    Some(ApiError::InvalidBody {
        field: field_at(&err),
        detail: err.into_inner().to_string(),
    })
}

fn not_json(err: &serde_json::Error) -> ApiError {
    ApiError::MalformedJson(format!("request body is not valid JSON: {err}"))
}

/// Whether a content type is JSON: `application/json` or a `+json` type, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
}

/// The field a deserialization error is about: where it happened (`dry_run`,
/// `services[0]`), or, for an unknown or missing field, the field serde names.
fn field_at(err: &serde_path_to_error::Error<serde_json::Error>) -> Option<String> {
    let path = err.path().to_string();
    if path != "." && !path.is_empty() {
        return Some(path);
    }
    named_field(&err.inner().to_string())
}

/// The field named in a serde message such as "unknown field `foo`, expected ...".
fn named_field(message: &str) -> Option<String> {
    let message = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("missing field "))?;
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
mod tests;
