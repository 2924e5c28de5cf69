//! Maintenance instead of deletion: a cluster whose database is full (a `NOSPACE` alarm: etcd
//! refuses every write) gets its space back without losing a key, as etcd's own maintenance
//! guide does it (etcd.io "Maintenance": history compaction, defragmentation, space quota):
//!
//! 1. compact the history up to the current revision (every key keeps its current value);
//! 2. defragment one member at a time, the followers first, each only while every member
//!    answers and one leads; then move leadership to a defragmented follower and defragment
//!    the former leader last (a member serves nothing while it defragments);
//! 3. disarm the alarms, unless the live data itself fills the quota: then compaction and
//!    defragmentation cannot help, and disarming would only let the next writes fill it again,
//!    so the repair stops and says to raise `ETCD_QUOTA_BACKEND_BYTES` (CSM 1.7 lowered it
//!    from 10 GiB to 2 GiB).
//!
//! Nothing is deleted, so nothing needs `confirm`; every step can be repeated (a compaction to
//! a revision already compacted is skipped, a defragmentation of a compact database is quick,
//! disarming nothing is nothing), so a resumed run repeats the sequence from the start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    etcd::{EtcdAlarm, EtcdClient, EtcdError, MemberStatus, layout},
    step::{StepContext, StepError, StepOutcome},
};

/// The live data may fill at most this part of the quota for the alarm to be disarmed.
const MAX_FILL_AFTER: f64 = 0.9;

/// One member, reached at its own address (a defragmentation and a leadership transfer are
/// one member's).
pub struct Member {
    pub name: String,
    pub client: EtcdClient,
}

/// What [`reclaim_space`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpaceReclaimed {
    /// The revision the history was compacted to (`None`: it already was).
    pub compacted_to: Option<i64>,
    /// Each member defragmented, in order, with its database size before and after.
    pub defragmented: Vec<Defragmented>,
    /// The leadership moved away from the member defragmented last: (from, to).
    pub leader_moved: Option<(String, String)>,
    /// The alarms disarmed (`NOSPACE on member <id>`).
    pub disarmed: Vec<String>,
    /// The largest database in use after, and the quota it was weighed against.
    pub in_use_bytes: u64,
    pub quota_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Defragmented {
    pub member: String,
    pub size_before: u64,
    pub size_after: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{0}: the cluster must be healthy between defragmentations")]
    NotHealthy(String),
    #[error(
        "after compaction and defragmentation the live data still uses {in_use} bytes of the \
         {quota}-byte quota (ETCD_QUOTA_BACKEND_BYTES): it is the data, not its history, that \
         fills it, so the alarm is left armed (disarmed, the next writes would raise it again). \
         Raise ETCD_QUOTA_BACKEND_BYTES on the StatefulSet (CSM 1.7 lowered it to 2 GiB), or \
         delete data the services no longer need, then repair again"
    )]
    DataFillsQuota {
        in_use: u64,
        quota: u64,
        done: Box<SpaceReclaimed>,
    },
}

/// Every member's own status, and the member that leads: all must answer and agree on one
/// leader (a quorum), or nothing is defragmented.
async fn healthy(members: &[Member]) -> Result<(Vec<MemberStatus>, usize), SpaceError> {
    let mut statuses = Vec::with_capacity(members.len());
    for member in members {
        let status = member.client.member_status().await.map_err(|e| {
            SpaceError::NotHealthy(format!("member {} does not answer: {e}", member.name))
        })?;
        statuses.push(status);
    }
    let leader = statuses
        .first()
        .and_then(|s| s.leader.clone())
        .ok_or_else(|| SpaceError::NotHealthy("no member leads".to_owned()))?;
    if statuses
        .iter()
        .any(|s| s.leader.as_deref() != Some(leader.as_str()))
    {
        return Err(SpaceError::NotHealthy(
            "the members do not agree on a leader".to_owned(),
        ));
    }
    let at = statuses
        .iter()
        .position(|s| s.member_id == leader)
        .ok_or_else(|| {
            SpaceError::NotHealthy(format!("the leader {leader} is not a member read"))
        })?;
    Ok((statuses, at))
}

async fn defragment(
    member: &Member,
    timeout: Duration,
    done: &mut SpaceReclaimed,
) -> Result<(), SpaceError> {
    let before = member.client.member_status().await?.db_size;
    member.client.defragment(timeout).await?;
    let after = member.client.member_status().await?.db_size;
    done.defragmented.push(Defragmented {
        member: member.name.clone(),
        size_before: before,
        size_after: after,
    });
    Ok(())
}

/// Reclaims the space of the cluster whose members are `members` (each at its own address;
/// `cluster` answers for all of them): see the module. `quota`: the members'
/// `--quota-backend-bytes`, when known.
pub async fn reclaim_space(
    cluster: &EtcdClient,
    members: &[Member],
    quota: Option<u64>,
    defrag_timeout: Duration,
) -> Result<SpaceReclaimed, SpaceError> {
    let mut done = SpaceReclaimed {
        quota_bytes: quota,
        ..SpaceReclaimed::default()
    };
    let (statuses, leader) = healthy(members).await?;
    let revision = statuses.iter().map(|s| s.revision).max().unwrap_or(0);
    match cluster.compact(revision).await {
        Ok(()) => done.compacted_to = Some(revision),
        Err(e) if e.to_string().contains("compacted") => {}
        Err(e) => return Err(e.into()),
    }
    for (at, member) in members.iter().enumerate() {
        if at != leader {
            healthy(members).await?;
            defragment(member, defrag_timeout, &mut done).await?;
        }
    }
    let mut last = leader;
    if members.len() > 1 {
        // The leader last, once it leads no more: to the first follower.
        let (statuses, leader) = healthy(members).await?;
        let to = (0..members.len()).find(|&i| i != leader).unwrap_or(0);
        members[leader]
            .client
            .move_leader(&statuses[to].member_id)
            .await?;
        done.leader_moved = Some((members[leader].name.clone(), members[to].name.clone()));
        last = leader;
        healthy(members).await?;
    }
    defragment(&members[last], defrag_timeout, &mut done).await?;
    let mut in_use = 0;
    for member in members {
        in_use = in_use.max(member.client.member_status().await?.db_size_in_use);
    }
    done.in_use_bytes = in_use;
    if let Some(quota) = quota
        && in_use as f64 > quota as f64 * MAX_FILL_AFTER
    {
        return Err(SpaceError::DataFillsQuota {
            in_use,
            quota,
            done: Box::new(done),
        });
    }
    done.disarmed = cluster
        .disarm_all()
        .await?
        .iter()
        .map(|EtcdAlarm { member_id, alarm }| format!("{alarm} on member {member_id}"))
        .collect();
    Ok(done)
}

/// `etcd-recover` when `etcd-assess` decided [`super::decision::Decision::ReclaimSpace`]: the
/// cluster `cluster` located, its members read at their own addresses, and [`reclaim_space`]
/// within `[recovery] timeout` per defragmentation. A dry run says what it would do. When the
/// data itself fills the quota the step ends `action_required`, the alarm left armed.
pub async fn perform(ctx: &StepContext<'_>, cluster: &str) -> Result<StepOutcome, StepError> {
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the etcd cluster {cluster} does not exist in namespace {}",
            ctx.cluster.namespace()
        )));
    };
    let quota = Some(found.quota.bytes);
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "dry run: would compact {cluster}'s history, defragment its members one at a \
                 time (the leader last), and disarm NOSPACE unless its live data fills the \
                 {}-byte quota; nothing is deleted",
                found.quota.bytes
            ),
            serde_json::json!({ "cluster": cluster, "quota_bytes": quota }),
        );
    }
    let report = layout::report(ctx.cluster, &found, ctx.etcd).await?;
    let members = report
        .member_health
        .iter()
        .filter_map(|m| {
            let url = m.client_url.as_deref()?;
            Some(Member {
                name: m.pod.clone().unwrap_or_else(|| m.name.clone()),
                client: EtcdClient::new(url, ctx.etcd).ok()?,
            })
        })
        .collect::<Vec<_>>();
    if members.is_empty() {
        return Err(StepError::Failed(format!(
            "no member of {cluster} could be reached at its own address"
        )));
    }
    // The cluster-wide calls (compaction, disarm) go through a member at its own address, not
    // the client Service: with NOSPACE raised the chart's readiness probe fails on every
    // member, and the Service has no endpoint left to send to.
    let whole = report
        .member_health
        .iter()
        .filter(|m| m.started)
        .find_map(|m| m.client_url.as_deref())
        .map(|url| EtcdClient::new(url, ctx.etcd))
        .transpose()?
        .ok_or_else(|| {
            StepError::Failed(format!("no member of {cluster} answers at its own address"))
        })?;
    match reclaim_space(&whole, &members, quota, ctx.recovery.timeout).await {
        Ok(done) => {
            // The alarm disarmed, the chart's probe passes again: the step ends once the
            // members are Ready and the cluster healthy through its client Service, as the
            // services reach it.
            super::wait::healthy_report(
                ctx,
                &found,
                super::wait::Deadline::after(ctx.recovery.timeout),
                ctx.cancel,
            )
            .await?;
            StepOutcome::done(
                format!(
                    "{cluster} has its space back, every key kept: history compacted{}, {} \
                 member(s) defragmented{}, {} (in use: {} of {} bytes)",
                    done.compacted_to
                        .map(|r| format!(" to revision {r}"))
                        .unwrap_or_default(),
                    done.defragmented.len(),
                    done.leader_moved
                        .as_ref()
                        .map(|(from, to)| format!(" (leadership moved from {from} to {to} first)"))
                        .unwrap_or_default(),
                    if done.disarmed.is_empty() {
                        "no alarm to disarm".to_owned()
                    } else {
                        format!("disarmed {}", done.disarmed.join(", "))
                    },
                    done.in_use_bytes,
                    found.quota.bytes,
                ),
                &done,
            )
        }
        Err(SpaceError::DataFillsQuota { done, .. }) => {
            let message = SpaceError::DataFillsQuota {
                in_use: done.in_use_bytes,
                quota: found.quota.bytes,
                done: done.clone(),
            }
            .to_string();
            StepOutcome::action_required(format!("{cluster}: {message}"), &*done)
        }
        Err(SpaceError::Etcd(e)) => Err(e.into()),
        Err(e @ SpaceError::NotHealthy(_)) => Err(StepError::Failed(format!("{cluster}: {e}"))),
    }
}
