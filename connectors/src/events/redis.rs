//! [`RedisEventBus`]: events in Redis streams.
//!
//! One stream per event name (`{ns}:ev:{name id}`: the sealed event under field `v`), trimmed
//! to the retention period by `MINID` on every add, read by time for a `wait`'s lookback
//! (`XRANGE` from a stream id made of the time); and one fleet-wide stream (`{ns}:ev:all`,
//! name id and event id only, capped) that every follower tails with `XREAD BLOCK` from the
//! last id it saw, so a reconnect resumes where it left off and loses nothing. A blocked read
//! holds its connection until it returns, so each tail in flight has a connection of its own
//! (kept in a small pool between calls): followers never queue behind one another's `BLOCK`,
//! nor publishes behind any of them. A dedup key
//! (`{ns}:ev:dedup:{hash}`) is claimed in the same script as the add, on the server's clock.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script, Value};
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::events::{BusEvent, EventBus, EventCodec, EventName, Published, TailCursor, Tailed};
use tollgate_engine::store::StoreError;

use super::TAIL_BATCH;

/// Longest the fleet-wide stream gets (approximately): it only wakes tails, which read it
/// within moments.
const ALL_MAXLEN: u64 = 100_000;

/// KEYS: name stream, fleet stream, dedup key (or the name stream again when there is none).
/// ARGV: sealed event, name id, retention ms, has dedup (0/1), fleet stream length.
const PUBLISH_LUA: &str = r#"
if ARGV[4] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first then return {first, 1} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[3])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', tostring(now - retention), '*', 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], retention)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'n', ARGV[2], 'i', id)
if ARGV[4] == '1' then redis.call('SET', KEYS[3], id, 'PX', retention) end
return {id, 0}
"#;

pub struct RedisEventBus {
    client: Client,
    conn: ConnectionManager,
    /// Idle connections for `XREAD BLOCK`: a tail takes one for the length of its call (or
    /// opens one), so concurrent tails and publishes never wait for one another.
    tail_conns: Mutex<Vec<ConnectionManager>>,
    prefix: String,
    codec: EventCodec,
    retention: Duration,
    publish: Script,
}

impl std::fmt::Debug for RedisEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventBus").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Reconnects on its own; a blocked read (`BLOCK` ≤ the tail's wait, seconds) answers well
/// within the response timeout.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("event bus: {e}"))
}

/// The ms part of a stream id (`1700000000000-0`).
fn id_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

impl RedisEventBus {
    /// Connects to `url`; keys go under `{namespace}:ev:`. Events are kept `retention`.
    pub async fn connect(
        url: &str,
        namespace: &str,
        master: &MasterKey,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))?;
        let conn =
            ConnectionManager::new_with_config(client.clone(), connection_config()).await.map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            tail_conns: Mutex::new(Vec::new()),
            prefix: format!("{namespace}:ev:"),
            codec: EventCodec::new(master),
            retention,
            publish: Script::new(PUBLISH_LUA),
        })
    }

    /// A connection for one blocking read: an idle one, or a new one.
    async fn tail_conn(&self) -> Result<ConnectionManager, StoreError> {
        let idle = self.tail_conns.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                ConnectionManager::new_with_config(self.client.clone(), connection_config()).await.map_err(unavailable)
            }
        }
    }

    fn stream(&self, name_id: &str) -> String {
        format!("{}{name_id}", self.prefix)
    }

    fn all(&self) -> String {
        format!("{}all", self.prefix)
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(
        &self,
        event: EventName<'_>,
        payload: &serde_json::Value,
        dedup: Option<&str>,
    ) -> Result<Published, StoreError> {
        let name_id = self.codec.name_id(event);
        let stream = self.stream(&name_id);
        let dedup_key = dedup.map(|d| format!("{}dedup:{}", self.prefix, self.codec.dedup_id(event.owner, d)));
        let (id, duplicate): (String, i64) = self
            .publish
            .key(&stream)
            .key(self.all())
            .key(dedup_key.as_deref().unwrap_or(&stream))
            .arg(self.codec.seal(event, payload))
            .arg(&name_id)
            .arg(self.retention.as_millis() as u64)
            .arg(if dedup.is_some() { "1" } else { "0" })
            .arg(ALL_MAXLEN)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(Published { at: id_ms(&id), id, duplicate: duplicate == 1 })
    }

    async fn read_since(&self, event: EventName<'_>, from_ms: u64, limit: usize) -> Result<Vec<BusEvent>, StoreError> {
        let name_id = self.codec.name_id(event);
        let entries: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XRANGE")
            .arg(self.stream(&name_id))
            .arg(format!("{from_ms}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let Some((_, sealed)) = fields.into_iter().find(|(f, _)| f == "v") else { continue };
            let at = id_ms(&id);
            out.push(self.codec.open(&name_id, id, at, &sealed)?);
        }
        Ok(out)
    }

    async fn end(&self) -> Result<TailCursor, StoreError> {
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.all())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(TailCursor(last.into_iter().next().map_or_else(|| "0-0".to_string(), |(id, _)| id)))
    }

    async fn tail(&self, cursor: &mut TailCursor, wait: Duration) -> Result<Vec<Tailed>, StoreError> {
        let mut conn = self.tail_conn().await?;
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(TAIL_BATCH)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.all())
            .arg(&cursor.0)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // Answered: the connection is free for the next tail. (A call dropped mid-read, or
        // failed, takes its connection with it.)
        self.tail_conns.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        let streams: Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>> =
            redis::FromRedisValue::from_redis_value(reply)
                .map_err(|e| StoreError::Corrupt { key: self.all(), reason: e.to_string() })?;
        let mut out = Vec::new();
        for (_, entries) in streams.unwrap_or_default() {
            for (all_id, fields) in entries {
                cursor.0 = all_id;
                let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
                if let (Some(name_id), Some(id)) = (field("n"), field("i")) {
                    out.push(Tailed { name_id, id });
                }
            }
        }
        Ok(out)
    }

    fn name_id(&self, event: EventName<'_>) -> String {
        self.codec.name_id(event)
    }
}
