//! What the decision is made from: the cluster as the assessment saw it, its backups, and the
//! request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    etcd::{backups::Backup, layout::MemberHealth},
    model::EtcdMode,
};

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
    pub(in crate::recovery) fn from_backup(backup: &Backup, run_id: &str) -> BackupSeen {
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
    pub(super) fn unusable(&self) -> Option<&'static str> {
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

    pub(super) fn describe(&self) -> String {
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

    pub(super) fn drill_passed(&self) -> bool {
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
