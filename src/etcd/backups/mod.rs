//! The backups of a Bitnami etcd cluster (CSM ≥ 1.5), where CSM keeps them:
//!
//! - the snapshotter PVC `bitnami-etcd-snapshotter` (`/snapshots/<statefulset>/db-YYYY-MM-DD_HH-MM`,
//!   written hourly by the cluster's snapshotter CronJob, Bitnami's `snapshot.sh`);
//! - the S3 bucket `etcd-backup` (`<service>/<name>`), where CSM's CronJob
//!   `etcd-backup-pvc-snapshots-to-s3` copies them (`sync-snapshots-to-s3.sh`) and its
//!   `create_backup` puts named ones; `list_backups`, `has_recent_backup` and
//!   `restore_from_backup` (cray-etcd-backup) read them there.
//!
//! Besides the `db-*` snapshots and this service's safety snapshots, S3 holds (CSM 1.7) the
//! snapshot cray-etcd-base's pre-upgrade Job takes before Helm upgrades a service
//! (`<service>_etcd_upgrade.snapshot-<helm revision>.db`, [`UpgradeSnapshot`]); it is listed,
//! fetched, checked and restored as any other.
//!
//! [`Backups::list`] merges both places by name, newest first; [`Backups::fetch`] makes sure a
//! backup is in the snapshotter directory, where a restoring pod reads it
//! (`ETCD_INIT_SNAPSHOTS_DIR=/snapshots/<sts>`), downloading it from S3 as `restore_from_backup`
//! does, and checks it ([`check_backup_file`](check::check_backup_file): the SHA-256 that etcd appends to every snapshot,
//! the database read whole, and a restore by etcd's own tool into a scratch directory);
//! [`Backups::check`] checks one where it is. With a store ([`Backups::recording`]), every
//! verdict is remembered by copy (`crate::store`'s `backup_checks`).
//! [`Backups::take_safety_snapshot`] saves what a cluster holds before it is restored or rebuilt,
//! in both places, under a name both CSM's tools and this one list as a backup of the service.
//!
//! The S3 client is `object_store` (SigV4 signing, retries); the keys never reach a log or an
//! error message.
//!
//! The parts: `error`, `names` (what a backup is, what its name says), `listing`, `s3` (the bucket),
//! `verify` (the SHA-256 trailer), `fetch` (into the snapshotter directory, and checks),
//! `safety` (the safety snapshots); this file has what they share.

pub mod check;
pub(crate) mod error;
mod fetch;
mod listing;
pub(crate) mod names;
mod s3;
mod safety;
pub(crate) mod verify;

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::recovery_config::RecoveryConfig;
use crate::store::Store;
use check::BackupCheck;

pub use error::BackupError;
pub(crate) use error::PARTIAL_DIR;
pub use names::{Backup, BackupCopy, SafetySnapshot, UpgradeSnapshot};
pub use verify::{VerifiedSnapshot, verify_snapshot};

/// The backups, as `[recovery]` says where they are.
#[derive(Clone)]
pub struct Backups {
    config: RecoveryConfig,
    /// Where checks are remembered, when set.
    store: Option<Store>,
}

/// A backup in the snapshotter directory, checked.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub check: BackupCheck,
}

impl Backups {
    pub fn new(config: &RecoveryConfig) -> Backups {
        Backups {
            config: config.clone(),
            store: None,
        }
    }

    /// These backups, remembering every check's verdict in `store`.
    pub fn recording(mut self, store: &Store) -> Backups {
        self.store = Some(store.clone());
        self
    }

    /// Remembers `outcome` as the verdict on `copy` of `name` (when recording).
    async fn remember(
        &self,
        name: &str,
        copy: &BackupCopy,
        outcome: Result<BackupCheck, BackupError>,
    ) -> Result<BackupCheck, BackupError> {
        if let Some(store) = &self.store {
            check::remember(store, name, copy, &outcome).await;
        }
        match &outcome {
            Ok(check) => {
                tracing::info!(backup = name, location = %copy.location, result = %check.summary(), "backup checked")
            }
            Err(BackupError::Corrupt { detail, .. }) => {
                tracing::warn!(backup = name, location = %copy.location, %detail, "backup refused by its check")
            }
            Err(_) => {}
        }
        outcome
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Whether S3 or the snapshotter directory is configured at all.
    pub fn configured(&self) -> bool {
        self.config.snapshots_dir().is_some() || self.config.s3_credentials_dir().is_some()
    }

    /// The bucket, when S3 is configured; the credentials are read at every call, so that a
    /// rotated Secret is used without a restart.
    /// The snapshotter directory of `sts`, when mounted; an error when it should be mounted and
    /// is not there.
    fn snapshots_dir(&self, sts: &str) -> Result<Option<PathBuf>, BackupError> {
        let Some(root) = self.config.snapshots_dir() else {
            return Ok(None);
        };
        if !root.is_dir() {
            return Err(BackupError::SnapshotsDirMissing(root.to_owned()));
        }
        Ok(Some(root.join(sts)))
    }

    async fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        work: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| BackupError::Timeout {
                what: what(),
                timeout,
            })?
    }

    /// A new partial file's path in the snapshotter directory (created with its directory).
    fn partial(&self, name: &str) -> Result<PathBuf, BackupError> {
        let root = self
            .config
            .snapshots_dir()
            .ok_or(BackupError::NoSnapshotsDir {
                what: "a partial file",
            })?;
        let dir = root.join(PARTIAL_DIR);
        std::fs::create_dir_all(&dir).map_err(BackupError::io("creating", &dir))?;
        Ok(dir.join(format!("{name}.{}.part", uuid::Uuid::now_v7().simple())))
    }
}

/// A partial file, removed when this is dropped (unless it was renamed into place before).
struct PartialFile(PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Small and local: a blocking call is fine here, and the only one that runs when the
        // future that owns this is dropped.
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "removing a partial snapshot file");
        }
    }
}

/// Moves the finished `partial` file to `target` (creating its directory): a rename, so that
/// `target` is either absent or complete.
async fn put_in_place(partial: &Path, target: &Path) -> Result<(), BackupError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(BackupError::io("creating", parent))?;
    }
    tokio::fs::rename(partial, target)
        .await
        .map_err(BackupError::io("moving a snapshot to", target))
}

async fn local_copy(path: &Path) -> Result<BackupCopy, BackupError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(BackupError::io("reading", path))?;
    Ok(BackupCopy {
        location: path.display().to_string(),
        size: meta.len(),
        last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).into(),
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A well-formed snapshot: `pages` of 512 bytes, then their SHA-256.
    pub(crate) fn snapshot_bytes(pages: usize, fill: u8) -> Vec<u8> {
        let mut data = vec![fill; pages * 512];
        let sha = Sha256::digest(&data);
        data.extend_from_slice(&sha);
        data
    }

    /// An S3 endpoint on loopback that answers every request with `respond` (and then keeps
    /// the connection open, unless the response closes it).
    pub(super) async fn fake_s3(respond: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = socket.write_all(respond).await;
                    // Held until the client goes away.
                    let _ = socket.read(&mut buffer).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// `[recovery]` with the snapshotter directory `root` and S3 at `endpoint` with these keys.
    pub(super) fn with_s3(
        root: &Path,
        creds: &Path,
        endpoint: &str,
        access: &str,
    ) -> RecoveryConfig {
        for (key, value) in [
            ("access_key", access),
            ("secret_key", "the-secret-key-0123456789"),
            ("http_s3_endpoint", endpoint),
        ] {
            std::fs::write(creds.join(key), value).unwrap();
        }
        RecoveryConfig {
            snapshots_dir: root.to_owned(),
            s3_credentials_dir: creds.to_owned(),
            ..RecoveryConfig::default()
        }
    }
}
