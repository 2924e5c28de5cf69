//! The StatefulSet controller (pkg/controller/statefulset, `updateStatefulSet` in
//! stateful_set_control.go), as kube-controller-manager 1.26 runs it: pods `<set>-<ordinal>`
//! for the ordinals `0..replicas`, each with a stable identity (hostname, subdomain, the
//! `statefulset.kubernetes.io/pod-name` label, and from 1.28 `apps.kubernetes.io/pod-index`;
//! claims named after the ordinal); with `podManagementPolicy: OrderedReady` (the default) a pod is created only
//! once every lower ordinal is Running and Ready, and the highest surplus pod is removed only
//! once the others are; `Parallel` does both at once. A deleted, failed or finished pod is made
//! again under the same name once the old one is gone, and a changed template is rolled out
//! from the highest ordinal (`RollingUpdate`, the default, down to `partition`; not `OnDelete`).
//!
//! Before a pod is made, the PersistentVolumeClaims of its `volumeClaimTemplates` that do not
//! exist yet are created (`createPersistentVolumeClaims`): `<template>-<set>-<ordinal>`, with
//! the selector's labels, no owner (no `persistentVolumeClaimRetentionPolicy`, which 1.26 does
//! not have: they are kept when pods are deleted, the set is scaled down or deleted, as the
//! Bitnami chart CSM pins leaves them) and the `kubernetes.io/pvc-protection` finalizer the
//! admission plugin adds; then the pod. A claim that exists but is being deleted (its old pod
//! was still using it) holds its pod back until it is gone, when the claim is made again
//! (`pvc <name> is being deleted`); with `OrderedReady` it holds the pods after it too. A new
//! claim is `Pending` until the volume controller binds it (`volumes`), and the scheduler
//! places a pod only once its claims are bound (`kubelet`).
//!
//! Not simulated: ControllerRevision objects (a revision is `<set>-<hash of the template>`, so
//! a pod below a rolling update's partition is made from the current template), Events,
//! `persistentVolumeClaimRetentionPolicy` (1.27+), `minReadySeconds` (available means ready),
//! `spec.ordinals`, `maxUnavailable` and the adoption of orphaned pods.

use std::cmp::Reverse;

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS, STATEFULSETS};
use super::ctx::{Ctx, all, generation, log_err, owned_by};
use super::replicaset::{delete_pod, is_ready, pod_from_template};
use super::volumes::PVC_PROTECTION;
use crate::kube::options::KubeVersion;

const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const REVISION_LABEL: &str = "controller-revision-hash";

/// Whether pods carry [`POD_INDEX_LABEL`] (the PodIndexLabel feature, 1.28 and later).
fn pod_index_label(ctx: &Ctx) -> bool {
    ctx.opts.kubernetes_version >= KubeVersion::new(1, 28)
}

/// `getParentNameAndOrdinal`: the name is `(.*)-([0-9]+)$`, the ordinal a 32-bit integer.
fn parent_and_ordinal(name: &str) -> Option<(&str, usize)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ordinal = usize::try_from(ordinal.parse::<i32>().ok()?).ok()?;
    Some((parent, ordinal))
}

fn phase(pod: &Value) -> Option<&str> {
    pod.pointer("/status/phase").and_then(Value::as_str)
}

/// `isRunningAndReady`.
fn running_and_ready(pod: &Value) -> bool {
    phase(pod) == Some("Running") && is_ready(pod)
}

/// `isHealthy`.
fn healthy(pod: &Value) -> bool {
    running_and_ready(pod) && !meta::is_deleting(pod)
}

/// A non-negative count in the spec, such as `replicas`.
fn spec_count(set: &Value, field: &str, default: i64) -> usize {
    set.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(default)
        .max(0) as usize
}

/// `updateStrategy.type` is `RollingUpdate` (the default) rather than `OnDelete`.
fn rolling_update(set: &Value) -> bool {
    set.pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        != Some("OnDelete")
}

fn revision(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Value::as_str)
}

/// `newStatefulSetPod` + `setPodRevision`: the template's pod, named for its ordinal, with the
/// identity of `initIdentity` and the volumes of `updateStorage`.
fn new_pod(set: &Value, ordinal: usize, revision: &str, index_label: bool) -> Value {
    let set_name = meta::name(set).unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    // GetPodFromTemplate sets generateName `<set>-` too; the name wins.
    let mut pod = pod_from_template(set, &template);
    pod["metadata"]["name"] = json!(name);
    let labels = &mut pod["metadata"]["labels"];
    labels[POD_NAME_LABEL] = json!(name);
    if index_label {
        labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
    }
    labels[REVISION_LABEL] = json!(revision);
    pod["spec"]["hostname"] = json!(name);
    if let Some(service) = set
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(service);
    }
    let claims: Vec<&str> = set
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes: Vec<Value> = claims
            .iter()
            .map(|c| {
                json!({
                    "name": c,
                    "persistentVolumeClaim": { "claimName": format!("{c}-{set_name}-{ordinal}") },
                })
            })
            .collect();
        if let Some(own) = pod.pointer("/spec/volumes").and_then(Value::as_array) {
            volumes.extend(
                own.iter()
                    .filter(|v| {
                        !v.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| claims.contains(&n))
                    })
                    .cloned(),
            );
        }
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

/// `createPersistentVolumeClaims`: the claims of member `ordinal` that do not exist yet;
/// Err when one of them exists but is being deleted (the pod must wait for it to go).
fn create_claims(ctx: &Ctx, set: &Value, ordinal: usize) -> Result<(), String> {
    let ns = meta::namespace(set).unwrap_or_default();
    let set_name = meta::name(set).unwrap_or_default();
    let templates = set
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selector = set
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or(json!({}));
    for template in templates {
        let Some(claim) = template.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let name = format!("{claim}-{set_name}-{ordinal}");
        if let Some(existing) = ctx.store.try_get(&PERSISTENTVOLUMECLAIMS, ns, &name) {
            if meta::is_deleting(&existing) {
                return Err(format!("pvc {name} is being deleted"));
            }
            continue;
        }
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if let (Some(labels), Some(selector)) = (labels.as_object_mut(), selector.as_object()) {
            labels.extend(selector.clone());
        }
        let pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "finalizers": [PVC_PROTECTION],
            },
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
        });
        log_err(
            "create persistentvolumeclaim",
            ctx.store.create(&PERSISTENTVOLUMECLAIMS, ns, pvc, false),
        );
    }
    Ok(())
}

/// `updateIdentity` for a pod whose identity labels were changed (`identityMatches` fails).
fn restore_identity(ctx: &Ctx, pod: &Value, ordinal: usize) {
    let name = meta::name(pod).unwrap_or_default().to_string();
    let labels = pod.pointer("/metadata/labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let index_label = pod_index_label(ctx);
    if label(POD_NAME_LABEL) == Some(name.as_str())
        && (!index_label || label(POD_INDEX_LABEL) == Some(ordinal.to_string().as_str()))
    {
        return;
    }
    log_err(
        "restore pod identity",
        ctx.modify(&PODS, pod, |p| {
            p["metadata"]["labels"][POD_NAME_LABEL] = json!(name);
            if index_label {
                p["metadata"]["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
            }
        }),
    );
}

pub fn reconcile(ctx: &Ctx) {
    let pods = all(ctx, &PODS);
    for set in all(ctx, &STATEFULSETS) {
        let name = meta::name(&set).unwrap_or_default();
        // `getPodsForStatefulSet`: the pods it controls whose names make them its members.
        let members: Vec<(usize, &Value)> = owned_by(&pods, &set)
            .filter_map(|p| {
                let (parent, ordinal) = parent_and_ordinal(meta::name(p)?)?;
                (parent == name).then_some((ordinal, p))
            })
            .collect();
        let update_revision = format!(
            "{name}-{}",
            meta::short_hash(set.pointer("/spec/template").unwrap_or(&Value::Null))
        );
        // Without a recorded current revision, the history starts at the update revision.
        let current_revision = set
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .unwrap_or(&update_revision)
            .to_string();
        // A StatefulSet being deleted only gets its status updated.
        if !meta::is_deleting(&set) {
            act(ctx, &set, &members, &update_revision);
        }
        update_status(ctx, &set, &members, &current_revision, &update_revision);
    }
}

/// Creates, deletes and replaces pods, one step at a time unless the policy is `Parallel`.
fn act(ctx: &Ctx, set: &Value, members: &[(usize, &Value)], update_revision: &str) {
    let ns = meta::namespace(set).unwrap_or_default();
    let replicas = spec_count(set, "replicas", 1);
    let monotonic = set
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
        != Some("Parallel");
    let mut slots: Vec<Option<&Value>> = vec![None; replicas];
    let mut condemned: Vec<(usize, &Value)> = Vec::new();
    for &(ordinal, pod) in members {
        match slots.get_mut(ordinal) {
            Some(slot) => *slot = Some(pod),
            None => condemned.push((ordinal, pod)),
        }
    }
    condemned.sort_by_key(|&(ordinal, _)| Reverse(ordinal));

    // `processReplica`, in ordinal order; in monotonic mode the first pod that is not Running
    // and Ready (or was just created) stops the pass.
    for (ordinal, slot) in slots.iter().enumerate() {
        let blocks = match slot {
            // A failed or finished pod is deleted; its successor comes once it is gone.
            Some(pod) if matches!(phase(pod), Some("Failed" | "Succeeded")) => {
                if !meta::is_deleting(pod) {
                    delete_pod(ctx, pod);
                }
                true
            }
            Some(pod) if meta::is_deleting(pod) || !running_and_ready(pod) => true,
            Some(pod) => {
                restore_identity(ctx, pod, ordinal);
                false
            }
            // While a pod of that name is still there (an earlier incarnation terminating),
            // the create fails with AlreadyExists, as on a real server, and is retried on the
            // next change.
            None => {
                match create_claims(ctx, set, ordinal) {
                    Ok(()) => {
                        let pod = new_pod(set, ordinal, update_revision, pod_index_label(ctx));
                        log_err("create pod", ctx.store.create(&PODS, ns, pod, false));
                    }
                    Err(why) => {
                        tracing::debug!(pod = %format!("{}-{ordinal}", meta::name(set).unwrap_or_default()), %why, "sim statefulset: pod not created")
                    }
                }
                true
            }
        };
        if blocks && monotonic {
            return;
        }
    }

    // `processCondemned`, from the highest ordinal: in monotonic mode one at a time, after the
    // previous one is gone, and only while the rest are healthy (the lowest unhealthy surplus
    // pod may go first).
    let first_unhealthy = condemned
        .iter()
        .rev()
        .find(|(_, p)| !healthy(p))
        .map(|&(ordinal, _)| ordinal);
    for &(ordinal, pod) in &condemned {
        if meta::is_deleting(pod) {
            if monotonic {
                return;
            }
            continue;
        }
        if monotonic && !running_and_ready(pod) && Some(ordinal) != first_unhealthy {
            return;
        }
        delete_pod(ctx, pod);
        if monotonic {
            return;
        }
    }

    // Rolling update: the highest pod at another revision is deleted (and made again at the
    // update revision) once every pod above it is healthy.
    if !rolling_update(set) {
        return;
    }
    let partition = spec_count(set, "updateStrategy/rollingUpdate/partition", 0);
    for slot in slots.iter().skip(partition).rev() {
        let Some(pod) = slot else { return };
        if revision(pod) != Some(update_revision) && !meta::is_deleting(pod) {
            delete_pod(ctx, pod);
            return;
        }
        if !healthy(pod) {
            return;
        }
    }
}

/// `updateStatus` (`computeReplicaStatus`) and `completeRollingUpdate`.
fn update_status(
    ctx: &Ctx,
    set: &Value,
    members: &[(usize, &Value)],
    current_revision: &str,
    update_revision: &str,
) {
    let count = |f: &dyn Fn(&Value) -> bool| members.iter().filter(|(_, p)| f(p)).count();
    let replicas = members.len();
    let ready = count(&running_and_ready);
    let live_at = |rev: &str| count(&|p| !meta::is_deleting(p) && revision(p) == Some(rev));
    let (mut current, updated) = (live_at(current_revision), live_at(update_revision));
    let mut current_revision = current_revision;
    if rolling_update(set) && updated == replicas && ready == replicas {
        current = updated;
        current_revision = update_revision;
    }
    let mut status = json!({
        "observedGeneration": generation(set),
        "replicas": replicas,
        // minReadySeconds is not simulated: a ready pod is available at once.
        "availableReplicas": ready,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": set.pointer("/status/collisionCount").cloned().unwrap_or(json!(0)),
    });
    // These are `omitempty` in apps/v1; replicas and availableReplicas are not.
    for (field, n) in [
        ("readyReplicas", ready),
        ("currentReplicas", current),
        ("updatedReplicas", updated),
    ] {
        if n > 0 {
            status[field] = json!(n);
        }
    }
    log_err(
        "update statefulset status",
        ctx.modify(&STATEFULSETS, set, |s| s["status"] = status),
    );
}
