//! The volume controllers: `pvc-protection` (pkg/controller/volume/pvcprotection), and the
//! PersistentVolume controller with a dynamic provisioner behind the claims' storage class,
//! binding mode `Immediate` (CSM's Ceph classes): a new claim is `Pending` (the API server's
//! default) until its volume is provisioned and bound, then `Bound` to the volume
//! `pvc-<claim uid>`, with the annotations `pv.kubernetes.io/bind-completed` and
//! `pv.kubernetes.io/bound-by-controller`, the requested capacity and access modes. The
//! PersistentVolume objects themselves are not simulated.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS};
use super::ctx::{Ctx, all, log_err};

/// The finalizer that keeps a PVC while a pod uses it (see [`pvc_protection`]).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The `pvc-protection` controller (pkg/controller/volume/pvcprotection): a PVC being deleted
/// keeps its finalizer while a pod that is not finished uses it, so it goes only once its pods
/// have (which is why CSM scales a StatefulSet to 0 before deleting its PVCs).
pub fn pvc_protection(ctx: &Ctx) {
    let pods = all(ctx, &PODS);
    for pvc in all(ctx, &PERSISTENTVOLUMECLAIMS) {
        if !meta::is_deleting(&pvc) || !meta::finalizers(&pvc).iter().any(|f| f == PVC_PROTECTION) {
            continue;
        }
        let ns = meta::namespace(&pvc).unwrap_or_default();
        let name = meta::name(&pvc).unwrap_or_default();
        let in_use = pods.iter().any(|pod| {
            meta::namespace(pod) == Some(ns)
                && !matches!(
                    pod.pointer("/status/phase").and_then(Value::as_str),
                    Some("Failed" | "Succeeded")
                )
                && pod
                    .pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .is_some_and(|vs| {
                        vs.iter().any(|v| {
                            v.pointer("/persistentVolumeClaim/claimName")
                                .and_then(Value::as_str)
                                == Some(name)
                        })
                    })
        });
        if !in_use {
            log_err(
                "remove pvc-protection",
                ctx.modify(&PERSISTENTVOLUMECLAIMS, &pvc, |p| {
                    if let Some(fs) = p
                        .pointer_mut("/metadata/finalizers")
                        .and_then(Value::as_array_mut)
                    {
                        fs.retain(|f| f != PVC_PROTECTION);
                    }
                }),
            );
        }
    }
}

/// The PersistentVolume controller's binding of new claims, after the provisioner's delay
/// (half the kubelet's start-up delay).
#[derive(Default)]
pub struct Binder {
    binding: HashSet<String>,
}

fn bound(pvc: &Value) -> bool {
    pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound")
}

impl Binder {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let pvcs = all(ctx, &PERSISTENTVOLUMECLAIMS);
        let live: HashSet<&str> = pvcs.iter().filter_map(meta::uid).collect();
        self.binding.retain(|uid| live.contains(uid.as_str()));
        for pvc in pvcs {
            let Some(uid) = meta::uid(&pvc).map(str::to_owned) else {
                continue;
            };
            if bound(&pvc) || meta::is_deleting(&pvc) || !self.binding.insert(uid.clone()) {
                continue;
            }
            let ctx2 = ctx.clone();
            let delay = ctx.opts.kubelet_ready_delay / 2;
            ctx.spawn(async move {
                tokio::time::sleep(delay).await;
                log_err(
                    "bind persistentvolumeclaim",
                    ctx2.modify(&PERSISTENTVOLUMECLAIMS, &pvc, |p| {
                        if bound(p) || meta::is_deleting(p) {
                            return;
                        }
                        let annotations = &mut p["metadata"]["annotations"];
                        if !annotations.is_object() {
                            *annotations = json!({});
                        }
                        annotations["pv.kubernetes.io/bind-completed"] = json!("yes");
                        annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
                        p["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
                        let modes = p.pointer("/spec/accessModes").cloned().unwrap_or(json!([]));
                        let mut status = json!({ "phase": "Bound", "accessModes": modes });
                        if let Some(size) = p.pointer("/spec/resources/requests/storage") {
                            status["capacity"] = json!({ "storage": size });
                        }
                        p["status"] = status;
                    }),
                );
            });
        }
    }
}
