//! A stand-in for the etcd operator: a new EtcdCluster gets the operator's finalizer and
//! `status.phase: Creating`, its client Service `<name>-client` and peer Service `<name>`
//! (headless) and `spec.size` member pods `<name>-<random>` labelled `app=etcd,
//! etcd_cluster=<name>` (all owned by the EtcdCluster, as the real operator makes them), then
//! `Running` with its members after `etcd_operator_delay` (never, with the never-ready
//! annotation). When deleted, the operator tears the members down and removes its finalizer,
//! so the object goes away (the garbage collector takes the pods and Services).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{ETCDBACKUPS, ETCDCLUSTERS, PODS, SERVICES};
use super::super::store::Store;
use super::{
    annotations::NEVER_READY,
    ctx::{Ctx, all, log_err},
};

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

/// The operator's labels of a cluster's members and Services.
fn member_labels(name: &str) -> Value {
    json!({ "app": "etcd", "etcd_cluster": name })
}

/// The client Service `<name>-client`, the peer Service `<name>` and `spec.size` member pods,
/// owned by the cluster `c` (pkg/cluster and pkg/util/k8sutil of etcd-operator).
fn create_members(store: &Store, c: &Value) {
    let ns = meta::namespace(c).unwrap_or_default().to_string();
    let size = c.pointer("/spec/size").and_then(Value::as_i64).unwrap_or(3);
    create_services(store, c);
    for _ in 0..size {
        log_err(
            "create etcd member pod",
            store.create(&PODS, &ns, member_pod(c, json!({})), false),
        );
    }
}

/// The client Service `<name>-client` and the peer Service `<name>` of the cluster `c` (the
/// operator sets them up for a new cluster, and for one it finds already `Running`, as the
/// restore operator creates a restored one). Existing ones are left alone.
fn create_services(store: &Store, c: &Value) {
    let name = meta::name(c).unwrap_or_default().to_string();
    let ns = meta::namespace(c).unwrap_or_default().to_string();
    let owner = json!([meta::controller_ref(c)]);
    let labels = member_labels(&name);
    let client = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": format!("{name}-client"), "labels": labels, "ownerReferences": owner },
        "spec": {
            "selector": labels,
            "ports": [{ "name": "client", "port": 2379, "protocol": "TCP", "targetPort": 2379 }],
        },
    });
    let peer = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "labels": labels, "ownerReferences": owner },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": labels,
            "ports": [
                { "name": "client", "port": 2379, "protocol": "TCP", "targetPort": 2379 },
                { "name": "peer", "port": 2380, "protocol": "TCP", "targetPort": 2380 },
            ],
        },
    });
    for service in [client, peer] {
        log_err(
            "create etcd Service",
            store.create(&SERVICES, &ns, service, false),
        );
    }
}

/// A member pod `<name>-<random>` of the cluster `c`, owned by it, with `annotations` added to
/// the cluster's `spec.pod.annotations`.
pub fn member_pod(c: &Value, extra: Value) -> Value {
    let name = meta::name(c).unwrap_or_default().to_string();
    let version = c
        .pointer("/spec/version")
        .and_then(Value::as_str)
        .unwrap_or("3.3.8");
    let repository = c
        .pointer("/spec/repository")
        .and_then(Value::as_str)
        .unwrap_or("quay.io/coreos/etcd");
    let mut annotations = c
        .pointer("/spec/pod/annotations")
        .cloned()
        .unwrap_or(json!({}));
    if meta::annotation(c, NEVER_READY) == Some("true") {
        annotations[NEVER_READY] = json!("true");
    }
    if let (Some(into), Some(extra)) = (annotations.as_object_mut(), extra.as_object()) {
        into.extend(extra.clone());
    }
    let member = format!("{name}-{}", meta::random_suffix(10));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": member,
            "labels": member_labels(&name),
            "annotations": annotations,
            "ownerReferences": [meta::controller_ref(c)],
        },
        "spec": {
            "hostname": member,
            "subdomain": name,
            "containers": [{
                "name": "etcd",
                "image": format!("{repository}:v{version}"),
                "ports": [
                    { "name": "client", "containerPort": 2379 },
                    { "name": "peer", "containerPort": 2380 },
                ],
            }],
        },
    })
}

/// A Running cluster (not paused) with fewer member pods than `spec.size`, as the restore
/// operator leaves one (its seed member only): the operator adds the missing members and
/// records them in the status.
fn add_missing_members(ctx: &Ctx, c: &Value) {
    let size = c.pointer("/spec/size").and_then(Value::as_i64).unwrap_or(3);
    let pods = all(ctx, &PODS);
    let have = super::ctx::owned_by(&pods, c)
        .filter(|p| !meta::is_deleting(p))
        .count();
    let Ok(have) = i64::try_from(have) else {
        return;
    };
    if have >= size {
        return;
    }
    let ns = meta::namespace(c).unwrap_or_default().to_string();
    for _ in have..size {
        log_err(
            "add etcd member pod",
            ctx.store
                .create(&PODS, &ns, member_pod(c, json!({})), false),
        );
    }
    let pods = all(ctx, &PODS);
    let mut members: Vec<String> = super::ctx::owned_by(&pods, c)
        .filter(|p| !meta::is_deleting(p))
        .filter_map(meta::name)
        .map(str::to_string)
        .collect();
    members.sort();
    log_err(
        "etcd cluster members added",
        ctx.modify(&ETCDCLUSTERS, c, |c| running(c, &members)),
    );
}

fn running(c: &mut Value, members: &[String]) {
    let name = meta::name(c).unwrap_or_default().to_string();
    let size = c.pointer("/spec/size").and_then(Value::as_i64).unwrap_or(3);
    let version = c
        .pointer("/spec/version")
        .cloned()
        .unwrap_or(json!("3.3.8"));
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
                if phase(&cluster).is_none() {
                    create_members(&ctx.store, &cluster);
                } else {
                    create_services(&ctx.store, &cluster);
                }
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
            let paused = cluster.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
            if phase(&cluster) == Some("Running") && !paused {
                add_missing_members(ctx, &cluster);
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
                    // Read before modifying: the store is locked while `modify` runs.
                    let pods = all(&ctx2, &PODS);
                    let mut members: Vec<String> = super::ctx::owned_by(&pods, &cluster)
                        .filter_map(meta::name)
                        .map(str::to_string)
                        .collect();
                    members.sort();
                    log_err(
                        "etcd cluster running",
                        ctx2.modify(&ETCDCLUSTERS, &cluster, |c| {
                            if !meta::is_deleting(c) {
                                running(c, &members);
                            }
                        }),
                    );
                });
            }
        }
    }
}

/// The clusters backed up daily on the etcd-operator releases ("Backups for etcd-operator
/// Clusters", CSM 1.3: BOS, BSS, CRUS, FAS; and UAS, which the simulated cluster does not have).
pub const BACKED_UP: &[&str] = &["cray-bos", "cray-bss", "cray-crus", "cray-fas"];

/// The S3 bucket of the etcd backups (`list_backups cray-bss` lists `cray-bss/etcd.backup_v...`
/// in it).
pub const BACKUP_BUCKET: &str = "etcd-backup";

/// The Secret with the S3 credentials the backup and restore operators use (`awsSecret`). The
/// CSM 1.3 pages do not name it; this is the name CSM uses for its etcd backups from 1.5.
pub const BACKUP_SECRET: &str = "etcd-backup-s3-credentials";

/// The periodic `EtcdBackup` of `cluster` in `ns`: where the backup operator writes its
/// backups (S3 `etcd-backup/<service>/etcd.backup_v<revision>_<time>`).
pub fn periodic_backup(cluster: &str, ns: &str) -> Value {
    let csm = cluster.strip_suffix("-etcd").unwrap_or(cluster);
    json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2",
        "kind": "EtcdBackup",
        "metadata": {
            "name": format!("{cluster}-cluster-periodic-backup"),
            "labels": { "app.kubernetes.io/name": cluster },
        },
        "spec": {
            "etcdEndpoints": [format!("http://{cluster}-client.{ns}.svc:2379")],
            "storageType": "S3",
            "backupPolicy": { "backupIntervalInSecond": 86400, "maxBackups": 7 },
            "s3": {
                "path": format!("{BACKUP_BUCKET}/{csm}/etcd.backup"),
                "awsSecret": BACKUP_SECRET,
                "endpoint": "http://rgw-vip.nmn",
                "forcePathStyle": true,
            },
        },
    })
}

/// CSM's hourly job that creates the periodic `EtcdBackup` of every backed-up cluster that lacks
/// one ("Rebuild Unhealthy etcd Clusters", CSM 1.3: after a rebuild the old one is deleted and
/// "a new backup will be created that points to the new IP address ... via a cronjob that runs at
/// the top of each hour"). The simulated job runs as soon as a backed-up cluster is `Running`
/// without one, not at the top of the hour.
pub fn backup_cronjob(ctx: &Ctx) {
    if !ctx.store.serves(&ETCDBACKUPS) {
        return;
    }
    for cluster in all(ctx, &ETCDCLUSTERS) {
        let name = meta::name(&cluster).unwrap_or_default().to_string();
        let ns = meta::namespace(&cluster).unwrap_or_default().to_string();
        let backed_up = BACKED_UP.iter().any(|csm| name == format!("{csm}-etcd"));
        if !backed_up || phase(&cluster) != Some("Running") || meta::is_deleting(&cluster) {
            continue;
        }
        let backup = periodic_backup(&name, &ns);
        let backup_name = meta::name(&backup).unwrap_or_default().to_string();
        if ctx.store.try_get(&ETCDBACKUPS, &ns, &backup_name).is_none() {
            log_err(
                "create periodic EtcdBackup",
                ctx.store.create(&ETCDBACKUPS, &ns, backup, false),
            );
        }
    }
}
