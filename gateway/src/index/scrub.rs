//! What the scrub keeps in the index: where each node's pass is, who runs
//! it, each node's audit record, and what a failed audit changes.

use sqlx::Row;

use super::{Index, Tx, now_ms, packed};
use crate::error::GatewayError;

/// The replicas after a random position a spot audit picks from: a random
/// data id lands after a gap in the ids, and the draw among its successors
/// spreads the pick over the fragments of each piece of data.
const SPOT_WINDOW: usize = 64;

/// Segments a spot audit walks at most, in [`SCAN_SEGMENTS`] steps, to find
/// a node's replica.
const SPOT_SCANS: usize = 8;

/// Segments one scrub batch walks at most.
pub const SCAN_SEGMENTS: i64 = 4096;

/// A position in a node's replicas, in `(data_id, seq, idx)` order; the
/// default is before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubCursor {
    pub data_id: String,
    pub seq: i64,
    pub idx: i64,
}

impl Default for ScrubCursor {
    fn default() -> Self {
        Self {
            data_id: String::new(),
            seq: -1,
            idx: -1,
        }
    }
}

/// A node's replicas found in one walk over the segments.
#[derive(Debug, Clone)]
pub struct ScrubBatch {
    /// The replicas, in order.
    pub items: Vec<ScrubItem>,
    /// Whether the walk reached the last segment (no replica of the node
    /// comes after the items).
    pub end: bool,
    /// The position after the last segment walked through: where to go on
    /// from when the items are fewer than asked and this is not the end.
    pub scanned: ScrubCursor,
}

/// One replica to audit.
#[derive(Debug, Clone)]
pub struct ScrubItem {
    pub data_id: String,
    pub seq: u32,
    pub index: u16,
    pub size: u64,
    pub md5: [u8; 16],
}

impl ScrubItem {
    /// The position just after this replica.
    pub fn cursor(&self) -> ScrubCursor {
        ScrubCursor {
            data_id: self.data_id.clone(),
            seq: i64::from(self.seq),
            idx: i64::from(self.index),
        }
    }
}

/// The audit policy: a node is disqualified when, over one scrub pass, at
/// least `min_audits` audits ran and more than `max_failure_share` of them
/// failed.
#[derive(Debug, Clone, Copy)]
pub struct AuditPolicy {
    pub min_audits: i64,
    pub max_failure_share: f64,
}

impl Index {
    /// Claims the scrub of node `node_id` for `owner` until `until` (ms);
    /// returns where its pass is, or `None` while another gateway runs it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn claim_scrub(
        &self,
        node_id: i64,
        owner: &str,
        until: i64,
    ) -> Result<Option<ScrubCursor>, GatewayError> {
        let row = self
            .claim_node_job(
                "node_scrubs",
                "cursor_data, cursor_seq, cursor_idx",
                node_id,
                owner,
                until,
            )
            .await?;
        row.map(|row| {
            Ok(ScrubCursor {
                data_id: row.try_get("cursor_data")?,
                seq: row.try_get("cursor_seq")?,
                idx: row.try_get("cursor_idx")?,
            })
        })
        .transpose()
    }

    /// Up to `limit` replicas on node `node_id` after `cursor`, in order,
    /// found in at most [`SCAN_SEGMENTS`] segments (a node's copies are
    /// found by walking the segments: no index names them by node).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn scrub_batch(
        &self,
        node_id: i64,
        cursor: &ScrubCursor,
        limit: usize,
    ) -> Result<ScrubBatch, GatewayError> {
        let rows = sqlx::query(
            "SELECT data_id, seq, fragments FROM segments \
             WHERE data_id > $1 OR (data_id = $1 AND seq >= $2) \
             ORDER BY data_id, seq LIMIT $3",
        )
        .bind(packed::id_bytes(&cursor.data_id))
        .bind(cursor.seq)
        .bind(SCAN_SEGMENTS)
        .fetch_all(&mut self.reader().await?)
        .await?;
        let mut batch = ScrubBatch {
            items: Vec::new(),
            end: rows.len() < usize::try_from(SCAN_SEGMENTS).unwrap_or(usize::MAX),
            scanned: cursor.clone(),
        };
        for row in &rows {
            let data_id = packed::id_text(&row.try_get::<Vec<u8>, _>("data_id")?);
            let seq: i64 = row.try_get("seq")?;
            let same = data_id == cursor.data_id && seq == cursor.seq;
            for f in packed::unpack(&row.try_get::<Vec<u8>, _>("fragments")?)? {
                if (same && i64::from(f.index) <= cursor.idx)
                    || !f.placements.iter().any(|p| p.node_id() == Some(node_id))
                {
                    continue;
                }
                if batch.items.len() == limit {
                    batch.end = false;
                    return Ok(batch);
                }
                batch.items.push(ScrubItem {
                    data_id: data_id.clone(),
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    index: f.index,
                    size: f.size,
                    md5: f.md5,
                });
            }
            batch.scanned = ScrubCursor {
                data_id,
                seq,
                idx: i64::from(u16::MAX),
            };
        }
        Ok(batch)
    }

    /// A replica on node `node_id` picked at random (among the replicas
    /// after a random position), for a spot audit; `None` when it holds
    /// none.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn random_replica(&self, node_id: i64) -> Result<Option<ScrubItem>, GatewayError> {
        use rand::seq::IndexedRandom;
        let mut from = ScrubCursor {
            data_id: format!("{:032x}", rand::random::<u128>()),
            ..ScrubCursor::default()
        };
        let mut wrapped = false;
        for _ in 0..SPOT_SCANS {
            let near = self.scrub_batch(node_id, &from, SPOT_WINDOW).await?;
            if let Some(item) = near.items.choose(&mut rand::rng()) {
                return Ok(Some(item.clone()));
            }
            from = if !near.end {
                near.scanned
            } else if wrapped {
                break;
            } else {
                wrapped = true;
                ScrubCursor::default()
            };
        }
        Ok(None)
    }

    /// Saves where node `node_id`'s pass is; `None` ends the pass (the
    /// next starts from the beginning).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn save_scrub(
        &self,
        node_id: i64,
        cursor: Option<&ScrubCursor>,
    ) -> Result<(), GatewayError> {
        match cursor {
            Some(c) => {
                sqlx::query(
                    "UPDATE node_scrubs SET cursor_data = $1, cursor_seq = $2, cursor_idx = $3 \
                     WHERE node_id = $4",
                )
                .bind(&c.data_id)
                .bind(c.seq)
                .bind(c.idx)
                .bind(node_id)
                .execute(&mut self.reader().await?)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE node_scrubs SET cursor_data = '', cursor_seq = -1, cursor_idx = -1, \
                     passes = passes + 1, pass_started = $1 WHERE node_id = $2",
                )
                .bind(now_ms())
                .bind(node_id)
                .execute(&mut self.reader().await?)
                .await?;
            }
        }
        Ok(())
    }

    /// Adds audits to node `node_id`'s record (all time, and the current
    /// pass's). At the end of a pass (`pass_done`) the pass's failures are
    /// weighed: past the policy, an active node is disqualified (`true`).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_audits(
        &self,
        node_id: i64,
        passed: u64,
        failed: u64,
        pass_done: bool,
        policy: AuditPolicy,
    ) -> Result<bool, GatewayError> {
        let (passed, failed) = (
            i64::try_from(passed).unwrap_or(i64::MAX),
            i64::try_from(failed).unwrap_or(i64::MAX),
        );
        write_tx!(self, |tx| {
            let row = sqlx::query(
                "UPDATE nodes SET audits = audits + $1, audit_failures = audit_failures + $2, \
                 window_audits = window_audits + $1, window_failures = window_failures + $2 \
                 WHERE id = $3 RETURNING window_audits, window_failures, state",
            )
            .bind(passed + failed)
            .bind(failed)
            .bind(node_id)
            .fetch_optional(tx.conn().await?)
            .await?;
            let Some(row) = row else { return Ok(false) };
            let audits: i64 = row.try_get("window_audits")?;
            let failures: i64 = row.try_get("window_failures")?;
            let state: String = row.try_get("state")?;
            if !pass_done {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE nodes SET last_pass_audits = window_audits, \
                 last_pass_failures = window_failures, last_pass_end = $1, \
                 window_start = $1, window_audits = 0, window_failures = 0 WHERE id = $2",
            )
            .bind(now_ms())
            .bind(node_id)
            .execute(tx.conn().await?)
            .await?;
            #[allow(clippy::cast_precision_loss)]
            let share = failures as f64 / audits.max(1) as f64;
            if state == "active" && audits >= policy.min_audits && share > policy.max_failure_share
            {
                sqlx::query("UPDATE nodes SET state = 'disqualified' WHERE id = $1")
                    .bind(node_id)
                    .execute(tx.conn().await?)
                    .await?;
                return Ok(true);
            }
            Ok(false)
        })
    }

    /// Forgets a replica an audit found missing or corrupt and queues its
    /// fragment for repair. The bad file is not deleted here: a repair may
    /// write the fragment to the same node under the same key; if none
    /// does, the orphan sweep removes it.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn drop_bad_replica(
        &self,
        (data_id, seq, idx): (&str, u32, u16),
        node_id: i64,
    ) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            Self::drop_node_copy_in(tx, (data_id, seq, idx), node_id).await
        })
    }
}
