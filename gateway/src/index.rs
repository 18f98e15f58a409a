//! The index: buckets, objects, their segments, fragments and placements,
//! the node registry and the garbage queue, in SQLite.
//!
//! Every query here is plain SQL with `$n` parameters, portable to Postgres.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tenfold_balancer::{Network, NodeSpec};

use crate::error::GatewayError;
use crate::fragment::node_key;

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

/// A visible object.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
}

/// Where one replica of a fragment is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlacementRow {
    pub network: String,
    pub node: Option<i64>,
    pub cid: Option<String>,
}

/// One fragment of a segment, with its replicas.
#[derive(Debug, Clone)]
pub struct FragmentRow {
    pub index: u16,
    pub size: u64,
    pub md5: [u8; 16],
    pub placements: Vec<PlacementRow>,
}

/// One segment of an object, with its fragments in index order.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    pub seq: u32,
    pub plain_offset: u64,
    pub plain_size: u64,
    pub fragments: Vec<FragmentRow>,
}

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
#[derive(Debug, Clone)]
pub struct Index {
    pool: SqlitePool,
}

/// The folder's index URL for `--data DIR`.
pub fn sqlite_url_for_dir(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("index.db").display())
}

impl Index {
    /// Opens the index at `url` (`sqlite://PATH`), creating it when missing,
    /// and applies pending migrations.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for an unknown URL or a database newer than
    /// this binary; [`GatewayError::Index`] when it cannot be opened.
    pub async fn open(url: &str) -> Result<Self, GatewayError> {
        if !url.starts_with("sqlite:") {
            return Err(GatewayError::Config(format!(
                "unsupported index URL {url:?}: expected sqlite://PATH"
            )));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| {
                GatewayError::Config(format!(
                    "index migration failed (is the index newer than this binary?): {e}"
                ))
            })?;
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, GatewayError> {
        // IMMEDIATE takes the write lock up front, so two writers queue on the
        // busy timeout instead of failing to upgrade a read lock.
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    // ---- buckets ----

    /// Creates a bucket; `false` when it already exists.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn create_bucket(&self, name: &str) -> Result<bool, GatewayError> {
        let done = sqlx::query(
            "INSERT INTO buckets (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

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
        let mut tx = self.begin_write().await?;
        let has_objects = sqlx::query("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if has_objects {
            return Err(GatewayError::BucketNotEmpty(name.to_owned()));
        }
        let done = sqlx::query("DELETE FROM buckets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::NoSuchBucket(name.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// All buckets with their creation times (ms), by name.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn list_buckets(&self) -> Result<Vec<(String, i64)>, GatewayError> {
        Ok(
            sqlx::query_as("SELECT name, created_at FROM buckets ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    // ---- objects ----

    fn object_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ObjectRow, GatewayError> {
        let metadata: String = row.try_get("metadata")?;
        Ok(ObjectRow {
            id: row.try_get("id")?,
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            size: to_u64(row.try_get("size")?),
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            last_modified: row.try_get("last_modified")?,
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
            "SELECT id, bucket, key, size, etag, content_type, metadata, last_modified \
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
            "SELECT id, bucket, key, size, etag, content_type, metadata, last_modified \
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

    /// The segments of an object with their fragments and placements.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn layout(&self, object_id: &str) -> Result<Vec<SegmentRow>, GatewayError> {
        let rows = sqlx::query(
            "SELECT s.seq, s.plain_offset, s.plain_size, f.idx, f.size, f.md5, p.network, p.node_id, p.cid \
             FROM segments s \
             JOIN fragments f ON f.object_id = s.object_id AND f.seq = s.seq \
             LEFT JOIN placements p ON p.object_id = f.object_id AND p.seq = f.seq AND p.idx = f.idx \
             WHERE s.object_id = $1 ORDER BY s.seq, f.idx",
        )
        .bind(object_id)
        .fetch_all(&self.pool)
        .await?;
        let mut segments: Vec<SegmentRow> = Vec::new();
        for row in &rows {
            let seq = u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX);
            if segments.last().is_none_or(|s| s.seq != seq) {
                segments.push(SegmentRow {
                    seq,
                    plain_offset: to_u64(row.try_get("plain_offset")?),
                    plain_size: to_u64(row.try_get("plain_size")?),
                    fragments: Vec::new(),
                });
            }
            let segment = segments
                .last_mut()
                .ok_or_else(|| GatewayError::Internal("layout".into()))?;
            let index = u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(u16::MAX);
            if segment.fragments.last().is_none_or(|f| f.index != index) {
                let md5_hex: String = row.try_get("md5")?;
                let md5 = hex::decode(&md5_hex)
                    .ok()
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .ok_or_else(|| {
                        GatewayError::Internal(format!("bad md5 in index: {md5_hex}"))
                    })?;
                segment.fragments.push(FragmentRow {
                    index,
                    size: to_u64(row.try_get("size")?),
                    md5,
                    placements: Vec::new(),
                });
            }
            if let Some(network) = row.try_get::<Option<String>, _>("network")? {
                let fragment = segment
                    .fragments
                    .last_mut()
                    .ok_or_else(|| GatewayError::Internal("layout".into()))?;
                fragment.placements.push(PlacementRow {
                    network,
                    node: row.try_get("node_id")?,
                    cid: row.try_get("cid")?,
                });
            }
        }
        Ok(segments)
    }

    /// Makes a fully placed object visible, replacing any object at the same
    /// key, whose replicas go to the garbage queue, all in one transaction.
    ///
    /// # Errors
    /// [`GatewayError::NoSuchBucket`] when the bucket went away meanwhile,
    /// [`GatewayError::Index`].
    pub async fn commit_object(
        &self,
        object: &ObjectRow,
        segments: &[SegmentRow],
    ) -> Result<(), GatewayError> {
        let mut tx = self.begin_write().await?;
        let bucket_exists = sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
            .bind(&object.bucket)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !bucket_exists {
            return Err(GatewayError::NoSuchBucket(object.bucket.clone()));
        }
        let old: Option<String> =
            sqlx::query_scalar("SELECT id FROM objects WHERE bucket = $1 AND key = $2")
                .bind(&object.bucket)
                .bind(&object.key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(old_id) = old {
            Self::discard_in(&mut tx, &old_id).await?;
        }
        sqlx::query(
            "INSERT INTO objects (id, bucket, key, size, etag, content_type, metadata, last_modified) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&object.id)
        .bind(&object.bucket)
        .bind(&object.key)
        .bind(to_i64(object.size))
        .bind(&object.etag)
        .bind(&object.content_type)
        .bind(serde_json::to_string(&object.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(object.last_modified)
        .execute(&mut *tx)
        .await?;
        for s in segments {
            sqlx::query(
                "INSERT INTO segments (object_id, seq, plain_offset, plain_size, fragment_count) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&object.id)
            .bind(i64::from(s.seq))
            .bind(to_i64(s.plain_offset))
            .bind(to_i64(s.plain_size))
            .bind(i64::try_from(s.fragments.len()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            for f in &s.fragments {
                sqlx::query("INSERT INTO fragments (object_id, seq, idx, size, md5) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&object.id)
                    .bind(i64::from(s.seq))
                    .bind(i64::from(f.index))
                    .bind(to_i64(f.size))
                    .bind(hex::encode(f.md5))
                    .execute(&mut *tx)
                    .await?;
                for p in &f.placements {
                    sqlx::query(
                        "INSERT INTO placements (object_id, seq, idx, network, node_id, cid) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&object.id)
                    .bind(i64::from(s.seq))
                    .bind(i64::from(f.index))
                    .bind(&p.network)
                    .bind(p.node)
                    .bind(&p.cid)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves an object's replicas to the garbage queue and deletes its rows.
    async fn discard_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        object_id: &str,
    ) -> Result<(), GatewayError> {
        let replicas: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT node_id, seq, idx FROM placements WHERE object_id = $1 AND node_id IS NOT NULL",
        )
        .bind(object_id)
        .fetch_all(&mut **tx)
        .await?;
        let now = now_ms();
        for (node, seq, idx) in replicas {
            let key = node_key(
                object_id,
                u32::try_from(seq).unwrap_or(0),
                u16::try_from(idx).unwrap_or(0),
            );
            sqlx::query("INSERT INTO garbage (node_id, node_key, created_at) VALUES ($1, $2, $3)")
                .bind(node)
                .bind(key)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("DELETE FROM objects WHERE id = $1")
            .bind(object_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Deletes the object at `bucket`/`key`; its replicas go to the garbage
    /// queue. `false` when there was none.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, GatewayError> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM objects WHERE bucket = $1 AND key = $2")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else { return Ok(false) };
        Self::discard_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- garbage ----

    /// Queues replicas for deletion from their nodes.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn add_garbage(&self, replicas: &[(i64, String)]) -> Result<(), GatewayError> {
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        for (node, key) in replicas {
            sqlx::query("INSERT INTO garbage (node_id, node_key, created_at) VALUES ($1, $2, $3)")
                .bind(node)
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The oldest queued replicas: `(id, node, key)`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn garbage(&self, limit: i64) -> Result<Vec<(i64, i64, String)>, GatewayError> {
        Ok(
            sqlx::query_as("SELECT id, node_id, node_key FROM garbage ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
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
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO nodes (name, endpoint, network, capacity, access_key, secret_key, bucket, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(&node.name)
        .bind(&node.endpoint)
        .bind(node.network.as_str())
        .bind(to_i64(node.capacity))
        .bind(&node.access_key)
        .bind(&node.secret_key)
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
                    COALESCE((SELECT SUM(f.size) FROM placements p JOIN fragments f \
                              ON f.object_id = p.object_id AND f.seq = p.seq AND f.idx = p.idx \
                              WHERE p.node_id = n.id), 0) AS stored \
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
                    secret_key: row.try_get("secret_key")?,
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
        let mut tx = self.begin_write().await?;
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM placements WHERE node_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if held > 0 {
            return Err(GatewayError::InvalidArgument(format!(
                "node {id} still holds {held} replicas; it cannot be removed yet"
            )));
        }
        sqlx::query("DELETE FROM garbage WHERE node_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::InvalidArgument(format!(
                "no node with id {id}"
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}
