//! Scaling a Deployment through its `scale` subresource (`kubectl scale deployment`), and
//! waiting for the pods of a label selector to be gone or Ready: what a rebuild of an
//! etcd-operator cluster does to the service Deployment that uses the cluster.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
    runtime::watcher,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{client::Cluster, error::ClusterError, mode::Mode, pods::is_ready, wait::watch_until};

/// A Deployment's `autoscaling/v1` Scale: how many replicas it wants, and the label selector of
/// its pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentScale {
    pub name: String,
    pub uid: String,
    pub replicas: i32,
    pub selector: String,
}

impl Cluster {
    /// The Scale of the Deployment `name`, or `None` when there is no such Deployment.
    pub async fn deployment_scale(
        &self,
        name: &str,
    ) -> Result<Option<DeploymentScale>, ClusterError> {
        let api = self.api::<Deployment>();
        let action = format!(
            "reading the scale of Deployment {name} in namespace {}",
            self.namespace
        );
        match self.retrying(&action, || api.get_scale(name)).await {
            Ok(scale) => Ok(Some(DeploymentScale {
                name: name.to_owned(),
                uid: scale.metadata.uid.clone().unwrap_or_default(),
                replicas: scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                selector: scale.status.and_then(|s| s.selector).unwrap_or_default(),
            })),
            Err(err) if err.api_status().is_some_and(|s| s.code == 404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Sets the Deployment's replicas (a merge patch of its Scale: idempotent, so retried); a
    /// server-side dry run in `Mode::DryRun`.
    pub async fn scale_deployment(
        &self,
        name: &str,
        replicas: i32,
        mode: Mode,
    ) -> Result<(), ClusterError> {
        let api = self.api::<Deployment>();
        let params = PatchParams {
            dry_run: mode.is_dry_run(),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        let action = format!(
            "scaling Deployment {name} in namespace {} to {replicas}",
            self.namespace
        );
        self.retrying(&action, || api.patch_scale(name, &params, &patch))
            .await
            .map(|_| ())
    }

    /// Watches until no pod matches `selector` (terminating ones included).
    pub async fn wait_pods_gone(
        &self,
        selector: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), ClusterError> {
        let waiting_for = format!(
            "the pods {selector:?} in namespace {} to be gone",
            self.namespace
        );
        self.watch_pods(selector, timeout, cancel, &waiting_for, |pods| {
            if pods.is_empty() {
                Ok(())
            } else {
                Err(format!("still present: {:?}", names(pods.iter())))
            }
        })
        .await
    }

    /// Watches until at least `count` pods matching `selector` are Ready (and, with `count`
    /// 0, none is left); returns the Ready pods' names.
    pub async fn wait_pods_ready(
        &self,
        selector: &str,
        count: usize,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ClusterError> {
        if count == 0 {
            return self
                .wait_pods_gone(selector, timeout, cancel)
                .await
                .map(|()| Vec::new());
        }
        let waiting_for = format!(
            "{count} Ready pod(s) {selector:?} in namespace {}",
            self.namespace
        );
        self.watch_pods(selector, timeout, cancel, &waiting_for, |pods| {
            let ready = names(pods.iter().filter(|p| is_ready(p)));
            if ready.len() >= count {
                Ok(ready)
            } else {
                Err(format!("{} of {count} Ready: {ready:?}", ready.len()))
            }
        })
        .await
    }

    /// Watches the pods `selector` until `check` over all of them holds.
    pub(super) async fn watch_pods<T>(
        &self,
        selector: &str,
        timeout: Duration,
        cancel: &CancellationToken,
        waiting_for: &str,
        check: impl FnMut(&[Arc<Pod>]) -> Result<T, String>,
    ) -> Result<T, ClusterError> {
        watch_until(
            self,
            (self.api::<Pod>(), ()),
            watcher::Config::default().labels(selector),
            timeout,
            cancel,
            waiting_for,
            check,
        )
        .await
    }
}

/// The pods' names, sorted.
fn names<'a>(pods: impl Iterator<Item = &'a Arc<Pod>>) -> Vec<String> {
    let mut names: Vec<String> = pods.map(|p| p.name_any()).collect();
    names.sort();
    names
}
