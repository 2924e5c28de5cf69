//! The read side of the run history. A finished run does not change until a resume makes it
//! pending again, so when it finishes its list entry (`runs.summary`) and its full view
//! (`run_documents`) are stored as JSON, and history reads return them as they are: a page of the
//! list is one indexed query, a run one primary-key lookup. Runs still executing (a few at most)
//! are assembled from their rows.
//!
//! In front of the database: the recently read documents and pages (`cache`). Concurrent
//! readers of the same page wait for one query and share its bytes.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use sqlx::{SqliteConnection, types::Json};
use uuid::Uuid;

use super::{
    error::{Result, StoreError},
    handle::Store,
    records::RunFilter,
    rows::{self, RunRow, StepAttemptRow, StepRow, TaskRow},
};
use crate::{
    model::{Service, State},
    run::{Run, RunSummary, ServiceSummary},
};

/// The version of the run views (`Run`, `RunSummary`) the stored documents are written in.
/// Increment it when their JSON changes: at start, the service writes the documents of every
/// finished run again in the new format.
const DOCUMENT_FORMAT: i64 = 3;
/// How many finished runs without stored documents (from before they were stored) are written
/// per transaction at start.
const BACKFILL_BATCH: i64 = 500;
/// Strings longer than this are shortened in a step attempt's data outline.
const OUTLINE_STRING: usize = 200;
/// How deep objects are outlined field by field; deeper ones are reduced to their size.
const OUTLINE_DEPTH: usize = 2;

impl Store {
    /// The run as `GET /repopulations/{id}` shows it, as JSON: a finished run's stored document
    /// (from memory if read recently), or, while it executes, assembled from its rows.
    pub async fn run_json(&self, id: Uuid) -> Result<Option<Bytes>> {
        if let Some(document) = self.history.documents.get(&id) {
            return Ok(Some(document));
        }
        let resumes = self.history.resumes.load(Ordering::Acquire);
        let mut conn = self.readers.acquire().await?;
        let key = id.to_string();
        let stored: Option<(String,)> =
            sqlx::query_as("SELECT document FROM run_documents WHERE run_id = ?")
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await?;
        match stored {
            Some((document,)) => {
                let document = Bytes::from(document);
                // Unless a resume came in between, in which case it may be outdated already.
                if self.history.resumes.load(Ordering::Acquire) == resumes {
                    self.history.documents.insert(id, document.clone());
                }
                Ok(Some(document))
            }
            None => load_run(&mut conn, &key)
                .await?
                .map(|run| serde_json::to_vec(&run).map(Bytes::from))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    /// A page of the history as `GET /repopulations` shows it, as JSON (a `RunList`).
    pub async fn history_page(&self, filter: &RunFilter) -> Result<Bytes> {
        let key = (
            self.history.generation.load(Ordering::Acquire),
            filter.state,
            filter.service,
            filter.before,
            filter.limit,
        );
        self.history
            .pages
            .get_or_insert_async(&key, async {
                // Pages read from the database are built a few at a time, which bounds the
                // memory and the processor time that many readers of the history can take.
                let _permit = self
                    .history
                    .page_builds
                    .acquire()
                    .await
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let (items, next) = self.list_runs(filter).await?;
                Ok(page_json(&items, next))
            })
            .await
    }

    /// The run with its service tasks, steps and earlier step attempts, assembled from its rows.
    pub async fn get_run(&self, id: Uuid) -> Result<Option<Run>> {
        let mut conn = self.pool.acquire().await?;
        load_run(&mut conn, &id.to_string()).await
    }

    /// History entries newest first, filtered, one page, as JSON; the second value is the
    /// cursor of the next page.
    async fn list_runs(&self, filter: &RunFilter) -> Result<(Vec<String>, Option<Uuid>)> {
        let limit = i64::from(filter.limit.max(1));
        let mut conn = self.readers.acquire().await?;
        let mut page: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT r.id, r.summary FROM runs r \
             WHERE r.id < ?1 \
               AND (?2 IS NULL OR r.state = ?2) \
               AND (?3 IS NULL OR EXISTS \
                    (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.service = ?3)) \
             ORDER BY r.id DESC LIMIT ?4",
        )
        // Keyset pagination on the primary key; without a cursor, a bound above every id keeps
        // the same (index-using) query shape.
        .bind(
            filter
                .before
                .map_or_else(|| "~".to_owned(), |id| id.to_string()),
        )
        .bind(filter.state.map(State::as_str))
        .bind(filter.service.map(Service::as_str))
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            page.last()
                .map(|(id, _)| rows::parse_uuid(id))
                .transpose()?
        } else {
            None
        };
        let executing: Vec<&str> = page
            .iter()
            .filter(|(_, summary)| summary.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        let mut assembled = if executing.is_empty() {
            Vec::new()
        } else {
            load_summaries(&mut conn, &executing).await?
        };
        let mut items = Vec::with_capacity(page.len());
        for (id, summary) in page {
            let item = match summary {
                Some(summary) => summary,
                None => {
                    let at = assembled
                        .iter()
                        .position(|s| s.id.to_string() == id)
                        .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
                    to_text(&assembled.swap_remove(at))?
                }
            };
            items.push(item);
        }
        Ok((items, next))
    }

    /// Stores the documents of finished runs that have none (runs finished before documents
    /// were stored) or have them in another format, a batch per transaction; returns how many.
    pub(super) async fn backfill_documents(&self) -> Result<usize> {
        let mut done = 0;
        // Keyset over the primary key: each batch starts after the last run looked at.
        let mut after = String::new();
        loop {
            let mut tx = super::database::begin_write(&self.pool).await?;
            let batch: Vec<RunRow> = sqlx::query_as(
                "SELECT r.* FROM runs r LEFT JOIN run_documents d ON d.run_id = r.id \
                 WHERE r.id > ? AND r.state NOT IN (?, ?) \
                   AND (r.summary IS NULL OR d.format IS NULL OR d.format != ?) \
                 ORDER BY r.id LIMIT ?",
            )
            .bind(&after)
            .bind(State::Pending.as_str())
            .bind(State::Running.as_str())
            .bind(DOCUMENT_FORMAT)
            .bind(BACKFILL_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = batch.last() else {
                return Ok(done);
            };
            after = last.id.clone();
            done += batch.len();
            store_documents(&mut tx, batch).await?;
            tx.commit().await?;
        }
    }
}

/// A `RunList` of the run summaries `items` (JSON as stored) and the next page's cursor,
/// written as it is sent, without parsing the summaries again.
fn page_json(items: &[String], next: Option<Uuid>) -> Bytes {
    let size = items.iter().map(|item| item.len() + 1).sum::<usize>() + 80;
    let mut page = Vec::with_capacity(size);
    page.extend_from_slice(b"{\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            page.push(b',');
        }
        page.extend_from_slice(item.as_bytes());
    }
    page.extend_from_slice(b"],\"next_cursor\":");
    match next {
        Some(id) => page.extend_from_slice(format!("\"{id}\"").as_bytes()),
        None => page.extend_from_slice(b"null"),
    }
    page.push(b'}');
    Bytes::from(page)
}

fn to_text<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `ids` as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn id_array<S: AsRef<str>>(ids: &[S]) -> Result<String> {
    to_text(&ids.iter().map(AsRef::as_ref).collect::<Vec<_>>())
}

pub(super) async fn load_run(conn: &mut SqliteConnection, id: &str) -> Result<Option<Run>> {
    let row: Option<RunRow> = sqlx::query_as("SELECT * FROM runs WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(load_runs(conn, vec![row]).await?.pop()),
    }
}

/// Loads the tasks, steps and step attempts of `runs` (three queries for all of them) and
/// builds their views, in the order of `runs`.
async fn load_runs(conn: &mut SqliteConnection, runs: Vec<RunRow>) -> Result<Vec<Run>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids = id_array(&runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let tasks: Vec<TaskRow> = sqlx::query_as(
        "SELECT * FROM tasks WHERE run_id IN (SELECT value FROM json_each(?)) \
         ORDER BY run_id, service",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT * FROM steps WHERE run_id IN (SELECT value FROM json_each(?)) \
         ORDER BY run_id, service, ordinal",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let attempts: Vec<StepAttemptRow> = sqlx::query_as(
        "SELECT * FROM step_attempts WHERE run_id IN (SELECT value FROM json_each(?)) \
         ORDER BY run_id, service, ordinal, attempt",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    rows::assemble(runs, tasks, steps, attempts)
}

/// The history entries of runs without a stored one (still executing), from their rows.
async fn load_summaries(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<RunSummary>> {
    let ids = id_array(ids)?;
    let runs: Vec<RunRow> =
        sqlx::query_as("SELECT * FROM runs WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let tasks: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT run_id, service, state FROM tasks \
         WHERE run_id IN (SELECT value FROM json_each(?)) ORDER BY run_id, service",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    runs.into_iter()
        .map(|run| {
            let services = tasks
                .iter()
                .filter(|(run_id, _, _)| *run_id == run.id)
                .map(|(_, service, state)| {
                    Ok(ServiceSummary {
                        service: rows::parse_service(service)?,
                        state: rows::parse_state(state)?,
                    })
                })
                .collect::<Result<_>>()?;
            run.into_summary(services)
        })
        .collect()
}

/// Stores the list entry and the full document of run `id`, which has just finished.
pub(super) async fn store_document(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    let runs: Vec<RunRow> = sqlx::query_as("SELECT * FROM runs WHERE id = ?")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    store_documents(conn, runs).await
}

async fn store_documents(conn: &mut SqliteConnection, runs: Vec<RunRow>) -> Result<()> {
    for run in load_runs(conn, runs).await? {
        let id = run.id.to_string();
        sqlx::query("UPDATE runs SET summary = ? WHERE id = ?")
            .bind(to_text(&RunSummary::from(&run))?)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO run_documents (run_id, format, document) VALUES (?, ?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET format = excluded.format, \
             document = excluded.document",
        )
        .bind(&id)
        .bind(DOCUMENT_FORMAT)
        .bind(to_text(&run)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Forgets the stored documents of run `id`, which is about to execute again.
pub(super) async fn clear_document(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    sqlx::query("UPDATE runs SET summary = NULL WHERE id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM run_documents WHERE run_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Keeps how every step of run `id` that ended in `attempt` without succeeding ended (state,
/// message, times and an outline of its data), before a resume runs it again.
pub(super) async fn keep_attempt_outcomes(
    conn: &mut SqliteConnection,
    id: &str,
    attempt: i64,
) -> Result<()> {
    let steps: Vec<StepRow> =
        sqlx::query_as("SELECT * FROM steps WHERE run_id = ? AND state NOT IN (?, ?)")
            .bind(id)
            .bind(State::Succeeded.as_str())
            .bind(State::Pending.as_str())
            .fetch_all(&mut *conn)
            .await?;
    for step in steps {
        sqlx::query(
            "INSERT INTO step_attempts (run_id, service, ordinal, attempt, state, message, \
             data_summary, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&step.run_id)
        .bind(&step.service)
        .bind(step.ordinal)
        .bind(attempt)
        .bind(&step.state)
        .bind(&step.message)
        .bind(step.data.as_ref().map(|d| Json(data_outline(&d.0))))
        .bind(step.started_at)
        .bind(step.finished_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The outline of a step's data, always an object (data that is not one is under `value`).
pub(super) fn data_outline(data: &Value) -> Value {
    match data {
        Value::Object(_) => outline(data, 0),
        other => serde_json::json!({ "value": outline(other, 1) }),
    }
}

/// A short outline of step data: scalars as they are, long strings shortened, lists reduced
/// to their length, objects outlined field by field down to `OUTLINE_DEPTH`.
pub(super) fn outline(data: &Value, depth: usize) -> Value {
    match data {
        Value::String(s) if s.chars().count() > OUTLINE_STRING => {
            let head: String = s.chars().take(OUTLINE_STRING).collect();
            Value::String(format!("{head}… ({} characters)", s.chars().count()))
        }
        Value::Array(items) => Value::String(format!("{} item(s)", items.len())),
        Value::Object(fields) if depth >= OUTLINE_DEPTH => {
            Value::String(format!("{} field(s)", fields.len()))
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), outline(value, depth + 1)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::outline;
    use crate::{
        model::{Service, State, new_run_id},
        run::RunSummary,
        store::{NewRun, NewStep, NewTask, RunFilter, StepKey, Store},
    };

    async fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path().join("runs.db").to_str().unwrap())
            .await
            .unwrap()
    }

    /// A run of reds whose first step failed and whose second was skipped.
    async fn failed_run(store: &Store) -> uuid::Uuid {
        let id = new_run_id();
        let step = |name: &str| NewStep {
            name: name.to_owned(),
            spec: json!({"action": name}),
        };
        let new = NewRun {
            id,
            reason: None,
            dry_run: false,
            requested_by: "test".to_owned(),
            idempotency: None,
            csm_release: None,
            etcd: Default::default(),
            backup: None,
            confirm: Vec::new(),
            discard_newer: false,
            tasks: vec![NewTask {
                service: Service::Reds,
                steps: vec![step("check"), step("restart")],
            }],
        };
        store.create_run(new, Utc::now()).await.unwrap();
        let key = |ordinal| StepKey {
            run_id: id,
            service: Service::Reds,
            ordinal,
        };
        store.start_run(id, Utc::now()).await.unwrap();
        store
            .start_task(id, Service::Reds, Utc::now())
            .await
            .unwrap();
        store.start_step(key(0), Utc::now()).await.unwrap();
        let data = json!({"pods": ["a", "b"], "ready": 1});
        let (failed, skipped) = (State::Failed, State::Skipped);
        store
            .finish_step(key(0), failed, "boom", Some(&data), Utc::now())
            .await
            .unwrap();
        store
            .finish_step(key(1), skipped, "not started", None, Utc::now())
            .await
            .unwrap();
        store
            .finish_task(id, Service::Reds, failed, "boom", Utc::now())
            .await
            .unwrap();
        store
            .finish_run(id, failed, "1 failed: reds", Utc::now())
            .await
            .unwrap();
        id
    }

    async fn first_page(store: &Store) -> Vec<serde_json::Value> {
        let filter = RunFilter {
            limit: 10,
            ..RunFilter::default()
        };
        let page = store.history_page(&filter).await.unwrap();
        // The page as written is a RunList.
        serde_json::from_slice::<crate::run::RunList>(&page).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
        page["items"].as_array().unwrap().clone()
    }

    async fn stored_documents(store: &Store) -> i64 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM run_documents d JOIN runs r ON r.id = d.run_id \
             WHERE r.summary IS NOT NULL",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        n
    }

    #[tokio::test]
    async fn a_finished_run_is_read_from_its_stored_documents_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let id = failed_run(&store).await;
        assert_eq!(stored_documents(&store).await, 1);
        let run = store.get_run(id).await.unwrap().unwrap();
        // Read twice: from the database, then from memory.
        for _ in 0..2 {
            let document = store.run_json(id).await.unwrap().unwrap();
            assert_eq!(document, serde_json::to_vec(&run).unwrap());
        }
        assert_eq!(
            first_page(&store).await,
            [serde_json::to_value(RunSummary::from(&run)).unwrap()]
        );

        store.prepare_resume(id).await.unwrap();
        assert_eq!(stored_documents(&store).await, 0);
        let document = store.run_json(id).await.unwrap().unwrap();
        let resumed: serde_json::Value = serde_json::from_slice(&document).unwrap();
        assert_eq!(resumed["state"], "pending");
        assert_eq!(resumed["attempt"], 2);
        let steps = &resumed["services"][0]["steps"];
        assert_eq!(steps[0]["state"], "pending");
        assert_eq!(steps[0]["message"], serde_json::Value::Null);
        assert_eq!(steps[0]["data"], json!({"pods": ["a", "b"], "ready": 1}));
        assert_eq!(steps[0]["attempts"][0]["state"], "failed");
        assert_eq!(steps[0]["attempts"][0]["message"], "boom");
        assert_eq!(
            steps[0]["attempts"][0]["data_summary"],
            json!({"pods": "2 item(s)", "ready": 1})
        );
        assert_eq!(steps[1]["attempts"][0]["state"], "skipped");
        let page = first_page(&store).await;
        assert_eq!(page[0]["state"], "pending");
        assert_eq!(
            page[0]["services"],
            json!([{"service": "reds", "state": "pending"}])
        );
    }

    #[tokio::test]
    async fn finished_runs_without_documents_or_in_another_format_get_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let id = failed_run(&store).await;
        // As a database written before documents were stored.
        sqlx::query("UPDATE runs SET summary = NULL")
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM run_documents")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(first_page(&store).await[0]["state"], "failed");
        drop(store);
        let store = open(&dir).await;
        assert_eq!(stored_documents(&store).await, 1);
        // As documents written by a service whose views were different.
        sqlx::query("UPDATE run_documents SET format = 0, document = '{}'")
            .execute(&store.pool)
            .await
            .unwrap();
        drop(store);
        let store = open(&dir).await;
        let run = store.get_run(id).await.unwrap().unwrap();
        assert_eq!(
            store.run_json(id).await.unwrap().unwrap(),
            serde_json::to_vec(&run).unwrap()
        );
    }

    #[test]
    fn outlines_keep_scalars_and_reduce_lists_objects_and_long_strings() {
        let data = json!({
            "restarted": true,
            "ready": 3,
            "summary": "x".repeat(250),
            "pods": [{"name": "a"}, {"name": "b"}],
            "plan": {"selector": "app=x", "pods": ["a"], "deep": {"a": 1, "b": 2}},
        });
        assert_eq!(
            outline(&data, 0),
            json!({
                "restarted": true,
                "ready": 3,
                "summary": format!("{}… (250 characters)", "x".repeat(200)),
                "pods": "2 item(s)",
                "plan": {"selector": "app=x", "pods": "1 item(s)", "deep": "2 field(s)"},
            })
        );
    }
}
