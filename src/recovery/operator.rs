//! Rebuild or restore an etcd cluster of the etcd-operator layout (CSM ≤ 1.4), as the CSM 1.3
//! pages do it (`shared/csm/docs-csm/*.release-1.3.md`):
//!
//! - **Rebuild** ("Rebuild Unhealthy etcd Clusters", manual procedure): the service's
//!   Deployment (`cray-bss` for `cray-bss-etcd`) is taken down first; the `EtcdCluster` is
//!   stored as a sanitized manifest ("Remove the entire lines for creationTimestamp,
//!   generation, resourceVersion, and uid ... the status line, as well as every line after
//!   it"), deleted, its pods awaited until they terminate, created again and awaited until its
//!   members run; then the Deployment comes back. The page deletes the Deployment and applies
//!   its saved YAML again; this step scales it to 0 and back to its stored replica count
//!   instead: the same effect on the service's pods (none runs against the cluster while it is
//!   rebuilt, new ones start afterwards), without deleting and re-creating an object Helm owns.
//!   The re-create is [`recreate`]'s (manifest stored before the delete, crash-safe, no safe
//!   point between delete and create), waiting for the old member pods to be gone in between.
//! - **Restore** ("Restore an etcd Cluster from a Backup"): an `EtcdRestore` named after the
//!   cluster (what CSM's `restore_from_backup cray-bos <backup>` creates) asks the
//!   etcd-operator's restore operator to replace the cluster with one seeded from the backup in
//!   S3 (`etcd-backup/<service>/<backup>`, with the S3 settings of the cluster's periodic
//!   `EtcdBackup`, which wrote the backups); the step waits until the pods run again, deletes
//!   the `EtcdRestore` ("This step will make it possible for future restores to occur") and
//!   checks that the client Service `<cluster>-client` exists. The page leaves the Deployment
//!   alone during a restore, and so does this step.
//!
//! Both store what they need (the Deployment's replica count, the manifest, the restore's
//! settings) before changing anything, and are idempotent: a resume after a crash carries on
//! from what the step stored. Every ending of a rebuild puts the Deployment back at its stored
//! replica count, and says so. All the waits of one rebuild or restore share its `timeout`
//! (`[recovery] timeout`); putting the Deployment back comes on top.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    Decided,
    assess::Decision,
    journal::Journaled,
    wait::{Deadline, wait_healthy},
};
use crate::{
    cluster::{ClusterError, DeploymentScale, ObjectRef, object_uid, sanitize},
    etcd::{EtcdClient, EtcdStatus, layout},
    model::State,
    step::{Journal, StepContext, StepError, StepOutcome, recreate},
};

/// The etcd-operator's API group and version.
const API_VERSION: &str = "etcd.database.coreos.com/v1beta2";
/// Where the periodic backups of a cluster are configured (CSM 1.3: "kubectl get etcdbackup -n
/// services | grep bos.*periodic").
const PERIODIC_BACKUP_SUFFIX: &str = "-cluster-periodic-backup";
fn etcd_object(kind: &str, plural: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        name: name.to_owned(),
    }
}

/// The `EtcdCluster` `cluster`.
pub fn cluster_object(cluster: &str) -> ObjectRef {
    etcd_object("EtcdCluster", "etcdclusters", cluster)
}

/// The `EtcdRestore` of `cluster` (the restore operator requires its name to be the cluster's).
pub fn restore_object(cluster: &str) -> ObjectRef {
    etcd_object("EtcdRestore", "etcdrestores", cluster)
}

/// The periodic `EtcdBackup` of `cluster`.
pub fn periodic_backup_object(cluster: &str) -> ObjectRef {
    etcd_object(
        "EtcdBackup",
        "etcdbackups",
        &format!("{cluster}{PERIODIC_BACKUP_SUFFIX}"),
    )
}

/// The service Deployment paired with `cluster` (`cray-bss` for `cray-bss-etcd`), as the page
/// pairs `cray-bos` with `cray-bos-etcd`.
pub fn paired_deployment(cluster: &str) -> Option<String> {
    match layout::EtcdLayout::parse_name(cluster) {
        Some((layout::EtcdLayout::Operator, csm)) => Some(csm.to_owned()),
        _ => None,
    }
}

/// The label selector of the cluster's member pods.
fn members_of(cluster: &str) -> String {
    layout::EtcdLayout::Operator.pod_selector(cluster, "")
}

/// What a rebuild or restore saved, field by field as it went (the step's data; a resume
/// reads it back and carries on). The nested [`recreate`] step's own data is under `recreate`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// The service Deployment's Scale before the rebuild took it to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<DeploymentScale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recreate: Option<Value>,
    /// The member pods Running and Ready at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etcd: Option<EtcdStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment_restored: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment_pods_ready: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    periodic_backup_deleted: Option<String>,
    /// A dry run's rebuild: the sanitized manifest a real run would store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore: Option<RestorePlan>,
    /// A dry run's restore: the EtcdRestore a real run would create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etcd_restore: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore_deleted: Option<bool>,
}

type Record<'a> = Journaled<'a, Saved>;

/// The journal the nested [`recreate`] step writes to: its data under `recreate` in the record.
struct Nested<'a, 'b> {
    record: &'b Record<'a>,
}

#[async_trait::async_trait]
impl Journal for Nested<'_, '_> {
    async fn save(&self, data: &Value) -> Result<(), StepError> {
        let data = data.clone();
        self.record
            .update(|saved| saved.recreate = Some(data))
            .await
    }

    async fn log(&self, message: &str) {
        self.record.journal().log(message).await;
    }

    async fn earlier_step_data(&self, step: &str) -> Result<Option<Value>, StepError> {
        self.record.journal().earlier_step_data(step).await
    }
}

/// `etcd-recover` on the etcd-operator layout: what `etcd-assess` decided for `cluster` (nothing,
/// [`rebuild`] with the service Deployment paired with it, or [`restore`] from the backup it
/// chose), within `timeout`.
pub async fn run(
    ctx: &StepContext<'_>,
    decided: &Decided,
    cluster: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let assessment = decided.assessment()?;
    match &assessment.decision {
        Decision::LeaveAlone => StepOutcome::with_state(
            State::Skipped,
            format!(
                "nothing to recover: {} (step etcd-assess)",
                assessment.reason
            ),
            json!({ "cluster": cluster, "decision": assessment.decision }),
        ),
        Decision::Rebuild => {
            let deployment = paired_deployment(cluster).ok_or_else(|| {
                StepError::Failed(format!(
                    "{cluster} is not the name of an etcd-operator cluster (<service>-etcd)"
                ))
            })?;
            rebuild(ctx, cluster, &deployment, timeout).await
        }
        Decision::Restore { backup, .. } => restore(ctx, cluster, backup, timeout).await,
    }
}

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
    if ctx.dry_run {
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
async fn rebuildable(
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

/// The error with `note` appended to what it says.
fn with_note(err: StepError, note: &str) -> StepError {
    match err {
        StepError::Cancelled(what) => StepError::Cancelled(format!("{what}{note}")),
        other => StepError::Failed(format!("{other}{note}")),
    }
}

async fn rebuild_while_scaled_down(
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
    ctx.cluster.scale_deployment(&scale.name, 0, false).await?;
    crate::failpoint::hit("operator-rebuild:after-scale-down");
    if !scale.selector.is_empty() {
        ctx.cluster
            .wait_pods_gone(&scale.selector, deadline.left(), ctx.cancel)
            .await?;
    }
    // Store the manifest, delete, wait until the cluster and its member pods are gone, create
    // it again and wait until it runs: recreate's, with its data under `recreate`.
    let nested = Nested { record };
    let recreate_ctx = StepContext {
        run_id: ctx.run_id,
        cluster: ctx.cluster,
        csm: ctx.csm,
        dry_run: false,
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
    let (members, status) = members_up(ctx, cluster, deadline).await?;
    record
        .update(|saved| saved.members = Some(members.clone()))
        .await?;
    if let Some(status) = &status {
        record
            .update(|saved| saved.etcd = Some(status.clone()))
            .await?;
    }
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
async fn scale_back(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    scale: &DeploymentScale,
    wait: bool,
    deadline: Deadline,
) -> Result<String, StepError> {
    ctx.cluster
        .scale_deployment(&scale.name, scale.replicas, false)
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

/// Waits until the cluster's member pods are Ready (`spec.size` of them) and, when the etcd
/// checks are on, etcd answers healthy with a leader through the client Service.
async fn members_up(
    ctx: &StepContext<'_>,
    cluster: &str,
    deadline: Deadline,
) -> Result<(Vec<String>, Option<EtcdStatus>), StepError> {
    let object = ctx
        .cluster
        .wait_object_running(&cluster_object(cluster), deadline.left(), ctx.cancel)
        .await?;
    let size = object
        .pointer("/spec/size")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let members = ctx
        .cluster
        .wait_pods_ready(
            &members_of(cluster),
            usize::try_from(size).unwrap_or(1),
            deadline.left(),
            ctx.cancel,
        )
        .await?;
    if !ctx.etcd.enabled {
        return Ok((members, None));
    }
    let status = etcd_healthy(ctx, cluster, deadline).await?;
    Ok((members, Some(status)))
}

/// Asks etcd (through the cluster's client Service) until it is healthy with a leader.
async fn etcd_healthy(
    ctx: &StepContext<'_>,
    cluster: &str,
    deadline: Deadline,
) -> Result<EtcdStatus, StepError> {
    let endpoint = match ctx.etcd.endpoint_of(cluster, ctx.cluster.namespace()) {
        Some(url) => url,
        None => layout::client_url(ctx.cluster, &format!("{cluster}-client"))
            .await?
            .ok_or_else(|| {
                StepError::Failed(format!(
                    "{cluster} runs, but its client Service {cluster}-client does not exist: \
                     the page says to restore (or rebuild) it again"
                ))
            })?,
    };
    let client = EtcdClient::new(&endpoint, ctx.etcd)?;
    let waiting_for = format!("etcd {cluster} to be healthy at {endpoint}");
    wait_healthy(deadline, ctx.cancel, &waiting_for, || async {
        Ok(match client.check_health().await {
            Ok(()) => match client.status().await {
                Ok(status) if status.leader.is_some() => Ok(status),
                Ok(_) => Err("no leader".to_owned()),
                Err(err) => Err(err.to_string()),
            },
            Err(err) => Err(err.to_string()),
        })
    })
    .await
}

/// The page's post-rebuild step: the periodic `EtcdBackup` points at the old cluster and is
/// deleted, so that the hourly job creates it again for the new one.
async fn delete_periodic_backup(
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
        .delete_and_wait_gone(&backup, &uid, false, Duration::from_secs(30), ctx.cancel)
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

async fn plan_rebuild(
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
    ctx.cluster.scale_deployment(&scale.name, 0, true).await?;
    ctx.cluster
        .delete_and_wait_gone(&object, &uid, true, timeout, ctx.cancel)
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

/// Where the restore operator finds a backup: the S3 settings of the cluster's periodic
/// `EtcdBackup` (`spec.s3`), with the object's path `<bucket>/<service>/<backup>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// `<bucket>/<service>/<backup>`, as `EtcdRestore.spec.s3.path` wants it.
    pub path: String,
    pub aws_secret: String,
    pub endpoint: String,
    pub force_path_style: bool,
    /// The `EtcdBackup` the settings came from.
    pub from: String,
}

/// The backup's object name under `<service>/` (`etcd.backup_v5702_2022-07-30-19:00:02`),
/// whether given alone or as `list_backups` prints it (`cray-bss/etcd.backup_v...`).
fn backup_key(csm: &str, backup: &str) -> Result<String, StepError> {
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
async fn restore_source(
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
const RUN_ANNOTATION: &str = "etcd-repopulator/run-id";

/// The `EtcdRestore` CSM's `restore_from_backup` creates for `cluster`, for the run `run_id`.
fn restore_manifest(cluster: &str, source: &RestoreSource, run_id: &str) -> Value {
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

/// What a restore stores before it creates anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RestorePlan {
    cluster: String,
    backup: String,
    source: RestoreSource,
    /// The uid of the cluster the restore replaces.
    original_uid: String,
    /// Its sanitized manifest: if the restore operator deletes it and fails, this is what it
    /// was (a rebuild can create it again from here).
    manifest: Value,
    /// The run that planned it (its `EtcdRestore` carries it as [`RUN_ANNOTATION`]).
    #[serde(default)]
    run_id: String,
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
    if ctx.dry_run {
        ctx.cluster
            .create_object(&restore_ref, &manifest, true)
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
                .create_object(&restore_ref, &manifest, false)
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
    let (members, status) = members_up(ctx, cluster, deadline).await?;
    record
        .update(|saved| saved.members = Some(members.clone()))
        .await?;
    if let Some(status) = &status {
        record
            .update(|saved| saved.etcd = Some(status.clone()))
            .await?;
    }
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

fn refused(cluster: &str, err: ClusterError) -> StepError {
    match err.api_status().map(|s| s.code) {
        Some(409) => StepError::Failed(format!(
            "an EtcdRestore {cluster} exists already: another restore is in progress, or one was \
             left behind (the page: delete it \"to make it possible for future restores to \
             occur\", kubectl -n services delete etcdrestore {cluster}); nothing was changed"
        )),
        _ => StepError::from(err),
    }
}

enum RestoreFailure {
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
async fn await_restore(
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

async fn delete_restore(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
    uid: &str,
) -> Result<(), StepError> {
    ctx.cluster
        .delete_and_wait_gone(
            &restore_object(cluster),
            uid,
            false,
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
