//! The member-level rules of the decision: which members are broken for good (replaced while
//! a quorum serves), and when a cluster that lost its quorum is restored from the member left.
//! Pure, as the rest of the decision.

use super::{
    evidence::Evidence,
    verdict::{BrokenMember, Decision, Verdict},
};
use crate::etcd::layout::MemberHealth;

/// The restarts after which a member pod that neither answers healthy nor is Ready counts as
/// crash-looping even between two of the kubelet's `CrashLoopBackOff`s (while it runs again).
const RESTARTS_BROKEN: i32 = 3;

/// The member pods that do not come back by themselves: a member that raised `CORRUPT`, or a
/// pod whose etcd container crash-loops (`CrashLoopBackOff`, or restarted again and again)
/// while it neither answers healthy nor is Ready. A pod that starts, waits for its volume or
/// catches up is not broken: it is left to come back.
pub fn broken_members(members: &[MemberHealth]) -> Vec<BrokenMember> {
    members
        .iter()
        .filter_map(|m| {
            let pod = m.pod.clone()?;
            let why = if m.alarms.iter().any(|a| a == "CORRUPT") {
                "it raised the alarm CORRUPT (its data differs from the other members')".to_owned()
            } else if m.healthy || m.pod_ready {
                return None;
            } else if let Some(looping) = m
                .container
                .as_deref()
                .filter(|c| c.starts_with("CrashLoopBackOff"))
            {
                format!("its etcd container is in {looping}")
            } else if m.restarts >= RESTARTS_BROKEN {
                format!(
                    "its etcd container restarted {} times and it does not answer healthy ({})",
                    m.restarts,
                    m.error.as_deref().unwrap_or("no answer")
                )
            } else {
                return None;
            };
            Some(BrokenMember {
                pod,
                member_id: m.id.clone(),
                why,
            })
        })
        .collect()
}

/// What an etcd container's last words say of a member whose data is gone for good: its volume
/// lost (a new, empty member the cluster refuses: "already been bootstrapped"), its database
/// or log corrupt. A member that cannot start for another reason ("There was no snapshot to
/// restore!", after a restart of the whole cluster) may still hold data, and is not one.
const DATA_GONE: [&str; 6] = [
    "already been bootstrapped",
    "failed to open database",
    "crc mismatch",
    "wal: ",
    "corrupt",
    "member ID mismatch",
];

/// Why `m`'s data is gone for good (see [`DATA_GONE`]), or `None` when it may hold some.
pub fn data_gone(m: &MemberHealth) -> Option<String> {
    if m.alarms.iter().any(|a| a == "CORRUPT") {
        return Some("it raised the alarm CORRUPT".to_owned());
    }
    let said = m.container.as_deref()?;
    let lower = said.to_lowercase();
    DATA_GONE
        .iter()
        .any(|words| lower.contains(&words.to_lowercase()))
        .then(|| format!("its etcd container says: {said}"))
}

/// For a cluster that lost its quorum: the member pod to restore every member from (the one
/// that holds the most, `live`), with what shows that each other member does not come back by
/// itself (its data gone for good, or its container crash-looping without answering); else
/// why not (a member stopped, starting, or without a pod may come back with its data).
pub(super) fn member_to_restore_from(
    e: &Evidence<'_>,
) -> Result<(String, i64, Vec<String>), String> {
    let live = e.live.ok_or("no member answers")?;
    let pod = live
        .pod
        .clone()
        .ok_or("the cluster answered through its client Service")?;
    if e.members.is_empty() {
        return Err("its members could not be matched with their pods".to_owned());
    }
    let (mut others, mut kept) = (Vec::new(), Vec::new());
    for m in e.members {
        if m.pod.as_deref() == Some(pod.as_str()) {
            continue;
        }
        let name = m.pod.clone().unwrap_or_else(|| m.name.clone());
        let looping = m.pod.is_some()
            && !m.healthy
            && !m.pod_ready
            && (m
                .container
                .as_deref()
                .is_some_and(|c| c.starts_with("CrashLoopBackOff"))
                || m.restarts >= RESTARTS_BROKEN);
        match data_gone(m) {
            Some(why) => others.push(format!("{name}: data gone, {why}")),
            None if looping => others.push(format!(
                "{name}: crash-looping, what it holds unreadable ({})",
                m.container.as_deref().unwrap_or("restarting")
            )),
            None => kept.push(name),
        }
    }
    if !kept.is_empty() {
        return Err(format!(
            "member(s) {} may come back with their data (not crash-looping, no data shown lost)",
            kept.join(", ")
        ));
    }
    Ok((pod, live.revision, others))
}

/// The verdict of restoring every member from the member pod that holds the most, for a
/// cluster whose quorum is lost for good: decided when the request confirms the cluster.
pub(super) fn restore_from_member(
    e: &Evidence<'_>,
    (pod, revision, others): (String, i64, Vec<String>),
    against: String,
) -> Result<Verdict, String> {
    let reason = format!(
        "the cluster lost its quorum and the other members do not come back by themselves ({}); \
         member pod {pod} still holds revision {revision} ({against}): every member is restored \
         from its snapshot, taken through it first (etcd-safety-snapshot) and proven to hold \
         revision {revision}, so no write it holds is lost (what the others hold cannot be read)",
        others.join("; ")
    );
    if !e.confirmed {
        return Ok(Verdict::Decided {
            decision: Decision::LeaveAlone,
            reason: format!(
                "{reason}. That deletes every data PVC of {cluster}: send the request again \
                 with \"confirm\": [\"{cluster}\"]",
                cluster = e.cluster
            ),
            needs_person: true,
            discarded: None,
        });
    }
    Ok(Verdict::Decided {
        decision: Decision::RestoreFromMember { pod, revision },
        reason,
        needs_person: false,
        discarded: None,
    })
}

/// Why replacing `broken` one at a time could cost the cluster its quorum (`None`: it cannot):
/// once a broken member is removed, the healthy members left must still be a quorum of the
/// members left.
fn quorum_risk(members: &[MemberHealth], broken: &[BrokenMember]) -> Option<String> {
    let listed = members.iter().filter(|m| m.id.is_some()).count();
    let healthy = members
        .iter()
        .filter(|m| m.healthy && !broken.iter().any(|b| m.pod.as_ref() == Some(&b.pod)))
        .count();
    let left = listed.saturating_sub(1).max(1);
    let quorum = left / 2 + 1;
    (healthy < quorum).then(|| {
        format!(
            "{healthy} healthy member(s) of {listed}: with a member removed, {quorum} of the \
             {left} left must be healthy to keep the quorum"
        )
    })
}

/// For `repair` and `auto` on a cluster that serves but is degraded: replace its broken
/// members ([`broken_members`]) when that keeps the quorum and the request confirms the
/// cluster (their PVCs are deleted); `None` when no member is broken (what is wrong is
/// something else, or comes back by itself).
pub(super) fn replace_members(e: &Evidence<'_>) -> Option<Result<Verdict, String>> {
    let broken = broken_members(e.members);
    if broken.is_empty() {
        return None;
    }
    let names = broken
        .iter()
        .map(|b| format!("{} ({})", b.pod, b.why))
        .collect::<Vec<_>>()
        .join("; ");
    let pvcs = broken
        .iter()
        .map(|b| format!("data-{}", b.pod))
        .collect::<Vec<_>>()
        .join(", ");
    let (mode, cluster) = (e.mode, e.cluster);
    let verdict = |decision, reason, needs_person| {
        Some(Ok(Verdict::Decided {
            decision,
            reason,
            needs_person,
            discarded: None,
        }))
    };
    if let Some(risk) = quorum_risk(e.members, &broken) {
        return verdict(
            Decision::LeaveAlone,
            format!(
                "member(s) broken: {names}; replacing one could cost the cluster its quorum \
                 ({risk}): bring a healthy member back first"
            ),
            true,
        );
    }
    if !e.confirmed {
        return verdict(
            Decision::LeaveAlone,
            format!(
                "member(s) broken: {names}. {mode} replaces them one at a time while the others \
                 serve, losing no write (every write is on the members left), and deletes their \
                 PVCs ({pvcs}) to do it: send the request again with \"confirm\": \
                 [\"{cluster}\"]"
            ),
            true,
        );
    }
    verdict(
        Decision::ReplaceMembers { members: broken },
        format!(
            "the cluster serves, but member(s) are broken: {names}; {mode} replaces them one \
             at a time while the others keep serving (their PVCs {pvcs} deleted, every write \
             kept on the members left)"
        ),
        false,
    )
}

/// For a cluster none of whose members answers: when every member pod crash-loops while its
/// data PVC remains and `ETCD_DISASTER_RECOVERY=yes` (a restart of the whole cluster, where
/// disaster recovery finds no snapshot and exits), start them with their data; `None`
/// otherwise. Nothing is deleted, so nothing needs `confirm`; if their data is in fact
/// unusable, they crash again and the step puts the variable back, saying so.
pub(super) fn start_with_data(e: &Evidence<'_>) -> Option<Result<Verdict, String>> {
    let unreadable = e.unreadable?;
    if e.serving || e.live.is_some() || !e.disaster_recovery || e.members.is_empty() {
        return None;
    }
    // Weaker evidence than a replacement needs (nothing is deleted): it exited at least once.
    let looping = |m: &MemberHealth| {
        m.pod.is_some()
            && !m.healthy
            && (m
                .container
                .as_deref()
                .is_some_and(|c| c.starts_with("CrashLoopBackOff"))
                || m.restarts >= 1)
    };
    if !e.members.iter().all(looping) {
        return None;
    }
    Some(Ok(Verdict::Decided {
        decision: Decision::StartWithData,
        reason: format!(
            "{unreadable}. Every member crash-loops with its data PVC, and \
             ETCD_DISASTER_RECOVERY=yes makes a member that finds the others not responding look \
             for a snapshot in /snapshots, where CSM's snapshotter writes none: {} starts them \
             with their data instead (ETCD_DISASTER_RECOVERY=no while they restart, then back), \
             deleting nothing",
            e.mode
        ),
        needs_person: false,
        discarded: None,
    }))
}
