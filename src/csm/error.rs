use std::path::PathBuf;

use reqwest::StatusCode;

use csm_wire::CsmService;

/// Everything that can go wrong talking to a CSM service. The URL is always the one requested
/// (it never contains credentials: the token travels in a header).
#[derive(Debug, thiserror::Error)]
pub enum CsmError {
    /// No HTTP answer at all: DNS, connect, TLS, timeout, or the connection dropped mid-body.
    #[error("{service} is unreachable at {url}")]
    Unreachable {
        service: CsmService,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with a non-success status. `detail` is the RFC 7807 `detail` (or
    /// `title`) of the error body when there is one, otherwise an excerpt of the body.
    #[error("{service} answered {status} for {url}: {detail}")]
    Status {
        service: CsmService,
        url: String,
        status: StatusCode,
        detail: String,
    },
    /// A success status with a body that does not match the shape in the service's spec.
    #[error("{service} sent a response that does not match its API document for {url}")]
    Decode {
        service: CsmService,
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A request we refuse to send because it would violate the service's contract.
    #[error("invalid request to {service}: {reason}")]
    InvalidRequest { service: CsmService, reason: String },
    /// The bearer token file named by `csm.token_file` cannot be read.
    #[error("cannot read the CSM token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad value in the `[csm]` configuration section; the message names the key.
    #[error("invalid [csm] configuration: {0}")]
    Config(String),
}

impl CsmError {
    /// The HTTP status, when the service answered at all.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
