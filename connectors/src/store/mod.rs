//! Store backends: Redis (fleets) and SQLite (embedded default, one file).

mod redis;
mod sqlite;

pub use redis::RedisBackend;
pub use sqlite::SqliteBackend;
