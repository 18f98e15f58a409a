//! Redundancy and repair: which fragments are below their target, who
//! repairs which, what a repair changed, and the node lifecycle states
//! repair follows.
//!
//! A copy counts toward a fragment's target only on an active node. The
//! candidates for repair are the fragments queued in `repairs` and those
//! with an overflow pin. The queue is filled by the commits that placed a
//! fragment short, by audits that found a copy bad, and by the walk over
//! every segment ([`Index::check_segments`], run by each gateway's repair
//! loop) that finds the fragments with a copy on a node that is not active
//! or fewer active copies than the policy, and tallies the redundancy of
//! all of them for `tenfold status`. A row in `repairs` is also each
//! candidate's claim and back-off.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Executor, Row};
use tenfold_balancer::{Network, NodeState, Placement, Replica, ReplicaPolicy};

use super::counters::Counter;
use super::nodes::NodeUsage;
use super::rows::{FragmentRow, RepairCandidate};
use super::{Index, ROWS_PER_INSERT, Tx, insert_rows_sql, now_ms, packed, segment_of, to_u64};
use crate::error::GatewayError;

/// The redundancy of every stored fragment, for `tenfold status`: what the
/// last complete walk over the segments found, and the queue as it is.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Redundancy {
    /// Fragments with fewer copies on active nodes than the policy asks for
    /// on either network.
    pub fragments_below_target: u64,
    /// Fragments by their number of copies on active nodes.
    pub fragments_by_node_copies: BTreeMap<String, u64>,
    /// Fragments waiting for a repair (queued, or in the overflow store).
    #[serde(default)]
    pub repair_queue: u64,
    /// When the walk those figures come from ended (ms since the epoch;
    /// none before the first).
    #[serde(default, rename = "redundancy_as_of")]
    pub as_of: Option<i64>,
}

impl Redundancy {
    /// Adds a fragment with `mainnet` and `testnet` copies on active nodes.
    fn tally(&mut self, (mainnet, testnet): (usize, usize), policy: ReplicaPolicy) {
        if mainnet < policy.mainnet || testnet < policy.testnet {
            self.fragments_below_target += 1;
        }
        *self
            .fragments_by_node_copies
            .entry((mainnet + testnet).to_string())
            .or_default() += 1;
    }

    /// Adds another part of the walk's figures.
    pub fn add(&mut self, other: &Redundancy) {
        self.fragments_below_target += other.fragments_below_target;
        for (copies, n) in &other.fragments_by_node_copies {
            *self
                .fragments_by_node_copies
                .entry(copies.clone())
                .or_default() += n;
        }
    }
}

/// Where a walk over the segments is: after segment `(data_id, seq)`; the
/// default is before the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkCursor {
    pub data_id: String,
    pub seq: i64,
}

/// One step of the walk over the segments.
#[derive(Debug, Clone)]
pub struct CheckedSegments {
    /// The redundancy of the fragments walked through.
    pub redundancy: Redundancy,
    /// Fragments queued for repair by this step.
    pub queued: usize,
    /// Where the step ended; `None` after the last segment.
    pub next: Option<WalkCursor>,
}

/// The SQL of the repair candidates: `(data_id, seq, idx)` of every fragment
/// with an overflow pin or queued in `repairs`.
const CANDIDATES: &str = "SELECT data_id, seq, idx FROM overflow_pins \
     UNION SELECT data_id, seq, idx FROM repairs WHERE queued = 1";

/// Node ids in one `IN (…)` list of [`Index::record_seen`].
const IDS_PER_STATEMENT: usize = 500;

/// The name of the setting holding the replica policy (`"3+1"`).
const POLICY_SETTING: &str = "replica_policy";

/// The name of the setting holding the last complete walk's [`Redundancy`].
const REDUNDANCY_SETTING: &str = "redundancy";

/// Candidates read per one asked for, to pick the most endangered among.
const CANDIDATE_POOL: i64 = 4;

/// Every registered node's lifecycle state.
async fn node_states<C>(conn: &mut C) -> Result<HashMap<i64, NodeState>, GatewayError>
where
    C: Send + ?Sized,
    for<'e> &'e mut C: Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM nodes")
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|(id, state)| Ok((id, state.parse().map_err(GatewayError::Internal)?)))
        .collect()
}

/// A copy's state: its node's (a node no longer registered counts as
/// lost), `None` for an overflow pin.
fn copy_state(p: &Placement, states: &HashMap<i64, NodeState>) -> Option<NodeState> {
    p.node_id()
        .map(|id| states.get(&id).copied().unwrap_or(NodeState::Lost))
}

/// A fragment's copies on active nodes, `(mainnet, testnet)`.
fn active_copies(f: &FragmentRow, states: &HashMap<i64, NodeState>) -> (usize, usize) {
    let on = |network| {
        f.placements
            .iter()
            .filter(|p| {
                matches!(p, Placement::Node { network: n, .. } if *n == network)
                    && copy_state(p, states) == Some(NodeState::Active)
            })
            .count()
    };
    (on(Network::Mainnet), on(Network::Testnet))
}

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
            "SELECT c.data_id, c.seq, c.idx, COALESCE(r.attempts, 0) AS attempts \
             FROM ({CANDIDATES}) c \
             LEFT JOIN repairs r ON r.data_id = c.data_id AND r.seq = c.seq AND r.idx = c.idx \
             WHERE r.not_before IS NULL OR r.not_before <= $1 \
             ORDER BY c.data_id, c.seq, c.idx LIMIT $2"
        );
        let mut conn = self.reader().await?;
        let rows = sqlx::query(&sql)
            .bind(now_ms())
            .bind(limit.saturating_mul(CANDIDATE_POOL))
            .fetch_all(&mut conn)
            .await?;
        let states = node_states(&mut conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = packed::id_text(&row.try_get::<Vec<u8>, _>("data_id")?);
            let seq = u32::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(u32::MAX);
            let idx = u16::try_from(row.try_get::<i64, _>("idx")?).unwrap_or(u16::MAX);
            let attempts = u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0);
            if let Some(c) = Self::candidate(&mut conn, (&id, seq, idx), attempts, &states).await? {
                out.push(c);
            }
        }
        let good = |c: &RepairCandidate| {
            c.copies
                .iter()
                .filter(|(_, s)| *s == Some(NodeState::Active))
                .count()
        };
        out.sort_by_key(|c| good(c));
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    /// One fragment's copies as they are now, for a repair just claimed
    /// (the candidate list it came from may predate another gateway's
    /// repair of it); `None` when the fragment is gone.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn repair_candidate(
        &self,
        id: (&str, u32, u16),
        attempts: u32,
    ) -> Result<Option<RepairCandidate>, GatewayError> {
        let mut conn = self.reader().await?;
        let states = node_states(&mut conn).await?;
        Self::candidate(&mut conn, id, attempts, &states).await
    }

    /// A fragment as a repair candidate, its copies with their nodes'
    /// states; `None` when it is gone.
    async fn candidate<C>(
        conn: &mut C,
        (data_id, seq, idx): (&str, u32, u16),
        attempts: u32,
        states: &HashMap<i64, NodeState>,
    ) -> Result<Option<RepairCandidate>, GatewayError>
    where
        C: Send + ?Sized,
        for<'e> &'e mut C: Executor<'e, Database = sqlx::Any>,
    {
        let Some(fragment) = Self::fragment(conn, (data_id, seq, idx)).await? else {
            return Ok(None);
        };
        Ok(Some(RepairCandidate {
            data_id: data_id.to_owned(),
            seq,
            index: idx,
            size: fragment.size,
            md5: fragment.md5,
            copies: fragment
                .placements
                .iter()
                .map(|p| (p.clone(), copy_state(p, states)))
                .collect(),
            attempts,
        }))
    }

    /// One fragment with its copies (overflow pins' content ids filled
    /// in); `None` when it is gone.
    async fn fragment<C>(
        conn: &mut C,
        (data_id, seq, idx): (&str, u32, u16),
    ) -> Result<Option<FragmentRow>, GatewayError>
    where
        C: Send + ?Sized,
        for<'e> &'e mut C: Executor<'e, Database = sqlx::Any>,
    {
        Ok(Self::segment_in(conn, (data_id, seq))
            .await?
            .and_then(|s| s.fragments.into_iter().find(|f| f.index == idx)))
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
                 WHERE repairs.not_before <= $5 RETURNING seq",
            )
            .bind(packed::id_bytes(data_id))
            .bind(i64::from(seq))
            .bind(i64::from(idx))
            .bind(until)
            .bind(now_ms())
            .fetch_optional(tx.conn().await?)
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
        .bind(packed::id_bytes(data_id))
        .bind(i64::from(seq))
        .bind(i64::from(idx))
        .execute(&mut self.reader().await?)
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
            let states = node_states(tx.conn().await?).await?;
            let Some(mut segment) = Self::segment_in(tx.conn().await?, (data_id, seq)).await?
            else {
                Self::forget_repair_in(tx, (data_id, seq, idx)).await?;
                return Ok(false);
            };
            let Some(f) = segment.fragments.iter_mut().find(|f| f.index == idx) else {
                Self::forget_repair_in(tx, (data_id, seq, idx)).await?;
                return Ok(false);
            };
            let size = f.size;
            let mut usage = NodeUsage::default();
            // A copy already recorded on the node (the same file) stays
            // recorded once: adding is idempotent.
            let mut copies = 0i64;
            for p in added {
                let known = f.placements.iter().any(|q| match (p, q) {
                    (Placement::Overflow { .. }, Placement::Overflow { .. }) => true,
                    _ => p.node_id().is_some() && p.node_id() == q.node_id(),
                });
                if known {
                    continue;
                }
                f.placements.push(p.clone());
                match p {
                    Placement::Node { node_id, .. } => {
                        usage.add(*node_id, size);
                        copies += 1;
                    }
                    Placement::Overflow { cid } => {
                        Self::insert_pin_in(tx, (data_id, seq, idx), cid, size).await?;
                    }
                }
            }
            if copies > 0 {
                Self::add_to_counter_in(tx, Counter::RepairedCopies, copies).await?;
                Self::add_to_counter_in(
                    tx,
                    Counter::RepairedBytes,
                    super::to_i64(size).saturating_mul(copies),
                )
                .await?;
            }
            let mut below = false;
            if let Some((dropped, due_now, later)) = settled {
                for p in dropped {
                    Self::remove_copy_in(tx, (data_id, seq, f), p, &mut usage).await?;
                }
                // A copy may have been lost meanwhile (the scrub found one
                // bad): then the fragment stays queued, due at once.
                let (mainnet, testnet) = active_copies(f, &states);
                below = mainnet < policy.mainnet || testnet < policy.testnet;
                Self::add_garbage_released_in(tx, due_now, 0).await?;
                Self::add_garbage_in(tx, later).await?;
            }
            Self::save_fragments_in(tx, &segment).await?;
            Self::log_usage_in(tx, &usage).await?;
            if settled.is_some() {
                if below {
                    Self::queue_repairs_in(tx, &[(data_id, seq, idx)], true).await?;
                } else {
                    Self::forget_repair_in(tx, (data_id, seq, idx)).await?;
                }
            }
            Ok(true)
        })
    }

    /// A segment with its fragments and copies (overflow pins' content ids
    /// filled in), on `conn` or in a transaction.
    async fn segment_in<C>(
        conn: &mut C,
        (data_id, seq): (&str, u32),
    ) -> Result<Option<super::SegmentRow>, GatewayError>
    where
        C: Send + ?Sized,
        for<'e> &'e mut C: Executor<'e, Database = sqlx::Any>,
    {
        let row = sqlx::query(
            "SELECT data_id, seq, plain_offset, plain_size, frames, key_id, wrapped, fragments \
             FROM segments WHERE data_id = $1 AND seq = $2",
        )
        .bind(packed::id_bytes(data_id))
        .bind(i64::from(seq))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut segment = segment_of(&row)?;
        if packed::has_overflow(&segment.fragments) {
            Self::fill_cids(conn, &mut segment).await?;
        }
        Ok(Some(segment))
    }

    /// Writes a segment's fragments (their copies changed) back.
    async fn save_fragments_in(
        tx: &mut Tx<'_>,
        segment: &super::SegmentRow,
    ) -> Result<(), GatewayError> {
        sqlx::query("UPDATE segments SET fragments = $1 WHERE data_id = $2 AND seq = $3")
            .bind(packed::pack(&segment.fragments))
            .bind(packed::id_bytes(&segment.data_id))
            .bind(i64::from(segment.seq))
            .execute(tx.conn().await?)
            .await?;
        Ok(())
    }

    /// Takes copy `placement` off fragment `f` (and its pin off
    /// `overflow_pins`), noting what that frees on its node.
    async fn remove_copy_in(
        tx: &mut Tx<'_>,
        (data_id, seq, f): (&str, u32, &mut FragmentRow),
        placement: &Placement,
        usage: &mut NodeUsage,
    ) -> Result<(), GatewayError> {
        let before = f.placements.len();
        match placement {
            Placement::Node { node_id, .. } => {
                f.placements.retain(|p| p.node_id() != Some(*node_id));
                if f.placements.len() < before {
                    usage.remove(*node_id, f.size);
                }
            }
            Placement::Overflow { .. } => {
                f.placements.retain(|p| p.cid().is_none());
                sqlx::query(
                    "DELETE FROM overflow_pins WHERE data_id = $1 AND seq = $2 AND idx = $3",
                )
                .bind(packed::id_bytes(data_id))
                .bind(i64::from(seq))
                .bind(i64::from(f.index))
                .execute(tx.conn().await?)
                .await?;
            }
        }
        Ok(())
    }

    /// Queues fragments for repair (`due_now`: at once, whatever back-off
    /// they were in).
    async fn queue_repairs_in(
        tx: &mut Tx<'_>,
        ids: &[(&str, u32, u16)],
        due_now: bool,
    ) -> Result<(), GatewayError> {
        let conflict = if due_now {
            " ON CONFLICT (data_id, seq, idx) DO UPDATE SET queued = 1, not_before = 0"
        } else {
            " ON CONFLICT (data_id, seq, idx) DO UPDATE SET queued = 1"
        };
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let sql = insert_rows_sql("repairs", &["data_id", "seq", "idx", "queued"], chunk.len())
                + conflict;
            let mut query = sqlx::query(&sql);
            for (data_id, seq, idx) in chunk {
                query = query
                    .bind(packed::id_bytes(data_id))
                    .bind(i64::from(*seq))
                    .bind(i64::from(*idx))
                    .bind(1i64);
            }
            query.execute(tx.conn().await?).await?;
        }
        Ok(())
    }

    /// Removes a fragment's repair row (its queue entry, claim and back-off).
    async fn forget_repair_in(
        tx: &mut Tx<'_>,
        (data_id, seq, idx): (&str, u32, u16),
    ) -> Result<(), GatewayError> {
        sqlx::query("DELETE FROM repairs WHERE data_id = $1 AND seq = $2 AND idx = $3")
            .bind(packed::id_bytes(data_id))
            .bind(i64::from(seq))
            .bind(i64::from(idx))
            .execute(tx.conn().await?)
            .await?;
        Ok(())
    }

    /// Forgets a fragment's copy on node `node_id`, and queues the fragment
    /// for repair.
    pub(super) async fn drop_node_copy_in(
        tx: &mut Tx<'_>,
        (data_id, seq, idx): (&str, u32, u16),
        node_id: i64,
    ) -> Result<(), GatewayError> {
        let Some(mut segment) = Self::segment_in(tx.conn().await?, (data_id, seq)).await? else {
            return Ok(());
        };
        let Some(f) = segment.fragments.iter_mut().find(|f| f.index == idx) else {
            return Ok(());
        };
        let mut usage = NodeUsage::default();
        let placement = Placement::Node {
            node_id,
            network: Network::Mainnet,
        };
        Self::remove_copy_in(tx, (data_id, seq, f), &placement, &mut usage).await?;
        Self::save_fragments_in(tx, &segment).await?;
        Self::log_usage_in(tx, &usage).await?;
        Self::queue_repairs_in(tx, &[(data_id, seq, idx)], false).await
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
            // A few statements for any number of nodes: this transaction
            // holds the write turn, every refresh.
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let list = |first: usize| {
                    (first..first + chunk.len())
                        .map(|n| format!("${n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let lost_sql = format!(
                    "SELECT id FROM nodes WHERE state = 'lost' AND id IN ({})",
                    list(1)
                );
                let mut lost = sqlx::query_scalar::<_, i64>(&lost_sql);
                for id in chunk {
                    lost = lost.bind(id);
                }
                back.extend(lost.fetch_all(tx.conn().await?).await?);
                let seen_sql = format!(
                    "UPDATE nodes SET last_seen = $1, \
                     state = CASE WHEN state = 'lost' THEN 'active' ELSE state END \
                     WHERE id IN ({})",
                    list(2)
                );
                let mut seen = sqlx::query(&seen_sql).bind(now);
                for id in chunk {
                    seen = seen.bind(id);
                }
                seen.execute(tx.conn().await?).await?;
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
        .execute(&mut self.reader().await?)
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
            .execute(&mut self.reader().await?)
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
        self.set_setting(
            POLICY_SETTING,
            &format!("{}+{}", policy.mainnet, policy.testnet),
        )
        .await
    }

    /// Sets a row of `settings`.
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), GatewayError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&mut self.reader().await?)
        .await?;
        Ok(())
    }

    /// A row of `settings`, if set.
    async fn setting(&self, name: &str) -> Result<Option<String>, GatewayError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut self.reader().await?)
                .await?,
        )
    }

    /// The replica policy a gateway recorded (the default before any did).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn recorded_policy(&self) -> Result<ReplicaPolicy, GatewayError> {
        let value = self.setting(POLICY_SETTING).await?;
        let parsed = value.as_deref().and_then(|v| {
            let (m, t) = v.split_once('+')?;
            Some(ReplicaPolicy {
                mainnet: m.parse().ok()?,
                testnet: t.parse().ok()?,
            })
        });
        Ok(parsed.unwrap_or_default())
    }

    /// How redundant the stored fragments are: the last complete walk's
    /// figures (see [`Index::check_segments`]), and the repair queue now.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn redundancy(&self) -> Result<Redundancy, GatewayError> {
        let mut report: Redundancy = self
            .setting(REDUNDANCY_SETTING)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default();
        let queue: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({CANDIDATES}) c"))
            .fetch_one(&mut self.reader().await?)
            .await?;
        report.repair_queue = to_u64(queue);
        Ok(report)
    }

    /// Records the figures of a complete walk over the segments.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn record_redundancy(&self, walked: &Redundancy) -> Result<(), GatewayError> {
        let report = Redundancy {
            repair_queue: 0,
            as_of: Some(now_ms()),
            ..walked.clone()
        };
        self.set_setting(
            REDUNDANCY_SETTING,
            &serde_json::to_string(&report).unwrap_or_default(),
        )
        .await
    }

    /// One step of the walk over every segment: up to `limit` segments
    /// after `after`, each fragment's copies on active nodes tallied under
    /// `policy`, and the fragments with a copy on a node that is not
    /// active, or below the policy, queued for repair (idempotent: a queued
    /// fragment keeps its back-off).
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn check_segments(
        &self,
        after: &WalkCursor,
        limit: i64,
        policy: ReplicaPolicy,
    ) -> Result<CheckedSegments, GatewayError> {
        let mut conn = self.reader().await?;
        let states = node_states(&mut conn).await?;
        let rows = sqlx::query(
            "SELECT data_id, seq, fragments FROM segments \
             WHERE data_id > $1 OR (data_id = $1 AND seq > $2) \
             ORDER BY data_id, seq LIMIT $3",
        )
        .bind(packed::id_bytes(&after.data_id))
        .bind(after.seq)
        .bind(limit)
        .fetch_all(&mut conn)
        .await?;
        drop(conn);
        let mut step = CheckedSegments {
            redundancy: Redundancy::default(),
            queued: 0,
            next: None,
        };
        let mut to_queue: Vec<(String, u32, u16)> = Vec::new();
        for row in &rows {
            let data_id = packed::id_text(&row.try_get::<Vec<u8>, _>("data_id")?);
            let seq: i64 = row.try_get("seq")?;
            for f in packed::unpack(&row.try_get::<Vec<u8>, _>("fragments")?)? {
                let active = active_copies(&f, &states);
                step.redundancy.tally(active, policy);
                let elsewhere = f.placements.iter().any(|p| {
                    p.node_id().is_some() && copy_state(p, &states) != Some(NodeState::Active)
                });
                if elsewhere || active.0 < policy.mainnet || active.1 < policy.testnet {
                    to_queue.push((
                        data_id.clone(),
                        u32::try_from(seq).unwrap_or(u32::MAX),
                        f.index,
                    ));
                }
            }
            step.next = Some(WalkCursor {
                data_id: data_id.clone(),
                seq,
            });
        }
        if rows.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
            step.next = None;
        }
        if !to_queue.is_empty() {
            let ids: Vec<(&str, u32, u16)> = to_queue
                .iter()
                .map(|(d, s, i)| (d.as_str(), *s, *i))
                .collect();
            let ids = &ids;
            write_tx!(self, |tx| { Self::queue_repairs_in(tx, ids, false).await })?;
            step.queued = ids.len();
        }
        Ok(step)
    }
}
