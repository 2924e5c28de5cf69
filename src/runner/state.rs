//! What the runner holds while runs execute: the active runs and services, each run's
//! controls (cancel, shutdown), and what every task shares.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex as StdMutex},
};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    cluster::Cluster,
    config::Config,
    csm::CsmClients,
    metrics::Metrics,
    model::{Service, State},
    release::ReleaseInForce,
    store::Store,
};

/// The one place the runner reads the time.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Why a run's token was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopReason {
    Cancel,
    Shutdown,
}

#[derive(Clone)]
pub(super) struct Control {
    /// Cancelled by a cancel and by a shutdown.
    pub(super) token: CancellationToken,
    /// Cancelled by a shutdown only: a step past its point of no return (an etcd recovery
    /// whose data PVCs are being deleted) finishes its work on a cancel, but stops at its next
    /// journalled phase when the process stops.
    pub(super) shutdown: CancellationToken,
    pub(super) reason: Arc<StdMutex<Option<StopReason>>>,
}

impl Control {
    pub(super) fn new() -> Self {
        Control {
            token: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            reason: Arc::new(StdMutex::new(None)),
        }
    }

    pub(super) fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        current.get_or_insert(reason);
        if reason == StopReason::Shutdown {
            self.shutdown.cancel();
        }
        self.token.cancel();
    }

    pub(super) fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state a step, task or run ends in when stopped.
    pub(super) fn stopped_state(&self) -> State {
        match self.reason() {
            Some(StopReason::Shutdown) => State::Interrupted,
            _ => State::Cancelled,
        }
    }
}

#[derive(Default)]
pub(super) struct Active {
    pub(super) services: HashMap<Service, Uuid>,
    pub(super) runs: HashMap<Uuid, Control>,
    pub(super) shutting_down: bool,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) cluster: Cluster,
    pub(super) csm: CsmClients,
    pub(super) config: Arc<Config>,
    pub(super) active: Mutex<Active>,
    pub(super) tracker: TaskTracker,
    /// Notified whenever a run stops executing.
    pub(super) finished: tokio::sync::Notify,
    pub(super) metrics: Arc<Metrics>,
    /// The release detected (`csm_release = "auto"`), once it was.
    pub(super) detected: Mutex<Option<ReleaseInForce>>,
}
