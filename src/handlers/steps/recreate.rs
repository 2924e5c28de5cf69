//! Delete an object and create it again from its own sanitized manifest: re-running the
//! `cray-reds-init` / `cray-fas-loader` Jobs (BSS, FAS) and recreating External DNS's
//! EtcdCluster. The manifest is stored in the step before the delete, so a crash between
//! delete and create never loses the object: a resume finds it absent and creates it from the
//! stored manifest.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    cluster::{ClusterError, JobOutcome, ObjectRef, object_uid, sanitize},
    handlers::{StepContext, StepError, StepOutcome},
};

/// What the step stores, in its order of arrival.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    object: Option<ObjectRef>,
    /// The sanitized manifest, stored before anything is deleted.
    manifest: Option<Value>,
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

const LOG_LINES: i64 = 20;

pub async fn run(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let cluster = ctx.cluster;
    let what = object.describe(cluster.namespace());
    let earlier: Saved = match &ctx.saved {
        Some(value) => serde_json::from_value(value.clone()).unwrap_or_default(),
        None => Saved::default(),
    };
    let mut saved = Saved {
        object: Some(object.clone()),
        ..Saved::default()
    };
    let current = cluster.read_object(object).await?;
    let new_uid = match (current, earlier.manifest, earlier.original_uid) {
        // An earlier attempt already created the object again: only the wait is left.
        (Some(existing), Some(manifest), Some(original))
            if object_uid(&existing).as_deref() != Some(original.as_str()) =>
        {
            ctx.journal
                .log(&format!(
                    "{what} was already created again by an earlier attempt"
                ))
                .await;
            saved.manifest = Some(manifest);
            saved.original_uid = Some(original);
            object_uid(&existing).unwrap_or_default()
        }
        (Some(existing), _, _) => {
            let manifest = sanitize(&existing);
            let original = object_uid(&existing).unwrap_or_default();
            saved.manifest = Some(manifest.clone());
            saved.original_uid = Some(original.clone());
            ctx.journal.save(&to_value(&saved)?).await?;
            if ctx.dry_run {
                return dry_run(ctx, object, &what, saved, &original, timeout).await;
            }
            ctx.journal
                .log(&format!("stored the sanitized manifest; deleting {what}"))
                .await;
            ctx.announce(
                object,
                &original,
                false,
                "Delete",
                "deleting this object to create it again from its manifest, stored in the run",
            )
            .await;
            cluster
                .delete_and_wait_gone(object, &original, false, timeout, ctx.cancel)
                .await?;
            crate::failpoint::hit("recreate:after-delete");
            create(ctx, object, &what, &manifest, &original, &mut saved).await?
        }
        // Deleted by an attempt that stopped before creating it: create it from what was stored.
        (None, Some(manifest), Some(original)) => {
            ctx.journal
                .log(&format!(
                    "{what} is absent; creating it from the manifest stored before it was deleted"
                ))
                .await;
            saved.manifest = Some(manifest.clone());
            saved.original_uid = Some(original.clone());
            if ctx.dry_run {
                saved.dry_run = Some(true);
                return StepOutcome::done(
                    format!("dry run: {what} is absent; would create it from the stored manifest"),
                    &saved,
                );
            }
            create(ctx, object, &what, &manifest, &original, &mut saved).await?
        }
        (None, _, _) => {
            return Err(StepError::Failed(format!(
                "{what} does not exist, and no earlier attempt stored its manifest: there is \
                 nothing to re-create. Check the name in the configuration (newer CSM releases \
                 may run this as another kind of object, e.g. a StatefulSet); the object is \
                 normally installed by the service's Helm chart"
            )));
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
            format!("{what} was recreated and is running (status: {status})"),
            &saved,
        )
    }
}

fn to_value(saved: &Saved) -> Result<Value, StepError> {
    serde_json::to_value(saved).map_err(|e| StepError::BadData(e.to_string()))
}

/// Creates the object from the stored manifest; if it exists already with another uid (created
/// by a concurrent actor or a lost response), that object is the new one.
async fn create(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    manifest: &Value,
    original: &str,
    saved: &mut Saved,
) -> Result<String, StepError> {
    match ctx.cluster.create_object(object, manifest, false).await {
        Ok(created) => {
            ctx.journal.log(&format!("created {what} again")).await;
            let uid = object_uid(&created).unwrap_or_default();
            ctx.announce(
                object,
                &uid,
                false,
                "Recreate",
                &format!("created again from the manifest stored before deleting uid {original}"),
            )
            .await;
            Ok(uid)
        }
        Err(ClusterError::Api {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 409 => {
            let existing = ctx.cluster.read_object(object).await?;
            match existing.as_ref().and_then(object_uid) {
                Some(uid) if uid != original => Ok(uid),
                _ => Err(StepError::Failed(format!(
                    "{what} could not be created again: {} (stored manifest kept in this step)",
                    status.message
                ))),
            }
        }
        Err(err) => {
            saved.dry_run = None;
            Err(StepError::Failed(format!(
                "{what} was deleted but could not be created again: {err}. Its manifest is \
                 stored in this step; resume the run to retry the create"
            )))
        }
    }
}

async fn dry_run(
    ctx: &StepContext<'_>,
    object: &ObjectRef,
    what: &str,
    mut saved: Saved,
    original: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    // The delete goes to the API server as a dry run, so it is validated (permissions,
    // preconditions) but not performed. The create cannot be validated the same way while the
    // object still exists (the server would answer AlreadyExists), so it is only shown.
    ctx.cluster
        .delete_and_wait_gone(object, original, true, timeout, ctx.cancel)
        .await?;
    saved.dry_run = Some(true);
    StepOutcome::done(
        format!(
            "dry run: would delete {what} (uid {original}) and create it again from the sanitized \
             manifest in this step's data"
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
    mut saved: Saved,
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
            StepOutcome::done(format!("{what} ran again and completed"), &saved)
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
                .job_log_tail(uid, LOG_LINES)
                .await
                .unwrap_or_else(|err| vec![format!("(the pod log could not be read: {err})")]);
            saved.log_tail = tail.clone();
            ctx.journal.save(&to_value(&saved)?).await?;
            Err(StepError::Failed(format!(
                "{what} failed ({reason}: {message}); last lines of its pod log:\n{}",
                tail.join("\n")
            )))
        }
    }
}
