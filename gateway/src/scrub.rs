//! The scrub: every replica on every node is read back and checked against
//! its fragment's MD5 at least once per `scrub_every`, paced evenly over
//! the period and never faster than `scrub_rate` bytes a second. A replica
//! found missing or corrupt is forgotten and its fragment queued for repair;
//! every audit counts in its node's record, and a node failing more than a
//! quarter of at least ten audits over one pass is disqualified (its
//! replicas are repaired elsewhere, as Storj does with untrusted operators).
//! One gateway scrubs a node at a time, and a pass resumes where it stopped.
//!
//! Spot audits come on top (Storj's audits of untrusted nodes): every
//! `spot_audit_every`, one replica picked at random on each node is checked
//! the same way, so that a node discarding data between two passes of a
//! month-long scrub is caught within hours, not weeks.

use std::sync::Arc;
use std::time::Duration;

use tenfold_balancer::{AuditOutcome, NodeState};

use crate::error::GatewayError;
use crate::index::{AuditPolicy, ScrubItem, now_ms};
use crate::object_store::{ObjectStore, new_object_id};

/// Audits a failing node needs in one pass before it can be disqualified.
const MIN_AUDITS: i64 = 10;
/// The share of failed audits above which a node is disqualified.
const MAX_FAILURE_SHARE: f64 = 0.25;
/// Replicas audited per node and round at most.
const MAX_BATCH: u64 = 1000;

/// The scrub's settings.
#[derive(Debug, Clone)]
pub struct Scrub {
    /// Every replica is checked at least once per this period.
    pub every: Duration,
    /// Bytes read per second at most, across nodes.
    pub rate: u64,
    /// One random replica of each node is audited this often (zero: never).
    pub spot_every: Duration,
    /// This gateway's name in the index's scrub claims.
    owner: String,
}

impl Scrub {
    pub fn new(every: Duration, rate: u64, spot_every: Duration) -> Self {
        Self {
            every,
            rate,
            spot_every,
            owner: new_object_id(),
        }
    }

    /// Time between rounds: a tenth of the period, between 1 s and 1 min.
    fn round(&self) -> Duration {
        (self.every / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Replicas of a node holding `replicas` to audit per round, so that a
    /// pass takes at most the period (rounded up; at least one).
    fn batch(&self, replicas: u64) -> u64 {
        let rounds = (self.every.as_secs_f64() / self.round().as_secs_f64()).max(1.0);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let per_round = (replicas as f64 / rounds).ceil() as u64;
        per_round.clamp(1, MAX_BATCH)
    }

    fn policy(&self) -> AuditPolicy {
        AuditPolicy {
            min_audits: MIN_AUDITS,
            max_failure_share: MAX_FAILURE_SHARE,
        }
    }
}

impl ObjectStore {
    /// One round over every node this gateway may scrub.
    pub async fn scrub_round(&self) {
        let scrub = &self.scrub;
        let records = match self.index.node_records().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "scrub: reading the node records");
                return;
            }
        };
        let claim_ms = i64::try_from((scrub.round() * 4).as_millis()).unwrap_or(i64::MAX);
        for node in self.balancer.status() {
            if node.state == NodeState::Lost || self.balancer.is_down(node.id) {
                continue;
            }
            let replicas = records.get(&node.id).map_or(0, |r| r.replicas);
            let cursor = match self
                .index
                .claim_scrub(node.id, &scrub.owner, now_ms().saturating_add(claim_ms))
                .await
            {
                Ok(Some(cursor)) => cursor,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(node = node.id, error = %e, "scrub: claiming a node");
                    continue;
                }
            };
            if let Err(e) = self
                .scrub_node(node.id, cursor, scrub.batch(replicas))
                .await
            {
                tracing::warn!(node = node.id, error = %e, "scrub: a round failed");
            }
        }
    }

    #[tracing::instrument(skip(self, cursor))]
    async fn scrub_node(
        &self,
        node_id: i64,
        cursor: crate::index::ScrubCursor,
        batch: u64,
    ) -> Result<(), GatewayError> {
        let limit = usize::try_from(batch).unwrap_or(usize::MAX);
        let found = self.index.scrub_batch(node_id, &cursor, limit).await?;
        let items = &found.items;
        let (mut passed, mut failed) = (0u64, 0u64);
        let mut reached = None;
        let mut cut_short = false;
        for item in items {
            let started = std::time::Instant::now();
            match self.audit_replica(node_id, item).await? {
                AuditOutcome::Intact => passed += 1,
                AuditOutcome::Missing | AuditOutcome::Corrupt => failed += 1,
                AuditOutcome::Unreachable(why) => {
                    // No finding: the pass goes on from here next time.
                    tracing::debug!(why, "scrub: node not reachable");
                    cut_short = true;
                    break;
                }
            }
            reached = Some(item.cursor());
            // Pace: no faster than the rate, across this gateway's scrub.
            #[allow(clippy::cast_precision_loss)]
            let due = Duration::from_secs_f64(item.size as f64 / self.scrub.rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        // All found audited: the pass ends with the segments, or goes on
        // after the last one walked when the batch found fewer than asked.
        let done = !cut_short && found.end;
        let next = if cut_short || items.len() == limit {
            reached
        } else {
            Some(found.scanned.clone())
        };
        if done {
            self.index.save_scrub(node_id, None).await?;
            tracing::debug!("scrub: pass over the node complete");
        } else if let Some(c) = &next {
            self.index.save_scrub(node_id, Some(c)).await?;
        }
        if (passed + failed > 0 || done)
            && self
                .index
                .record_audits(node_id, passed, failed, done, self.scrub.policy())
                .await?
        {
            tracing::warn!(
                node = node_id,
                "node disqualified: too many failed audits; its replicas are repaired elsewhere"
            );
        }
        if failed > 0 {
            self.garbage_ready.notify_one();
        }
        Ok(())
    }

    /// Audits one replica on node `node_id`; one found missing or corrupt
    /// is forgotten and its fragment queued for repair.
    async fn audit_replica(
        &self,
        node_id: i64,
        item: &ScrubItem,
    ) -> Result<AuditOutcome, GatewayError> {
        let key = crate::fragment::node_key(&item.data_id, item.seq, item.index);
        let outcome = self
            .balancer
            .audit(node_id, &key, item.size, item.md5)
            .await;
        if matches!(outcome, AuditOutcome::Missing | AuditOutcome::Corrupt) {
            tracing::warn!(
                node = node_id,
                key,
                ?outcome,
                "audit: replica lost, forgotten and queued for repair"
            );
            self.index
                .drop_bad_replica((&item.data_id, item.seq, item.index), node_id)
                .await?;
        }
        Ok(outcome)
    }

    /// One spot audit of every node that is reachable and not lost: a
    /// replica picked at random, counted in the node's audit record.
    pub async fn spot_audit_round(&self) {
        for node in self.balancer.status() {
            if node.state == NodeState::Lost || self.balancer.is_down(node.id) {
                continue;
            }
            if let Err(e) = self.spot_audit(node.id).await {
                tracing::warn!(node = node.id, error = %e, "spot audit failed");
            }
        }
    }

    #[tracing::instrument(skip(self))]
    async fn spot_audit(&self, node_id: i64) -> Result<(), GatewayError> {
        let Some(item) = self.index.random_replica(node_id).await? else {
            return Ok(());
        };
        let (passed, failed) = match self.audit_replica(node_id, &item).await? {
            AuditOutcome::Intact => (1, 0),
            AuditOutcome::Missing | AuditOutcome::Corrupt => (0, 1),
            AuditOutcome::Unreachable(why) => {
                tracing::debug!(why, "spot audit: node not reachable");
                return Ok(());
            }
        };
        self.index
            .record_audits(node_id, passed, failed, false, self.scrub.policy())
            .await?;
        Ok(())
    }

    /// Runs the scrub, a round every tenth of `scrub_every` (1 s to 1 min),
    /// for as long as the store lives; a `scrub_every` of zero turns it off.
    pub fn spawn_scrub(self: &Arc<Self>) {
        self.spawn_spot_audits();
        if self.scrub.every.is_zero() {
            tracing::warn!(
                "the scrub is off (scrub_every = 0): lost or corrupt replicas go unnoticed"
            );
            return;
        }
        let weak = Arc::downgrade(self);
        let round = self.scrub.round();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(round);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.scrub_round().await;
            }
        });
    }

    /// Runs a spot audit round every `spot_audit_every` (the first one
    /// period after start), unless it is zero.
    fn spawn_spot_audits(self: &Arc<Self>) {
        let every = self.scrub.spot_every;
        if every.is_zero() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.spot_audit_round().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_spread_over_the_period() {
        let month = Scrub::new(Duration::from_secs(30 * 86_400), 1 << 20, Duration::ZERO);
        assert_eq!(month.round(), Duration::from_secs(60));
        // 43,200 rounds a month: a node of a million replicas, 24 a round.
        assert_eq!(month.batch(1_000_000), 24);
        assert_eq!(month.batch(0), 1);
        let short = Scrub::new(Duration::from_secs(10), 1 << 20, Duration::ZERO);
        assert_eq!(short.round(), Duration::from_secs(1));
        assert_eq!(short.batch(35), 4);
        assert_eq!(short.batch(1_000_000), MAX_BATCH);
    }
}
