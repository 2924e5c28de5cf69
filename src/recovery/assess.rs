//! `etcd-assess`: what a run with `"etcd": "restore" | "rebuild" | "auto"` does about a
//! service's etcd cluster, decided from evidence the step stores: the cluster's health report
//! (as `GET /etcd-clusters/{name}` shows it), the backups seen with their ages, and the
//! decision with its reason (the rules are [`super::decision`]'s). The runner hands the stored
//! assessment to the later steps (`etcd-safety-snapshot`, `etcd-recover`, and the repopulation
//! steps a restore covers) as [`super::Decided`], so a resumed run keeps the decision it made.
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
        backups::{
            Backup, BackupError, Backups,
            check::{BackupCheck, last_checks},
        },
        layout::{self, MemberPod},
    },
    model::{EtcdMode, State},
    recovery::decision::{
        BackupSeen, Decision, Discarded, DrillSeen, Evidence, LiveData, Verdict, decide,
    },
    step::{StepContext, StepError, StepOutcome},
};

/// What `etcd-assess` stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assessment {
    pub cluster: String,
    pub mode: EtcdMode,
    pub healthy: bool,
    /// A quorum of its members answers reads (see [`layout::EtcdClusterReport::serving`]).
    #[serde(default)]
    pub serving: bool,
    /// The cluster's report (`GET /etcd-clusters/{name}`).
    pub report: Value,
    /// Each member pod and what it answered at its own address, when the cluster did not
    /// serve (what a member holds without a quorum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberPod>,
    /// What the cluster, or its most advanced member, holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveData>,
    /// Why what its members hold could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// Newest first.
    pub backups: Vec<BackupSeen>,
    #[serde(with = "humantime_serde")]
    pub restore_max_age: Duration,
    pub decision: Decision,
    pub reason: String,
    /// What the recovery throws away of what the live cluster holds (accepted by the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<Discarded>,
}

#[allow(clippy::too_many_arguments)]
pub async fn assess(
    ctx: &StepContext<'_>,
    cluster: &str,
    mode: EtcdMode,
    backup: Option<&str>,
    max_age: Duration,
    discard_newer: bool,
    confirmed: bool,
) -> Result<StepOutcome, StepError> {
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the etcd cluster {cluster} does not exist in namespace {}: a restore or rebuild \
             needs its StatefulSet (installed by the service's Helm chart, cray-etcd-base)",
            ctx.cluster.namespace(),
        )));
    };
    let report = layout::report(ctx.cluster, &found, ctx.etcd).await?;
    // What the data the recovery would replace is: the cluster's when it serves; otherwise the
    // member that holds the most (members answer their own status without a quorum).
    let mut members = Vec::new();
    let live = match (report.serving, report.revision, report.keys) {
        (true, Some(revision), Some(keys)) => Some(LiveData {
            source: "the cluster (through its client Service)".to_owned(),
            pod: None,
            revision,
            keys,
        }),
        _ => {
            members = layout::probe_member_pods(ctx.cluster, &found, ctx.etcd).await?;
            members
                .iter()
                .filter_map(|m| Some((m, m.revision?)))
                .max_by_key(|(_, revision)| *revision)
                .map(|(m, revision)| LiveData {
                    source: format!(
                        "member pod {} (read alone: the cluster has no quorum)",
                        m.pod
                    ),
                    pod: Some(m.pod.clone()),
                    revision,
                    keys: m.keys.unwrap_or(0),
                })
        }
    };
    // Where what it holds is read again, to count the keys changed since a backup.
    let live_client = match (&live, report.endpoint.as_deref()) {
        (Some(live), Some(endpoint)) => {
            let url = match &live.pod {
                None => Some(endpoint.to_owned()),
                Some(pod) => members
                    .iter()
                    .find(|m| &m.pod == pod)
                    .and_then(|m| m.ip.as_deref())
                    .and_then(|ip| layout::member_url(endpoint, ip)),
            };
            url.and_then(|url| EtcdClient::new(&url, ctx.etcd).ok())
                .map(|client| (client, live.pod.is_some()))
        }
        _ => None,
    };
    let unreadable = if report.serving || live.is_some() {
        None
    } else {
        unreadable_data(ctx, &found, &members).await?
    };
    let alarms: Vec<String> = report.alarms.iter().map(|a| a.alarm.clone()).collect();
    let (listed, mut backups) = backups_seen(ctx, &found, mode).await?;
    // The chosen backup is fetched into the snapshotter directory and checked (an etcd
    // database, its revision read); a corrupt one is named and the next is chosen (unless it
    // was named in the request).
    let (decision, reason, needs_person, discarded) = loop {
        let evidence = Evidence {
            mode,
            serving: report.serving,
            healthy: report.healthy,
            problems: &report.problems,
            live: live.as_ref(),
            unreadable: unreadable.as_deref(),
            backups: &backups,
            named: backup,
            max_age,
            prefer_drilled_within: ctx.recovery.prefer_drilled_within,
            discard_newer,
            alarms: &alarms,
            cluster,
            members: if found.layout == crate::model::EtcdLayout::Bitnami {
                &report.member_health
            } else {
                &[]
            },
            confirmed,
            disaster_recovery: found
                .recovery_env
                .get("ETCD_DISASTER_RECOVERY")
                .is_some_and(|v| v == "yes"),
        };
        let name = match decide(&evidence)
            .map_err(|problem| StepError::Failed(format!("{cluster}: {problem}")))?
        {
            Verdict::Decided {
                decision,
                reason,
                needs_person,
                discarded,
            } => break (decision, reason, needs_person, discarded),
            Verdict::Check(name) => name,
        };
        let chosen = listed
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| StepError::Failed(format!("{cluster}: backup {name} vanished")))?;
        let backups_api = Backups::new(ctx.recovery).recording(ctx.store);
        let checked = match (&chosen.snapshotter, ctx.mode.is_dry_run()) {
            // etcd-operator: its restore operator reads the backup from S3 itself; it is
            // checked there (read, not stored), in a dry run too.
            _ if found.layout == crate::model::EtcdLayout::Operator => backups_api
                .verify_in_s3(chosen, &found.csm_service)
                .await
                .map(|check| facts(&check)),
            // Downloading it would change the snapshotter directory: a real run does it, and
            // weighs it against what the cluster holds before it changes anything.
            (None, true) => {
                break (
                    Decision::Restore {
                        backup: name.clone(),
                        file: chosen.name.clone(),
                    },
                    format!(
                        "{name} is the newest candidate; it is only in S3: a real run downloads \
                         it from S3 and checks it (an etcd database, its revision weighed \
                         against what the cluster holds) before it changes anything"
                    ),
                    false,
                    None,
                );
            }
            // A dry run checks the copy in the snapshotter directory where it is.
            (Some(_), true) => backups_api.check(chosen).await.map(|check| facts(&check)),
            (_, false) => backups_api
                .fetch(chosen, &found.name)
                .await
                .map(|fetched| facts(&fetched.check)),
        };
        let seen = backups
            .iter_mut()
            .find(|b| b.name == name)
            .expect("the candidate is listed");
        match checked {
            Ok(facts) => {
                seen.checked = true;
                seen.revision = facts.revision;
                seen.keys = facts.keys;
                if let (Some(live), Some(revision), Some((client, serializable))) =
                    (&live, facts.revision, &live_client)
                    && live.revision > revision
                {
                    seen.changed_since = client.changed_since(revision, *serializable).await.ok();
                }
            }
            Err(BackupError::Corrupt { detail, .. }) => {
                ctx.journal
                    .log(&format!(
                        "backup {name} is corrupt ({detail}); not using it"
                    ))
                    .await;
                seen.corrupt = Some(detail);
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
    } else if report.serving {
        format!("serving but degraded ({})", report.problems.join("; "))
    } else {
        format!("not serving ({})", report.problems.join("; "))
    };
    let message = match &decision {
        Decision::LeaveAlone if needs_person => {
            format!("{cluster} is {health}: left alone, because {reason}")
        }
        Decision::LeaveAlone => format!("{cluster} is {health}: nothing to recover"),
        Decision::Rebuild => format!("{cluster} is {health}: rebuild it, because {reason}"),
        Decision::ReclaimSpace | Decision::ReplaceMembers { .. } | Decision::StartWithData => {
            format!("{cluster} is {health}: {reason}")
        }
        Decision::Restore { backup, .. } => {
            format!("{cluster} is {health}: restore it from {backup}, because {reason}")
        }
        Decision::RestoreFromMember { pod, .. } => {
            format!("{cluster} is {health}: restore it from member pod {pod}, because {reason}")
        }
    };
    let assessment = Assessment {
        cluster: cluster.to_owned(),
        mode,
        healthy: report.healthy,
        serving: report.serving,
        report: serde_json::to_value(&report).map_err(|e| StepError::BadData(e.to_string()))?,
        members,
        live,
        unreadable,
        backups,
        restore_max_age: max_age,
        decision,
        reason,
        discarded,
    };
    let message = if ctx.mode.is_dry_run() {
        format!("dry run: {message}")
    } else {
        message
    };
    let state = if needs_person {
        State::ActionRequired
    } else {
        State::Succeeded
    };
    StepOutcome::with_state(state, message, &assessment)
}

/// What a check proved of a backup's snapshot: its store revision and live keys.
struct CheckedFacts {
    revision: Option<i64>,
    keys: Option<u64>,
}

fn facts(check: &BackupCheck) -> CheckedFacts {
    CheckedFacts {
        revision: i64::try_from(check.snapshot.revision).ok(),
        keys: Some(check.snapshot.live_keys),
    }
}

/// Why what the members of a cluster that does not serve hold cannot be read, when it may
/// exist: a Bitnami StatefulSet whose data PVCs remain while no member answers (scaled to 0,
/// or its members crash-looping with their data: after a power-on, CSM's disaster recovery
/// finds no snapshot where it looks and exits, for ever). Called when no member answered.
async fn unreadable_data(
    ctx: &StepContext<'_>,
    found: &layout::LocatedCluster,
    members: &[MemberPod],
) -> Result<Option<String>, StepError> {
    if found.layout != crate::model::EtcdLayout::Bitnami {
        return Ok(None);
    }
    let pvcs = ctx
        .cluster
        .list_pvcs(&format!("data-{}-", found.name))
        .await?;
    let names: Vec<String> = pvcs.iter().map(kube::ResourceExt::name_any).collect();
    if names.is_empty() {
        return Ok(None);
    }
    if found.desired == 0 {
        return Ok(Some(format!(
            "StatefulSet {} is at 0 replicas and its data PVCs remain ({}): what its members \
             hold cannot be read while none runs",
            found.name,
            names.join(", ")
        )));
    }
    let states: Vec<String> = members
        .iter()
        .map(|m| match &m.waiting {
            Some(waiting) => format!("{}: {waiting}", m.pod),
            None => format!(
                "{}: {}",
                m.pod,
                m.error.as_deref().unwrap_or("does not answer")
            ),
        })
        .collect();
    Ok(Some(format!(
        "no member of {} answers and its data PVCs remain ({}): what they hold cannot be read \
         (member pods: {}). When the members crash-loop with their data after a restart of the \
         whole cluster, ETCD_DISASTER_RECOVERY=no on the StatefulSet lets them start and find \
         each other again",
        found.name,
        names.join(", "),
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join("; ")
        }
    )))
}

/// The backups of the cluster, newest first, as listed and as the assessment shows them. A
/// rebuild lists none.
async fn backups_seen(
    ctx: &StepContext<'_>,
    found: &layout::LocatedCluster,
    mode: EtcdMode,
) -> Result<(Vec<Backup>, Vec<BackupSeen>), StepError> {
    if matches!(mode, EtcdMode::Rebuild | EtcdMode::Repair) {
        return Ok((Vec::new(), Vec::new()));
    }
    let listed = Backups::new(ctx.recovery)
        .list(&found.csm_service, &found.name)
        .await
        .map_err(|e| StepError::Failed(format!("listing the backups of {}: {e}", found.name)))?;
    let run_id = ctx.run_id.to_string();
    // A copy an earlier check found corrupt (remembered by copy: replaced, it is checked again)
    // is not chosen on its own.
    let checks = last_checks(ctx.store, &listed)
        .await
        .map_err(|e| StepError::Failed(format!("reading the backups' last checks: {e}")))?;
    let mut drills = Vec::with_capacity(listed.len());
    for backup in &listed {
        let drill = crate::etcd::backup_drill::last_drill(ctx.store, backup)
            .await
            .map_err(|e| StepError::Failed(format!("reading the backups' last drills: {e}")))?;
        drills.push(drill.map(|d| DrillSeen {
            id: d.id,
            at: d.at,
            passed: d.passed,
            detail: d.detail,
        }));
    }
    let seen = listed
        .iter()
        .zip(checks)
        .zip(drills)
        .map(|((b, check), drill)| {
            let mut seen = BackupSeen::from_backup(b, &run_id);
            seen.drill = drill;
            if let Some(check) = check.filter(|c| !c.ok) {
                seen.corrupt = Some(format!(
                    "found corrupt when checked at {}: {}",
                    check.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    check.detail
                ));
            }
            seen
        })
        .collect();
    Ok((listed, seen))
}
