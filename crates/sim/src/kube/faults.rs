//! Fault injection for reliability tests: latency on every API call, the next N requests
//! failing with 429 (with Retry-After) or 500, and dropping every open watch stream.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::watch;

use super::error::ApiError;

/// What an injected failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// 429 TooManyRequests with `Retry-After` (the API priority-and-fairness answer).
    TooManyRequests { retry_after_seconds: u64 },
    /// 500 InternalError.
    InternalError,
}

#[derive(Debug, Clone)]
struct FailureRule {
    remaining: u32,
    path_contains: Option<String>,
    kind: FailureKind,
}

#[derive(Debug, Default)]
struct FaultState {
    latency: Duration,
    rules: Vec<FailureRule>,
}

/// Clonable handle on the simulator's faults.
#[derive(Clone, Debug)]
pub struct FaultInjector {
    state: Arc<Mutex<FaultState>>,
    /// Bumped to make every open watch stream end.
    watch_epoch: Arc<watch::Sender<u64>>,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            watch_epoch: Arc::new(watch::channel(0).0),
        }
    }
}

impl FaultInjector {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `latency` before every Kubernetes API call is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next `count` requests whose path contains `path_contains` (any path if `None`)
    /// fail with `kind`.
    pub fn fail_next(&self, count: u32, path_contains: Option<&str>, kind: FailureKind) {
        self.lock().rules.push(FailureRule {
            remaining: count,
            path_contains: path_contains.map(str::to_string),
            kind,
        });
    }

    /// Shorthand: the next `count` matching requests answer 500.
    pub fn fail_next_500(&self, count: u32, path_contains: Option<&str>) {
        self.fail_next(count, path_contains, FailureKind::InternalError);
    }

    /// Shorthand: the next `count` matching requests answer 429 with `Retry-After: 1`.
    pub fn fail_next_429(&self, count: u32, path_contains: Option<&str>) {
        self.fail_next(
            count,
            path_contains,
            FailureKind::TooManyRequests {
                retry_after_seconds: 1,
            },
        );
    }

    /// Ends every open watch stream now (clients see the stream close and must re-watch).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Removes all latency and pending failures.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    pub(crate) fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }

    fn take_failure(&self, path: &str) -> (Duration, Option<FailureKind>) {
        let mut st = self.lock();
        let latency = st.latency;
        let hit = st.rules.iter_mut().find(|r| {
            r.remaining > 0 && r.path_contains.as_deref().is_none_or(|p| path.contains(p))
        });
        let kind = hit.map(|r| {
            r.remaining -= 1;
            r.kind
        });
        st.rules.retain(|r| r.remaining > 0);
        (latency, kind)
    }
}

/// Middleware on the Kubernetes routes.
pub async fn middleware(State(faults): State<FaultInjector>, req: Request, next: Next) -> Response {
    let (latency, failure) = faults.take_failure(req.uri().path());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match failure {
        Some(FailureKind::TooManyRequests {
            retry_after_seconds,
        }) => ApiError::TooManyRequests {
            message: "Too many requests, please try again later.".into(),
            retry_after: retry_after_seconds,
        }
        .into_response(),
        Some(FailureKind::InternalError) => {
            ApiError::Internal("injected fault".into()).into_response()
        }
        None => next.run(req).await,
    }
}

/// Body of `POST /sim/faults`, e.g.
/// `{"latency_ms": 50, "fail": {"count": 2, "status": 429, "path_contains": "/jobs"}, "drop_watches": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default)]
    fail: Option<FailSpec>,
    #[serde(default)]
    drop_watches: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailSpec {
    count: u32,
    status: u16,
    #[serde(default)]
    path_contains: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<u64>,
}

pub async fn post_faults(
    State(faults): State<FaultInjector>,
    Json(req): Json<FaultRequest>,
) -> Response {
    if let Some(ms) = req.latency_ms {
        faults.set_latency(Duration::from_millis(ms));
    }
    if let Some(f) = req.fail {
        let kind = match f.status {
            429 => FailureKind::TooManyRequests {
                retry_after_seconds: f.retry_after_seconds.unwrap_or(1),
            },
            500 => FailureKind::InternalError,
            other => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("fail.status must be 429 or 500, not {other}\n"),
                )
                    .into_response();
            }
        };
        faults.fail_next(f.count, f.path_contains.as_deref(), kind);
    }
    if req.drop_watches {
        faults.drop_watches();
    }
    StatusCode::NO_CONTENT.into_response()
}

pub async fn delete_faults(State(faults): State<FaultInjector>) -> StatusCode {
    faults.clear();
    StatusCode::NO_CONTENT
}
