//! The Deployment controller: one ReplicaSet per pod template (`<deploy>-<pod-template-hash>`),
//! older ones scaled to zero, and the Deployment's status summed from its ReplicaSets.

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{DEPLOYMENTS, REPLICASETS};
use super::ctx::{Ctx, all, generation, log_err, owned_by};

const HASH_LABEL: &str = "pod-template-hash";

fn desired_rs(deploy: &Value, hash: &str) -> Value {
    let name = format!("{}-{hash}", meta::name(deploy).unwrap_or_default());
    let mut template = deploy
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = deploy
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": template["metadata"]["labels"].clone(),
            "annotations": { "deployment.kubernetes.io/revision": "1" },
            "ownerReferences": [meta::controller_ref(deploy)],
        },
        "spec": {
            "replicas": deploy.pointer("/spec/replicas").cloned().unwrap_or(json!(1)),
            "selector": selector,
            "template": template,
        },
    })
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub fn reconcile(ctx: &Ctx) {
    let replicasets = all(ctx, &REPLICASETS);
    for deploy in all(ctx, &DEPLOYMENTS) {
        if meta::is_deleting(&deploy) {
            continue;
        }
        let ns = meta::namespace(&deploy).unwrap_or_default().to_string();
        let hash = meta::short_hash(deploy.pointer("/spec/template").unwrap_or(&Value::Null));
        let current_name = format!("{}-{hash}", meta::name(&deploy).unwrap_or_default());
        let replicas = deploy
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let owned: Vec<&Value> = owned_by(&replicasets, &deploy).collect();
        if !owned
            .iter()
            .any(|rs| meta::name(rs) == Some(current_name.as_str()))
        {
            log_err(
                "create replicaset",
                ctx.store
                    .create(&REPLICASETS, &ns, desired_rs(&deploy, &hash), false),
            );
        }
        for rs in &owned {
            let want = if meta::name(rs) == Some(current_name.as_str()) {
                replicas
            } else {
                0
            };
            log_err(
                "scale replicaset",
                ctx.modify(&REPLICASETS, rs, |r| r["spec"]["replicas"] = json!(want)),
            );
        }
        let sum = |p: &str| owned.iter().map(|rs| int(rs, p)).sum::<i64>();
        let updated = owned
            .iter()
            .filter(|rs| meta::name(rs) == Some(current_name.as_str()))
            .map(|rs| int(rs, "/status/replicas"))
            .sum::<i64>();
        let available = sum("/status/availableReplicas");
        let generation = generation(&deploy);
        let available_cond = available >= replicas;
        log_err(
            "update deployment status",
            ctx.modify(&DEPLOYMENTS, &deploy, |d| {
                let old_conditions = d.pointer("/status/conditions").cloned();
                let transition = |kind: &str, status: &str| {
                    old_conditions
                        .as_ref()
                        .and_then(Value::as_array)
                        .and_then(|cs| {
                            cs.iter().find(|c| {
                                c["type"] == kind && c["status"] == status
                            })
                        })
                        .and_then(|c| c.get("lastTransitionTime").cloned())
                        .unwrap_or_else(|| json!(meta::now()))
                };
                let avail_status = if available_cond { "True" } else { "False" };
                d["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": sum("/status/replicas"),
                    "updatedReplicas": updated,
                    "readyReplicas": sum("/status/readyReplicas"),
                    "availableReplicas": available,
                    "unavailableReplicas": (replicas - available).max(0),
                    "conditions": [
                        {
                            "type": "Available",
                            "status": avail_status,
                            "reason": if available_cond { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                            "message": if available_cond { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                            "lastTransitionTime": transition("Available", avail_status),
                            "lastUpdateTime": transition("Available", avail_status),
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                            "message": format!("ReplicaSet \"{current_name}\" has successfully progressed."),
                            "lastTransitionTime": transition("Progressing", "True"),
                            "lastUpdateTime": transition("Progressing", "True"),
                        },
                    ],
                });
            }),
        );
    }
}
