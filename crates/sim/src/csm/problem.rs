//! The error bodies of the fake services, as each one's spec declares them.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use csm_wire::CsmService;
use serde_json::json;

/// An RFC 7807 error body with the content type the service's spec declares for errors:
/// BOS and HSM `application/problem+json`; BSS, CPS and HMNFD `application/json`; FAS
/// `application/error` (sic, `fas.yaml`). `crus.json` declares no error body; CRUS is a
/// connexion app, which answers errors with `application/problem+json`, so we do too.
pub(crate) fn problem(
    service: CsmService,
    status: StatusCode,
    detail: impl Into<String>,
) -> Response {
    let content_type = match service {
        CsmService::Bos | CsmService::Hsm | CsmService::Crus => "application/problem+json",
        CsmService::Bss | CsmService::Cps | CsmService::Hmnfd => "application/json",
        CsmService::Fas => "application/error",
    };
    // BOS's spec pins the titles of its problem types; the others use the status's reason.
    let title = match (service, status) {
        (CsmService::Bos, StatusCode::NOT_FOUND) => "The resource was not found",
        (CsmService::Bos, StatusCode::CONFLICT) => "The resource to be created already exists",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (status, [(CONTENT_TYPE, content_type)], body.to_string()).into_response()
}
