//! Restore (see the module's documentation): an `EtcdRestore` for the restore operator.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::recovery::wait::Deadline;
use crate::{
    cluster::{ClusterError, Mode, object_uid, sanitize},
    etcd::layout,
    step::{StepContext, StepError, StepOutcome},
};

use super::{members::*, objects::*, record::*};

/// The backup's object name under `<service>/` (`etcd.backup_v5702_2022-07-30-19:00:02`),
/// whether given alone or as `list_backups` prints it (`cray-bss/etcd.backup_v...`).
pub(super) fn backup_key(csm: &str, backup: &str) -> Result<String, StepError> {
    let name = backup
        .strip_prefix(&format!("{csm}/"))
        .unwrap_or(backup)
        .trim();
    if name.is_empty() || name.contains('/') {
        return Err(StepError::Failed(format!(
            "{backup:?} is not a backup of {csm}: give its name as list_backups {csm} prints it \
             ({csm}/etcd.backup_v<revision>_<date>) or without the {csm}/ prefix"
        )));
    }
    Ok(format!("{csm}/{name}"))
}

/// Where the restore operator finds the backup `backup` of `cluster`.
pub(super) async fn restore_source(
    ctx: &StepContext<'_>,
    cluster: &str,
    backup: &str,
) -> Result<RestoreSource, StepError> {
    let csm = paired_deployment(cluster).ok_or_else(|| {
        StepError::Failed(format!(
            "{cluster} is not the name of an etcd-operator cluster (<service>-etcd)"
        ))
    })?;
    let key = backup_key(&csm, backup)?;
    let periodic = periodic_backup_object(cluster);
    let Some(spec) = ctx.cluster.read_object(&periodic).await? else {
        return Err(StepError::Failed(format!(
            "the EtcdBackup {} does not exist in namespace {}, so where the backups of {cluster} \
             are kept (its spec.s3: bucket, endpoint, credentials Secret) is unknown; nothing \
             was changed. After a rebuild CSM's hourly job creates it again; or restore by hand \
             as \"Restore an etcd Cluster from a Backup\" says",
            periodic.name,
            ctx.cluster.namespace()
        )));
    };
    let s3 = spec.pointer("/spec/s3").cloned().unwrap_or(Value::Null);
    let text = |field: &str| {
        s3.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let prefix = text("path");
    let bucket = prefix.split('/').next().unwrap_or("").to_owned();
    if bucket.is_empty() || text("awsSecret").is_empty() {
        return Err(StepError::Failed(format!(
            "the EtcdBackup {} has no spec.s3.path or spec.s3.awsSecret: where the backups of \
             {cluster} are kept is unknown; nothing was changed",
            periodic.name
        )));
    }
    Ok(RestoreSource {
        path: format!("{bucket}/{key}"),
        aws_secret: text("awsSecret"),
        endpoint: text("endpoint"),
        force_path_style: s3
            .get("forcePathStyle")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        from: periodic.name,
    })
}

/// The annotation that names the run whose restore created an `EtcdRestore`: a resume that finds
/// one with its own run's id adopts it (the create went through, the crash or a lost response
/// came before its uid was stored).
pub(super) const RUN_ANNOTATION: &str = "etcd-repopulator/run-id";

/// The `EtcdRestore` CSM's `restore_from_backup` creates for `cluster`, for the run `run_id`.
pub(super) fn restore_manifest(cluster: &str, source: &RestoreSource, run_id: &str) -> Value {
    let mut s3 = json!({
        "path": source.path,
        "awsSecret": source.aws_secret,
    });
    if !source.endpoint.is_empty() {
        s3["endpoint"] = json!(source.endpoint);
    }
    if source.force_path_style {
        s3["forcePathStyle"] = json!(true);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "EtcdRestore",
        "metadata": {
            "name": cluster,
            "labels": { "app.kubernetes.io/managed-by": "etcd-repopulator" },
            "annotations": { RUN_ANNOTATION: run_id },
        },
        "spec": {
            "etcdCluster": { "name": cluster },
            "backupStorageType": "S3",
            "s3": s3,
        },
    })
}

/// Restores the etcd-operator cluster `cluster` from `backup` (a name `list_backups` prints)
/// through the restore operator's `EtcdRestore` (see the module's documentation).
pub async fn restore(
    ctx: &StepContext<'_>,
    cluster: &str,
    backup: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let record = Record::resume(ctx);
    let restore_ref = restore_object(cluster);
    let plan = match record.get().restore {
        Some(plan) => plan,
        None => {
            let Some(existing) = ctx.cluster.read_object(&cluster_object(cluster)).await? else {
                return Err(StepError::Failed(format!(
                    "the EtcdCluster {cluster} does not exist in namespace {}: the restore \
                     operator restores an existing cluster (it copies its spec); rebuild it \
                     first, or create it from its Helm chart",
                    ctx.cluster.namespace()
                )));
            };
            let source = restore_source(ctx, cluster, backup).await?;
            let plan = RestorePlan {
                cluster: cluster.to_owned(),
                backup: backup.to_owned(),
                source,
                original_uid: object_uid(&existing).unwrap_or_default(),
                manifest: sanitize(&existing).manifest,
                run_id: ctx.run_id.to_string(),
            };
            record
                .update(|saved| saved.restore = Some(plan.clone()))
                .await?;
            plan
        }
    };
    let manifest = restore_manifest(cluster, &plan.source, &plan.run_id);
    if ctx.mode.is_dry_run() {
        ctx.cluster
            .create_object(&restore_ref, &manifest, Mode::DryRun)
            .await
            .map_err(|err| refused(cluster, err))?;
        record
            .update(|saved| saved.etcd_restore = Some(manifest.clone()))
            .await?;
        record.update(|saved| saved.dry_run = Some(true)).await?;
        return StepOutcome::done(
            format!(
                "dry run: would create the EtcdRestore {cluster} (in this step's data) for the \
                 backup {} (s3://{}, S3 settings of the EtcdBackup {}): the restore operator \
                 deletes the EtcdCluster {cluster} (uid {}) and creates it again seeded from the \
                 backup; then wait until its members run and etcd is healthy, delete the \
                 EtcdRestore and check the Service {cluster}-client. The Deployment of the \
                 service is left alone, as the page does",
                plan.backup, plan.source.path, plan.source.from, plan.original_uid
            ),
            record.to_value()?,
        );
    }
    // Create the EtcdRestore, unless an earlier attempt did.
    let restore_uid = match record.get().restore_uid {
        Some(uid) => uid,
        None => {
            if ctx.cancel.is_cancelled() {
                return Err(StepError::Cancelled(format!(
                    "about to restore {cluster}; nothing was changed"
                )));
            }
            let (object, adopted) = match ctx
                .cluster
                .create_object(&restore_ref, &manifest, Mode::Apply)
                .await
            {
                Ok(created) => (created, false),
                // This run's own, when an earlier attempt created it and crashed before it
                // stored the uid (or the create's response was lost and it was sent again).
                Err(err) if err.api_status().is_some_and(|s| s.code == 409) => {
                    match ctx.cluster.read_object(&restore_ref).await? {
                        Some(existing)
                            if !plan.run_id.is_empty()
                                && existing["metadata"]["annotations"][RUN_ANNOTATION]
                                    == plan.run_id.as_str() =>
                        {
                            (existing, true)
                        }
                        _ => return Err(refused(cluster, err)),
                    }
                }
                Err(err) => return Err(refused(cluster, err)),
            };
            let uid = object_uid(&object).unwrap_or_default();
            record
                .update(|saved| saved.restore_uid = Some(uid.clone()))
                .await?;
            let how = if adopted {
                "found the EtcdRestore {cluster}, created by an earlier attempt of this run,"
            } else {
                "created the EtcdRestore {cluster}"
            };
            ctx.journal
                .log(&format!(
                    "{} for the backup {} (s3://{})",
                    how.replace("{cluster}", cluster),
                    plan.backup,
                    plan.source.path
                ))
                .await;
            uid
        }
    };
    crate::failpoint::hit("operator-restore:after-create");
    let deadline = Deadline::after(timeout);
    let outcome = await_restore(ctx, &plan, &restore_uid, deadline).await;
    match outcome {
        Ok(()) => {}
        Err(RestoreFailure::Operator(reason)) => {
            // The page: delete it "to make it possible for future restores to occur".
            delete_restore(ctx, &record, cluster, &restore_uid).await?;
            return Err(StepError::Failed(format!(
                "the restore operator could not restore {cluster} from {}: {reason}. The \
                 EtcdRestore was deleted; the cluster's manifest from before is in this step's \
                 data",
                plan.backup
            )));
        }
        Err(RestoreFailure::Step(err)) => {
            return Err(with_note(
                err,
                &format!(
                    "; the EtcdRestore {cluster} is left in place (the restore operator may still \
                     be working): resume the run to keep waiting"
                ),
            ));
        }
    }
    let (members, status) = members_up(ctx, &record, cluster, deadline).await?;
    delete_restore(ctx, &record, cluster, &restore_uid).await?;
    if layout::client_url(ctx.cluster, &format!("{cluster}-client"))
        .await?
        .is_none()
    {
        return Err(StepError::Failed(format!(
            "{cluster} was restored, but its client Service {cluster}-client was not created: \
             the page says to restore the cluster again"
        )));
    }
    let keys = match &status {
        Some(status) => format!("; etcd {} healthy, {} key(s)", status.version, status.keys),
        None => String::new(),
    };
    StepOutcome::done(
        format!(
            "{cluster} was restored from the backup {} (s3://{}) by the restore operator: {} \
             member pod(s) Running and Ready{keys}; the EtcdRestore was deleted and the Service \
             {cluster}-client exists",
            plan.backup,
            plan.source.path,
            members.len()
        ),
        record.to_value()?,
    )
}

pub(super) fn refused(cluster: &str, err: ClusterError) -> StepError {
    match err.api_status().map(|s| s.code) {
        Some(409) => StepError::Failed(format!(
            "an EtcdRestore {cluster} exists already: another restore is in progress, or one was \
             left behind (the page: delete it \"to make it possible for future restores to \
             occur\", kubectl -n services delete etcdrestore {cluster}); nothing was changed"
        )),
        _ => StepError::from(err),
    }
}

pub(super) enum RestoreFailure {
    /// The restore operator said why it failed (`status.reason`).
    Operator(String),
    Step(StepError),
}

impl From<ClusterError> for RestoreFailure {
    fn from(err: ClusterError) -> Self {
        RestoreFailure::Step(StepError::from(err))
    }
}

/// Waits until the restore operator reports the restore (`status.succeeded`, or a
/// `status.reason`) and the EtcdCluster is a new one; once our EtcdRestore is gone (an earlier
/// attempt deleted it), a new EtcdCluster is enough.
pub(super) async fn await_restore(
    ctx: &StepContext<'_>,
    plan: &RestorePlan,
    restore_uid: &str,
    deadline: Deadline,
) -> Result<(), RestoreFailure> {
    let verdict = ctx
        .cluster
        .watch_named(
            &restore_object(&plan.cluster),
            "to be handled by the restore operator",
            deadline.left(),
            ctx.cancel,
            |objects| {
                let Some(restore) = objects
                    .iter()
                    .find(|o| o.metadata.uid.as_deref() == Some(restore_uid))
                else {
                    return Ok(None);
                };
                let status = &restore.data["status"];
                match (status["succeeded"].as_bool(), status["reason"].as_str()) {
                    (_, Some(reason)) if !reason.is_empty() => Ok(Some(reason.to_owned())),
                    (Some(true), _) => Ok(None),
                    _ => Err("no status yet".to_owned()),
                }
            },
        )
        .await?;
    if let Some(reason) = verdict {
        return Err(RestoreFailure::Operator(reason));
    }
    let original = plan.original_uid.clone();
    ctx.cluster
        .watch_named(
            &cluster_object(&plan.cluster),
            "to be replaced by the restored cluster",
            deadline.left(),
            ctx.cancel,
            |objects| match objects.first() {
                Some(o) if o.metadata.uid.as_deref() != Some(original.as_str()) => Ok(()),
                Some(_) => Err("still the cluster from before the restore".to_owned()),
                None => Err("absent".to_owned()),
            },
        )
        .await?;
    Ok(())
}

pub(super) async fn delete_restore(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
    uid: &str,
) -> Result<(), StepError> {
    ctx.cluster
        .delete_and_wait_gone(
            &restore_object(cluster),
            uid,
            Mode::Apply,
            Duration::from_secs(30),
            &CancellationToken::new(),
        )
        .await?;
    record
        .update(|saved| saved.restore_deleted = Some(true))
        .await?;
    ctx.journal
        .log(&format!("deleted the EtcdRestore {cluster}"))
        .await;
    Ok(())
}
