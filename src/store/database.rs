//! The database underneath: where its file is, how a write transaction begins, how a task's
//! or a step's key is bound.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use sqlx::{SqlitePool, sqlite::SqliteConnectOptions};
use uuid::Uuid;

use super::{
    error::{Result, StoreError},
    records::StepKey,
};
use crate::model::Service;

pub(super) type SqliteQuery<'q> =
    sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds a task's key, for statements ending in `WHERE run_id = ? AND service = ?`.
pub(super) fn bind_task(query: SqliteQuery<'_>, run_id: Uuid, service: Service) -> SqliteQuery<'_> {
    query.bind(run_id.to_string()).bind(service.as_str())
}

/// Binds a step's key, for statements ending in `WHERE run_id = ? AND service = ? AND ordinal = ?`.
pub(super) fn bind_step(query: SqliteQuery<'_>, key: StepKey) -> SqliteQuery<'_> {
    bind_task(query, key.run_id, key.service).bind(key.ordinal)
}

/// The connection options of the database at `location`, a path or a `sqlite:` URL.
pub(super) fn connect_options(location: &str) -> Result<SqliteConnectOptions> {
    if location.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(location).map_err(|source| StoreError::Location {
            location: location.to_owned(),
            source,
        })
    } else {
        Ok(SqliteConnectOptions::new().filename(location))
    }
}

/// The file of the database at `location`, with its directory created if missing; `None` for
/// an in-memory database, which has no file, so no directory either.
pub(super) fn database_file(location: &str) -> Result<Option<PathBuf>> {
    let options = connect_options(location)?;
    if location.contains(":memory:") || location.contains("mode=memory") {
        return Ok(None);
    }
    create_parent_dir(options.get_filename())?;
    Ok(Some(options.get_filename().to_owned()))
}

/// Creates the directory a database file goes in, if missing: SQLite creates the file but not
/// its directory (the image's `/var/lib/etcd-repopulator` without a volume mounted there).
fn create_parent_dir(file: &Path) -> Result<()> {
    let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|error| StoreError::Directory {
        path: dir.display().to_string(),
        error,
    })
}

/// A write transaction. `BEGIN IMMEDIATE` takes SQLite's write lock at once, waiting for it up
/// to the busy timeout: a deferred transaction that reads and then writes fails at once with
/// `SQLITE_BUSY` when another connection wrote in between (its read snapshot cannot become a
/// write), without waiting, which a busy service (a resume while the collector records) hit.
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
