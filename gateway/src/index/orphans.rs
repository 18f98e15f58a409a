//! What the orphan sweep asks the index: which replicas on a node it
//! names, which data is still being written, and who sweeps which node.

use std::collections::HashSet;

use sqlx::Row;

use super::{Index, ROWS_PER_INSERT, Tx, insert_rows_sql, now_ms, packed};
use crate::error::GatewayError;
use crate::fragment::node_key;

/// What the index says about a range of data ids on one node.
#[derive(Debug, Default)]
pub struct NamedReplicas {
    /// Node keys a placement or a queued removal names on the node.
    pub keys: HashSet<String>,
    /// Data ids some gateway is still writing (a live heartbeat).
    pub writing: HashSet<String>,
}

impl Index {
    /// Records that the data `data_ids` is still being written, as of now,
    /// and that gateway `owner` renews such records every `period_ms`;
    /// forgets write records whose heartbeat is older than `expired_before`
    /// (ms), whose writer finished or died long ago, and announcements no
    /// gateway renewed.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn heartbeat_writes(
        &self,
        owner: &str,
        period_ms: i64,
        data_ids: &[String],
        expired_before: i64,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            let now = now_ms();
            sqlx::query(
                "INSERT INTO gateway_heartbeats (owner, period_ms, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (owner) DO UPDATE SET period_ms = excluded.period_ms, until = excluded.until",
            )
            .bind(owner)
            .bind(period_ms)
            .bind(now.saturating_add(period_ms.saturating_mul(4)))
            .execute(tx.conn().await?)
            .await?;
            sqlx::query("DELETE FROM gateway_heartbeats WHERE until < $1")
                .bind(now)
                .execute(tx.conn().await?)
                .await?;
            for chunk in data_ids.chunks(ROWS_PER_INSERT) {
                let sql =
                    insert_rows_sql("writes_in_flight", &["data_id", "heartbeat"], chunk.len())
                        + " ON CONFLICT (data_id) DO UPDATE SET heartbeat = excluded.heartbeat";
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(packed::id_bytes(id)).bind(now);
                }
                query.execute(tx.conn().await?).await?;
            }
            sqlx::query("DELETE FROM writes_in_flight WHERE heartbeat < $1")
                .bind(expired_before)
                .execute(tx.conn().await?)
                .await?;
            Ok(())
        })
    }

    /// The longest heartbeat period (ms) a gateway announced and still
    /// renews, if any.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn longest_heartbeat(&self) -> Result<Option<i64>, GatewayError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(period_ms) FROM gateway_heartbeats WHERE until >= $1")
                .bind(now_ms())
                .fetch_one(&mut self.reader().await?)
                .await?,
        )
    }

    /// Claims the sweep of node `node_id` for `owner` until `until` (ms):
    /// `true` when it is `owner`'s (newly, or renewed), `false` while
    /// another gateway's claim runs.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn claim_sweep(
        &self,
        node_id: i64,
        owner: &str,
        until: i64,
    ) -> Result<bool, GatewayError> {
        let claimed = self
            .claim_node_job("node_sweeps", "node_id", node_id, owner, until)
            .await?;
        Ok(claimed.is_some())
    }

    /// Claims a per-node job in `table` (`node_sweeps`, `node_scrubs`) for
    /// `owner` until `until` (ms): the row's `returning` columns when it
    /// is `owner`'s now (new, renewed, or taken over from a lapsed claim),
    /// `None` while another gateway's claim runs.
    pub(super) async fn claim_node_job(
        &self,
        table: &str,
        returning: &str,
        node_id: i64,
        owner: &str,
        until: i64,
    ) -> Result<Option<sqlx::any::AnyRow>, GatewayError> {
        let sql = format!(
            "INSERT INTO {table} (node_id, owner, until) VALUES ($1, $2, $3) \
             ON CONFLICT (node_id) DO UPDATE SET owner = excluded.owner, until = excluded.until \
             WHERE {table}.owner = excluded.owner OR {table}.until < $4 \
             RETURNING {returning}"
        );
        let sql = sql.as_str();
        write_tx!(self, |tx| {
            Ok(sqlx::query(sql)
                .bind(node_id)
                .bind(owner)
                .bind(until)
                .bind(now_ms())
                .fetch_optional(tx.conn().await?)
                .await?)
        })
    }

    /// Which replicas of the data ids from `first` to `last` (inclusive)
    /// on node `node_id` the index names, and which of that data is being
    /// written (a heartbeat at or after `live_since`, ms). Writes are read
    /// first: a write that is not live then and commits later cannot have
    /// been one the sweep may take for an orphan (see [`crate::orphans`]).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn named_on_node(
        &self,
        node_id: i64,
        (first, last): (&str, &str),
        live_since: i64,
    ) -> Result<NamedReplicas, GatewayError> {
        let (from, to) = (packed::id_bytes(first), packed::id_bytes(last));
        let writing = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT data_id FROM writes_in_flight \
             WHERE data_id >= $1 AND data_id <= $2 AND heartbeat >= $3",
        )
        .bind(from.clone())
        .bind(to.clone())
        .bind(live_since)
        .fetch_all(&mut self.reader().await?)
        .await?
        .iter()
        .map(|id| packed::id_text(id))
        .collect();
        let mut keys = HashSet::new();
        let placed = sqlx::query(
            "SELECT data_id, seq, fragments FROM segments WHERE data_id >= $1 AND data_id <= $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&mut self.reader().await?)
        .await?;
        for row in &placed {
            let data_id = packed::id_text(&row.try_get::<Vec<u8>, _>("data_id")?);
            let Ok(seq) = u32::try_from(row.try_get::<i64, _>("seq")?) else {
                continue;
            };
            for f in packed::unpack(&row.try_get::<Vec<u8>, _>("fragments")?)? {
                if f.placements.iter().any(|p| p.node_id() == Some(node_id)) {
                    keys.insert(node_key(&data_id, seq, f.index));
                }
            }
        }
        // Queued removals name node keys, and every key of a data id starts
        // with it and a `/`: `{first}/` to `{last}/~` holds them all.
        let queued = sqlx::query_scalar::<_, String>(
            "SELECT node_key FROM garbage WHERE node_id = $1 AND node_key >= $2 AND node_key <= $3",
        )
        .bind(node_id)
        .bind(format!("{first}/"))
        .bind(format!("{last}/~"))
        .fetch_all(&mut self.reader().await?)
        .await?;
        keys.extend(queued);
        Ok(NamedReplicas { keys, writing })
    }
}
