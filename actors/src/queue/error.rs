//! Errors of the queue adapters, flattened into the engine's `QueueError` at the port.

use tollgate_engine::queue::QueueError;

/// Everything that can go wrong talking to a queue backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("apalis-sqlite: {0}")]
    ApalisSqlite(#[from] apalis_sqlite::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("apalis-redis: {0}")]
    ApalisRedis(#[from] apalis_redis::Error),
    #[error("encoding a job: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("committing to the queue file: {0}")]
    Commit(String),
    #[error("the queue was closed")]
    Closed,
    #[error("worker stopped: {0}")]
    Worker(String),
    #[error("preparing {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl From<BackendError> for QueueError {
    fn from(e: BackendError) -> Self {
        QueueError(e.to_string())
    }
}
