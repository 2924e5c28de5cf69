//! Restore drills (see `crate::drills`): a row when one starts, updated once when it ends; the
//! drills of a cluster, the newest verdict on a copy of a backup, and the newest of each
//! cluster for `/metrics` after a restart.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    backup_checks::CheckedCopy,
    error::{Result, StoreError},
    handle::Store,
};

/// Drills kept per cluster; older ones are pruned as new ones end.
const KEPT_PER_CLUSTER: i64 = 100;

/// Where a drill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillState {
    Running,
    /// The backup restored, a real etcd served it, and it holds what the service needs.
    Passed,
    /// The backup does not restore, or does not hold what the service needs: `detail` says
    /// what is wrong with it.
    Failed,
    /// The drill could not be carried out (no tool, no room, S3 unreachable, too slow): no
    /// verdict on the backup.
    Error,
    /// Stopped by the service's shutdown before it ended.
    Cancelled,
    /// Cut short by a crash of the service; found `running` at the next start.
    Interrupted,
}

impl DrillState {
    pub const ALL: [DrillState; 6] = [
        DrillState::Running,
        DrillState::Passed,
        DrillState::Failed,
        DrillState::Error,
        DrillState::Cancelled,
        DrillState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DrillState::Running => "running",
            DrillState::Passed => "passed",
            DrillState::Failed => "failed",
            DrillState::Error => "error",
            DrillState::Cancelled => "cancelled",
            DrillState::Interrupted => "interrupted",
        }
    }

    /// A verdict on the backup: it passed or it failed.
    pub fn is_verdict(self) -> bool {
        matches!(self, DrillState::Passed | DrillState::Failed)
    }

    /// What `/metrics` reports as the cluster's last drill: a verdict, or a drill that could
    /// not be carried out (which proves nothing either).
    pub fn is_reported(self) -> bool {
        self.is_verdict() || self == DrillState::Error
    }

    fn parse(text: &str) -> Result<DrillState> {
        DrillState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("drills.state: {text:?}")))
    }
}

impl fmt::Display for DrillState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backup a drill reads: its name and the copy read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrilledCopy {
    pub backup: String,
    pub copy: CheckedCopy,
}

/// A drill as it starts.
#[derive(Clone, Debug)]
pub struct NewDrill {
    pub id: Uuid,
    pub cluster: String,
    pub service: String,
    pub layout: String,
    /// `api` or `schedule`.
    pub trigger: String,
    pub requested_by: Option<String>,
    /// None: the cluster had no backup to drill.
    pub backup: Option<DrilledCopy>,
    pub started_at: DateTime<Utc>,
}

/// How a drill ended.
#[derive(Clone, Debug)]
pub struct DrillEnd {
    pub state: DrillState,
    pub finished_at: DateTime<Utc>,
    pub detail: String,
    pub backup_revision: Option<u64>,
    pub live_revision: Option<u64>,
    pub backup_age_seconds: Option<u64>,
    pub restore_seconds: Option<f64>,
    pub report: Option<Value>,
}

/// A drill as stored, and as `GET /etcd-clusters/{name}/drills` shows it (with its report
/// read, see `crate::drills::Drill`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DrillRecord {
    pub id: Uuid,
    pub cluster: String,
    /// The service (`bss`), or the CSM service of a cluster this tool does not repopulate.
    pub service: String,
    /// `bitnami` or `etcd-operator`.
    pub layout: String,
    /// `api` or `schedule`.
    pub trigger: String,
    pub requested_by: Option<String>,
    /// The backup drilled (absent: the cluster had none).
    pub backup: Option<String>,
    /// The copy read: its path in the snapshotter directory, or its S3 URL.
    pub location: Option<String>,
    pub state: DrillState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What it found, or what is wrong, in one line.
    pub detail: String,
    pub backup_revision: Option<u64>,
    pub live_revision: Option<u64>,
    /// The backup's age when drilled.
    pub backup_age_seconds: Option<u64>,
    /// How long the restore by the real tool took.
    pub restore_seconds: Option<f64>,
    /// The report as stored (JSON).
    #[serde(skip)]
    pub report: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct DrillRow {
    id: String,
    cluster: String,
    service: String,
    layout: String,
    trigger: String,
    requested_by: Option<String>,
    backup: Option<String>,
    location: Option<String>,
    state: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    detail: String,
    backup_revision: Option<i64>,
    live_revision: Option<i64>,
    backup_age_seconds: Option<i64>,
    restore_seconds: Option<f64>,
    report: Option<Json<Value>>,
}

/// `SELECT <every column> FROM drills <rest>`, as one static string.
macro_rules! select_drills {
    ($rest:literal) => {
        concat!(
            "SELECT id, cluster, service, layout, trigger, requested_by, backup, location, ",
            "state, started_at, finished_at, detail, backup_revision, live_revision, ",
            "backup_age_seconds, restore_seconds, report FROM drills ",
            $rest
        )
    };
}

fn stored(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn unsigned(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

impl TryFrom<DrillRow> for DrillRecord {
    type Error = StoreError;

    fn try_from(row: DrillRow) -> Result<DrillRecord> {
        Ok(DrillRecord {
            id: row
                .id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("drills.id {:?}: {e}", row.id)))?,
            cluster: row.cluster,
            service: row.service,
            layout: row.layout,
            trigger: row.trigger,
            requested_by: row.requested_by,
            backup: row.backup,
            location: row.location,
            state: DrillState::parse(&row.state)?,
            started_at: row.started_at,
            finished_at: row.finished_at,
            detail: row.detail,
            backup_revision: unsigned(row.backup_revision),
            live_revision: unsigned(row.live_revision),
            backup_age_seconds: unsigned(row.backup_age_seconds),
            restore_seconds: row.restore_seconds,
            report: row.report.map(|r| r.0),
        })
    }
}

fn records(rows: Vec<DrillRow>) -> Result<Vec<DrillRecord>> {
    rows.into_iter().map(DrillRecord::try_from).collect()
}

impl Store {
    /// Stores a drill as it starts (`running`).
    pub async fn insert_drill(&self, drill: &NewDrill) -> Result<()> {
        let copy = drill.backup.as_ref().map(|b| &b.copy);
        sqlx::query(
            "INSERT INTO drills (id, cluster, service, layout, trigger, requested_by, backup, \
             location, size, last_modified, state, started_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(drill.id.to_string())
        .bind(&drill.cluster)
        .bind(&drill.service)
        .bind(&drill.layout)
        .bind(&drill.trigger)
        .bind(&drill.requested_by)
        .bind(drill.backup.as_ref().map(|b| &b.backup))
        .bind(copy.map(|c| &c.location))
        .bind(stored(copy.map(|c| c.size)))
        .bind(copy.map(CheckedCopy::stored_time))
        .bind(DrillState::Running.as_str())
        .bind(drill.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores how the running drill `id` ended (a drill that is not running is left as it
    /// is), and forgets the oldest of its cluster's beyond the last [`KEPT_PER_CLUSTER`].
    pub async fn finish_drill(&self, id: Uuid, end: &DrillEnd) -> Result<()> {
        let mut tx = super::database::begin_write(&self.pool).await?;
        sqlx::query(
            "UPDATE drills SET state = ?, finished_at = ?, detail = ?, backup_revision = ?, \
             live_revision = ?, backup_age_seconds = ?, restore_seconds = ?, report = ? \
             WHERE id = ? AND state = ?",
        )
        .bind(end.state.as_str())
        .bind(end.finished_at)
        .bind(&end.detail)
        .bind(stored(end.backup_revision))
        .bind(stored(end.live_revision))
        .bind(stored(end.backup_age_seconds))
        .bind(end.restore_seconds)
        .bind(end.report.as_ref().map(Json))
        .bind(id.to_string())
        .bind(DrillState::Running.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM drills WHERE cluster = (SELECT cluster FROM drills WHERE id = ?) \
             AND state != ? AND id NOT IN (SELECT id FROM drills WHERE cluster = \
             (SELECT cluster FROM drills WHERE id = ?) ORDER BY id DESC LIMIT ?)",
        )
        .bind(id.to_string())
        .bind(DrillState::Running.as_str())
        .bind(id.to_string())
        .bind(KEPT_PER_CLUSTER)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_drill(&self, id: Uuid) -> Result<Option<DrillRecord>> {
        let row: Option<DrillRow> = sqlx::query_as(select_drills!("WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.map(DrillRecord::try_from).transpose()
    }

    /// The drills of `cluster`, newest first, at most `limit`.
    pub async fn list_drills(&self, cluster: &str, limit: u32) -> Result<Vec<DrillRecord>> {
        let rows: Vec<DrillRow> =
            sqlx::query_as(select_drills!("WHERE cluster = ? ORDER BY id DESC LIMIT ?"))
                .bind(cluster)
                .bind(limit)
                .fetch_all(&self.readers)
                .await?;
        records(rows)
    }

    /// The newest drill of `copy` (this location, size and modification time) that reached a
    /// verdict (passed or failed).
    pub async fn last_drill_verdict(&self, copy: &CheckedCopy) -> Result<Option<DrillRecord>> {
        let row: Option<DrillRow> = sqlx::query_as(select_drills!(
            "WHERE location = ? AND size = ? AND last_modified = ? AND state IN (?, ?) \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(&copy.location)
        .bind(stored(Some(copy.size)))
        .bind(copy.stored_time())
        .bind(DrillState::Passed.as_str())
        .bind(DrillState::Failed.as_str())
        .fetch_optional(&self.readers)
        .await?;
        row.map(DrillRecord::try_from).transpose()
    }

    /// For `/metrics` after a restart: each cluster's newest drill that `/metrics` reports
    /// ([`DrillState::is_reported`]: passed, failed or error), and each cluster's newest that
    /// passed.
    pub async fn newest_drills(&self) -> Result<(Vec<DrillRecord>, Vec<DrillRecord>)> {
        let reported: Vec<DrillRow> = sqlx::query_as(select_drills!(
            "WHERE id IN (SELECT MAX(id) FROM drills WHERE state IN (?, ?, ?) GROUP BY cluster) \
             ORDER BY cluster"
        ))
        .bind(DrillState::Passed.as_str())
        .bind(DrillState::Failed.as_str())
        .bind(DrillState::Error.as_str())
        .fetch_all(&self.readers)
        .await?;
        let passed: Vec<DrillRow> = sqlx::query_as(select_drills!(
            "WHERE id IN (SELECT MAX(id) FROM drills WHERE state = ? GROUP BY cluster) \
             ORDER BY cluster"
        ))
        .bind(DrillState::Passed.as_str())
        .fetch_all(&self.readers)
        .await?;
        Ok((records(reported)?, records(passed)?))
    }

    /// Marks every drill still `running` (a previous process ended during it) `interrupted`;
    /// returns their ids.
    pub async fn mark_drills_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "UPDATE drills SET state = ?, finished_at = ?, detail = ? WHERE state = ? RETURNING id",
        )
        .bind(DrillState::Interrupted.as_str())
        .bind(now)
        .bind("interrupted: the service stopped before this drill ended")
        .bind(DrillState::Running.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids
            .into_iter()
            .filter_map(|(id,)| id.parse().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy() -> CheckedCopy {
        CheckedCopy {
            location: "/snapshots/cray-bss-bitnami-etcd/db-1".to_owned(),
            size: 544,
            last_modified: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn drill(cluster: &str, backup: bool) -> NewDrill {
        NewDrill {
            id: Uuid::now_v7(),
            cluster: cluster.to_owned(),
            service: "bss".to_owned(),
            layout: "bitnami".to_owned(),
            trigger: "api".to_owned(),
            requested_by: Some("admin".to_owned()),
            backup: backup.then(|| DrilledCopy {
                backup: "db-1".to_owned(),
                copy: copy(),
            }),
            started_at: Utc::now(),
        }
    }

    fn end(state: DrillState) -> DrillEnd {
        DrillEnd {
            state,
            finished_at: Utc::now(),
            detail: state.to_string(),
            backup_revision: Some(7),
            live_revision: Some(9),
            backup_age_seconds: Some(60),
            restore_seconds: Some(0.5),
            report: Some(serde_json::json!({ "problems": [] })),
        }
    }

    #[tokio::test]
    async fn a_drill_is_stored_ended_once_listed_and_its_verdict_found_by_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite").to_str().unwrap())
            .await
            .unwrap();
        let first = drill("cray-bss-bitnami-etcd", true);
        store.insert_drill(&first).await.unwrap();
        assert_eq!(
            store
                .last_drill_verdict(&copy())
                .await
                .unwrap()
                .map(|d| d.id),
            None
        );
        store
            .finish_drill(first.id, &end(DrillState::Passed))
            .await
            .unwrap();
        // Ended once: a later end does not change it.
        store
            .finish_drill(first.id, &end(DrillState::Cancelled))
            .await
            .unwrap();
        let stored = store.get_drill(first.id).await.unwrap().unwrap();
        assert_eq!(stored.state, DrillState::Passed);
        assert_eq!(stored.backup.as_deref(), Some("db-1"));
        assert_eq!(stored.live_revision, Some(9));
        assert_eq!(stored.requested_by.as_deref(), Some("admin"));
        let verdict = store.last_drill_verdict(&copy()).await.unwrap().unwrap();
        assert_eq!(verdict.id, first.id);

        // An error is no verdict; the newest verdict stays the pass.
        let second = drill("cray-bss-bitnami-etcd", true);
        store.insert_drill(&second).await.unwrap();
        store
            .finish_drill(second.id, &end(DrillState::Error))
            .await
            .unwrap();
        let verdict = store.last_drill_verdict(&copy()).await.unwrap().unwrap();
        assert_eq!(verdict.id, first.id);
        let mut other = copy();
        other.size += 1;
        assert!(store.last_drill_verdict(&other).await.unwrap().is_none());

        // Another cluster's, without a backup, still running at a crash.
        let third = drill("cray-fas-bitnami-etcd", false);
        store.insert_drill(&third).await.unwrap();
        let listed = store
            .list_drills("cray-bss-bitnami-etcd", 10)
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id).collect::<Vec<_>>(),
            [second.id, first.id]
        );
        assert_eq!(
            store.mark_drills_interrupted(Utc::now()).await.unwrap(),
            [third.id]
        );
        let (newest, passed) = store.newest_drills().await.unwrap();
        assert_eq!(newest.iter().map(|d| d.id).collect::<Vec<_>>(), [second.id]);
        assert_eq!(passed.iter().map(|d| d.id).collect::<Vec<_>>(), [first.id]);
    }

    #[tokio::test]
    async fn old_drills_of_a_cluster_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db.sqlite").to_str().unwrap())
            .await
            .unwrap();
        let mut last = None;
        for _ in 0..(KEPT_PER_CLUSTER + 5) {
            let d = drill("cray-bss-bitnami-etcd", false);
            store.insert_drill(&d).await.unwrap();
            store
                .finish_drill(d.id, &end(DrillState::Failed))
                .await
                .unwrap();
            last = Some(d.id);
        }
        let listed = store
            .list_drills("cray-bss-bitnami-etcd", 1000)
            .await
            .unwrap();
        assert_eq!(listed.len() as i64, KEPT_PER_CLUSTER);
        assert_eq!(listed[0].id, last.unwrap());
    }
}
