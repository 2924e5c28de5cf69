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
        backup_check::{BackupCheck, last_checks},
        backups::{Backup, BackupError, Backups},
        layout::{self, MemberPod},
    },
    model::{EtcdMode, State},
    recovery::Decided,
    step::{StepContext, StepError, StepOutcome},
};

/// What the run does to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Nothing: the cluster serves (healthy or degraded), or what its members hold is newer
    /// than any backup, or could not be read (the assessment says which, and whether a person
    /// has work left).
    #[serde(rename = "none")]
    LeaveAlone,
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
    /// Why its snapshot was refused (not an etcd database, or its SHA-256 trailer did not
    /// match), when it was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
    /// It was checked (fetched, its trailer and database proven) by this assessment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checked: bool,
    /// What the check read from it: its store revision and keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Keys the live cluster wrote or changed after this backup's revision (their
    /// `mod_revision` is above it), when it was weighed against the live data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<u64>,
    /// Its newest restore drill that reached a verdict (`GET /etcd-clusters/{name}/drills`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSeen>,
}

/// A backup's newest restore drill, as the assessment saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillSeen {
    pub id: uuid::Uuid,
    pub at: chrono::DateTime<chrono::Utc>,
    pub passed: bool,
    pub detail: String,
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
            checked: false,
            revision: None,
            keys: None,
            changed_since: None,
            drill: None,
        }
    }

    /// Why `restore` or `auto` would not choose it on its own.
    fn unusable(&self) -> Option<&'static str> {
        if self.corrupt.is_some() {
            Some("corrupt")
        } else if self.drill.as_ref().is_some_and(|d| !d.passed) {
            Some("its last restore drill failed")
        } else if self.this_run {
            Some("a safety snapshot this run took")
        } else if self.empty {
            Some("a snapshot of an empty cluster")
        } else {
            None
        }
    }

    fn describe(&self) -> String {
        let drilled = match &self.drill {
            Some(drill) if drill.passed => format!(
                ", its restore drill passed at {}",
                drill.at.format("%Y-%m-%d %H:%M UTC")
            ),
            _ => String::new(),
        };
        match self.revision {
            Some(revision) => format!(
                "{} ({} old, revision {revision}{drilled})",
                self.name, self.age
            ),
            None => format!("{} ({} old{drilled})", self.name, self.age),
        }
    }

    fn drill_passed(&self) -> bool {
        self.drill.as_ref().is_some_and(|d| d.passed)
    }
}

/// What the live cluster holds, as far as it could be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveData {
    /// Where it was read: the cluster through its client endpoint (it serves), or the member
    /// that holds the most when the cluster has no quorum.
    pub source: String,
    /// The member pod read, when the cluster did not serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub revision: i64,
    pub keys: u64,
}

/// What a restore or rebuild throws away of what the live cluster holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discarded {
    /// Revisions the live cluster has beyond the backup's (all of them for a rebuild, or
    /// when the cluster's history restarted after the backup).
    pub revisions: i64,
    /// Keys written or changed after the backup (all the keys it holds for a rebuild, or when
    /// its history restarted).
    pub keys: u64,
    /// The same in words.
    pub summary: String,
    /// The request said `"discard_newer": true`.
    pub acknowledged: bool,
}

/// What the assessment knows when it decides.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub mode: EtcdMode,
    /// The cluster answers a linearizable read (a quorum holds it).
    pub serving: bool,
    pub healthy: bool,
    /// What is wrong with it (one line each).
    pub problems: &'a [String],
    /// What the cluster, or its most advanced member, holds; `None` when nothing answered.
    pub live: Option<&'a LiveData>,
    /// Why what its members hold cannot be read although it may exist (a StatefulSet at 0
    /// replicas whose data PVCs remain).
    pub unreadable: Option<&'a str>,
    /// Newest first.
    pub backups: &'a [BackupSeen],
    pub named: Option<&'a str>,
    pub max_age: Duration,
    /// `[recovery] prefer_drilled_within`: how much older a drilled backup `auto` takes over
    /// the newest when that one was not drilled.
    pub prefer_drilled_within: Duration,
    /// The request accepts losing what the live cluster holds beyond the backup.
    pub discard_newer: bool,
}

/// What [`decide`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Decided {
        decision: Decision,
        reason: String,
        /// A person has work left (the cluster is degraded, or holds data no backup has).
        needs_person: bool,
        discarded: Option<Discarded>,
    },
    /// The backup named must be checked (fetched, proven to be an etcd database, its
    /// revision read) before anything can be decided.
    Check(String),
}

/// How to send the same request again with the loss acknowledged.
pub const DISCARD_HINT: &str = "add \"discard_newer\": true to the request to accept that loss (a \
     safety snapshot keeps what the cluster holds before it is replaced)";

/// What restoring `backup` over `live` throws away; `None` when nothing is lost.
pub fn loss(live: &LiveData, backup: &BackupSeen) -> Option<Discarded> {
    let Some(backup_revision) = backup.revision else {
        return (live.keys > 0).then(|| Discarded {
            revisions: live.revision,
            keys: live.keys,
            summary: format!(
                "{} holds {} key(s) at revision {}, and the revision of backup {} could not be \
                 read: nothing shows it holds as much",
                live.source, live.keys, live.revision, backup.name
            ),
            acknowledged: false,
        });
    };
    if live.revision > backup_revision {
        let revisions = live.revision - backup_revision;
        let changed = match backup.changed_since {
            Some(keys) => format!(
                ": {keys} key(s) written or changed since, the rest of those revisions deletions"
            ),
            None => String::new(),
        };
        return Some(Discarded {
            revisions,
            keys: backup.changed_since.unwrap_or(0),
            summary: format!(
                "{} holds revision {}, {revisions} revision(s) newer than backup {} (revision \
                 {backup_revision}){changed}",
                live.source, live.revision, backup.name
            ),
            acknowledged: false,
        });
    }
    // A restore keeps the backup's revision and a rebuild starts again from 1, so a cluster
    // behind the backup was rebuilt or restored from something else since: it shares no
    // history with the backup, and everything it holds would be replaced.
    (live.revision < backup_revision && live.keys > 0).then(|| Discarded {
        revisions: live.revision,
        keys: live.keys,
        summary: format!(
            "{} holds {} key(s) at revision {}, behind backup {} (revision {backup_revision}): \
             it was rebuilt or restored since that backup, and all of its keys would be replaced",
            live.source, live.keys, live.revision, backup.name
        ),
        acknowledged: false,
    })
}

/// The decision for the evidence, or why the run cannot go on (a restore that would lose
/// newer data without `discard_newer`, a backup that was not found, ...).
pub fn decide(e: &Evidence<'_>) -> Result<Verdict, String> {
    let decided = |decision, reason: String, needs_person, discarded| {
        Ok(Verdict::Decided {
            decision,
            reason,
            needs_person,
            discarded,
        })
    };
    let restore = |b: &BackupSeen| Decision::Restore {
        backup: b.name.clone(),
        file: b.file.clone(),
    };
    let seen = || {
        if e.backups.is_empty() {
            "no backups were found".to_owned()
        } else {
            format!(
                "backups seen: {}",
                e.backups
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
    let unreadable_note = |what: &str| {
        e.unreadable.map(|why| {
            format!("{why}; {what} would replace whatever they hold, so it needs \"discard_newer\": true")
        })
    };
    match e.mode {
        EtcdMode::Check => return Err("mode check does not restore or rebuild".to_owned()),
        EtcdMode::Rebuild => {
            if let Some(live) = e.live.filter(|live| live.keys > 0) {
                let discarded = Discarded {
                    revisions: live.revision,
                    keys: live.keys,
                    summary: format!(
                        "{} holds {} key(s) (revision {}), all of which a rebuild deletes",
                        live.source, live.keys, live.revision
                    ),
                    acknowledged: e.discard_newer,
                };
                if !e.discard_newer {
                    return Err(format!("{}; {DISCARD_HINT}", discarded.summary));
                }
                return decided(
                    Decision::Rebuild,
                    format!(
                        "a rebuild was requested, discarding what it holds: {}",
                        discarded.summary
                    ),
                    false,
                    Some(discarded),
                );
            }
            if let Some(note) = unreadable_note("a rebuild").filter(|_| !e.discard_newer) {
                return Err(note);
            }
            return decided(
                Decision::Rebuild,
                "a rebuild was requested".to_owned(),
                false,
                None,
            );
        }
        EtcdMode::Auto if e.serving => {
            return if e.healthy {
                decided(
                    Decision::LeaveAlone,
                    "the cluster is healthy; auto leaves it alone".to_owned(),
                    false,
                    None,
                )
            } else {
                decided(
                    Decision::LeaveAlone,
                    format!(
                        "the cluster serves (a quorum of its members answers reads) but is \
                         degraded ({}); auto never restores or rebuilds a serving cluster, which \
                         would replace its data: repair what is degraded (a member pod that does \
                         not start, an alarm), see GET /etcd-clusters/<name>",
                        e.problems.join("; ")
                    ),
                    true,
                    None,
                )
            };
        }
        EtcdMode::Auto => {
            if let Some(why) = e.unreadable {
                return decided(
                    Decision::LeaveAlone,
                    format!(
                        "{why}; auto does not restore or rebuild over data it cannot read: \
                         scale the StatefulSet back so its members can say what they hold, and \
                         run auto again (or restore explicitly with \"discard_newer\": true)"
                    ),
                    true,
                    None,
                );
            }
        }
        EtcdMode::Restore => {}
    }
    // Restore, or auto on a cluster that does not serve.
    let candidate = match (e.mode, e.named) {
        (_, Some(name)) => match e.backups.iter().find(|b| b.name == name) {
            Some(b) if b.corrupt.is_some() => {
                return Err(format!(
                    "backup {name} is corrupt: {}",
                    b.corrupt.as_deref().unwrap_or_default()
                ));
            }
            Some(b) => b,
            None => return Err(format!("backup {name:?} was not found; {}", seen())),
        },
        (EtcdMode::Restore, None) => match e.backups.iter().find(|b| b.unusable().is_none()) {
            Some(b) => b,
            None => return Err(format!("there is no backup to restore from: {}", seen())),
        },
        _ => {
            let limit = humantime::format_duration(e.max_age);
            let recent = e.backups.iter().find(|b| b.unusable().is_none());
            match recent {
                Some(b) if Duration::from_secs(b.age_seconds) <= e.max_age => {
                    drilled_instead(e, b).unwrap_or(b)
                }
                other => {
                    let why = match other {
                        Some(b) => format!(
                            "its newest usable backup, {}, is {} old, older than restore_max_age \
                             {limit}",
                            b.name, b.age
                        ),
                        None => seen(),
                    };
                    if let Some(live) = e.live.filter(|live| live.keys > 0) {
                        return decided(
                            Decision::LeaveAlone,
                            format!(
                                "the cluster does not serve and {why}, but {} still holds {} \
                                 key(s) (revision {}): auto never rebuilds over data a member \
                                 holds; bring the other members back, or rebuild explicitly with \
                                 \"discard_newer\": true",
                                live.source, live.keys, live.revision
                            ),
                            true,
                            None,
                        );
                    }
                    return decided(
                        Decision::Rebuild,
                        format!("the cluster does not serve and {why}"),
                        false,
                        None,
                    );
                }
            }
        }
    };
    if !candidate.checked {
        return Ok(Verdict::Check(candidate.name.clone()));
    }
    let why_chosen = match (e.mode, e.named) {
        (_, Some(_)) => format!("backup {} was named", candidate.describe()),
        (EtcdMode::Restore, None) => {
            format!("{} is the newest usable backup", candidate.describe())
        }
        _ => match e.backups.iter().find(|b| b.unusable().is_none()) {
            Some(newest) if newest.name != candidate.name => format!(
                "the cluster does not serve and {} is the newest backup whose restore drill \
                 passed: preferred over the newer {}, which was not drilled \
                 (prefer_drilled_within {})",
                candidate.describe(),
                newest.describe(),
                humantime::format_duration(e.prefer_drilled_within)
            ),
            _ => format!(
                "the cluster does not serve and {} is the newest usable backup{} \
                 (restore_max_age {})",
                candidate.describe(),
                if candidate.drill_passed() {
                    ""
                } else {
                    ", not drilled"
                },
                humantime::format_duration(e.max_age)
            ),
        },
    };
    let discarded = e.live.and_then(|live| loss(live, candidate));
    match (e.mode, discarded) {
        (EtcdMode::Auto, Some(lost)) => decided(
            Decision::LeaveAlone,
            format!(
                "the cluster does not serve, but {}: auto never restores a backup older than \
                 what a member holds. Bring the other members back (the member's data is \
                 intact), or restore explicitly with \"discard_newer\": true",
                lost.summary
            ),
            true,
            None,
        ),
        (_, Some(mut lost)) => {
            if !e.discard_newer {
                return Err(format!(
                    "restoring {} would lose data: {}; {DISCARD_HINT}",
                    candidate.name, lost.summary
                ));
            }
            lost.acknowledged = true;
            decided(
                restore(candidate),
                format!(
                    "{why_chosen}; discarding what is newer, as the request accepts: {}",
                    lost.summary
                ),
                false,
                Some(lost),
            )
        }
        (_, None) => {
            if e.live.is_none()
                && let Some(note) = unreadable_note("a restore").filter(|_| !e.discard_newer)
            {
                return Err(note);
            }
            decided(restore(candidate), why_chosen, false, None)
        }
    }
}

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
        let checked = match (&chosen.snapshotter, ctx.dry_run) {
            // etcd-operator: its restore operator reads the backup from S3 itself; it is
            // checked there (read, not stored), in a dry run too.
            _ if found.layout == layout::EtcdLayout::Operator => backups_api
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
        Decision::Restore { backup, .. } => {
            format!("{cluster} is {health}: restore it from {backup}, because {reason}")
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
    let message = if ctx.dry_run {
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
    found: &layout::Found,
    members: &[MemberPod],
) -> Result<Option<String>, StepError> {
    if found.layout != layout::EtcdLayout::Bitnami {
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
    if ctx.dry_run {
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

/// For `auto`: the newest usable backup whose restore drill passed, when `newest` was not drilled
/// and it is at most `prefer_drilled_within` older (and within `restore_max_age`).
fn drilled_instead<'a>(e: &Evidence<'a>, newest: &BackupSeen) -> Option<&'a BackupSeen> {
    if newest.drill_passed() || e.prefer_drilled_within.is_zero() {
        return None;
    }
    let bound = newest.age_seconds + e.prefer_drilled_within.as_secs();
    e.backups.iter().find(|b| {
        b.unusable().is_none()
            && b.drill_passed()
            && b.age_seconds <= bound
            && Duration::from_secs(b.age_seconds) <= e.max_age
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const WEEK: Duration = Duration::from_secs(7 * DAY);

    fn backup(name: &str, days: u64) -> BackupSeen {
        BackupSeen {
            name: name.to_owned(),
            file: name.to_owned(),
            location: "s3".to_owned(),
            age_seconds: days * DAY,
            age: format!("{days}days"),
            size: Some(1),
            safety: false,
            empty: false,
            this_run: false,
            corrupt: None,
            checked: false,
            revision: None,
            keys: None,
            changed_since: None,
            drill: None,
        }
    }

    fn drilled(mut backup: BackupSeen, passed: bool) -> BackupSeen {
        backup.drill = Some(DrillSeen {
            id: uuid::Uuid::nil(),
            at: chrono::Utc::now(),
            passed,
            detail: "drilled".to_owned(),
        });
        backup
    }

    const HOUR: u64 = 3600;

    fn hours(name: &str, hours: u64) -> BackupSeen {
        BackupSeen {
            age_seconds: hours * HOUR,
            ..checked(name, 0, 20)
        }
    }

    fn checked(name: &str, days: u64, revision: i64) -> BackupSeen {
        BackupSeen {
            checked: true,
            revision: Some(revision),
            keys: Some(9),
            ..backup(name, days)
        }
    }

    fn live(revision: i64, keys: u64) -> LiveData {
        LiveData {
            source: "member pod x-0".to_owned(),
            pod: Some("x-0".to_owned()),
            revision,
            keys,
        }
    }

    fn evidence<'a>(mode: EtcdMode, backups: &'a [BackupSeen]) -> Evidence<'a> {
        Evidence {
            mode,
            serving: false,
            healthy: false,
            problems: &[],
            live: None,
            unreadable: None,
            backups,
            named: None,
            max_age: WEEK,
            prefer_drilled_within: Duration::from_secs(3600),
            discard_newer: false,
        }
    }

    fn decided(verdict: Result<Verdict, String>) -> (Decision, bool, Option<Discarded>) {
        match verdict.unwrap() {
            Verdict::Decided {
                decision,
                needs_person,
                discarded,
                ..
            } => (decision, needs_person, discarded),
            Verdict::Check(name) => panic!("asks to check {name}"),
        }
    }

    fn restore(name: &str) -> Decision {
        Decision::Restore {
            backup: name.to_owned(),
            file: name.to_owned(),
        }
    }

    #[test]
    fn auto_never_touches_a_serving_cluster() {
        let backups = [checked("a", 1, 5)];
        let healthy = Evidence {
            serving: true,
            healthy: true,
            ..evidence(EtcdMode::Auto, &backups)
        };
        assert_eq!(
            decided(decide(&healthy)),
            (Decision::LeaveAlone, false, None)
        );
        let problems = ["2 of 3 member pods are Ready".to_owned()];
        let degraded = Evidence {
            serving: true,
            problems: &problems,
            ..evidence(EtcdMode::Auto, &backups)
        };
        assert_eq!(
            decided(decide(&degraded)),
            (Decision::LeaveAlone, true, None),
            "a person repairs the member"
        );
    }

    #[test]
    fn auto_checks_its_backup_then_restores_it_unless_a_member_holds_newer_data() {
        let unchecked = [backup("new", 1), backup("old", 9)];
        assert_eq!(
            decide(&evidence(EtcdMode::Auto, &unchecked)),
            Ok(Verdict::Check("new".to_owned()))
        );
        let backups = [checked("new", 1, 20), backup("old", 9)];
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Auto, &backups))),
            (restore("new"), false, None)
        );
        let member = live(20, 9);
        let same = Evidence {
            live: Some(&member),
            ..evidence(EtcdMode::Auto, &backups)
        };
        assert_eq!(decided(decide(&same)), (restore("new"), false, None));
        let member = live(25, 9);
        let newer = Evidence {
            live: Some(&member),
            ..evidence(EtcdMode::Auto, &backups)
        };
        assert_eq!(
            decided(decide(&newer)),
            (Decision::LeaveAlone, true, None),
            "never older than what a member holds"
        );
    }

    #[test]
    fn auto_prefers_a_drilled_backup_within_prefer_drilled_within_and_skips_a_failed_one() {
        // The newest was not drilled; the one an hour older passed: auto takes that one, and
        // says why.
        let backups = [hours("new", 1), drilled(hours("drilled", 2), true)];
        let verdict = decide(&evidence(EtcdMode::Auto, &backups)).unwrap();
        let Verdict::Decided {
            decision, reason, ..
        } = verdict
        else {
            panic!("{verdict:?}")
        };
        assert_eq!(decision, restore("drilled"));
        assert!(reason.contains("preferred over the newer new"), "{reason}");
        // More than prefer_drilled_within older: the newest, said to be undrilled.
        let backups = [hours("new", 1), drilled(hours("drilled", 3), true)];
        let verdict = decide(&evidence(EtcdMode::Auto, &backups)).unwrap();
        let Verdict::Decided {
            decision, reason, ..
        } = verdict
        else {
            panic!("{verdict:?}")
        };
        assert_eq!(decision, restore("new"));
        assert!(reason.contains("not drilled"), "{reason}");
        // Zero turns the preference off.
        let backups = [hours("new", 1), drilled(hours("drilled", 2), true)];
        let off = Evidence {
            prefer_drilled_within: Duration::ZERO,
            ..evidence(EtcdMode::Auto, &backups)
        };
        assert_eq!(decided(decide(&off)).0, restore("new"));
        // A backup whose last drill failed is not chosen on its own, by auto or restore.
        let backups = [drilled(hours("failed", 1), false), hours("older", 5)];
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Auto, &backups))).0,
            restore("older")
        );
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Restore, &backups))).0,
            restore("older")
        );
        // Named, it is the admin's call.
        let named = Evidence {
            named: Some("failed"),
            ..evidence(EtcdMode::Restore, &backups)
        };
        assert_eq!(decided(decide(&named)).0, restore("failed"));
    }

    #[test]
    fn auto_rebuilds_only_when_no_member_holds_data() {
        let old = [checked("old", 9, 20)];
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Auto, &old))),
            (Decision::Rebuild, false, None)
        );
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Auto, &[]))),
            (Decision::Rebuild, false, None)
        );
        let member = live(3, 2);
        let holding = Evidence {
            live: Some(&member),
            ..evidence(EtcdMode::Auto, &old)
        };
        assert_eq!(
            decided(decide(&holding)),
            (Decision::LeaveAlone, true, None)
        );
        let unreadable = Evidence {
            unreadable: Some("StatefulSet x is at 0 replicas"),
            ..evidence(EtcdMode::Auto, &old)
        };
        assert_eq!(
            decided(decide(&unreadable)),
            (Decision::LeaveAlone, true, None)
        );
    }

    #[test]
    fn a_restore_over_newer_data_needs_discard_newer_and_says_how_much() {
        let backups = [checked("b", 1, 20)];
        let cluster = LiveData {
            source: "the cluster".to_owned(),
            pod: None,
            revision: 23,
            keys: 10,
        };
        let newer = Evidence {
            serving: true,
            healthy: true,
            live: Some(&cluster),
            ..evidence(EtcdMode::Restore, &backups)
        };
        let refused = decide(&newer).unwrap_err();
        assert!(
            refused.contains("3 revision(s) newer than backup b (revision 20)")
                && refused.contains("\"discard_newer\": true"),
            "{refused}"
        );
        let (decision, person, discarded) = decided(decide(&Evidence {
            discard_newer: true,
            ..newer
        }));
        assert_eq!((decision, person), (restore("b"), false));
        let discarded = discarded.unwrap();
        assert_eq!(discarded.revisions, 3);
        assert!(discarded.acknowledged);
        // Behind the backup with keys: rebuilt or restored since, everything it holds goes.
        let rebuilt = LiveData {
            revision: 4,
            ..cluster.clone()
        };
        let refused = decide(&Evidence {
            live: Some(&rebuilt),
            ..newer
        })
        .unwrap_err();
        assert!(
            refused.contains("all of its keys would be replaced"),
            "{refused}"
        );
        // The same revision: nothing is lost.
        let same = LiveData {
            revision: 20,
            ..cluster.clone()
        };
        assert_eq!(
            decided(decide(&Evidence {
                live: Some(&same),
                ..newer
            })),
            (restore("b"), false, None)
        );
    }

    #[test]
    fn a_rebuild_of_a_cluster_holding_keys_needs_discard_newer() {
        let member = live(7, 3);
        let holding = Evidence {
            live: Some(&member),
            ..evidence(EtcdMode::Rebuild, &[])
        };
        assert!(decide(&holding).unwrap_err().contains("holds 3 key(s)"));
        let (decision, _, discarded) = decided(decide(&Evidence {
            discard_newer: true,
            ..holding
        }));
        assert_eq!(decision, Decision::Rebuild);
        assert_eq!(discarded.unwrap().keys, 3);
        let empty = live(1, 0);
        assert_eq!(
            decided(decide(&Evidence {
                live: Some(&empty),
                ..holding
            })),
            (Decision::Rebuild, false, None)
        );
    }

    #[test]
    fn own_and_empty_snapshots_are_never_chosen_on_their_own() {
        let mut own = checked("safety-own", 0, 9);
        own.safety = true;
        own.this_run = true;
        let mut empty = checked("safety-empty", 0, 9);
        empty.safety = true;
        empty.empty = true;
        let mut other_safety = checked("safety-other", 0, 9);
        other_safety.safety = true;
        let list = [own, empty, other_safety, checked("db", 1, 9)];
        assert_eq!(
            decided(decide(&evidence(EtcdMode::Restore, &list))).0,
            restore("safety-other")
        );
        let err = decide(&evidence(EtcdMode::Restore, &list[..2])).unwrap_err();
        assert!(err.contains("an empty cluster"), "{err}");
        // Named explicitly, any listed backup is used; a corrupt one or an unknown name is not.
        let named = Evidence {
            named: Some("safety-empty"),
            ..evidence(EtcdMode::Restore, &list)
        };
        assert_eq!(decided(decide(&named)).0, restore("safety-empty"));
        let err = decide(&Evidence {
            named: Some("nope"),
            ..named
        })
        .unwrap_err();
        assert!(err.contains("\"nope\" was not found"), "{err}");
        let mut corrupt = checked("bad", 0, 9);
        corrupt.corrupt = Some("not a bbolt database".to_owned());
        let err = decide(&Evidence {
            named: Some("bad"),
            ..evidence(EtcdMode::Restore, std::slice::from_ref(&corrupt))
        })
        .unwrap_err();
        assert!(err.contains("backup bad is corrupt: not a bbolt"), "{err}");
    }
}
