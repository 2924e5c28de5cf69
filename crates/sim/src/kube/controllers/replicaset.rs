//! The ReplicaSet controller: keeps `spec.replicas` active pods (terminating and finished pods
//! do not count, so a deleted pod is replaced at once) and reports status.

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{PODS, REPLICASETS};
use super::super::store::DeleteOptions;
use super::ctx::{Ctx, all, generation, log_err, owned_by};

pub fn is_active(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// A pod from a controller's pod template (`metadata` and `spec` of the template).
pub fn pod_from_template(owner: &Value, template: &Value) -> Value {
    let mut md = json!({
        "generateName": format!("{}-", meta::name(owner).unwrap_or_default()),
        "ownerReferences": [meta::controller_ref(owner)],
    });
    for f in ["labels", "annotations"] {
        if let Some(v) = template.pointer(&format!("/metadata/{f}")) {
            md[f] = v.clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Deletes a pod as a controller does (default grace period, no preconditions).
pub fn delete_pod(ctx: &Ctx, pod: &Value) {
    log_err(
        "delete pod",
        ctx.store.delete(
            &PODS,
            meta::namespace(pod).unwrap_or_default(),
            meta::name(pod).unwrap_or_default(),
            &DeleteOptions::default(),
        ),
    );
}

pub fn reconcile(ctx: &Ctx) {
    let pods = all(ctx, &PODS);
    for rs in all(ctx, &REPLICASETS) {
        let ns = meta::namespace(&rs).unwrap_or_default().to_string();
        let desired = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let mut active: Vec<&Value> = owned_by(&pods, &rs).filter(|p| is_active(p)).collect();
        let count = active.len() as i64;
        if count < desired && !meta::is_deleting(&rs) {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in count..desired {
                let pod = pod_from_template(&rs, &template);
                log_err("create pod", ctx.store.create(&PODS, &ns, pod, false));
            }
        } else if count > desired {
            // Scale down the least useful pods first: not ready, then the newest.
            active.sort_by_key(|p| {
                (
                    is_ready(p),
                    std::cmp::Reverse(
                        p.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ),
                )
            });
            for p in active.iter().take((count - desired) as usize) {
                delete_pod(ctx, p);
            }
        }
        let active: Vec<&Value> = owned_by(&pods, &rs).filter(|p| is_active(p)).collect();
        let ready = active.iter().filter(|p| is_ready(p)).count();
        let generation = generation(&rs);
        log_err(
            "update replicaset status",
            ctx.modify(&REPLICASETS, &rs, |r| {
                r["status"] = json!({
                    "replicas": active.len(),
                    "fullyLabeledReplicas": active.len(),
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": generation,
                });
            }),
        );
    }
}
