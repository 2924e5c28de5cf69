//! Whether a backup restores, proven before a restore deletes anything: its SHA-256 trailer
//! ([`verify_snapshot`]), its database read whole ([`crate::etcd::snapshot_db`]:
//! an etcd database, its revision and keys), and, when the tool is there, etcd's own restore
//! into a scratch directory ([`crate::etcd::restore_tool`]). [`check_backup_file`] is the one entry
//! point; what it finds is remembered in the store (`backup_checks`) by copy, so that the
//! listing flags a backup known to be unusable and a recovery skips it.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    error::{BackupError, PARTIAL_DIR},
    names::{Backup, BackupCopy},
    verify::{VerifiedSnapshot, verify_snapshot},
};
use crate::etcd::{
    recovery_config::RecoveryConfig,
    restore_tool::{Proof, RestoreTool},
    snapshot_db::{self, DbError, FileRegion, SnapshotFacts},
};
use crate::store::{BackupCheckRecord, CheckedCopy, Store, StoreError};

/// A backup that restores: what proved it, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupCheck {
    /// The file checked.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Bytes, with the SHA-256 trailer.
    pub size: u64,
    /// The SHA-256 of the database (the trailer), hex.
    pub sha256: String,
    /// What its database holds (`etcdutl snapshot status`, and more).
    pub snapshot: SnapshotFacts,
    /// How it was proven to restore.
    pub proof: Proof,
}

impl BackupCheck {
    /// One line for logs and the listing.
    pub fn summary(&self) -> String {
        format!(
            "an etcd snapshot at revision {} with {} live key(s) ({} entries, {} bytes); {}",
            self.snapshot.revision,
            self.snapshot.live_keys,
            self.snapshot.total_key,
            self.snapshot.total_size,
            self.proof.describe()
        )
    }
}

/// Checks the snapshot at `path`: its SHA-256 trailer, its database (an etcd database, whole),
/// and a restore by the real tool into a scratch directory when `[recovery] etcdutl` finds
/// one. A snapshot that fails is [`BackupError::Corrupt`], naming what is wrong; the check as a
/// whole is bounded by `[recovery] timeout`, and leaves nothing behind however it ends.
pub async fn check_backup_file(
    path: &Path,
    config: &RecoveryConfig,
) -> Result<BackupCheck, BackupError> {
    let timeout = config.timeout;
    tokio::time::timeout(timeout, check_inner(path, config))
        .await
        .map_err(|_| BackupError::Timeout {
            what: format!("checking the backup {}", path.display()),
            timeout,
        })?
}

async fn check_inner(path: &Path, config: &RecoveryConfig) -> Result<BackupCheck, BackupError> {
    let (verified, snapshot) = read_backup_file(path).await?;
    let corrupt = |detail: String| BackupError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let proof = match RestoreTool::find(config) {
        Err(why) => Proof::Structure {
            restore_not_tried: why,
        },
        Ok(tool) => {
            let parent = scratch_parent(config);
            match tool.restore(path, snapshot.total_size, &parent).await {
                Ok(Ok(())) => Proof::Restore {
                    tool: tool.name().to_owned(),
                    version: tool.version().await,
                },
                Ok(Err(why)) => Proof::Structure {
                    restore_not_tried: why,
                },
                Err(refused) => return Err(corrupt(refused.0)),
            }
        }
    };
    Ok(BackupCheck {
        path: path.to_owned(),
        size: verified.size,
        sha256: verified.sha256,
        snapshot,
        proof,
    })
}

/// Where the restore's scratch directory goes: the snapshotter directory's hidden directory
/// (room for snapshots, and never seen by CSM's tools), else the system's temporary directory.
fn scratch_parent(config: &RecoveryConfig) -> PathBuf {
    config
        .snapshots_dir()
        .map(|dir| dir.join(PARTIAL_DIR))
        .filter(|dir| std::fs::create_dir_all(dir).is_ok())
        .unwrap_or_else(std::env::temp_dir)
}

/// Sets its flag when dropped: the blocking read stops at its next page when the check is
/// abandoned.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The first two proofs of [`check_backup_file`], without the restore: the trailer, then the
/// database, read on a blocking thread (stopped if the future is dropped). A snapshot that
/// fails is [`BackupError::Corrupt`], naming what is wrong.
pub async fn read_backup_file(
    path: &Path,
) -> Result<(VerifiedSnapshot, SnapshotFacts), BackupError> {
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let verified = verify_snapshot(&owned).map_err(|err| explain_bad_trailer(err, &owned))?;
        let facts = snapshot_db::read_snapshot_file(&owned, &flag).map_err(|err| match err {
            DbError::Io(source) => BackupError::Io {
                what: "reading",
                path: owned.clone(),
                source,
            },
            other => BackupError::Corrupt {
                path: owned.clone(),
                detail: other.to_string(),
            },
        })?;
        Ok((verified, facts))
    });
    let result = read.await.map_err(|e| BackupError::Io {
        what: "checking",
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    drop(cancel);
    result
}

/// A snapshot whose trailer does not match may be a truncated one: its meta page says how
/// large it was.
fn explain_bad_trailer(err: BackupError, path: &Path) -> BackupError {
    let BackupError::Corrupt { detail, .. } = &err else {
        return err;
    };
    let Ok(file) = std::fs::File::open(path) else {
        return err;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return err;
    };
    let region = FileRegion { file: &file, len };
    match snapshot_db::check_meta(&region) {
        Err(truncated @ DbError::Truncated { .. }) => BackupError::Corrupt {
            path: path.to_owned(),
            detail: format!("{truncated} ({detail})"),
        },
        _ => err,
    }
}

/// The last check of a backup, as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LastCheck {
    /// When it was checked.
    pub at: DateTime<Utc>,
    /// It is an etcd snapshot that restores.
    pub ok: bool,
    pub revision: Option<u64>,
    /// Live keys.
    pub keys: Option<u64>,
    /// What it holds, or what is wrong with it.
    pub detail: String,
    /// How it was checked (read; restored by which tool).
    pub how: String,
    /// The copy checked (its path, or its S3 URL).
    pub location: String,
}

impl From<BackupCheckRecord> for LastCheck {
    fn from(stored: BackupCheckRecord) -> Self {
        LastCheck {
            at: stored.checked_at,
            ok: stored.ok,
            revision: stored.revision,
            keys: stored.keys,
            detail: stored.detail,
            how: stored.how,
            location: stored.copy.location,
        }
    }
}

fn copy_key(copy: &BackupCopy) -> CheckedCopy {
    CheckedCopy {
        location: copy.location.clone(),
        size: copy.size,
        last_modified: copy.last_modified,
    }
}

/// The last check of each backup: the newest of the checks of its copies as they are now (a
/// copy replaced under the same name is a new copy, unchecked).
pub async fn last_checks(
    store: &Store,
    backups: &[Backup],
) -> Result<Vec<Option<LastCheck>>, StoreError> {
    let mut found = Vec::with_capacity(backups.len());
    for backup in backups {
        let mut newest: Option<BackupCheckRecord> = None;
        for copy in [&backup.snapshotter, &backup.s3].into_iter().flatten() {
            if let Some(check) = store.last_backup_check(&copy_key(copy)).await?
                && newest
                    .as_ref()
                    .is_none_or(|n| check.checked_at > n.checked_at)
            {
                newest = Some(check);
            }
        }
        found.push(newest.map(LastCheck::from));
    }
    Ok(found)
}

/// Remembers the verdict on `copy` of the backup `name`: a check that passed or found it
/// corrupt. Anything else (S3 down, a timeout) is no verdict on the backup and is not
/// remembered. A store that fails is logged: the check's result stands.
pub async fn remember(
    store: &Store,
    name: &str,
    copy: &BackupCopy,
    outcome: &Result<BackupCheck, BackupError>,
) {
    let (ok, detail, how, facts) = match outcome {
        Ok(check) => (
            true,
            check.summary(),
            check.proof.describe(),
            serde_json::to_value(&check.snapshot).ok(),
        ),
        Err(BackupError::Corrupt { detail, .. }) => (
            false,
            detail.clone(),
            "refused by the check".to_owned(),
            None,
        ),
        Err(_) => return,
    };
    let check = BackupCheckRecord {
        copy: copy_key(copy),
        backup: name.to_owned(),
        checked_at: Utc::now(),
        ok,
        revision: outcome.as_ref().ok().map(|c| c.snapshot.revision),
        keys: outcome.as_ref().ok().map(|c| c.snapshot.live_keys),
        detail,
        how,
        facts,
    };
    if let Err(e) = store.record_backup_check(&check).await {
        tracing::warn!(backup = name, location = %copy.location, error = %e, "could not remember a backup's check");
    }
}
