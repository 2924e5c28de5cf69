//! What the store could not do.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database location {location:?}: {source}")]
    Location {
        location: String,
        source: sqlx::Error,
    },
    /// The OS error is in the message, not the source chain, so that it is said once.
    #[error("cannot create the directory {path} of the database: {error}")]
    Directory { path: String, error: std::io::Error },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
