//! `[recovery]`: where the etcd clusters' backups are (CSM's S3 bucket `etcd-backup` and the
//! Bitnami snapshotter PVC `bitnami-etcd-snapshotter`), and how old a backup may be to restore.
//! Owned here, by the layer that reads it; `config` places it in the file.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// The longest `[recovery] timeout` accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `[recovery]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// The newest backup must be at most this old for a restore to be chosen on its own.
    #[serde(with = "humantime_serde")]
    pub restore_max_age: Duration,
    /// `auto` restores the newest backup whose restore drill passed rather than a newer one
    /// that was not drilled, when it is at most this much older: a bounded number of writes
    /// traded for a backup proven to restore with the services' data. Zero: always the newest.
    #[serde(with = "humantime_serde")]
    pub prefer_drilled_within: Duration,
    /// Where the snapshotter PVC `bitnami-etcd-snapshotter` is mounted (its snapshots are in
    /// `<snapshots_dir>/<statefulset>/`); empty: not mounted.
    pub snapshots_dir: PathBuf,
    /// A directory with the files `access_key`, `secret_key` and `http_s3_endpoint`: the keys
    /// of CSM's Secret `etcd-backup-s3-credentials`, mounted as files; empty: no S3.
    pub s3_credentials_dir: PathBuf,
    /// The bucket CSM copies the snapshots to, one folder per service (`cray-bss/`).
    pub s3_bucket: String,
    /// Upper bound of one backup operation (a listing, a download, a snapshot, a check).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The tool that proves a backup restores, by restoring it into a scratch directory before
    /// a restore deletes anything: a path, or a name looked up on `PATH`. An `etcdutl` (etcd
    /// 3.5+) runs `etcdutl snapshot restore`, anything else `etcdctl snapshot restore` (etcd
    /// 3.4). Empty (the default): `etcdutl`, else `etcdctl`, on `PATH`; `none`: backups are
    /// checked by reading their database only.
    pub etcdutl: String,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            restore_max_age: Duration::from_secs(7 * 24 * 3600),
            // One CSM backup interval (hourly snapshots): at most one backup's writes.
            prefer_drilled_within: Duration::from_secs(3600),
            snapshots_dir: PathBuf::from("/snapshots"),
            s3_credentials_dir: PathBuf::new(),
            s3_bucket: "etcd-backup".to_owned(),
            timeout: Duration::from_secs(600),
            etcdutl: String::new(),
        }
    }
}

impl RecoveryConfig {
    /// The snapshotter directory, when mounted.
    pub fn snapshots_dir(&self) -> Option<&std::path::Path> {
        (!self.snapshots_dir.as_os_str().is_empty()).then_some(self.snapshots_dir.as_path())
    }

    /// The S3 credentials directory, when S3 is configured.
    pub fn s3_credentials_dir(&self) -> Option<&std::path::Path> {
        (!self.s3_credentials_dir.as_os_str().is_empty())
            .then_some(self.s3_credentials_dir.as_path())
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.restore_max_age.is_zero() {
            return Err(InvalidSetting::new(
                "recovery.restore_max_age",
                "must be greater than zero",
            ));
        }
        if self.timeout.is_zero() {
            return Err(InvalidSetting::new(
                "recovery.timeout",
                "must be greater than zero",
            ));
        }
        // A bound on one recovery: waits add it to the clock, which must not overflow.
        if self.timeout > MAX_TIMEOUT {
            return Err(InvalidSetting::new(
                "recovery.timeout",
                "must be at most 1 day (one restore or rebuild waits at most this long)",
            ));
        }
        for (key, dir) in [
            ("recovery.snapshots_dir", self.snapshots_dir()),
            ("recovery.s3_credentials_dir", self.s3_credentials_dir()),
        ] {
            if dir.is_some_and(|dir| !dir.is_absolute()) {
                return Err(InvalidSetting::new(
                    key,
                    "must be an absolute path (or empty: not mounted)",
                ));
            }
        }
        // S3's bucket naming rules (3-63 lowercase letters, digits, dots and hyphens, starting
        // and ending with a letter or digit).
        let bucket = &self.s3_bucket;
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(InvalidSetting::new(
                "recovery.s3_bucket",
                format!(
                    "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, \
                     '.' and '-', starting and ending with a letter or digit)"
                ),
            ));
        }
        Ok(())
    }
}

/// A `[recovery]` value that cannot work: its key (`recovery.timeout`) and why.
#[derive(Debug)]
pub struct InvalidSetting {
    pub key: &'static str,
    pub problem: String,
}

impl InvalidSetting {
    fn new(key: &'static str, problem: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            key,
            problem: problem.into(),
        }
    }
}
