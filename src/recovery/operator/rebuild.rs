//! Rebuild (see the module's documentation): the Deployment down, the EtcdCluster re-created from its stored manifest, the Deployment back on every ending.

use std::time::Duration;

use serde_json::Value;

use crate::recovery::wait::Deadline;
use crate::{
    cluster::{DeploymentScale, Mode, object_uid, sanitize},
    step::{StepContext, StepError, StepOutcome, recreate},
};

use super::{members::*, objects::*, record::*};

/// Rebuilds the etcd-operator cluster `cluster` empty, with its service Deployment `deployment`
/// scaled to 0 meanwhile (see the module's documentation). A dry run reads everything, sends the
/// scale and the delete as server-side dry runs, and says what a real run would do.
pub async fn rebuild(
    ctx: &StepContext<'_>,
    cluster: &str,
    deployment: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let record = Record::resume(ctx);
    record
        .update(|saved| saved.cluster = Some(cluster.to_owned()))
        .await?;
    // The replica count comes first, and an earlier attempt's wins: after a crash while the
    // Deployment was at 0, reading it again would say 0.
    let scale = match record.get().deployment {
        Some(stored) => stored,
        None => {
            let Some(current) = ctx.cluster.deployment_scale(deployment).await? else {
                return Err(StepError::Failed(format!(
                    "the Deployment {deployment} (the service of the etcd cluster {cluster}) does \
                     not exist in namespace {}: nothing was changed. The page takes it down while \
                     the cluster is rebuilt; check the name",
                    ctx.cluster.namespace()
                )));
            };
            record
                .update(|saved| saved.deployment = Some(current.clone()))
                .await?;
            current
        }
    };
    if ctx.mode.is_dry_run() {
        return plan_rebuild(ctx, &record, cluster, &scale, timeout).await;
    }
    rebuildable(ctx, &record, cluster).await?;
    let deadline = Deadline::after(timeout);
    let result = rebuild_while_scaled_down(ctx, &record, cluster, &scale, deadline).await;
    // Every ending puts the Deployment back.
    let back = scale_back(ctx, &record, &scale, result.is_ok(), deadline).await;
    match (result, back) {
        (Ok(mut outcome), Ok(note)) => {
            outcome.message.push_str(&note);
            outcome.data = record.to_value()?;
            Ok(outcome)
        }
        (Ok(_), Err(err)) => Err(StepError::Failed(format!(
            "{cluster} was rebuilt, but the Deployment {} could not be put back at {} \
             replica(s): {err}; scale it by hand (kubectl -n {} scale deployment {} \
             --replicas={})",
            scale.name,
            scale.replicas,
            ctx.cluster.namespace(),
            scale.name,
            scale.replicas
        ))),
        (Err(err), back) => {
            let note = match back {
                Ok(note) => note,
                Err(back) => format!(
                    "; the Deployment {} could NOT be put back at {} replica(s) ({back}): scale \
                     it by hand",
                    scale.name, scale.replicas
                ),
            };
            Err(with_note(err, &note))
        }
    }
}

/// Refuses (before the Deployment is touched) a rebuild with nothing to re-create the cluster
/// from: no EtcdCluster, and no manifest stored by this step or any run.
pub(super) async fn rebuildable(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
) -> Result<(), StepError> {
    let object = cluster_object(cluster);
    let stored = record.get().recreate.is_some()
        || ctx
            .store
            .newest_stored_manifest(
                &object.api_version,
                &object.kind,
                cluster,
                ctx.cluster.namespace(),
            )
            .await?
            .is_some();
    if stored || ctx.cluster.read_object(&object).await?.is_some() {
        return Ok(());
    }
    Err(StepError::Failed(format!(
        "the EtcdCluster {cluster} does not exist in namespace {}, and no run stored its \
         manifest: there is nothing to rebuild it from, and nothing was changed. It is normally \
         installed by the service's Helm chart",
        ctx.cluster.namespace()
    )))
}

pub(super) async fn rebuild_while_scaled_down(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
    scale: &DeploymentScale,
    deadline: Deadline,
) -> Result<StepOutcome, StepError> {
    let namespace = ctx.cluster.namespace();
    if ctx.cancel.is_cancelled() {
        return Err(StepError::Cancelled(format!(
            "about to rebuild {cluster}; nothing was changed"
        )));
    }
    ctx.journal
        .log(&format!(
            "stored the replica count of Deployment {} ({}); scaling it to 0 while {cluster} \
             is rebuilt",
            scale.name, scale.replicas
        ))
        .await;
    ctx.cluster
        .scale_deployment(&scale.name, 0, Mode::Apply)
        .await?;
    crate::failpoint::hit("operator-rebuild:after-scale-down");
    if !scale.selector.is_empty() {
        ctx.cluster
            .wait_pods_gone(&scale.selector, deadline.left(), ctx.cancel)
            .await?;
    }
    // Store the manifest, delete, wait until the cluster and its member pods are gone, create
    // it again and wait until it runs: recreate's, with its data under `recreate`.
    let nested = RecreateJournal { record };
    let recreate_ctx = StepContext {
        run_id: ctx.run_id,
        cluster: ctx.cluster,
        csm: ctx.csm,
        mode: Mode::Apply,
        cancel: ctx.cancel,
        shutdown: ctx.shutdown,
        journal: &nested,
        saved: record.get().recreate,
        ssh: ctx.ssh,
        etcd: ctx.etcd,
        recovery: ctx.recovery,
        store: ctx.store,
        events: ctx.events,
    };
    let options = recreate::Options {
        timeout: deadline.left(),
        pods_gone: Some(members_of(cluster)),
    };
    recreate::run_with(&recreate_ctx, &cluster_object(cluster), &options).await?;
    let (members, status) = members_up(ctx, record, cluster, deadline).await?;
    let periodic = delete_periodic_backup(ctx, record, cluster).await?;
    let health = match &status {
        Some(status) => format!(
            "; etcd {} healthy through {cluster}-client, {} key(s)",
            status.version, status.keys
        ),
        None => String::new(),
    };
    StepOutcome::done(
        format!(
            "{cluster} in namespace {namespace} was rebuilt from its stored manifest: {} \
             member pod(s) Running and Ready{health}{periodic}",
            members.len()
        ),
        record.to_value()?,
    )
}

/// Scales the Deployment back to its stored replica count; after a rebuild that succeeded,
/// also waits until that many of its pods are Ready. Returns what to add to the message.
pub(super) async fn scale_back(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    scale: &DeploymentScale,
    wait: bool,
    deadline: Deadline,
) -> Result<String, StepError> {
    ctx.cluster
        .scale_deployment(&scale.name, scale.replicas, Mode::Apply)
        .await?;
    record
        .update(|saved| saved.deployment_restored = Some(true))
        .await?;
    ctx.journal
        .log(&format!(
            "Deployment {} is back at {} replica(s)",
            scale.name, scale.replicas
        ))
        .await;
    if wait && !scale.selector.is_empty() {
        let ready = ctx
            .cluster
            .wait_pods_ready(
                &scale.selector,
                usize::try_from(scale.replicas).unwrap_or(0),
                deadline.left(),
                ctx.cancel,
            )
            .await?;
        record
            .update(|saved| saved.deployment_pods_ready = Some(ready.clone()))
            .await?;
        return Ok(format!(
            "; Deployment {} back at {} replica(s), {} pod(s) Ready",
            scale.name,
            scale.replicas,
            ready.len()
        ));
    }
    Ok(format!(
        "; Deployment {} put back at its {} replica(s)",
        scale.name, scale.replicas
    ))
}

/// The page's post-rebuild step: the periodic `EtcdBackup` points at the old cluster and is
/// deleted, so that the hourly job creates it again for the new one.
pub(super) async fn delete_periodic_backup(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
) -> Result<String, StepError> {
    let backup = periodic_backup_object(cluster);
    let Some(existing) = ctx.cluster.read_object(&backup).await? else {
        return Ok(String::new());
    };
    let uid = object_uid(&existing).unwrap_or_default();
    ctx.cluster
        .delete_and_wait_gone(
            &backup,
            &uid,
            Mode::Apply,
            Duration::from_secs(30),
            ctx.cancel,
        )
        .await?;
    record
        .update(|saved| saved.periodic_backup_deleted = Some(backup.name.clone()))
        .await?;
    Ok(format!(
        "; deleted the EtcdBackup {} (it pointed at the old cluster; CSM's hourly job creates it \
         again)",
        backup.name
    ))
}

pub(super) async fn plan_rebuild(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
    scale: &DeploymentScale,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let object = cluster_object(cluster);
    let Some(existing) = ctx.cluster.read_object(&object).await? else {
        return Err(StepError::Failed(format!(
            "the EtcdCluster {cluster} does not exist in namespace {}: there is nothing to \
             rebuild from",
            ctx.cluster.namespace()
        )));
    };
    let uid = object_uid(&existing).unwrap_or_default();
    let size = existing.pointer("/spec/size").and_then(Value::as_i64);
    // The writes go to the API server as dry runs: permissions and preconditions are checked.
    ctx.cluster
        .scale_deployment(&scale.name, 0, Mode::DryRun)
        .await?;
    ctx.cluster
        .delete_and_wait_gone(&object, &uid, Mode::DryRun, timeout, ctx.cancel)
        .await?;
    let manifest = sanitize(&existing).manifest;
    record
        .update(|saved| saved.manifest = Some(manifest.clone()))
        .await?;
    record.update(|saved| saved.dry_run = Some(true)).await?;
    let periodic = periodic_backup_object(cluster);
    let periodic_note = match ctx.cluster.read_object(&periodic).await? {
        Some(_) => format!(
            "; delete the EtcdBackup {} (CSM's hourly job creates it again)",
            periodic.name
        ),
        None => String::new(),
    };
    StepOutcome::done(
        format!(
            "dry run: would scale Deployment {} from {} replica(s) to 0 and wait for its pods to \
             go; store the sanitized manifest of EtcdCluster {cluster} (uid {uid}, size {}) shown \
             in this step's data, delete it, wait until it and its member pods are gone, create \
             it again from the manifest and wait until its members run and etcd is healthy; \
             scale {} back to {}{periodic_note}",
            scale.name,
            scale.replicas,
            size.map_or("unknown".to_owned(), |s| s.to_string()),
            scale.name,
            scale.replicas
        ),
        record.to_value()?,
    )
}
