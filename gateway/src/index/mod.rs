//! The index: buckets, objects, their segments, fragments and placements,
//! the node registry and the garbage queue, in SQLite (one gateway) or
//! Postgres (several gateways sharing it).
//!
//! Every query here is plain SQL with `$n` parameters that both engines
//! run; write transactions go through `write_tx!`, which runs them again
//! when they lose a race with another writer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use crate::crypto::{Keyring, WrappedKey};
use crate::error::GatewayError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The wrapped data key in a row's `key_id` and `wrapped` columns.
fn wrapped_key_of(row: &AnyRow) -> Result<Option<WrappedKey>, GatewayError> {
    let key_id: Option<String> = row.try_get("key_id")?;
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped")?;
    Ok(key_id
        .zip(wrapped)
        .map(|(key_id, wrapped)| WrappedKey { key_id, wrapped }))
}

/// A segment from a row of `segments` (`data_id`, `seq`, `plain_offset`,
/// `plain_size`, `frames`, `key_id`, `wrapped`, `fragments`); its overflow
/// pins' content ids are left empty.
fn segment_of(row: &AnyRow) -> Result<SegmentRow, GatewayError> {
    Ok(SegmentRow {
        data_id: packed::id_text(&row.try_get::<Vec<u8>, _>("data_id")?),
        seq: u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX),
        plain_offset: to_u64(row.try_get("plain_offset")?),
        plain_size: to_u64(row.try_get("plain_size")?),
        frames: row
            .try_get::<Option<String>, _>("frames")?
            .and_then(|f| packed::frames_of(&f)),
        key: wrapped_key_of(row)?,
        fragments: packed::unpack(&row.try_get::<Vec<u8>, _>("fragments")?)?,
    })
}

/// Rows written by one multi-row INSERT: a segment's ten fragments' forty
/// placements take one statement, and no statement binds more than a few
/// hundred values (SQLite's old limit was 999).
const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO table (columns) VALUES ($1, …), (…)` for `rows` rows, the
/// placeholders numbered as both engines take them.
fn insert_rows_sql(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) ", columns.join(", "));
    push_values(&mut sql, columns.len(), rows, true);
    sql
}

/// Appends `VALUES (…), (…)`: `rows` rows of `columns` placeholders,
/// `$1, $2…` when `numbered` (both engines), else `?` (SQLite, which binds
/// them in order, also across the statements of one query).
fn push_values(sql: &mut String, columns: usize, rows: usize, numbered: bool) {
    use std::fmt::Write as _;
    sql.push_str("VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            if numbered {
                let _ = write!(sql, "${}", row * columns + column + 1);
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
}

/// The connections an index's queries run on.
#[derive(Debug, Clone)]
enum Connections {
    /// Reads on connections lent one read at a time (see [`Readers`]);
    /// write transactions on the one writing connection, in turns (see
    /// [`Writer`]).
    Sqlite {
        readers: Arc<Readers>,
        writer: Arc<Writer>,
        /// Single-PUT commits that arrive together are written together
        /// (see [`group_commit`]).
        group_commits: Arc<group_commit::GroupCommits>,
    },
    /// sqlx's pool, for reads and write transactions alike.
    Postgres(AnyPool),
}

/// The index: every query runs on SQLite or Postgres through sqlx's `Any`
/// driver, in SQL both understand.
#[derive(Debug, Clone)]
pub struct Index {
    /// Where its queries run.
    connections: Connections,
    /// Seals node secrets on the way in and opens them on the way out;
    /// without it node secrets are returned sealed, and nodes cannot be
    /// registered.
    keyring: Option<Keyring>,
    /// How its write transactions fare, for the metrics.
    stats: IndexStats,
}

/// How an index's write transactions fare: the gateway's metrics register
/// these (see [`Index::stats`]).
#[derive(Debug, Clone)]
pub struct IndexStats {
    /// Seconds each write transaction took, its retries included.
    pub write_seconds: prometheus::Histogram,
    /// Write transactions run again after a conflict or a lost connection.
    pub write_retries: prometheus::IntCounter,
    /// Objects written or deleted by each group commit's transaction
    /// (SQLite): single PUTs and DeleteObjects.
    pub commit_batch_objects: prometheus::Histogram,
    /// Seconds the reads on the request path took, by query: `object`
    /// (HEAD, GET; with the layout of an object in one segment), `layout`
    /// (where a larger object's fragments are), `listing`,
    /// `bucket`, `nodes` (the registry refresh).
    pub read_seconds: prometheus::HistogramVec,
}

impl IndexStats {
    fn new() -> Self {
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        Self {
            write_seconds: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "tenfold_index_write_duration_seconds",
                    "Time each index write transaction took, its retries included.",
                )
                .buckets(buckets.clone()),
            )
            .expect("valid metric"),
            read_seconds: prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "tenfold_index_read_duration_seconds",
                    "Time the index's reads on the request path took, by query.",
                )
                .buckets(buckets),
                &["query"],
            )
            .expect("valid metric"),
            write_retries: prometheus::IntCounter::new(
                "tenfold_index_write_retries_total",
                "Index write transactions run again after a conflict or a lost connection.",
            )
            .expect("valid metric"),
            commit_batch_objects: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "tenfold_index_commit_batch_objects",
                    "Objects written or deleted together by each group commit's transaction (SQLite): single PUTs and DeleteObjects.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )
            .expect("valid metric"),
        }
    }
}

impl Index {
    /// Runs a read, timing it under `query` in the metrics.
    async fn timed_read<T>(
        &self,
        query: &'static str,
        read: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        let started = std::time::Instant::now();
        let result = read.await;
        self.stats
            .read_seconds
            .with_label_values(&[query])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// What every SQLite connection is set to when it opens.
const SQLITE_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

/// A connection to the SQLite file of `options`, set up as every one is.
async fn connect_sqlite(options: &AnyConnectOptions) -> Result<AnyConnection, sqlx::Error> {
    let mut connection = AnyConnection::connect_with(options).await?;
    connection.execute(SQLITE_PRAGMAS).await?;
    Ok(connection)
}

/// How long a request waits for a database connection before it is
/// answered 503 (the database is down or overloaded).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// A PostgreSQL connection idle longer than this is pinged before a
/// request uses it, so one the server dropped meanwhile (a restart, a
/// terminated backend) is replaced rather than failing the request. sqlx
/// pings every connection given back to the pool anyway; those in steady
/// use skip the second ping and its round trip (HikariCP's "alive bypass
/// window" makes the same trade).
const PING_AFTER_IDLE: Duration = Duration::from_millis(250);
/// How many connections SQLite's reads may hold open at once.
const SQLITE_READERS: usize = 8;

/// The database engine of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded, one gateway (`sqlite://PATH`).
    Sqlite,
    /// Shared by several gateways (`postgres://…`).
    Postgres,
}

impl Engine {
    /// The engine a transaction runs on.
    fn of_tx(tx: &Tx) -> Self {
        match tx {
            Tx::Sqlite(_) => Self::Sqlite,
            Tx::Postgres(_) => Self::Postgres,
        }
    }

    /// The engine an index URL names.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for any other URL.
    pub fn of_url(url: &str) -> Result<Self, GatewayError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(GatewayError::Config(format!(
                "unsupported index URL {url:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
            )))
        }
    }
}

/// Runs `$body`, a block using `$tx: &mut Tx<'_>`, in a write transaction of
/// `$index` and commits it; runs it again when it lost a race with another
/// writer (see [`Settled::after`]). `return` and `?` in the body end the
/// attempt, not the calling function.
macro_rules! write_tx {
    ($index:expr, |$tx:ident| $body:block) => {{
        let index = $index;
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        loop {
            let mut turn = index.write_turn().await;
            let settled = match turn.begin().await {
                Ok(mut transaction) => {
                    let result = {
                        let $tx: &mut Tx<'_> = &mut transaction;
                        async move {
                            let result: Result<_, GatewayError> = $body;
                            result
                        }
                        .await
                    };
                    $crate::index::Settled::after(transaction, result).await
                }
                Err(e) => $crate::index::Settled::Done(Err(e)),
            };
            turn.check(&settled);
            drop(turn);
            if let Some(done) = index.again(settled, &mut attempt).await {
                index
                    .stats
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                break done;
            }
        }
    }};
}

mod access_keys;
mod buckets;
mod counters;
mod discard;
mod garbage;
mod group_commit;
mod multipart;
mod nodes;
mod objects;
mod orphans;
mod overflow;
mod packed;
mod readers;
mod repair;
mod rows;
mod scrub;
mod shares;
mod transaction;
mod writes;

pub use access_keys::{AccessKeyRow, IndexKey, Owner};
pub use counters::{Counter, Counters, Repaired};
pub use nodes::NodeRecord;
pub use orphans::NamedReplicas;
pub use overflow::PinUse;
use readers::{Reader, Readers};
pub use repair::{CheckedSegments, Redundancy, WalkCursor};
pub use rows::{
    Assembly, FragmentRow, GarbageRetry, NewNode, ObjectHeaders, ObjectRow, PartRow, QueuedReplica,
    RepairCandidate, SegmentRow, ShareRow, StoredData, StoredPart, Tags, UploadAllowance,
    UploadRow, WriteCondition,
};
pub use scrub::{AuditPolicy, ScrubBatch, ScrubCursor, ScrubItem};
use transaction::{Settled, Tx, Writer};

/// The object a write finds at its key.
struct Occupant {
    /// Its id, as stored.
    id: Vec<u8>,
    /// Its ETag.
    etag: String,
}

impl Occupant {
    /// From its stored id, ETag and parts count.
    fn of(id: Vec<u8>, etag: &[u8], parts_count: Option<i64>) -> Self {
        let parts = parts_count.and_then(|n| u32::try_from(n).ok());
        Self {
            id,
            etag: packed::etag_text(etag, parts),
        }
    }
}

impl Index {
    /// The object at `bucket`/`key` now, in `tx`: its id and ETag (for a
    /// conditional write, and to discard it when replaced).
    async fn occupant_in(
        tx: &mut Tx<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Occupant>, GatewayError> {
        // On SQLite it may open the transaction: see `bucket_occupant_in`.
        let sql = format!(
            "{}SELECT id, etag, parts_count FROM objects WHERE bucket = $1 AND key = $2",
            tx.opening()
        );
        let rows: Vec<(Vec<u8>, Vec<u8>, Option<i64>)> = sqlx::query_as(&sql)
            .bind(bucket)
            .bind(key)
            .fetch_all(tx.conn().await?)
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|(id, etag, parts)| Occupant::of(id, &etag, parts)))
    }

    /// [`Index::bucket_occupant_in`] for several keys in one query (a
    /// group commit's batch on SQLite, a DeleteObjects' keys), rather than
    /// a round trip each: each key's answer, in order. Its placeholders
    /// are numbered, which both engines take (on SQLite `$n` is the
    /// query's `n`th value, and the `BEGIN` before it has none).
    ///
    /// # Errors
    /// [`GatewayError::Index`]: the query failed.
    async fn bucket_occupants_in(
        tx: &mut Tx<'_>,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Result<Option<Occupant>, GatewayError>>, GatewayError> {
        /// Keys to a query (three values each, far below SQLite's limit).
        const KEYS_PER_QUERY: usize = 1000;
        /// The key's place, its bucket if it exists, the object's id, ETag
        /// and parts count (NULLs when the key is free).
        type Found = (
            i64,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let mut answers: Vec<_> = keys
            .iter()
            .map(|(bucket, _)| Err(GatewayError::NoSuchBucket((*bucket).to_owned())))
            .collect();
        for (n, chunk) in keys.chunks(KEYS_PER_QUERY).enumerate() {
            // The batch's first query: on SQLite it also opens the
            // transaction.
            let mut sql = String::from(tx.opening());
            sql.push_str("WITH k(i, bucket, key) AS (");
            push_values(&mut sql, 3, chunk.len(), true);
            sql.push_str(
                ") SELECT k.i, b.name, o.id, o.etag, o.parts_count FROM k \
                 LEFT JOIN buckets b ON b.name = k.bucket \
                 LEFT JOIN objects o ON o.bucket = k.bucket AND o.key = k.key",
            );
            let mut query = sqlx::query_as::<_, Found>(&sql);
            for (i, (bucket, key)) in chunk.iter().enumerate() {
                let place = n * KEYS_PER_QUERY + i;
                query = query
                    .bind(i64::try_from(place).unwrap_or(i64::MAX))
                    .bind(*bucket)
                    .bind(*key);
            }
            for (place, bucket, id, etag, parts) in query.fetch_all(tx.conn().await?).await? {
                if let (Some(_), Some(answer)) = (
                    bucket,
                    usize::try_from(place).ok().and_then(|p| answers.get_mut(p)),
                ) {
                    *answer = Ok(id
                        .zip(etag)
                        .map(|(id, etag)| Occupant::of(id, &etag, parts)));
                }
            }
        }
        Ok(answers)
    }

    /// [`Index::occupant_in`], after checking in the same query that the
    /// bucket exists.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`], [`GatewayError::Index`].
    async fn bucket_occupant_in(
        tx: &mut Tx<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Occupant>, GatewayError> {
        // The object's id, ETag and parts count; NULLs when the key is free.
        type Found = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);
        // Often a transaction's first query: on SQLite it then opens it.
        // All its rows are fetched (one at most): sqlx's SQLite
        // `fetch_optional` stops at the first result, which the `BEGIN`
        // before the `SELECT` would be.
        let sql = format!(
            "{}SELECT o.id, o.etag, o.parts_count FROM buckets b \
             LEFT JOIN objects o ON o.bucket = b.name AND o.key = $2 WHERE b.name = $1",
            tx.opening()
        );
        let rows: Vec<Found> = sqlx::query_as(&sql)
            .bind(bucket)
            .bind(key)
            .fetch_all(tx.conn().await?)
            .await?;
        match rows.into_iter().next() {
            None => Err(GatewayError::NoSuchBucket(bucket.to_owned())),
            Some((id, etag, parts)) => Ok(id
                .zip(etag)
                .map(|(id, etag)| Occupant::of(id, &etag, parts))),
        }
    }

    /// Asks the database for nothing: whether it answers.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn ping(&self) -> Result<(), GatewayError> {
        sqlx::query("SELECT 1")
            .execute(&mut self.reader().await?)
            .await?;
        Ok(())
    }

    /// Opens the index at `url` (`sqlite://PATH`, created when missing, or
    /// `postgres://…`) and applies pending migrations.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for an unknown URL or a database newer than
    /// this binary; [`GatewayError::Index`] when it cannot be opened.
    pub async fn open(url: &str) -> Result<Self, GatewayError> {
        Self::open_at(url, None).await
    }

    /// Opens the index at `url`, migrated up to migration `last` (all of
    /// them when `None`; tests build older indexes with it).
    async fn open_at(url: &str, last: Option<i64>) -> Result<Self, GatewayError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url)?;
        let mut migrator = match engine {
            Engine::Sqlite => sqlx::migrate!("../migrations/sqlite"),
            Engine::Postgres => sqlx::migrate!("../migrations/postgres"),
        };
        if let Some(last) = last {
            let older: Vec<_> = migrator
                .migrations
                .iter()
                .filter(|m| m.version <= last)
                .cloned()
                .collect();
            migrator.migrations = older.into();
        }
        let refused = |e: sqlx::migrate::MigrateError| {
            GatewayError::Config(format!(
                "index migration failed (is the index newer than this binary?): {e}"
            ))
        };
        let connections = match engine {
            Engine::Sqlite => {
                // Create the file, and switch it to WAL once (it stays so).
                let file = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal);
                sqlx::Connection::close(sqlx::ConnectOptions::connect(&file).await?).await?;
                let options = AnyConnectOptions::from_str(url)?;
                let mut connection = connect_sqlite(&options).await?;
                migrator.run(&mut connection).await.map_err(refused)?;
                Connections::Sqlite {
                    readers: Arc::new(Readers::new(options.clone(), SQLITE_READERS)),
                    writer: Arc::new(Writer::new(connection, options)),
                    group_commits: Arc::default(),
                }
            }
            Engine::Postgres => {
                let pool = AnyPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .max_connections(16)
                    .test_before_acquire(false)
                    .before_acquire(|connection, meta| {
                        Box::pin(async move {
                            if meta.idle_for > PING_AFTER_IDLE {
                                connection.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?;
                migrator.run(&pool).await.map_err(refused)?;
                Connections::Postgres(pool)
            }
        };
        Ok(Self {
            connections,
            keyring: None,
            stats: IndexStats::new(),
        })
    }

    /// The same index, sealing and opening node secrets with `keyring`.
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Its database engine.
    fn engine(&self) -> Engine {
        match self.connections {
            Connections::Sqlite { .. } => Engine::Sqlite,
            Connections::Postgres(_) => Engine::Postgres,
        }
    }

    /// How its write transactions fare (shared by its clones).
    pub fn stats(&self) -> &IndexStats {
        &self.stats
    }

    /// The master keys this index was opened with, if any.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// A connection for a read (or a single-statement write outside a
    /// transaction): run queries on `&mut` it.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: no connection within [`ACQUIRE_TIMEOUT`].
    async fn reader(&self) -> Result<Reader, GatewayError> {
        Ok(match &self.connections {
            Connections::Sqlite { readers, .. } => readers.lend().await?,
            Connections::Postgres(pool) => Reader::Pooled(pool.acquire().await?),
        })
    }
}

/// A completion's part list in a canonical form (numbers and bare,
/// lowercase ETags), to recognise the same completion again.
fn part_list_json(chosen: &[(u32, String)]) -> String {
    let parts: Vec<(u32, String)> = chosen
        .iter()
        .map(|(n, e)| (*n, e.trim_matches('"').to_ascii_lowercase()))
        .collect();
    serde_json::to_string(&parts).unwrap_or_default()
}
#[cfg(test)]
mod tests;
