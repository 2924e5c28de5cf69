//! Kubernetes primitives on kube-rs: the mechanics the handlers are built from. Waiting is
//! always done by watching (never by sleeping and polling), with a deadline and cancellation.

mod events;
mod objects;
mod pods;
pub mod rbac;
mod wait;

use std::time::Duration;

pub use events::{REASON as EVENT_REASON, RunEvents};
pub use objects::{JobOutcome, ObjectRef, object_uid, sanitize};
pub use pods::{PodRef, PodsReady, RestartPlan, RestartReport};

/// What a primitive could not do, with enough context for a person at 3 a.m.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{action} failed: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
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

impl ClusterError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
        let action = action.into();
        move |source| ClusterError::Api { action, source }
    }
}

/// The cluster as seen by one service's steps: a client and the namespace of the services.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
}

impl Cluster {
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Cluster {
            client,
            namespace: namespace.into(),
        }
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
