//! What the restore drills (`crate::drills`) proved of a backup, as the backups' listing and
//! `auto`'s choice of a backup read it: the newest drill of its copies that reached a verdict.
//! Here, beside the backup check, so that recovery reads it without depending on the drills.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::etcd::backups::Backup;
use crate::store::{CheckedCopy, DrillRecord, DrillState, Store, StoreError};

/// The newest drill of a backup that reached a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct DrillOutcome {
    /// The drill (`GET /etcd-clusters/{name}/drills/{id}`).
    pub id: Uuid,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// It restored, a real etcd served it, and it holds what the live cluster's service keeps.
    pub passed: bool,
    /// What it found, or what is wrong with the backup.
    pub detail: String,
}

/// The newest drill of `backup`'s copies as they are now (a copy replaced under the same name
/// is undrilled) that passed or failed: for `auto` to prefer a backup whose drill passed, and
/// for the listing of backups. `None`: never drilled to a verdict.
pub async fn last_drill(
    store: &Store,
    backup: &Backup,
) -> Result<Option<DrillOutcome>, StoreError> {
    let mut newest: Option<DrillRecord> = None;
    for copy in [&backup.snapshotter, &backup.s3].into_iter().flatten() {
        let copy = CheckedCopy {
            location: copy.location.clone(),
            size: copy.size,
            last_modified: copy.last_modified,
        };
        if let Some(drill) = store.last_drill_verdict(&copy).await?
            && newest.as_ref().is_none_or(|n| drill.id > n.id)
        {
            newest = Some(drill);
        }
    }
    Ok(newest.map(|drill| DrillOutcome {
        id: drill.id,
        at: drill.finished_at.unwrap_or(drill.started_at),
        passed: drill.state == DrillState::Passed,
        detail: drill.detail,
    }))
}
