//! [`RedisBackend`]: the engine's storage port on Redis, for fleets of processes sharing
//! one store.
//!
//! Layout, all under `"{namespace}:"` so tenants and test runs never see each other:
//! values are strings (`SET … PX` for TTLs, `SET NX` for first-writer-wins), logs are lists
//! appended by a Lua script that checks the length and pushes atomically, indexes are
//! sorted sets whose members all score 0 so `ZRANGE` returns them in byte order. Lease
//! records are strings in the shared layout (`tollgate_engine::store::lease`), read and
//! written by Lua scripts on the server's clock (`TIME`), so the hosts' clocks never matter.
//! A name is one Redis key, so a value, a log and an index must not share a name (the key
//! layout in `tollgate_engine::store::keys` guarantees it); if they do, the call fails as
//! [`StoreError::Corrupt`].

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script, Value};
use tollgate_engine::store::lease::{check_holder, fence_prefix, fenced};
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError};

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

/// `append_with`: the append above, then — only if it happened — SET each KEYS[3..] to its
/// value. KEYS[2] is the fencing lease (ignored when ARGV[3] is empty): the lease record must
/// start with ARGV[3] (`"{token} {holder} "`), else -1.
/// ARGV: expected length, number of entries, fence prefix, the entries, then one value per
/// extra key.
const APPEND_WITH_LUA: &str = r"
if ARGV[3] ~= '' then
  local lease = redis.call('GET', KEYS[2])
  if not lease or string.sub(lease, 1, #ARGV[3]) ~= ARGV[3] then
    return -1
  end
end
local len = redis.call('LLEN', KEYS[1])
if len ~= tonumber(ARGV[1]) then
  return len
end
local n = tonumber(ARGV[2])
local i = 4
while i <= n + 3 do
  local j = math.min(i + 999, n + 3)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
for k = 3, #KEYS do
  redis.call('SET', KEYS[k], ARGV[n + 1 + k])
end
return len
";

/// Lease records: `"{token} {holder} {expires_at_ms}"`, parsed by the scripts below, which
/// return -1 on a record they cannot read. Times are the server's (`TIME`; Redis ≥ 5
/// replicates a script's effects, so a non-deterministic call before a write is allowed).
const LEASE_LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function read(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local token, holder, expires = string.match(v, '^(%d+) (%S*) (%d+)$')
  if not token then return false end
  return { token = token, holder = holder, expires = tonumber(expires) }
end
local function write(key, token, holder, expires)
  redis.call('SET', key, token .. ' ' .. holder .. ' ' .. string.format('%d', expires))
end
";

/// KEYS[1] lease; ARGV: holder, ttl ms, holder and token of the grant to take over ('' for
/// none). Returns {1, holder, token} when granted, {0, holder, token} when held, -1 if corrupt.
/// Tokens are compared and incremented as decimal strings' numbers below 2^53.
const LEASE_ACQUIRE_LUA: &str = r"
local cur = read(KEYS[1])
if cur == false then return -1 end
local now = now_ms()
local token = 0
if cur then
  local free = cur.holder == '' or cur.expires <= now
  local named = ARGV[3] ~= '' and cur.holder == ARGV[3] and cur.token == ARGV[4]
  if not (free or named) then
    return { 0, cur.holder, cur.token }
  end
  token = tonumber(cur.token)
end
local next = string.format('%d', token + 1)
write(KEYS[1], next, ARGV[1], now + tonumber(ARGV[2]))
return { 1, ARGV[1], next }
";

/// KEYS[1] lease; ARGV: holder, token, ttl ms. 1 if renewed, 0 if not the current grant.
const LEASE_RENEW_LUA: &str = r"
local cur = read(KEYS[1])
if cur == false then return -1 end
if not cur or cur.holder == '' or cur.holder ~= ARGV[1] or cur.token ~= ARGV[2] then
  return 0
end
write(KEYS[1], cur.token, cur.holder, now_ms() + tonumber(ARGV[3]))
return 1
";

/// KEYS[1] lease; ARGV: holder, token. 1 if released, 0 if not the current grant.
const LEASE_RELEASE_LUA: &str = r"
local cur = read(KEYS[1])
if cur == false then return -1 end
if not cur or cur.holder == '' or cur.holder ~= ARGV[1] or cur.token ~= ARGV[2] then
  return 0
end
write(KEYS[1], cur.token, '', 0)
return 1
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
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
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
        let lease_script = |body: &str| Script::new(&format!("{LEASE_LUA_PRELUDE}{body}"));
        Ok(Self {
            conn,
            prefix: format!("{namespace}:"),
            append: Script::new(APPEND_LUA),
            append_with: Script::new(APPEND_WITH_LUA),
            lease_acquire: lease_script(LEASE_ACQUIRE_LUA),
            lease_renew: lease_script(LEASE_RENEW_LUA),
            lease_release: lease_script(LEASE_RELEASE_LUA),
        })
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
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| map_err(&self.prefix, e))?;
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

fn corrupt_lease(key: &str) -> StoreError {
    StoreError::Corrupt { key: key.to_owned(), reason: "not a lease record (`token holder expires_at_ms`)".into() }
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

    /// One round trip: a run's journal entries and the inputs they dispatch, fenced.
    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        if puts.is_empty() && fence.is_none() {
            return self.append(log, expected_len, entries).await;
        }
        let mut invocation = self.append_with.key(self.key(log));
        // Without a fence KEYS[2] is not read; the log's own name stands in for it.
        invocation.key(self.key(fence.map_or(log, |l| l.key.as_str())));
        for (key, _) in puts {
            invocation.key(self.key(key));
        }
        invocation.arg(expected_len).arg(entries.len()).arg(fence.map(fence_prefix).unwrap_or_default());
        for entry in entries {
            invocation.arg(entry.as_slice());
        }
        for (_, value) in puts {
            invocation.arg(value.as_slice());
        }
        let actual: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| map_err(log, e))?;
        match (u64::try_from(actual), fence) {
            (Ok(actual), _) if actual == expected_len => Ok(()),
            (Ok(actual), _) => Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual }),
            (Err(_), Some(lease)) => Err(fenced(lease)),
            (Err(_), None) => {
                Err(StoreError::Corrupt { key: log.to_owned(), reason: format!("append script answered {actual}") })
            }
        }
    }

    async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        over: Option<&Lease>,
    ) -> Result<LeaseGrant, StoreError> {
        check_holder(holder)?;
        let mut invocation = self.lease_acquire.key(self.key(key));
        invocation.arg(holder).arg(ttl_millis(ttl));
        match over {
            Some(l) => invocation.arg(&l.holder).arg(l.token.to_string()),
            None => invocation.arg("").arg(""),
        };
        let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))?;
        let (granted, holder, token): (i64, String, String) = match reply {
            Value::Int(-1) => return Err(corrupt_lease(key)),
            reply => redis::from_redis_value(reply).map_err(|e| map_err(key, e.into()))?,
        };
        let token = token.parse().map_err(|_| corrupt_lease(key))?;
        let lease = Lease { key: key.to_owned(), holder, token };
        Ok(if granted == 1 { LeaseGrant::Granted(lease) } else { LeaseGrant::Held(lease) })
    }

    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let key = &lease.key;
        let mut invocation = self.lease_renew.key(self.key(key));
        invocation.arg(&lease.holder).arg(lease.token.to_string()).arg(ttl_millis(ttl));
        match invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))? {
            1 => Ok(()),
            0 => Err(fenced(lease)),
            _ => Err(corrupt_lease(key)),
        }
    }

    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let key = &lease.key;
        let mut invocation = self.lease_release.key(self.key(key));
        invocation.arg(&lease.holder).arg(lease.token.to_string());
        match invocation.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(|e| map_err(key, e))? {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(corrupt_lease(key)),
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
        redis::cmd("ZREM")
            .arg(self.key(index))
            .arg(member)
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| map_err(index, e))
    }

    async fn index_page_desc(
        &self,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
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
