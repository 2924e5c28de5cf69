//! The decision of a recovery, from the evidence `etcd-assess` gathers: leave the cluster
//! alone, restore it (which backup) or rebuild it; and what a restore discards of what the
//! live cluster holds. Pure: no I/O, so every rule is unit-tested (`tests.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    etcd::{backups::Backup, layout::MemberHealth},
    model::EtcdMode,
};

mod members;
pub use members::{BrokenMember, broken_members, data_gone};
use members::{member_to_restore_from, replace_members, restore_from_member, start_with_data};

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
    /// Give a full database its space back without deleting a key (`recovery::space`):
    /// compaction, defragmentation one member at a time, the alarm disarmed.
    #[serde(rename = "reclaim-space")]
    ReclaimSpace,
    /// Replace the broken minority of its members, one at a time, while the others keep
    /// serving (`recovery::replace`): each removed from the cluster, its PVC and pod deleted,
    /// and rejoined empty as a new member that catches up from the leader.
    #[serde(rename = "replace-members")]
    ReplaceMembers { members: Vec<BrokenMember> },
    /// The cluster lost its quorum for good (the other members' data is gone), and member pod
    /// `pod` still holds `revision`: restore every member from its snapshot (the safety
    /// snapshot, taken through that member), which holds more than any backup.
    #[serde(rename = "restore-from-member")]
    RestoreFromMember { pod: String, revision: i64 },
    /// Every member crash-loops with its data, none answering, because disaster recovery looks
    /// for a snapshot where there is none (after a restart of the whole cluster): start them
    /// with their data (`ETCD_DISASTER_RECOVERY=no` for the restart; nothing is deleted).
    #[serde(rename = "start-with-data")]
    StartWithData,
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
    pub(super) fn from_backup(backup: &Backup, run_id: &str) -> BackupSeen {
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
    /// The alarms raised in the cluster (`NOSPACE`, `CORRUPT`), one per member that raised it.
    pub alarms: &'a [String],
    /// The cluster's name (what `confirm` names).
    pub cluster: &'a str,
    /// Each member and member pod (Bitnami; empty for the etcd-operator, which replaces its
    /// members itself).
    pub members: &'a [MemberHealth],
    /// The request's `confirm` names the cluster (every real `restore`, `rebuild` and `auto`
    /// run does; a `repair` that may replace members must).
    pub confirmed: bool,
    /// The StatefulSet sets `ETCD_DISASTER_RECOVERY=yes`.
    pub disaster_recovery: bool,
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
    let nospace = e.alarms.iter().any(|a| a == "NOSPACE");
    match e.mode {
        EtcdMode::Check => return Err("mode check does not restore or rebuild".to_owned()),
        // A full database that still serves reads: its space back, no key lost.
        EtcdMode::Repair | EtcdMode::Auto if e.serving && nospace => {
            return decided(
                Decision::ReclaimSpace,
                format!(
                    "the cluster serves reads but refuses writes: its database is full (alarm \
                     NOSPACE); {} gives it its space back without deleting a key (compaction, \
                     defragmentation one member at a time, the alarm disarmed)",
                    e.mode
                ),
                false,
                None,
            );
        }
        EtcdMode::Repair | EtcdMode::Auto if e.serving && !e.healthy => {
            if let Some(verdict) = replace_members(e) {
                return verdict;
            }
        }
        _ => {}
    }
    // Members kept down by disaster recovery, their data intact: started with it.
    if matches!(e.mode, EtcdMode::Repair | EtcdMode::Auto)
        && let Some(verdict) = start_with_data(e)
    {
        return verdict;
    }
    match e.mode {
        EtcdMode::Check | EtcdMode::Restore => {}
        EtcdMode::Repair if !e.serving && e.live.is_some() => {
            return match member_to_restore_from(e) {
                Ok(member) => {
                    restore_from_member(e, member, "repair does not weigh backups".to_owned())
                }
                Err(why) => decided(
                    Decision::LeaveAlone,
                    format!(
                        "the cluster does not serve; restoring it from the member that holds \
                         the most would lose data: {why}. Bring those members back, or use \
                         auto or an explicit restore"
                    ),
                    true,
                    None,
                ),
            };
        }
        EtcdMode::Repair => {
            return decided(
                Decision::LeaveAlone,
                if e.healthy {
                    "the cluster is healthy: nothing to repair".to_owned()
                } else {
                    format!(
                        "repair does only what loses no data, and for what is wrong ({}) it \
                         has no such remedy (it replaces crash-looping or corrupt members while \
                         a quorum serves, and gives a full database its space back; \
                         quorum-loss recovery is not built): see GET /etcd-clusters/<name>, \
                         and use auto or an explicit restore if a backup must be restored",
                        if e.problems.is_empty() {
                            "the cluster does not serve".to_owned()
                        } else {
                            e.problems.join("; ")
                        }
                    )
                },
                !e.healthy,
                None,
            );
        }
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
                         would replace its data, and no member is broken for good (a member \
                         that starts or catches up comes back by itself): see GET \
                         /etcd-clusters/<name>, and run auto again if it stays degraded",
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
                        let not_from_member = match member_to_restore_from(e) {
                            Ok(member) => return restore_from_member(e, member, why),
                            Err(not) => not,
                        };
                        return decided(
                            Decision::LeaveAlone,
                            format!(
                                "the cluster does not serve and {why}, but {} still holds {} \
                                 key(s) (revision {}): auto never rebuilds over data a member \
                                 holds, and does not restore from that member alone because \
                                 {not_from_member}; bring the other members back, or rebuild \
                                 explicitly with \"discard_newer\": true",
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
        (EtcdMode::Auto, Some(lost)) => {
            let newer = e
                .live
                .zip(candidate.revision)
                .filter(|(live, backup)| live.revision > *backup);
            if let Some((live, backup)) = newer {
                match member_to_restore_from(e) {
                    Ok(member) => {
                        return restore_from_member(
                            e,
                            member,
                            format!(
                                "{} revision(s) newer than the newest usable backup, {} \
                                 (revision {backup})",
                                live.revision - backup,
                                candidate.name
                            ),
                        );
                    }
                    Err(not) => {
                        return decided(
                            Decision::LeaveAlone,
                            format!(
                                "the cluster does not serve, but {}: auto never restores a \
                                 backup older than what a member holds, and does not restore \
                                 from that member alone because {not}. Bring the other members \
                                 back (the member's data is intact), or restore explicitly with \
                                 \"discard_newer\": true",
                                lost.summary
                            ),
                            true,
                            None,
                        );
                    }
                }
            }
            decided(
                Decision::LeaveAlone,
                format!(
                    "the cluster does not serve, but {}: auto never restores a backup older \
                     than what a member holds. Bring the other members back (the member's data \
                     is intact), or restore explicitly with \"discard_newer\": true",
                    lost.summary
                ),
                true,
                None,
            )
        }
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

#[cfg(test)]
mod tests;
