//! Repair: every fragment back to its target — the replica policy's copies
//! (3 mainnet + 1 testnet by default), each on a distinct active node —
//! whatever took it below: a node lost, drained or disqualified, or a
//! fragment that overflowed to IPFS while the nodes were full.
//!
//! The index names the candidates, the most endangered first
//! ([`crate::index::Index::repair_candidates`]). Each is claimed (one gateway
//! repairs it), read from a copy that verifies (its MD5; the overflow's copy
//! too), written to active nodes that do not hold it yet, recorded, and only
//! then are the copies that do not count forgotten: replicas on draining or
//! disqualified nodes are removed from them at once (readers find the other
//! copies), a lost node's are left to the orphan sweep should it return,
//! overflow pins are released after the grace period. A repair that cannot
//! finish (no room, no readable copy) backs off and is tried again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenfold_balancer::{Check, NodeState, Placement, Replica};

use crate::index::{Redundancy, RepairCandidate, WalkCursor, now_ms};
use crate::object_store::ObjectStore;

/// Segments the walk goes through per repair round.
const WALK_SEGMENTS: i64 = 10_000;

/// Where this gateway's walk over the segments is, and what it found so
/// far in this pass.
#[derive(Debug, Default)]
struct Walk {
    cursor: WalkCursor,
    found: Redundancy,
}

/// Candidates looked at per pass.
const BATCH: i64 = 64;
/// How long a claimed repair is kept from other gateways.
const CLAIM: Duration = Duration::from_secs(300);
/// The wait after a first failed repair, doubled with each further one...
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// ... up to this.
const RETRY_MAX: Duration = Duration::from_secs(3600);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When a repair that failed `attempts` times before this one is tried again.
fn retry_at(now: i64, attempts: u32) -> i64 {
    let wait = RETRY_FIRST
        .saturating_mul(1 << attempts.min(16))
        .min(RETRY_MAX);
    now.saturating_add(millis(wait))
}

/// A candidate's copies sorted by what repair does with them.
#[derive(Debug, Default, PartialEq)]
struct Triage {
    /// Copies that count: on active nodes.
    good: Vec<Placement>,
    /// Copies a verified read may come from: all but a lost node's.
    readable: Vec<Placement>,
    /// Copies that do not count, forgotten once the fragment is settled.
    dropped: Vec<Placement>,
    /// Of those, replicas removed from their (reachable) node at once.
    remove_now: Vec<Placement>,
    /// And overflow pins, released after the grace period.
    release_later: Vec<Placement>,
}

fn triage(copies: &[(Placement, Option<NodeState>)]) -> Triage {
    let mut t = Triage::default();
    for (placement, state) in copies {
        match state {
            Some(NodeState::Active) => {
                t.good.push(placement.clone());
                t.readable.push(placement.clone());
            }
            Some(NodeState::Lost) => t.dropped.push(placement.clone()),
            Some(NodeState::Draining | NodeState::Disqualified) => {
                t.readable.push(placement.clone());
                t.dropped.push(placement.clone());
                t.remove_now.push(placement.clone());
            }
            None => {
                t.readable.push(placement.clone());
                t.dropped.push(placement.clone());
                t.release_later.push(placement.clone());
            }
        }
    }
    t
}

impl ObjectStore {
    /// Takes the walk over the segments one step further (it queues for
    /// repair what is below its target or on a node that is not active);
    /// at its end, records what it found for `tenfold status`.
    async fn walk_step(&self, walk: &mut Walk) {
        let step = match self
            .index
            .check_segments(&walk.cursor, WALK_SEGMENTS, self.balancer.policy())
            .await
        {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!(error = %e, "walking the segments");
                return;
            }
        };
        if step.queued > 0 {
            tracing::debug!(queued = step.queued, "fragments queued for repair");
        }
        walk.found.add(&step.redundancy);
        match step.next {
            Some(cursor) => walk.cursor = cursor,
            None => {
                if let Err(e) = self.index.record_redundancy(&walk.found).await {
                    tracing::warn!(error = %e, "recording the redundancy");
                }
                *walk = Walk::default();
            }
        }
    }

    /// One pass over the candidates; returns how many were looked at and
    /// how many are settled (at their target, the rest forgotten).
    pub async fn repair_pass(&self) -> (usize, usize) {
        let batch = match self.index.repair_candidates(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "listing fragments to repair");
                return (0, 0);
            }
        };
        let seen = batch.len();
        let settled = futures::stream::iter(batch)
            .map(|c| self.repair_fragment(c))
            .buffer_unordered(self.repair_concurrency.max(1))
            .filter(|settled| futures::future::ready(*settled))
            .count()
            .await;
        (seen, settled)
    }

    /// Repairs one candidate; `true` when it is settled.
    #[tracing::instrument(skip_all, fields(data = %c.data_id, segment = c.seq, fragment = c.index))]
    async fn repair_fragment(&self, c: RepairCandidate) -> bool {
        // The new replicas are not orphans until recorded; while the sweep
        // decides about this data, it waits for the next pass.
        let Some(_writing) = self.write_intents.begin(&c.data_id) else {
            return false;
        };
        match self
            .index
            .claim_repair(c.id(), now_ms().saturating_add(millis(CLAIM)))
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a repair");
                return false;
            }
        }
        // The copies as they are now: another gateway may have repaired
        // the fragment since the candidates were listed.
        let c = match self.index.repair_candidate(c.id(), c.attempts).await {
            Ok(Some(fresh)) => fresh,
            Ok(None) => {
                // Gone meanwhile (its object deleted or overwritten), or no
                // copy left: recording nothing forgets a gone one's claim.
                let policy = self.balancer.policy();
                if let Err(e) = self.index.record_repair(c.id(), &[], None, policy).await {
                    tracing::warn!(error = %e, "forgetting a repair");
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a claimed fragment's copies");
                return false;
            }
        };
        match self.repair_claimed(&c).await {
            Ok(settled) => settled,
            Err(why) => {
                tracing::debug!(attempts = c.attempts + 1, %why, "repair not done yet");
                let at = retry_at(now_ms(), c.attempts);
                if let Err(e) = self.index.retry_repair(c.id(), at, &why).await {
                    // The claim lapses and the repair comes back later.
                    tracing::warn!(error = %e, "recording a repair's back-off");
                }
                false
            }
        }
    }

    async fn repair_claimed(&self, c: &RepairCandidate) -> Result<bool, String> {
        let t = triage(&c.copies);
        let key = c.key();
        let (added, settled) = if self.balancer.policy().is_met(&t.good) {
            // At target already (another gateway repaired it meanwhile):
            // only the copies that do not count are left to forget.
            (Vec::new(), true)
        } else {
            if !self.balancer.room_for(c.size, &t.good) {
                return Err("the active nodes have no room for the missing copies".into());
            }
            let data = self
                .balancer
                .read(&key, c.size, &t.readable, Check::Md5(c.md5))
                .await
                .map_err(|e| format!("no copy reads and verifies: {e}"))?
                .into_bytes();
            match self
                .balancer
                .place_missing(&key, data, c.md5, &t.good)
                .await
            {
                Ok(added) => (added, true),
                Err(failure) => (failure.written, false),
            }
        };
        let replicas = |placements: &[Placement]| -> Vec<Replica> {
            placements
                .iter()
                .map(|p| Replica {
                    key: key.clone(),
                    placement: p.clone(),
                })
                .collect()
        };
        let (remove_now, release_later) = (replicas(&t.remove_now), replicas(&t.release_later));
        let forget = settled.then_some((
            t.dropped.as_slice(),
            remove_now.as_slice(),
            release_later.as_slice(),
        ));
        match self
            .index
            .record_repair(c.id(), &added, forget, self.balancer.policy())
            .await
        {
            Ok(true) if settled => {
                tracing::info!(
                    added = added.len(),
                    dropped = t.dropped.len(),
                    "fragment repaired"
                );
                if !t.remove_now.is_empty() || !t.release_later.is_empty() {
                    self.garbage_ready.notify_one();
                }
                Ok(true)
            }
            Ok(true) => Err(format!(
                "{} new copies placed, the nodes could not take the rest",
                added.len()
            )),
            other => {
                // Gone meanwhile, or not recorded: the new replicas are
                // referenced by nothing.
                self.discard_replicas(replicas(&added)).await;
                match other {
                    Err(e) => Err(format!("recording the repair: {e}")),
                    _ => Ok(false),
                }
            }
        }
    }

    /// Runs repair every `interval`, and again at once after a full pass,
    /// for as long as the store lives.
    pub fn spawn_repair(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut walk = Walk::default();
            loop {
                tick.tick().await;
                if let Some(store) = weak.upgrade() {
                    store.walk_step(&mut walk).await;
                }
                loop {
                    let Some(store) = weak.upgrade() else { return };
                    let (seen, settled) = store.repair_pass().await;
                    if settled > 0 {
                        tracing::debug!(seen, settled, "repair pass");
                    }
                    if seen < usize::try_from(BATCH).unwrap_or(usize::MAX) || settled == 0 {
                        break;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tenfold_balancer::Network;

    use super::*;

    #[test]
    fn copies_are_sorted_by_what_repair_does_with_them() {
        let node = |node_id| Placement::Node {
            node_id,
            network: Network::Mainnet,
        };
        let pin = Placement::Overflow { cid: "Qm".into() };
        let t = triage(&[
            (node(1), Some(NodeState::Active)),
            (node(2), Some(NodeState::Lost)),
            (node(3), Some(NodeState::Draining)),
            (node(4), Some(NodeState::Disqualified)),
            (pin.clone(), None),
        ]);
        assert_eq!(t.good, [node(1)]);
        assert_eq!(t.readable, [node(1), node(3), node(4), pin.clone()]);
        assert_eq!(t.dropped, [node(2), node(3), node(4), pin.clone()]);
        assert_eq!(t.remove_now, [node(3), node(4)]);
        assert_eq!(t.release_later, [pin]);
    }

    #[test]
    fn failed_repairs_back_off_up_to_an_hour() {
        assert_eq!(retry_at(0, 0), 5_000);
        assert_eq!(retry_at(0, 1), 10_000);
        assert_eq!(retry_at(0, 30), 3_600_000);
    }
}
