//! Webhooks that start runs: Prometheus Alertmanager's (a resolved etcd alert means the
//! cluster was rebuilt and is healthy again, so its services need their data back) and a
//! generic one for other automation, authenticated by an HMAC-SHA256 signature of its body.

pub mod alertmanager;
pub mod generic;

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::problem::{ApiError, ErrorReport, Problem, problem_response};
use crate::{
    config::{AlertmanagerConfig, WebhooksConfig},
    metrics::WebhookOutcome,
    model::EtcdMode,
    runner::RunnerError,
};

pub const SIGNATURE_HEADER: &str = "x-signature-256";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Keys shorter than this are refused at start: an HMAC key is only as strong as it is long.
const MIN_KEY_LEN: usize = 16;

/// The HMAC key, kept out of Debug output and logs.
#[derive(Clone)]
pub struct HmacKey(pub(super) Vec<u8>);

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
    /// `webhooks.recover_clusters`: the etcd mode webhook runs may use on each cluster listed.
    pub recover_clusters: BTreeMap<String, EtcdMode>,
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
            recover_clusters: config.recover_clusters.clone(),
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
