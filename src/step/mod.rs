//! What a step is given and what it gives back, for the steps of every service and for the
//! recovery sequences alike: its context ([`StepContext`]: the cluster, the clients, the run's
//! cancel tokens, the [`Journal`] it records into), its result ([`StepOutcome`]) and its error
//! ([`StepError`]). The runner implements [`Journal`] on the store and hands the context down;
//! nothing here knows which step runs.

pub mod recreate;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, ClusterError, Mode, ObjectRef, RunEvents, describe_kube_error},
    config::RecoveryConfig,
    csm::{CsmClients, CsmError},
    etcd::EtcdConfig,
    model::State,
    remote::{FanoutError, SshConfig},
    store::{Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Cluster(ClusterError),
    #[error(transparent)]
    Csm(#[from] CsmError),
    /// The step ran and found the service not repopulated; the message says what and why.
    #[error("{0}")]
    Failed(String),
    #[error("could not record the step's data: {0}")]
    Journal(String),
    #[error("stored step data is unreadable: {0}")]
    BadData(String),
    #[error("SSH fan-out could not start: {0}")]
    Fanout(#[from] FanoutError),
    #[error("reading the snapshots: {0}")]
    Snapshots(#[from] StoreError),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("cancelled while {0}")]
    Cancelled(String),
}

/// A wait the cluster layer ended because the run was cancelled becomes the one cancelled
/// error of every step (same words), whoever waited.
impl From<ClusterError> for StepError {
    fn from(err: ClusterError) -> Self {
        match err {
            ClusterError::Cancelled { waiting_for } => {
                StepError::Cancelled(format!("waiting for {waiting_for}"))
            }
            other => StepError::Cluster(other),
        }
    }
}

impl StepError {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, StepError::Cancelled(_))
    }
}

/// Where a running step records what it must not lose (implemented by the runner on the store).
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Durably stores the step's data; returns once it is on disk.
    async fn save(&self, data: &Value) -> Result<(), StepError>;
    /// Appends a line to the run's log.
    async fn log(&self, message: &str);
}

pub struct StepContext<'a> {
    /// The run the step belongs to (named in safety snapshots).
    pub run_id: uuid::Uuid,
    pub cluster: &'a Cluster,
    pub csm: &'a CsmClients,
    /// Whether the step's writes are sent for real or as server-side dry runs (a dry run).
    pub mode: Mode,
    /// Cancelled when the run is cancelled or the service stops.
    pub cancel: &'a CancellationToken,
    /// Cancelled only when the service stops (see the recovery's point of no return).
    pub shutdown: &'a CancellationToken,
    pub journal: &'a dyn Journal,
    /// What this step saved in an earlier attempt (a resume after a crash).
    pub saved: Option<Value>,
    /// How to reach nodes (HMNFD).
    pub ssh: &'a SshConfig,
    /// How to reach the etcd clusters.
    pub etcd: &'a EtcdConfig,
    /// Where the etcd clusters' backups are, and how long a recovery may take.
    pub recovery: &'a RecoveryConfig,
    /// The service's own store (BOS snapshots, stored manifests, backup checks); a step
    /// records what it did through `journal`, not here.
    pub store: &'a Store,
    /// Kubernetes Events on the objects the step touches.
    pub events: &'a RunEvents,
}

impl StepContext<'_> {
    /// Publishes an Event on `object` (uid `uid`, in the services' namespace). Events are a
    /// courtesy to whoever runs `kubectl describe`: one that cannot be published is noted in
    /// the run's log and the step goes on.
    pub(crate) async fn announce(
        &self,
        object: &ObjectRef,
        uid: &str,
        warning: bool,
        action: &str,
        what: &str,
    ) {
        let regarding = object.reference(self.cluster.namespace(), uid);
        if let Err(err) = self.events.publish(&regarding, warning, action, what).await {
            let subject = object.describe(self.cluster.namespace());
            let err = describe_kube_error(&err);
            tracing::warn!(error = %err, object = %subject, "could not publish a Kubernetes Event");
            self.journal
                .log(&format!(
                    "could not publish a Kubernetes Event on {subject}: {err}"
                ))
                .await;
        }
    }
}

#[derive(Debug)]
pub struct StepOutcome {
    /// `Succeeded`, `ActionRequired` when a person still has work to do, or `Failed` when the
    /// step must keep what it saw (e.g. per-host results) with the failure.
    pub state: State,
    pub message: String,
    pub data: Value,
}

impl StepOutcome {
    pub(crate) fn done(
        message: impl Into<String>,
        data: impl Serialize,
    ) -> Result<StepOutcome, StepError> {
        Self::with_state(State::Succeeded, message, data)
    }

    pub(crate) fn failed(
        message: impl Into<String>,
        data: impl Serialize,
    ) -> Result<StepOutcome, StepError> {
        Self::with_state(State::Failed, message, data)
    }

    pub(crate) fn action_required(
        message: impl Into<String>,
        data: impl Serialize,
    ) -> Result<StepOutcome, StepError> {
        Self::with_state(State::ActionRequired, message, data)
    }

    pub(crate) fn with_state(
        state: State,
        message: impl Into<String>,
        data: impl Serialize,
    ) -> Result<StepOutcome, StepError> {
        Ok(StepOutcome {
            state,
            message: message.into(),
            data: serde_json::to_value(data).map_err(|e| StepError::BadData(e.to_string()))?,
        })
    }
}
