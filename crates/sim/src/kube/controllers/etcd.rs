//! A stand-in for the etcd operator: a new EtcdCluster gets the operator's finalizer and
//! `status.phase: Creating`, then `Running` with its members after `etcd_operator_delay`
//! (never, with the never-ready annotation). When deleted, the operator tears the members
//! down and removes its finalizer, so the object goes away.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::ETCDCLUSTERS;
use super::{Ctx, NEVER_READY, all, log_err};

/// The operator's finalizer (the simulator's choice: it makes deletion observable as
/// "deletionTimestamp first, gone later", which is how CSM's operator-managed clusters behave).
pub const FINALIZER: &str = "etcd.database.coreos.com/etcd-operator";

#[derive(Default)]
pub struct Operator {
    starting: HashSet<String>,
    finalizing: HashSet<String>,
}

fn phase(c: &Value) -> Option<&str> {
    c.pointer("/status/phase").and_then(Value::as_str)
}

fn running(c: &mut Value) {
    let name = meta::name(c).unwrap_or_default().to_string();
    let size = c.pointer("/spec/size").and_then(Value::as_i64).unwrap_or(3);
    let version = c
        .pointer("/spec/version")
        .cloned()
        .unwrap_or(json!("3.3.8"));
    let members: Vec<String> = (0..size)
        .map(|_| format!("{name}-{}", meta::random_suffix(10)))
        .collect();
    let now = meta::now();
    c["status"] = json!({
        "phase": "Running",
        "size": size,
        "serviceName": format!("{name}-client"),
        "clientPort": 2379,
        "currentVersion": version,
        "targetVersion": "",
        "members": { "ready": members },
        "conditions": [{
            "type": "Available",
            "status": "True",
            "reason": "Cluster available",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }],
    });
}

impl Operator {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let clusters = all(ctx, &ETCDCLUSTERS);
        let live: HashSet<&str> = clusters.iter().filter_map(meta::uid).collect();
        self.starting.retain(|u| live.contains(u.as_str()));
        self.finalizing.retain(|u| live.contains(u.as_str()));
        for cluster in clusters {
            let Some(uid) = meta::uid(&cluster).map(str::to_string) else {
                continue;
            };
            let ours = meta::finalizers(&cluster).iter().any(|f| f == FINALIZER);
            if meta::is_deleting(&cluster) {
                if ours && self.finalizing.insert(uid) {
                    let ctx2 = ctx.clone();
                    // Tearing down members takes a moment; half the start-up delay.
                    let delay = ctx.opts.etcd_operator_delay / 2 + Duration::from_millis(1);
                    ctx.spawn(async move {
                        tokio::time::sleep(delay).await;
                        log_err(
                            "remove etcd finalizer",
                            ctx2.modify(&ETCDCLUSTERS, &cluster, |c| {
                                let f: Vec<String> = meta::finalizers(c)
                                    .into_iter()
                                    .filter(|f| f != FINALIZER)
                                    .collect();
                                meta::set_finalizers(c, &f);
                            }),
                        );
                    });
                }
                continue;
            }
            if !ours || phase(&cluster).is_none() {
                log_err(
                    "adopt etcd cluster",
                    ctx.modify(&ETCDCLUSTERS, &cluster, |c| {
                        let mut f = meta::finalizers(c);
                        if !f.iter().any(|x| x == FINALIZER) {
                            f.push(FINALIZER.to_string());
                        }
                        meta::set_finalizers(c, &f);
                        if c.pointer("/status/phase").is_none() {
                            c["status"] = json!({ "phase": "Creating", "size": 0 });
                        }
                    }),
                );
                continue;
            }
            if phase(&cluster) == Some("Creating")
                && meta::annotation(&cluster, NEVER_READY) != Some("true")
                && self.starting.insert(uid)
            {
                let ctx2 = ctx.clone();
                let delay = ctx.opts.etcd_operator_delay;
                ctx.spawn(async move {
                    tokio::time::sleep(delay).await;
                    log_err(
                        "etcd cluster running",
                        ctx2.modify(&ETCDCLUSTERS, &cluster, |c| {
                            if !meta::is_deleting(c) {
                                running(c);
                            }
                        }),
                    );
                });
            }
        }
    }
}
