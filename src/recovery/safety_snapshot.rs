//! `etcd-safety-snapshot`: a snapshot of a cluster that still answers, taken before it is
//! restored or rebuilt and kept where its backups are.

use crate::{
    etcd::{
        EtcdClient,
        backups::Backups,
        layout::{self},
    },
    model::State,
    recovery::{Decided, decision::Decision},
    step::{StepContext, StepError, StepOutcome},
};

/// `etcd-safety-snapshot`: before a cluster that still answers is restored or rebuilt, its
/// data is saved where backups are kept (the snapshotter directory and/or S3), named so that it
/// is listed as a backup of the service (`repopulator-<time>-<run id>[-empty]`): this
/// service's own recovery is never what loses data. Its assessment listed the backups before
/// this, so the run never restores from the snapshot it took.
pub async fn safety_snapshot(
    ctx: &StepContext<'_>,
    decided: &Decided,
    cluster: &str,
) -> Result<StepOutcome, StepError> {
    let assessment = decided.assessment()?;
    let skipped = |message: String| {
        StepOutcome::with_state(
            State::Skipped,
            message,
            serde_json::json!({ "cluster": cluster }),
        )
    };
    if assessment.decision == Decision::LeaveAlone {
        return skipped(format!("nothing to recover: {}", assessment.reason));
    }
    if assessment.decision == Decision::StartWithData {
        return skipped(
            "starting the members with their data deletes nothing, and no member answers to \
             take a snapshot from"
                .to_owned(),
        );
    }
    if assessment.decision == Decision::ReclaimSpace {
        return skipped(
            "reclaiming space deletes no key and replaces nothing: no safety snapshot is needed"
                .to_owned(),
        );
    }
    if let Some(saved) = ctx.saved.as_ref().filter(|s| s.get("backup").is_some()) {
        return StepOutcome::done(
            format!(
                "the safety snapshot {} was taken by an earlier attempt",
                saved["backup"].as_str().unwrap_or_default()
            ),
            saved,
        );
    }
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return skipped(format!(
            "{cluster} does not exist: there is nothing to save"
        ));
    };
    let Some(url) = layout::endpoint(ctx.cluster, &found, ctx.etcd).await? else {
        return skipped(format!(
            "{cluster} has no client Service: there is nothing to save through it"
        ));
    };
    // Without a quorum the client Service has nobody to send to, but the member that holds
    // the most answers alone: its snapshot is what the recovery would replace.
    let member = assessment.live.as_ref().and_then(|live| {
        let pod = live.pod.as_ref()?;
        let ip = assessment
            .members
            .iter()
            .find(|m| &m.pod == pod)?
            .ip
            .as_ref()?;
        Some((pod.clone(), layout::member_url(&url, ip)?))
    });
    let (url, through) = match member {
        Some((pod, url)) => (url, format!("member pod {pod}")),
        None => (url, "its client Service".to_owned()),
    };
    let client = EtcdClient::new(&url, ctx.etcd)?;
    let keys = match client.key_count(true).await {
        Ok((keys, _)) => keys,
        Err(err) => {
            return skipped(format!(
                "{cluster} does not answer ({err}): there is nothing a snapshot could save"
            ));
        }
    };
    let backups = Backups::new(ctx.recovery).recording(ctx.store);
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "dry run: would take a snapshot of {cluster} ({keys} key(s)) through {through} \
                 and keep it {}, named repopulator-<time>-{}{}",
                where_kept(ctx.recovery),
                ctx.run_id,
                if keys == 0 { "-empty" } else { "" }
            ),
            serde_json::json!({ "cluster": cluster, "keys": keys }),
        );
    }
    let run_id = ctx.run_id.to_string();
    let taken = backups
        .take_safety_snapshot(&client, &found.csm_service, &found.name, &run_id)
        .await
        .map_err(|e| {
            StepError::Failed(format!(
                "{cluster} still answers, and its safety snapshot could not be taken: {e}; \
                 nothing was changed (a restore or rebuild without it could lose data)"
            ))
        })?;
    StepOutcome::done(
        format!(
            "took the safety snapshot {} of {cluster} ({keys} key(s)): {}",
            taken.name,
            taken.locations().join(", ")
        ),
        serde_json::json!({
            "cluster": cluster,
            "keys": keys,
            "backup": taken.name,
            "locations": taken.locations(),
            "size": taken.size,
            "empty": keys == 0,
        }),
    )
}

/// Where a safety snapshot is kept, as configured.
fn where_kept(config: &crate::config::RecoveryConfig) -> String {
    let mut places = Vec::new();
    if let Some(dir) = config.snapshots_dir() {
        places.push(format!("in {}/<sts>/", dir.display()));
    }
    if config.s3_credentials_dir().is_some() {
        places.push(format!("in S3 {}/<service>/", config.s3_bucket));
    }
    if places.is_empty() {
        "nowhere: no backups are configured ([recovery] snapshots_dir, s3_credentials_dir), so a \
         real run fails here"
            .to_owned()
    } else {
        places.join(" and ")
    }
}
