//! One service per database. A second `serve` on the same database (a second replica by
//! mistake, a manual run beside the pod) would mark the first one's live runs interrupted and
//! run them twice on resume, so `serve` first takes an exclusive lock (`flock`) on a file next
//! to the database, `<database>.lock`, holding who holds it: its pid, host and start time. The
//! kernel releases the lock when the holder exits, however it exits (even SIGKILL), so a crash
//! never leaves a database locked; the file stays, and the next holder rewrites it.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{database::database_file, error::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the database {database} is in use by another etcd-repopulator ({holder}; lock file \
         {lock}): one database serves one service, so this one does not start; stop the other \
         (a second replica, or a `serve` beside the pod?) or give this one its own --database"
    )]
    Held {
        database: String,
        lock: String,
        holder: String,
    },
    #[error("cannot lock the database {database} (lock file {lock}): {error}")]
    Io {
        database: String,
        lock: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who holds a database, as its lock file says.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    started_at: DateTime<Utc>,
}

/// The lock on a database, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    /// Locks the database at `location` (a path or a `sqlite:` URL) for this process, creating
    /// its directory if missing; `None` for an in-memory database, which no other process can
    /// open. Fails at once, naming the holder, when another process holds it.
    pub fn acquire(location: &str) -> Result<Option<DatabaseLock>, LockError> {
        let Some(database) = database_file(location)? else {
            return Ok(None);
        };
        let mut name = database.clone().into_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |error| LockError::Io {
            database: database.display().to_string(),
            lock: path.display().to_string(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    database: database.display().to_string(),
                    lock: path.display().to_string(),
                    holder: describe_holder(&mut file),
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "an unknown host".to_owned()),
            started_at: Utc::now(),
        };
        let text = serde_json::to_string(&holder).unwrap_or_default() + "\n";
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(Some(DatabaseLock { _file: file, path }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "pid 1234 on host h, started 2026-01-01T00:00:00Z", from the holder's lock file.
fn describe_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match serde_json::from_str::<Holder>(text.trim()) {
        Ok(holder) => format!(
            "pid {} on host {}, started {}",
            holder.pid,
            holder.host,
            holder
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        // Between its lock and its write, the holder has not said who it is yet.
        Err(_) if text.trim().is_empty() => "a process starting now".to_owned(),
        Err(_) => format!("the lock file says {:?}", text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("sub").join("runs.db");
        let location = database.to_str().unwrap();
        let first = DatabaseLock::acquire(location).unwrap().unwrap();
        assert_eq!(first.path(), dir.path().join("sub").join("runs.db.lock"));
        let err = DatabaseLock::acquire(&format!("sqlite://{location}")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{message}");
        assert!(
            message.contains(&format!("pid {} on host ", std::process::id()))
                && message.contains(location),
            "{message}"
        );
        drop(first);
        assert!(DatabaseLock::acquire(location).unwrap().is_some());
        assert!(DatabaseLock::acquire("sqlite::memory:").unwrap().is_none());
    }
}
