//! What every handler can reach.

use std::sync::Arc;

use super::{auth::Authenticator, webhook_setup::Webhooks};
use crate::{drills::Drills, runner::Runner, store::Store};

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub runner: Runner,
    /// Whether a Kubernetes client is configured (for `/readyz`).
    pub cluster_configured: bool,
    /// Who may call the API (`[auth]`).
    pub auth: Authenticator,
    /// Keys and rules of the webhooks (`[webhooks]`).
    pub webhooks: Webhooks,
    /// Restore drills of the etcd clusters' backups.
    pub drills: Drills,
}

pub type SharedState = Arc<AppState>;
