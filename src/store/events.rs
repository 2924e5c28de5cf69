//! A run's log: events appended (and broadcast to live followers) and read back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{error::Result, handle::Store, records::AppendedEvent, rows::EventRow};
use crate::{model::Service, run::Event};

impl Store {
    pub async fn append_event(
        &self,
        run_id: Uuid,
        level: &str,
        service: Option<Service>,
        step: Option<&str>,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        let id = insert_event(
            &mut conn,
            &run_id.to_string(),
            now,
            level,
            service,
            step,
            message,
        )
        .await?;
        // No receiver (nobody follows a log) is the normal case, not an error.
        let _ = self.appended.send(AppendedEvent {
            run_id,
            event: Event {
                id,
                at: now,
                level: level.to_owned(),
                service,
                step: step.map(str::to_owned),
                message: message.to_owned(),
            },
        });
        Ok(id)
    }

    /// Every event appended from now on, of every run.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AppendedEvent> {
        self.appended.subscribe()
    }

    /// The run's log after event `after` (0 for all), oldest first.
    pub async fn events(&self, run_id: Uuid, after: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> =
            sqlx::query_as("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id")
                .bind(run_id.to_string())
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }
}

pub(super) async fn insert_event(
    conn: &mut sqlx::SqliteConnection,
    run_id: &str,
    now: DateTime<Utc>,
    level: &str,
    service: Option<Service>,
    step: Option<&str>,
    message: &str,
) -> Result<i64> {
    let id = sqlx::query(
        "INSERT INTO events (run_id, at, level, service, step, message) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(now)
    .bind(level)
    .bind(service.map(Service::as_str))
    .bind(step)
    .bind(message)
    .execute(conn)
    .await?
    .last_insert_rowid();
    Ok(id)
}
