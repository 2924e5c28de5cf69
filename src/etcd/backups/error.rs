//! Why a backup could not be listed, fetched, verified or taken, and where partial files go:
//! what every part of `backups`, and the backup check, share.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::etcd::error::EtcdError;

/// Where partial files are written, under the snapshotter directory: a hidden directory, so
/// that neither CSM's sync to S3 (`ls /snapshots/`) nor Bitnami's restore (`find /snapshots/
/// -maxdepth 1 -type f -name 'db-*'`) ever sees a half-written file, and on the same volume,
/// so that the finished file is renamed into place.
pub(crate) const PARTIAL_DIR: &str = ".etcd-repopulator";

/// Why a backup could not be listed, fetched, verified or taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "no backups are configured: neither [recovery] snapshots_dir (the snapshotter PVC \
         bitnami-etcd-snapshotter) nor s3_credentials_dir (CSM's Secret \
         etcd-backup-s3-credentials) is set"
    )]
    NotConfigured,
    #[error("{what} needs the snapshotter directory, and [recovery] snapshots_dir is empty")]
    NoSnapshotsDir { what: &'static str },
    #[error(
        "the snapshotter directory {} does not exist: is the PVC bitnami-etcd-snapshotter \
         mounted there? (set [recovery] snapshots_dir = \"\" if it is not)", .0.display()
    )]
    SnapshotsDirMissing(PathBuf),
    #[error("the S3 credentials in {}: {detail}", .dir.display())]
    Credentials { dir: PathBuf, detail: String },
    #[error(
        "S3 at {endpoint} refused {what}: {detail} (check the access_key and secret_key of etcd-backup-s3-credentials)"
    )]
    S3Denied {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("S3 at {endpoint} failed {what}: {detail}")]
    S3 {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no backup {name:?} of {service}, neither in S3 nor in the snapshotter directory")]
    NotFound { service: String, name: String },
    #[error("the snapshot {} is corrupt: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("taking a snapshot of {sts}: {source}")]
    Etcd {
        sts: String,
        #[source]
        source: EtcdError,
    },
    #[error("{what} did not finish within {timeout:?} ([recovery] timeout)")]
    Timeout { what: String, timeout: Duration },
}

impl BackupError {
    pub(super) fn io(
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    }

    /// Whether the fault is the service's configuration or what it is configured to reach
    /// (S3, the mounts), not the request.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            BackupError::NotConfigured
                | BackupError::NoSnapshotsDir { .. }
                | BackupError::SnapshotsDirMissing(_)
                | BackupError::Credentials { .. }
        )
    }
}
