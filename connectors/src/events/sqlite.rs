//! [`SqliteEventBus`]: events in a durable SQLite table (its own file beside the embedded
//! store, so publishing never waits for the store's writer), and an in-process wake-up
//! (`tokio::sync::watch` of the last sequence number) that lets the tail answer at once.
//!
//! `events(seq, name_id, at_ms, dedup, value)`: `seq` orders events and is the tail's cursor;
//! `(name_id, at_ms)` serves a `wait`'s lookback; `dedup` is unique, so of concurrent
//! publishers with one dedup key exactly one inserts. Rows older than the retention period
//! are deleted as new ones arrive (at most once a second).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::watch;
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::events::{BusEvent, EventBus, EventCodec, EventName, Published, TailCursor, Tailed};
use tollgate_engine::store::StoreError;

use super::TAIL_BATCH;

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, name_id TEXT NOT NULL, at_ms INTEGER NOT NULL, dedup TEXT NULL UNIQUE, value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_name ON events (name_id, at_ms)",
];

pub struct SqliteEventBus {
    writer: SqlitePool,
    reader: SqlitePool,
    codec: EventCodec,
    retention: Duration,
    /// The last sequence number published by this process: tails wait on it.
    last: watch::Sender<u64>,
    last_prune_ms: AtomicU64,
}

impl std::fmt::Debug for SqliteEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteEventBus")
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn err(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("event bus (sqlite): {e}"))
}

impl SqliteEventBus {
    /// Opens (creating if needed) the events database at `path`.
    pub async fn open(path: &Path, master: &MasterKey, retention: Duration) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(err)?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&writer).await.map_err(err)?;
        }
        let reader = SqlitePoolOptions::new().max_connections(2).connect_with(options).await.map_err(err)?;
        let last: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(&writer).await.map_err(err)?;
        Ok(Self {
            writer,
            reader,
            codec: EventCodec::new(master),
            retention,
            last: watch::channel(last as u64).0,
            last_prune_ms: AtomicU64::new(0),
        })
    }

    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self.last_prune_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        let before = now.saturating_sub(self.retention.as_millis() as u64) as i64;
        sqlx::query("DELETE FROM events WHERE at_ms < ?").bind(before).execute(&self.writer).await.map_err(err)?;
        Ok(())
    }
}

#[async_trait]
impl EventBus for SqliteEventBus {
    async fn publish(
        &self,
        event: EventName<'_>,
        payload: &serde_json::Value,
        dedup: Option<&str>,
    ) -> Result<Published, StoreError> {
        let name_id = self.codec.name_id(event);
        let dedup = dedup.map(|d| self.codec.dedup_id(event.owner, d));
        let now = now_ms();
        self.prune(now).await?;
        let inserted: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO events (name_id, at_ms, dedup, value) VALUES (?, ?, ?, ?) ON CONFLICT(dedup) DO NOTHING RETURNING seq, at_ms",
        )
        .bind(&name_id)
        .bind(now as i64)
        .bind(&dedup)
        .bind(self.codec.seal(event, payload))
        .fetch_optional(&self.writer)
        .await
        .map_err(err)?;
        match inserted {
            Some((seq, at)) => {
                self.last.send_if_modified(|last| {
                    let newer = *last < seq as u64;
                    if newer {
                        *last = seq as u64;
                    }
                    newer
                });
                Ok(Published { id: seq.to_string(), at: at as u64, duplicate: false })
            }
            None => {
                let (seq, at): (i64, i64) = sqlx::query_as("SELECT seq, at_ms FROM events WHERE dedup = ?")
                    .bind(&dedup)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(err)?;
                Ok(Published { id: seq.to_string(), at: at as u64, duplicate: true })
            }
        }
    }

    async fn read_since(&self, event: EventName<'_>, from_ms: u64, limit: usize) -> Result<Vec<BusEvent>, StoreError> {
        let name_id = self.codec.name_id(event);
        let rows =
            sqlx::query("SELECT seq, at_ms, value FROM events WHERE name_id = ? AND at_ms >= ? ORDER BY seq LIMIT ?")
                .bind(&name_id)
                .bind(from_ms as i64)
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(err)?;
        rows.into_iter()
            .map(|r| {
                let (seq, at, value): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
                self.codec.open(&name_id, seq.to_string(), at as u64, &value)
            })
            .collect()
    }

    async fn end(&self) -> Result<TailCursor, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(err)?;
        Ok(TailCursor(last.to_string()))
    }

    async fn tail(&self, cursor: &mut TailCursor, wait: Duration) -> Result<Vec<Tailed>, StoreError> {
        let mut seen = self.last.subscribe();
        let after: i64 = cursor
            .0
            .parse()
            .map_err(|_| StoreError::Corrupt { key: "event tail cursor".into(), reason: cursor.0.clone() })?;
        loop {
            // Read first, then wait: an event published between the two has moved the watch
            // past what `seen` marked, so the wait returns at once.
            seen.borrow_and_update();
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, name_id FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
                    .bind(after)
                    .bind(TAIL_BATCH as i64)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(err)?;
            if let Some((last, _)) = rows.last() {
                cursor.0 = last.to_string();
                return Ok(rows.into_iter().map(|(seq, name_id)| Tailed { name_id, id: seq.to_string() }).collect());
            }
            if tokio::time::timeout(wait, seen.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn name_id(&self, event: EventName<'_>) -> String {
        self.codec.name_id(event)
    }
}
