//! The store's handle: its connection pools (writes, history reads, health), the history
//! cache, the broadcast of appended events; and opening the database. What it does is in the
//! files beside this one (`runs`, `history`, `events`, ...).

use std::time::Duration;

use sqlx::{
    SqlitePool,
    sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    cache::HistoryCache,
    database::{connect_options, database_file},
    error::Result,
    records::AppendedEvent,
};

/// How many appended events a slow follower may fall behind before it must re-read the log
/// from the database (it is told so by `RecvError::Lagged`; nothing is lost).
const EVENT_BUFFER: usize = 1024;

/// Connections for history reads (`GET /repopulations`, `GET /repopulations/{id}`): their own,
/// so that many readers never make a run's writes wait for a connection.
const READER_CONNECTIONS: u32 = 4;
#[derive(Clone)]
pub struct Store {
    /// The runner's writes and reads, and everything else.
    pub(super) pool: SqlitePool,
    /// History reads.
    pub(super) readers: SqlitePool,
    /// One connection for `/readyz`, which must answer however busy the others are.
    pub(super) health: SqlitePool,
    /// Recently read history, in memory.
    pub(super) history: std::sync::Arc<HistoryCache>,
    pub(super) appended: tokio::sync::broadcast::Sender<AppendedEvent>,
}

impl Store {
    /// Opens (creating if missing, with its directory) the database at `location`, a path or a
    /// `sqlite:` URL, and applies the migrations.
    pub async fn open(location: &str) -> Result<Store> {
        let in_memory = database_file(location)?.is_none();
        let options = connect_options(location)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // SQLite's page cache is per connection (2 MiB each by default); the operating system
        // caches the file too, so a smaller one per connection keeps the process small.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone().pragma("cache_size", "-1024"))
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (readers, health) = if in_memory {
            // Another pool would open another database.
            (pool.clone(), pool.clone())
        } else {
            let readers = SqlitePoolOptions::new()
                .max_connections(READER_CONNECTIONS)
                .connect_with(options.clone().pragma("cache_size", "-512"))
                .await?;
            let health = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.pragma("cache_size", "-64"))
                .await?;
            (readers, health)
        };
        let (appended, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        let store = Store {
            pool,
            readers,
            health,
            history: std::sync::Arc::new(HistoryCache::new()),
            appended,
        };
        let stored = store.backfill_documents().await?;
        if stored > 0 {
            tracing::info!(
                runs = stored,
                "stored the history documents of finished runs"
            );
        }
        Ok(store)
    }

    /// Whether the database answers (on a connection of its own).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.health).await?;
        Ok(())
    }
}
