//! Snapshots of CSM data (`crate::snapshots` takes them): what one holds, and insert, list
//! newest first, newest per source, and pruning of old ones.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    error::{Result, StoreError},
    handle::Store,
};

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotSource {
    /// BOS `GET /v2/sessiontemplates`: an array of templates.
    BosSessionTemplates,
    /// HMNFD `GET /subscriptions`: an array of subscriptions.
    HmnfdSubscriptions,
}

impl SnapshotSource {
    pub const ALL: [SnapshotSource; 2] = [
        SnapshotSource::BosSessionTemplates,
        SnapshotSource::HmnfdSubscriptions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotSource::BosSessionTemplates => "bos-session-templates",
            SnapshotSource::HmnfdSubscriptions => "hmnfd-subscriptions",
        }
    }
}

impl fmt::Display for SnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SnapshotSource::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown snapshot source {s:?} (known: {})",
                    SnapshotSource::ALL.map(SnapshotSource::as_str).join(", ")
                )
            })
    }
}

/// A stored snapshot, as `GET /snapshots` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Snapshot {
    pub id: Uuid,
    pub taken_at: DateTime<Utc>,
    pub source: SnapshotSource,
    /// Number of templates or subscriptions in `content`.
    pub items: u64,
    /// JSON paths of keys removed because they looked like secrets (the values are not kept).
    pub redacted: Vec<String>,
    /// The data as read from the service, minus `redacted`; left out of lists unless
    /// `?content=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Any JSON: BOS templates are a list, as HMNFD subscriptions are.
    pub content: Option<Value>,
}

/// A snapshot about to be stored.
#[derive(Clone, Debug)]
pub struct NewSnapshot {
    pub id: Uuid,
    pub taken_at: DateTime<Utc>,
    pub source: SnapshotSource,
    pub items: u64,
    pub redacted: Vec<String>,
    pub content: Value,
}

impl NewSnapshot {
    /// The snapshot as stored (and as `GET /snapshots` shows it).
    pub fn stored(self) -> Snapshot {
        Snapshot {
            id: self.id,
            taken_at: self.taken_at,
            source: self.source,
            items: self.items,
            redacted: self.redacted,
            content: Some(self.content),
        }
    }
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    id: String,
    taken_at: DateTime<Utc>,
    source: String,
    items: i64,
    redacted: Json<Vec<String>>,
    content: Option<Json<Value>>,
}

impl SnapshotRow {
    fn into_snapshot(self) -> Result<Snapshot> {
        let id = Uuid::parse_str(&self.id)
            .map_err(|e| StoreError::Corrupt(format!("snapshot id {:?}: {e}", self.id)))?;
        let source = self
            .source
            .parse::<SnapshotSource>()
            .map_err(|e| StoreError::Corrupt(format!("snapshot {id}: {e}")))?;
        Ok(Snapshot {
            id,
            taken_at: self.taken_at,
            source,
            items: u64::try_from(self.items).unwrap_or_default(),
            redacted: self.redacted.0,
            content: self.content.map(|c| c.0),
        })
    }
}

impl Store {
    pub async fn insert_snapshot(&self, new: &NewSnapshot) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (id, taken_at, source, items, redacted, content) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id.to_string())
        .bind(new.taken_at)
        .bind(new.source.as_str())
        .bind(i64::try_from(new.items).unwrap_or(i64::MAX))
        .bind(Json(&new.redacted))
        .bind(Json(&new.content))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Snapshots newest first, optionally of one source; `content` only when asked for.
    pub async fn list_snapshots(
        &self,
        source: Option<SnapshotSource>,
        with_content: bool,
        limit: u32,
    ) -> Result<Vec<Snapshot>> {
        let rows: Vec<SnapshotRow> = sqlx::query_as(
            "SELECT id, taken_at, source, items, redacted, \
                    CASE WHEN ?1 THEN content END AS content \
             FROM snapshots WHERE (?2 IS NULL OR source = ?2) ORDER BY id DESC LIMIT ?3",
        )
        .bind(with_content)
        .bind(source.map(SnapshotSource::as_str))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SnapshotRow::into_snapshot).collect()
    }

    /// Up to `limit` snapshots of `source` that hold at least one item, with their content,
    /// newest first, older than `before` when given (keyset pagination). Empty ones are
    /// skipped: a capture that ran after the etcd cluster was rebuilt (and before it was
    /// repopulated) recorded the loss, not the data.
    pub async fn nonempty_snapshots(
        &self,
        source: SnapshotSource,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Snapshot>> {
        let rows: Vec<SnapshotRow> = sqlx::query_as(
            "SELECT id, taken_at, source, items, redacted, content FROM snapshots \
             WHERE source = ? AND items > 0 AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(source.as_str())
        // UUIDs sort below "~", so without a cursor every snapshot qualifies.
        .bind(before.map_or_else(|| "~".to_owned(), |id| id.to_string()))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SnapshotRow::into_snapshot).collect()
    }

    /// Keeps the newest `keep` snapshots of `source` and deletes the rest; returns how many were
    /// deleted. The newest non-empty one is always kept, however old.
    pub async fn prune_snapshots(&self, source: SnapshotSource, keep: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM snapshots WHERE source = ?1 \
               AND id NOT IN (SELECT id FROM snapshots WHERE source = ?1 ORDER BY id DESC LIMIT ?2) \
               AND id NOT IN (SELECT id FROM snapshots WHERE source = ?1 AND items > 0 \
                              ORDER BY id DESC LIMIT 1)",
        )
        .bind(source.as_str())
        .bind(i64::from(keep.max(1)))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
