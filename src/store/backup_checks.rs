//! Checks of the etcd clusters' backups (see `crate::etcd::backups::check`), by copy: record one,
//! and read the newest of a copy.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{error::Result, handle::Store};

/// Checks kept per copy and kind; older ones are pruned as new ones come.
const KEPT_PER_COPY: i64 = 10;
/// The kind of the checks before a restore and on demand (restore drills will add theirs).
const KIND_CHECK: &str = "check";

/// One copy of a backup as it was when checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCopy {
    /// Its path, or its S3 URL.
    pub location: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

impl CheckedCopy {
    /// The time as stored: text that compares equal for equal times.
    pub(super) fn stored_time(&self) -> String {
        self.last_modified
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

/// A check of a backup's copy, to remember or as remembered.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupCheckRecord {
    pub copy: CheckedCopy,
    /// The backup's name (`db-2025-01-01_00-00`).
    pub backup: String,
    pub checked_at: DateTime<Utc>,
    pub ok: bool,
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    pub detail: String,
    pub how: String,
    pub facts: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct CheckRow {
    backup: String,
    checked_at: DateTime<Utc>,
    ok: bool,
    revision: Option<i64>,
    keys: Option<i64>,
    detail: String,
    how: String,
    facts: Option<Json<Value>>,
}

fn stored_count(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl Store {
    /// Remembers a check of a backup's copy (and forgets the oldest of that copy's beyond the
    /// last [`KEPT_PER_COPY`]).
    pub async fn record_backup_check(&self, check: &BackupCheckRecord) -> Result<()> {
        let copy = &check.copy;
        let mut tx = super::database::begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO backup_checks (location, backup, size, last_modified, kind, checked_at, \
             ok, revision, keys, detail, how, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&copy.location)
        .bind(&check.backup)
        .bind(i64::try_from(copy.size).unwrap_or(i64::MAX))
        .bind(copy.stored_time())
        .bind(KIND_CHECK)
        .bind(check.checked_at)
        .bind(check.ok)
        .bind(stored_count(check.revision))
        .bind(stored_count(check.keys))
        .bind(&check.detail)
        .bind(&check.how)
        .bind(check.facts.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM backup_checks WHERE location = ? AND kind = ? AND id NOT IN \
             (SELECT id FROM backup_checks WHERE location = ? AND kind = ? ORDER BY id DESC LIMIT ?)",
        )
        .bind(&copy.location)
        .bind(KIND_CHECK)
        .bind(&copy.location)
        .bind(KIND_CHECK)
        .bind(KEPT_PER_COPY)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest check of `copy` (this location, size and modification time).
    pub async fn last_backup_check(&self, copy: &CheckedCopy) -> Result<Option<BackupCheckRecord>> {
        let row: Option<CheckRow> = sqlx::query_as(
            "SELECT backup, checked_at, ok, revision, keys, detail, how, facts FROM backup_checks \
             WHERE location = ? AND size = ? AND last_modified = ? AND kind = ? \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&copy.location)
        .bind(i64::try_from(copy.size).unwrap_or(i64::MAX))
        .bind(copy.stored_time())
        .bind(KIND_CHECK)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(|row| BackupCheckRecord {
            copy: copy.clone(),
            backup: row.backup,
            checked_at: row.checked_at,
            ok: row.ok,
            revision: row.revision.and_then(|r| u64::try_from(r).ok()),
            keys: row.keys.and_then(|k| u64::try_from(k).ok()),
            detail: row.detail,
            how: row.how,
            facts: row.facts.map(|f| f.0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(size: u64) -> CheckedCopy {
        CheckedCopy {
            location: "/snapshots/cray-bss-bitnami-etcd/db-1".to_owned(),
            size,
            last_modified: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn check(copy: CheckedCopy, ok: bool, detail: &str) -> BackupCheckRecord {
        BackupCheckRecord {
            copy,
            backup: "db-1".to_owned(),
            checked_at: Utc::now(),
            ok,
            revision: ok.then_some(42),
            keys: ok.then_some(9),
            detail: detail.to_owned(),
            how: "read".to_owned(),
            facts: None,
        }
    }

    #[tokio::test]
    async fn the_newest_check_of_the_same_copy_counts_and_a_replaced_copy_is_unchecked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite").to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(store.last_backup_check(&copy(100)).await.unwrap(), None);
        store
            .record_backup_check(&check(copy(100), true, "fine"))
            .await
            .unwrap();
        store
            .record_backup_check(&check(copy(100), false, "bad magic"))
            .await
            .unwrap();
        let last = store.last_backup_check(&copy(100)).await.unwrap().unwrap();
        assert!(!last.ok);
        assert_eq!(last.detail, "bad magic");
        assert_eq!(last.revision, None);
        // Same name, another size (or time): another copy.
        assert_eq!(store.last_backup_check(&copy(200)).await.unwrap(), None);
        let mut later = copy(100);
        later.last_modified += chrono::Duration::nanoseconds(1);
        assert_eq!(store.last_backup_check(&later).await.unwrap(), None);
        // Pruned to the last few.
        for i in 0..15 {
            store
                .record_backup_check(&check(copy(100), true, &format!("check {i}")))
                .await
                .unwrap();
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backup_checks")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, KEPT_PER_COPY);
        let last = store.last_backup_check(&copy(100)).await.unwrap().unwrap();
        assert_eq!(last.detail, "check 14");
        assert_eq!(last.keys, Some(9));
    }
}
