//! Delete an object and create it again from its own sanitized manifest: re-running the
//! `cray-reds-init` / `cray-fas-loader` Jobs (BSS, FAS) and recreating External DNS's
//! EtcdCluster. The manifest is stored in the step before the delete, so a crash between
//! delete and create never loses the object: a resume, or any later run, finds it absent and
//! creates it from the newest stored manifest. Between the delete and the create there is no
//! safe point: a cancel (or a shutdown) requested meanwhile takes effect once the object exists
//! again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    cluster::{JobOutcome, Mode, ObjectRef, Sanitized, object_uid, sanitize},
    step::{StepContext, StepError, StepOutcome},
};

/// What the step stores, in its order of arrival.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Recreation {
    object: Option<ObjectRef>,
    /// The sanitized manifest, stored before anything is deleted.
    manifest: Option<Value>,
    /// What of the old object's own metadata the manifest leaves out (finalizers, owner
    /// references, a Job's generated selector and uid labels), with the values it had.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    dropped: Vec<Dropped>,
    /// The run whose step stored the manifest, when it was not this one (the object was
    /// deleted by a run that stopped before creating it again).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    manifest_from_run: Option<Uuid>,
    /// The uid of the object that was there before (the one deleted).
    original_uid: Option<String>,
    /// The uid of the object created again.
    new_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobOutcome>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    log_tail: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Dropped {
    field: String,
    value: Value,
}

const LOG_LINES: i64 = 20;

/// How long a re-create waits, and for what else.
#[derive(Clone, Debug)]
pub struct Options {
    /// For each wait: the object gone, created again, running (or the Job finished).
    pub timeout: Duration,
    /// A label selector of pods the old object owned (an EtcdCluster's members): the object is
    /// created again only once none of them is left, as "Rebuild Unhealthy etcd Clusters"
    /// (CSM 1.3) says: "Wait for the pods to terminate before proceeding".
    pub pods_gone: Option<String>,
}

pub async fn run(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let options = Options {
        timeout,
        pods_gone: None,
    };
    run_with(ctx, object, &options).await
}

/// [`run`], waiting for what `options` name too.
pub async fn run_with(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    options: &Options,
) -> Result<StepOutcome, StepError> {
    let timeout = options.timeout;
    let cluster = ctx.cluster;
    let what = object.describe(cluster.namespace());
    let earlier: Recreation = match &ctx.saved {
        Some(value) => serde_json::from_value(value.clone()).unwrap_or_default(),
        None => Recreation::default(),
    };
    let mut saved = Recreation {
        object: Some(object.clone()),
        ..Recreation::default()
    };
    let current = cluster.read_object(object).await?;
    let new_uid = match (current, earlier.manifest, earlier.original_uid) {
        // An earlier attempt already created the object again.
        (Some(existing), Some(manifest), Some(original))
            if object_uid(&existing).as_deref() != Some(original.as_str()) =>
        {
            let uid = object_uid(&existing).unwrap_or_default();
            saved.manifest = Some(manifest.clone());
            saved.dropped = earlier.dropped;
            saved.manifest_from_run = earlier.manifest_from_run;
            if object.kind == "Job" && job_failed(&existing) {
                // It ran and failed: run it again, as a new run would.
                ctx.journal
                    .log(&format!(
                        "{what} (uid {uid}), created again by an earlier attempt, failed; \
                         running it again from the stored manifest"
                    ))
                    .await;
                saved.original_uid = Some(uid.clone());
                ctx.journal.save(&to_value(&saved)?).await?;
                if ctx.mode.is_dry_run() {
                    saved.dry_run = Some(true);
                    return StepOutcome::done(
                        format!(
                            "dry run: {what} (uid {uid}), created again by an earlier attempt, \
                             failed; would delete it and create it again from the stored manifest"
                        ),
                        &saved,
                    );
                }
                replace(ctx, object, &what, &manifest, &uid, options, &mut saved).await?
            } else {
                ctx.journal
                    .log(&format!(
                        "{what} was already created again by an earlier attempt"
                    ))
                    .await;
                saved.original_uid = Some(original);
                uid
            }
        }
        (Some(existing), _, _) => {
            let Sanitized { manifest, dropped } = sanitize(&existing);
            let original = object_uid(&existing).unwrap_or_default();
            saved.manifest = Some(manifest.clone());
            saved.dropped = dropped
                .into_iter()
                .map(|(field, value)| Dropped { field, value })
                .collect();
            saved.original_uid = Some(original.clone());
            ctx.journal.save(&to_value(&saved)?).await?;
            if ctx.mode.is_dry_run() {
                return dry_run(ctx, object, &what, saved, &original, timeout).await;
            }
            replace(
                ctx, object, &what, &manifest, &original, options, &mut saved,
            )
            .await?
        }
        // Deleted by a run that stopped before creating it: create it from what was stored.
        (None, own_manifest, own_original) => {
            let (manifest, original) = match (own_manifest, own_original) {
                (Some(manifest), Some(original)) => {
                    saved.dropped = earlier.dropped;
                    saved.manifest_from_run = earlier.manifest_from_run;
                    (manifest, original)
                }
                _ => stored_by_another_run(ctx, object, &what, &mut saved).await?,
            };
            let from = match saved.manifest_from_run {
                Some(run) => format!("the manifest run {run} stored"),
                None => "the manifest stored".to_owned(),
            };
            ctx.journal
                .log(&format!(
                    "{what} is absent; creating it from {from} before it was deleted"
                ))
                .await;
            saved.manifest = Some(manifest.clone());
            saved.original_uid = Some(original.clone());
            ctx.journal.save(&to_value(&saved)?).await?;
            if ctx.mode.is_dry_run() {
                saved.dry_run = Some(true);
                return StepOutcome::done(
                    format!("dry run: {what} is absent; would create it from {from}"),
                    &saved,
                );
            }
            wait_pods_gone(ctx, options).await?;
            create(ctx, object, &what, &manifest, &original, &mut saved).await?
        }
    };
    saved.new_uid = Some(new_uid.clone());
    ctx.journal.save(&to_value(&saved)?).await?;
    if object.kind == "Job" {
        wait_for_job(ctx, object, &what, &new_uid, timeout, saved).await
    } else {
        let running = cluster
            .wait_object_running(object, timeout, ctx.cancel)
            .await?;
        let status = running.get("status").cloned().unwrap_or(Value::Null);
        ctx.announce(
            object,
            &new_uid,
            false,
            "Running",
            &format!("running (status: {status})"),
        )
        .await;
        StepOutcome::done(
            format!(
                "{what} was recreated and is running (status: {status}){}",
                dropped_note(&saved)
            ),
            &saved,
        )
    }
}

fn to_value(saved: &Recreation) -> Result<Value, StepError> {
    serde_json::to_value(saved).map_err(|e| StepError::BadData(e.to_string()))
}

fn job_failed(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Failed" && c["status"] == "True")
        })
}

/// The old object's finalizers and owner references, named when the manifest left them out.
fn dropped_note(saved: &Recreation) -> String {
    let fields: Vec<&str> = saved
        .dropped
        .iter()
        .map(|d| d.field.as_str())
        .filter(|f| ["metadata.finalizers", "metadata.ownerReferences"].contains(f))
        .collect();
    if fields.is_empty() {
        String::new()
    } else {
        format!(
            "; left out of the new object, as they belonged to the old one: {} (see the step's data)",
            fields.join(", ")
        )
    }
}

/// The newest manifest any other run stored for the object (with the uid of what it deleted).
async fn stored_by_another_run(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    saved: &mut Recreation,
) -> Result<(Value, String), StepError> {
    let stored = ctx
        .store
        .newest_stored_manifest(
            &object.api_version,
            &object.kind,
            &object.name,
            ctx.cluster.namespace(),
        )
        .await?;
    let found = stored.and_then(|stored| {
        let data: Recreation = serde_json::from_value(stored.data).ok()?;
        Some((stored.run_id, data))
    });
    let Some((run_id, data)) = found else {
        return Err(StepError::Failed(format!(
            "{what} does not exist, and no run stored its manifest: there is nothing to \
             re-create. Check the name in the configuration (newer CSM releases may run this as \
             another kind of object, e.g. a StatefulSet); the object is normally installed by \
             the service's Helm chart"
        )));
    };
    let manifest = data
        .manifest
        .ok_or_else(|| StepError::BadData(format!("run {run_id} stored no manifest")))?;
    saved.dropped = data.dropped;
    saved.manifest_from_run = Some(run_id);
    Ok((manifest, data.original_uid.unwrap_or_default()))
}

/// Waits (not cancellable: the object is gone and must be created again) until the pods
/// `options.pods_gone` are gone.
async fn wait_pods_gone(ctx: &StepContext<'_>, options: &Options) -> Result<(), StepError> {
    if let Some(selector) = &options.pods_gone {
        ctx.journal
            .log(&format!("waiting for the pods {selector:?} to terminate"))
            .await;
        ctx.cluster
            .wait_pods_gone(selector, options.timeout, &CancellationToken::new())
            .await?;
    }
    Ok(())
}

/// Deletes the object with uid `original`, waits until it is gone, and creates it from
/// `manifest`. Once the delete is sent there is no safe point until the object exists again:
/// a cancel or shutdown requested meanwhile is noted, the object is created, and then the step
/// stops (saying so).
async fn replace(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    manifest: &Value,
    original: &str,
    options: &Options,
    saved: &mut Recreation,
) -> Result<String, StepError> {
    let timeout = options.timeout;
    if ctx.cancel.is_cancelled() {
        return Err(StepError::Cancelled(format!(
            "about to delete {what}; nothing was deleted"
        )));
    }
    ctx.journal
        .log(&format!("stored the sanitized manifest; deleting {what}"))
        .await;
    ctx.announce(
        object,
        original,
        false,
        "Delete",
        "deleting this object to create it again from its manifest, stored in the run",
    )
    .await;
    // Not cancellable: the timeout bounds the wait for finalizers.
    let uninterruptible = CancellationToken::new();
    let gone =
        ctx.cluster
            .delete_and_wait_gone(object, original, Mode::Apply, timeout, &uninterruptible);
    let mut gone = std::pin::pin!(gone);
    let deleted = tokio::select! {
        result = &mut gone => result,
        _ = ctx.cancel.cancelled() => {
            ctx.journal
                .log(&format!(
                    "stop requested while {what} is being deleted: there is no safe point before \
                     it exists again, so it is created again from the stored manifest first"
                ))
                .await;
            gone.await
        }
    };
    deleted?;
    crate::failpoint::hit("recreate:after-delete");
    wait_pods_gone(ctx, options).await?;
    let uid = create(ctx, object, what, manifest, original, saved).await?;
    if ctx.cancel.is_cancelled() {
        saved.new_uid = Some(uid.clone());
        ctx.journal.save(&to_value(saved)?).await?;
        return Err(StepError::Cancelled(format!(
            "re-creating {what}: it had been deleted already, so it was created again (uid \
             {uid}) from the stored manifest before stopping, without waiting for it to {}",
            if object.kind == "Job" {
                "complete"
            } else {
                "run"
            }
        )));
    }
    Ok(uid)
}

/// Creates the object from the stored manifest; if it exists already with another uid (created
/// by a concurrent actor or a lost response), that object is the new one.
async fn create(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    manifest: &Value,
    original: &str,
    saved: &mut Recreation,
) -> Result<String, StepError> {
    match ctx
        .cluster
        .create_object(object, manifest, Mode::Apply)
        .await
    {
        Ok(created) => {
            ctx.journal.log(&format!("created {what} again")).await;
            let uid = object_uid(&created).unwrap_or_default();
            let source = match saved.manifest_from_run {
                Some(run) => format!("the manifest run {run} stored"),
                None => "the manifest stored".to_owned(),
            };
            ctx.announce(
                object,
                &uid,
                false,
                "Recreate",
                &format!("created again from {source} before deleting uid {original}"),
            )
            .await;
            Ok(uid)
        }
        Err(err) if err.api_status().is_some_and(|s| s.code == 409) => {
            let existing = ctx.cluster.read_object(object).await?;
            match existing.as_ref().and_then(object_uid) {
                Some(uid) if uid != original => Ok(uid),
                _ => Err(StepError::Failed(format!(
                    "{what} could not be created again: {err} (stored manifest kept in this step)"
                ))),
            }
        }
        Err(err) => {
            saved.dry_run = None;
            Err(StepError::Failed(format!(
                "{what} was deleted but could not be created again: {err}. Its manifest is \
                 stored in this step; resume the run (or start a new one) to retry the create"
            )))
        }
    }
}

async fn dry_run(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    mut saved: Recreation,
    original: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    // The delete goes to the API server as a dry run, so it is validated (permissions,
    // preconditions) but not performed. The create cannot be validated the same way while the
    // object still exists (the server would answer AlreadyExists), so it is only shown.
    ctx.cluster
        .delete_and_wait_gone(object, original, Mode::DryRun, timeout, ctx.cancel)
        .await?;
    saved.dry_run = Some(true);
    let note = dropped_note(&saved).replace("left out of", "would be left out of");
    StepOutcome::done(
        format!(
            "dry run: would delete {what} (uid {original}) and create it again from the sanitized \
             manifest in this step's data{note}"
        ),
        &saved,
    )
}

async fn wait_for_job(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    uid: &str,
    timeout: Duration,
    mut saved: Recreation,
) -> Result<StepOutcome, StepError> {
    let outcome = ctx
        .cluster
        .wait_job_finished(object, uid, timeout, ctx.cancel)
        .await?;
    saved.job = Some(outcome.clone());
    match outcome {
        JobOutcome::Complete => {
            ctx.announce(object, uid, false, "Complete", "ran again and completed")
                .await;
            StepOutcome::done(
                format!("{what} ran again and completed{}", dropped_note(&saved)),
                &saved,
            )
        }
        JobOutcome::Failed { reason, message } => {
            ctx.announce(
                object,
                uid,
                true,
                "Failed",
                &format!("ran again and failed ({reason}: {message}); the run has its pod log"),
            )
            .await;
            let tail = ctx
                .cluster
                .job_log_tail(object, uid, LOG_LINES)
                .await
                .unwrap_or_else(|err| vec![format!("(the pod log could not be read: {err})")]);
            saved.log_tail = tail.clone();
            ctx.journal.save(&to_value(&saved)?).await?;
            Err(StepError::Failed(format!(
                "{what} (uid {uid}) failed ({reason}: {message}); last lines of its pod log:\n{}",
                tail.join("\n")
            )))
        }
    }
}
