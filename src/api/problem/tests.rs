//! How each error becomes a problem+json answer.

use std::sync::Mutex;

use axum::{Router, body::Body, routing::get};
use tower::ServiceExt;

use super::*;

/// The log lines written while the test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn internal_causes_are_logged_once_by_the_layer_and_never_sent() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/boom",
            get(|| async { ApiError::Internal("the disk is on fire".to_owned()) }),
        )
        .route(
            "/bad",
            get(|| async { ApiError::invalid("limit", "limit must be 1 to 500") }),
        )
        .layer(axum::middleware::from_fn(log_errors));

    let response = app
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("disk"), "{body}");
    assert!(body.contains(INTERNAL_DETAIL), "{body}");
    let response = app
        .oneshot(Request::get("/bad").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("the disk is on fire").count(), 1, "{text}");
    assert!(text.contains("ERROR"), "{text}");
    // Refused requests are not errors of the service (debug, off here).
    assert!(!text.contains("limit must be"), "{text}");
}

#[test]
fn names_the_field_serde_complains_about() {
    assert_eq!(
        named_field("unknown field `servics`, expected one of `services`").as_deref(),
        Some("servics")
    );
    assert_eq!(
        named_field("missing field `services`").as_deref(),
        Some("services")
    );
    assert_eq!(
        named_field("invalid type: integer `1`, expected a boolean"),
        None
    );
}

#[test]
fn json_bodies() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        services: Vec<String>,
        #[serde(default)]
        dry_run: bool,
    }
    let json = Some("application/json");
    let parse = |ct: Option<&str>, body: &str| json_from_bytes::<Body>(ct, body.as_bytes());
    let field = |ct, body| match parse(ct, body) {
        Err(ApiError::InvalidBody { field, .. }) => field,
        other => panic!("{body}: {other:?}"),
    };
    assert!(parse(json, r#"{"services":["reds"]}"#).is_ok());
    assert!(
        parse(
            Some("Application/JSON; charset=utf-8"),
            r#"{"services":[]}"#
        )
        .is_ok()
    );
    assert!(parse(Some("application/merge-patch+json"), r#"{"services":[]}"#).is_ok());
    for ct in [None, Some("text/plain"), Some("application/jsonx")] {
        assert!(
            matches!(parse(ct, "{}"), Err(ApiError::UnsupportedMediaType(_))),
            "{ct:?}"
        );
    }
    assert!(matches!(
        parse(json, " \n"),
        Err(ApiError::MalformedJson(_))
    ));
    assert!(matches!(
        parse(json, "{\"services\": ["),
        Err(ApiError::MalformedJson(_))
    ));
    assert!(matches!(
        parse(json, "{\"services\": []} x"),
        Err(ApiError::MalformedJson(_))
    ));
    assert_eq!(
        field(json, r#"{"services":["a"],"dry_run":1}"#).as_deref(),
        Some("dry_run")
    );
    assert_eq!(
        field(json, r#"{"services":[1]}"#).as_deref(),
        Some("services[0]")
    );
    assert_eq!(field(json, r#"{"servics":[]}"#).as_deref(), Some("servics"));
    assert_eq!(field(json, r#"{}"#).as_deref(), Some("services"));
}
