//! StatefulSet mechanics of an etcd restore or rebuild on the Bitnami layout (CSM's
//! `restore_from_backup` / `rebuild_cluster`): `kubectl scale` (the `scale` subresource),
//! `kubectl set env` (a JSON patch of one container's `env`, guarded by a test of the
//! container's name), `kubectl rollout status` (watching the set's status) and the waits on its
//! member pods. Every write sets an absolute value, so it can be sent again after a crash.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{EnvVar, PersistentVolumeClaim, Pod},
};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::watcher,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{client::Cluster, error::ClusterError, mode::Mode, pods::is_ready, wait::watch_until};

const FIELD_MANAGER: &str = "etcd-repopulator";

fn patch_params(mode: Mode) -> PatchParams {
    let mut params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    if mode.is_dry_run() {
        params = params.dry_run();
    }
    params
}

/// A member pod of a StatefulSet, as a wait sees it.
struct Member {
    ordinal: usize,
    name: String,
    ready: bool,
}

/// Whether `pod` is member `<set>-<ordinal>` of the StatefulSet `set`.
fn member_ordinal(set: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

impl Cluster {
    /// The StatefulSet `name`, or `None` when it does not exist.
    pub async fn statefulset(&self, name: &str) -> Result<Option<StatefulSet>, ClusterError> {
        let api = self.api::<StatefulSet>();
        self.retrying(
            &format!("reading StatefulSet {}/{name}", self.namespace),
            || api.get_opt(name),
        )
        .await
    }

    /// `kubectl scale statefulset <name> --replicas=<n>`, through the `scale` subresource.
    pub async fn scale_statefulset(
        &self,
        name: &str,
        replicas: i32,
        mode: Mode,
    ) -> Result<(), ClusterError> {
        let api = self.api::<StatefulSet>();
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        let params = patch_params(mode);
        self.retrying(
            &format!(
                "scaling StatefulSet {}/{name} to {replicas} replica(s)",
                self.namespace
            ),
            || api.patch_scale(name, &params, &patch),
        )
        .await?;
        Ok(())
    }

    /// `kubectl set env`: replaces the `env` of container `index` of the StatefulSet's pod
    /// template with `env`, only if that container is still named `container` (a JSON patch
    /// whose first operation tests it). Returns the set as stored.
    pub async fn set_container_env(
        &self,
        name: &str,
        index: usize,
        container: &str,
        env: &[EnvVar],
        mode: Mode,
    ) -> Result<StatefulSet, ClusterError> {
        let api = self.api::<StatefulSet>();
        let base = format!("/spec/template/spec/containers/{index}");
        let ops = json!([
            { "op": "test", "path": format!("{base}/name"), "value": container },
            { "op": "add", "path": format!("{base}/env"), "value": env },
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops)
            .map_err(|e| ClusterError::Invalid(format!("env patch: {e}")))?;
        let patch = Patch::Json::<()>(patch);
        let params = patch_params(mode);
        self.retrying(
            &format!(
                "setting the environment of container {container} of StatefulSet {}/{name}",
                self.namespace
            ),
            || api.patch(name, &params, &patch),
        )
        .await
    }

    /// Sets the annotation `key` of the StatefulSet `name` to `value` (a merge patch: its
    /// spec, and so its generation, are untouched).
    pub async fn annotate_statefulset(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError> {
        let api = self.api::<StatefulSet>();
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { key: value } } }));
        let params = patch_params(Mode::Apply);
        self.retrying(
            &format!("annotating StatefulSet {}/{name}", self.namespace),
            || api.patch(name, &params, &patch),
        )
        .await?;
        Ok(())
    }

    /// The member pods of `set` whose container is crash-looping: restarted at least
    /// `restarts` times and now waiting in `CrashLoopBackOff`, each with its last message.
    pub async fn crash_looping_members(
        &self,
        set: &str,
        selector: &str,
        restarts: i32,
    ) -> Result<Vec<String>, ClusterError> {
        let api = self.api::<Pod>();
        let params = ListParams::default().labels(selector);
        let pods = self
            .retrying(&format!("listing the pods {selector}"), || {
                api.list(&params)
            })
            .await?;
        let mut looping = Vec::new();
        for pod in &pods.items {
            let name = pod.name_any();
            if member_ordinal(set, &name).is_none() {
                continue;
            }
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for c in statuses {
                let waiting = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone());
                if c.restart_count >= restarts && waiting.as_deref() == Some("CrashLoopBackOff") {
                    let last = c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.message.clone().or(t.reason.clone()))
                        .unwrap_or_default();
                    looping.push(format!(
                        "{name} ({} restarts; last: {})",
                        c.restart_count,
                        last.trim()
                    ));
                }
            }
        }
        Ok(looping)
    }

    /// The PVCs of the namespace whose names start with `prefix` (`data-<sts>-`), by name. A
    /// StatefulSet claims its PVCs by name, whatever their labels (a PVC made by hand before
    /// the set, to bind a given volume, has none), so they are not found by a label selector.
    pub async fn list_pvcs(
        &self,
        prefix: &str,
    ) -> Result<Vec<PersistentVolumeClaim>, ClusterError> {
        let api = self.api::<PersistentVolumeClaim>();
        let params = ListParams::default();
        let mut pvcs: Vec<PersistentVolumeClaim> = self
            .retrying(
                &format!("listing the PVCs {prefix}* in namespace {}", self.namespace),
                || api.list(&params),
            )
            .await?
            .items
            .into_iter()
            .filter(|p| p.name_any().starts_with(prefix))
            .collect();
        pvcs.sort_by_key(|p| p.name_any());
        Ok(pvcs)
    }

    /// Watches the pods matching `selector` until no member of the StatefulSet `set` is left
    /// (`kubectl rollout status` after a scale to 0).
    pub async fn wait_members_gone(
        &self,
        set: &str,
        selector: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), ClusterError> {
        let waiting_for = format!("the pods of StatefulSet {set} to be gone");
        self.watch_members(set, selector, timeout, cancel, &waiting_for, |members| {
            let left: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still there: {}", left.join(", ")))
            }
        })
        .await
    }

    /// Watches the pods matching `selector` until the members `<set>-0` .. `<set>-<n-1>` are
    /// all Ready; returns their names.
    pub async fn wait_members_ready(
        &self,
        set: &str,
        selector: &str,
        replicas: usize,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ClusterError> {
        let waiting_for = format!("the {replicas} member pod(s) of StatefulSet {set} to be Ready");
        self.watch_members(set, selector, timeout, cancel, &waiting_for, |members| {
            let mut ready: Vec<String> = members
                .iter()
                .filter(|m| m.ordinal < replicas && m.ready)
                .map(|m| m.name.clone())
                .collect();
            ready.sort();
            if ready.len() == replicas {
                Ok(ready)
            } else if ready.is_empty() {
                Err(format!("0 of {replicas} Ready"))
            } else {
                Err(format!(
                    "{} of {replicas} Ready ({})",
                    ready.len(),
                    ready.join(", ")
                ))
            }
        })
        .await
    }

    /// Watches the member pods of `set` until `check` holds.
    async fn watch_members<T>(
        &self,
        set: &str,
        selector: &str,
        timeout: Duration,
        cancel: &CancellationToken,
        waiting_for: &str,
        check: impl Fn(&[Member]) -> Result<T, String>,
    ) -> Result<T, ClusterError> {
        self.watch_pods(
            selector,
            timeout,
            cancel,
            waiting_for,
            |pods: &[Arc<Pod>]| {
                let members: Vec<Member> = pods
                    .iter()
                    .filter_map(|p| {
                        let name = p.name_any();
                        Some(Member {
                            ordinal: member_ordinal(set, &name)?,
                            ready: is_ready(p),
                            name,
                        })
                    })
                    .collect();
                check(&members)
            },
        )
        .await
    }

    /// `kubectl rollout status statefulset`: watches the set until its controller has seen
    /// its latest spec and every replica is Ready at the update revision.
    pub async fn wait_statefulset_rolled_out(
        &self,
        name: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), ClusterError> {
        watch_until(
            self,
            (self.api::<StatefulSet>(), ()),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            timeout,
            cancel,
            &format!("the rollout of StatefulSet {name}"),
            |sets: &[Arc<StatefulSet>]| {
                let Some(set) = sets.first() else {
                    return Err("the StatefulSet is gone".to_owned());
                };
                let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = set.status.clone().unwrap_or_default();
                let observed =
                    status.observed_generation.unwrap_or(0) >= set.metadata.generation.unwrap_or(0);
                let updated = status.updated_replicas.unwrap_or(0);
                let ready = status.ready_replicas.unwrap_or(0);
                let same_revision = status.current_revision == status.update_revision;
                if observed && updated == wanted && ready == wanted && same_revision {
                    Ok(())
                } else {
                    Err(format!(
                        "{updated} of {wanted} updated, {ready} Ready{}{}",
                        if observed {
                            ""
                        } else {
                            ", the controller has not seen the latest spec"
                        },
                        if same_revision {
                            ""
                        } else {
                            ", the update revision is not current yet"
                        }
                    ))
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::member_ordinal;

    #[test]
    fn members_are_named_after_the_set_and_an_ordinal() {
        assert_eq!(
            member_ordinal("cray-bss-bitnami-etcd", "cray-bss-bitnami-etcd-2"),
            Some(2)
        );
        assert_eq!(
            member_ordinal("cray-bss-bitnami-etcd", "cray-bss-bitnami-etcd-x"),
            None
        );
        assert_eq!(member_ordinal("cray-bss", "cray-bss-bitnami-etcd-0"), None);
    }
}
