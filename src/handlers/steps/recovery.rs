//! `etcd-assess`: what a run with `"etcd": "restore" | "rebuild" | "auto"` does about a
//! service's etcd cluster, decided from evidence the step stores: the cluster's health report
//! (as `GET /etcd-clusters/{name}` shows it), the backups seen with their ages, and the
//! decision with its reason. The later steps (`etcd-safety-snapshot`, `etcd-recover`, and the
//! repopulation steps a restore covers) read the decision from this step's data, so a resumed
//! run keeps the decision it made.
//!
//! `auto` (as CSM's `etcd_restore_rebuild.sh`, without its prompts): a healthy cluster is left
//! alone; otherwise the newest usable backup younger than `[recovery] restore_max_age` is
//! restored; otherwise the cluster is rebuilt. A usable backup is not a safety snapshot this
//! run took, and not a snapshot of an empty cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    etcd::{
        EtcdClient,
        backups::{Backup, BackupError, Backups, verify_snapshot},
        layout,
    },
    handlers::{ETCD_ASSESS, StepContext, StepError, StepOutcome},
    model::{EtcdMode, State},
};

/// What the run does to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Nothing: the cluster is healthy (`auto`).
    None,
    /// Restore it from `backup` (its snapshot file in the snapshotter directory is `file`).
    Restore { backup: String, file: String },
    /// Rebuild it empty.
    Rebuild,
}

/// A backup as the assessment saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupSeen {
    pub name: String,
    /// The snapshot's file name in `<snapshots_dir>/<sts>/`.
    pub file: String,
    /// Where it is (`s3`, `snapshotter`).
    pub location: String,
    pub age_seconds: u64,
    pub age: String,
    pub size: Option<u64>,
    /// A safety snapshot (taken by a run before it restored or rebuilt the cluster).
    pub safety: bool,
    /// Of an empty cluster.
    pub empty: bool,
    /// Taken by this run.
    pub this_run: bool,
    /// Why its snapshot was refused (its SHA-256 trailer did not match), when it was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
}

impl BackupSeen {
    fn from_backup(backup: &Backup, run_id: &str) -> BackupSeen {
        BackupSeen {
            name: backup.name.clone(),
            file: backup.name.clone(),
            location: backup.locations().join(", "),
            age_seconds: backup.age_seconds,
            age: humantime::format_duration(Duration::from_secs(backup.age_seconds)).to_string(),
            size: Some(backup.size),
            safety: backup.safety.is_some(),
            empty: backup.safety.as_ref().is_some_and(|s| s.empty),
            this_run: backup.safety.as_ref().is_some_and(|s| s.run_id == run_id),
            corrupt: None,
        }
    }

    /// Why `restore` or `auto` would not choose it on its own.
    fn unusable(&self) -> Option<&'static str> {
        if self.corrupt.is_some() {
            Some("corrupt")
        } else if self.this_run {
            Some("a safety snapshot this run took")
        } else if self.empty {
            Some("a snapshot of an empty cluster")
        } else {
            None
        }
    }
}

/// What `etcd-assess` stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assessment {
    pub cluster: String,
    pub mode: EtcdMode,
    pub healthy: bool,
    /// The cluster's report (`GET /etcd-clusters/{name}`).
    pub report: Value,
    /// Newest first.
    pub backups: Vec<BackupSeen>,
    #[serde(with = "humantime_serde")]
    pub restore_max_age: Duration,
    pub decision: Decision,
    pub reason: String,
}

/// The decision of `etcd-assess` of this run and service.
pub async fn assessed(ctx: &StepContext<'_>) -> Result<Assessment, StepError> {
    let data = ctx
        .journal
        .earlier_step_data(ETCD_ASSESS)
        .await?
        .ok_or_else(|| {
            StepError::Failed(format!(
                "step {ETCD_ASSESS} stored no decision; start a new run"
            ))
        })?;
    serde_json::from_value(data).map_err(|e| StepError::BadData(format!("{ETCD_ASSESS}: {e}")))
}

/// In a dry run: what the service's etcd cluster would be after the recovery this run plans
/// (`Some` when `etcd-assess` decided to restore or rebuild it), for the steps after it that
/// cannot look at the cluster as it would be.
pub async fn planned_recovery(ctx: &StepContext<'_>) -> Result<Option<String>, StepError> {
    if !ctx.dry_run {
        return Ok(None);
    }
    let Some(data) = ctx.journal.earlier_step_data(ETCD_ASSESS).await? else {
        return Ok(None);
    };
    let Ok(assessment) = serde_json::from_value::<Assessment>(data) else {
        return Ok(None);
    };
    Ok(match assessment.decision {
        Decision::None => None,
        Decision::Rebuild => Some(format!("rebuilt empty ({})", assessment.cluster)),
        Decision::Restore { backup, .. } => {
            Some(format!("restored from {backup} ({})", assessment.cluster))
        }
    })
}

/// The backup this run restored the service's cluster from: `Some` when its `etcd-assess`
/// decided to restore it (and so `etcd-recover`, before any later step, restored it).
pub async fn restored_from(ctx: &StepContext<'_>) -> Result<Option<String>, StepError> {
    let Some(data) = ctx.journal.earlier_step_data(ETCD_ASSESS).await? else {
        return Ok(None);
    };
    Ok(match serde_json::from_value::<Assessment>(data) {
        Ok(Assessment {
            decision: Decision::Restore { backup, .. },
            ..
        }) => Some(backup),
        _ => None,
    })
}

/// Why a step that repopulates data a restore brings back is skipped, when this run restored
/// the service's cluster.
pub async fn restored(ctx: &StepContext<'_>) -> Result<Option<String>, StepError> {
    let Some(backup) = restored_from(ctx).await? else {
        return Ok(None);
    };
    let cluster = ctx
        .journal
        .earlier_step_data(ETCD_ASSESS)
        .await?
        .and_then(|data| data["cluster"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Some(format!(
        "{}the restore of {cluster} from backup {backup} (step etcd-recover) brings this data \
         back: nothing to repopulate",
        if ctx.dry_run { "dry run: " } else { "" },
    )))
}

/// The decision for `mode` given the cluster's health and the backups (newest first).
pub fn decide(
    mode: EtcdMode,
    healthy: bool,
    backups: &[BackupSeen],
    named: Option<&str>,
    max_age: Duration,
) -> Result<(Decision, String), String> {
    let restore = |b: &BackupSeen| Decision::Restore {
        backup: b.name.clone(),
        file: b.file.clone(),
    };
    let seen = || {
        if backups.is_empty() {
            "no backups were found".to_owned()
        } else {
            format!(
                "backups seen: {}",
                backups
                    .iter()
                    .map(|b| match b.unusable() {
                        Some(why) => format!("{} ({} old, {why})", b.name, b.age),
                        None => format!("{} ({} old)", b.name, b.age),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let newest_usable = backups.iter().find(|b| b.unusable().is_none());
    match (mode, named) {
        (EtcdMode::Check, _) => Err("mode check does not restore or rebuild".to_owned()),
        (EtcdMode::Rebuild, _) => Ok((Decision::Rebuild, "a rebuild was requested".to_owned())),
        (EtcdMode::Auto, _) if healthy => Ok((
            Decision::None,
            "the cluster is healthy; auto leaves it alone".to_owned(),
        )),
        (EtcdMode::Restore | EtcdMode::Auto, Some(name)) => {
            match backups.iter().find(|b| b.name == name) {
                Some(b) if b.corrupt.is_some() => Err(format!(
                    "backup {name} is corrupt: {}",
                    b.corrupt.as_deref().unwrap_or_default()
                )),
                Some(b) => Ok((
                    restore(b),
                    format!("backup {name} was named ({} old)", b.age),
                )),
                None => Err(format!("backup {name:?} was not found; {}", seen())),
            }
        }
        (EtcdMode::Restore, None) => match newest_usable {
            Some(b) => Ok((
                restore(b),
                format!("{} is the newest usable backup ({} old)", b.name, b.age),
            )),
            None => Err(format!("there is no backup to restore from: {}", seen())),
        },
        (EtcdMode::Auto, None) => {
            let limit = humantime::format_duration(max_age);
            match newest_usable {
                Some(b) if Duration::from_secs(b.age_seconds) <= max_age => Ok((
                    restore(b),
                    format!(
                        "the cluster is unhealthy and {} is the newest usable backup, {} old \
                         (restore_max_age {limit})",
                        b.name, b.age
                    ),
                )),
                Some(b) => Ok((
                    Decision::Rebuild,
                    format!(
                        "the cluster is unhealthy and its newest usable backup, {}, is {} old, \
                         older than restore_max_age {limit}",
                        b.name, b.age
                    ),
                )),
                None => Ok((
                    Decision::Rebuild,
                    format!("the cluster is unhealthy and {}", seen()),
                )),
            }
        }
    }
}

pub async fn assess(
    ctx: &StepContext<'_>,
    cluster: &str,
    mode: EtcdMode,
    backup: Option<&str>,
    max_age: Duration,
) -> Result<StepOutcome, StepError> {
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the etcd cluster {cluster} does not exist in namespace {}: a restore or rebuild \
             needs its StatefulSet (installed by the service's Helm chart, cray-etcd-base)",
            ctx.cluster.namespace(),
        )));
    };
    let report = layout::report(ctx.cluster, &found, ctx.etcd).await?;
    let (listed, mut backups) = backups_seen(ctx, &found, mode).await?;
    // The chosen backup is fetched into the snapshotter directory and checked; a corrupt one
    // is named and the next is chosen (unless it was named in the request).
    let (decision, reason) = loop {
        let (decision, reason) = decide(mode, report.healthy, &backups, backup, max_age)
            .map_err(|problem| StepError::Failed(format!("{cluster}: {problem}")))?;
        let Decision::Restore { backup: name, .. } = &decision else {
            break (decision, reason);
        };
        let Some(chosen) = listed.iter().find(|b| &b.name == name) else {
            break (decision, reason);
        };
        let checked = match (&chosen.snapshotter, ctx.dry_run) {
            // etcd-operator: its restore operator reads the backup from S3 itself; it is
            // checked there (read, not stored), in a dry run too.
            _ if found.layout == layout::EtcdLayout::Operator => Backups::new(ctx.recovery)
                .verify_in_s3(chosen, &found.csm_service)
                .await
                .map(|_| ()),
            // Downloading it would change the snapshotter directory: a real run does it.
            (None, true) => {
                break (
                    decision,
                    format!("{reason}; a real run downloads it from S3 and checks it"),
                );
            }
            // A dry run checks the copy in the snapshotter directory where it is.
            (Some(copy), true) => {
                let path = std::path::PathBuf::from(&copy.location);
                tokio::task::spawn_blocking(move || verify_snapshot(&path).map(|_| ()))
                    .await
                    .map_err(|e| StepError::Failed(format!("checking {name}: {e}")))?
            }
            (_, false) => Backups::new(ctx.recovery)
                .fetch(chosen, &found.name)
                .await
                .map(|_| ()),
        };
        match checked {
            Ok(()) => break (decision, reason),
            Err(BackupError::Corrupt { detail, .. }) => {
                ctx.journal
                    .log(&format!(
                        "backup {name} is corrupt ({detail}); not using it"
                    ))
                    .await;
                if let Some(seen) = backups.iter_mut().find(|b| &b.name == name) {
                    seen.corrupt = Some(detail);
                }
            }
            Err(err) => {
                return Err(StepError::Failed(format!(
                    "{cluster}: fetching backup {name}: {err}"
                )));
            }
        }
    };
    let corrupt: Vec<String> = backups
        .iter()
        .filter(|b| b.corrupt.is_some())
        .map(|b| format!("{} is corrupt, not used", b.name))
        .collect();
    let reason = if corrupt.is_empty() {
        reason
    } else {
        format!("{reason} ({})", corrupt.join("; "))
    };
    let health = if report.healthy {
        "healthy".to_owned()
    } else {
        format!("unhealthy ({})", report.problems.join("; "))
    };
    let message = match &decision {
        Decision::None => format!("{cluster} is {health}: nothing to recover"),
        Decision::Rebuild => format!("{cluster} is {health}: rebuild it, because {reason}"),
        Decision::Restore { backup, .. } => {
            format!("{cluster} is {health}: restore it from {backup}, because {reason}")
        }
    };
    let assessment = Assessment {
        cluster: cluster.to_owned(),
        mode,
        healthy: report.healthy,
        report: serde_json::to_value(&report).map_err(|e| StepError::BadData(e.to_string()))?,
        backups,
        restore_max_age: max_age,
        decision,
        reason,
    };
    let message = if ctx.dry_run {
        format!("dry run: {message}")
    } else {
        message
    };
    StepOutcome::done(message, &assessment)
}

/// `etcd-safety-snapshot`: before a cluster that still answers is restored or rebuilt, its
/// data is saved where backups are kept (the snapshotter directory and/or S3), named so that it
/// is listed as a backup of the service (`repopulator-<time>-<run id>[-empty]`): this
/// service's own recovery is never what loses data. Its assessment listed the backups before
/// this, so the run never restores from the snapshot it took.
pub async fn safety_snapshot(
    ctx: &StepContext<'_>,
    cluster: &str,
) -> Result<StepOutcome, StepError> {
    let assessment = assessed(ctx).await?;
    let skipped = |message: String| {
        StepOutcome::with_state(
            State::Skipped,
            message,
            serde_json::json!({ "cluster": cluster }),
        )
    };
    if assessment.decision == Decision::None {
        return skipped(format!("nothing to recover: {}", assessment.reason));
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
    let client = EtcdClient::new(&url, ctx.etcd)?;
    let keys = match client.status().await {
        Ok(status) => status.keys,
        Err(err) => {
            return skipped(format!(
                "{cluster} does not answer ({err}): there is nothing a snapshot could save"
            ));
        }
    };
    let backups = Backups::new(ctx.recovery);
    if ctx.dry_run {
        return StepOutcome::done(
            format!(
                "dry run: would take a snapshot of {cluster} ({keys} key(s)) through its gateway \
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

/// The backups of the cluster, newest first, as listed and as the assessment shows them. A
/// rebuild lists none.
async fn backups_seen(
    ctx: &StepContext<'_>,
    found: &layout::Found,
    mode: EtcdMode,
) -> Result<(Vec<Backup>, Vec<BackupSeen>), StepError> {
    if mode == EtcdMode::Rebuild {
        return Ok((Vec::new(), Vec::new()));
    }
    let listed = Backups::new(ctx.recovery)
        .list(&found.csm_service, &found.name)
        .await
        .map_err(|e| StepError::Failed(format!("listing the backups of {}: {e}", found.name)))?;
    let run_id = ctx.run_id.to_string();
    let seen = listed
        .iter()
        .map(|b| BackupSeen::from_backup(b, &run_id))
        .collect();
    Ok((listed, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn backup(name: &str, days: u64) -> BackupSeen {
        BackupSeen {
            name: name.to_owned(),
            file: name.rsplit('/').next().unwrap().to_owned(),
            location: "s3".to_owned(),
            age_seconds: days * DAY,
            age: format!("{days}days"),
            size: Some(1),
            safety: false,
            empty: false,
            this_run: false,
            corrupt: None,
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * DAY);

    #[test]
    fn auto_leaves_a_healthy_cluster_alone() {
        let (decision, _) = decide(EtcdMode::Auto, true, &[backup("a", 1)], None, WEEK).unwrap();
        assert_eq!(decision, Decision::None);
        let (decision, _) =
            decide(EtcdMode::Auto, true, &[backup("a", 1)], Some("a"), WEEK).unwrap();
        assert_eq!(decision, Decision::None, "even with a backup named");
    }

    #[test]
    fn auto_restores_a_recent_backup_and_rebuilds_without_one() {
        let recent = [backup("cray-bss/db-new", 1), backup("cray-bss/db-old", 9)];
        let (decision, _) = decide(EtcdMode::Auto, false, &recent, None, WEEK).unwrap();
        assert_eq!(
            decision,
            Decision::Restore {
                backup: "cray-bss/db-new".to_owned(),
                file: "db-new".to_owned()
            }
        );
        let (decision, reason) = decide(EtcdMode::Auto, false, &recent[1..], None, WEEK).unwrap();
        assert_eq!(decision, Decision::Rebuild);
        assert!(reason.contains("older than restore_max_age"), "{reason}");
        let (decision, _) = decide(EtcdMode::Auto, false, &[], None, WEEK).unwrap();
        assert_eq!(decision, Decision::Rebuild);
    }

    #[test]
    fn own_and_empty_snapshots_are_never_chosen_on_their_own() {
        let mut own = backup("cray-bss/safety-own", 0);
        own.safety = true;
        own.this_run = true;
        let mut empty = backup("cray-bss/safety-empty", 0);
        empty.safety = true;
        empty.empty = true;
        let mut other_safety = backup("cray-bss/safety-other", 0);
        other_safety.safety = true;
        let list = [own, empty, other_safety, backup("cray-bss/db", 1)];
        let (decision, _) = decide(EtcdMode::Restore, false, &list, None, WEEK).unwrap();
        assert_eq!(
            decision,
            Decision::Restore {
                backup: "cray-bss/safety-other".to_owned(),
                file: "safety-other".to_owned()
            }
        );
        let err = decide(EtcdMode::Restore, false, &list[..2], None, WEEK).unwrap_err();
        assert!(err.contains("an empty cluster"), "{err}");
        // Named explicitly, any listed backup is used.
        let (decision, _) = decide(
            EtcdMode::Restore,
            false,
            &list,
            Some("cray-bss/safety-empty"),
            WEEK,
        )
        .unwrap();
        assert!(matches!(decision, Decision::Restore { .. }));
        let err = decide(EtcdMode::Restore, false, &list, Some("nope"), WEEK).unwrap_err();
        assert!(err.contains("\"nope\" was not found"), "{err}");
    }
}
