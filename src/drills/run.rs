//! One drill, in the order it happens: the backup's file (in place in the snapshotter
//! directory, or downloaded from S3 into the scratch directory), its integrity, its restore
//! by the real tool, a real etcd serving it, its keys counted through that etcd and compared
//! with the live cluster's (read only), the verdict. Everything it starts or writes is owned
//! by a guard declared in this order: the scratch directory, then the etcd in it, so that
//! however this ends (returned, failed, or the future dropped) etcd is killed first and the
//! directory removed after.

use std::path::PathBuf;

use chrono::Utc;
use tokio::time::Instant;

use super::{
    compare::{Side, compare},
    data::missing_data,
    report::{DrillReport, DrilledBackup, LiveFacts, RestoreFacts, ScratchEtcdFacts},
    scratch::ScratchDir,
    scratch_etcd::{self, Ports, ServeError},
};
use crate::{
    cluster::Cluster,
    config::Config,
    etcd::{
        EtcdClient,
        backups::{
            Backup, BackupCopy, BackupError, Backups,
            check::{self, BackupCheck, read_backup_file},
        },
        layout::{self, LocatedCluster},
        restore_tool::{Proof, RestoreRefused, RestoreTool, room_for_restore},
    },
    store::{DrillState, Store},
};

/// What a drill needs of the service.
pub struct Context<'a> {
    pub cluster: &'a Cluster,
    pub config: &'a Config,
    pub store: &'a Store,
}

/// How a drill ended, and what it found.
pub struct Ended {
    pub state: DrillState,
    pub detail: String,
    pub report: DrillReport,
}

/// Why a drill stopped before its verdict.
enum Stop {
    /// The backup is not usable: a verdict.
    Failed(String),
    /// The drill could not be carried out: no verdict.
    Error(String),
}

/// Drills `backup` of the cluster `found` (none: it has none to drill) in a scratch
/// directory named by `id`, by `deadline`.
pub async fn drill(
    ctx: &Context<'_>,
    id: uuid::Uuid,
    found: &LocatedCluster,
    backup: Option<&Backup>,
    deadline: Instant,
) -> Ended {
    let mut report = DrillReport::default();
    let Some(backup) = backup else {
        return ended(
            DrillState::Failed,
            format!(
                "no backup of {} was found (S3: {}/{}/, snapshotter directory: {}/{}/)",
                found.name,
                ctx.config.recovery.s3_bucket,
                found.csm_service,
                ctx.config.recovery.snapshots_dir.display(),
                found.name
            ),
            report,
        );
    };
    match steps(ctx, id, found, backup, deadline, &mut report).await {
        Ok(summary) if report.problems.is_empty() => ended(DrillState::Passed, summary, report),
        Ok(_) => {
            let detail = format!("{}: {}", backup.name, report.problems.join("; "));
            ended(DrillState::Failed, detail, report)
        }
        Err(Stop::Failed(why)) => {
            let detail = format!("{}: {why}", backup.name);
            report.problems.push(why);
            ended(DrillState::Failed, detail, report)
        }
        Err(Stop::Error(why)) => ended(
            DrillState::Error,
            format!("drilling {} could not be carried out: {why}", backup.name),
            report,
        ),
    }
}

fn ended(state: DrillState, detail: String, report: DrillReport) -> Ended {
    Ended {
        state,
        detail,
        report,
    }
}

async fn steps(
    ctx: &Context<'_>,
    id: uuid::Uuid,
    found: &LocatedCluster,
    backup: &Backup,
    deadline: Instant,
    report: &mut DrillReport,
) -> Result<String, Stop> {
    let parent = ctx.config.drills.scratch_dir.clone();
    let scratch = tokio::task::spawn_blocking(move || ScratchDir::create(&parent, id))
        .await
        .map_err(|e| Stop::Error(e.to_string()))?
        .map_err(|e| {
            Stop::Error(format!(
                "creating a scratch directory in {} ([drills] scratch_dir): {e}",
                ctx.config.drills.scratch_dir.display()
            ))
        })?;

    // The file, where the snapshotter keeps it (read, never changed), else from S3.
    let backups = Backups::new(&ctx.config.recovery);
    let (file, copy): (PathBuf, BackupCopy) = match &backup.snapshotter {
        Some(copy) => (PathBuf::from(&copy.location), copy.clone()),
        None => {
            let file = scratch.path().join("backup.db");
            let copy = backups
                .download_to(backup, &file)
                .await
                .map_err(|e| Stop::Error(e.to_string()))?;
            (file, copy.clone())
        }
    };
    report.backup = Some(DrilledBackup {
        name: backup.name.clone(),
        location: copy.location.clone(),
        size: copy.size,
        taken_at: copy.last_modified,
        age_seconds: u64::try_from((Utc::now() - copy.last_modified).num_seconds())
            .unwrap_or_default(),
    });
    let refused = |detail: String| BackupError::Corrupt {
        path: PathBuf::from(&copy.location),
        detail,
    };
    if copy.size == 0 {
        let why = "the backup is empty (0 bytes)".to_owned();
        check::remember(ctx.store, &backup.name, &copy, &Err(refused(why.clone()))).await;
        return Err(Stop::Failed(why));
    }

    // Integrity: the trailer, then the database read whole.
    let (verified, facts) = match read_backup_file(&file).await {
        Ok(read) => read,
        Err(BackupError::Corrupt { detail, .. }) => {
            check::remember(
                ctx.store,
                &backup.name,
                &copy,
                &Err(refused(detail.clone())),
            )
            .await;
            return Err(Stop::Failed(format!("integrity: {detail}")));
        }
        Err(other) => return Err(Stop::Error(other.to_string())),
    };

    // The restore, by the real tool, as the member the scratch etcd will be.
    let tool = RestoreTool::find(&ctx.config.recovery)
        .map_err(|why| Stop::Error(format!("no restore tool: {why}")))?;
    room_for_restore(scratch.path(), facts.total_size).map_err(Stop::Error)?;
    let ports = Ports::free().map_err(|e| Stop::Error(format!("choosing ports: {e}")))?;
    let data_dir = scratch.path().join("data");
    let restore_started = Instant::now();
    match tool
        .restore_into(&file, &data_dir, Some(&ports.member()))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(Stop::Error(why)),
        Err(RestoreRefused(why)) => {
            check::remember(ctx.store, &backup.name, &copy, &Err(refused(why.clone()))).await;
            return Err(Stop::Failed(format!("restore: {why}")));
        }
    }
    let restore_seconds = restore_started.elapsed().as_secs_f64();
    let version = tool.version().await;
    let check = BackupCheck {
        path: PathBuf::from(&copy.location),
        size: verified.size,
        sha256: verified.sha256,
        snapshot: facts,
        proof: Proof::Restore {
            tool: tool.name().to_owned(),
            version: version.clone(),
        },
    };
    check::remember(ctx.store, &backup.name, &copy, &Ok(check.clone())).await;
    report.restore = Some(RestoreFacts {
        tool: tool.name().to_owned(),
        version,
        seconds: restore_seconds,
    });
    let (live_keys_held, total_size) = (check.snapshot.live_keys, check.snapshot.total_size);
    report.integrity = Some(check);

    // Served by a real etcd.
    let etcd_binary = scratch_etcd::find_etcd(&ctx.config.drills.etcd).map_err(Stop::Error)?;
    let etcd = scratch_etcd::serve(
        &etcd_binary,
        &scratch,
        &data_dir,
        ports,
        total_size,
        deadline,
    )
    .await
    .map_err(|e| match e {
        ServeError::Setup(why) => Stop::Error(why),
        ServeError::Refused(why) => Stop::Failed(format!("etcd does not serve it: {why}")),
    })?;
    // The crash test stops the service here, its etcd running, its directory full.
    crate::failpoint::hit("drill:etcd-serving");
    let served = async {
        let (keys, revision) = etcd.client.count_keys().await?;
        let status = etcd.client.member_status().await?;
        Ok::<_, crate::etcd::EtcdError>((keys, revision, status.version))
    };
    let (served_keys, revision, etcd_version) = served
        .await
        .map_err(|e| Stop::Error(format!("reading the scratch etcd: {e}")))?;
    report.scratch_etcd = Some(ScratchEtcdFacts {
        version: etcd_version,
        url: etcd.url.clone(),
        quota_bytes: etcd.quota,
        revision,
        keys: served_keys,
        start_seconds: etcd.start_seconds,
    });
    if served_keys != live_keys_held {
        report.problems.push(format!(
            "etcd serves {served_keys} key(s), the database holds {live_keys_held} live key(s)"
        ));
    }

    // The live cluster, read only, and the keys side by side.
    let (live, facts) = live_side(ctx, found).await;
    report.live = Some(facts);
    report.data = match compare(&found.csm_service, &etcd.client, revision, live.as_ref()).await {
        Ok(counts) => counts,
        Err(Side::Backup(e)) => {
            return Err(Stop::Error(format!("listing the restored keys: {e}")));
        }
        Err(Side::Live(e)) => {
            if let Some(live) = report.live.as_mut() {
                live.error = Some(format!("listing its keys: {e}"));
            }
            compare(&found.csm_service, &etcd.client, revision, None)
                .await
                .map_err(|_| Stop::Error("listing the restored keys".to_owned()))?
        }
    };
    if report.live.as_ref().is_some_and(|l| l.error.is_none()) {
        report
            .problems
            .extend(missing_data(&found.csm_service, &report.data));
    }
    drop(etcd);
    drop(scratch);
    Ok(summary(backup, report, restore_seconds))
}

/// The live cluster's client and what it says of itself, or why it is not compared.
async fn live_side(ctx: &Context<'_>, found: &LocatedCluster) -> (Option<EtcdClient>, LiveFacts) {
    let etcd = &ctx.config.etcd;
    let mut facts = LiveFacts::default();
    if !etcd.enabled {
        facts.error = Some("[etcd] enabled = false: the etcd clusters are not read".to_owned());
        return (None, facts);
    }
    let url = match layout::endpoint(ctx.cluster, found, etcd).await {
        Ok(Some(url)) => url,
        Ok(None) => {
            facts.error = Some(format!(
                "its client Service {} does not exist",
                found.layout.client_service(&found.name)
            ));
            return (None, facts);
        }
        Err(e) => {
            facts.error = Some(format!("finding its endpoint: {e}"));
            return (None, facts);
        }
    };
    facts.endpoint = Some(url.clone());
    let counted = async {
        let client = EtcdClient::new(&url, etcd)?;
        let (keys, revision) = client.count_keys().await?;
        Ok::<_, crate::etcd::EtcdError>((client, keys, revision))
    };
    match counted.await {
        Ok((client, keys, revision)) => {
            facts.keys = Some(keys);
            facts.revision = Some(revision);
            (Some(client), facts)
        }
        Err(e) => {
            facts.error = Some(e.to_string());
            (None, facts)
        }
    }
}

/// One line: what the backup holds and how it compares.
fn summary(backup: &Backup, report: &DrillReport, restore_seconds: f64) -> String {
    let served = report.scratch_etcd.as_ref();
    let mut line = format!(
        "{} restored in {restore_seconds:.2}s and served by etcd {}: {} key(s) at revision {}",
        backup.name,
        served.map_or("", |s| s.version.as_str()),
        served.map_or(0, |s| s.keys),
        served.map_or(0, |s| s.revision),
    );
    // The service's data it has, or the live cluster has.
    let known: Vec<String> = report
        .data
        .iter()
        .filter(|d| d.known && (d.backup_keys > 0 || d.live_keys.is_some_and(|n| n > 0)))
        .map(|d| match (d.live_keys, d.only_live, d.only_backup) {
            (Some(live), Some(0), Some(0)) if live == d.backup_keys => {
                format!("{} {} (the same keys live)", d.data, d.backup_keys)
            }
            (Some(live), Some(only_live), Some(only_backup)) => format!(
                "{} {} (live {live}: {only_live} written since, {only_backup} deleted since)",
                d.data, d.backup_keys
            ),
            _ => format!("{} {}", d.data, d.backup_keys),
        })
        .collect();
    if !known.is_empty() {
        line.push_str("; ");
        line.push_str(&known.join(", "));
    }
    match report.live.as_ref() {
        Some(LiveFacts {
            revision: Some(revision),
            keys: Some(keys),
            error: None,
            ..
        }) => line.push_str(&format!("; live: {keys} key(s) at revision {revision}")),
        Some(LiveFacts {
            error: Some(why), ..
        }) => line.push_str(&format!("; live cluster not compared: {why}")),
        _ => {}
    }
    line
}
