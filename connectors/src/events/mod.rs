//! The internal event bus (`tollgate_engine::events::EventBus`) on each backend:
//! [`RedisEventBus`] (Redis streams, tailed by every process of a fleet) and
//! [`SqliteEventBus`] (a durable SQLite table beside the embedded store, with an in-process
//! wake-up for the tail).

mod redis;
mod sqlite;

pub use self::redis::RedisEventBus;
pub use self::sqlite::SqliteEventBus;

/// Most events one tail call hands back.
pub(crate) const TAIL_BATCH: usize = 1000;
