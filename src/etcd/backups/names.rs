//! What a backup is: its copies, and what its name says (one of this service's safety
//! snapshots).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The prefix of the safety snapshots' names (see [`SafetySnapshot`]).
const SAFETY_PREFIX: &str = "repopulator-";
/// The suffix of a safety snapshot of a cluster that had no keys.
const EMPTY_SUFFIX: &str = "-empty";
/// The format of the time in a safety snapshot's name (UTC).
const SAFETY_TIME: &str = "%Y-%m-%d_%H-%M-%S";

/// One copy of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct BackupCopy {
    /// `s3://etcd-backup/cray-bss/db-2025-01-01_00-00`, or
    /// `/snapshots/cray-bss-bitnami-etcd/db-2025-01-01_00-00`.
    pub location: String,
    pub size: u64,
    /// S3's `LastModified` (when it was uploaded), or the file's modification time.
    pub last_modified: DateTime<Utc>,
}

/// What the name of one of this service's safety snapshots says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SafetySnapshot {
    /// The run that took it.
    pub run_id: String,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The cluster had no keys then (the snapshot restores an empty cluster).
    pub empty: bool,
}

impl SafetySnapshot {
    /// `repopulator-<YYYY-MM-DD_HH-MM-SS>-<run id>[-empty]`: not `db-*`, so that the snapshotter's
    /// pruning and Bitnami's "latest snapshot" never take it for one of theirs.
    pub fn name(&self) -> String {
        format!(
            "{SAFETY_PREFIX}{}-{}{}",
            self.taken_at.format(SAFETY_TIME),
            self.run_id,
            if self.empty { EMPTY_SUFFIX } else { "" }
        )
    }

    /// The safety snapshot a backup's name describes, if it is one.
    pub fn parse(name: &str) -> Option<SafetySnapshot> {
        let rest = name.strip_prefix(SAFETY_PREFIX)?;
        // The time is 19 characters: 2025-01-01_00-00-00.
        let (time, rest) = (rest.get(..19)?, rest.get(19..)?);
        let taken_at = chrono::NaiveDateTime::parse_from_str(time, SAFETY_TIME)
            .ok()?
            .and_utc();
        let run = rest.strip_prefix('-')?;
        let (run, empty) = match run.strip_suffix(EMPTY_SUFFIX) {
            Some(run) => (run, true),
            None => (run, false),
        };
        (!run.is_empty() && !run.contains('/')).then(|| SafetySnapshot {
            run_id: run.to_owned(),
            taken_at,
            empty,
        })
    }
}

/// A backup of one etcd cluster, in S3, in the snapshotter directory, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Backup {
    /// The file's name (`db-2025-01-01_00-00`): the same in both places.
    pub name: String,
    /// The copy in S3 (`s3://<bucket>/<service>/<name>`).
    pub s3: Option<BackupCopy>,
    /// The copy in the snapshotter directory (`<snapshots_dir>/<statefulset>/<name>`).
    pub snapshotter: Option<BackupCopy>,
    /// Bytes (of the larger copy, should they differ).
    pub size: u64,
    /// The earliest modification time of its copies: about when it was taken (S3's copy is
    /// the later upload of the snapshotter's file).
    pub last_modified: DateTime<Utc>,
    /// Seconds since `last_modified`, when listed.
    pub age_seconds: u64,
    /// Set when it is one of this service's safety snapshots.
    pub safety: Option<SafetySnapshot>,
}

impl Backup {
    /// How old it was when listed.
    pub fn age(&self) -> Duration {
        Duration::from_secs(self.age_seconds)
    }

    /// Where it is: its S3 URL and/or its path.
    pub fn locations(&self) -> Vec<&str> {
        [&self.s3, &self.snapshotter]
            .into_iter()
            .flatten()
            .map(|copy| copy.location.as_str())
            .collect()
    }

    pub(super) fn new(name: String) -> Backup {
        Backup {
            safety: SafetySnapshot::parse(&name),
            name,
            s3: None,
            snapshotter: None,
            size: 0,
            last_modified: DateTime::<Utc>::MAX_UTC,
            age_seconds: 0,
        }
    }

    pub(super) fn add(&mut self, copy: BackupCopy, in_s3: bool) {
        self.size = self.size.max(copy.size);
        self.last_modified = self.last_modified.min(copy.last_modified);
        if in_s3 {
            self.s3 = Some(copy);
        } else {
            self.snapshotter = Some(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_names_round_trip_and_others_are_not_ours() {
        let taken_at = DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        for empty in [false, true] {
            let safety = SafetySnapshot {
                run_id: "0190e1c4-3b5a-7c3e-9d2f-0123456789ab".to_owned(),
                taken_at,
                empty,
            };
            let name = safety.name();
            assert!(
                name.starts_with("repopulator-2025-03-04_05-06-07-0190e1c4"),
                "{name}"
            );
            assert_eq!(name.ends_with("-empty"), empty);
            assert_eq!(SafetySnapshot::parse(&name), Some(safety));
        }
        for other in [
            "db-2025-01-01_00-00",
            "repopulator-",
            "repopulator-2025-13-01_00-00-00-x",
        ] {
            assert_eq!(SafetySnapshot::parse(other), None, "{other}");
        }
    }
}
