//! The decision of a recovery, from the evidence `etcd-assess` gathers: leave the cluster
//! alone, restore it (which backup) or rebuild it; and what a restore discards of what the
//! live cluster holds. Pure: no I/O, so every rule is unit-tested (`tests.rs`).

use std::time::Duration;

use crate::model::EtcdMode;

mod evidence;
mod members;
mod verdict;

pub use evidence::{BackupSeen, DrillSeen, Evidence, LiveData};
pub use members::{broken_members, data_gone};
use members::{member_to_restore_from, replace_members, restore_from_member, start_with_data};
pub use verdict::{BrokenMember, Decision, Discarded, Verdict};

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
