//! The run store: SQLite through sqlx. Every state change of a run is written here before (or
//! as) it happens in the cluster, so a crash never loses what was done or what was saved.
//!
//! `handle` opens the database and holds the [`Store`]; what the store does is in the files
//! beside it, one concern each: `runs` (a run's life), `history` (its read side, `cache` in
//! front of it), `events` (a run's log), `drills`, `snapshots`, `backup_checks`, `manifests`
//! and `run_metrics`; `lock` keeps a database to one service.

mod backup_checks;
mod cache;
mod database;
mod drills;
mod error;
mod events;
mod handle;
mod history;
mod lock;
mod manifests;
mod records;
mod rows;
mod run_metrics;
mod runs;
mod snapshots;

pub use backup_checks::{BackupCheckRecord, CheckedCopy};
pub use drills::{DrillEnd, DrillRecord, DrillState, DrilledCopy, NewDrill};
pub use error::{Result, StoreError};
pub use handle::Store;
pub use lock::{DatabaseLock, LockError};
pub use manifests::StoredManifest;
pub use records::{
    AppendedEvent, Interrupted, NewRun, NewStep, NewTask, RunFilter, StepKey, StepRecord,
};
pub use run_metrics::LastRecovery;
pub use snapshots::{NewSnapshot, Snapshot, SnapshotSource};

#[cfg(test)]
mod tests;
