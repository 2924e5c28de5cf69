//! What can go wrong in a client command: the service's problem answers, connections, the
//! client config, and the output.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

pub use crate::errors::error_chain;

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
    #[error("no run id starts with {prefix:?} (`etcd-repopulator repopulations list` shows them)")]
    NoSuchRun { prefix: String },
    #[error(
        "{} runs' ids start with {prefix:?}: {}; give more of the id",
        .ids.len(),
        .ids.join(", ")
    )]
    AmbiguousRun { prefix: String, ids: Vec<String> },
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
    pub(super) fn http(url: &reqwest::Url, err: &reqwest::Error) -> ClientError {
        ClientError::Http {
            url: url.to_string(),
            cause: error_chain(err),
        }
    }
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

/// The service's error answer as a [`ClientError::Problem`].
pub(super) fn problem(status: StatusCode, bytes: &[u8]) -> ClientError {
    let problem = serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    let text = |key: &str| problem.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut detail = text("detail").or_else(|| {
        let raw = String::from_utf8_lossy(bytes).trim().to_owned();
        (!raw.is_empty()).then_some(raw)
    });
    // The clusters a destructive run must confirm, as the flags that confirm them.
    if let Some(needed) = problem.get("confirm").and_then(Value::as_array)
        && !needed.is_empty()
    {
        let flags: Vec<String> = needed
            .iter()
            .filter_map(Value::as_str)
            .map(|cluster| format!("--confirm {cluster}"))
            .collect();
        detail = Some(format!(
            "{}\n  add to the command: {}",
            detail.unwrap_or_default(),
            flags.join(" ")
        ));
    }
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
