//! The node registry: registrations (secrets sealed with the master key)
//! and the bytes placements record on each node.

use std::collections::BTreeMap;

use sqlx::Row;
use tenfold_balancer::NodeSpec;

use super::rows::NewNode;
use super::writes::Writes;
use super::{Engine, Index, Tx, now_ms, to_i64, to_u64};
use crate::error::GatewayError;

/// What a transaction changes on nodes: bytes and replicas by node id,
/// logged in the same transaction (see [`Index::fold_node_usage`]).
#[derive(Debug, Default)]
pub(super) struct NodeUsage(BTreeMap<i64, (i64, i64)>);

impl NodeUsage {
    /// A replica of `size` bytes placed on `node_id`.
    pub(super) fn add(&mut self, node_id: i64, size: u64) {
        let e = self.0.entry(node_id).or_default();
        e.0 = e.0.saturating_add(to_i64(size));
        e.1 += 1;
    }

    /// A replica of `size` bytes gone from `node_id`.
    pub(super) fn remove(&mut self, node_id: i64, size: u64) {
        let e = self.0.entry(node_id).or_default();
        e.0 = e.0.saturating_sub(to_i64(size));
        e.1 -= 1;
    }
}

/// What the index records of a node besides its registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    /// Replicas placed on it.
    pub replicas: u64,
    /// When a gateway's probe last reached it (ms since the epoch).
    pub last_seen: Option<i64>,
    /// Replicas the scrub audited on it, and how many of those failed.
    pub audits: u64,
    pub audit_failures: u64,
    /// Scrub passes over it completed.
    pub scrub_passes: u64,
    /// Audits in the current pass (spot audits included), and how many
    /// failed.
    pub pass_audits: u64,
    pub pass_failures: u64,
    /// Audits in the last complete pass, how many failed, and when it
    /// ended (ms since the epoch).
    pub last_pass_audits: u64,
    pub last_pass_failures: u64,
    pub last_pass_end: Option<i64>,
}

impl Index {
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
        .fetch_optional(&mut self.reader().await?)
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
            .execute(&mut self.reader().await?)
            .await?;
        Ok(())
    }

    /// Records what a transaction changed on nodes. On Postgres it goes to
    /// the usage log (append-only: the commits of several gateways never
    /// wait on a node's row), folded later; SQLite has one writer, so its
    /// transaction adds it to the nodes' counters at once, and the index
    /// holds no log that grows with recent writes.
    pub(super) async fn log_usage_in(
        tx: &mut Tx<'_>,
        usage: &NodeUsage,
    ) -> Result<(), GatewayError> {
        let mut writes = Writes::new(Engine::of_tx(tx));
        Self::queue_usage(&mut writes, usage);
        writes.run(tx).await
    }

    /// Queues [`Index::log_usage_in`]'s statements.
    pub(super) fn queue_usage(writes: &mut Writes, usage: &NodeUsage) {
        let rows: Vec<_> = usage.0.iter().filter(|(_, c)| **c != (0, 0)).collect();
        let (head, tail) = match writes.engine() {
            // SQLite names a VALUES list's columns column1, column2…
            Engine::Sqlite => (
                "UPDATE nodes SET stored = nodes.stored + v.column2, \
                 replicas = nodes.replicas + v.column3 FROM (",
                ") AS v WHERE nodes.id = v.column1",
            ),
            Engine::Postgres => ("INSERT INTO node_usage_log (node_id, bytes, replicas)", ""),
        };
        writes.rows(head, 3, tail, &rows, |row, (node_id, (bytes, replicas))| {
            row.bind(**node_id).bind(*bytes).bind(*replicas);
        });
    }

    /// Folds the node usage log (what commits, deletions and repairs
    /// changed, logged in their transactions) into each node's `stored` and
    /// `replicas` counters, so that reading them stays cheap however much
    /// is stored. Idempotent, and safe with several gateways folding: each
    /// log row is counted once, by whoever deletes it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn fold_node_usage(&self) -> Result<(), GatewayError> {
        match self.engine() {
            // One statement: only the rows it deletes are added, and
            // outside SERIALIZABLE, so it never fails a commit.
            Engine::Postgres => {
                sqlx::query(
                    "WITH moved AS (DELETE FROM node_usage_log RETURNING node_id, bytes, replicas), \
                          sums AS (SELECT node_id, SUM(bytes) AS bytes, SUM(replicas) AS replicas \
                                   FROM moved GROUP BY node_id) \
                     UPDATE nodes SET stored = nodes.stored + sums.bytes, \
                                      replicas = nodes.replicas + sums.replicas \
                     FROM sums WHERE nodes.id = sums.node_id",
                )
                .execute(&mut self.reader().await?)
                .await?;
            }
            // Only an index written by an older version has a log here.
            // One writer at a time: the transaction sees every row it
            // deletes. Nothing logged (the common case): no write lock
            // taken.
            Engine::Sqlite => {
                let logged = sqlx::query("SELECT 1 FROM node_usage_log LIMIT 1")
                    .fetch_optional(&mut self.reader().await?)
                    .await?;
                if logged.is_none() {
                    return Ok(());
                }
                write_tx!(self, |tx| {
                    sqlx::query(
                        "UPDATE nodes SET \
                           stored = stored + COALESCE((SELECT SUM(l.bytes) FROM node_usage_log l \
                                                       WHERE l.node_id = nodes.id), 0), \
                           replicas = replicas + COALESCE((SELECT SUM(l.replicas) FROM node_usage_log l \
                                                           WHERE l.node_id = nodes.id), 0) \
                         WHERE id IN (SELECT node_id FROM node_usage_log)",
                    )
                    .execute(tx.conn().await?)
                    .await?;
                    sqlx::query("DELETE FROM node_usage_log")
                        .execute(tx.conn().await?)
                        .await?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Every registered node, with the bytes the index records on it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn nodes(&self) -> Result<Vec<NodeSpec>, GatewayError> {
        self.timed_read("nodes", async {
            let rows = sqlx::query(
                "SELECT n.id, n.name, n.endpoint, n.network, n.capacity, n.access_key, n.secret_key, n.bucket, n.state, \
                        n.stored + CAST(COALESCE((SELECT SUM(l.bytes) FROM node_usage_log l \
                                  WHERE l.node_id = n.id), 0) AS BIGINT) AS stored \
                 FROM nodes n ORDER BY n.id",
            )
            .fetch_all(&mut self.reader().await?)
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
                        state: row
                            .try_get::<String, _>("state")?
                            .parse()
                            .map_err(GatewayError::Internal)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// What the index records of every node besides its registration:
    /// replicas, last sighting, audit record and scrub passes, by node id.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn node_records(
        &self,
    ) -> Result<std::collections::HashMap<i64, NodeRecord>, GatewayError> {
        let rows = sqlx::query(
            "SELECT n.id, n.last_seen, n.audits, n.audit_failures, n.window_audits, \
                    n.window_failures, n.last_pass_audits, n.last_pass_failures, n.last_pass_end, \
                    COALESCE(s.passes, 0) AS passes, \
                    n.replicas + CAST(COALESCE((SELECT SUM(l.replicas) FROM node_usage_log l \
                              WHERE l.node_id = n.id), 0) AS BIGINT) AS replicas \
             FROM nodes n LEFT JOIN node_scrubs s ON s.node_id = n.id",
        )
        .fetch_all(&mut self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    NodeRecord {
                        replicas: to_u64(row.try_get("replicas")?),
                        last_seen: row.try_get("last_seen")?,
                        audits: to_u64(row.try_get("audits")?),
                        audit_failures: to_u64(row.try_get("audit_failures")?),
                        scrub_passes: to_u64(row.try_get("passes")?),
                        pass_audits: to_u64(row.try_get("window_audits")?),
                        pass_failures: to_u64(row.try_get("window_failures")?),
                        last_pass_audits: to_u64(row.try_get("last_pass_audits")?),
                        last_pass_failures: to_u64(row.try_get("last_pass_failures")?),
                        last_pass_end: row.try_get("last_pass_end")?,
                    },
                ))
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
            let held: i64 = sqlx::query_scalar(
                "SELECT replicas + CAST(COALESCE((SELECT SUM(l.replicas) FROM node_usage_log l \
                                                  WHERE l.node_id = nodes.id), 0) AS BIGINT) \
                 FROM nodes WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(tx.conn().await?)
            .await?
            .unwrap_or(0);
            if held > 0 {
                return Err(GatewayError::InvalidArgument(format!(
                    "node {id} still holds {held} replicas; it cannot be removed yet \
                     (`tenfold nodes drain {id}` moves them off)"
                )));
            }
            sqlx::query("DELETE FROM node_usage_log WHERE node_id = $1")
                .bind(id)
                .execute(tx.conn().await?)
                .await?;
            sqlx::query("DELETE FROM garbage WHERE node_id = $1")
                .bind(id)
                .execute(tx.conn().await?)
                .await?;
            let done = sqlx::query("DELETE FROM nodes WHERE id = $1")
                .bind(id)
                .execute(tx.conn().await?)
                .await?;
            if done.rows_affected() == 0 {
                return Err(GatewayError::InvalidArgument(format!(
                    "no node with id {id}"
                )));
            }
            Ok(())
        })
    }
}
