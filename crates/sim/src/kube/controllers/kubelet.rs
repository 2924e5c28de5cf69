//! The kubelet (and the scheduler): schedules new pods onto a node once the claims of their
//! volumes are bound (else the pod stays `Pending`, `PodScheduled` False with the scheduler's
//! reason), starts them after `kubelet_ready_delay`
//! (Running, Ready unless annotated never-ready) and removes terminating pods after
//! `pod_termination_delay` (standing in for the grace period), once their containers have
//! stopped (a real etcd's process has ended: its successor must not meet it). A Bitnami etcd pod whose etcd
//! runs for real gets a loopback address as its pod IP and starts not Ready: its readiness
//! probe is the real etcd's health (`etcd_member`).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS};
use super::super::store::DeleteOptions;
use super::{
    annotations::NEVER_READY,
    ctx::{Ctx, all, log_err},
};

const NODE: &str = "ncn-w001";

#[derive(Default)]
pub struct Kubelet {
    starting: HashSet<String>,
    stopping: HashSet<String>,
}

fn container_names(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn condition(kind: &str, ok: bool, now: &str) -> Value {
    let mut c = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now,
    });
    if !ok {
        c["reason"] = json!("ContainersNotReady");
    }
    c
}

/// Starts the pod's containers: Running, Ready unless annotated never-ready or `real_ip` is
/// given (the pod of a real etcd member, whose probe decides), with `real_ip` as its IP (else
/// a random one: nothing listens there).
fn start(pod: &mut Value, real_ip: Option<std::net::Ipv4Addr>) {
    let now = meta::now();
    let ready = meta::annotation(pod, NEVER_READY) != Some("true") && real_ip.is_none();
    let statuses: Vec<Value> = container_names(pod)
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let image = pod
                .pointer(&format!("/spec/containers/{i}/image"))
                .cloned()
                .unwrap_or(json!(""));
            json!({
                "name": name,
                "image": image,
                "imageID": "",
                "containerID": format!("containerd://{}", meta::new_uid().replace('-', "")),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let ip = real_ip.map_or_else(
        || {
            format!(
                "10.32.{}.{}",
                rand::random::<u8>(),
                rand::random::<u8>().max(2)
            )
        },
        |ip| ip.to_string(),
    );
    pod["status"]["phase"] = json!("Running");
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{ "ip": ip }]);
    pod["status"]["containerStatuses"] = json!(statuses);
    pod["status"]["conditions"] = json!([
        condition("Initialized", true, &now),
        condition("Ready", ready, &now),
        condition("ContainersReady", ready, &now),
        condition("PodScheduled", true, &now),
    ]);
}

/// Why the scheduler cannot place `pod` (its VolumeBinding plugin: a claim that does not
/// exist, is being deleted, or is not bound yet), if it cannot.
fn unschedulable(pod: &Value, pvcs: &[Value]) -> Option<String> {
    let ns = meta::namespace(pod);
    let claims = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str());
    for claim in claims {
        let pvc = pvcs
            .iter()
            .find(|p| meta::namespace(p) == ns && meta::name(p) == Some(claim));
        match pvc {
            None => return Some(format!("persistentvolumeclaim \"{claim}\" not found")),
            Some(pvc) if meta::is_deleting(pvc) => {
                return Some(format!(
                    "persistentvolumeclaim \"{claim}\" is being deleted"
                ));
            }
            Some(pvc) if pvc.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") => {
                return Some("pod has unbound immediate PersistentVolumeClaims".into());
            }
            Some(_) => {}
        }
    }
    None
}

impl Kubelet {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let pods = all(ctx, &PODS);
        let pvcs = all(ctx, &PERSISTENTVOLUMECLAIMS);
        let live: HashSet<String> = pods
            .iter()
            .filter_map(|p| meta::uid(p).map(str::to_string))
            .collect();
        self.starting.retain(|u| live.contains(u));
        self.stopping.retain(|u| live.contains(u));
        for pod in pods {
            let Some(uid) = meta::uid(&pod).map(str::to_string) else {
                continue;
            };
            let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
            if meta::is_deleting(&pod) {
                if self.stopping.insert(uid.clone()) {
                    let ctx2 = ctx.clone();
                    let delay = ctx.opts.pod_termination_delay;
                    ctx.spawn(async move {
                        tokio::time::sleep(delay).await;
                        // The pod goes only once its containers have stopped.
                        if let Some(containers) = &ctx2.containers {
                            containers.stop_container(&uid).await;
                        }
                        let opts = DeleteOptions {
                            grace_period_seconds: Some(0),
                            precondition_uid: Some(uid),
                            ..Default::default()
                        };
                        let ns = meta::namespace(&pod).unwrap_or_default();
                        let name = meta::name(&pod).unwrap_or_default();
                        log_err(
                            "remove terminated pod",
                            ctx2.store.delete(&PODS, ns, name, &opts),
                        );
                    });
                }
            } else if node.is_none_or(str::is_empty) {
                if let Some(why) = unschedulable(&pod, &pvcs) {
                    let message = format!("0/1 nodes are available: {why}.");
                    let said = pod
                        .pointer("/status/conditions/0/message")
                        .and_then(Value::as_str);
                    if said != Some(message.as_str()) {
                        log_err(
                            "report unschedulable pod",
                            ctx.modify(&PODS, &pod, |p| {
                                let mut c = condition("PodScheduled", false, &meta::now());
                                c["reason"] = json!("Unschedulable");
                                c["message"] = json!(message);
                                p["status"]["conditions"] = json!([c]);
                            }),
                        );
                    }
                    continue;
                }
                log_err(
                    "schedule pod",
                    ctx.modify(&PODS, &pod, |p| {
                        p["spec"]["nodeName"] = json!(NODE);
                        p["status"]["hostIP"] = json!("10.252.1.7");
                        p["status"]["startTime"] = json!(meta::now());
                        p["status"]["conditions"] =
                            json!([condition("PodScheduled", true, &meta::now())]);
                    }),
                );
            } else if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Pending")
                && self.starting.insert(uid)
            {
                let ctx2 = ctx.clone();
                let delay = ctx.opts.kubelet_ready_delay;
                ctx.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let name = meta::name(&pod).unwrap_or_default().to_string();
                    let r = ctx2.modify(&PODS, &pod, |p| {
                        if !meta::is_deleting(p) {
                            let real_ip = ctx2.containers.as_ref().and_then(|c| c.pod_ip(p));
                            start(p, real_ip);
                        }
                    });
                    if let Ok(p) = &r {
                        ctx2.store.append_log(
                            p,
                            [format!("{} level=info msg=\"{name} started\"", meta::now())],
                        );
                    }
                    log_err("start pod", r);
                });
            }
        }
    }
}
