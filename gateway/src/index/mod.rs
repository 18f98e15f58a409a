//! The index: buckets, objects, their segments, fragments and placements,
//! the node registry and the garbage queue, in SQLite (one gateway) or
//! Postgres (several gateways sharing it).
//!
//! Every query here is plain SQL with `$n` parameters that both engines
//! run; write transactions go through `write_tx!`, which runs them again
//! when they lose a race with another writer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, Executor, Row};

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
            .and_then(|f| serde_json::from_str(&f).ok()),
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
    /// Seconds the reads on the request path took, by query: `object`
    /// (HEAD, GET), `layout` (where a GET's fragments are), `listing`,
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
        let started = std::time::Instant::now();
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
mod garbage;
mod multipart;
mod nodes;
mod objects;
mod orphans;
mod overflow;
mod packed;
mod repair;
mod rows;
mod scrub;
mod shares;

pub use access_keys::{AccessKeyRow, Owner};
pub use counters::{Counter, Counters, Repaired};
pub use nodes::NodeRecord;
pub use orphans::NamedReplicas;
pub use repair::{CheckedSegments, Redundancy, WalkCursor};
pub use rows::{
    Assembly, FragmentRow, NewNode, ObjectHeaders, ObjectRow, PartRow, QueuedReplica,
    RepairCandidate, SegmentRow, ShareRow, StoredData, StoredPart, Tags, UploadAllowance,
    UploadRow, WriteCondition,
};
pub use scrub::{AuditPolicy, ScrubBatch, ScrubCursor, ScrubItem};

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

impl Index {
    /// The ETag of the object at `bucket`/`key` now, in `tx`, for a
    /// conditional write.
    async fn current_etag_in(
        tx: &mut Tx,
        bucket: &str,
        key: &str,
    ) -> Result<Option<String>, GatewayError> {
        Ok(
            sqlx::query_scalar("SELECT etag FROM objects WHERE bucket = $1 AND key = $2")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?,
        )
    }

    /// Asks the database for nothing: whether it answers.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn ping(&self) -> Result<(), GatewayError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
                                "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
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
        migrator.run(&pool).await.map_err(|e| {
            GatewayError::Config(format!(
                "index migration failed (is the index newer than this binary?): {e}"
            ))
        })?;
        Ok(Self {
            pool,
            engine,
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

    /// How its write transactions fare (shared by its clones).
    pub fn stats(&self) -> &IndexStats {
        &self.stats
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
        self.stats.write_retries.inc();
        tracing::debug!(error = %retry, attempt = *attempt, "index write lost a race: running it again");
        let pause = rand::random_range(1..=5u64 << (*attempt).min(5));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        None
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
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::integrity::Checksums;
    use tenfold_balancer::{Placement, Replica};

    /// The data id of test object `key` (one letter): the shape every
    /// data id has.
    fn data_id_of(key: &str) -> String {
        format!("{:0>32}", hex::encode(key))
    }

    fn one_fragment_object(key: &str, cid: &str) -> (ObjectRow, StoredData) {
        let data_id = data_id_of(key);
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
            short: Vec::new(),
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
            tags: Vec::new(),
        };
        (object, data)
    }

    /// A write placed short of the policy is queued for repair in its
    /// commit; a repair's new copy is recorded once however often the
    /// record is repeated, and counted once; a node's audits make its last
    /// pass's findings when the pass ends; discarding the data drops its
    /// queue entry.
    #[tokio::test]
    async fn short_writes_repairs_and_audit_passes_are_recorded() {
        use crate::crypto::MasterKey;
        use tenfold_balancer::{Network, ReplicaPolicy};
        let dir = std::env::temp_dir().join(format!("tenfold-index-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keyring = Keyring::new(
            MasterKey::parse(&MasterKey::generate()).unwrap(),
            Vec::new(),
        );
        let index = Index::open(&crate::data_dir::DataDir::new(&dir).index_url())
            .await
            .unwrap()
            .with_keyring(keyring);
        index.create_bucket("b", &Owner::Admin).await.unwrap();
        let mut nodes = Vec::new();
        for name in ["n1", "n2"] {
            let node = NewNode {
                name: name.into(),
                endpoint: format!("http://{name}"),
                network: Network::Mainnet,
                capacity: 1 << 30,
                access_key: "k".into(),
                secret_key: "s".into(),
                bucket: "tenfold".into(),
            };
            nodes.push(index.add_node(&node).await.unwrap());
        }
        let on = |node_id| Placement::Node {
            node_id,
            network: Network::Mainnet,
        };
        for (key, short) in [("x", vec![(0, 0)]), ("y", Vec::new())] {
            let (object, mut data) = one_fragment_object(key, "unused");
            data.segments[0].fragments[0].placements = vec![on(nodes[0])];
            data.short = short;
            index
                .commit_object(&object, &data, &WriteCondition::Always)
                .await
                .unwrap();
        }
        let queued = index.repair_candidates(10).await.unwrap();
        assert_eq!(queued.len(), 1, "{queued:?}");
        let x = data_id_of("x");
        assert_eq!(queued[0].id(), (x.as_str(), 0, 0));

        let policy = ReplicaPolicy::default();
        for _ in 0..2 {
            let kept = index
                .record_repair((&x, 0, 0), &[on(nodes[1])], None, policy)
                .await
                .unwrap();
            assert!(kept);
        }
        let now = index
            .repair_candidate((&x, 0, 0), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.copies.len(), 2, "{now:?}");
        assert_eq!(index.counters().await.unwrap().repaired.copies, 1);

        // An audit pass's findings become the node's last pass at its end.
        let policy_of_audits = AuditPolicy {
            min_audits: 10,
            max_failure_share: 0.25,
        };
        index
            .record_audits(nodes[0], 3, 2, false, policy_of_audits)
            .await
            .unwrap();
        let during = index.node_records().await.unwrap()[&nodes[0]];
        assert_eq!((during.pass_audits, during.pass_failures), (5, 2));
        assert_eq!(during.last_pass_end, None);
        index
            .record_audits(nodes[0], 1, 0, true, policy_of_audits)
            .await
            .unwrap();
        let after = index.node_records().await.unwrap()[&nodes[0]];
        assert_eq!((after.pass_audits, after.pass_failures), (0, 0));
        assert_eq!((after.last_pass_audits, after.last_pass_failures), (6, 2));
        assert!(after.last_pass_end.is_some());
        assert_eq!((after.audits, after.audit_failures), (6, 2));

        assert!(index.delete_object("b", "x").await.unwrap());
        assert!(index.repair_candidates(10).await.unwrap().is_empty());
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM repairs")
            .fetch_one(&index.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Content addressing gives identical fragments one content id: it is
    /// in use until the last fragment that has it goes, and every deletion
    /// queues it (the collector unpins only when it is no longer in use).
    #[tokio::test]
    async fn a_content_id_is_in_use_while_any_fragment_has_it() {
        let dir = std::env::temp_dir().join(format!("tenfold-index-cid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = Index::open(&crate::data_dir::DataDir::new(&dir).index_url())
            .await
            .unwrap();
        index.create_bucket("b", &Owner::Admin).await.unwrap();
        for key in ["x", "y"] {
            let (object, data) = one_fragment_object(key, "shared-cid");
            index
                .commit_object(&object, &data, &WriteCondition::Always)
                .await
                .unwrap();
        }
        assert!(index.cid_in_use("shared-cid").await.unwrap());
        assert_eq!(index.overflow_usage().await.unwrap(), (2, 2));

        assert!(index.delete_object("b", "x").await.unwrap());
        assert!(index.cid_in_use("shared-cid").await.unwrap());
        let queued = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].replica.placement.cid(), Some("shared-cid"));

        assert!(index.delete_object("b", "y").await.unwrap());
        assert!(!index.cid_in_use("shared-cid").await.unwrap());
        assert_eq!(index.overflow_usage().await.unwrap(), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The garbage queue hands out only what is due (released before the
    /// grace period's start, not claimed, not backing off), oldest first,
    /// and each entry comes back on its own schedule.
    #[tokio::test]
    async fn garbage_is_claimed_when_due_and_retried_on_its_own() {
        let dir = std::env::temp_dir().join(format!("tenfold-index-gc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = Index::open(&crate::data_dir::DataDir::new(&dir).index_url())
            .await
            .unwrap();
        let replica = |node_id, key: &str| Replica {
            key: key.to_owned(),
            placement: Placement::Node {
                node_id,
                network: tenfold_balancer::Network::Mainnet,
            },
        };
        let queued: Vec<Replica> = (0..4)
            .map(|i| replica(1 + i % 2, &format!("d{i}/0/0")))
            .collect();
        index.add_garbage(&queued).await.unwrap();
        // Within the grace period nothing is due.
        assert!(
            index
                .claim_garbage(now_ms() - 60_000, 60_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Then every entry, oldest first, claimed once.
        let first = index.claim_garbage(now_ms(), 60_000, 3).await.unwrap();
        let keys: Vec<&str> = first.iter().map(|q| q.replica.key.as_str()).collect();
        assert_eq!(keys, ["d0/0/0", "d1/0/0", "d2/0/0"]);
        let rest = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
        assert_eq!(rest.len(), 1, "claimed entries were handed out again");
        // A failure puts one back with a back-off, and counts the attempt.
        index
            .retry_garbage(first[0].id, now_ms() + 60_000, Some("node down"))
            .await
            .unwrap();
        index
            .retry_garbage(first[1].id, now_ms() - 1, Some("node down"))
            .await
            .unwrap();
        index.remove_garbage(first[2].id).await.unwrap();
        let again = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id, again[0].attempts), (first[1].id, 1));
        assert_eq!(index.garbage_len().await.unwrap(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A test index's URL: a fresh database on the Postgres server at
    /// `TENFOLD_TEST_PG` when it is set (the test script's Postgres pass),
    /// else SQLite in `dir`.
    async fn test_index_url(dir: &std::path::Path) -> String {
        match std::env::var("TENFOLD_TEST_PG") {
            Ok(server) => {
                sqlx::any::install_default_drivers();
                let server = server.trim_end_matches('/');
                let name = format!("u{:016x}", rand::random::<u64>());
                let admin = AnyPool::connect(&format!("{server}/postgres"))
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                format!("{server}/{name}")
            }
            Err(_) => crate::data_dir::DataDir::new(dir).index_url(),
        }
    }

    /// An index written before segments were packed (migration 19) moves
    /// forward whole: layout, keys, overflow pins, the repair queue and
    /// writes in flight, and what a deletion then queues and frees.
    #[tokio::test]
    async fn an_index_of_placement_rows_moves_to_packed_segments() {
        let dir = std::env::temp_dir().join(format!("tenfold-index-v18-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = test_index_url(&dir).await;
        // The schema as migration 18 left it.
        let engine = Engine::of_url(&url).unwrap();
        {
            let index = Index::open_at(&url, Some(18)).await.unwrap();
            assert_eq!(index.engine, engine);
            let (d, o) = (
                "0123456789abcdef0123456789abcdef",
                "fedcba9876543210fedcba9876543210",
            );
            let (md5a, md5b) = (hex::encode([0xaa; 16]), hex::encode([0xbb; 16]));
            let wrapped = hex::encode([7u8; 60]);
            for sql in [
                "INSERT INTO nodes (id, name, endpoint, network, capacity, access_key, secret_key, bucket, created_at) \
                 VALUES (1, 'n1', 'http://n1', 'mainnet', 100, 'k', 's', 'tenfold', 0), \
                        (2, 'n2', 'http://n2', 'testnet', 100, 'k', 's', 'tenfold', 0)".to_owned(),
                "INSERT INTO buckets (name, created_at) VALUES ('b', 0)".to_owned(),
                format!("INSERT INTO objects (id, bucket, key, size, etag, metadata, headers, checksums, last_modified) \
                         VALUES ('{o}', 'b', 'k', 10, 'e', '{{}}', '{{}}', '{{}}', 0)"),
                format!("INSERT INTO object_parts (object_id, part_number, data_id, plain_offset, size, etag) \
                         VALUES ('{o}', 1, '{d}', 0, 10, 'e')"),
                format!("INSERT INTO segments (data_id, seq, plain_offset, plain_size, fragment_count, frames) \
                         VALUES ('{d}', 0, 0, 10, 2, NULL)"),
                format!("INSERT INTO data_keys (data_id, key_id, wrapped) VALUES ('{d}', 'k1', '{wrapped}')"),
                format!("INSERT INTO fragments (data_id, seq, idx, size, md5) \
                         VALUES ('{d}', 0, 0, 5, '{md5a}'), ('{d}', 0, 1, 6, '{md5b}')"),
                format!("INSERT INTO placements (data_id, seq, idx, network, node_id, cid, size) \
                         VALUES ('{d}', 0, 0, 'mainnet', 1, NULL, 5), ('{d}', 0, 0, 'testnet', 2, NULL, 5), \
                                ('{d}', 0, 1, 'overflow', NULL, 'Qmcid', 6)"),
                format!("INSERT INTO repairs (data_id, seq, idx, queued) VALUES ('{d}', 0, 1, 1)"),
                "INSERT INTO writes_in_flight (data_id, heartbeat) \
                 VALUES ('00000000000000000000000000000001', 5)".to_owned(),
            ] {
                sqlx::query(&sql).execute(&index.pool).await.unwrap();
            }
            index.fold_node_usage().await.unwrap();
            index.pool.close().await;
        }
        let index = Index::open(&url).await.unwrap();
        let d = "0123456789abcdef0123456789abcdef";
        let layout = index
            .layout("fedcba9876543210fedcba9876543210", 0..10)
            .await
            .unwrap();
        assert_eq!(layout.len(), 1);
        let s = &layout[0];
        assert_eq!((s.data_id.as_str(), s.seq, s.plain_size), (d, 0, 10));
        let key = s.key.as_ref().unwrap();
        assert_eq!(
            (key.key_id.as_str(), key.wrapped.as_slice()),
            ("k1", &[7u8; 60][..])
        );
        assert_eq!(s.fragments.len(), 2);
        assert_eq!((s.fragments[0].size, s.fragments[0].md5), (5, [0xaa; 16]));
        assert_eq!(
            s.fragments[0].placements,
            [
                Placement::Node {
                    node_id: 1,
                    network: tenfold_balancer::Network::Mainnet
                },
                Placement::Node {
                    node_id: 2,
                    network: tenfold_balancer::Network::Testnet
                },
            ]
        );
        assert_eq!((s.fragments[1].size, s.fragments[1].md5), (6, [0xbb; 16]));
        assert_eq!(
            s.fragments[1].placements,
            [Placement::Overflow {
                cid: "Qmcid".into()
            }]
        );
        assert_eq!(index.master_key_ids().await.unwrap(), ["k1"]);
        assert_eq!(index.overflow_usage().await.unwrap(), (1, 6));
        assert!(index.cid_in_use("Qmcid").await.unwrap());
        let queued: Vec<_> = index
            .repair_candidates(10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.seq, c.index))
            .collect();
        assert_eq!(queued, [(0, 1)]);
        let named = index.named_on_node(1, (d, d), 0).await.unwrap();
        assert_eq!(named.keys.len(), 1, "{:?}", named.keys);
        let writing = index
            .named_on_node(
                1,
                (
                    "00000000000000000000000000000000",
                    "00000000000000000000000000000002",
                ),
                0,
            )
            .await
            .unwrap()
            .writing;
        assert!(writing.contains("00000000000000000000000000000001"));
        // The usage the triggers counted, then what a deletion frees.
        assert_eq!(index.node_records().await.unwrap()[&1].replicas, 1);
        assert!(index.delete_object("b", "k").await.unwrap());
        index.fold_node_usage().await.unwrap();
        let records = index.node_records().await.unwrap();
        assert_eq!((records[&1].replicas, records[&2].replicas), (0, 0));
        assert_eq!(index.garbage_len().await.unwrap(), 3);
        assert_eq!(index.overflow_usage().await.unwrap(), (0, 0));
        assert!(index.repair_candidates(10).await.unwrap().is_empty());
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
        let url = crate::data_dir::DataDir::new(&dir).index_url();
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
