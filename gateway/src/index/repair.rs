//! Redundancy and repair: which fragments are below their target, who
//! repairs which, what a repair changed, and the node lifecycle states
//! repair follows.
//!
//! A copy counts toward a fragment's target only on an active node. The
//! candidates for repair are found without scanning every fragment: those
//! with a copy on a node that is not active (`placements_by_node_key`), or in
//! the overflow store (`placements_overflowed`), or queued explicitly in
//! `repairs`. A row in `repairs` is also each candidate's claim and back-off.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use tenfold_balancer::{NodeState, Placement, Replica, ReplicaPolicy};

use super::counters::Counter;
use super::rows::RepairCandidate;
use super::{Index, Tx, md5_from_hex, now_ms, placement_of, to_u64};
use crate::error::GatewayError;

/// The redundancy of every stored fragment, for `tenfold status`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Redundancy {
    /// Fragments with fewer copies on active nodes than the policy asks for
    /// on either network.
    pub fragments_below_target: u64,
    /// Fragments by their number of copies on active nodes.
    pub fragments_by_node_copies: BTreeMap<String, u64>,
    /// Fragments waiting for a repair (a copy on a node that is not active,
    /// in the overflow store, or queued).
    pub repair_queue: u64,
}

/// The SQL of the repair candidates: `(data_id, seq, idx)` of every fragment
/// with a copy on a node that is not active, in the overflow store, or
/// queued in `repairs`.
const CANDIDATES: &str = "SELECT p.data_id, p.seq, p.idx FROM placements p \
       JOIN nodes n ON n.id = p.node_id WHERE n.state <> 'active' \
     UNION SELECT data_id, seq, idx FROM placements WHERE network = 'overflow' \
     UNION SELECT data_id, seq, idx FROM repairs WHERE queued = 1";

/// The name of the setting holding the replica policy (`"3+1"`).
const POLICY_SETTING: &str = "replica_policy";

impl Index {
    /// Up to `limit` repair candidates not held back (by another gateway's
    /// claim or a back-off), the most endangered first: fewest copies on
    /// active nodes.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn repair_candidates(
        &self,
        limit: i64,
    ) -> Result<Vec<RepairCandidate>, GatewayError> {
        let sql = format!(
            "SELECT f.data_id, f.seq, f.idx, f.size, f.md5, p.network, p.node_id, p.cid, n.state, o.good, o.attempts \
             FROM (SELECT c.data_id, c.seq, c.idx, COALESCE(r.attempts, 0) AS attempts, \
                     (SELECT COUNT(*) FROM placements g JOIN nodes gn ON gn.id = g.node_id \
                      WHERE g.data_id = c.data_id AND g.seq = c.seq AND g.idx = c.idx \
                        AND gn.state = 'active') AS good \
                   FROM ({CANDIDATES}) c \
                   LEFT JOIN repairs r ON r.data_id = c.data_id AND r.seq = c.seq AND r.idx = c.idx \
                   WHERE r.not_before IS NULL OR r.not_before <= $1 \
                   ORDER BY good, c.data_id, c.seq, c.idx LIMIT $2) o \
             JOIN fragments f ON f.data_id = o.data_id AND f.seq = o.seq AND f.idx = o.idx \
             JOIN placements p ON p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx \
             LEFT JOIN nodes n ON n.id = p.node_id \
             ORDER BY o.good, f.data_id, f.seq, f.idx"
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        candidates_of(&rows)
    }

    /// One fragment's copies as they are now, for a repair just claimed
    /// (the candidate list it came from may predate another gateway's
    /// repair of it); `None` when the fragment is gone.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn repair_candidate(
        &self,
        (data_id, seq, idx): (&str, u32, u16),
        attempts: u32,
    ) -> Result<Option<RepairCandidate>, GatewayError> {
        let rows = sqlx::query(
            "SELECT f.data_id, f.seq, f.idx, f.size, f.md5, p.network, p.node_id, p.cid, n.state, \
                    CAST($4 AS BIGINT) AS attempts \
             FROM fragments f \
             JOIN placements p ON p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx \
             LEFT JOIN nodes n ON n.id = p.node_id \
             WHERE f.data_id = $1 AND f.seq = $2 AND f.idx = $3",
        )
        .bind(data_id)
        .bind(i64::from(seq))
        .bind(i64::from(idx))
        .bind(i64::from(attempts))
        .fetch_all(&self.pool)
        .await?;
        Ok(candidates_of(&rows)?.pop())
    }

    /// Claims the repair of a fragment until `until` (ms): `false` when
    /// another gateway holds it, or it is backing off.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn claim_repair(
        &self,
        (data_id, seq, idx): (&str, u32, u16),
        until: i64,
    ) -> Result<bool, GatewayError> {
        let claimed = write_tx!(self, |tx| {
            Ok(sqlx::query(
                "INSERT INTO repairs (data_id, seq, idx, not_before) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (data_id, seq, idx) DO UPDATE SET not_before = excluded.not_before \
                 WHERE repairs.not_before <= $5 RETURNING data_id",
            )
            .bind(data_id)
            .bind(i64::from(seq))
            .bind(i64::from(idx))
            .bind(until)
            .bind(now_ms())
            .fetch_optional(&mut **tx)
            .await?)
        })?;
        Ok(claimed.is_some())
    }

    /// Puts a claimed repair back, to be tried again at `at` (ms).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn retry_repair(
        &self,
        (data_id, seq, idx): (&str, u32, u16),
        at: i64,
        error: &str,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "UPDATE repairs SET not_before = $1, attempts = attempts + 1, last_error = $2 \
             WHERE data_id = $3 AND seq = $4 AND idx = $5",
        )
        .bind(at)
        .bind(error)
        .bind(data_id)
        .bind(i64::from(seq))
        .bind(i64::from(idx))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a repair: the copies `added`, and, when `settled` (the
    /// fragment has its full target on active nodes now), the end of every
    /// copy that does not count (`dropped`). Dropped copies on reachable
    /// nodes, and overflow pins, are queued for removal: `due_now` ones at
    /// once (readers find the fragment's other copies), the rest after the
    /// grace period. A settled fragment found below `policy` after all (a
    /// copy lost meanwhile) stays queued. `false` when the fragment is gone
    /// meanwhile (its object deleted or overwritten): the caller removes
    /// what it added.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_repair(
        &self,
        (data_id, seq, idx): (&str, u32, u16),
        added: &[Placement],
        settled: Option<(&[Placement], &[Replica], &[Replica])>,
        policy: ReplicaPolicy,
    ) -> Result<bool, GatewayError> {
        write_tx!(self, |tx| {
            let size: Option<i64> = sqlx::query_scalar(
                "SELECT size FROM fragments WHERE data_id = $1 AND seq = $2 AND idx = $3",
            )
            .bind(data_id)
            .bind(i64::from(seq))
            .bind(i64::from(idx))
            .fetch_optional(&mut **tx)
            .await?;
            let Some(size) = size else {
                Self::forget_repair_in(tx, (data_id, seq, idx)).await?;
                return Ok(false);
            };
            // A copy already recorded on the node (the same file) stays
            // recorded once: the insert is idempotent.
            let mut copies = 0;
            for p in added {
                copies += sqlx::query(
                    "INSERT INTO placements (data_id, seq, idx, network, node_id, cid, size) \
                     SELECT $1, $2, $3, $4, $5, $6, size FROM fragments \
                     WHERE data_id = $1 AND seq = $2 AND idx = $3 \
                     ON CONFLICT (node_id, data_id, seq, idx) DO NOTHING",
                )
                .bind(data_id)
                .bind(i64::from(seq))
                .bind(i64::from(idx))
                .bind(p.network_name())
                .bind(p.node_id())
                .bind(p.cid())
                .execute(&mut **tx)
                .await?
                .rows_affected();
            }
            if copies > 0 {
                let copies = i64::try_from(copies).unwrap_or(i64::MAX);
                Self::add_to_counter_in(tx, Counter::RepairedCopies, copies).await?;
                Self::add_to_counter_in(tx, Counter::RepairedBytes, size.saturating_mul(copies))
                    .await?;
            }
            if let Some((dropped, due_now, later)) = settled {
                for p in dropped {
                    Self::drop_placement_in(tx, (data_id, seq, idx), p).await?;
                }
                Self::add_garbage_released_in(tx, due_now, 0).await?;
                Self::add_garbage_in(tx, later).await?;
                // A copy may have been lost meanwhile (the scrub found one
                // bad): then the fragment stays queued, due at once.
                let (mainnet, testnet): (i64, i64) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(CASE WHEN p.network = 'mainnet' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                            CAST(COALESCE(SUM(CASE WHEN p.network = 'testnet' THEN 1 ELSE 0 END), 0) AS BIGINT) \
                     FROM placements p JOIN nodes n ON n.id = p.node_id \
                     WHERE p.data_id = $1 AND p.seq = $2 AND p.idx = $3 AND n.state = 'active'",
                )
                .bind(data_id)
                .bind(i64::from(seq))
                .bind(i64::from(idx))
                .fetch_one(&mut **tx)
                .await?;
                if to_u64(mainnet) >= policy.mainnet as u64
                    && to_u64(testnet) >= policy.testnet as u64
                {
                    Self::forget_repair_in(tx, (data_id, seq, idx)).await?;
                } else {
                    sqlx::query(
                        "UPDATE repairs SET queued = 1, not_before = 0 \
                         WHERE data_id = $1 AND seq = $2 AND idx = $3",
                    )
                    .bind(data_id)
                    .bind(i64::from(seq))
                    .bind(i64::from(idx))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Ok(true)
        })
    }

    /// Removes a fragment's repair row (its queue entry, claim and back-off).
    async fn forget_repair_in(
        tx: &mut Tx,
        (data_id, seq, idx): (&str, u32, u16),
    ) -> Result<(), GatewayError> {
        sqlx::query("DELETE FROM repairs WHERE data_id = $1 AND seq = $2 AND idx = $3")
            .bind(data_id)
            .bind(i64::from(seq))
            .bind(i64::from(idx))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn drop_placement_in(
        tx: &mut Tx,
        id: (&str, u32, u16),
        placement: &Placement,
    ) -> Result<(), GatewayError> {
        match placement {
            Placement::Node { node_id, .. } => Self::drop_node_copy_in(tx, id, *node_id).await,
            Placement::Overflow { cid } => {
                let (data_id, seq, idx) = id;
                sqlx::query(
                    "DELETE FROM placements WHERE data_id = $1 AND seq = $2 AND idx = $3 AND cid = $4",
                )
                .bind(data_id)
                .bind(i64::from(seq))
                .bind(i64::from(idx))
                .bind(cid.as_str())
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }
    }

    /// Forgets a fragment's copy on node `node_id`.
    pub(super) async fn drop_node_copy_in(
        tx: &mut Tx,
        (data_id, seq, idx): (&str, u32, u16),
        node_id: i64,
    ) -> Result<(), GatewayError> {
        sqlx::query(
            "DELETE FROM placements WHERE data_id = $1 AND seq = $2 AND idx = $3 AND node_id = $4",
        )
        .bind(data_id)
        .bind(i64::from(seq))
        .bind(i64::from(idx))
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records that the nodes `ids` answered a probe now; lost ones among
    /// them are active again (what they held was repaired elsewhere and is
    /// garbage to the orphan sweep). Returns the ids that came back.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_seen(&self, ids: &[i64]) -> Result<Vec<i64>, GatewayError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        write_tx!(self, |tx| {
            let now = now_ms();
            let mut back = Vec::new();
            for id in ids {
                let was: Option<String> =
                    sqlx::query_scalar("SELECT state FROM nodes WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut **tx)
                        .await?;
                sqlx::query(
                    "UPDATE nodes SET last_seen = $1, \
                     state = CASE WHEN state = 'lost' THEN 'active' ELSE state END WHERE id = $2",
                )
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                if was.as_deref() == Some("lost") {
                    back.push(*id);
                }
            }
            Ok(back)
        })
    }

    /// Marks node `id` lost if it is active and no gateway has reached it
    /// since `unseen_since` (ms); `true` when it was.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn mark_lost(&self, id: i64, unseen_since: i64) -> Result<bool, GatewayError> {
        let done = sqlx::query(
            "UPDATE nodes SET state = 'lost' WHERE id = $1 AND state = 'active' \
             AND COALESCE(last_seen, created_at) < $2",
        )
        .bind(id)
        .bind(unseen_since)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a node's lifecycle state (`tenfold nodes drain`, and back).
    ///
    /// # Errors
    /// [`GatewayError::InvalidArgument`] when there is no such node.
    pub async fn set_node_state(&self, id: i64, state: NodeState) -> Result<(), GatewayError> {
        let done = sqlx::query("UPDATE nodes SET state = $1 WHERE id = $2")
            .bind(state.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(GatewayError::InvalidArgument(format!(
                "no node with id {id}"
            )));
        }
        Ok(())
    }

    /// Records the replica policy the gateways place by, for `status`.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_policy(&self, policy: ReplicaPolicy) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(POLICY_SETTING)
        .bind(format!("{}+{}", policy.mainnet, policy.testnet))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The replica policy a gateway recorded (the default before any did).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn recorded_policy(&self) -> Result<ReplicaPolicy, GatewayError> {
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(POLICY_SETTING)
                .fetch_optional(&self.pool)
                .await?;
        let parsed = value.as_deref().and_then(|v| {
            let (m, t) = v.split_once('+')?;
            Some(ReplicaPolicy {
                mainnet: m.parse().ok()?,
                testnet: t.parse().ok()?,
            })
        });
        Ok(parsed.unwrap_or_default())
    }

    /// How redundant every stored fragment is under `policy` (one pass over
    /// the placements: an administrative query).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn redundancy(&self, policy: ReplicaPolicy) -> Result<Redundancy, GatewayError> {
        let rows = sqlx::query(
            "SELECT m, t, COUNT(*) AS fragments FROM \
               (SELECT f.data_id, f.seq, f.idx, \
                  SUM(CASE WHEN n.state = 'active' AND p.network = 'mainnet' THEN 1 ELSE 0 END) AS m, \
                  SUM(CASE WHEN n.state = 'active' AND p.network = 'testnet' THEN 1 ELSE 0 END) AS t \
                FROM fragments f \
                LEFT JOIN placements p ON p.data_id = f.data_id AND p.seq = f.seq AND p.idx = f.idx \
                LEFT JOIN nodes n ON n.id = p.node_id \
                GROUP BY f.data_id, f.seq, f.idx) c \
             GROUP BY m, t",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut report = Redundancy::default();
        for row in &rows {
            let m = to_u64(row.try_get::<i64, _>("m")?);
            let t = to_u64(row.try_get::<i64, _>("t")?);
            let count = to_u64(row.try_get::<i64, _>("fragments")?);
            if m < policy.mainnet as u64 || t < policy.testnet as u64 {
                report.fragments_below_target += count;
            }
            *report
                .fragments_by_node_copies
                .entry((m + t).to_string())
                .or_default() += count;
        }
        let queue: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({CANDIDATES}) c"))
            .fetch_one(&self.pool)
            .await?;
        report.repair_queue = to_u64(queue);
        Ok(report)
    }
}

/// Repair candidates from rows of fragment columns, one row per copy
/// (`network`, `node_id`, `cid`, `state`), grouped by fragment in order.
fn candidates_of(rows: &[AnyRow]) -> Result<Vec<RepairCandidate>, GatewayError> {
    let mut out: Vec<RepairCandidate> = Vec::new();
    for row in rows {
        let data_id: String = row.try_get("data_id")?;
        let seq = u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX);
        let index = u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(u16::MAX);
        let state: Option<String> = row.try_get("state")?;
        let state = state
            .map(|s| s.parse::<NodeState>())
            .transpose()
            .map_err(GatewayError::Internal)?;
        let copy = (placement_of(row)?, state);
        match out.last_mut() {
            Some(c) if c.data_id == data_id && c.seq == seq && c.index == index => {
                c.copies.push(copy);
            }
            _ => out.push(RepairCandidate {
                data_id,
                seq,
                index,
                size: to_u64(row.try_get("size")?),
                md5: md5_from_hex(&row.try_get::<String, _>("md5")?)?,
                copies: vec![copy],
                attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
            }),
        }
    }
    Ok(out)
}
