//! Kubernetes primitives on kube-rs: the mechanics the handlers are built from. Waiting is
//! always done by watching (never by sleeping and polling), with a deadline and cancellation.

mod events;
mod objects;
mod pods;
pub mod rbac;
mod retry;
mod scale;
mod statefulset;
mod wait;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

pub use events::{REASON as EVENT_REASON, RunEvents};
pub use objects::{JobOutcome, ObjectRef, Sanitized, object_uid, sanitize};
pub use pods::{PodRef, PodsReady, RestartPlan, RestartReport, is_ready as pod_is_ready};
pub use retry::describe_kube_error;
pub use scale::DeploymentScale;

/// What a primitive could not do, with enough context for a person at 3 a.m.
/// Whether a write is sent for real or as a server-side dry run (validated by the API server,
/// admission and RBAC included, and not persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Apply,
}

impl Mode {
    /// `DryRun` when `dry_run`.
    pub fn dry_run_if(dry_run: bool) -> Mode {
        if dry_run { Mode::DryRun } else { Mode::Apply }
    }

    pub fn is_dry_run(self) -> bool {
        self == Mode::DryRun
    }
}

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

/// The cluster as seen by one service's steps: a client and the namespace of the services.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
    /// Requests (and watches) retried after transient errors, since [`Cluster::counting`].
    retries: Arc<AtomicU32>,
}

impl Cluster {
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Cluster {
            client,
            namespace: namespace.into(),
            retries: Arc::default(),
        }
    }

    /// The same cluster with its own count of retries (one per step, so that the step can say
    /// how many transient errors it went through).
    pub fn counting(&self) -> Cluster {
        Cluster {
            retries: Arc::default(),
            ..self.clone()
        }
    }

    /// How many requests and watches were retried after transient errors (see
    /// [`Cluster::counting`]).
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }
}
