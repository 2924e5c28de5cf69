//! What a fan-out reports: per host, how the command ended and the tail of its output, and
//! the problems that stop a whole fan-out before any host is contacted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::known_hosts::KnownHostsError;

/// How many trailing lines of stdout and of stderr are kept per host.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, Error)]
pub enum FanoutError {
    #[error("cannot load SSH identity {path}: {reason}")]
    Identity {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    #[error("invalid SSH configuration: {0}")]
    InvalidConfig(String),
    /// No node can be reached (see `SshConfig::unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

/// Which bound was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// TCP connect, SSH handshake and authentication.
    Connect,
    /// Running the command.
    Command,
}

/// What happened on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum HostOutcome {
    /// The command ran and exited with this status.
    Exited(u32),
    /// The command was killed by this signal (name without the SIG prefix).
    Signal(String),
    /// No SSH session could be set up: DNS, TCP or handshake failure.
    ConnectFailed(String),
    /// The server's host key is unknown (and unknown keys are not accepted), differs from
    /// known_hosts, or is revoked. The command was not sent.
    HostKeyRejected(String),
    AuthFailed(String),
    TimedOut(TimeoutPhase),
    /// The session broke after authentication (channel refused, connection lost, no exit
    /// status); the command may or may not have run.
    SessionFailed(String),
    /// The fan-out was cancelled before this host finished (or started).
    Cancelled,
}

impl HostOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, HostOutcome::Exited(0))
    }
}

impl fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostOutcome::Exited(status) => write!(f, "exited with status {status}"),
            HostOutcome::Signal(signal) => write!(f, "killed by signal {signal}"),
            HostOutcome::ConnectFailed(reason) => f.write_str(reason),
            HostOutcome::HostKeyRejected(reason) => write!(f, "host key rejected: {reason}"),
            HostOutcome::AuthFailed(reason) => write!(f, "authentication failed: {reason}"),
            HostOutcome::TimedOut(TimeoutPhase::Connect) => f.write_str("timed out connecting"),
            HostOutcome::TimedOut(TimeoutPhase::Command) => f.write_str("command timed out"),
            HostOutcome::SessionFailed(reason) => f.write_str(reason),
            HostOutcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    pub host: String,
    pub outcome: HostOutcome,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// One result per distinct input host, in input order.
    pub results: Vec<HostResult>,
    pub started: DateTime<Utc>,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl FanoutReport {
    pub fn failed(&self) -> impl Iterator<Item = &HostResult> {
        self.results.iter().filter(|r| !r.outcome.is_success())
    }

    pub fn all_succeeded(&self) -> bool {
        self.failed().next().is_none()
    }

    /// One line for logs and step summaries, naming the first few failures.
    pub fn summary(&self) -> String {
        const NAMED: usize = 5;
        let total = self.results.len();
        let failed: Vec<&HostResult> = self.failed().collect();
        if failed.is_empty() {
            return format!("all {total} hosts succeeded");
        }
        let mut names: Vec<String> = failed
            .iter()
            .take(NAMED)
            .map(|r| format!("{} {}", r.host, r.outcome))
            .collect();
        if failed.len() > NAMED {
            names.push(format!("and {} more", failed.len() - NAMED));
        }
        format!(
            "{} of {total} hosts failed: {}",
            failed.len(),
            names.join(", ")
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of a host's output, streamed while the fan-out runs (the CLI prints these the way
/// pdsh does, `host: line`).
#[derive(Clone, Debug)]
pub struct OutputLine {
    pub host: Arc<str>,
    pub stream: OutputStream,
    pub line: String,
}
