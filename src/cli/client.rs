//! The `cray`-style client: calls the service's HTTP API and prints the response as a table
//! (on a terminal), TOML (otherwise, like `cray`) or JSON. Problems (`application/problem+json`)
//! go to stderr and make the process exit non-zero.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ClientOptions, EtcdArg, EtcdClustersArgs, EtcdClustersCommand, Format, RepopulationsArgs,
    RepopulationsCommand, ServicesArgs, ServicesCommand, SnapshotsArgs, SnapshotsCommand,
    follow::{Flow, Message, StepTracker, follow},
    output::{self, RunView, View, emit},
};

const DEFAULT_URL: &str = "http://localhost:8080";
/// How long an event stream may stay silent: the service sends a keep-alive every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// The exit status of a command whose reader went away, as if SIGPIPE had ended it.
const EXIT_OUTPUT_CLOSED: u8 = 141;
/// The exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
const EXIT_INTERRUPTED: u8 = 130;
/// Pages `list --all` follows at most (500 runs a page: 5 million runs).
const MAX_PAGES: usize = 10_000;

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
    /// The request did not get an answer; `cause` is the whole chain, down to e.g.
    /// "Connection refused (os error 111)".
    #[error("request to {url} failed: {cause}")]
    Http { url: String, cause: String },
    /// The service answered with an error; `detail` is its explanation.
    #[error("{}", problem_message(*.status, .title.as_deref(), .detail.as_deref()))]
    Problem {
        status: StatusCode,
        title: Option<String>,
        detail: Option<String>,
    },
    #[error("unexpected response from {url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    #[error(
        "lost the event stream of run {id} ({reason}); the run goes on: \
         `etcd-repopulator repopulations describe {id}` shows it"
    )]
    StreamLost { id: String, reason: String },
    #[error("cannot format the response as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    #[error("cannot format the response as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// Whoever read the output stopped reading (`| head -1`): nothing more to say.
    #[error("the output was closed")]
    OutputClosed,
}

impl ClientError {
    fn http(url: &reqwest::Url, err: &reqwest::Error) -> ClientError {
        ClientError::Http {
            url: url.to_string(),
            cause: error_chain(err),
        }
    }
}

pub use crate::errors::error_chain;

fn problem_message(status: StatusCode, title: Option<&str>, detail: Option<&str>) -> String {
    let title = title
        .or_else(|| status.canonical_reason())
        .unwrap_or("error");
    match detail {
        Some(detail) => format!("{title} ({}): {detail}", status.as_u16()),
        None => format!("{title} ({})", status.as_u16()),
    }
}

/// Prints `result`'s error (if any) on stderr and turns it into the process's exit status. A
/// closed output ends the command quietly.
pub fn report(result: Result<ExitCode, ClientError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(ClientError::OutputClosed) => ExitCode::from(EXIT_OUTPUT_CLOSED),
        Err(err) => {
            eprintln!("etcd-repopulator: {err}");
            ExitCode::FAILURE
        }
    }
}

fn exit_for(run: &Value) -> ExitCode {
    if run.get("state").and_then(Value::as_str) == Some("succeeded") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn repopulations(
    options: &ClientOptions,
    args: RepopulationsArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let format = output::resolve(options.format);
    let (response, view) = match args.command {
        RepopulationsCommand::Create {
            services,
            dry_run,
            reason,
            etcd,
            backup,
            confirm,
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
            // Only what was asked for: the service applies the defaults (and says what is
            // wrong with a combination, e.g. --backup without --etcd restore).
            if etcd != EtcdArg::Check {
                body.insert("etcd".to_owned(), json!(etcd.mode()));
            }
            if let Some(backup) = backup {
                body.insert("backup".to_owned(), Value::String(backup));
            }
            if !confirm.is_empty() {
                body.insert("confirm".to_owned(), json!(confirm));
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
                return client.wait(&run, format).await;
            }
            if format == Format::Table
                && let Some(id) = run.get("id").and_then(Value::as_str)
            {
                output::print(&run, format, View::Run)?;
                emit(&format!(
                    "\nFollow it: etcd-repopulator repopulations logs {id} --follow"
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            (run, View::Run)
        }
        RepopulationsCommand::Describe { id } => (
            client
                .call(Method::GET, &run_path(&id, ""), &[], None)
                .await?,
            View::Run,
        ),
        RepopulationsCommand::List {
            state,
            service,
            limit,
            cursor,
            all,
        } => {
            let query: Vec<(&str, String)> = [
                ("state", state),
                ("service", service),
                ("limit", limit.map(|n| n.to_string())),
                ("cursor", cursor),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
            let list = if all {
                client.all_pages("/repopulations", query).await?
            } else {
                client
                    .call(Method::GET, "/repopulations", &query, None)
                    .await?
            };
            (list, View::RunList)
        }
        RepopulationsCommand::Logs { id, follow } => {
            return client.logs(&id, follow, format).await;
        }
        RepopulationsCommand::Cancel { id } => (
            client
                .call(Method::POST, &run_path(&id, "/cancel"), &[], None)
                .await?,
            View::Run,
        ),
        RepopulationsCommand::Resume { id } => (
            client
                .call(Method::POST, &run_path(&id, "/resume"), &[], None)
                .await?,
            View::Run,
        ),
    };
    output::print(&response, format, view)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn services(
    options: &ClientOptions,
    args: ServicesArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let response = match args.command {
        ServicesCommand::List => client.call(Method::GET, "/services", &[], None).await?,
    };
    output::print(&response, output::resolve(options.format), View::Services)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(
    options: &ClientOptions,
    args: SnapshotsArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let (response, view) = match args.command {
        SnapshotsCommand::Create => (
            client.call(Method::POST, "/snapshots", &[], None).await?,
            View::Capture,
        ),
        SnapshotsCommand::List {
            source,
            content,
            limit,
        } => {
            let query: Vec<(&str, String)> = [
                ("source", source),
                ("content", content.then(|| "true".to_owned())),
                ("limit", limit.map(|n| n.to_string())),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
            (
                client.call(Method::GET, "/snapshots", &query, None).await?,
                View::Snapshots,
            )
        }
    };
    output::print(&response, output::resolve(options.format), view)?;
    Ok(ExitCode::SUCCESS)
}

/// `etcd-clusters list|describe|backups|drill|drills`.
pub async fn etcd_clusters(
    options: &ClientOptions,
    args: EtcdClustersArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::new(options)?;
    let format = output::resolve(options.format);
    let (path, view) = match &args.command {
        EtcdClustersCommand::Drill {
            name,
            backup,
            no_wait,
        } => {
            return client
                .drill(name, backup.as_deref(), *no_wait, format)
                .await;
        }
        EtcdClustersCommand::Drills { name, limit } => {
            let query: Vec<(&str, String)> =
                limit.iter().map(|n| ("limit", n.to_string())).collect();
            let path = format!("/etcd-clusters/{}/drills", encode(name));
            let list = client.call(Method::GET, &path, &query, None).await?;
            output::print(&list, format, View::Drills)?;
            return Ok(ExitCode::SUCCESS);
        }
        EtcdClustersCommand::List => ("/etcd-clusters".to_owned(), View::EtcdClusters),
        EtcdClustersCommand::Describe { name } => (
            format!("/etcd-clusters/{}", encode(name)),
            View::EtcdCluster,
        ),
        EtcdClustersCommand::Backups { name } => (
            format!("/etcd-clusters/{}/backups", encode(name)),
            View::Backups,
        ),
    };
    let response = client.call(Method::GET, &path, &[], None).await?;
    output::print(&response, format, view)?;
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

pub struct Client {
    http: reqwest::Client,
    /// For event streams: no bound on the whole request, only on silence.
    streaming: reqwest::Client,
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

    async fn call(
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
    async fn all_pages(
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

    /// `create --wait`: the id at once, a line per step change, then the outcome. Progress goes
    /// to stdout in the table format and to stderr otherwise (stdout is then the final run, as
    /// `describe` prints it, for scripts).
    async fn wait(&self, created: &Value, format: Format) -> Result<ExitCode, ClientError> {
        let id = created
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidResponse {
                url: self.base.to_string(),
                reason: "the created run has no id".to_owned(),
            })?
            .to_owned();
        let progress = |line: &str| -> Result<(), ClientError> {
            if format == Format::Table {
                emit(line)
            } else {
                eprintln!("{line}");
                Ok(())
            }
        };
        progress(&format!(
            "run {id} started; following it (Ctrl-C stops following, the run goes on)"
        ))?;
        let mut tracker = StepTracker::default();
        let followed = follow(self, &id, |message| {
            if let Message::Run(run) = message
                && let Ok(run) = RunView::deserialize(&run)
            {
                for line in tracker.changes(&run) {
                    progress(&line)?;
                }
            }
            Ok(Flow::Continue)
        });
        tokio::select! {
            result = followed => result?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "\nStopped following; run {id} goes on. Follow it again with \
                     `etcd-repopulator repopulations logs {id} --follow`, or see it with \
                     `etcd-repopulator repopulations describe {id}`."
                );
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
        let run = self
            .call(Method::GET, &run_path(&id, ""), &[], None)
            .await?;
        if format == Format::Table {
            emit("")?;
        }
        output::print(&run, format, View::Run)?;
        Ok(exit_for(&run))
    }

    /// `etcd-clusters drill`: starts the drill, then (unless `no_wait`) asks for it once a
    /// second until it has ended; prints it, and exits 0 only if it passed.
    async fn drill(
        &self,
        name: &str,
        backup: Option<&str>,
        no_wait: bool,
        format: Format,
    ) -> Result<ExitCode, ClientError> {
        let path = format!("/etcd-clusters/{}/drills", encode(name));
        let body = backup.map(|backup| json!({ "backup": backup }));
        let mut drill = self.call(Method::POST, &path, &[], body).await?;
        let id = drill
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::InvalidResponse {
                url: path.clone(),
                reason: "the started drill has no id".to_owned(),
            })?
            .to_owned();
        if !no_wait {
            if format != Format::Table {
                eprintln!("drill {id} started; waiting for its result");
            }
            let one = format!("{path}/{}", encode(&id));
            let waited = async {
                while drill.get("state").and_then(Value::as_str) == Some("running") {
                    // The service has no event stream for drills: ask again in a second.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    drill = self.call(Method::GET, &one, &[], None).await?;
                }
                Ok::<_, ClientError>(())
            };
            tokio::select! {
                result = waited => result?,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!(
                        "\nStopped waiting; drill {id} goes on. See it with \
                         `etcd-repopulator etcd-clusters drills {name}`."
                    );
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
            }
        }
        output::print(&drill, format, View::Drill)?;
        let state = drill.get("state").and_then(Value::as_str);
        Ok(if no_wait || state == Some("passed") {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// `logs`: the stored log (the stream sends it before the first `run`), or with `follow`
    /// everything until the run stops. Lines as text, or with `--format json` one JSON object
    /// per line.
    async fn logs(
        &self,
        id: &str,
        follow_on: bool,
        format: Format,
    ) -> Result<ExitCode, ClientError> {
        let mut end_state: Option<String> = None;
        follow(self, id, |message| match message {
            Message::Log(line) => {
                if format == Format::Json {
                    emit(&serde_json::to_string(&json!({
                        "id": line.id, "at": line.at, "level": line.level,
                        "service": line.service, "step": line.step, "message": line.message,
                    }))?)?;
                } else {
                    emit(&line.render())?;
                }
                Ok(Flow::Continue)
            }
            Message::Run(_) if !follow_on => Ok(Flow::Stop),
            Message::Run(_) => Ok(Flow::Continue),
            Message::End(end) => {
                end_state = end.get("state").and_then(Value::as_str).map(str::to_owned);
                Ok(Flow::Stop)
            }
        })
        .await?;
        if let Some(state) = end_state
            && format != Format::Json
        {
            eprintln!("run {id} ended: {state}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The service's error answer as a [`ClientError::Problem`].
fn problem(status: StatusCode, bytes: &[u8]) -> ClientError {
    let problem = serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    let text = |key: &str| problem.get(key).and_then(Value::as_str).map(str::to_owned);
    let detail = text("detail").or_else(|| {
        let raw = String::from_utf8_lossy(bytes).trim().to_owned();
        (!raw.is_empty()).then_some(raw)
    });
    ClientError::Problem {
        status,
        title: text("title"),
        detail,
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

    #[test]
    fn problems_show_title_status_and_detail() {
        let err = ClientError::Problem {
            status: StatusCode::BAD_REQUEST,
            title: Some("Invalid id".to_owned()),
            detail: Some("\"x\" is not a run id".to_owned()),
        };
        assert_eq!(err.to_string(), "Invalid id (400): \"x\" is not a run id");
    }

    #[test]
    fn the_error_chain_names_the_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            error_chain(&err),
            "error sending request: Connection refused (os error 111)"
        );
    }
}
