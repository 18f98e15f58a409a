//! The garbage queue: replicas nothing references any more, waiting to be
//! deleted from their node or unpinned from the overflow store.

use sqlx::Row;
use tenfold_balancer::{Network, Placement, Replica};

use super::rows::{GarbageRetry, QueuedReplica};
use super::writes::Writes;
use super::{Engine, Index, Tx, now_ms};
use crate::error::GatewayError;

impl Index {
    pub(super) async fn add_garbage_in(
        tx: &mut Tx<'_>,
        replicas: &[Replica],
    ) -> Result<(), GatewayError> {
        Self::add_garbage_released_in(tx, replicas, now_ms()).await
    }

    /// Queues replicas released at `released_at` (ms): the grace period
    /// runs from then. 0 makes them due at once, for replicas no reader
    /// needs (other copies of the same fragment remain where readers look).
    pub(super) async fn add_garbage_released_in(
        tx: &mut Tx<'_>,
        replicas: &[Replica],
        released_at: i64,
    ) -> Result<(), GatewayError> {
        let mut writes = Writes::new(Engine::of_tx(tx));
        Self::queue_garbage(&mut writes, replicas, released_at);
        writes.run(tx).await
    }

    /// Queues [`Self::add_garbage_released_in`]'s rows: many to a
    /// statement, so that discarding a large object's thousands of replicas
    /// takes a few trips to the database rather than one each.
    pub(super) fn queue_garbage(writes: &mut Writes, replicas: &[Replica], released_at: i64) {
        writes.rows(
            "INSERT INTO garbage (node_id, node_key, cid, created_at)",
            4,
            "",
            replicas,
            |row, r| {
                let node = r.placement.node_id();
                row.bind(node)
                    .bind(node.map(|_| r.key.clone()))
                    .bind(r.placement.cid().map(str::to_owned))
                    .bind(released_at);
            },
        );
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

    /// Claims up to `limit` queued replicas that are due: released at or
    /// before `released_before` (ms; the grace period is the caller's) and
    /// not held back (by a back-off or another gateway's claim). They are
    /// held back for `claim_ms` from now, so no other gateway takes them
    /// meanwhile; the caller then records which were removed and which go
    /// back ([`Self::settle_garbage`]). A gateway that stops half-way
    /// leaves its claims to lapse.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn claim_garbage(
        &self,
        released_before: i64,
        claim_ms: i64,
        limit: i64,
    ) -> Result<Vec<QueuedReplica>, GatewayError> {
        let rows = write_tx!(self, |tx| {
            let now = now_ms();
            Ok(sqlx::query(
                "UPDATE garbage SET not_before = $1 WHERE id IN \
                 (SELECT id FROM garbage WHERE created_at <= $2 AND not_before <= $3 \
                  ORDER BY not_before, id LIMIT $4) \
                 RETURNING id, node_id, node_key, cid, attempts",
            )
            .bind(now.saturating_add(claim_ms))
            .bind(released_before)
            .bind(now)
            .bind(limit)
            .fetch_all(tx.conn().await?)
            .await?)
        })?;
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
            queued.push(QueuedReplica {
                id: row.try_get("id")?,
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                replica,
            });
        }
        queued.sort_by_key(|q| q.id);
        Ok(queued)
    }

    /// Number of replicas waiting for deletion.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn garbage_len(&self) -> Result<i64, GatewayError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM garbage")
            .fetch_one(&mut self.reader().await?)
            .await?)
    }

    /// Records what became of claimed replicas, in one transaction:
    /// `removed` (their nodes confirmed the deletion) leave the queue,
    /// `later` are put back until their time, a failure counted and kept
    /// for operators.
    ///
    /// # Errors
    /// [`GatewayError::Index`]: nothing was recorded; the claims lapse
    /// and the replicas come back.
    pub async fn settle_garbage(
        &self,
        removed: &[i64],
        later: &[GarbageRetry],
    ) -> Result<(), GatewayError> {
        /// Ids to one `DELETE`.
        const IDS_PER_DELETE: usize = 256;
        if removed.is_empty() && later.is_empty() {
            return Ok(());
        }
        write_tx!(self, |tx| {
            let mut writes = Writes::new(Engine::of_tx(tx));
            for ids in removed.chunks(IDS_PER_DELETE) {
                let marks = vec!["?"; ids.len()].join(", ");
                writes.statement(
                    &format!("DELETE FROM garbage WHERE id IN ({marks})"),
                    |row| {
                        for id in ids {
                            row.bind(*id);
                        }
                    },
                );
            }
            for retry in later {
                match &retry.failure {
                    Some(error) => writes.statement(
                        "UPDATE garbage SET not_before = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                        |row| {
                            row.bind(retry.at).bind(error.clone()).bind(retry.id);
                        },
                    ),
                    None => writes.statement("UPDATE garbage SET not_before = ? WHERE id = ?", |row| {
                        row.bind(retry.at).bind(retry.id);
                    }),
                }
            }
            tx.commit_with(writes).await?;
            Ok(())
        })
    }
}
