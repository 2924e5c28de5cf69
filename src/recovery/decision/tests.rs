//! The rules of the decision, one case each.

use super::*;
use crate::etcd::layout::MemberHealth;

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
        alarms: &[],
        cluster: "cray-bss-bitnami-etcd",
        members: &[],
        confirmed: false,
        disaster_recovery: false,
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

#[test]
fn a_full_serving_cluster_gets_its_space_back_and_repair_never_deletes() {
    let nospace = ["NOSPACE".to_owned()];
    let backups = [backup("b", 1)];
    let full = |mode| Evidence {
        serving: true,
        healthy: false,
        problems: &[],
        alarms: &nospace,
        ..evidence(mode, &backups)
    };
    assert_eq!(
        decided(decide(&full(EtcdMode::Repair))).0,
        Decision::ReclaimSpace
    );
    assert_eq!(
        decided(decide(&full(EtcdMode::Auto))).0,
        Decision::ReclaimSpace
    );
    // An explicit restore is still a restore.
    assert_ne!(
        decide(&full(EtcdMode::Restore)).map(|v| matches!(
            v,
            Verdict::Decided {
                decision: Decision::ReclaimSpace,
                ..
            }
        )),
        Ok(true)
    );
    // Repair of anything else: left alone, saying a person has work when it is not healthy.
    let down = evidence(EtcdMode::Repair, &backups);
    assert_eq!(decided(decide(&down)), (Decision::LeaveAlone, true, None));
    let healthy = Evidence {
        serving: true,
        healthy: true,
        ..evidence(EtcdMode::Repair, &backups)
    };
    assert_eq!(
        decided(decide(&healthy)),
        (Decision::LeaveAlone, false, None)
    );
}

fn member(pod: &str, id: &str, healthy: bool) -> MemberHealth {
    MemberHealth {
        id: Some(id.to_owned()),
        name: pod.to_owned(),
        pod: Some(pod.to_owned()),
        pod_ready: healthy,
        started: true,
        healthy,
        ..MemberHealth::default()
    }
}

fn crash_looping(pod: &str, id: &str) -> MemberHealth {
    MemberHealth {
        container: Some(
            "CrashLoopBackOff: etcd exited: member has already been bootstrapped".into(),
        ),
        restarts: 2,
        error: Some("connection refused".to_owned()),
        ..member(pod, id, false)
    }
}

#[test]
fn only_members_that_do_not_come_back_by_themselves_are_broken() {
    let starting = MemberHealth {
        restarts: 1,
        ..member("x-1", "2", false)
    };
    let running_again = MemberHealth {
        restarts: 5,
        ..member("x-2", "3", false)
    };
    let corrupt = MemberHealth {
        alarms: vec!["CORRUPT".to_owned()],
        ..member("x-0", "1", true)
    };
    let members = [corrupt, starting, running_again, crash_looping("x-3", "4")];
    let broken = broken_members(&members);
    let pods: Vec<&str> = broken.iter().map(|b| b.pod.as_str()).collect();
    assert_eq!(pods, ["x-0", "x-2", "x-3"]);
    assert!(broken[0].why.contains("CORRUPT"), "{broken:?}");
    assert!(broken[1].why.contains("restarted 5 times"), "{broken:?}");
    assert!(broken[2].why.contains("CrashLoopBackOff"), "{broken:?}");
    assert_eq!(broken[2].member_id.as_deref(), Some("4"));
}

#[test]
fn a_broken_minority_is_replaced_only_when_confirmed_and_the_quorum_holds() {
    let problems = ["pod x-2: CrashLoopBackOff".to_owned()];
    let members = [
        member("x-0", "1", true),
        member("x-1", "2", true),
        crash_looping("x-2", "3"),
    ];
    let degraded = |mode, confirmed| Evidence {
        serving: true,
        problems: &problems,
        members: &members,
        confirmed,
        ..evidence(mode, &[])
    };
    for mode in [EtcdMode::Repair, EtcdMode::Auto] {
        let Ok(Verdict::Decided {
            decision,
            needs_person,
            reason,
            ..
        }) = decide(&degraded(mode, true))
        else {
            panic!("{mode}: decided");
        };
        assert!(!needs_person, "{reason}");
        let Decision::ReplaceMembers { members } = decision else {
            panic!("{mode}: {reason}");
        };
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].pod, "x-2");
        // Not confirmed: left alone, naming the confirm to send.
        let Ok(Verdict::Decided {
            decision, reason, ..
        }) = decide(&degraded(mode, false))
        else {
            panic!("decided");
        };
        assert_eq!(decision, Decision::LeaveAlone);
        assert!(
            reason.contains(r#""confirm": ["cray-bss-bitnami-etcd"]"#)
                && reason.contains("data-x-2"),
            "{reason}"
        );
    }
    // One healthy member of three: removing a broken one would leave 1 of 2, no quorum.
    let weak = [
        member("x-0", "1", true),
        MemberHealth {
            pod_ready: false,
            ..member("x-1", "2", false)
        },
        crash_looping("x-2", "3"),
    ];
    let risky = Evidence {
        members: &weak,
        ..degraded(EtcdMode::Auto, true)
    };
    let Ok(Verdict::Decided {
        decision, reason, ..
    }) = decide(&risky)
    else {
        panic!("decided");
    };
    assert_eq!(decision, Decision::LeaveAlone);
    assert!(reason.contains("quorum"), "{reason}");
    // A restore is still a restore, and a degraded cluster with nothing broken is left alone.
    assert!(!matches!(
        decide(&degraded(EtcdMode::Restore, true)),
        Ok(Verdict::Decided {
            decision: Decision::ReplaceMembers { .. },
            ..
        })
    ));
    let starting = [
        member("x-0", "1", true),
        member("x-1", "2", true),
        member("x-2", "3", false),
    ];
    let waiting = Evidence {
        members: &starting,
        ..degraded(EtcdMode::Auto, true)
    };
    assert_eq!(decided(decide(&waiting)).0, Decision::LeaveAlone);
}

#[test]
fn a_lost_quorum_is_restored_from_the_member_left_only_when_the_others_do_not_come_back() {
    // x-0 answers alone at revision 50; the newest backup is at 20.
    let backups = [checked("new", 1, 20)];
    let member = live(50, 9);
    let gone = [
        member_answering_alone("x-0", "1"),
        crash_looping("x-1", "2"),
        MemberHealth {
            container: Some("CrashLoopBackOff: There was no snapshot to restore!".into()),
            ..member_down("x-2", "3")
        },
    ];
    let lost = |mode, members, confirmed| Evidence {
        live: Some(&member),
        members,
        confirmed,
        ..evidence(mode, &backups)
    };
    let verdict = decide(&lost(EtcdMode::Auto, &gone, true)).unwrap();
    let Verdict::Decided {
        decision, reason, ..
    } = verdict
    else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        decision,
        Decision::RestoreFromMember {
            pod: "x-0".to_owned(),
            revision: 50
        }
    );
    assert!(
        reason.contains("30 revision(s) newer than the newest usable backup, new"),
        "{reason}"
    );
    assert!(reason.contains("x-1: data gone"), "{reason}");
    // repair does the same, confirmed; unconfirmed it says what to send.
    assert!(matches!(
        decided(decide(&lost(EtcdMode::Repair, &gone, true))).0,
        Decision::RestoreFromMember { .. }
    ));
    let Verdict::Decided {
        decision, reason, ..
    } = decide(&lost(EtcdMode::Repair, &gone, false)).unwrap()
    else {
        panic!("decided")
    };
    assert_eq!(decision, Decision::LeaveAlone);
    assert!(
        reason.contains(r#""confirm": ["cray-bss-bitnami-etcd"]"#),
        "{reason}"
    );
    // A member stopped (not crash-looping) may come back with its data: left alone.
    let stopped = [
        member_answering_alone("x-0", "1"),
        crash_looping("x-1", "2"),
        MemberHealth {
            container: Some("terminated: Error, exit code 137".into()),
            ..member_down("x-2", "3")
        },
    ];
    let Verdict::Decided {
        decision, reason, ..
    } = decide(&lost(EtcdMode::Auto, &stopped, true)).unwrap()
    else {
        panic!("decided")
    };
    assert_eq!(decision, Decision::LeaveAlone);
    assert!(reason.contains("x-2 may come back"), "{reason}");
}

fn member_answering_alone(pod: &str, id: &str) -> MemberHealth {
    MemberHealth {
        revision: Some(50),
        error: Some("no leader".to_owned()),
        ..member(pod, id, false)
    }
}

fn member_down(pod: &str, id: &str) -> MemberHealth {
    MemberHealth {
        error: Some("connection refused".to_owned()),
        ..member(pod, id, false)
    }
}

#[test]
fn members_crash_looping_with_their_data_are_started_with_it_only_with_disaster_recovery_on() {
    let backups = [checked("new", 1, 20)];
    let looping = [
        crash_looping("x-0", "1"),
        MemberHealth {
            restarts: 1,
            ..member_down("x-1", "2")
        },
        crash_looping("x-2", "3"),
    ];
    let why = "no member of x answers and its data PVCs remain";
    let down = |mode, disaster_recovery, members| Evidence {
        unreadable: Some(why),
        members,
        disaster_recovery,
        ..evidence(mode, &backups)
    };
    for mode in [EtcdMode::Auto, EtcdMode::Repair] {
        let (decision, needs_person, _) = decided(decide(&down(mode, true, &looping)));
        assert_eq!(decision, Decision::StartWithData, "{mode}");
        assert!(!needs_person);
    }
    // Disaster recovery off: they are not kept down by it; left alone, as before.
    assert_eq!(
        decided(decide(&down(EtcdMode::Auto, false, &looping))).0,
        Decision::LeaveAlone
    );
    // One member that never ran: not every member crash-loops.
    let pending = [
        crash_looping("x-0", "1"),
        crash_looping("x-1", "2"),
        member_down("x-2", "3"),
    ];
    assert_eq!(
        decided(decide(&down(EtcdMode::Auto, true, &pending))).0,
        Decision::LeaveAlone
    );
}
