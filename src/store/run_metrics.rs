//! What `/metrics` says of the stored runs: the runs waiting for a person, when the newest run
//! ended in each state, and when each etcd cluster was last recovered. Read from the store (not
//! counted as runs happen), so that a restarted service says the same: interrupted runs, which
//! the restart itself made, are among them. Real runs only: a dry run changes nothing.

use chrono::{DateTime, Utc};

use super::{
    error::{Result, StoreError},
    handle::Store,
    rows,
};
use crate::model::{EtcdMode, Service, State};

/// The states in which a run waits for a person: `interrupted` (resume it) and
/// `action_required` (its messages say what to do).
pub const WAITING: [State; 2] = [State::Interrupted, State::ActionRequired];

/// The newest successful recovery of one etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRecovery {
    /// The cluster the recovery step named (`cray-bss-bitnami-etcd`).
    pub cluster: String,
    pub service: Service,
    pub finished_at: DateTime<Utc>,
}

fn parse_mode(text: &str) -> Result<EtcdMode> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("runs.etcd_mode: {e}")))
}

impl Store {
    /// Real runs waiting for a person, by state and etcd mode (only the pairs that have any).
    pub async fn waiting_runs(&self) -> Result<Vec<(State, EtcdMode, i64)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT state, etcd_mode, COUNT(*) FROM runs \
             WHERE dry_run = 0 AND state IN (?, ?) GROUP BY state, etcd_mode",
        )
        .bind(WAITING[0].as_str())
        .bind(WAITING[1].as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|(state, mode, count)| Ok((rows::parse_state(&state)?, parse_mode(&mode)?, count)))
            .collect()
    }

    /// When the newest real run that ended in each state ended, by state and etcd mode.
    pub async fn last_finished_runs(&self) -> Result<Vec<(State, EtcdMode, DateTime<Utc>)>> {
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT state, etcd_mode, MAX(finished_at) FROM runs \
             WHERE dry_run = 0 AND finished_at IS NOT NULL GROUP BY state, etcd_mode",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|(state, mode, at)| Ok((rows::parse_state(&state)?, parse_mode(&mode)?, at)))
            .collect()
    }

    /// For each etcd cluster a real run recovered: when the newest step `step` (the recovery
    /// step's name) that succeeded on it ended. A recovery that decided to leave a healthy
    /// cluster alone is skipped, not succeeded, so it is not one.
    pub async fn last_recoveries(&self, step: &str) -> Result<Vec<LastRecovery>> {
        let rows: Vec<(String, Option<String>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT s.service, json_extract(s.spec, '$.cluster'), MAX(s.finished_at) \
             FROM steps s JOIN runs r ON r.id = s.run_id \
             WHERE r.dry_run = 0 AND s.name = ? AND s.state = ? AND s.finished_at IS NOT NULL \
             GROUP BY s.service, json_extract(s.spec, '$.cluster')",
        )
        .bind(step)
        .bind(State::Succeeded.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .filter_map(|(service, cluster, finished_at)| {
                let cluster = cluster?;
                Some(rows::parse_service(&service).map(|service| LastRecovery {
                    cluster,
                    service,
                    finished_at,
                }))
            })
            .collect()
    }
}
