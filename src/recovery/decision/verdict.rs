//! What the decision concludes: what the run does to the cluster, and what that throws away.

use serde::{Deserialize, Serialize};

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

/// A member pod that does not come back by itself (`Decision::ReplaceMembers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenMember {
    pub pod: String,
    /// The member id etcd lists it under (none: the pod is no member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// What shows it is broken.
    pub why: String,
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

/// What [`super::decide`] concluded.
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
