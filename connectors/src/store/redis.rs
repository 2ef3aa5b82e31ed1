//! [`RedisBackend`]: the engine's storage port on Redis, for fleets of processes sharing
//! one store.
//!
//! Layout, all under `"{namespace}:"` so tenants and test runs never see each other:
//! values are strings (`SET … PX` for TTLs, `SET NX` for first-writer-wins), logs are lists
//! appended by a Lua script that checks the length and pushes atomically, indexes are
//! sorted sets whose members all score 0 so `ZRANGE` returns them in byte order.
//! A name is one Redis key, so a value, a log and an index must not share a name (the key
//! layout in `tollgate_engine::store::keys` guarantees it); if they do, the call fails as
//! [`StoreError::Corrupt`].

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script, Value};
use tollgate_engine::store::{Backend, StoreError};

/// Appends ARGV[2..] to the list KEYS[1] only if it holds exactly ARGV[1] entries, and
/// returns the length it had before. Lua runs atomically, so no writer can slip between the
/// check and the push. `unpack` is limited to a few thousand values, hence the chunks.
const APPEND_LUA: &str = r"
local len = redis.call('LLEN', KEYS[1])
if len ~= tonumber(ARGV[1]) then
  return len
end
local n = #ARGV
local i = 2
while i <= n do
  local j = math.min(i + 999, n)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
return len
";

/// `append_with`: the append above, then — only if it happened — SET each KEYS[2..] to its value.
/// ARGV: expected length, number of entries, the entries, then one value per extra key.
const APPEND_WITH_LUA: &str = r"
local len = redis.call('LLEN', KEYS[1])
if len ~= tonumber(ARGV[1]) then
  return len
end
local n = tonumber(ARGV[2])
local i = 3
while i <= n + 2 do
  local j = math.min(i + 999, n + 2)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
for k = 2, #KEYS do
  redis.call('SET', KEYS[k], ARGV[n + 1 + k])
end
return len
";

/// How many keys one `SCAN` step asks for; larger pages mean fewer round trips on a big
/// keyspace, and the server bounds the work per step anyway.
const SCAN_PAGE: usize = 1000;

/// A [`Backend`] on one Redis server. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisBackend {
    conn: ConnectionManager,
    /// `"{namespace}:"`, prepended to every key.
    prefix: String,
    append: Script,
    append_with: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password, so only the namespace is shown.
        f.debug_struct("RedisBackend").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`) and checks the server
    /// answers. Every key is stored as `"{namespace}:{key}"`.
    ///
    /// The connection is multiplexed (concurrent calls are pipelined on it) and reconnects
    /// on its own after a failure; calls made while the server is away fail with
    /// [`StoreError::Unavailable`].
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            // The default 500 ms response timeout trips on megabyte values and scans of a
            // loaded server; a store call that is slow is better than one that lies.
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // Fail a first connection to a server that is not there within a few seconds.
            .set_number_of_retries(3);
        let mut conn = ConnectionManager::new_with_config(client, config).await.map_err(|e| map_err("", e))?;
        let _: Value = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| map_err("", e))?;
        Ok(Self { conn, prefix: format!("{namespace}:"), append: Script::new(APPEND_LUA), append_with: Script::new(APPEND_WITH_LUA) })
    }

    /// Deletes every key of this backend's namespace; returns how many there were.
    /// For tearing down a test run or a tenant — never on a hot path.
    pub async fn clear_namespace(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .query_async(&mut conn)
                .await
                .map_err(|e| map_err(&self.prefix, e))?;
            if !keys.is_empty() {
                // One variadic UNLINK per page rather than a round trip per key; UNLINK
                // frees large values off the server's main thread.
                let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await.map_err(|e| map_err(&self.prefix, e))?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// The one place Redis errors become [`StoreError`]s. `key` is the caller's key (without
/// the namespace), for the message.
fn map_err(key: &str, e: RedisError) -> StoreError {
    // A name holding another kind of value (a value where a log was expected…) is a
    // layout error, not an outage; it also surfaces from inside the append script.
    let wrong_type = e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE");
    if wrong_type {
        return StoreError::Corrupt { key: key.to_owned(), reason: "holds a different kind of record".into() };
    }
    match e.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            StoreError::Corrupt { key: key.to_owned(), reason: e.to_string() }
        }
        // Everything else — refused or dropped connections, timeouts, auth, a server that
        // is loading or read-only — means the store cannot serve us right now.
        _ => StoreError::Unavailable(format!("redis: {e}")),
    }
}

/// Escapes the characters `SCAN MATCH` treats as a glob, so a prefix matches literally.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// TTL in whole milliseconds for `PX`: rounded up, and at least 1 because Redis refuses 0.
fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, i64::MAX as u64 / 2)
}

fn set_cmd(key: String, value: &[u8], ttl: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl_millis(ttl));
    }
    cmd
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET").arg(self.key(key)).query_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        // A SET without PX also clears an earlier TTL, matching the other backends.
        set_cmd(self.key(key), value, ttl).exec_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))
    }

    /// One round trip: a run's journal entries and the inputs they dispatch.
    async fn append_with(&self, log: &str, expected_len: u64, entries: &[Vec<u8>], puts: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if puts.is_empty() {
            return self.append(log, expected_len, entries).await;
        }
        let mut invocation = self.append_with.key(self.key(log));
        for (key, _) in puts {
            invocation.key(self.key(key));
        }
        invocation.arg(expected_len).arg(entries.len());
        for entry in entries {
            invocation.arg(entry.as_slice());
        }
        for (_, value) in puts {
            invocation.arg(value.as_slice());
        }
        let actual: u64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| map_err(log, e))?;
        if actual == expected_len {
            Ok(())
        } else {
            Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual })
        }
    }

    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        redis::cmd("LLEN").arg(self.key(log)).query_async(&mut self.conn.clone()).await.map_err(|e| map_err(log, e))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let Some(first) = keys.first() else { return Ok(Vec::new()) };
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        cmd.query_async(&mut self.conn.clone()).await.map_err(|e| map_err(first, e))
    }

    async fn put_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let Some((first, _)) = items.first() else { return Ok(()) };
        let mut pipe = redis::pipe();
        for (key, value) in items {
            pipe.add_command(set_cmd(self.key(key), value, None)).ignore();
        }
        pipe.exec_async(&mut self.conn.clone()).await.map_err(|e| map_err(first, e))
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError> {
        let mut cmd = set_cmd(self.key(key), value, ttl);
        cmd.arg("NX");
        let reply: Value = cmd.query_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))?;
        // OK when it wrote, nil when the key was taken.
        Ok(!matches!(reply, Value::Nil))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        redis::cmd("UNLINK").arg(self.key(key)).exec_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))
    }

    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut invocation = self.append.key(self.key(log));
        invocation.arg(expected_len);
        for entry in entries {
            invocation.arg(entry.as_slice());
        }
        // invoke_async sends EVALSHA and loads the script only if the server lacks it.
        let actual: u64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| map_err(log, e))?;
        if actual == expected_len {
            Ok(())
        } else {
            Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual })
        }
    }

    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        // LRANGE takes signed indexes where negatives count from the end; clamp so a huge
        // offset reads past the end (nothing) instead of wrapping around.
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        redis::cmd("LRANGE")
            .arg(self.key(log))
            .arg(from)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| map_err(log, e))
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        // Equal scores make Redis order members by their bytes, which is the order asked for.
        redis::cmd("ZADD")
            .arg(self.key(index))
            .arg(0)
            .arg(member)
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| map_err(index, e))
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        redis::cmd("ZREM").arg(self.key(index)).arg(member).exec_async(&mut self.conn.clone()).await.map_err(|e| map_err(index, e))
    }

    async fn index_page_desc(&self, index: &str, before: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        // Members share one score, so lexicographic ranges apply (byte order).
        let max = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        redis::cmd("ZREVRANGEBYLEX")
            .arg(self.key(index))
            .arg(max)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| map_err(index, e))
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        redis::cmd("ZRANGE")
            .arg(self.key(index))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| map_err(index, e))
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(&self.key(prefix)));
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .query_async(&mut conn)
                .await
                .map_err(|e| map_err(prefix, e))?;
            keys.extend(page.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice and in no particular order.
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("ns:run/1*?[a-b]\\^"), "ns:run/1\\*\\?\\[a\\-b\\]\\\\\\^");
    }

    #[test]
    fn ttls_round_up_to_a_whole_positive_millisecond() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(200)), 200);
        assert!(ttl_millis(Duration::MAX) < i64::MAX as u64);
    }
}
