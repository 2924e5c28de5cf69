//! The HTTP client of the service's API: where it is (flags, environment, the client config
//! file), its token, and the calls the commands make (JSON, every page of a list, the event
//! stream of a run). Problems (`application/problem+json`) become [`ClientError::Problem`].

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::{Method, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ClientOptions,
    error::{ClientError, error_chain, problem},
};

const DEFAULT_URL: &str = "http://localhost:8080";
/// How long an event stream may stay silent: the service sends a keep-alive every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Pages `list --all` follows at most (500 runs a page: 5 million runs).
const MAX_PAGES: usize = 10_000;

/// One path segment, percent-encoded, so whatever a user typed reaches the server as one
/// segment (and is judged there).
pub(super) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `/repopulations/{id}{suffix}`, with the id percent-encoded so that whatever a user typed
/// reaches the server as one path segment (and is judged there).
pub(super) fn run_path(id: &str, suffix: &str) -> String {
    format!("/repopulations/{}{suffix}", encode(id))
}

/// The client config file: `url` and `token`, both optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    url: Option<String>,
    token: Option<String>,
}

impl ClientConfig {
    /// Reads `explicit` (which must exist), or the default file if there is one.
    fn load(explicit: Option<&Path>) -> Result<ClientConfig, ClientError> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None => match default_config_path() {
                Some(path) if path.is_file() => path,
                _ => return Ok(ClientConfig::default()),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ClientError::ConfigRead {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ClientError::ConfigParse {
            path,
            source: Box::new(source),
        })
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("etcd-repopulator").join("client.toml"))
}

pub struct Client {
    http: reqwest::Client,
    /// For event streams: no bound on the whole request, only on silence.
    streaming: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
}

impl Client {
    /// Flags and environment win over the config file, which wins over the defaults.
    pub(super) fn new(options: &ClientOptions) -> Result<Client, ClientError> {
        let file = ClientConfig::load(options.client_config.as_deref())?;
        let url = options
            .url
            .clone()
            .or(file.url)
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let mut base = reqwest::Url::parse(&url).map_err(|e| ClientError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::InvalidUrl {
                url,
                reason: "the scheme must be http or https".to_owned(),
            });
        }
        // A base with a path prefix (behind a gateway) keeps it: `join` needs the trailing slash.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("etcd-repopulator/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
        };
        let build_error = |err: reqwest::Error| ClientError::Http {
            url: url.clone(),
            cause: error_chain(&err),
        };
        let http = builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(build_error)?;
        let streaming = builder()
            .read_timeout(STREAM_READ_TIMEOUT)
            .build()
            .map_err(build_error)?;
        Ok(Client {
            http,
            streaming,
            base,
            token: options.token.clone().or(file.token),
        })
    }

    /// The service's base URL.
    pub(super) fn base(&self) -> &reqwest::Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, ClientError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::InvalidUrl {
                url: format!("{}{path}", self.base),
                reason: e.to_string(),
            })
    }

    fn request(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: &reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let request = http.request(method, url.clone());
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path)?;
        let mut request = self.request(&self.http, method, &url).query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::http(&url, &e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::http(&url, &e))?;
        if !status.is_success() {
            return Err(problem(status, &bytes));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| ClientError::InvalidResponse {
            url: url.to_string(),
            reason: format!("body is not JSON: {e}"),
        })
    }

    /// Opens the run's event stream, after the log line `after` when given.
    pub(super) async fn events(
        &self,
        id: &str,
        after: Option<i64>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(&run_path(id, "/events"))?;
        let mut request = self
            .request(&self.streaming, Method::GET, &url)
            .header(header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::http(&url, &e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(problem(status, &bytes));
        }
        Ok(response)
    }

    /// Every page of a cursor-paginated list, as one `{"items": [...]}`.
    pub(super) async fn all_pages(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
    ) -> Result<Value, ClientError> {
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut page = self.call(Method::GET, path, &query, None).await?;
            match page.get_mut("items").map(Value::take) {
                Some(Value::Array(page_items)) => items.extend(page_items),
                _ => {
                    return Err(ClientError::InvalidResponse {
                        url: path.to_owned(),
                        reason: "a page without items".to_owned(),
                    });
                }
            }
            let next = page.get("next_cursor").and_then(Value::as_str);
            let current = query.iter().find(|(k, _)| *k == "cursor").map(|(_, v)| v);
            match next {
                // A cursor that does not move would loop forever.
                Some(next) if Some(&next.to_owned()) != current => {
                    query.retain(|(k, _)| *k != "cursor");
                    query.push(("cursor", next.to_owned()));
                }
                _ => break,
            }
        }
        Ok(json!({ "items": items }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(
            run_path("a/b c", "/cancel"),
            "/repopulations/a%2Fb%20c/cancel"
        );
    }
}
