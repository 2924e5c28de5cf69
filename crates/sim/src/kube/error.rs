//! API errors rendered as `meta/v1 Status` objects, with the reasons, codes and message shapes
//! the real kube-apiserver uses (k8s.io/apimachinery/pkg/api/errors), so that kube-rs surfaces
//! them as `kube::Error::Api` exactly as it would against a real cluster.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::ResourceDef;

/// One field error of an `Invalid` (422) Status, as `field.Error` renders it.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// `field.Invalid(path, value, detail)`: "path: Invalid value: <value>: detail".
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// `field.Required(path, detail)`: "path: Required value: detail".
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: String,
        group: String,
        name: String,
    },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: String,
        group: String,
        name: String,
    },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        group: String,
        name: String,
        detail: String,
    },
    #[error("{} \"{name}\" is invalid: {}", group_kind(kind, group), render_causes(.causes))]
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<FieldError>,
    },
    #[error("{0}")]
    BadRequest(String),
    /// An error the real server does not map to an API status (plain Go error from storage):
    /// it answers 500 with an empty reason and the bare message.
    #[error("{0}")]
    Unclassified(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No media type in `Accept` is one the server produces.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// A request authorization denied (`NewForbidden`): `pods "x" is forbidden: User ...`.
    #[error("{} is forbidden: {message}", forbidden_subject(.resource, .group, .name))]
    Forbidden {
        resource: String,
        group: String,
        name: String,
        message: String,
    },
    /// No or an unknown bearer token.
    #[error("Unauthorized")]
    Unauthorized,
}

/// `qualifiedResource.String()`, then the name quoted when there is one.
fn forbidden_subject(resource: &str, group: &str, name: &str) -> String {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        qualified
    } else {
        format!("{qualified} {name:?}")
    }
}

/// `schema.GroupKind.String()`: the bare kind in the core group.
fn group_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

fn render_causes(causes: &[FieldError]) -> String {
    // `field.ErrorList.ToAggregate()` prints one error bare and several as "[a, b]".
    match causes {
        [one] => one.render(),
        many => format!(
            "[{}]",
            many.iter()
                .map(FieldError::render)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `"jobs.batch"` / `"pods"`: how the real server names a resource in messages.
pub fn qualified(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

impl ApiError {
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::NotFound {
            resource: qualified(def),
            group: def.group.to_string(),
            name: name.to_string(),
        }
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::AlreadyExists {
            resource: qualified(def),
            group: def.group.to_string(),
            name: name.to_string(),
        }
    }

    pub fn conflict(def: &ResourceDef, name: &str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            resource: qualified(def),
            group: def.group.to_string(),
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    /// The optimistic-concurrency conflict (stale `metadata.resourceVersion`).
    pub fn stale(def: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            def,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(def: &ResourceDef, name: &str, causes: Vec<FieldError>) -> Self {
        Self::Invalid {
            kind: def.kind.to_string(),
            group: def.group.to_string(),
            name: name.to_string(),
            causes,
        }
    }

    pub fn code(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::NoSuchResource => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unclassified(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Expired { .. } => StatusCode::GONE,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::NotFound { .. } | Self::NoSuchResource => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Invalid { .. } => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::Unclassified(_) => return None,
            Self::Internal(_) => "InternalError",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::NotAcceptable(_) => "NotAcceptable",
            Self::TooManyRequests { .. } => "TooManyRequests",
            Self::Expired { .. } => "Expired",
            Self::Forbidden { .. } => "Forbidden",
            Self::Unauthorized => "Unauthorized",
        })
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::NotFound {
                resource,
                group,
                name,
            }
            | Self::AlreadyExists {
                resource,
                group,
                name,
            }
            | Self::Conflict {
                resource,
                group,
                name,
                ..
            }
            | Self::Forbidden {
                resource,
                group,
                name,
                ..
            } => {
                // `details.kind` carries the plural resource name, as the real server does.
                let kind = resource.split('.').next().unwrap_or(resource);
                let mut d = json!({ "name": name, "kind": kind });
                if name.is_empty() {
                    // `name` is `omitempty` in StatusDetails.
                    d.as_object_mut().map(|m| m.remove("name"));
                }
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            Self::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                    .collect();
                let mut d = json!({ "name": name, "kind": kind, "causes": causes });
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            Self::Internal(msg) => Some(json!({ "causes": [{ "message": msg }] })),
            Self::TooManyRequests { retry_after, .. } => {
                Some(json!({ "retryAfterSeconds": retry_after }))
            }
            _ => None,
        }
    }

    /// The `Status` object the real server would send.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "code": self.code().as_u16(),
        });
        if let Some(reason) = self.reason() {
            s["reason"] = json!(reason);
        }
        if let Some(details) = self.details() {
            s["details"] = details;
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.code(), axum::Json(self.status())).into_response();
        if let Self::TooManyRequests { retry_after, .. } = &self
            && let Ok(v) = retry_after.to_string().parse()
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
