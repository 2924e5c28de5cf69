//! What a primitive could not do, with enough context for a person at 3 a.m.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{action} failed: {}{}", describe_kube_error(.source), retried(*.retries))]
    Api {
        action: String,
        #[source]
        source: kube::Error,
        /// How often the request was retried before this (transient) error was given up on.
        retries: u32,
    },
    #[error("no pods match {selector:?} in namespace {namespace}; is the service deployed?")]
    NoPods { selector: String, namespace: String },
    #[error(
        "pods {pods:?} have no controller that would replace them; refusing to delete them \
         (delete them by hand if that is really wanted)"
    )]
    Unowned { pods: Vec<String> },
    #[error("timed out after {} waiting for {waiting_for}; last seen: {last_seen}", humantime::format_duration(*after))]
    Timeout {
        after: Duration,
        waiting_for: String,
        last_seen: String,
    },
    #[error("unexpected object from the API server: {0}")]
    Invalid(String),
    #[error("cancelled while waiting for {waiting_for}")]
    Cancelled { waiting_for: String },
}

fn retried(retries: u32) -> String {
    match retries {
        0 => String::new(),
        n => format!(" (after {n} retries)"),
    }
}

impl ClusterError {
    /// The API server's answer when this is one (`404`, `409`, ...).
    pub fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            ClusterError::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }
}

/// A Kubernetes error as a person reads it: `404 NotFound: jobs.batch "x" not found` for the
/// API server's answers, and the error with its causes (`... connection refused`) otherwise.
pub fn describe_kube_error(err: &kube::Error) -> String {
    if let kube::Error::Api(status) = err {
        return match (status.reason.as_str(), status.message.as_str()) {
            ("", "") => format!("{}", status.code),
            ("", message) => format!("{}: {message}", status.code),
            (reason, "") => format!("{} {reason}", status.code),
            (reason, message) => format!("{} {reason}: {message}", status.code),
        };
    }
    crate::errors::error_chain(err)
}
