//! The index: buckets, objects, their segments, fragments and placements,
//! the node registry and the garbage queue, in SQLite (one gateway) or
//! Postgres (several gateways sharing it).
//!
//! Every query here is plain SQL with `$n` parameters that both engines
//! run; write transactions go through `write_tx!`, which runs them again
//! when they lose a race with another writer.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use md5::{Digest, Md5};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, Executor, Row};
use tenfold_balancer::{Network, NodeSpec, OVERFLOW, Placement, Replica};

use crate::crypto::{Keyring, WrappedKey};
use crate::error::GatewayError;
use crate::fragment::{FrameIndex, node_key};
use crate::integrity::Checksums;

mod access_keys;
pub use access_keys::{AccessKeyRow, Owner};

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

/// The placement in a row's `network`, `node_id` and `cid` columns.
fn placement_of(row: &AnyRow) -> Result<Placement, GatewayError> {
    Placement::from_columns(
        &row.try_get::<String, _>("network")?,
        row.try_get("node_id")?,
        row.try_get("cid")?,
    )
    .map_err(GatewayError::Internal)
}

/// The wrapped data key in a row's `key_id` and `wrapped` columns.
fn wrapped_key_of(row: &AnyRow) -> Result<Option<WrappedKey>, GatewayError> {
    let key_id: Option<String> = row.try_get("key_id")?;
    let wrapped: Option<String> = row.try_get("wrapped")?;
    key_id
        .zip(wrapped)
        .map(|(key_id, wrapped)| {
            let wrapped = hex::decode(&wrapped)
                .map_err(|_| GatewayError::Internal(format!("bad wrapped key of {key_id}")))?;
            Ok(WrappedKey { key_id, wrapped })
        })
        .transpose()
}

/// Rows written by one multi-row INSERT: a segment's ten fragments' forty
/// placements take one statement, and no statement binds more than a few
/// hundred values (SQLite's old limit was 999).
const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO table (columns) VALUES ($1, …), (…)` for `rows` rows, the
/// placeholders numbered as both engines take them.
fn insert_rows_sql(table: &str, columns: &[&str], rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns.len() {
            let sep = if column == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", row * columns.len() + column + 1);
        }
        sql.push(')');
    }
    sql
}

fn md5_from_hex(text: &str) -> Result<[u8; 16], GatewayError> {
    hex::decode(text)
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| GatewayError::Internal(format!("bad md5 in index: {text}")))
}

/// The standard headers an object keeps and returns on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// `Expires`, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// A visible object.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// Hex MD5 for a PUT, `md5-of-part-md5s-N` for a multipart object.
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub headers: ObjectHeaders,
    /// The `x-amz-checksum-*` values computed when it was stored.
    pub checksums: Checksums,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
    /// Number of parts of a multipart object.
    pub parts_count: Option<u32>,
}

/// One fragment of a segment, with its replicas.
#[derive(Debug, Clone)]
pub struct FragmentRow {
    pub index: u16,
    pub size: u64,
    pub md5: [u8; 16],
    pub placements: Vec<Placement>,
}

/// One segment, with its fragments in index order.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    /// The stored data the segment belongs to (names its fragments).
    pub data_id: String,
    pub seq: u32,
    /// Offset of the segment's first byte: within its data when stored,
    /// within the whole object in a [`Index::layout`].
    pub plain_offset: u64,
    pub plain_size: u64,
    /// Where its zstd frames are (unknown for segments stored before the
    /// index kept it).
    pub frames: Option<FrameIndex>,
    /// The wrapped key of the data it belongs to (none for data stored
    /// before encryption).
    pub key: Option<WrappedKey>,
    pub fragments: Vec<FragmentRow>,
}

/// A fragment with a copy in the overflow store.
#[derive(Debug, Clone)]
pub struct OverflowedFragment {
    pub data_id: String,
    pub seq: u32,
    pub fragment: FragmentRow,
}

/// The bytes of one PUT or one part, fully placed, not yet referenced.
#[derive(Debug, Clone)]
pub struct StoredData {
    pub data_id: String,
    pub size: u64,
    pub md5: [u8; 16],
    pub checksums: Checksums,
    /// Its data key, wrapped.
    pub key: Option<WrappedKey>,
    pub segments: Vec<SegmentRow>,
}

impl SegmentRow {
    /// Every copy of this segment's fragments.
    pub fn replicas(&self) -> impl Iterator<Item = Replica> + '_ {
        self.fragments.iter().flat_map(move |f| {
            f.placements.iter().map(move |p| Replica {
                key: node_key(&self.data_id, self.seq, f.index),
                placement: p.clone(),
            })
        })
    }
}

impl StoredData {
    /// Every copy of this data's fragments.
    pub fn replicas(&self) -> Vec<Replica> {
        self.segments
            .iter()
            .flat_map(SegmentRow::replicas)
            .collect()
    }
}

/// A share link as recorded in the index.
#[derive(Debug, Clone)]
pub struct ShareRow {
    pub bucket: String,
    pub prefix: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    pub revoked: bool,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub headers: ObjectHeaders,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The checksum algorithm (uppercase) every part is given, and the
    /// object a composite of.
    pub checksum_algorithm: Option<String>,
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub struct PartRow {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub checksums: Checksums,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
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

/// Smallest part S3 accepts, but for the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// A node registration as given to `tenfold nodes add`.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: String,
    pub endpoint: String,
    pub network: Network,
    pub capacity: u64,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

/// The index database.
type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The index: every query runs on SQLite or Postgres through sqlx's `Any`
/// driver, in SQL both understand.
#[derive(Debug, Clone)]
pub struct Index {
    pool: AnyPool,
    engine: Engine,
    /// Seals node secrets on the way in and opens them on the way out;
    /// without it node secrets are returned sealed, and nodes cannot be
    /// registered.
    keyring: Option<Keyring>,
}

/// How often a conflicting write transaction is run again. Of N writers
/// that conflict, at least one commits each round, so the last may need N
/// attempts: `aws s3 cp` commits ten parts of one upload at once, and
/// Postgres' predicate locks make those conflict (the index pages they
/// read and write are shared).
const WRITE_RETRIES: u32 = 24;
/// How long a request waits for a database connection before it is
/// answered 503 (the database is down or overloaded).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database engine of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded, one gateway (`sqlite://PATH`).
    Sqlite,
    /// Shared by several gateways (`postgres://…`).
    Postgres,
}

impl Engine {
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

/// Runs `$body`, a block using `$tx: &mut Tx`, in a write transaction of
/// `$index` and commits it; runs it again when it lost a race with another
/// writer (see [`Index::settle`]). `return` and `?` in the body end the
/// attempt, not the calling function.
macro_rules! write_tx {
    ($index:expr, |$tx:ident| $body:block) => {{
        let index = $index;
        let mut attempt = 0u32;
        loop {
            let mut transaction = index.begin_write().await?;
            let result = {
                let $tx: &mut Tx = &mut transaction;
                async move {
                    let result: Result<_, GatewayError> = $body;
                    result
                }
                .await
            };
            if let Some(done) = index.settle(transaction, result, &mut attempt).await {
                break done;
            }
        }
    }};
}

/// Whether a database error is a conflict with a concurrent writer, after
/// which the transaction changed nothing: Postgres's serialization failure
/// (40001), deadlock (40P01) or unique violation (23505, a row another
/// writer inserted meanwhile), SQLite's busy database.
fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40001" | "40P01" | "23505" | "5" | "517")
        ),
        _ => false,
    }
}

/// Whether the connection broke (the transaction is rolled back with it).
fn is_connection_loss(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_))
}

/// The folder's index URL for `--data DIR`.
pub fn sqlite_url_for_dir(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("index.db").display())
}

impl Index {
    /// Opens the index at `url` (`sqlite://PATH`, created when missing, or
    /// `postgres://…`) and applies pending migrations.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for an unknown URL or a database newer than
    /// this binary; [`GatewayError::Index`] when it cannot be opened.
    pub async fn open(url: &str) -> Result<Self, GatewayError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url)?;
        let options = AnyPoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = match engine {
            Engine::Sqlite => {
                // Create the file, and switch it to WAL once (it stays so).
                let file = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal);
                sqlx::Connection::close(sqlx::ConnectOptions::connect(&file).await?).await?;
                options
                    .max_connections(8)
                    // A ping before each use is a round trip to the
                    // connection's worker thread for an embedded file that
                    // cannot have gone away.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000;",
                            )
                            .await
                            .map(|_| ())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Engine::Postgres => options.max_connections(16).connect(url).await?,
        };
        let migrator = match engine {
            Engine::Sqlite => sqlx::migrate!("../migrations/sqlite"),
            Engine::Postgres => sqlx::migrate!("../migrations/postgres"),
        };
        migrator.run(&pool).await.map_err(|e| {
            GatewayError::Config(format!(
                "index migration failed (is the index newer than this binary?): {e}"
            ))
        })?;
        Ok(Self {
            pool,
            engine,
            keyring: None,
        })
    }

    /// The same index, sealing and opening node secrets with `keyring`.
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The master keys this index was opened with, if any.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    async fn begin_write(&self) -> Result<Tx, GatewayError> {
        Ok(match self.engine {
            // IMMEDIATE takes the write lock up front, so two writers queue
            // on the busy timeout instead of failing to upgrade a read lock.
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            // Several gateways write at once: conflicts surface as
            // serialization failures, and `write_tx!` runs the work again.
            Engine::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    .await?
            }
        })
    }

    /// Ends a write transaction run by [`write_tx!`]: commits it after
    /// `result` succeeded; `None` when it lost a race (a conflict with
    /// another writer, or a connection lost before committing: nothing
    /// changed) and should run again, after a short random pause.
    async fn settle<T>(
        &self,
        tx: Tx,
        result: Result<T, GatewayError>,
        attempt: &mut u32,
    ) -> Option<Result<T, GatewayError>> {
        let retry = match result {
            Ok(value) => match tx.commit().await {
                Ok(()) => return Some(Ok(value)),
                // A commit whose answer was lost may have happened: only a
                // conflict is known to have changed nothing.
                Err(e) if is_conflict(&e) => e.into(),
                Err(e) => return Some(Err(e.into())),
            },
            Err(GatewayError::Index(e)) if is_conflict(&e) || is_connection_loss(&e) => {
                drop(tx);
                e.into()
            }
            Err(e) => return Some(Err(e)),
        };
        if *attempt >= WRITE_RETRIES {
            return Some(Err(retry));
        }
        *attempt += 1;
        tracing::debug!(error = %retry, attempt = *attempt, "index write lost a race: running it again");
        let pause = rand::random_range(1..=5u64 << (*attempt).min(5));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        None
    }

    // ---- buckets ----

    /// Whether a bucket exists.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn bucket_exists(&self, name: &str) -> Result<bool, GatewayError> {
        Ok(sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Fails with `NoSuchBucket` unless the bucket exists.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] or [`GatewayError::Index`].
    pub async fn require_bucket(&self, name: &str) -> Result<(), GatewayError> {
        if self.bucket_exists(name).await? {
            Ok(())
        } else {
            Err(GatewayError::NoSuchBucket(name.to_owned()))
        }
    }

    /// Deletes an empty bucket.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`], [`GatewayError::BucketNotEmpty`].
    pub async fn delete_bucket(&self, name: &str) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            let has_objects = sqlx::query("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1")
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if has_objects {
                return Err(GatewayError::BucketNotEmpty(name.to_owned()));
            }
            // Uploads in progress do not keep a bucket alive: abort them.
            let uploads: Vec<String> =
                sqlx::query_scalar("SELECT id FROM uploads WHERE bucket = $1")
                    .bind(name)
                    .fetch_all(&mut **tx)
                    .await?;
            for id in uploads {
                Self::abort_upload_in(tx, &id).await?;
            }
            let done = sqlx::query("DELETE FROM buckets WHERE name = $1")
                .bind(name)
                .execute(&mut **tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(GatewayError::NoSuchBucket(name.to_owned()));
            }
            Ok(())
        })
    }

    // ---- objects ----

    fn object_from_row(row: &AnyRow) -> Result<ObjectRow, GatewayError> {
        let metadata: String = row.try_get("metadata")?;
        Ok(ObjectRow {
            id: row.try_get("id")?,
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            size: to_u64(row.try_get("size")?),
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            headers: serde_json::from_str(&row.try_get::<String, _>("headers")?)
                .unwrap_or_default(),
            checksums: serde_json::from_str(&row.try_get::<String, _>("checksums")?)
                .unwrap_or_default(),
            last_modified: row.try_get("last_modified")?,
            parts_count: row
                .try_get::<Option<i64>, _>("parts_count")?
                .and_then(|n| u32::try_from(n).ok()),
        })
    }

    /// The visible object at `bucket`/`key`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRow>, GatewayError> {
        let row = sqlx::query(
            "SELECT id, bucket, key, size, etag, content_type, metadata, headers, checksums, last_modified, parts_count \
             FROM objects WHERE bucket = $1 AND key = $2",
        )
        .bind(bucket)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::object_from_row).transpose()
    }

    /// Objects of a bucket with keys greater than `after` and at least
    /// `prefix`, in key order, at most `limit`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ObjectRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT id, bucket, key, size, etag, content_type, metadata, headers, checksums, last_modified, parts_count \
             FROM objects WHERE bucket = $1 AND key > $2 AND key >= $3 ORDER BY key LIMIT $4",
        )
        .bind(bucket)
        .bind(after)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::object_from_row).collect()
    }

    /// The segments of an object that overlap plaintext `range` (and any
    /// empty one), in order, with their fragments and placements; offsets
    /// are within the object.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn layout(
        &self,
        object_id: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<SegmentRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT s.data_id, s.seq, op.plain_offset + s.plain_offset AS plain_offset, s.plain_size, \
                    s.frames, k.key_id, k.wrapped, f.idx, f.size, f.md5, p.network, p.node_id, p.cid \
             FROM object_parts op \
             JOIN segments s ON s.data_id = op.data_id \
             LEFT JOIN data_keys k ON k.data_id = s.data_id \
             JOIN fragments f ON f.data_id = s.data_id AND f.seq = s.seq \
             LEFT JOIN placements p ON p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx \
             WHERE op.object_id = $1 \
               AND (s.plain_size = 0 OR (op.plain_offset + s.plain_offset < $3 \
                    AND op.plain_offset + s.plain_offset + s.plain_size > $2)) \
             ORDER BY op.part_number, s.seq, f.idx",
        )
        .bind(object_id)
        .bind(to_i64(range.start))
        .bind(to_i64(range.end))
        .fetch_all(&self.pool)
        .await?;
        let mut segments: Vec<SegmentRow> = Vec::new();
        for row in &rows {
            let data_id: String = row.try_get("data_id")?;
            let seq = u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX);
            if segments
                .last()
                .is_none_or(|s| s.seq != seq || s.data_id != data_id)
            {
                segments.push(SegmentRow {
                    data_id,
                    seq,
                    plain_offset: to_u64(row.try_get("plain_offset")?),
                    plain_size: to_u64(row.try_get("plain_size")?),
                    frames: row
                        .try_get::<Option<String>, _>("frames")?
                        .and_then(|f| serde_json::from_str(&f).ok()),
                    key: wrapped_key_of(row)?,
                    fragments: Vec::new(),
                });
            }
            let segment = segments
                .last_mut()
                .ok_or_else(|| GatewayError::Internal("layout".into()))?;
            let index = u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(u16::MAX);
            if segment.fragments.last().is_none_or(|f| f.index != index) {
                segment.fragments.push(FragmentRow {
                    index,
                    size: to_u64(row.try_get("size")?),
                    md5: md5_from_hex(&row.try_get::<String, _>("md5")?)?,
                    placements: Vec::new(),
                });
            }
            if let Some(network) = row.try_get::<Option<String>, _>("network")? {
                let fragment = segment
                    .fragments
                    .last_mut()
                    .ok_or_else(|| GatewayError::Internal("layout".into()))?;
                fragment.placements.push(
                    Placement::from_columns(&network, row.try_get("node_id")?, row.try_get("cid")?)
                        .map_err(GatewayError::Internal)?,
                );
            }
        }
        Ok(segments)
    }

    async fn bucket_exists_in(tx: &mut Tx, bucket: &str) -> Result<(), GatewayError> {
        let exists = sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
            .bind(bucket)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(GatewayError::NoSuchBucket(bucket.to_owned()))
        }
    }

    /// Records placed data: its key, segments, fragments and placements.
    async fn insert_data_in(tx: &mut Tx, data: &StoredData) -> Result<(), GatewayError> {
        if let Some(key) = &data.key {
            sqlx::query("INSERT INTO data_keys (data_id, key_id, wrapped) VALUES ($1, $2, $3)")
                .bind(&data.data_id)
                .bind(&key.key_id)
                .bind(hex::encode(&key.wrapped))
                .execute(&mut **tx)
                .await?;
        }
        for chunk in data.segments.chunks(ROWS_PER_INSERT) {
            let sql = insert_rows_sql(
                "segments",
                &[
                    "data_id",
                    "seq",
                    "plain_offset",
                    "plain_size",
                    "fragment_count",
                    "frames",
                ],
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for s in chunk {
                query = query
                    .bind(&data.data_id)
                    .bind(i64::from(s.seq))
                    .bind(to_i64(s.plain_offset))
                    .bind(to_i64(s.plain_size))
                    .bind(i64::try_from(s.fragments.len()).unwrap_or(i64::MAX))
                    .bind(
                        s.frames
                            .as_ref()
                            .and_then(|f| serde_json::to_string(f).ok()),
                    );
            }
            query.execute(&mut **tx).await?;
        }
        let fragments: Vec<(u32, &FragmentRow)> = data
            .segments
            .iter()
            .flat_map(|s| s.fragments.iter().map(move |f| (s.seq, f)))
            .collect();
        for chunk in fragments.chunks(ROWS_PER_INSERT) {
            let sql = insert_rows_sql(
                "fragments",
                &["data_id", "seq", "idx", "size", "md5"],
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for (seq, f) in chunk {
                query = query
                    .bind(&data.data_id)
                    .bind(i64::from(*seq))
                    .bind(i64::from(f.index))
                    .bind(to_i64(f.size))
                    .bind(hex::encode(f.md5));
            }
            query.execute(&mut **tx).await?;
        }
        let placements: Vec<(u32, u16, &Placement)> = fragments
            .iter()
            .flat_map(|(seq, f)| f.placements.iter().map(move |p| (*seq, f.index, p)))
            .collect();
        for chunk in placements.chunks(ROWS_PER_INSERT) {
            let sql = insert_rows_sql(
                "placements",
                &["data_id", "seq", "idx", "network", "node_id", "cid"],
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for (seq, index, p) in chunk {
                query = query
                    .bind(&data.data_id)
                    .bind(i64::from(*seq))
                    .bind(i64::from(*index))
                    .bind(p.network_name())
                    .bind(p.node_id())
                    .bind(p.cid());
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Moves a piece of data's replicas to the garbage queue and forgets it.
    async fn discard_data_in(tx: &mut Tx, data_id: &str) -> Result<(), GatewayError> {
        let rows = sqlx::query(
            "SELECT seq, idx, network, node_id, cid FROM placements WHERE data_id = $1",
        )
        .bind(data_id)
        .fetch_all(&mut **tx)
        .await?;
        let mut replicas = Vec::with_capacity(rows.len());
        for row in &rows {
            replicas.push(Replica {
                key: node_key(
                    data_id,
                    u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0),
                    u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(0),
                ),
                placement: placement_of(row)?,
            });
        }
        sqlx::query("DELETE FROM segments WHERE data_id = $1")
            .bind(data_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM data_keys WHERE data_id = $1")
            .bind(data_id)
            .execute(&mut **tx)
            .await?;
        Self::add_garbage_in(tx, &replicas).await
    }

    /// Deletes an object and discards its data.
    async fn discard_object_in(tx: &mut Tx, object_id: &str) -> Result<(), GatewayError> {
        let data: Vec<String> =
            sqlx::query_scalar("SELECT data_id FROM object_parts WHERE object_id = $1")
                .bind(object_id)
                .fetch_all(&mut **tx)
                .await?;
        for data_id in data {
            Self::discard_data_in(tx, &data_id).await?;
        }
        sqlx::query("DELETE FROM objects WHERE id = $1")
            .bind(object_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Discards whatever object is at `bucket`/`key`; `false` when none.
    async fn replace_in(tx: &mut Tx, bucket: &str, key: &str) -> Result<bool, GatewayError> {
        let old: Option<String> =
            sqlx::query_scalar("SELECT id FROM objects WHERE bucket = $1 AND key = $2")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
        match old {
            Some(id) => Self::discard_object_in(tx, &id).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn insert_object_in(tx: &mut Tx, object: &ObjectRow) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO objects (id, bucket, key, size, etag, content_type, metadata, headers, checksums, last_modified, parts_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&object.id)
        .bind(&object.bucket)
        .bind(&object.key)
        .bind(to_i64(object.size))
        .bind(&object.etag)
        .bind(&object.content_type)
        .bind(serde_json::to_string(&object.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&object.headers).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&object.checksums).unwrap_or_else(|_| "{}".into()))
        .bind(object.last_modified)
        .bind(object.parts_count.map(i64::from))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn insert_object_part_in(
        tx: &mut Tx,
        object_id: &str,
        part_number: u32,
        data_id: &str,
        offset: u64,
        size: u64,
        etag: &str,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO object_parts (object_id, part_number, data_id, plain_offset, size, etag) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(object_id)
        .bind(i64::from(part_number))
        .bind(data_id)
        .bind(to_i64(offset))
        .bind(to_i64(size))
        .bind(etag)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Makes a fully placed single-PUT object visible, replacing any object
    /// at the same key (whose replicas go to the garbage queue), in one
    /// transaction. With `if_absent` (`If-None-Match: *`) an existing
    /// object wins instead.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket went away meanwhile,
    /// [`GatewayError::PreconditionFailed`], [`GatewayError::Index`].
    pub async fn commit_object(
        &self,
        object: &ObjectRow,
        data: &StoredData,
        if_absent: bool,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::bucket_exists_in(tx, &object.bucket).await?;
            if if_absent {
                let exists = sqlx::query("SELECT 1 FROM objects WHERE bucket = $1 AND key = $2")
                    .bind(&object.bucket)
                    .bind(&object.key)
                    .fetch_optional(&mut **tx)
                    .await?
                    .is_some();
                if exists {
                    return Err(GatewayError::PreconditionFailed);
                }
            }
            Self::replace_in(tx, &object.bucket, &object.key).await?;
            Self::insert_object_in(tx, object).await?;
            Self::insert_data_in(tx, data).await?;
            Self::insert_object_part_in(
                tx,
                &object.id,
                1,
                &data.data_id,
                0,
                data.size,
                &object.etag,
            )
            .await?;
            Ok(())
        })
    }

    /// Deletes the object at `bucket`/`key`; its replicas go to the garbage
    /// queue. `false` when there was none.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, GatewayError> {
        write_tx!(self, |tx| {
            let deleted = Self::replace_in(tx, bucket, key).await?;
            Ok(deleted)
        })
    }

    /// Offset and size of part `number` of an object.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn part_range(
        &self,
        object_id: &str,
        number: u32,
    ) -> Result<Option<(u64, u64)>, GatewayError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT plain_offset, size FROM object_parts WHERE object_id = $1 AND part_number = $2",
        )
        .bind(object_id)
        .bind(i64::from(number))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(o, s)| (to_u64(o), to_u64(s))))
    }

    // ---- multipart uploads ----

    /// Starts a multipart upload.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`], [`GatewayError::Index`].
    pub async fn create_upload(&self, upload: &UploadRow) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::bucket_exists_in(tx, &upload.bucket).await?;
            sqlx::query(
                "INSERT INTO uploads (id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&upload.id)
            .bind(&upload.bucket)
            .bind(&upload.key)
            .bind(&upload.content_type)
            .bind(serde_json::to_string(&upload.metadata).unwrap_or_else(|_| "{}".into()))
            .bind(serde_json::to_string(&upload.headers).unwrap_or_else(|_| "{}".into()))
            .bind(upload.created_at)
            .bind(&upload.checksum_algorithm)
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    }

    fn upload_from_row(row: &AnyRow) -> Result<UploadRow, GatewayError> {
        let metadata: String = row.try_get("metadata")?;
        Ok(UploadRow {
            id: row.try_get("id")?,
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            content_type: row.try_get("content_type")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            headers: serde_json::from_str(&row.try_get::<String, _>("headers")?)
                .unwrap_or_default(),
            created_at: row.try_get("created_at")?,
            checksum_algorithm: row.try_get("checksum_algorithm")?,
        })
    }

    /// The upload `id` of `bucket`/`key`.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`] when there is no such upload (or it is
    /// for another key), [`GatewayError::Index`].
    pub async fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<UploadRow, GatewayError> {
        let row = sqlx::query(
            "SELECT id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm FROM uploads WHERE id = $1 AND bucket = $2 AND key = $3",
        )
        .bind(id)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Self::upload_from_row(&row),
            None => Err(GatewayError::NoSuchUpload(id.to_owned())),
        }
    }

    /// Fails with `NoSuchUpload` unless the upload is still in progress
    /// (it may have been completed or aborted meanwhile).
    async fn upload_exists_in(tx: &mut Tx, upload_id: &str) -> Result<(), GatewayError> {
        let exists = sqlx::query("SELECT 1 FROM uploads WHERE id = $1")
            .bind(upload_id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(GatewayError::NoSuchUpload(upload_id.to_owned()))
        }
    }

    /// Records an uploaded part, replacing an earlier upload of the same
    /// part number.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`] when the upload was completed or
    /// aborted meanwhile.
    pub async fn commit_part(
        &self,
        upload_id: &str,
        part_number: u32,
        data: &StoredData,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::upload_exists_in(tx, upload_id).await?;
            let old: Option<String> = sqlx::query_scalar(
                "SELECT data_id FROM upload_parts WHERE upload_id = $1 AND part_number = $2",
            )
            .bind(upload_id)
            .bind(i64::from(part_number))
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(old) = old {
                Self::discard_data_in(tx, &old).await?;
                sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1 AND part_number = $2")
                    .bind(upload_id)
                    .bind(i64::from(part_number))
                    .execute(&mut **tx)
                    .await?;
            }
            Self::insert_data_in(tx, data).await?;
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, part_number, data_id, size, etag, last_modified, checksums) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(upload_id)
            .bind(i64::from(part_number))
            .bind(&data.data_id)
            .bind(to_i64(data.size))
            .bind(hex::encode(data.md5))
            .bind(now_ms())
            .bind(serde_json::to_string(&data.checksums).unwrap_or_else(|_| "{}".into()))
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
    }

    /// Parts of an upload with numbers above `after`, at most `limit`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: i64,
    ) -> Result<Vec<PartRow>, GatewayError> {
        let rows: Vec<(i64, i64, String, i64, String)> = sqlx::query_as(
            "SELECT part_number, size, etag, last_modified, checksums FROM upload_parts \
             WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
        )
        .bind(upload_id)
        .bind(i64::from(after))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(n, size, etag, last_modified, checksums)| PartRow {
                part_number: u32::try_from(n).unwrap_or(0),
                size: to_u64(size),
                etag,
                checksums: serde_json::from_str(&checksums).unwrap_or_default(),
                last_modified,
            })
            .collect())
    }

    /// Uploads in progress in a bucket, by key then id, after the markers.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        id_marker: &str,
        limit: i64,
    ) -> Result<Vec<UploadRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT id, bucket, key, content_type, metadata, headers, created_at, checksum_algorithm FROM uploads \
             WHERE bucket = $1 AND key >= $2 AND (key > $3 OR (key = $3 AND id > $4)) \
             ORDER BY key, id LIMIT $5",
        )
        .bind(bucket)
        .bind(prefix)
        .bind(key_marker)
        .bind(id_marker)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(Self::upload_from_row)
            .filter(|u| u.as_ref().map_or(true, |u| u.key.starts_with(prefix)))
            .collect()
    }

    /// Completes an upload: the chosen parts (number and ETag, ascending)
    /// become the object at the upload's key, replacing any object there;
    /// the parts not chosen are discarded.
    ///
    /// # Errors
    /// `InvalidPart`, `InvalidPartOrder`, `EntityTooSmall` as S3 checks
    /// them, [`GatewayError::NoSuchUpload`].
    pub async fn complete_upload(
        &self,
        upload: &UploadRow,
        chosen: &[(u32, String)],
        declared: &[Checksums],
    ) -> Result<ObjectRow, GatewayError> {
        if chosen.is_empty() {
            return Err(GatewayError::MalformedXml(
                "you must specify at least one part".into(),
            ));
        }
        if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(GatewayError::InvalidPartOrder);
        }
        write_tx!(self, |tx| {
            Self::upload_exists_in(tx, &upload.id).await?;
            let stored: Vec<(i64, String, i64, String, String)> = sqlx::query_as(
                "SELECT part_number, data_id, size, etag, checksums FROM upload_parts WHERE upload_id = $1 ORDER BY part_number",
            )
            .bind(&upload.id)
            .fetch_all(&mut **tx)
            .await?;
            let by_number: HashMap<u32, (String, u64, String, Checksums)> = stored
                .into_iter()
                .map(|(n, data, size, etag, checksums)| {
                    let checksums = serde_json::from_str(&checksums).unwrap_or_default();
                    (
                        u32::try_from(n).unwrap_or(0),
                        (data, to_u64(size), etag, checksums),
                    )
                })
                .collect();
            let mut parts = Vec::with_capacity(chosen.len());
            let mut md5s = Md5::new();
            for (i, (number, etag)) in chosen.iter().enumerate() {
                let Some((data_id, size, stored_etag, checksums)) = by_number.get(number) else {
                    return Err(GatewayError::InvalidPart(*number));
                };
                if !etag.trim_matches('"').eq_ignore_ascii_case(stored_etag) {
                    return Err(GatewayError::InvalidPart(*number));
                }
                // A checksum the client lists for a part must be the part's.
                if let Some(listed) = declared.get(i)
                    && listed
                        .fields()
                        .into_iter()
                        .any(|(name, v)| v.is_some() && v.as_deref() != checksums.get(name))
                {
                    return Err(GatewayError::InvalidPart(*number));
                }
                if i + 1 < chosen.len() && *size < MIN_PART_SIZE {
                    return Err(GatewayError::EntityTooSmall(*number));
                }
                md5s.update(hex::decode(stored_etag).unwrap_or_default());
                parts.push((*number, data_id.clone(), *size, stored_etag.clone()));
            }
            let checksums = upload
                .checksum_algorithm
                .as_deref()
                .and_then(|algorithm| {
                    let part_sums: Vec<&Checksums> = chosen
                        .iter()
                        .filter_map(|(n, _)| by_number.get(n).map(|p| &p.3))
                        .collect();
                    Checksums::composite(algorithm, part_sums.into_iter())
                })
                .unwrap_or_default();
            let object = ObjectRow {
                id: crate::object_store::new_object_id(),
                bucket: upload.bucket.clone(),
                key: upload.key.clone(),
                size: parts.iter().map(|p| p.2).sum(),
                etag: format!("{}-{}", hex::encode(md5s.finalize()), parts.len()),
                content_type: upload.content_type.clone(),
                metadata: upload.metadata.clone(),
                headers: upload.headers.clone(),
                checksums,
                last_modified: now_ms(),
                parts_count: u32::try_from(parts.len()).ok(),
            };
            Self::replace_in(tx, &object.bucket, &object.key).await?;
            Self::insert_object_in(tx, &object).await?;
            let mut offset = 0;
            for (number, data_id, size, etag) in &parts {
                Self::insert_object_part_in(tx, &object.id, *number, data_id, offset, *size, etag)
                    .await?;
                offset += size;
            }
            for (number, (data_id, _, _, _)) in &by_number {
                if !chosen.iter().any(|(n, _)| n == number) {
                    Self::discard_data_in(tx, data_id).await?;
                }
            }
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(&upload.id)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO completed_uploads (upload_id, bucket, key, object_id, parts, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&upload.id)
            .bind(&object.bucket)
            .bind(&object.key)
            .bind(&object.id)
            .bind(part_list_json(chosen))
            .bind(object.last_modified)
            .execute(&mut **tx)
            .await?;
            Ok(object)
        })
    }

    /// The object an upload already completed into, when the same part list
    /// completes it again and the object is still there.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn completed_object(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        chosen: &[(u32, String)],
    ) -> Result<Option<ObjectRow>, GatewayError> {
        let done: Option<(String, String)> = sqlx::query_as(
            "SELECT object_id, parts FROM completed_uploads WHERE upload_id = $1 AND bucket = $2 AND key = $3",
        )
        .bind(upload_id)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match done {
            Some((object_id, parts)) if parts == part_list_json(chosen) => Ok(self
                .get_object(bucket, key)
                .await?
                .filter(|o| o.id == object_id)),
            _ => Ok(None),
        }
    }

    async fn abort_upload_in(tx: &mut Tx, upload_id: &str) -> Result<bool, GatewayError> {
        let parts: Vec<String> =
            sqlx::query_scalar("SELECT data_id FROM upload_parts WHERE upload_id = $1")
                .bind(upload_id)
                .fetch_all(&mut **tx)
                .await?;
        for data_id in parts {
            Self::discard_data_in(tx, &data_id).await?;
        }
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(upload_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Aborts an upload; its parts' replicas go to the garbage queue.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchUpload`], [`GatewayError::Index`].
    pub async fn abort_upload(&self, upload_id: &str) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            if !Self::abort_upload_in(tx, upload_id).await? {
                return Err(GatewayError::NoSuchUpload(upload_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Aborts every upload started before `before_ms`; returns how many.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn abort_uploads_before(&self, before_ms: i64) -> Result<usize, GatewayError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM uploads WHERE created_at < $1")
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?;
        for id in &ids {
            write_tx!(self, |tx| { Self::abort_upload_in(tx, id).await })?;
        }
        sqlx::query("DELETE FROM completed_uploads WHERE completed_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(ids.len())
    }

    // ---- garbage ----

    async fn add_garbage_in(tx: &mut Tx, replicas: &[Replica]) -> Result<(), GatewayError> {
        let now = now_ms();
        for r in replicas {
            let node = r.placement.node_id();
            sqlx::query(
                "INSERT INTO garbage (node_id, node_key, cid, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(node)
            .bind(node.map(|_| r.key.as_str()))
            .bind(r.placement.cid())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Queues replicas for deletion from their nodes (and content ids to
    /// unpin).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn add_garbage(&self, replicas: &[Replica]) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::add_garbage_in(tx, replicas).await?;
            Ok(())
        })
    }

    /// The oldest queued replicas, with their queue ids.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn garbage(&self, limit: i64) -> Result<Vec<(i64, Replica)>, GatewayError> {
        let rows =
            sqlx::query("SELECT id, node_id, node_key, cid FROM garbage ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        let mut queued = Vec::with_capacity(rows.len());
        for row in &rows {
            let node: Option<i64> = row.try_get("node_id")?;
            let key: Option<String> = row.try_get("node_key")?;
            let cid: Option<String> = row.try_get("cid")?;
            let replica = match (node, key, cid) {
                (Some(node_id), Some(key), _) => Replica {
                    key,
                    // The network does not matter for a deletion.
                    placement: Placement::Node {
                        node_id,
                        network: Network::Mainnet,
                    },
                },
                (_, _, Some(cid)) => Replica {
                    key: String::new(),
                    placement: Placement::Overflow { cid },
                },
                _ => continue,
            };
            queued.push((row.try_get("id")?, replica));
        }
        Ok(queued)
    }

    /// Whether any stored fragment still has its copy under `cid` (content
    /// addressing gives identical fragments one content id).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn cid_in_use(&self, cid: &str) -> Result<bool, GatewayError> {
        Ok(
            sqlx::query("SELECT 1 FROM placements WHERE cid = $1 LIMIT 1")
                .bind(cid)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Ids of the master keys that wrapped the stored data keys.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn master_key_ids(&self) -> Result<Vec<String>, GatewayError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT key_id FROM data_keys")
            .fetch_all(&self.pool)
            .await?)
    }

    // ---- overflow ----

    /// Up to `limit` fragments that have a copy in the overflow store, with
    /// all their placements.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn overflowed(&self, limit: i64) -> Result<Vec<OverflowedFragment>, GatewayError> {
        let rows = sqlx::query(
            "SELECT f.data_id, f.seq, f.idx, f.size, f.md5, p.network, p.node_id, p.cid \
             FROM (SELECT DISTINCT data_id, seq, idx FROM placements WHERE network = $1 LIMIT $2) o \
             JOIN fragments f ON f.data_id = o.data_id AND f.seq = o.seq AND f.idx = o.idx \
             JOIN placements p ON p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx \
             ORDER BY f.data_id, f.seq, f.idx",
        )
        .bind(OVERFLOW)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<OverflowedFragment> = Vec::new();
        for row in &rows {
            let data_id: String = row.try_get("data_id")?;
            let seq = u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX);
            let index = u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(u16::MAX);
            let placement = placement_of(row)?;
            match out.last_mut() {
                Some(o) if o.data_id == data_id && o.seq == seq && o.fragment.index == index => {
                    o.fragment.placements.push(placement);
                }
                _ => out.push(OverflowedFragment {
                    data_id,
                    seq,
                    fragment: FragmentRow {
                        index,
                        size: to_u64(row.try_get("size")?),
                        md5: md5_from_hex(&row.try_get::<String, _>("md5")?)?,
                        placements: vec![placement],
                    },
                }),
            }
        }
        Ok(out)
    }

    /// Records node replicas `added` to an overflowed fragment; when
    /// `settled` (it has its full node placement now) its overflow copy is
    /// forgotten and its content id queued for unpinning. `false` when the
    /// fragment is gone meanwhile (its object deleted or overwritten).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn return_from_overflow(
        &self,
        data_id: &str,
        seq: u32,
        fragment: &FragmentRow,
        added: &[Placement],
        settled: bool,
    ) -> Result<bool, GatewayError> {
        write_tx!(self, |tx| {
            let exists =
                sqlx::query("SELECT 1 FROM fragments WHERE data_id = $1 AND seq = $2 AND idx = $3")
                    .bind(data_id)
                    .bind(i64::from(seq))
                    .bind(i64::from(fragment.index))
                    .fetch_optional(&mut **tx)
                    .await?
                    .is_some();
            if !exists {
                return Ok(false);
            }
            for p in added {
                sqlx::query(
                    "INSERT INTO placements (data_id, seq, idx, network, node_id, cid) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(data_id)
                .bind(i64::from(seq))
                .bind(i64::from(fragment.index))
                .bind(p.network_name())
                .bind(p.node_id())
                .bind(p.cid())
                .execute(&mut **tx)
                .await?;
            }
            if settled {
                let gone: Vec<Placement> = fragment
                    .placements
                    .iter()
                    .filter(|p| p.cid().is_some())
                    .cloned()
                    .collect();
                sqlx::query(
                    "DELETE FROM placements WHERE data_id = $1 AND seq = $2 AND idx = $3 AND network = $4",
                )
                .bind(data_id)
                .bind(i64::from(seq))
                .bind(i64::from(fragment.index))
                .bind(OVERFLOW)
                .execute(&mut **tx)
                .await?;
                let replicas: Vec<Replica> = gone
                    .into_iter()
                    .map(|placement| Replica {
                        key: node_key(data_id, seq, fragment.index),
                        placement,
                    })
                    .collect();
                Self::add_garbage_in(tx, &replicas).await?;
            }
            Ok(true)
        })
    }

    /// How many fragments, and how many bytes of them, live in the overflow
    /// store.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn overflow_usage(&self) -> Result<(u64, u64), GatewayError> {
        let (count, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(f.size), 0) AS BIGINT) FROM placements p \
             JOIN fragments f ON f.data_id = p.data_id AND f.seq = p.seq AND f.idx = p.idx \
             WHERE p.network = $1",
        )
        .bind(OVERFLOW)
        .fetch_one(&self.pool)
        .await?;
        Ok((to_u64(count), to_u64(bytes)))
    }

    /// Number of replicas waiting for deletion.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn garbage_len(&self) -> Result<i64, GatewayError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM garbage")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Forgets a queued replica once its node confirmed the deletion.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn remove_garbage(&self, id: i64) -> Result<(), GatewayError> {
        sqlx::query("DELETE FROM garbage WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- nodes ----

    /// Registers a node and returns its id.
    ///
    /// # Errors
    /// [`GatewayError::InvalidArgument`] when the name is taken.
    pub async fn add_node(&self, node: &NewNode) -> Result<i64, GatewayError> {
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            GatewayError::Config(
                "registering a node needs the master key, to seal its secret: set TENFOLD_MASTER_KEY, pass --master-key-file, or use --data with a dev folder".into(),
            )
        })?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO nodes (name, endpoint, network, capacity, access_key, secret_key, bucket, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(&node.name)
        .bind(&node.endpoint)
        .bind(node.network.as_str())
        .bind(to_i64(node.capacity))
        .bind(&node.access_key)
        .bind(keyring.seal_secret(&node.secret_key))
        .bind(&node.bucket)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        id.ok_or_else(|| {
            GatewayError::InvalidArgument(format!(
                "a node named {:?} is already registered",
                node.name
            ))
        })
    }

    /// Updates a registered node's endpoint and capacity (a `tenfold dev`
    /// node that came back on another port).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn update_node(
        &self,
        id: i64,
        endpoint: &str,
        capacity: u64,
    ) -> Result<(), GatewayError> {
        sqlx::query("UPDATE nodes SET endpoint = $1, capacity = $2 WHERE id = $3")
            .bind(endpoint)
            .bind(to_i64(capacity))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every registered node, with the bytes the index records on it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn nodes(&self) -> Result<Vec<NodeSpec>, GatewayError> {
        let rows = sqlx::query(
            "SELECT n.id, n.name, n.endpoint, n.network, n.capacity, n.access_key, n.secret_key, n.bucket, \
                    CAST(COALESCE((SELECT SUM(f.size) FROM placements p JOIN fragments f \
                              ON f.data_id = p.data_id AND f.seq = p.seq AND f.idx = p.idx \
                              WHERE p.node_id = n.id), 0) AS BIGINT) AS stored \
             FROM nodes n ORDER BY n.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let network: String = row.try_get("network")?;
                Ok(NodeSpec {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    endpoint: row.try_get("endpoint")?,
                    network: network.parse().map_err(GatewayError::Internal)?,
                    capacity: to_u64(row.try_get("capacity")?),
                    stored_bytes: to_u64(row.try_get("stored")?),
                    access_key: row.try_get("access_key")?,
                    secret_key: match &self.keyring {
                        Some(keyring) => {
                            keyring.open_secret(&row.try_get::<String, _>("secret_key")?)?
                        }
                        None => row.try_get("secret_key")?,
                    },
                    bucket: row.try_get("bucket")?,
                })
            })
            .collect()
    }

    /// Unregisters a node that holds no replica.
    ///
    /// # Errors
    /// [`GatewayError::InvalidArgument`] when it still holds replicas or does
    /// not exist.
    pub async fn remove_node(&self, id: i64) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            let held: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM placements WHERE node_id = $1")
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
            if held > 0 {
                return Err(GatewayError::InvalidArgument(format!(
                    "node {id} still holds {held} replicas; it cannot be removed yet"
                )));
            }
            sqlx::query("DELETE FROM garbage WHERE node_id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            let done = sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(GatewayError::InvalidArgument(format!(
                    "no node with id {id}"
                )));
            }
            Ok(())
        })
    }

    // ---- share links ----

    /// Records a share link: the hash of its id, what it opens and until
    /// when (ms since the epoch).
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket does not exist.
    pub async fn add_share(
        &self,
        token_hash: &str,
        bucket: &str,
        prefix: &str,
        expires_at: i64,
    ) -> Result<(), GatewayError> {
        self.require_bucket(bucket).await?;
        sqlx::query(
            "INSERT INTO shares (token_hash, bucket, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(bucket)
        .bind(prefix)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The share link whose id hashes to `token_hash`, revoked or not.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn share(&self, token_hash: &str) -> Result<Option<ShareRow>, GatewayError> {
        let row = sqlx::query(
            "SELECT bucket, prefix, expires_at, revoked FROM shares WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ShareRow {
                bucket: row.try_get("bucket")?,
                prefix: row.try_get("prefix")?,
                expires_at: row.try_get("expires_at")?,
                revoked: row.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
    }

    /// Revokes a share link; `false` when there is none with this hash.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn revoke_share(&self, token_hash: &str) -> Result<bool, GatewayError> {
        let done = sqlx::query("UPDATE shares SET revoked = 1 WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_fragment_object(key: &str, cid: &str) -> (ObjectRow, StoredData) {
        let data_id = format!("data-{key}");
        let data = StoredData {
            data_id: data_id.clone(),
            size: 1,
            md5: [0; 16],
            checksums: Checksums::default(),
            key: None,
            segments: vec![SegmentRow {
                data_id,
                seq: 0,
                plain_offset: 0,
                plain_size: 1,
                frames: None,
                key: None,
                fragments: vec![FragmentRow {
                    index: 0,
                    size: 1,
                    md5: [0; 16],
                    placements: vec![Placement::Overflow { cid: cid.into() }],
                }],
            }],
        };
        let object = ObjectRow {
            id: format!("object-{key}"),
            bucket: "b".into(),
            key: key.into(),
            size: 1,
            etag: "e".into(),
            checksums: Checksums::default(),
            content_type: None,
            metadata: HashMap::new(),
            headers: ObjectHeaders::default(),
            last_modified: 0,
            parts_count: None,
        };
        (object, data)
    }

    /// Content addressing gives identical fragments one content id: it is
    /// in use until the last fragment that has it goes, and every deletion
    /// queues it (the collector unpins only when it is no longer in use).
    #[tokio::test]
    async fn a_content_id_is_in_use_while_any_fragment_has_it() {
        let dir = std::env::temp_dir().join(format!("tenfold-index-cid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = Index::open(&sqlite_url_for_dir(&dir)).await.unwrap();
        index.create_bucket("b", &Owner::Admin).await.unwrap();
        for key in ["x", "y"] {
            let (object, data) = one_fragment_object(key, "shared-cid");
            index.commit_object(&object, &data, false).await.unwrap();
        }
        assert!(index.cid_in_use("shared-cid").await.unwrap());
        assert_eq!(index.overflow_usage().await.unwrap(), (2, 2));

        assert!(index.delete_object("b", "x").await.unwrap());
        assert!(index.cid_in_use("shared-cid").await.unwrap());
        let queued = index.garbage(10).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1.placement.cid(), Some("shared-cid"));

        assert!(index.delete_object("b", "y").await.unwrap());
        assert!(!index.cid_in_use("shared-cid").await.unwrap());
        assert_eq!(index.overflow_usage().await.unwrap(), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn multi_row_inserts_number_every_placeholder() {
        assert_eq!(
            insert_rows_sql("t", &["a", "b", "c"], 2),
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(
            insert_rows_sql("t", &["a"], 1),
            "INSERT INTO t (a) VALUES ($1)"
        );
    }

    #[tokio::test]
    async fn an_index_migrated_by_a_newer_binary_is_refused() {
        let dir = std::env::temp_dir().join(format!("tenfold-index-newer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = sqlite_url_for_dir(&dir);
        let index = Index::open(&url).await.unwrap();
        sqlx::query(NEWER_MIGRATION)
            .execute(&index.pool)
            .await
            .unwrap();
        index.pool.close().await;
        let err = Index::open(&url).await.unwrap_err().to_string();
        assert!(err.contains("newer than this binary"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A migration this binary does not know, as a newer one would record.
    const NEWER_MIGRATION: &str = "INSERT INTO _sqlx_migrations \
        (version, description, success, checksum, execution_time) \
        VALUES (99990101000000, 'from a newer tenfold', TRUE, x'00', 0)";
}
