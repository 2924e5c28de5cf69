//! Webhooks that start runs: Prometheus Alertmanager's (a resolved etcd alert means the
//! cluster was rebuilt and is healthy again, so its services need their data back) and a
//! generic one for other automation, authenticated by an HMAC-SHA256 signature of its body.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    SharedState,
    auth::Principal,
    problem::{ApiError, BodyProblems, Problem, content_type, json_from_bytes, problem_response},
    runs::{CreateRun, start_run},
};
use crate::{
    config::{AlertmanagerConfig, WebhooksConfig},
    metrics::WebhookOutcome,
    model::{Run, Service},
    runner::{Created, RunRequest, RunnerError},
};

pub const ALERTMANAGER_PATH: &str = "/webhooks/alertmanager";
pub const GENERIC_PATH: &str = "/webhooks/generic";
pub const SIGNATURE_HEADER: &str = "x-signature-256";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Keys shorter than this are refused at start: an HMAC key is only as strong as it is long.
const MIN_KEY_LEN: usize = 16;

/// The HMAC key, kept out of Debug output and logs.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("cannot read the webhook HMAC key {path} (webhooks.hmac_key_file): {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the webhook HMAC key {path} (webhooks.hmac_key_file) is {len} bytes; use at least \
         {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { path: String, len: usize },
}

/// What the webhook handlers need, built once at start.
#[derive(Debug)]
pub struct Webhooks {
    pub key: Option<HmacKey>,
    pub replay_window: Duration,
    pub alertmanager: AlertmanagerConfig,
}

impl Webhooks {
    pub fn from_config(config: &WebhooksConfig) -> Result<Webhooks, WebhookSetupError> {
        let key = config
            .hmac_key_file
            .as_deref()
            .map(load_key)
            .transpose()?
            .flatten();
        Ok(Webhooks {
            key,
            replay_window: config.replay_window,
            alertmanager: config.alertmanager.clone(),
        })
    }
}

fn load_key(path: &Path) -> Result<Option<HmacKey>, WebhookSetupError> {
    let mut bytes = std::fs::read(path).map_err(|source| WebhookSetupError::Read {
        path: path.display().to_string(),
        source,
    })?;
    // Secrets written with `echo` or an editor end with a newline nobody means as key.
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        tracing::warn!(path = %path.display(), "the webhook HMAC key file is empty: POST /webhooks/generic is disabled");
        return Ok(None);
    }
    if bytes.len() < MIN_KEY_LEN {
        return Err(WebhookSetupError::TooShort {
            path: path.display().to_string(),
            len: bytes.len(),
        });
    }
    Ok(Some(HmacKey(bytes)))
}

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
        problem_response(status, &Problem::new(status, kind, title, self.to_string()))
    }
}

impl WebhookError {
    fn outcome(&self) -> WebhookOutcome {
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

/// Alertmanager's webhook payload (version 4). Fields the service does not use are accepted
/// and ignored, so newer Alertmanagers keep working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// Payload version; must be "4".
    #[schema(pattern = "^4$")]
    pub version: String,
    /// Identifies the alert group.
    pub group_key: String,
    /// `firing` or `resolved`, of the group.
    pub status: AlertStatus,
    pub receiver: Option<String>,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; with `groupKey` and `fingerprint` it identifies one occurrence of the alert.
    pub starts_at: String,
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: Option<String>,
    pub fingerprint: String,
}

/// What became of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    /// A run was started (`run_id`).
    Started,
    /// Firing alerts never start runs: the cluster is not rebuilt yet.
    Firing,
    /// Its `alertname` is not in `webhooks.alertmanager.alertnames`.
    NotSelected,
    /// None of the cluster labels is set.
    NoClusterLabel,
    /// The etcd cluster is not in `webhooks.alertmanager.clusters`.
    UnmappedCluster,
    /// This occurrence of the alert already started `run_id`.
    Duplicate,
    /// A service is being repopulated by `run_id` already.
    Busy,
    /// This build cannot repopulate one of the services.
    NotSupported,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertResult {
    pub fingerprint: String,
    pub alertname: Option<String>,
    pub etcd_cluster: Option<String>,
    pub outcome: AlertOutcome,
    /// The run started, the earlier run of a duplicate, or the active run of a busy service.
    pub run_id: Option<Uuid>,
    pub services: Vec<Service>,
    pub detail: String,
}

/// What a webhook delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertmanagerResponse {
    /// Runs this delivery started.
    pub runs: Vec<Uuid>,
    /// Per alert, in the order of the payload: the run started, or why none was.
    pub alerts: Vec<AlertResult>,
}

const PROBLEM: &str = "application/problem+json";

/// Start runs from Alertmanager: each `resolved` alert naming a known etcd cluster starts a run
/// for the services on that cluster.
///
/// Alertmanager authenticates like any API client, with a bearer token holding the `write`
/// role (`http_config.authorization.credentials_file` in its receiver, or `oauth2` client
/// credentials in JWT mode). The same alert occurrence (`groupKey`, `fingerprint`, `startsAt`)
/// never starts two runs, so redeliveries are harmless.
#[utoipa::path(post, path = "/webhooks/alertmanager", tag = "webhooks", operation_id = "alertmanager_webhook",
    request_body(content = AlertmanagerPayload, description = "Alertmanager webhook payload, version 4"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Nothing started; `alerts` says why for each alert", body = AlertmanagerResponse),
        (status = 202, description = "At least one run started", body = AlertmanagerResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Missing or invalid bearer token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "The token lacks the write role", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Not an Alertmanager version 4 payload", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Shutting down; Alertmanager retries", body = Problem, content_type = PROBLEM),
    ))]
pub async fn alertmanager(
    State(state): State<SharedState>,
    principal: Principal,
    body: Bytes,
) -> Response {
    let result = alertmanager_delivery(&state, &principal, &body).await;
    let outcome = match &result {
        Ok(response) if response.runs.is_empty() => WebhookOutcome::Ignored,
        Ok(_) => WebhookOutcome::Started,
        Err(err) => err.outcome(),
    };
    state
        .runner
        .metrics()
        .webhook_delivery("alertmanager", outcome);
    match result {
        Ok(response) => {
            let status = if response.runs.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, Json(response)).into_response()
        }
        Err(err) => err.into_response(),
    }
}

async fn alertmanager_delivery(
    state: &SharedState,
    principal: &Principal,
    body: &[u8],
) -> Result<AlertmanagerResponse, WebhookError> {
    let payload: AlertmanagerPayload = parse_json(body)?;
    if payload.version != "4" {
        return Err(ApiError::InvalidBody {
            detail: format!(
                "Alertmanager payload version {:?} is not supported (expected \"4\")",
                payload.version
            ),
            field: Some("version".to_owned()),
        }
        .into());
    }
    tracing::info!(caller = %principal.name, group_key = %payload.group_key, alerts = payload.alerts.len(), "Alertmanager delivery");
    let rules = &state.webhooks.alertmanager;
    let mut response = AlertmanagerResponse {
        runs: Vec::new(),
        alerts: Vec::new(),
    };
    for alert in &payload.alerts {
        let result = handle_alert(state, rules, &payload.group_key, alert).await?;
        if result.outcome == AlertOutcome::Started
            && let Some(id) = result.run_id
        {
            response.runs.push(id);
        }
        response.alerts.push(result);
    }
    Ok(response)
}

async fn handle_alert(
    state: &SharedState,
    rules: &AlertmanagerConfig,
    group_key: &str,
    alert: &Alert,
) -> Result<AlertResult, WebhookError> {
    let alertname = alert.labels.get("alertname").cloned();
    let etcd_cluster = rules
        .cluster_labels
        .iter()
        .find_map(|label| alert.labels.get(label))
        .cloned();
    let mut result = AlertResult {
        fingerprint: alert.fingerprint.clone(),
        alertname: alertname.clone(),
        etcd_cluster: etcd_cluster.clone(),
        outcome: AlertOutcome::Firing,
        run_id: None,
        services: Vec::new(),
        detail: String::new(),
    };
    let mut skip = |outcome, detail: String| {
        result.outcome = outcome;
        result.detail = detail;
    };
    if alert.status == AlertStatus::Firing {
        skip(
            AlertOutcome::Firing,
            "firing alerts never start runs; the run starts when the alert resolves (the \
             cluster is rebuilt)"
                .to_owned(),
        );
        return Ok(result);
    }
    if !rules.alertnames.is_empty()
        && !alertname
            .as_ref()
            .is_some_and(|name| rules.alertnames.contains(name))
    {
        skip(
            AlertOutcome::NotSelected,
            format!(
                "alertname {} is not one of webhooks.alertmanager.alertnames",
                alertname.as_deref().unwrap_or("(none)")
            ),
        );
        return Ok(result);
    }
    let Some(cluster) = etcd_cluster else {
        skip(
            AlertOutcome::NoClusterLabel,
            format!(
                "the alert has none of the labels {} naming the etcd cluster",
                rules.cluster_labels.join(", ")
            ),
        );
        return Ok(result);
    };
    let Some(services) = rules.clusters.get(&cluster) else {
        skip(
            AlertOutcome::UnmappedCluster,
            format!(
                "etcd cluster {cluster:?} holds no service this service repopulates (known: {})",
                rules
                    .clusters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return Ok(result);
    };
    result.services = services.clone();
    let key = hex::encode(Sha256::digest(
        [group_key, &alert.fingerprint, &alert.starts_at].join("\u{0}"),
    ));
    let request = RunRequest {
        services: services.clone(),
        dry_run: rules.dry_run,
        reason: Some(format!(
            "Alertmanager: {} resolved for {cluster} (fingerprint {}, started {})",
            alertname.as_deref().unwrap_or("alert"),
            alert.fingerprint,
            alert.starts_at
        )),
        requested_by: "webhook:alertmanager".to_owned(),
        idempotency_key: Some(format!("alertmanager:{key}")),
    };
    match state.runner.create(request).await {
        Ok(Created::New(run)) => {
            result.outcome = AlertOutcome::Started;
            result.run_id = Some(run.id);
            result.detail = format!("run {} started", run.id);
        }
        Ok(Created::Existing(run)) => {
            result.outcome = AlertOutcome::Duplicate;
            result.run_id = Some(run.id);
            result.detail = format!("this alert occurrence already started run {}", run.id);
        }
        // The rules changed since the first delivery; it is still the same occurrence.
        Err(RunnerError::IdempotencyMismatch { run_id, .. }) => {
            result.outcome = AlertOutcome::Duplicate;
            result.run_id = Some(run_id);
            result.detail = format!("this alert occurrence already started run {run_id}");
        }
        Err(err @ RunnerError::Conflict { run_id, .. }) => {
            result.outcome = AlertOutcome::Busy;
            result.run_id = Some(run_id);
            result.detail = err.to_string();
        }
        Err(err @ RunnerError::NotImplemented { .. }) => {
            result.outcome = AlertOutcome::NotSupported;
            result.detail = err.to_string();
        }
        // Shutting down or the store failing: the whole delivery fails with a 5xx so that
        // Alertmanager retries; alerts that did start runs are recognised as duplicates then.
        Err(err) => return Err(err.into()),
    }
    Ok(result)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => ApiError::InvalidBody {
                detail: err.to_string(),
                field: None,
            },
            _ => ApiError::MalformedJson(format!("request body is not valid JSON: {err}")),
        }
    })
}

/// Start a run from other automation, authenticated by an HMAC-SHA256 signature.
///
/// Sign `<timestamp>.<body>` (the `X-Signature-Timestamp` value, a dot, the raw body) with the
/// shared key and send `X-Signature-256: sha256=<hex>`. The timestamp (Unix seconds) must be
/// within the replay window (default 5 minutes) of the service's clock; a request replayed
/// within the window returns the run it started the first time.
#[utoipa::path(post, path = "/webhooks/generic", tag = "webhooks", operation_id = "generic_webhook",
    request_body(content = CreateRun, description = "What to repopulate, as for POST /repopulations"),
    params(
        ("X-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`"),
        ("X-Signature-Timestamp" = String, Header, description = "Unix time in seconds when the request was signed"),
    ),
    security(("hmac_signature" = [])),
    responses(
        (status = 202, description = "Run accepted (or the run a replay of this request started)", body = Run,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Missing or bad signature, or a timestamp outside the replay window", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A service is already being repopulated; `active_run` names the run", body = Problem, content_type = PROBLEM),
        BodyProblems,
        (status = 422, description = "Unknown field or service, or service not supported", body = Problem, content_type = PROBLEM),
        (status = 404, description = "Disabled: no HMAC key is configured", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Shutting down", body = Problem, content_type = PROBLEM),
    ))]
pub async fn generic(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = chrono::Utc::now().timestamp();
    let result = generic_delivery(&state, &headers, &body, now).await;
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
    let key = state
        .webhooks
        .key
        .as_ref()
        .ok_or(WebhookError::NotConfigured)?;
    let signature = verify_signature(key, headers, body, now, state.webhooks.replay_window)?;
    let request: CreateRun = json_from_bytes(content_type(headers).as_deref(), body)?;
    // A replay within the window carries the same signature: it gets the same run.
    let replay_key = format!("generic:{}", hex::encode(signature));
    Ok(start_run(
        state,
        request,
        "webhook:generic".to_owned(),
        Some(replay_key),
    )
    .await?)
}

/// Checks `X-Signature-256` over `<timestamp>.<body>` and the timestamp's age; returns the
/// signature's bytes.
fn verify_signature(
    key: &HmacKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    window: Duration,
) -> Result<Vec<u8>, WebhookError> {
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
        return Err(WebhookError::BadSignature(format!(
            "the request was signed {age} s from now, outside the replay window of {} s",
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
        assert!(verify_signature(&key, &headers("1000", &good), body, 1100, window).is_ok());
        // Stale, and from the future.
        assert!(verify_signature(&key, &headers("1000", &good), body, 1301, window).is_err());
        assert!(verify_signature(&key, &headers("1000", &good), body, 699, window).is_err());
        // The timestamp is signed: changing it breaks the signature.
        assert!(verify_signature(&key, &headers("1001", &good), body, 1100, window).is_err());
        // Another body.
        assert!(verify_signature(&key, &headers("1000", &good), b"{}", 1100, window).is_err());
        assert!(verify_signature(&key, &HeaderMap::new(), body, 1100, window).is_err());
        assert_eq!(format!("{key:?}"), "HmacKey(<redacted>)");
    }
}
