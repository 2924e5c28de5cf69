//! The cluster as one service's steps see it: a kube-rs client, the namespace of the services,
//! and a count of the requests retried. What it can do is in the files beside this one.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

/// The cluster as seen by one service's steps: a client and the namespace of the services.
#[derive(Clone)]
pub struct Cluster {
    pub(super) client: kube::Client,
    pub(super) namespace: String,
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

    pub(super) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub(super) fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }
}
