//! Delete-and-recreate of whole objects: the BSS/FAS "re-run a Job" and the External DNS
//! "recreate the EtcdCluster" procedures. Objects are handled as JSON (`DynamicObject`) so the
//! same code serves Jobs, EtcdClusters and StatefulSets, and a stored manifest is exactly what
//! will be sent back.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams,
        PostParams,
    },
    core::Selector,
    runtime::watcher,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{client::Cluster, error::ClusterError, mode::Mode, wait::watch_until};

/// Which object to recreate: its kind (with plural for the URL path) and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub name: String,
}

impl ObjectRef {
    pub fn job(name: &str) -> Self {
        ObjectRef {
            api_version: "batch/v1".to_owned(),
            kind: "Job".to_owned(),
            plural: "jobs".to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn pod(name: &str) -> Self {
        ObjectRef {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            plural: "pods".to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn persistent_volume_claim(name: &str) -> Self {
        ObjectRef {
            api_version: "v1".to_owned(),
            kind: "PersistentVolumeClaim".to_owned(),
            plural: "persistentvolumeclaims".to_owned(),
            name: name.to_owned(),
        }
    }

    fn resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &self.kind),
            &self.plural,
        )
    }

    /// A reference to the object with uid `uid` in `namespace` (for its Events).
    pub fn reference(&self, namespace: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            namespace: Some(namespace.to_owned()),
            name: Some(self.name.clone()),
            uid: Some(uid.to_owned()).filter(|uid| !uid.is_empty()),
            ..ObjectReference::default()
        }
    }

    pub fn describe(&self, namespace: &str) -> String {
        format!("{} {} in namespace {namespace}", self.kind, self.name)
    }
}

/// How a re-run Job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    Complete,
    Failed { reason: String, message: String },
}

/// Labels the Job API derives from the old Job's uid: a new Job that carries them is refused.
/// (`job-name` / `batch.kubernetes.io/job-name` are derived from the name, which the new Job
/// shares, so they are kept: `kubectl get jobs -l job-name=...` still finds it.)
const JOB_UID_LABELS: [&str; 2] = ["controller-uid", "batch.kubernetes.io/controller-uid"];

/// A manifest to create an object again, and what of the old object's own metadata was left
/// out of it (each with the value it had), for the step to show.
#[derive(Clone, Debug, PartialEq)]
pub struct Sanitized {
    pub manifest: Value,
    /// `(field, value)`: e.g. `("metadata.finalizers", ["example.com/hold"])`.
    pub dropped: Vec<(String, Value)>,
}

/// The manifest to create the object again: what the server set is removed, and what belonged
/// to the old object alone: its finalizers (they would hold the new object on deletion, with
/// no controller knowing it) and owner references (the new object is not the one its owner
/// made). For Jobs whose selector the server generated (no `spec.manualSelector`), also the
/// selector and the labels derived from the old uid: the API server refuses a new Job that
/// carries the old Job's `controller-uid` (422 Invalid) and answers 500 to a create with
/// `metadata.resourceVersion`.
pub fn sanitize(object: &Value) -> Sanitized {
    let mut manifest = object.clone();
    let mut dropped = Vec::new();
    if let Some(map) = manifest.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "uid",
            "selfLink",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(key);
        }
        for key in ["finalizers", "ownerReferences"] {
            if let Some(value) = meta.remove(key) {
                dropped.push((format!("metadata.{key}"), value));
            }
        }
    }
    let is_job = manifest.get("kind").and_then(Value::as_str) == Some("Job");
    let manual = manifest
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        == Some(true);
    if is_job && !manual {
        if let Some(selector) = manifest
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .and_then(|spec| spec.remove("selector"))
        {
            dropped.push(("spec.selector".to_owned(), selector));
        }
        for (pointer, field) in [
            ("/metadata/labels", "metadata.labels"),
            (
                "/spec/template/metadata/labels",
                "spec.template.metadata.labels",
            ),
        ] {
            if let Some(labels) = manifest.pointer_mut(pointer).and_then(Value::as_object_mut) {
                for key in JOB_UID_LABELS {
                    if let Some(value) = labels.remove(key) {
                        dropped.push((format!("{field}[{key}]"), value));
                    }
                }
            }
        }
    }
    Sanitized { manifest, dropped }
}

/// The uid of an object held as JSON.
pub fn object_uid(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl Cluster {
    fn dynamic(&self, target: &ObjectRef) -> (Api<DynamicObject>, ApiResource) {
        let resource = target.resource();
        (
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource),
            resource,
        )
    }

    /// Watches the object named by `target` (all objects of that name, whatever their uid)
    /// until `check` returns `Ok`; `state` says what is awaited ("to be deleted").
    pub(crate) async fn watch_named<T>(
        &self,
        target: &ObjectRef,
        state: &str,
        timeout: Duration,
        cancel: &CancellationToken,
        check: impl FnMut(&[Arc<DynamicObject>]) -> Result<T, String>,
    ) -> Result<T, ClusterError> {
        let (api, resource) = self.dynamic(target);
        watch_until(
            self,
            (api, resource),
            watcher::Config::default().fields(&format!("metadata.name={}", target.name)),
            timeout,
            cancel,
            &format!("{} {state}", target.describe(&self.namespace)),
            check,
        )
        .await
    }

    /// The object as JSON, or `None` when it does not exist.
    pub async fn read_object(&self, target: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let (api, _) = self.dynamic(target);
        let action = format!("reading {}", target.describe(&self.namespace));
        let object = self.retrying(&action, || api.get_opt(&target.name)).await?;
        object
            .map(|o| serde_json::to_value(o).map_err(|e| ClusterError::Invalid(e.to_string())))
            .transpose()
    }

    /// Deletes the object with uid `uid` (background propagation: a Job's pods go with it) and
    /// waits until it is gone, finalizers included. A dry run only validates the delete.
    pub async fn delete_and_wait_gone(
        &self,
        target: &ObjectRef,
        uid: &str,
        mode: Mode,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), ClusterError> {
        let (api, _) = self.dynamic(target);
        let mut params = DeleteParams::background();
        params.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        });
        if mode.is_dry_run() {
            params = params.dry_run();
        }
        // With the uid precondition the delete is idempotent, so it is retried.
        let action = format!("deleting {}", target.describe(&self.namespace));
        match self
            .retrying(&action, || api.delete(&target.name, &params))
            .await
        {
            Ok(_) => {}
            Err(err) if err.api_status().is_some_and(|s| s.code == 404) => return Ok(()),
            Err(err) => return Err(err),
        }
        if mode.is_dry_run() {
            return Ok(());
        }
        self.watch_named(
            target,
            "to be deleted",
            timeout,
            cancel,
            |objects| match objects.iter().find(|o| o.uid().as_deref() == Some(uid)) {
                None => Ok(()),
                Some(o) => Err(format!("still present (finalizers: {:?})", o.finalizers())),
            },
        )
        .await
    }

    /// Creates the object from `manifest` (a server-side dry run in `Mode::DryRun`); returns what
    /// the server stored. Transient errors are retried: a create whose answer was lost comes
    /// back as `409 AlreadyExists`, which the caller resolves by reading the object's uid.
    pub async fn create_object(
        &self,
        target: &ObjectRef,
        manifest: &Value,
        mode: Mode,
    ) -> Result<Value, ClusterError> {
        let (api, _) = self.dynamic(target);
        let object: DynamicObject = serde_json::from_value(manifest.clone())
            .map_err(|e| ClusterError::Invalid(format!("stored manifest: {e}")))?;
        let params = PostParams {
            dry_run: mode.is_dry_run(),
            field_manager: Some("etcd-repopulator".to_owned()),
        };
        let action = format!("creating {}", target.describe(&self.namespace));
        let created = self
            .retrying(&action, || api.create(&params, &object))
            .await?;
        serde_json::to_value(created).map_err(|e| ClusterError::Invalid(e.to_string()))
    }

    /// Watches the Job with uid `uid` until its `Complete` or `Failed` condition is true.
    pub async fn wait_job_finished(
        &self,
        target: &ObjectRef,
        uid: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<JobOutcome, ClusterError> {
        self.watch_named(target, "to complete", timeout, cancel, |objects| {
            let Some(job) = objects.iter().find(|o| o.uid().as_deref() == Some(uid)) else {
                return Err("the Job is gone".to_owned());
            };
            let conditions = job
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array);
            for condition in conditions.into_iter().flatten() {
                let is_true = condition.get("status").and_then(Value::as_str) == Some("True");
                let text = |key: &str| {
                    condition
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                match condition.get("type").and_then(Value::as_str) {
                    Some("Complete") if is_true => return Ok(JobOutcome::Complete),
                    Some("Failed") if is_true => {
                        return Ok(JobOutcome::Failed {
                            reason: text("reason"),
                            message: text("message"),
                        });
                    }
                    _ => {}
                }
            }
            Err(format!(
                "active {}, succeeded {}, failed {}",
                job.data
                    .pointer("/status/active")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                job.data
                    .pointer("/status/succeeded")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                job.data
                    .pointer("/status/failed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ))
        })
        .await
    }

    /// The last `lines` lines of the log of the newest pod of the Job with uid `job_uid`
    /// (empty if it has none). The pods are found by the Job's own `spec.selector`, as the Job
    /// controller finds them: the labels it puts on them differ between Kubernetes versions
    /// (`controller-uid` before 1.27, `batch.kubernetes.io/controller-uid` from 1.27 on).
    pub async fn job_log_tail(
        &self,
        target: &ObjectRef,
        job_uid: &str,
        lines: i64,
    ) -> Result<Vec<String>, ClusterError> {
        let what = target.describe(&self.namespace);
        let job = self
            .read_object(target)
            .await?
            .filter(|job| object_uid(job).as_deref() == Some(job_uid))
            .ok_or_else(|| ClusterError::Invalid(format!("{what} (uid {job_uid}) is gone")))?;
        let selector = job
            .pointer("/spec/selector")
            .cloned()
            .ok_or_else(|| ClusterError::Invalid(format!("{what} has no spec.selector")))
            .and_then(|s| {
                serde_json::from_value::<LabelSelector>(s)
                    .map_err(|e| ClusterError::Invalid(format!("spec.selector of {what}: {e}")))
            })
            .and_then(|s| {
                Selector::try_from(s)
                    .map_err(|e| ClusterError::Invalid(format!("spec.selector of {what}: {e}")))
            })?;
        let pods = self.api::<Pod>();
        let params = ListParams::default().labels_from(&selector);
        let list = self
            .retrying(&format!("listing the pods of {what}"), || {
                pods.list(&params)
            })
            .await?;
        let Some(pod) = list.items.iter().max_by_key(|p| p.creation_timestamp()) else {
            return Ok(Vec::new());
        };
        let name = pod.name_any();
        let log_params = LogParams {
            tail_lines: Some(lines),
            ..LogParams::default()
        };
        let log = self
            .retrying(&format!("reading the log of pod {name}"), || {
                pods.logs(&name, &log_params)
            })
            .await?;
        Ok(log.lines().map(str::to_owned).collect())
    }

    /// Watches the recreated object until it reports itself up: an EtcdCluster in phase
    /// `Running` with its requested size, a StatefulSet with all replicas Ready; any other kind
    /// as soon as it exists.
    pub async fn wait_object_running(
        &self,
        target: &ObjectRef,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Value, ClusterError> {
        let kind = target.kind.clone();
        self.watch_named(target, "to be running", timeout, cancel, |objects| {
            let Some(object) = objects.first() else {
                return Err("not present".to_owned());
            };
            let data = &object.data;
            let num = |p: &str| data.pointer(p).and_then(Value::as_i64);
            let (up, seen) = match kind.as_str() {
                "EtcdCluster" => {
                    let phase = data
                        .pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("none");
                    let (want, have) = (num("/spec/size"), num("/status/size"));
                    (
                        phase == "Running" && want.is_some() && want == have,
                        format!(
                            "phase {phase}, size {} of {}",
                            have.unwrap_or(0),
                            want.unwrap_or(0)
                        ),
                    )
                }
                "StatefulSet" => {
                    let (want, have) = (
                        num("/spec/replicas").unwrap_or(1),
                        num("/status/readyReplicas").unwrap_or(0),
                    );
                    (have >= want, format!("{have} of {want} replicas Ready"))
                }
                _ => (true, String::new()),
            };
            if up {
                serde_json::to_value(object.as_ref()).map_err(|e| e.to_string())
            } else {
                Err(seen)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sanitize_strips_what_the_server_set_and_what_came_from_the_old_uid() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "cray-reds-init", "namespace": "services", "uid": "u1",
                "resourceVersion": "42", "generation": 1, "creationTimestamp": "t",
                "managedFields": [], "selfLink": "/x",
                "labels": {"app": "reds", "controller-uid": "u1", "job-name": "cray-reds-init"}},
            "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "template": {"metadata": {"labels": {"app": "reds", "controller-uid": "u1",
                    "batch.kubernetes.io/controller-uid": "u1", "job-name": "cray-reds-init",
                    "batch.kubernetes.io/job-name": "cray-reds-init"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"succeeded": 1}
        });
        let clean = sanitize(&job);
        // The labels derived from the name stay: the new Job has the same name.
        assert_eq!(
            clean.manifest,
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "cray-reds-init", "namespace": "services",
                    "labels": {"app": "reds", "job-name": "cray-reds-init"}},
                "spec": {"template": {"metadata": {"labels": {"app": "reds",
                    "job-name": "cray-reds-init", "batch.kubernetes.io/job-name": "cray-reds-init"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}
            })
        );
        assert_eq!(
            clean.dropped,
            vec![
                (
                    "spec.selector".to_owned(),
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
                ),
                ("metadata.labels[controller-uid]".to_owned(), json!("u1")),
                (
                    "spec.template.metadata.labels[controller-uid]".to_owned(),
                    json!("u1")
                ),
                (
                    "spec.template.metadata.labels[batch.kubernetes.io/controller-uid]".to_owned(),
                    json!("u1")
                ),
            ]
        );
    }

    #[test]
    fn sanitize_drops_the_old_objects_finalizers_and_owners() {
        let job = json!({"kind": "Job", "metadata": {"name": "j",
            "finalizers": ["example.com/hold"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "o"}]},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        let clean = sanitize(&job);
        assert_eq!(
            clean.manifest,
            json!({"kind": "Job", "metadata": {"name": "j"},
                "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}})
        );
        let fields: Vec<&str> = clean.dropped.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["metadata.finalizers", "metadata.ownerReferences"]);
    }

    #[test]
    fn sanitize_keeps_a_manual_selector() {
        let job = json!({"kind": "Job", "metadata": {"name": "j"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b", "controller-uid": "x"}}}}});
        let clean = sanitize(&job);
        assert_eq!(clean.manifest, job);
        assert!(clean.dropped.is_empty());
    }

    #[test]
    fn sanitize_of_a_custom_resource_follows_the_runbook() {
        let etcd = json!({"apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
            "metadata": {"name": "cray-externaldns-etcd", "uid": "u", "resourceVersion": "1",
                "generation": 2, "creationTimestamp": "t", "selfLink": "s", "managedFields": [],
                "annotations": {"etcd.database.coreos.com/scope": "clusterwide"}},
            "spec": {"size": 3, "version": "3.3.8"}, "status": {"phase": "Running"}});
        assert_eq!(
            sanitize(&etcd).manifest,
            json!({"apiVersion": "etcd.database.coreos.com/v1beta2", "kind": "EtcdCluster",
                "metadata": {"name": "cray-externaldns-etcd",
                    "annotations": {"etcd.database.coreos.com/scope": "clusterwide"}},
                "spec": {"size": 3, "version": "3.3.8"}})
        );
    }
}
