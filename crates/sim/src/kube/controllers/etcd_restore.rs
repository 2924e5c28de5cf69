//! A stand-in for the etcd-operator's restore operator (`etcd-restore-operator`,
//! pkg/controller/restore-operator): an `EtcdRestore` without a status is handled once:
//!
//! - its name must be `spec.etcdCluster.name` (else `status.reason` says so);
//! - the reference EtcdCluster must exist (else `status.reason`: "failed to get reference
//!   EtcdCluster");
//! - the reference cluster is deleted, and once it is gone (the etcd operator tears its members
//!   down) an EtcdCluster of the same name, labels, annotations, owner references and spec is
//!   created with `spec.paused: true` and `status.phase: Running`, with one seed member pod
//!   that restores its data from the backup; then `spec.paused` is set to `false` and the etcd
//!   operator adds the other members;
//! - `status.succeeded: true`.
//!
//! The backup: the real seed pod fetches `spec.s3.path` (`<bucket>/<key>`) through the restore
//! operator from S3 and runs `etcdctl snapshot restore` on it. Here the object is its file in
//! the simulated S3's storage (`<root>/<bucket>/<key>`, [`crate::s3`]), and the seed
//! pod carries its path in the annotation [`RESTORE_FROM`], which the real etcd of the cluster
//! (`etcd_member`) restores with `etcdctl snapshot restore`. A backup that does not exist leaves
//! the seed pod failing (never Ready), as the real seed pod's init container fails; the
//! restore's status still says succeeded, as the real operator's does (it only prepares the
//! seed). The `awsSecret` is not read (the simulated cluster has no Secrets).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::super::meta;
use super::super::resources::{ETCDCLUSTERS, ETCDRESTORES, PODS};
use super::super::store::DeleteOptions;
use super::{
    annotations::NEVER_READY,
    ctx::{Ctx, all, log_err},
};

/// Annotation of a seed member pod: the snapshot file its etcd restores its data from.
pub const RESTORE_FROM: &str = "sim.etcd-repopulator.io/restore-from";

#[derive(Default)]
pub struct RestoreOperator {
    handling: HashSet<String>,
}

fn handled(restore: &Value) -> bool {
    restore
        .pointer("/status/succeeded")
        .and_then(Value::as_bool)
        == Some(true)
        || restore
            .pointer("/status/reason")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
}

impl RestoreOperator {
    pub fn reconcile(&mut self, ctx: &Ctx) {
        let restores = all(ctx, &ETCDRESTORES);
        let live: HashSet<&str> = restores.iter().filter_map(meta::uid).collect();
        self.handling.retain(|u| live.contains(u.as_str()));
        for restore in restores {
            let Some(uid) = meta::uid(&restore).map(str::to_string) else {
                continue;
            };
            if handled(&restore) || meta::is_deleting(&restore) || !self.handling.insert(uid) {
                continue;
            }
            let ctx2 = ctx.clone();
            ctx.spawn(async move {
                let verdict = prepare_seed(&ctx2, &restore).await;
                log_err(
                    "report restore status",
                    ctx2.modify(&ETCDRESTORES, &restore, |r| {
                        r["status"] = match &verdict {
                            Ok(()) => json!({ "succeeded": true }),
                            Err(reason) => json!({ "succeeded": false, "reason": reason }),
                        };
                    }),
                );
            });
        }
    }
}

/// `prepareSeed` of the restore operator, for `restore`.
async fn prepare_seed(ctx: &Ctx, restore: &Value) -> Result<(), String> {
    let name = meta::name(restore).unwrap_or_default().to_string();
    let ns = meta::namespace(restore).unwrap_or_default().to_string();
    let reference = restore
        .pointer("/spec/etcdCluster/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name != reference {
        return Err(format!(
            "failed to handle restore CR: EtcdRestore CR name({name}) must be the same as \
             EtcdCluster name({reference})"
        ));
    }
    let fail = |what: String| format!("prepare seed failed: {what}");
    let Some(old) = ctx.store.try_get(&ETCDCLUSTERS, &ns, &reference) else {
        return Err(fail(format!(
            "failed to get reference EtcdCluster({ns}/{reference}): etcdclusters.etcd.database.coreos.com \"{reference}\" not found"
        )));
    };
    let old_uid = meta::uid(&old).unwrap_or_default().to_string();
    let opts = DeleteOptions {
        precondition_uid: Some(old_uid.clone()),
        ..DeleteOptions::default()
    };
    ctx.store
        .delete(&ETCDCLUSTERS, &ns, &reference, &opts)
        .map_err(|e| {
            fail(format!(
                "failed to delete reference EtcdCluster ({ns}/{reference}): {e}"
            ))
        })?;
    // The reference cluster and its member pods must be gone before the new one is created.
    let gone = || {
        let cluster_gone = ctx
            .store
            .try_get(&ETCDCLUSTERS, &ns, &reference)
            .is_none_or(|c| meta::uid(&c) != Some(old_uid.as_str()));
        let pods = all(ctx, &PODS);
        cluster_gone
            && !pods
                .iter()
                .any(|p| meta::controller_uid(p) == Some(&old_uid))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone() {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "the reference EtcdCluster ({ns}/{reference}) and its pods were not deleted \
                 within 60s"
            )));
        }
        // The operator's teardown and the garbage collector take their delays.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut metadata = json!({ "name": reference });
    for field in ["labels", "annotations", "ownerReferences"] {
        if let Some(v) = old.pointer(&format!("/metadata/{field}")) {
            metadata[field] = v.clone();
        }
    }
    let mut spec = old.get("spec").cloned().unwrap_or(json!({}));
    spec["paused"] = json!(true);
    let cluster = json!({
        "apiVersion": "etcd.database.coreos.com/v1beta2",
        "kind": "EtcdCluster",
        "metadata": metadata,
        "spec": spec,
        "status": { "phase": "Running", "size": 0 },
    });
    let created = ctx
        .store
        .create(&ETCDCLUSTERS, &ns, cluster, false)
        .map_err(|e| {
            fail(format!(
                "failed to create restored EtcdCluster ({ns}/{reference}): {e}"
            ))
        })?;
    let path = restore
        .pointer("/spec/s3/path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let backup = object_file(ctx, path);
    let mut annotations = json!({});
    match &backup {
        Some(file) if file.is_file() => {
            annotations[RESTORE_FROM] = json!(file.display().to_string());
        }
        _ => {
            tracing::warn!(%path, "simulated restore: the backup does not exist; the seed member fails");
            annotations[NEVER_READY] = json!("true");
        }
    }
    let seed = super::etcd::member_pod(&created, annotations);
    ctx.store.create(&PODS, &ns, seed, false).map_err(|e| {
        fail(format!(
            "failed to create seed member for cluster ({reference}): {e}"
        ))
    })?;
    ctx.modify(&ETCDCLUSTERS, &created, |c| {
        c["spec"]["paused"] = json!(false)
    })
    .map_err(|e| {
        fail(format!(
            "failed to update etcdcluster CR to spec.paused=false: {e}"
        ))
    })?;
    Ok(())
}

/// The file of the S3 object `<bucket>/<key>` in the simulated S3, if it runs.
fn object_file(ctx: &Ctx, path: &str) -> Option<PathBuf> {
    let dir = ctx.s3_root.as_ref()?;
    let (bucket, key) = path.split_once('/')?;
    if bucket.is_empty() || key.is_empty() || key.split('/').any(|p| p == ".." || p.is_empty()) {
        return None;
    }
    Some(dir.join(bucket).join(key))
}
