//! The `cray`-style client: calls the service's HTTP API and prints the response as TOML (the
//! default, like `cray`) or JSON. Problems (`application/problem+json`) go to stderr and make
//! the process exit non-zero.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ClientOptions, EtcdClustersArgs, EtcdClustersCommand, Format, RepopulationsArgs,
    RepopulationsCommand, ServicesArgs, ServicesCommand,
};

const DEFAULT_URL: &str = "http://localhost:8080";
/// How often `create --wait` looks at the run: often enough to feel live to a person.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Run states after which nothing more happens without a person.
const TERMINAL_STATES: &[&str] = &[
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "action_required",
];

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read client config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid client config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    /// The service answered with an error; `detail` is its explanation.
    #[error("{}", problem_message(*.status, .title.as_deref(), .detail.as_deref()))]
    Problem {
        status: StatusCode,
        title: Option<String>,
        detail: Option<String>,
    },
    #[error("unexpected response from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    #[error("cannot format the response as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    #[error("cannot format the response as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn problem_message(status: StatusCode, title: Option<&str>, detail: Option<&str>) -> String {
    let title = title
        .or_else(|| status.canonical_reason())
        .unwrap_or("error");
    match detail {
        Some(detail) => format!("{title} ({}): {detail}", status.as_u16()),
        None => format!("{title} ({})", status.as_u16()),
    }
}

/// Prints `result`'s error (if any) on stderr and turns it into the process's exit status.
pub fn report(result: Result<ExitCode, ClientError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("etcd-repopulator: {err}");
            ExitCode::FAILURE
        }
    }
}

pub async fn repopulations(args: RepopulationsArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let format = args.client.format;
    let response = match args.command {
        RepopulationsCommand::Create {
            services,
            dry_run,
            reason,
            wait,
        } => {
            let mut body = Map::new();
            body.insert("services".to_owned(), json!(services));
            if dry_run {
                body.insert("dry_run".to_owned(), Value::Bool(true));
            }
            if let Some(reason) = reason {
                body.insert("reason".to_owned(), Value::String(reason));
            }
            let run = client
                .call(
                    Method::POST,
                    "/repopulations",
                    &[],
                    Some(Value::Object(body)),
                )
                .await?;
            if wait {
                let run = client.wait_for(&run).await?;
                print(&run, format)?;
                let succeeded = run.get("state").and_then(Value::as_str) == Some("succeeded");
                return Ok(if succeeded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            run
        }
        RepopulationsCommand::Describe { id } => {
            client
                .call(Method::GET, &run_path(&id, ""), &[], None)
                .await?
        }
        RepopulationsCommand::List {
            state,
            service,
            limit,
        } => {
            let query: Vec<(&str, String)> = [
                ("state", state),
                ("service", service),
                ("limit", limit.map(|n| n.to_string())),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
            client
                .call(Method::GET, "/repopulations", &query, None)
                .await?
        }
        RepopulationsCommand::Cancel { id } => {
            client
                .call(Method::POST, &run_path(&id, "/cancel"), &[], None)
                .await?
        }
        RepopulationsCommand::Resume { id } => {
            client
                .call(Method::POST, &run_path(&id, "/resume"), &[], None)
                .await?
        }
    };
    print(&response, format)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn services(args: ServicesArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let response = match args.command {
        ServicesCommand::List => client.call(Method::GET, "/services", &[], None).await?,
    };
    print(&response, args.client.format)?;
    Ok(ExitCode::SUCCESS)
}

/// `etcd-clusters list|describe`.
pub async fn etcd_clusters(args: EtcdClustersArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let path = match &args.command {
        EtcdClustersCommand::List => "/etcd-clusters".to_owned(),
        EtcdClustersCommand::Describe { name } => format!("/etcd-clusters/{}", encode(name)),
    };
    let response = client.call(Method::GET, &path, &[], None).await?;
    print(&response, args.client.format)?;
    Ok(ExitCode::SUCCESS)
}

/// One path segment, percent-encoded, so whatever a user typed reaches the server as one
/// segment (and is judged there).
fn encode(segment: &str) -> String {
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
fn run_path(id: &str, suffix: &str) -> String {
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

struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
}

impl Client {
    /// Flags and environment win over the config file, which wins over the defaults.
    fn new(options: &ClientOptions) -> Result<Client, ClientError> {
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
        let http = reqwest::Client::builder()
            .user_agent(concat!("etcd-repopulator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        Ok(Client {
            http,
            base,
            token: options.token.clone().or(file.token),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ClientError::InvalidUrl {
                    url: format!("{}{path}", self.base),
                    reason: e.to_string(),
                })?;
        let mut request = self.http.request(method, url.clone()).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let http_error = |source| ClientError::Http {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_error)?;
        let parsed = serde_json::from_slice::<Value>(&bytes);
        if !status.is_success() {
            let problem = parsed.unwrap_or(Value::Null);
            let text = |key: &str| problem.get(key).and_then(Value::as_str).map(str::to_owned);
            let detail = text("detail").or_else(|| {
                let raw = String::from_utf8_lossy(&bytes).trim().to_owned();
                (!raw.is_empty()).then_some(raw)
            });
            return Err(ClientError::Problem {
                status,
                title: text("title"),
                detail,
            });
        }
        parsed.map_err(|e| ClientError::InvalidResponse {
            url: url.to_string(),
            reason: format!("body is not JSON: {e}"),
        })
    }

    /// Polls the run until it reaches a terminal state and returns it as `describe` shows it.
    async fn wait_for(&self, run: &Value) -> Result<Value, ClientError> {
        let id =
            run.get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| ClientError::InvalidResponse {
                    url: self.base.to_string(),
                    reason: "the created run has no id".to_owned(),
                })?;
        let path = run_path(id, "");
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let run = self.call(Method::GET, &path, &[], None).await?;
            let state = run.get("state").and_then(Value::as_str).unwrap_or("");
            if TERMINAL_STATES.contains(&state) {
                return Ok(run);
            }
        }
    }
}

fn print(value: &Value, format: Format) -> Result<(), ClientError> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Toml => to_toml(value)?,
    };
    println!("{}", text.trim_end());
    Ok(())
}

/// Renders a JSON response as a TOML document. TOML has no null, so nulls are dropped; a
/// top-level list (`{"items": [...]}`) comes out as `[[items]]` tables, like cray's
/// `[[results]]`. A response that is not an object is put under `result`.
pub fn to_toml(value: &Value) -> Result<String, toml::ser::Error> {
    let table = match json_to_toml(value) {
        Some(toml::Value::Table(table)) => table,
        Some(other) => toml::Table::from_iter([("result".to_owned(), other)]),
        None => toml::Table::new(),
    };
    toml::to_string(&table)
}

fn json_to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            // Beyond i64 (TOML integers are 64-bit signed) or fractional.
            None => match n.as_f64() {
                Some(f) => toml::Value::Float(f),
                None => toml::Value::String(n.to_string()),
            },
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(key, value)| Some((key.clone(), json_to_toml(value)?)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_drops_nulls_and_lists_items_as_tables() {
        let response = json!({
            "items": [
                {"id": "a", "state": "succeeded", "message": null, "services": [{"service": "reds"}]},
                {"id": "b", "state": "running", "attempt": 2}
            ],
            "next_cursor": null
        });
        let text = to_toml(&response).unwrap();
        assert!(text.contains("[[items]]"), "{text}");
        assert!(!text.contains("message"), "{text}");
        assert!(!text.contains("next_cursor"), "{text}");
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["items"][1]["attempt"].as_integer(), Some(2));
        assert_eq!(
            back["items"][0]["services"][0]["service"].as_str(),
            Some("reds")
        );
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(
            run_path("a/b c", "/cancel"),
            "/repopulations/a%2Fb%20c/cancel"
        );
    }

    #[test]
    fn problems_show_title_status_and_detail() {
        let err = ClientError::Problem {
            status: StatusCode::BAD_REQUEST,
            title: Some("Invalid id".to_owned()),
            detail: Some("\"x\" is not a run id".to_owned()),
        };
        assert_eq!(err.to_string(), "Invalid id (400): \"x\" is not a run id");
    }
}
