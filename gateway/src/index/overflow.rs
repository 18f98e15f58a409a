//! Fragments held by the overflow store: which they are, how much they
//! hold, and moving them back onto nodes.

use sqlx::Row;
use tenfold_balancer::{OVERFLOW, Placement, Replica};

use super::rows::{FragmentRow, OverflowedFragment};
use super::{Index, Tx, md5_from_hex, placement_of, to_u64};
use crate::error::GatewayError;
use crate::fragment::node_key;

impl Index {
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
}
