//! The one place that knows how to talk HTTP to a CSM service: URL building, headers, the
//! bearer token, retries of idempotent requests, and mapping failures to [`CsmError`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use csm_wire::CsmService;

use super::{
    config::{CsmConfig, RetryConfig},
    error::CsmError,
};

const USER_AGENT: &str = concat!("etcd-repopulator/", env!("CARGO_PKG_VERSION"));
/// How much of a non-JSON error body ends up in [`CsmError::Status`]'s detail.
const BODY_EXCERPT_CHARS: usize = 200;

/// What all service clients share: one connection pool, the token source and the retry policy.
#[derive(Debug)]
pub(crate) struct Shared {
    http: reqwest::Client,
    token_file: Option<PathBuf>,
    retry: RetryConfig,
}

impl Shared {
    pub(crate) fn new(cfg: &CsmConfig) -> Result<Arc<Self>, CsmError> {
        if cfg.retry.max_attempts == 0 {
            return Err(CsmError::Config(
                "csm.retry.max_attempts must be at least 1".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| CsmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let shared = Self {
            http,
            token_file: cfg.token_file.clone(),
            retry: cfg.retry.clone(),
        };
        // Read once now so that a missing or empty token file fails at start, not mid-run.
        if let Some(path) = &shared.token_file {
            parse_token(path, std::fs::read_to_string(path))?;
        }
        Ok(Arc::new(shared))
    }

    /// The token is read from its file on every request rather than cached, because the file is
    /// a mounted Secret that is rotated underneath us; it is a few hundred bytes.
    async fn current_token(&self) -> Result<Option<String>, CsmError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        parse_token(path, tokio::fs::read_to_string(path).await).map(Some)
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_attempts.saturating_sub(1))
            .with_total_delay(Some(self.retry.max_total_delay))
            .with_jitter()
    }
}

fn parse_token(path: &Path, read: std::io::Result<String>) -> Result<String, CsmError> {
    let token_error = |source| CsmError::Token {
        path: path.to_owned(),
        source,
    };
    let raw = read.map_err(token_error)?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(token_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token file is empty",
        )));
    }
    Ok(token.to_owned())
}

/// One service's base URL plus the shared machinery. Service clients wrap one of these and only
/// name paths and types.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    service: CsmService,
    base: Url,
    shared: Arc<Shared>,
}

impl Endpoint {
    pub(crate) fn new(
        service: CsmService,
        base: &str,
        shared: Arc<Shared>,
    ) -> Result<Self, CsmError> {
        let bad = |why: String| CsmError::Config(format!("csm.{service}_url = {base:?}: {why}"));
        let base = Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("must be an http or https URL".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("must not have a query or fragment".into()));
        }
        Ok(Self {
            service,
            base,
            shared,
        })
    }

    pub(crate) fn service(&self) -> CsmService {
        self.service
    }

    /// `base` + path segments; each segment is percent-encoded, so a template name with odd
    /// characters cannot escape into another path.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // http(s) URLs always have segments (checked in `new`).
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// GET and decode a JSON body; any non-2xx status is an error.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, CsmError> {
        let url = self.url(segments, query);
        let (status, body) = self.send(Method::GET, &url, None).await?;
        self.decode(url, status, &body)
    }

    /// GET where 404 means "does not exist" rather than an error.
    pub(crate) async fn get_json_optional<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Option<T>, CsmError> {
        let url = self.url(segments, &[]);
        let (status, body) = self.send(Method::GET, &url, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.decode(url, status, &body).map(Some)
    }

    /// PUT a JSON body and decode the JSON answer.
    pub(crate) async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, CsmError> {
        let url = self.url(segments, &[]);
        let payload = serde_json::to_vec(body).map_err(|e| CsmError::InvalidRequest {
            service: self.service,
            reason: format!("cannot serialize the request body: {e}"),
        })?;
        let (status, body) = self.send(Method::PUT, &url, Some(payload)).await?;
        self.decode(url, status, &body)
    }

    /// POST without a body (an action such as FAS's `/loader/nexus`) and decode the JSON
    /// answer. Retried like the others on transient answers: a busy loader answers 429.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<T, CsmError> {
        let url = self.url(segments, &[]);
        let (status, body) = self.send(Method::POST, &url, None).await?;
        self.decode(url, status, &body)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        url: Url,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, CsmError> {
        if !status.is_success() {
            return Err(self.status_error(&url, status, body));
        }
        serde_json::from_slice(body).map_err(|source| CsmError::Decode {
            service: self.service,
            url: url.into(),
            source,
        })
    }

    fn status_error(&self, url: &Url, status: StatusCode, body: &[u8]) -> CsmError {
        CsmError::Status {
            service: self.service,
            url: url.to_string(),
            status,
            detail: problem_detail(body),
        }
    }

    /// Sends a request, retrying transient failures (GET and PUT are idempotent; the one POST,
    /// FAS's `/loader/nexus`, only starts a reload that is harmless to start twice).
    /// Returns the final status and body; transient statuses that persist after the last retry
    /// come back as `CsmError::Status`.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), CsmError> {
        let attempt = || self.attempt(method.clone(), url, body.clone());
        attempt
            .retry(self.shared.backoff())
            .when(is_transient)
            .notify(|err: &CsmError, delay: Duration| {
                tracing::warn!(service = %self.service, %url, error = %err, ?delay, "retrying CSM request");
            })
            .await
    }

    async fn attempt(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), CsmError> {
        tracing::debug!(service = %self.service, %method, %url, "CSM request");
        let mut request = self.shared.http.request(method, url.clone());
        if let Some(token) = self.shared.current_token().await? {
            // bearer_auth marks the header sensitive, so reqwest never prints it either.
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let unreachable = |source| CsmError::Unreachable {
            service: self.service,
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if is_transient_status(status) {
            return Err(self.status_error(url, status, &bytes));
        }
        Ok((status, bytes.to_vec()))
    }
}

fn is_transient(err: &CsmError) -> bool {
    match err {
        CsmError::Unreachable { .. } => true,
        CsmError::Status { status, .. } => is_transient_status(*status),
        _ => false,
    }
}

/// What a CSM service answers while it restarts: Istio's "no healthy upstream" (503), gateway
/// errors (502/504) and rate limiting (429).
fn is_transient_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The RFC 7807 `detail` (or `title`) of an error body, else the start of the body as text.
fn problem_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Problem {
        detail: Option<String>,
        title: Option<String>,
    }
    if let Ok(problem) = serde_json::from_slice::<Problem>(body)
        && let Some(text) = problem.detail.or(problem.title).filter(|t| !t.is_empty())
    {
        return text;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut excerpt: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if text.chars().nth(BODY_EXCERPT_CHARS).is_some() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_detail_prefers_detail_then_title_then_body() {
        assert_eq!(
            problem_detail(br#"{"type":"about:blank","detail":"boom","title":"Bad"}"#),
            "boom"
        );
        assert_eq!(
            problem_detail(br#"{"title":"Service Unavailable"}"#),
            "Service Unavailable"
        );
        assert_eq!(
            problem_detail(b"no healthy upstream"),
            "no healthy upstream"
        );
        assert_eq!(problem_detail(b""), "(empty body)");
        let long = "x".repeat(500);
        assert_eq!(
            problem_detail(long.as_bytes()).chars().count(),
            BODY_EXCERPT_CHARS + 1
        );
    }

    #[test]
    fn url_appends_encoded_segments_to_the_base_path() {
        let shared = Shared::new(&CsmConfig::default()).expect("default config is valid");
        let ep = Endpoint::new(CsmService::Hsm, "http://cray-smd/hsm/v2/", shared).expect("valid");
        let url = ep.url(
            &["State", "Components"],
            &[("type", "Node".into()), ("role", "Compute".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://cray-smd/hsm/v2/State/Components?type=Node&role=Compute"
        );
        let url = ep.url(&["a/b c"], &[]);
        assert_eq!(url.as_str(), "http://cray-smd/hsm/v2/a%2Fb%20c");
    }

    #[test]
    fn bad_base_urls_name_the_key() {
        let shared = Shared::new(&CsmConfig::default()).expect("default config is valid");
        let err = Endpoint::new(CsmService::Bos, "cray-bos", shared).expect_err("not a URL");
        assert!(err.to_string().contains("csm.bos_url"), "{err}");
    }
}
