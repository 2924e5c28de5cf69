//! Row types as stored, and their conversion into the API's views.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    error::{Result, StoreError},
    records::StepRecord,
};
use crate::{
    model::{Service, State},
    run::{Event, Run, RunSummary, ServiceSummary, ServiceTask, Step, StepAttempt},
};

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    pub id: String,
    pub state: String,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub requested_by: String,
    #[allow(dead_code)]
    pub idempotency_key: Option<String>,
    #[allow(dead_code)]
    pub request_hash: Option<String>,
    pub attempt: i64,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub csm_release: Option<Json<crate::release::ReleaseInForce>>,
    pub etcd_mode: String,
    pub etcd_backup: Option<String>,
    pub etcd_confirm: Json<Vec<String>>,
    pub etcd_discard_newer: bool,
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    pub run_id: String,
    pub service: String,
    pub state: String,
    pub message: Option<String>,
    #[allow(dead_code)]
    pub attempt: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    pub run_id: String,
    pub service: String,
    pub ordinal: i64,
    pub name: String,
    pub spec: Json<Value>,
    pub state: String,
    pub message: Option<String>,
    pub data: Option<Json<Value>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(super) struct StepAttemptRow {
    pub run_id: String,
    pub service: String,
    pub ordinal: i64,
    pub attempt: i64,
    pub state: String,
    pub message: Option<String>,
    pub data_summary: Option<Json<Value>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepAttemptRow {
    fn into_view(self) -> Result<StepAttempt> {
        Ok(StepAttempt {
            attempt: self.attempt,
            state: parse_state(&self.state)?,
            message: self.message,
            started_at: self.started_at,
            finished_at: self.finished_at,
            data_summary: self.data_summary.map(|d| d.0),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub id: i64,
    #[allow(dead_code)]
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub level: String,
    pub service: Option<String>,
    pub step: Option<String>,
    pub message: String,
}

pub(super) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("run id {s:?}: {e}")))
}

pub(super) fn parse_state(s: &str) -> Result<State> {
    s.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

pub(super) fn parse_service(s: &str) -> Result<Service> {
    s.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

impl StepRow {
    pub(super) fn into_record(self) -> Result<StepRecord> {
        Ok(StepRecord {
            ordinal: self.ordinal,
            name: self.name,
            spec: self.spec.0,
            state: parse_state(&self.state)?,
            data: self.data.map(|d| d.0),
        })
    }

    fn into_view(self, attempts: Vec<StepAttempt>) -> Result<Step> {
        Ok(Step {
            name: self.name,
            state: parse_state(&self.state)?,
            started_at: self.started_at,
            finished_at: self.finished_at,
            message: self.message,
            data: self.data.map(|d| d.0),
            attempts,
        })
    }
}

impl EventRow {
    pub(super) fn into_event(self) -> Result<Event> {
        Ok(Event {
            id: self.id,
            at: self.at,
            level: self.level,
            service: self.service.as_deref().map(parse_service).transpose()?,
            step: self.step,
            message: self.message,
        })
    }
}

/// Builds run views from runs and all their tasks, steps (ordered by run, service, ordinal) and
/// earlier step attempts (ordered by attempt), keeping the runs' order.
pub(super) fn assemble(
    runs: Vec<RunRow>,
    tasks: Vec<TaskRow>,
    steps: Vec<StepRow>,
    attempts: Vec<StepAttemptRow>,
) -> Result<Vec<Run>> {
    let mut attempts_by_step: HashMap<(String, String, i64), Vec<StepAttempt>> = HashMap::new();
    for attempt in attempts {
        let key = (
            attempt.run_id.clone(),
            attempt.service.clone(),
            attempt.ordinal,
        );
        attempts_by_step
            .entry(key)
            .or_default()
            .push(attempt.into_view()?);
    }
    let mut steps_by_task: HashMap<(String, String), Vec<Step>> = HashMap::new();
    for step in steps {
        let attempts = attempts_by_step
            .remove(&(step.run_id.clone(), step.service.clone(), step.ordinal))
            .unwrap_or_default();
        let key = (step.run_id.clone(), step.service.clone());
        steps_by_task
            .entry(key)
            .or_default()
            .push(step.into_view(attempts)?);
    }
    let mut tasks_by_run: HashMap<String, Vec<ServiceTask>> = HashMap::new();
    for task in tasks {
        let steps = steps_by_task
            .remove(&(task.run_id.clone(), task.service.clone()))
            .unwrap_or_default();
        tasks_by_run
            .entry(task.run_id.clone())
            .or_default()
            .push(ServiceTask {
                service: parse_service(&task.service)?,
                state: parse_state(&task.state)?,
                message: task.message,
                started_at: task.started_at,
                finished_at: task.finished_at,
                steps,
            });
    }
    runs.into_iter()
        .map(|run| {
            let services = tasks_by_run.remove(&run.id).unwrap_or_default();
            run.into_view(services)
        })
        .collect()
}

impl RunRow {
    pub(super) fn into_view(self, services: Vec<ServiceTask>) -> Result<Run> {
        let run = self;
        Ok(Run {
            id: parse_uuid(&run.id)?,
            state: parse_state(&run.state)?,
            reason: run.reason,
            dry_run: run.dry_run,
            etcd: run
                .etcd_mode
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("{e}")))?,
            backup: run.etcd_backup,
            confirm: run.etcd_confirm.0,
            discard_newer: run.etcd_discard_newer,
            requested_by: run.requested_by,
            attempt: run.attempt,
            message: run.message,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            csm_release: run.csm_release.map(|release| release.0),
            services,
        })
    }

    /// The run's history entry, from its row and its services' states.
    pub(super) fn into_summary(self, services: Vec<ServiceSummary>) -> Result<RunSummary> {
        let mut summary = RunSummary::from(&self.into_view(Vec::new())?);
        summary.services = services;
        Ok(summary)
    }
}
