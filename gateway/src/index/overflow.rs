//! Fragments held by the overflow store: how much they hold, whether a
//! content id is still used, and the pins Tenfold made (for the orphan
//! sweep). (Fragments go back onto nodes through repair.)

use super::{Index, Tx, now_ms, packed, to_u64};
use crate::error::GatewayError;

/// What the index says of a pin Tenfold made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinUse {
    /// A stored fragment's copy, or a removal queued: not the sweep's.
    Named,
    /// Its data is still being written (a live heartbeat).
    Writing,
    /// Nothing names it: an orphan.
    Unnamed,
}

impl Index {
    /// How many fragments, and how many bytes of them, live in the overflow
    /// store.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn overflow_usage(&self) -> Result<(u64, u64), GatewayError> {
        let (count, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM overflow_pins",
        )
        .fetch_one(&mut self.reader().await?)
        .await?;
        Ok((to_u64(count), to_u64(bytes)))
    }

    /// Whether any stored fragment still has its copy under `cid` (content
    /// addressing gives identical fragments one content id).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn cid_in_use(&self, cid: &str) -> Result<bool, GatewayError> {
        Ok(
            sqlx::query("SELECT 1 FROM overflow_pins WHERE cid = $1 LIMIT 1")
                .bind(cid)
                .fetch_optional(&mut self.reader().await?)
                .await?
                .is_some(),
        )
    }

    /// Records that `cid` is about to be pinned for the data `data_id`, as
    /// of now (before the pin is made: see [`crate::orphans`]).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_pin(&self, cid: &str, data_id: &str) -> Result<(), GatewayError> {
        let now = now_ms();
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO pins_made (cid, data_id, made_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (cid, data_id) DO UPDATE SET made_at = excluded.made_at",
            )
            .bind(cid)
            .bind(packed::id_bytes(data_id))
            .bind(now)
            .execute(tx.conn().await?)
            .await?;
            Ok(())
        })
    }

    /// Pins made before `before` (ms), oldest first, at most `limit`: the
    /// content id and the data id of each.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn pins_made_before(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, GatewayError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT cid, data_id FROM pins_made WHERE made_at < $1 ORDER BY made_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut self.reader().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(cid, id)| (cid, packed::id_text(&id)))
            .collect())
    }

    /// What names the pin of `cid` made for `data_id`: a stored fragment or
    /// a queued removal, a write heartbeat at or after `live_since` (ms),
    /// or nothing. The write is read first, as for node replicas (see
    /// [`crate::orphans`]).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn pin_use(
        &self,
        cid: &str,
        data_id: &str,
        live_since: i64,
    ) -> Result<PinUse, GatewayError> {
        let writing =
            sqlx::query("SELECT 1 FROM writes_in_flight WHERE data_id = $1 AND heartbeat >= $2")
                .bind(packed::id_bytes(data_id))
                .bind(live_since)
                .fetch_optional(&mut self.reader().await?)
                .await?
                .is_some();
        let queued = sqlx::query("SELECT 1 FROM garbage WHERE cid = $1 LIMIT 1")
            .bind(cid)
            .fetch_optional(&mut self.reader().await?)
            .await?
            .is_some();
        Ok(if queued || self.cid_in_use(cid).await? {
            PinUse::Named
        } else if writing {
            PinUse::Writing
        } else {
            PinUse::Unnamed
        })
    }

    /// Forgets every record of pins of `cid`: unpinned, or in use by a
    /// stored fragment (then a removal unpins it).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn forget_pins_of(&self, cid: &str) -> Result<(), GatewayError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM pins_made WHERE cid = $1")
                .bind(cid)
                .execute(tx.conn().await?)
                .await?;
            Ok(())
        })
    }
}
