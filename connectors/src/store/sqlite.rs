//! [`SqliteBackend`]: the engine's storage port in one SQLite file — the embedded default,
//! no server to run.
//!
//! Three tables: `kv` (values, with an optional expiry in Unix milliseconds), `log`
//! (append-only logs, one row per entry numbered from 0) and `idx` (sorted id indexes).
//! Lease records are `kv` values (no `expires_at`: their expiry is inside the record), read
//! and written in one `BEGIN IMMEDIATE` transaction per operation; a fenced append checks the
//! record's prefix in the same statement or transaction as the length.
//! The file runs in WAL mode with `synchronous=NORMAL`: a commit survives the process being
//! killed (it is in the WAL, which the OS holds), though not a power cut in the last
//! moments — the trade that buys thousands of small commits per second.
//!
//! SQLite admits one writer at a time. Writers that contend for the file lock sleep in the
//! busy handler, so a backend opened with [`SqliteBackend::open`] queues its writes on a
//! single connection instead and reads on a small pool of others; WAL lets those reads run
//! alongside the write.
//!
//! Group commit: the hot single-statement writes — `put`, `put_many`, `put_if_absent` (a
//! worker's claim and outcome of every attempt) — go through one writer task that commits
//! whatever has queued up in one transaction, each write's answer sent only after that commit.
//! The batch runs as multi-row statements: the puts' items as one upsert, then the
//! put_if_absents as one insert whose `RETURNING` names the writes that took effect, each cut
//! into chunks of at most 64 rows (see `chunks`); a put after a put_if_absent of its key, or a
//! second put_if_absent of a key, starts another such pair (see `plan`), so every key's writes
//! keep their order and every caller gets the result it would have had alone. A batch of one
//! statement (a lone write) runs in autocommit mode. A burst from many workers shares one
//! commit and a handful of round trips to SQLite's thread instead of one per write; if the
//! commit fails, every write in it fails (as unavailable, which callers retry).
//! `append_with` writes its entries and puts as multi-row statements too.
//! A passive checkpoint beside the writer (see `checkpoint`) keeps SQLite's automatic one,
//! with its fsyncs, out of the commits.
//! A sweep (see `sweep`) removes expired values from the file every minute, as Redis expires
//! its keys, whichever process has the file open.

use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};
use tollgate_engine::store::lease::{LeaseRecord, check_holder, decide_acquire, decide_renew, fence_prefix, fenced};
use tollgate_engine::store::{Backend, Lease, LeaseGrant, StoreError};

/// Idempotent, so opening an existing file (or one apalis-sqlite shares) is harmless.
/// No `WITHOUT ROWID`: values reach a megabyte, and SQLite advises rowid tables for rows
/// that large.
const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NULL)",
    // Only values with an expiry are in it, so the journal's writes (none has one) never touch it.
    "CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS log (log TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (log, seq))",
    "CREATE TABLE IF NOT EXISTS idx (idx TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (idx, member))",
];

/// How long a connection waits for another process's write lock (apalis sharing the file,
/// a second engine) before the call fails as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections when the backend owns its pools.
const READERS: u32 = 4;

/// Most writes one group commit takes.
const MAX_GROUP: usize = 256;

/// How often the WAL is copied back into the database file (see `checkpoint`).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How often values whose expiry has passed are removed from the file (see `sweep`).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Most rows one sweep statement removes, so that it holds the write lock only briefly.
const SWEEP_BATCH: i64 = 512;

/// A [`Backend`] on one SQLite file. Cloning shares the pools and the group-commit writer.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    /// Writes (and the reads that must see the same snapshot as a write) go here.
    writer: SqlitePool,
    reader: SqlitePool,
    /// The group-commit writer's queue (see the module doc).
    writes: mpsc::UnboundedSender<Write>,
}

/// A write for the group-commit task; it answers once its commit is done.
#[derive(Debug)]
enum Write {
    /// Upsert every item (with one expiry) — `put`, `put_many`. Answers `true`.
    Put { items: Vec<(String, Vec<u8>)>, expires_at: Option<i64>, done: oneshot::Sender<Result<bool, String>> },
    /// Insert unless a live value is there — `put_if_absent`. Answers whether it was written.
    PutIfAbsent {
        key: String,
        value: Vec<u8>,
        expires_at: Option<i64>,
        now: i64,
        done: oneshot::Sender<Result<bool, String>>,
    },
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Write::Put { items, .. } => items.first().map_or("", |(k, _)| k.as_str()),
            Write::PutIfAbsent { key, .. } => key,
        }
    }

    fn answer(self, result: Result<bool, String>) {
        let (Write::Put { done, .. } | Write::PutIfAbsent { done, .. }) = self;
        // The caller may have stopped waiting; the write stands either way.
        let _ = done.send(result);
    }
}

/// A `kv` row to write: key, value, expiry.
type Row<'a> = (&'a str, &'a [u8], Option<i64>);

/// A claim to run: the put_if_absent's place in the batch, its row and its `now`.
type Claim<'a> = (usize, Row<'a>, i64);

/// Writes of a group commit that run together: the puts' items as one upsert, then the
/// claims (put_if_absents, of distinct keys) as one insert, each cut into chunks.
#[derive(Default)]
struct Segment<'a> {
    puts: Vec<Row<'a>>,
    claims: Vec<Claim<'a>>,
    /// The claims' keys.
    claimed: std::collections::HashSet<&'a str>,
}

impl Segment<'_> {
    fn statements(&self) -> usize {
        chunks(self.puts.len()).count() + chunks(self.claims.len()).count()
    }
}

/// Cuts a batch into segments. Within one, puts run before claims, so a write may run before
/// earlier writes of other keys — which nothing can tell: each row of a statement reads and
/// writes only its key's row, and no one sees the transaction until it commits. The writes of one
/// key keep their order: a put after a claim of its key, or a second claim of a key, starts
/// the next segment (a put before a claim of its key runs before it anyway, and the upsert
/// applies its rows in order). Distinct keys also let each `RETURNING` key name one write.
fn plan(batch: &[Write]) -> Vec<Segment<'_>> {
    let mut segments = vec![Segment::default()];
    for (i, write) in batch.iter().enumerate() {
        let mut current = segments.last_mut().expect("one segment at least");
        match write {
            Write::Put { items, expires_at, .. } => {
                if items.iter().any(|(key, _)| current.claimed.contains(key.as_str())) {
                    segments.push(Segment::default());
                    current = segments.last_mut().expect("just pushed");
                }
                current.puts.extend(items.iter().map(|(key, value)| (key.as_str(), value.as_slice(), *expires_at)));
            }
            Write::PutIfAbsent { key, value, expires_at, now, .. } => {
                if current.claimed.contains(key.as_str()) {
                    segments.push(Segment::default());
                    current = segments.last_mut().expect("just pushed");
                }
                current.claimed.insert(key.as_str());
                current.claims.push((i, (key.as_str(), value.as_slice(), *expires_at), *now));
            }
        }
    }
    segments
}

/// Commits queued writes in batches until every handle to the backend is gone.
async fn group_commit(pool: SqlitePool, mut queued: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut batch, MAX_GROUP).await > 0 {
        match commit(&pool, &batch).await {
            Ok(results) => batch.drain(..).zip(results).for_each(|(w, r)| w.answer(Ok(r))),
            Err(e) => {
                let e = match e {
                    StoreError::Unavailable(why) => why,
                    other => other.to_string(),
                };
                batch.drain(..).for_each(|w| w.answer(Err(e.clone())));
            }
        }
    }
}

async fn commit(pool: &SqlitePool, batch: &[Write]) -> Result<Vec<bool>, StoreError> {
    let key = batch.first().map_or("", Write::key);
    let segments = plan(batch);
    // A put answers `true`; a put_if_absent, whether its key came back.
    let mut results: Vec<bool> = batch.iter().map(|w| matches!(w, Write::Put { .. })).collect();
    let mut conn = pool.acquire().await.map_err(|e| map_err(key, e))?;
    // One statement is atomic by itself, so it runs in autocommit mode: BEGIN and COMMIT
    // would be two more round trips to the connection's thread on the idle path.
    if segments.iter().map(Segment::statements).sum::<usize>() <= 1 {
        execute(&mut conn, &segments, &mut results).await?;
        return Ok(results);
    }
    // IMMEDIATE takes the write lock at BEGIN (another process may share the file).
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| map_err(key, e))?;
    execute(&mut tx, &segments, &mut results).await?;
    tx.commit().await.map_err(|e| map_err(key, e))?;
    Ok(results)
}

async fn execute(
    conn: &mut sqlx::SqliteConnection,
    segments: &[Segment<'_>],
    results: &mut [bool],
) -> Result<(), StoreError> {
    for segment in segments {
        upsert_rows(conn, &segment.puts).await?;
        put_if_absent_rows(conn, &segment.claims, results).await?;
    }
    Ok(())
}

/// Most rows one multi-row statement takes.
const MAX_ROWS: usize = 64;

/// Chunk sizes a statement is built for: 1, 2, 4, … `MAX_ROWS`.
const SIZES: usize = MAX_ROWS.trailing_zeros() as usize + 1;

/// The sizes `n` rows are cut into, in order: `MAX_ROWS` while that many are left, then the
/// powers of two of the rest, largest first. A different row count is a different SQL text,
/// which sqlx prepares and caches per connection; this keeps that to `SIZES` texts a statement.
fn chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (n > 0).then(|| {
            let size = MAX_ROWS.min(1 << n.ilog2());
            n -= size;
            size
        })
    })
}

/// `n` rows of `per_row` placeholders for a `VALUES` list: `(?, ?, ?), (?, ?, ?)…`.
fn values_rows(n: usize, per_row: usize) -> String {
    let row = format!("({})", vec!["?"; per_row].join(", "));
    vec![row; n].join(", ")
}

/// A statement's text for each chunk size, built once.
struct Texts([String; SIZES]);

impl Texts {
    /// `text` makes the statement from its `VALUES` rows (`per_row` placeholders each).
    fn new(per_row: usize, text: impl Fn(&str) -> String) -> Self {
        Self(std::array::from_fn(|i| text(&values_rows(1 << i, per_row))))
    }

    /// The text for `rows` rows, a size from [`chunks`].
    fn get(&'static self, rows: usize) -> &'static str {
        &self.0[rows.trailing_zeros() as usize]
    }
}

/// Upserts rows (key, value, expires_at). SQLite inserts a `VALUES` list's rows in order and
/// an upsert sees the rows its own statement wrote, so a later row of a key wins.
static UPSERT: LazyLock<Texts> = LazyLock::new(|| {
    Texts::new(3, |rows| {
        format!(
            "INSERT INTO kv (key, value, expires_at) VALUES {rows} \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
        )
    })
});

/// Inserts rows (key, value, expires_at, now) of distinct keys, taking a key's row over only if
/// it has expired by that row's own `now`, and returns the keys written. Each write of a batch
/// carries its own `now` (when its caller asked), which the `WHERE` of `DO UPDATE` cannot take
/// from a `VALUES` row directly: `excluded` has only `kv`'s columns. So the rows are a CTE and
/// the `WHERE` looks the row's `now` up by its key (distinct within a statement) — the same
/// check, row by row, as one statement per write.
static PUT_IF_ABSENT: LazyLock<Texts> = LazyLock::new(|| {
    let mut texts = Texts::new(4, |rows| {
        format!(
            "WITH claim (key, value, expires_at, now) AS (VALUES {rows}) \
             INSERT INTO kv (key, value, expires_at) SELECT key, value, expires_at FROM claim WHERE true \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at \
             WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= (SELECT now FROM claim WHERE claim.key = excluded.key) \
             RETURNING key"
        )
    });
    // One row (a lone claim: the idle path) needs no CTE, and SQLite runs the plain statement
    // in less than half the time. The same placeholders, in the same order.
    texts.0[0] = "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) \
                  ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at \
                  WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ? RETURNING key"
        .into();
    texts
});

/// Appends rows (log, seq, value).
static APPEND: LazyLock<Texts> =
    LazyLock::new(|| Texts::new(3, |rows| format!("INSERT INTO log (log, seq, value) VALUES {rows}")));

/// Upserts `rows` in order, in as few statements as [`chunks`] allows.
async fn upsert_rows(conn: &mut sqlx::SqliteConnection, rows: &[Row<'_>]) -> Result<(), StoreError> {
    let mut rest = rows;
    for size in chunks(rows.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut query = sqlx::query(UPSERT.get(size));
        for &(key, value, expires_at) in chunk {
            query = query.bind(key).bind(value).bind(expires_at);
        }
        query.execute(&mut *conn).await.map_err(|e| map_err(chunk[0].0, e))?;
    }
    Ok(())
}

/// Runs `claims` (of distinct keys), marking in `results` the writes that took effect.
async fn put_if_absent_rows(
    conn: &mut sqlx::SqliteConnection,
    claims: &[Claim<'_>],
    results: &mut [bool],
) -> Result<(), StoreError> {
    let mut rest = claims;
    for size in chunks(claims.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let first = chunk[0].1.0;
        let mut query = sqlx::query_scalar::<_, String>(PUT_IF_ABSENT.get(size));
        for &(_, (key, value, expires_at), now) in chunk {
            query = query.bind(key).bind(value).bind(expires_at).bind(now);
        }
        for key in query.fetch_all(&mut *conn).await.map_err(|e| map_err(first, e))? {
            if let Some(&(i, ..)) = chunk.iter().find(|(_, (k, ..), _)| *k == key) {
                results[i] = true;
            }
        }
    }
    Ok(())
}

/// Checkpoints the WAL from a connection of its own, passively, so that SQLite's automatic
/// checkpoint (run inside whichever commit crosses 1,000 WAL pages, with its fsyncs) does not
/// stall the writer and every write queued behind it. Ends when the backend is gone.
async fn checkpoint(mut conn: sqlx::SqliteConnection, alive: mpsc::WeakUnboundedSender<Write>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if alive.upgrade().is_none() {
            let _ = conn.close().await;
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
            tracing::debug!(error = %e, "store WAL checkpoint failed");
        }
    }
}

/// Removes the values whose expiry has passed, every `every`, for as long as the backend
/// lives: the file reclaims them as Redis reclaims its expired keys, whichever process runs
/// (reads already treat them as absent). A short statement at a time, between group commits.
async fn sweep(pool: SqlitePool, every: Duration, alive: mpsc::WeakUnboundedSender<Write>) {
    loop {
        tokio::time::sleep(every).await;
        if alive.upgrade().is_none() {
            return;
        }
        match sweep_expired(&pool, now_ms()).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "expired store values removed"),
            Err(e) => tracing::debug!(error = %e, "could not remove expired store values; next time"),
        }
    }
}

/// Removes every value that expired by `now`, in statements of at most [`SWEEP_BATCH`] rows;
/// returns how many went.
async fn sweep_expired(pool: &SqlitePool, now: i64) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let done = sqlx::query("DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE expires_at <= ?1 LIMIT ?2)")
            .bind(now)
            .bind(SWEEP_BATCH)
            .execute(pool)
            .await
            .map_err(|e| map_err("kv", e))?;
        removed += done.rows_affected();
        if done.rows_affected() < SWEEP_BATCH as u64 {
            return Ok(removed);
        }
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and its tables.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_sweeping_every(path, SWEEP_EVERY).await
    }

    /// [`SqliteBackend::open`], removing expired values every `every` instead of every minute.
    pub async fn open_sweeping_every(path: &Path, every: Duration) -> Result<Self, StoreError> {
        let options = connect_options(path);
        let writer = Self::pool_options()
            .max_connections(1)
            // Keep the writer open: reopening costs a file open and the pragmas.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|e| map_err(&path.display().to_string(), e))?;
        create_tables(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.clone())
            .await
            .map_err(|e| map_err(&path.display().to_string(), e))?;
        let checkpointer =
            sqlx::ConnectOptions::connect(&options).await.map_err(|e| map_err(&path.display().to_string(), e))?;
        let backend = Self::with_pools(writer, reader, every);
        tokio::spawn(checkpoint(checkpointer, backend.writes.downgrade()));
        Ok(backend)
    }

    /// The backend on its pools, with its group-commit writer and its sweep running.
    fn with_pools(writer: SqlitePool, reader: SqlitePool, sweep_every: Duration) -> Self {
        let (writes, queued) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(writer.clone(), queued));
        tokio::spawn(sweep(writer.clone(), sweep_every, writes.downgrade()));
        Self { writer, reader, writes }
    }

    /// Queue `write` for the next group commit and wait for its answer.
    async fn write(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<bool, String>>) -> Write,
    ) -> Result<bool, StoreError> {
        let (done, committed) = oneshot::channel();
        let closed = || StoreError::Unavailable("sqlite: the store's writer has stopped".into());
        self.writes.send(write(done)).map_err(|_| closed())?;
        committed.await.map_err(|_| closed())?.map_err(StoreError::Unavailable)
    }

    /// Uses `pool` for reads and writes — for sharing one file with the apalis-sqlite
    /// queue — and creates the tables if missing.
    ///
    /// The pool's connect options are the caller's: for the durability and concurrency
    /// promised above, give it WAL, `synchronous=NORMAL` (apalis's `setup()` turns it off on
    /// its connection) and a busy timeout; this backend issues no per-call PRAGMA.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        create_tables(&pool).await?;
        Ok(Self::with_pools(pool.clone(), pool, SWEEP_EVERY))
    }

    /// A pool on `path` configured as this backend needs it (WAL, `synchronous=NORMAL`,
    /// busy timeout), for sharing one file with apalis-sqlite through
    /// [`SqliteBackend::from_pool`].
    pub async fn shared_pool(path: &Path) -> Result<SqlitePool, StoreError> {
        Self::pool_options()
            .max_connections(READERS)
            .connect_with(connect_options(path))
            .await
            .map_err(|e| map_err(&path.display().to_string(), e))
    }

    /// Closes the connections, checkpointing the WAL; calls made afterwards fail as
    /// unavailable. Dropping the backend without closing loses nothing committed.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Length of `log` as the writer sees it.
    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        let len: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM log WHERE log = ?1")
            .bind(log)
            .fetch_one(&self.writer)
            .await
            .map_err(|e| map_err(log, e))?;
        Ok(len as u64)
    }
}

impl SqliteBackend {
    /// Pool options for connections that write to a store file (this backend's writer, a
    /// [`SqliteBackend::shared_pool`]): a connection that comes back to the pool still counted
    /// as inside a transaction is closed instead of reused, and the pool opens a fresh one.
    ///
    /// Every transaction here ends — committed, or rolled back by dropping it — before its
    /// connection goes back, so that count should be zero. It is not when SQLite ended the
    /// transaction by itself: after an error inside one (a full disk, an I/O error) SQLite
    /// may roll it back automatically, the ROLLBACK that sqlx then sends fails ("no
    /// transaction is active"), and sqlx keeps counting the transaction as open (it says so:
    /// automatic rollbacks may not be counted). On that connection every later `BEGIN
    /// IMMEDIATE` was refused for good ("attempted to call begin_with at non-zero transaction
    /// depth") while plain statements still worked: once the disk had room again, leases could
    /// not be renewed or taken nor journals appended, while heartbeats and outcomes were
    /// written — runs stalled with nothing failing loudly. Closing the connection ends that
    /// with the outage.
    pub fn pool_options() -> SqlitePoolOptions {
        SqlitePoolOptions::new().after_release(|conn, _meta| {
            Box::pin(async move {
                // The common case, a transaction committed (or none): nothing to wait for.
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                // The rollback of a transaction dropped on an error may still be queued on the
                // connection's thread: let it run before reading the count again.
                conn.ping().await?;
                if conn.is_in_transaction() {
                    tracing::debug!("closing a store connection that SQLite took out of its transaction by itself (after a write error)");
                    return Ok(false);
                }
                Ok(true)
            })
        })
    }
}

fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // Applied once per connection when it opens, never per call.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
}

async fn create_tables(pool: &SqlitePool) -> Result<(), StoreError> {
    for statement in SCHEMA {
        sqlx::query(statement).execute(pool).await.map_err(|e| map_err("schema", e))?;
    }
    Ok(())
}

/// The one place sqlx errors become [`StoreError`]s. `key` names the record, for the message.
fn map_err(key: &str, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt { key: key.to_owned(), reason: e.to_string() }
        }
        // Locked or busy past the timeout, an I/O error, a full disk, a closed pool: the
        // store cannot serve us right now.
        _ => StoreError::Unavailable(format!("sqlite ({key}): {e}")),
    }
}

/// Now, in the Unix milliseconds `expires_at` is kept in (wall clock, because the file
/// outlives the process).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn expires_at(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

fn to_i64(n: u64) -> i64 {
    // Offsets and lengths beyond i64 cannot exist in a table; saturating keeps them
    // "past the end" rather than negative.
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqliteBackend {
    /// Append `entries` (checking the fence, then the length) and write `puts`, in one transaction.
    async fn append_tx(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock at BEGIN: a deferred transaction that read first could
        // fail on upgrade (SQLITE_BUSY_SNAPSHOT) when another process committed in between,
        // without waiting for the busy timeout.
        let mut conn = self.writer.acquire().await.map_err(|e| map_err(log, e))?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| map_err(log, e))?;
        if let Some(lease) = fence
            && !read_lease(&mut tx, &lease.key, now_ms()).await?.is_some_and(|r| r.holds(lease))
        {
            return Err(fenced(lease));
        }
        let actual: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM log WHERE log = ?1")
            .bind(log)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| map_err(log, e))?;
        if actual as u64 != expected_len {
            // Dropping the transaction rolls it back.
            return Err(StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual: actual as u64 });
        }
        let mut rest = entries;
        let mut seq = actual;
        for size in chunks(entries.len()) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut query = sqlx::query(APPEND.get(size));
            for entry in chunk {
                query = query.bind(log).bind(seq).bind(entry.as_slice());
                seq += 1;
            }
            query.execute(&mut *tx).await.map_err(|e| map_err(log, e))?;
        }
        upsert(&mut tx, puts).await?;
        tx.commit().await.map_err(|e| map_err(log, e))
    }
}

/// The live lease record under `key`, read inside a transaction.
async fn read_lease(tx: &mut sqlx::SqliteConnection, key: &str, now: i64) -> Result<Option<LeaseRecord>, StoreError> {
    let value: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)")
            .bind(key)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_err(key, e))?;
    value.map(|v| LeaseRecord::decode(key, &v)).transpose()
}

/// Write a lease record (no store TTL: its expiry is inside) within a transaction.
async fn write_lease(tx: &mut sqlx::SqliteConnection, key: &str, record: &LeaseRecord) -> Result<(), StoreError> {
    upsert(tx, &[(key.to_owned(), record.encode())]).await
}

/// Write values without TTL inside a transaction (multi-row, see [`upsert_rows`]).
async fn upsert(tx: &mut sqlx::SqliteConnection, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    let rows: Vec<Row<'_>> = items.iter().map(|(key, value)| (key.as_str(), value.as_slice(), None)).collect();
    upsert_rows(tx, &rows).await
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = now_ms();
        let row = sqlx::query("SELECT value, expires_at FROM kv WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| map_err(key, e))?;
        let Some(row) = row else { return Ok(None) };
        let expires: Option<i64> = row.try_get(1).map_err(|e| map_err(key, e))?;
        if expires.is_some_and(|at| at <= now) {
            // Lazy removal. The condition re-checks expiry so a fresh value written since
            // the read survives; a failure here only delays the cleanup.
            let removed = sqlx::query("DELETE FROM kv WHERE key = ?1 AND expires_at <= ?2")
                .bind(key)
                .bind(now)
                .execute(&self.writer)
                .await;
            if let Err(e) = removed {
                tracing::debug!(key, error = %e, "could not remove an expired value");
            }
            return Ok(None);
        }
        row.try_get(0).map(Some).map_err(|e| map_err(key, e))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let expires_at = expires_at(now_ms(), ttl);
        self.write(|done| Write::Put { items: vec![(key.to_owned(), value.to_vec())], expires_at, done }).await?;
        Ok(())
    }

    async fn append_with(
        &self,
        log: &str,
        expected_len: u64,
        entries: &[Vec<u8>],
        puts: &[(String, Vec<u8>)],
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        match (fence, entries, puts.is_empty()) {
            (None, _, true) => self.append(log, expected_len, entries).await,
            // The journal's common case — one event, nothing dispatched — in one statement, as
            // in `append`, with the lease record's prefix checked beside the length.
            (Some(lease), [entry], true) => {
                let prefix = fence_prefix(lease);
                let done = sqlx::query(
                    "INSERT INTO log (log, seq, value) SELECT ?1, ?2, ?3 \
                     WHERE (SELECT COALESCE(MAX(seq) + 1, 0) FROM log WHERE log = ?1) = ?2 \
                     AND EXISTS (SELECT 1 FROM kv WHERE key = ?4 AND substr(value, 1, ?5) = ?6)",
                )
                .bind(log)
                .bind(to_i64(expected_len))
                .bind(entry.as_slice())
                .bind(&lease.key)
                .bind(prefix.len() as i64)
                .bind(prefix.as_slice())
                .execute(&self.writer)
                .await
                .map_err(|e| map_err(log, e))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                // Refused: say why (the fence first, as the transaction would).
                let mut conn = self.writer.acquire().await.map_err(|e| map_err(log, e))?;
                if !read_lease(&mut conn, &lease.key, now_ms()).await?.is_some_and(|r| r.holds(lease)) {
                    return Err(fenced(lease));
                }
                drop(conn);
                Err(StoreError::Conflict {
                    log: log.to_owned(),
                    expected: expected_len,
                    actual: self.log_len(log).await?,
                })
            }
            _ => self.append_tx(log, expected_len, entries, puts, fence).await,
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
        let mut conn = self.writer.acquire().await.map_err(|e| map_err(key, e))?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| map_err(key, e))?;
        let now = now_ms();
        let current = read_lease(&mut tx, key, now).await?;
        match decide_acquire(key, current, holder, ttl, over, u64::try_from(now).unwrap_or(0)) {
            Ok(record) => {
                write_lease(&mut tx, key, &record).await?;
                tx.commit().await.map_err(|e| map_err(key, e))?;
                Ok(LeaseGrant::Granted(Lease { key: key.to_owned(), holder: record.holder, token: record.token }))
            }
            Err(held) => Ok(LeaseGrant::Held(held)),
        }
    }

    async fn lease_renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let key = &lease.key;
        let mut conn = self.writer.acquire().await.map_err(|e| map_err(key, e))?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| map_err(key, e))?;
        let now = now_ms();
        let current = read_lease(&mut tx, key, now).await?;
        let record = decide_renew(current, lease, ttl, u64::try_from(now).unwrap_or(0))?;
        write_lease(&mut tx, key, &record).await?;
        tx.commit().await.map_err(|e| map_err(key, e))
    }

    async fn lease_release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let key = &lease.key;
        let mut conn = self.writer.acquire().await.map_err(|e| map_err(key, e))?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| map_err(key, e))?;
        match read_lease(&mut tx, key, now_ms()).await? {
            Some(record) if record.holds(lease) => {
                write_lease(&mut tx, key, &LeaseRecord { holder: String::new(), expires_at_ms: 0, ..record }).await?;
                tx.commit().await.map_err(|e| map_err(key, e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn log_len(&self, log: &str) -> Result<u64, StoreError> {
        SqliteBackend::log_len(self, log).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let Some(first) = keys.first() else { return Ok(Vec::new()) };
        let placeholders = vec!["?"; keys.len()].join(", ");
        let sql = format!(
            "SELECT key, value FROM kv WHERE key IN ({placeholders}) AND (expires_at IS NULL OR expires_at > ?)"
        );
        // Only `?` placeholders are generated; every key is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in keys {
            query = query.bind(key);
        }
        let rows = query.bind(now_ms()).fetch_all(&self.reader).await.map_err(|e| map_err(first, e))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(|e| map_err(first, e))?;
            let value: Vec<u8> = row.try_get(1).map_err(|e| map_err(&key, e))?;
            found.insert(key, value);
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn put_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(|done| Write::Put { items: items.to_vec(), expires_at: None, done }).await?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires_at = expires_at(now, ttl);
        self.write(|done| Write::PutIfAbsent { key: key.to_owned(), value: value.to_vec(), expires_at, now, done })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // A name means the same thing on every backend: deleting it removes its value, log
        // or index, whichever it is (Redis has one keyspace for all three).
        let mut tx = self.writer.begin().await.map_err(|e| map_err(key, e))?;
        for statement in
            ["DELETE FROM kv WHERE key = ?1", "DELETE FROM log WHERE log = ?1", "DELETE FROM idx WHERE idx = ?1"]
        {
            sqlx::query(statement).bind(key).execute(&mut *tx).await.map_err(|e| map_err(key, e))?;
        }
        tx.commit().await.map_err(|e| map_err(key, e))
    }

    async fn append(&self, log: &str, expected_len: u64, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        let conflict = |actual| StoreError::Conflict { log: log.to_owned(), expected: expected_len, actual };
        match entries {
            [] => {
                let actual = self.log_len(log).await?;
                if actual == expected_len { Ok(()) } else { Err(conflict(actual)) }
            }
            // The journal's common case — one event — in one statement: SQLite takes the
            // write lock before the statement reads, so the length check and the insert are
            // atomic without a transaction's extra round trips.
            [entry] => {
                let done = sqlx::query(
                    "INSERT INTO log (log, seq, value) SELECT ?1, ?2, ?3 \
                     WHERE (SELECT COALESCE(MAX(seq) + 1, 0) FROM log WHERE log = ?1) = ?2",
                )
                .bind(log)
                .bind(to_i64(expected_len))
                .bind(entry.as_slice())
                .execute(&self.writer)
                .await
                .map_err(|e| map_err(log, e))?;
                if done.rows_affected() == 1 { Ok(()) } else { Err(conflict(self.log_len(log).await?)) }
            }
            _ => self.append_tx(log, expected_len, entries, &[], None).await,
        }
    }

    async fn read_log(&self, log: &str, from: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT value FROM log WHERE log = ?1 AND seq >= ?2 ORDER BY seq")
            .bind(log)
            .bind(to_i64(from))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| map_err(log, e))
    }

    async fn index_add(&self, index: &str, member: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO idx (idx, member) VALUES (?1, ?2)")
            .bind(index)
            .bind(member)
            .execute(&self.writer)
            .await
            .map_err(|e| map_err(index, e))?;
        Ok(())
    }

    async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idx WHERE idx = ?1 AND member = ?2")
            .bind(index)
            .bind(member)
            .execute(&self.writer)
            .await
            .map_err(|e| map_err(index, e))?;
        Ok(())
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        // TEXT compares with the BINARY collation: byte order, as Redis and BTreeMap sort.
        sqlx::query_scalar("SELECT member FROM idx WHERE idx = ?1 ORDER BY member")
            .bind(index)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| map_err(index, e))
    }

    async fn index_page_desc(
        &self,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // The primary key (idx, member) serves the range and the order.
        sqlx::query_scalar(
            "SELECT member FROM idx WHERE idx = ?1 AND (?2 IS NULL OR member < ?2) ORDER BY member DESC LIMIT ?3",
        )
        .bind(index)
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| map_err(index, e))
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        // `prefix <= key < prefix || x'F4908080'` holds exactly for the keys that start with
        // `prefix`: no valid UTF-8 continues with those bytes (they would encode a code point
        // above U+10FFFF). Unlike LIKE it uses the primary-key index and has no wildcards to
        // escape. Expired values are left out here and removed by the sweep, so a scan only reads.
        // Names of values, logs and indexes alike, as Redis lists its one keyspace; UNION
        // removes duplicates.
        sqlx::query_scalar(
            "SELECT key FROM kv WHERE key >= ?1 AND key < ?1 || x'F4908080' AND (expires_at IS NULL OR expires_at > ?2) \
             UNION SELECT log FROM log WHERE log >= ?1 AND log < ?1 || x'F4908080' \
             UNION SELECT idx FROM idx WHERE idx >= ?1 AND idx < ?1 || x'F4908080' \
             ORDER BY 1",
        )
        .bind(prefix)
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(|e| map_err(prefix, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    /// The writer's file may grow by no page beyond what it has now (SQLite answers as on a full
    /// disk: SQLITE_FULL, "database or disk is full"), or again as far as SQLite allows.
    async fn set_full(backend: &SqliteBackend, full: bool) {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&backend.writer).await.unwrap();
        let max = if full { pages } else { 1_073_741_823 };
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {max}")))
            .execute(&backend.writer)
            .await
            .unwrap();
    }

    /// After a full disk, transactions work again once there is room: SQLite rolls a
    /// transaction back by itself on SQLITE_FULL, and the writer connection used to keep
    /// sqlx's count of an open transaction, refusing every later `BEGIN IMMEDIATE` (lease
    /// renewals, takeovers, fenced appends) for good while plain writes went through.
    #[tokio::test]
    async fn leases_and_appends_work_again_after_the_disk_was_full() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        let LeaseGrant::Granted(lease) = backend.lease_acquire("run/r/lease", "holder", TTL, None).await.unwrap()
        else {
            panic!("a free lease")
        };
        set_full(&backend, true).await;
        let big = vec![7u8; 256 * 1024];
        let puts = [("run/r/in/a/1".to_string(), big.clone())];
        let refused =
            backend.append_with("run/r/journal", 0, std::slice::from_ref(&big), &puts, Some(&lease)).await.unwrap_err();
        assert!(matches!(&refused, StoreError::Unavailable(m) if m.contains("full")), "{refused}");
        set_full(&backend, false).await;
        backend.lease_renew(&lease, TTL).await.expect("the lease renews once there is room");
        backend
            .append_with("run/r/journal", 0, std::slice::from_ref(&big), &puts, Some(&lease))
            .await
            .expect("the append succeeds once there is room");
        assert_eq!(backend.read_log("run/r/journal", 0).await.unwrap(), std::slice::from_ref(&big));
        assert_eq!(backend.get("run/r/in/a/1").await.unwrap(), Some(big));
        assert!(backend.lease_release(&lease).await.unwrap());
    }

    /// Every key in the file, expired or not.
    async fn keys_in_file(backend: &SqliteBackend) -> Vec<String> {
        sqlx::query_scalar("SELECT key FROM kv ORDER BY key").fetch_all(&backend.reader).await.unwrap()
    }

    /// A sweep removes exactly the values whose expiry has passed — under any prefix, in as
    /// many bounded statements as it takes — and nothing else.
    #[tokio::test]
    async fn a_sweep_removes_every_expired_value_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        let hour = Some(Duration::from_secs(3600));
        let writes = (0..700).map(|i| {
            let (backend, key) = (backend.clone(), format!("imap/box/{i:04}"));
            async move { backend.put(&key, b"seen", hour).await }
        });
        futures::future::try_join_all(writes).await.unwrap();
        assert!(backend.put_if_absent("trig/wf/claim/k", b"claim", hour).await.unwrap());
        backend.put("trig/wf/fire/f", b"record", Some(Duration::from_secs(3 * 3600))).await.unwrap();
        backend.put("run/r/state", b"no expiry", None).await.unwrap();
        assert_eq!(keys_in_file(&backend).await.len(), 703);

        assert_eq!(sweep_expired(&backend.writer, now_ms()).await.unwrap(), 0, "nothing has expired yet");
        let in_two_hours = now_ms() + 2 * 3600 * 1000;
        assert_eq!(sweep_expired(&backend.writer, in_two_hours).await.unwrap(), 701);
        assert_eq!(keys_in_file(&backend).await, ["run/r/state", "trig/wf/fire/f"]);
    }

    /// Expired values leave the file on their own, with nobody reading them (a read would
    /// remove one too) and no caller asking for a purge.
    #[tokio::test]
    async fn expired_values_leave_the_file_unread() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            SqliteBackend::open_sweeping_every(&dir.path().join("store.db"), Duration::from_millis(50)).await.unwrap();
        let soon = Some(Duration::from_millis(100));
        backend.put("imap/box/1/7", b"seen", soon).await.unwrap();
        backend.put_if_absent("trig/wf/claim/k", b"claim", soon).await.unwrap();
        backend.put("run/r/state", b"no expiry", None).await.unwrap();
        let swept = async {
            while keys_in_file(&backend).await != ["run/r/state"] {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), swept)
            .await
            .expect("the expired values are removed from the file");
    }

    /// What a test asks of the store, for a model to answer in sequence.
    enum Op {
        Claim(String, Option<Duration>),
        Put(Vec<String>),
    }

    /// 200 writes issued at once share one group commit (the runtime has one thread, and the
    /// writer task runs only once all are queued), and each caller gets the answer it would
    /// have had in sequence: one winner per key, an expired value taken over, a put after the
    /// claims winning, later items of a key winning — across every statement kind and chunk.
    #[tokio::test]
    async fn a_burst_of_claims_and_puts_answers_as_in_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        // `k0` expired long ago, `k1` lives for ever.
        sqlx::query("INSERT INTO kv (key, value, expires_at) VALUES ('k0', x'00', 1), ('k1', x'01', NULL)")
            .execute(&backend.writer)
            .await
            .unwrap();
        let ops: Vec<Op> = (0..200)
            .map(|i| match i {
                // Claims of 30 keys, three rounds: the repeats start new segments.
                0..90 => Op::Claim(format!("k{}", i % 30), Some(TTL)),
                // Puts of 40 keys, 80 rows (chunks of 64 and 16), later rows of a key winning.
                90..170 => Op::Put(vec![format!("k{}", i % 40)]),
                // Claims that expire at once (the next claim of the key takes over), then live ones.
                170..174 => Op::Claim("z".into(), Some(Duration::ZERO)),
                174..176 => Op::Claim("z".into(), None),
                // Claims and put_manys of the same keys, interleaved.
                _ if i % 2 == 0 => Op::Claim(format!("t{}", i % 6), Some(TTL)),
                _ => Op::Put(vec![format!("t{}", (i + 1) % 6), format!("u{i}")]),
            })
            .collect();

        let mut model: std::collections::HashMap<String, (Vec<u8>, bool)> =
            [("k0".into(), (vec![0], false)), ("k1".into(), (vec![1], true))].into();
        let expected: Vec<bool> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Claim(key, ttl) => {
                    let free = !model.get(key).is_some_and(|(_, live)| *live);
                    if free {
                        model.insert(key.clone(), (format!("v{i}").into_bytes(), *ttl != Some(Duration::ZERO)));
                    }
                    free
                }
                Op::Put(keys) => {
                    for key in keys {
                        model.insert(key.clone(), (format!("v{i}").into_bytes(), true));
                    }
                    true
                }
            })
            .collect();

        let mut calls: Vec<std::pin::Pin<Box<dyn Future<Output = bool> + Send>>> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                let backend = backend.clone();
                let value = format!("v{i}").into_bytes();
                Box::pin(async move {
                    match op {
                        Op::Claim(key, ttl) => backend.put_if_absent(&key, &value, ttl).await.unwrap(),
                        Op::Put(keys) => {
                            let items: Vec<_> = keys.into_iter().map(|k| (k, value.clone())).collect();
                            match items.as_slice() {
                                [(key, value)] => backend.put(key, value, None).await.unwrap(),
                                _ => backend.put_many(&items).await.unwrap(),
                            }
                            true
                        }
                    }
                }) as std::pin::Pin<Box<dyn Future<Output = bool> + Send>>
            })
            .collect();
        // Queue every write, in order, before the writer task runs.
        for call in &mut calls {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        let answers = futures::future::join_all(calls).await;
        assert_eq!(answers, expected);
        // k2..k29 and k0 (expired) once, the 80 puts, z five times, 12 put_manys, t2 once.
        assert_eq!(expected.iter().filter(|won| **won).count(), 29 + 80 + 5 + 12 + 1, "the model's winners");
        for (key, (value, live)) in model {
            let read = backend.get(&key).await.unwrap();
            assert_eq!(read, live.then_some(value), "{key}");
        }
    }

    /// A lone put_if_absent (one autocommit statement) takes over a value whose expiry has
    /// passed, and not a live one.
    #[tokio::test]
    async fn put_if_absent_takes_over_only_an_expired_value() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        sqlx::query("INSERT INTO kv (key, value, expires_at) VALUES ('old', x'00', ?1), ('live', x'01', ?2)")
            .bind(now_ms() - 1)
            .bind(now_ms() + 60_000)
            .execute(&backend.writer)
            .await
            .unwrap();
        assert!(backend.put_if_absent("old", b"new", Some(TTL)).await.unwrap());
        assert_eq!(backend.get("old").await.unwrap(), Some(b"new".to_vec()));
        assert!(!backend.put_if_absent("old", b"newer", Some(TTL)).await.unwrap());
        assert!(!backend.put_if_absent("live", b"new", None).await.unwrap());
        assert_eq!(backend.get("live").await.unwrap(), Some(vec![1]));
    }

    /// A fenced `append_with` of 300 entries and 300 puts (several multi-row chunks each) reads
    /// back in order, a later put of a key winning; the length check still guards the next one.
    #[tokio::test]
    async fn append_with_many_entries_and_puts_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
        let LeaseGrant::Granted(lease) = backend.lease_acquire("run/r/lease", "holder", TTL, None).await.unwrap()
        else {
            panic!("a free lease")
        };
        let entries: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut puts: Vec<(String, Vec<u8>)> =
            (0..299u32).map(|i| (format!("run/r/out/{i}"), i.to_le_bytes().to_vec())).collect();
        puts.push(("run/r/out/7".into(), b"last".to_vec()));
        backend.append_with("run/r/journal", 0, &entries, &puts, Some(&lease)).await.unwrap();
        assert_eq!(backend.read_log("run/r/journal", 0).await.unwrap(), entries);
        let keys: Vec<String> = (0..299).map(|i| format!("run/r/out/{i}")).collect();
        let read = backend.get_many(&keys).await.unwrap();
        for (i, value) in (0..299u32).zip(read) {
            let want = if i == 7 { b"last".to_vec() } else { i.to_le_bytes().to_vec() };
            assert_eq!(value, Some(want), "put {i}");
        }
        let refused =
            backend.append_with("run/r/journal", 299, &entries[..2], &puts[..2], Some(&lease)).await.unwrap_err();
        assert!(matches!(refused, StoreError::Conflict { expected: 299, actual: 300, .. }), "{refused}");
        backend.append_with("run/r/journal", 300, &entries[..2], &[], None).await.unwrap();
        assert_eq!(backend.read_log("run/r/journal", 299).await.unwrap(), [&entries[299..], &entries[..2]].concat());
    }
}
