//! Restart pods by label selector: the REDS/MEDS/CRUS mechanism of the runbook
//! (`kubectl -n services delete pods --selector=...`), plus the wait the runbook leaves implicit.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams},
    runtime::watcher,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{client::Cluster, error::ClusterError, mode::Mode, wait::watch_until};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

/// The pods a restart will delete and how many Ready pods must come back. Stored in the
/// step before anything is deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartPlan {
    pub namespace: String,
    pub selector: String,
    pub pods: Vec<PodRef>,
    /// Ready pods with new uids to wait for: the owners' desired replicas.
    pub expected_ready: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartReport {
    #[serde(flatten)]
    pub plan: RestartPlan,
    pub dry_run: bool,
    /// The Ready replacement pods (empty on a dry run).
    pub new_pods: Vec<PodRef>,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conds| {
                conds
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

/// Which pods matching a selector are Ready now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodsReady {
    pub ready: Vec<String>,
    pub not_ready: Vec<String>,
}

impl PodsReady {
    pub fn all_ready(&self) -> bool {
        !self.ready.is_empty() && self.not_ready.is_empty()
    }
}

impl Cluster {
    /// The pods matching `selector`; none at all is an error (the service is not deployed).
    async fn matching_pods(&self, selector: &str) -> Result<Vec<Pod>, ClusterError> {
        let api = self.api::<Pod>();
        let params = ListParams::default().labels(selector);
        let pods = self
            .retrying(
                &format!("listing pods {selector:?} in namespace {}", self.namespace),
                || api.list(&params),
            )
            .await?
            .items;
        if pods.is_empty() {
            return Err(ClusterError::NoPods {
                selector: selector.to_owned(),
                namespace: self.namespace.clone(),
            });
        }
        Ok(pods)
    }

    pub async fn pods_ready(&self, selector: &str) -> Result<PodsReady, ClusterError> {
        let pods = self.matching_pods(selector).await?;
        let (ready, not_ready): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| is_ready(p));
        Ok(PodsReady {
            ready: ready.iter().map(|p| p.name_any()).collect(),
            not_ready: not_ready.iter().map(|p| p.name_any()).collect(),
        })
    }

    /// Lists the pods matching `selector` and works out how many must be Ready afterwards.
    /// Refuses pods without a controller: deleting them would not bring them back.
    pub async fn plan_restart(&self, selector: &str) -> Result<RestartPlan, ClusterError> {
        let pods = self.matching_pods(selector).await?;
        let unowned: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .all(|o| o.controller != Some(true))
            })
            .map(|p| p.name_any())
            .collect();
        if !unowned.is_empty() {
            return Err(ClusterError::Unowned { pods: unowned });
        }
        // Pods of a ReplicaSet come back as its desired replicas (which may differ from what is
        // running now); pods of other controllers (StatefulSet, DaemonSet) come back one for one.
        let mut replica_sets: BTreeMap<String, usize> = BTreeMap::new();
        let mut other = 0;
        for pod in &pods {
            match pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
            {
                Some(owner) if owner.kind == "ReplicaSet" => {
                    *replica_sets.entry(owner.name.clone()).or_default() += 1;
                }
                _ => other += 1,
            }
        }
        let mut expected_ready = other;
        for (name, running) in replica_sets {
            let replica_sets = self.api::<ReplicaSet>();
            let desired = self
                .retrying(&format!("reading ReplicaSet {name}"), || {
                    replica_sets.get_opt(&name)
                })
                .await?
                .and_then(|rs| rs.spec.and_then(|s| s.replicas))
                .map_or(running, |r| usize::try_from(r).unwrap_or(running));
            expected_ready += desired;
        }
        Ok(RestartPlan {
            namespace: self.namespace.clone(),
            selector: selector.to_owned(),
            pods: pods.iter().map(pod_ref).collect(),
            expected_ready,
        })
    }

    /// Deletes the planned pods (server-side dry run in `Mode::DryRun`), then watches until none of
    /// them exists any more and `expected_ready` pods with new uids are Ready.
    pub async fn restart(
        &self,
        plan: RestartPlan,
        mode: Mode,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<RestartReport, ClusterError> {
        let dry_run = mode.is_dry_run();
        let api = self.api::<Pod>();
        let params = if dry_run {
            DeleteParams::default().dry_run()
        } else {
            DeleteParams::default()
        };
        for pod in &plan.pods {
            // A pod already gone (deleted by someone else, or by us before a crash) is fine.
            let precondition = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..params.clone()
            };
            // With the uid precondition the delete is idempotent, so it is retried.
            let action = format!("deleting pod {} in namespace {}", pod.name, self.namespace);
            match self
                .retrying(&action, || api.delete(&pod.name, &precondition))
                .await
            {
                Ok(_) => {}
                Err(err)
                    if err
                        .api_status()
                        .is_some_and(|s| [404, 409].contains(&s.code)) => {}
                Err(err) => return Err(err),
            }
        }
        if !dry_run {
            crate::failpoint::hit("restart-pods:after-delete");
        }
        if dry_run {
            return Ok(RestartReport {
                plan,
                dry_run,
                new_pods: Vec::new(),
            });
        }
        let old: Vec<String> = plan.pods.iter().map(|p| p.uid.clone()).collect();
        let expected = plan.expected_ready;
        let waiting_for = format!(
            "{expected} Ready replacement pod(s) for {:?} in namespace {}",
            plan.selector, self.namespace
        );
        let new_pods = watch_until(
            self,
            (api, ()),
            watcher::Config::default().labels(&plan.selector),
            timeout,
            cancel,
            &waiting_for,
            |pods: &[Arc<Pod>]| {
                let lingering: Vec<String> = pods
                    .iter()
                    .filter(|p| p.uid().is_some_and(|uid| old.contains(&uid)))
                    .map(|p| p.name_any())
                    .collect();
                let mut ready: Vec<PodRef> = pods
                    .iter()
                    .filter(|p| !p.uid().is_some_and(|uid| old.contains(&uid)) && is_ready(p))
                    .map(|p| pod_ref(p))
                    .collect();
                ready.sort_by(|a, b| a.name.cmp(&b.name));
                if lingering.is_empty() && ready.len() >= expected {
                    Ok(ready)
                } else {
                    Err(format!(
                        "{} of {expected} replacement pod(s) Ready; old pod(s) still present: {:?}",
                        ready.len(),
                        lingering
                    ))
                }
            },
        )
        .await?;
        Ok(RestartReport {
            plan,
            dry_run,
            new_pods,
        })
    }
}
