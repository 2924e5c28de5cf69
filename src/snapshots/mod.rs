//! Snapshots of CSM data that lives only in an etcd cluster: BOS session templates (restored by
//! the BOS handler after a rebuild) and HMNFD subscriptions (a record of who was subscribed).
//!
//! They are taken when the service starts and periodically while it runs
//! ([`Snapshotter::spawn_periodic`]), and on demand (`POST /snapshots`), through the same CSM
//! clients the handlers use. Before anything is stored, keys that look like secrets are removed
//! ([`redact`]): the database is not a secret store, and its content is shown by
//! `GET /snapshots`.

pub mod bos_export;
mod redact;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

pub use redact::{is_secret_key, redact};

pub use crate::store::{NewSnapshot, Snapshot, SnapshotSource};
use crate::{
    csm::{CsmClients, CsmError},
    store::{Store, StoreError},
};

/// `content` of `source`, taken at `taken_at`, as it will be stored: redacted, its items
/// counted.
fn redacted_snapshot(
    source: SnapshotSource,
    taken_at: DateTime<Utc>,
    content: Value,
) -> NewSnapshot {
    let (content, redacted) = redact(content);
    let items = content.as_array().map_or(0, |a| a.len() as u64);
    NewSnapshot {
        // UUIDv7, like run ids: sortable by capture time.
        id: Uuid::now_v7(),
        taken_at,
        source,
        items,
        redacted,
        content,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {source_name}: {error}")]
    Read {
        source_name: SnapshotSource,
        error: CsmError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{source_name} could not be encoded: {reason}")]
    Encode {
        source_name: SnapshotSource,
        reason: String,
    },
}

/// A source that could not be captured, and why.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CaptureFailure {
    pub source: SnapshotSource,
    pub error: String,
}

/// What one capture stored, and which sources failed (each source is captured on its own, so
/// BOS being down does not prevent the HMNFD snapshot).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CaptureReport {
    pub stored: Vec<Snapshot>,
    pub failed: Vec<CaptureFailure>,
}

/// Reads the CSM services and stores snapshots; cheap to clone.
#[derive(Clone)]
pub struct Snapshotter {
    csm: CsmClients,
    store: Store,
    /// Snapshots kept per source (older ones are pruned after each capture).
    retain: u32,
}

impl Snapshotter {
    pub fn new(csm: CsmClients, store: Store, retain: u32) -> Self {
        Snapshotter { csm, store, retain }
    }

    /// Captures every source now. A read failure is reported per source; a store failure
    /// fails the call (nothing else can be stored either).
    pub async fn capture(&self, now: DateTime<Utc>) -> Result<CaptureReport, StoreError> {
        self.capture_sources(&SnapshotSource::ALL, now).await
    }

    /// Captures `sources` now, as [`Snapshotter::capture`] does.
    pub async fn capture_sources(
        &self,
        sources: &[SnapshotSource],
        now: DateTime<Utc>,
    ) -> Result<CaptureReport, StoreError> {
        let mut report = CaptureReport {
            stored: Vec::new(),
            failed: Vec::new(),
        };
        for &source in sources {
            match self.read(source).await {
                Ok(content) => {
                    let new = redacted_snapshot(source, now, content);
                    self.store.insert_snapshot(&new).await?;
                    self.store.prune_snapshots(source, self.retain).await?;
                    report.stored.push(new.stored());
                }
                Err(err) => report.failed.push(CaptureFailure {
                    source,
                    error: err.to_string(),
                }),
            }
        }
        Ok(report)
    }

    /// Stores the session templates of a BOS export as a snapshot taken when it was exported
    /// (else `now`), redacted like a capture: the BOS step restores templates BOS lacks from
    /// it as from any snapshot, newest first.
    pub async fn import_bos_export(
        &self,
        export: bos_export::BosExport,
        now: DateTime<Utc>,
    ) -> Result<Snapshot, StoreError> {
        let source = SnapshotSource::BosSessionTemplates;
        let taken_at = export.exported_at.unwrap_or(now);
        let new = redacted_snapshot(source, taken_at, Value::Array(export.templates));
        self.store.insert_snapshot(&new).await?;
        self.store.prune_snapshots(source, self.retain).await?;
        tracing::info!(
            snapshot = %new.id,
            templates = new.items,
            %taken_at,
            found_in = export.found_in,
            "BOS export imported as a snapshot of session templates"
        );
        Ok(new.stored())
    }

    async fn read(&self, source: SnapshotSource) -> Result<Value, SnapshotError> {
        let read = |error| SnapshotError::Read {
            source_name: source,
            error,
        };
        let encode = |e: serde_json::Error| SnapshotError::Encode {
            source_name: source,
            reason: e.to_string(),
        };
        match source {
            SnapshotSource::BosSessionTemplates => {
                let templates = self.csm.bos.list_session_templates().await.map_err(read)?;
                Ok(Value::Array(templates))
            }
            SnapshotSource::HmnfdSubscriptions => {
                let subscriptions = self.csm.hmnfd.list_subscriptions().await.map_err(read)?;
                serde_json::to_value(subscriptions).map_err(encode)
            }
        }
    }

    /// Captures every source at once, then every `interval`, until `cancel` fires. A source
    /// that cannot be read (the CSM APIs may not answer yet when the service starts) is tried
    /// again sooner, after 1 s, 2 s, 4 s, ... (at most a minute, and never later than the next
    /// regular capture), until it answers.
    pub fn spawn_periodic(
        self,
        interval: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut next_all = tokio::time::Instant::now();
            let mut retry = FIRST_RETRY;
            let mut failed: Vec<SnapshotSource> = Vec::new();
            loop {
                let now = tokio::time::Instant::now();
                let sources = if now >= next_all {
                    // After a long pause (suspended laptop, stalled node) one capture, not a burst.
                    next_all = now + interval;
                    SnapshotSource::ALL.to_vec()
                } else {
                    failed.clone()
                };
                failed = match self.capture_sources(&sources, Utc::now()).await {
                    Ok(report) => {
                        for snapshot in &report.stored {
                            tracing::info!(source = %snapshot.source, items = snapshot.items, id = %snapshot.id, "snapshot stored");
                        }
                        for failure in &report.failed {
                            tracing::warn!(source = %failure.source, error = %failure.error, retry_in = ?retry, "snapshot not taken; trying again");
                        }
                        report.failed.iter().map(|f| f.source).collect()
                    }
                    Err(err) => {
                        tracing::error!(error = %err, retry_in = ?retry, "storing snapshots failed; trying again");
                        sources
                    }
                };
                let wake = if failed.is_empty() {
                    retry = FIRST_RETRY;
                    next_all
                } else {
                    let wake = (now + retry).min(next_all);
                    retry = (retry * 2).min(LAST_RETRY);
                    wake
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
        })
    }
}

/// How soon a source that could not be read is tried again, first and at most.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
