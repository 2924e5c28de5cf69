//! What a backup is: its copies, and what its name says (one of this service's safety
//! snapshots, or the snapshot cray-etcd-base's pre-upgrade Job took).

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

/// What the name of a snapshot taken by cray-etcd-base's pre-upgrade Job says (CSM 1.7,
/// `charts/cray-etcd-base/templates/upgrade-job.yaml`): before Helm upgrades a service's
/// release, the Job saves a snapshot of its cluster and uploads it to S3 only, as
/// `etcd-backup/<service>/<service>_etcd_upgrade.snapshot-<revision>.db`, where the revision is
/// Helm's (`.Release.Revision`: the upgrade's, 2 after the first upgrade), not etcd's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UpgradeSnapshot {
    /// The CSM service whose Helm release was upgraded (`cray-bss`).
    pub service: String,
    /// The Helm release revision of that upgrade.
    pub helm_revision: u64,
}

impl UpgradeSnapshot {
    const MIDDLE: &str = "_etcd_upgrade.snapshot-";

    pub fn name(&self) -> String {
        format!("{}{}{}.db", self.service, Self::MIDDLE, self.helm_revision)
    }

    /// The upgrade snapshot a backup's name describes, if it is one.
    pub fn parse(name: &str) -> Option<UpgradeSnapshot> {
        let (service, rest) = name.split_once(Self::MIDDLE)?;
        let revision = rest.strip_suffix(".db")?;
        let valid = !service.is_empty()
            && !service.contains('/')
            && !revision.is_empty()
            && revision.bytes().all(|b| b.is_ascii_digit());
        Some(UpgradeSnapshot {
            service: service.to_owned(),
            helm_revision: revision.parse().ok()?,
        })
        .filter(|_| valid)
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
    /// Set when cray-etcd-base's pre-upgrade Job took it (CSM 1.7): `helm_revision` is the
    /// upgrade's Helm revision parsed from the name. Ordered among the others by its time.
    pub upgrade: Option<UpgradeSnapshot>,
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
            upgrade: UpgradeSnapshot::parse(&name),
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

    #[test]
    fn upgrade_snapshot_names_carry_the_helm_revision() {
        let upgrade = UpgradeSnapshot::parse("cray-bss_etcd_upgrade.snapshot-12.db").unwrap();
        assert_eq!(upgrade.service, "cray-bss");
        assert_eq!(upgrade.helm_revision, 12);
        assert_eq!(upgrade.name(), "cray-bss_etcd_upgrade.snapshot-12.db");
        let backup = Backup::new(upgrade.name());
        assert_eq!(backup.upgrade, Some(upgrade));
        assert_eq!(backup.safety, None);
        for other in [
            "db-2025-01-01_00-00",
            "cray-bss_etcd_upgrade.snapshot-.db",
            "cray-bss_etcd_upgrade.snapshot-2",
            "cray-bss_etcd_upgrade.snapshot-2x.db",
            "_etcd_upgrade.snapshot-2.db",
            "cray-bss_etcd_migration.snapshot-1.db",
        ] {
            assert_eq!(UpgradeSnapshot::parse(other), None, "{other}");
        }
    }
}
