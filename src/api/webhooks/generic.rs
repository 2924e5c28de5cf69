//! `POST /webhooks/generic`: the body of `POST /repopulations` from other automation,
//! authenticated by an HMAC-SHA256 signature of the timestamp and the body.

use std::time::Duration;

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::WebhookError;
use crate::api::webhook_setup::{HmacKey, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{
    api::{
        problem::{
            ApiError, BodyProblems, PROBLEM, Problem, RawBody, content_type, json_from_bytes,
        },
        runs::{CreateRun, Requester, start_run},
        state::SharedState,
    },
    metrics::WebhookOutcome,
    run::Run,
};

/// Start a run from other automation, authenticated by an HMAC-SHA256 signature.
///
/// Sign `<timestamp>.<body>` (the `X-Signature-Timestamp` value, a dot, the raw body) with the
/// shared key and send `X-Signature-256: sha256=<hex>`. The timestamp (Unix seconds) must be
/// within the replay window (default 5 minutes) of the service's clock; a request replayed
/// within the window returns the run it started the first time.
///
/// `etcd` other than `check` (rebuild or restore the services' etcd clusters), real or dry, is
/// accepted only if `webhooks.recover_clusters` lists every cluster the run may touch with that
/// mode; that configuration confirms them, so the body carries no `confirm`.
#[utoipa::path(post, path = "/webhooks/generic", tag = "webhooks", operation_id = "generic_webhook",
    request_body(content = CreateRun, content_type = "application/json", description = "What to repopulate, as for POST /repopulations"),
    params(
        ("X-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`"),
        ("X-Signature-Timestamp" = String, Header, description = "Unix time in seconds when the request was signed"),
    ),
    security(("hmac_signature" = [])),
    responses(
        (status = 202, description = "Run accepted (or the run a replay of this request started)", body = Run,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 400, description = "Malformed or empty JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Missing or bad signature, or a timestamp outside the replay window", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`etcd` restore, rebuild or auto on a cluster webhooks.recover_clusters does not allow it on", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A service is already being repopulated; `active_run` names the run", body = Problem, content_type = PROBLEM),
        BodyProblems,
        (status = 422, description = "Unknown field, service or etcd mode, service not supported, `backup` without `restore`, or a `confirm`", body = Problem, content_type = PROBLEM),
        (status = 404, description = "Disabled: no HMAC key is configured (whatever the request, signed or not)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Shutting down", body = Problem, content_type = PROBLEM),
    ))]
pub async fn receive(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let now = chrono::Utc::now().timestamp();
    let result = match body {
        Ok(RawBody(body)) => generic_delivery(&state, &headers, &body, now).await,
        Err(err) => Err(err.into()),
    };
    let outcome = match &result {
        Ok(_) => WebhookOutcome::Started,
        Err(err) => err.outcome(),
    };
    state.runner.metrics().webhook_delivery("generic", outcome);
    match result {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn generic_delivery(
    state: &SharedState,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Response, WebhookError> {
    let webhooks = &state.webhooks;
    let signature = verify_signature(
        webhooks.key.as_ref(),
        headers,
        body,
        now,
        webhooks.replay_window,
    )?;
    let request: CreateRun = json_from_bytes(content_type(headers).as_deref(), body)?;
    // A replay within the window carries the same signature: it gets the same run.
    let replay_key = format!("generic:{}", hex::encode(signature));
    Ok(start_run(
        state,
        request,
        Requester::Webhook("webhook:generic"),
        Some(replay_key),
    )
    .await?)
}

/// Checks `X-Signature-256` over `<timestamp>.<body>` and the timestamp's age; returns the
/// signature's bytes. Without a key the webhook is off (404) whatever the request carries: a
/// 401 about a missing header would send its caller after a signature nothing could check.
fn verify_signature(
    key: Option<&HmacKey>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<Vec<u8>, WebhookError> {
    let key = key.ok_or(WebhookError::NotConfigured)?;
    let bad = |detail: &str| WebhookError::BadSignature(detail.to_owned());
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let timestamp = header_str(TIMESTAMP_HEADER)
        .ok_or_else(|| bad("the X-Signature-Timestamp header (Unix seconds) is missing"))?;
    let signed_at: i64 = timestamp
        .parse()
        .map_err(|_| bad("X-Signature-Timestamp is not a Unix time in seconds"))?;
    let signature = header_str(SIGNATURE_HEADER)
        .ok_or_else(|| bad("the X-Signature-256 header (sha256=<hex>) is missing"))?;
    let signature = signature
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or_else(|| bad("X-Signature-256 is not sha256=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0)
        .map_err(|_| bad("the configured key cannot be used for HMAC"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature).map_err(|_| {
        bad("X-Signature-256 does not match: sign `<X-Signature-Timestamp>.<raw body>` with HMAC-SHA256")
    })?;
    let age = now.abs_diff(signed_at);
    if age > window.as_secs() {
        let when = if signed_at <= now {
            format!("{age} s ago")
        } else {
            format!("{age} s in the future (is a clock wrong?)")
        };
        return Err(WebhookError::BadSignature(format!(
            "the request was signed {when}, outside the replay window of {} s",
            window.as_secs()
        )));
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    #[test]
    fn signatures() {
        let key = HmacKey(b"0123456789abcdef".to_vec());
        let window = Duration::from_secs(300);
        let body = br#"{"services":["reds"]}"#;
        let good = sign(&key.0, "1000", body);
        assert!(verify_signature(Some(&key), &headers("1000", &good), body, 1100, window).is_ok());
        // Stale, and from the future.
        assert!(verify_signature(Some(&key), &headers("1000", &good), body, 1301, window).is_err());
        assert!(verify_signature(Some(&key), &headers("1000", &good), body, 699, window).is_err());
        let stale = verify_signature(Some(&key), &headers("1000", &good), body, 1400, window)
            .unwrap_err()
            .to_string();
        assert!(stale.contains("signed 400 s ago"), "{stale}");
        let ahead = verify_signature(Some(&key), &headers("1000", &good), body, 600, window)
            .unwrap_err()
            .to_string();
        assert!(ahead.contains("400 s in the future"), "{ahead}");
        // The timestamp is signed: changing it breaks the signature.
        assert!(verify_signature(Some(&key), &headers("1001", &good), body, 1100, window).is_err());
        // Another body.
        assert!(
            verify_signature(Some(&key), &headers("1000", &good), b"{}", 1100, window).is_err()
        );
        assert!(verify_signature(Some(&key), &HeaderMap::new(), body, 1100, window).is_err());
        assert_eq!(format!("{key:?}"), "HmacKey(<redacted>)");
        // Without a key the webhook is off, for a request lacking its signature as for a
        // signed one.
        assert!(matches!(
            verify_signature(None, &HeaderMap::new(), body, 1100, window),
            Err(WebhookError::NotConfigured)
        ));
        assert!(matches!(
            verify_signature(None, &headers("1000", &good), body, 1100, window),
            Err(WebhookError::NotConfigured)
        ));
    }
}
