//! A run's life in the store: created with its plan, its steps' states and saved data, its
//! end, a resume, and what a restart finds interrupted.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    database::{begin_write, bind_step, bind_task},
    error::Result,
    events::insert_event,
    handle::Store,
    history,
    records::{Interrupted, NewRun, StepKey, StepRecord},
    rows::{self, StepRow},
};
use crate::model::{Service, State};

impl Store {
    pub async fn create_run(&self, new: NewRun, now: DateTime<Utc>) -> Result<()> {
        let mut tx = begin_write(&self.pool).await?;
        let (key, hash) = new.idempotency.unzip();
        sqlx::query(
            "INSERT INTO runs (id, state, reason, dry_run, requested_by, idempotency_key, \
             request_hash, attempt, created_at, csm_release, etcd_mode, etcd_backup, etcd_confirm, \
             etcd_discard_newer) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id.to_string())
        .bind(State::Pending.as_str())
        .bind(&new.reason)
        .bind(new.dry_run)
        .bind(&new.requested_by)
        .bind(key)
        .bind(hash)
        .bind(now)
        .bind(new.csm_release.as_ref().map(sqlx::types::Json))
        .bind(new.etcd.as_str())
        .bind(&new.backup)
        .bind(sqlx::types::Json(&new.confirm))
        .bind(new.discard_newer)
        .execute(&mut *tx)
        .await?;
        for task in &new.tasks {
            sqlx::query("INSERT INTO tasks (run_id, service, state) VALUES (?, ?, ?)")
                .bind(new.id.to_string())
                .bind(task.service.as_str())
                .bind(State::Pending.as_str())
                .execute(&mut *tx)
                .await?;
            for (ordinal, step) in task.steps.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO steps (run_id, service, ordinal, name, spec, state) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(new.id.to_string())
                .bind(task.service.as_str())
                .bind(ordinal as i64)
                .bind(&step.name)
                .bind(sqlx::types::Json(&step.spec))
                .bind(State::Pending.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.history.changed();
        Ok(())
    }

    /// The run created earlier with this idempotency key, and the hash of its request.
    pub async fn find_idempotent(&self, key: &str) -> Result<Option<(Uuid, String)>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, request_hash FROM runs WHERE idempotency_key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(id, hash)| Ok((rows::parse_uuid(&id)?, hash.unwrap_or_default())))
            .transpose()
    }

    pub async fn run_state(&self, id: Uuid) -> Result<Option<State>> {
        let state: Option<(String,)> = sqlx::query_as("SELECT state FROM runs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        state.map(|(s,)| rows::parse_state(&s)).transpose()
    }

    pub async fn start_run(&self, id: Uuid, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET state = ?, started_at = COALESCE(started_at, ?), finished_at = NULL, \
             message = NULL WHERE id = ?",
        )
        .bind(State::Running.as_str())
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        self.history.changed();
        Ok(())
    }

    /// Ends the run with `state` and its one-line `message`, and stores its history documents
    /// (it does not change any more, unless resumed).
    pub async fn finish_run(
        &self,
        id: Uuid,
        state: State,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = begin_write(&self.pool).await?;
        let id = id.to_string();
        sqlx::query("UPDATE runs SET state = ?, message = ?, finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(message)
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        history::store_document(&mut tx, &id).await?;
        tx.commit().await?;
        self.history.changed();
        Ok(())
    }

    /// Marks the run abandoned, with the tasks that did not succeed: it can never be resumed.
    pub async fn abandon_run(&self, id: Uuid, message: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = begin_write(&self.pool).await?;
        let id = id.to_string();
        sqlx::query(
            "UPDATE tasks SET state = ?, message = ? || COALESCE(' (was: ' || message || ')', ''), \
             finished_at = COALESCE(finished_at, ?) WHERE run_id = ? AND state != ?",
        )
        .bind(State::Abandoned.as_str())
        .bind(message)
        .bind(now)
        .bind(&id)
        .bind(State::Succeeded.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE runs SET state = ?, message = ?, finished_at = ? WHERE id = ?")
            .bind(State::Abandoned.as_str())
            .bind(message)
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        history::store_document(&mut tx, &id).await?;
        tx.commit().await?;
        self.history.changed();
        Ok(())
    }

    /// The interrupted real recovery runs, each with the etcd cluster of each of its steps
    /// named `step` (the recovery step, whose plan names its cluster).
    pub async fn interrupted_recoveries(&self, step: &str) -> Result<Vec<(Uuid, String)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT s.run_id, json_extract(s.spec, '$.cluster') FROM steps s \
             JOIN runs r ON r.id = s.run_id \
             WHERE r.state = ? AND r.dry_run = 0 AND r.etcd_mode != 'check' AND s.name = ? \
             ORDER BY s.run_id",
        )
        .bind(State::Interrupted.as_str())
        .bind(step)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .filter_map(|(id, cluster)| Some((id, cluster?)))
            .map(|(id, cluster)| Ok((rows::parse_uuid(&id)?, cluster)))
            .collect()
    }

    /// The services of a run still to be executed (pending), in name order.
    pub async fn pending_tasks(&self, run_id: Uuid) -> Result<Vec<Service>> {
        let services: Vec<(String,)> = sqlx::query_as(
            "SELECT service FROM tasks WHERE run_id = ? AND state = ? ORDER BY service",
        )
        .bind(run_id.to_string())
        .bind(State::Pending.as_str())
        .fetch_all(&self.pool)
        .await?;
        services
            .into_iter()
            .map(|(s,)| rows::parse_service(&s))
            .collect()
    }

    pub async fn task_steps(&self, run_id: Uuid, service: Service) -> Result<Vec<StepRecord>> {
        let steps: Vec<StepRow> =
            sqlx::query_as("SELECT * FROM steps WHERE run_id = ? AND service = ? ORDER BY ordinal")
                .bind(run_id.to_string())
                .bind(service.as_str())
                .fetch_all(&self.pool)
                .await?;
        steps.into_iter().map(StepRow::into_record).collect()
    }

    pub async fn start_task(
        &self,
        run_id: Uuid,
        service: Service,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let query = sqlx::query(
            "UPDATE tasks SET state = ?, attempt = attempt + 1, started_at = ?, finished_at = NULL, \
             message = NULL WHERE run_id = ? AND service = ?",
        )
        .bind(State::Running.as_str())
        .bind(now);
        bind_task(query, run_id, service)
            .execute(&self.pool)
            .await?;
        self.history.changed();
        Ok(())
    }

    pub async fn finish_task(
        &self,
        run_id: Uuid,
        service: Service,
        state: State,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let query = sqlx::query(
            "UPDATE tasks SET state = ?, message = ?, finished_at = ? WHERE run_id = ? AND service = ?",
        )
        .bind(state.as_str())
        .bind(message)
        .bind(now);
        bind_task(query, run_id, service)
            .execute(&self.pool)
            .await?;
        self.history.changed();
        Ok(())
    }

    pub async fn start_step(&self, key: StepKey, now: DateTime<Utc>) -> Result<()> {
        let query = sqlx::query(
            "UPDATE steps SET state = ?, started_at = ?, finished_at = NULL, message = NULL \
             WHERE run_id = ? AND service = ? AND ordinal = ?",
        )
        .bind(State::Running.as_str())
        .bind(now);
        bind_step(query, key).execute(&self.pool).await?;
        Ok(())
    }

    /// Stores what a step saw or saved, while it is still running (e.g. the manifest of an
    /// object it is about to delete). Durable when this returns.
    pub async fn save_step_data(&self, key: StepKey, data: &Value) -> Result<()> {
        let query = sqlx::query(
            "UPDATE steps SET data = ? WHERE run_id = ? AND service = ? AND ordinal = ?",
        )
        .bind(sqlx::types::Json(data));
        bind_step(query, key).execute(&self.pool).await?;
        Ok(())
    }

    /// Ends a step with `state` and `message`; `data`, when given, replaces what it stored.
    pub async fn finish_step(
        &self,
        key: StepKey,
        state: State,
        message: &str,
        data: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let query = sqlx::query(
            "UPDATE steps SET state = ?, message = ?, data = COALESCE(?, data), finished_at = ? \
             WHERE run_id = ? AND service = ? AND ordinal = ?",
        )
        .bind(state.as_str())
        .bind(message)
        .bind(data.map(sqlx::types::Json))
        .bind(now);
        bind_step(query, key).execute(&self.pool).await?;
        Ok(())
    }

    /// At start: every run a previous process left pending or running is marked interrupted,
    /// with the steps that were in progress, so nothing is silently lost.
    pub async fn mark_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<Interrupted>> {
        let mut tx = begin_write(&self.pool).await?;
        let runs: Vec<(String,)> = sqlx::query_as("SELECT id FROM runs WHERE state IN (?, ?)")
            .bind(State::Pending.as_str())
            .bind(State::Running.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let mut found = Vec::new();
        for (id,) in runs {
            let steps: Vec<(String, String)> = sqlx::query_as(
                "SELECT service, name FROM steps WHERE run_id = ? AND state = ? ORDER BY service, ordinal",
            )
            .bind(&id)
            .bind(State::Running.as_str())
            .fetch_all(&mut *tx)
            .await?;
            let message = if steps.is_empty() {
                "interrupted: the service stopped before this run finished".to_owned()
            } else {
                let names: Vec<String> = steps.iter().map(|(s, n)| format!("{s}/{n}")).collect();
                format!(
                    "interrupted: the service stopped during {}; resume to continue",
                    names.join(", ")
                )
            };
            sqlx::query(
                "UPDATE steps SET state = ?, message = 'interrupted while running: the service stopped', \
                 finished_at = ? WHERE run_id = ? AND state = ?",
            )
            .bind(State::Interrupted.as_str())
            .bind(now)
            .bind(&id)
            .bind(State::Running.as_str())
            .execute(&mut *tx)
            .await?;
            // No step of a finished run stays pending: those not reached say why.
            sqlx::query(
                "UPDATE steps SET state = ?, message = 'not started: the service stopped' \
                 WHERE run_id = ? AND state = ?",
            )
            .bind(State::Interrupted.as_str())
            .bind(&id)
            .bind(State::Pending.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE tasks SET state = ?, finished_at = ?, \
                 message = COALESCE(message, 'interrupted: the service stopped') \
                 WHERE run_id = ? AND state IN (?, ?)",
            )
            .bind(State::Interrupted.as_str())
            .bind(now)
            .bind(&id)
            .bind(State::Pending.as_str())
            .bind(State::Running.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE runs SET state = ?, message = ?, finished_at = ? WHERE id = ?")
                .bind(State::Interrupted.as_str())
                .bind(&message)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            insert_event(&mut tx, &id, now, "warn", None, None, &message).await?;
            history::store_document(&mut tx, &id).await?;
            found.push(Interrupted {
                run_id: rows::parse_uuid(&id)?,
                steps: steps
                    .into_iter()
                    .map(|(s, n)| Ok((rows::parse_service(&s)?, n)))
                    .collect::<Result<_>>()?,
            });
        }
        tx.commit().await?;
        self.history.changed();
        Ok(found)
    }

    /// Makes a finished run executable again: how every step that did not succeed ended is
    /// kept as an earlier attempt of it, then those steps and their tasks go back to pending
    /// (keeping the data the steps saved, where the next attempt finds it), and the run's
    /// attempt count goes up.
    pub async fn prepare_resume(&self, run_id: Uuid) -> Result<()> {
        let mut tx = begin_write(&self.pool).await?;
        let id = run_id.to_string();
        let (attempt,): (i64,) = sqlx::query_as("SELECT attempt FROM runs WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        history::keep_attempt_outcomes(&mut tx, &id, attempt).await?;
        sqlx::query(
            "UPDATE steps SET state = ?, message = NULL, finished_at = NULL \
             WHERE run_id = ? AND state != ?",
        )
        .bind(State::Pending.as_str())
        .bind(&id)
        .bind(State::Succeeded.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = ?, finished_at = NULL, message = NULL WHERE run_id = ? AND state != ?",
        )
        .bind(State::Pending.as_str())
        .bind(&id)
        .bind(State::Succeeded.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE runs SET state = ?, attempt = attempt + 1, finished_at = NULL, message = NULL \
             WHERE id = ?",
        )
        .bind(State::Pending.as_str())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        history::clear_document(&mut tx, &id).await?;
        tx.commit().await?;
        self.history.resumed(run_id);
        Ok(())
    }
}
