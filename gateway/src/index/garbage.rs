//! The garbage queue: replicas nothing references any more, waiting to be
//! deleted from their node or unpinned from the overflow store.

use sqlx::Row;
use tenfold_balancer::{Network, Placement, Replica};

use super::{Index, Tx, now_ms};
use crate::error::GatewayError;

impl Index {
    pub(super) async fn add_garbage_in(
        tx: &mut Tx,
        replicas: &[Replica],
    ) -> Result<(), GatewayError> {
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
}
