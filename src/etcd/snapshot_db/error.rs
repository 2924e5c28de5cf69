//! Why a file is not a readable etcd database.

/// Why a file is not a readable etcd database. The messages say precisely what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not a bbolt database: {0}")]
    NotBbolt(String),
    #[error(
        "truncated: {len} bytes, the meta page says {pages} pages of {page_size} ({} bytes)",
        u128::from(*pages) * u128::from(*page_size)
    )]
    Truncated {
        len: u64,
        pages: u64,
        page_size: u32,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}: not an etcd database")]
    NotEtcd(String),
    #[error("too large to check: {0}")]
    Limit(String),
    #[error("reading it: {0}")]
    Io(#[from] std::io::Error),
    #[error("the check was cancelled")]
    Cancelled,
}
