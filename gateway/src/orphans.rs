//! The orphan sweep: replicas on a node that nothing in the index names —
//! left by a gateway killed mid-upload, by a node write that timed out but
//! completed, by a removal that could not be queued — are found by listing
//! each node and removed (those of a listing's page in one DeleteObjects),
//! so that nodes do not keep (and report as used) bytes nobody can read.
//!
//! A replica is removed only when it has been seen unnamed, and not being
//! written, for the whole grace period (`orphan_grace`), by two listings of
//! this gateway (the nodes' clocks are not trusted). Writes in progress are
//! known: this gateway's own ([`crate::write_intents`], held off while a
//! page is decided) and other gateways' that have lasted a while (their
//! heartbeats in the index, renewed every quarter of the grace period). A
//! write still running a grace period after its first replica was seen has
//! renewed its heartbeat meanwhile, so it is never taken for an orphan.
//! Gateways on one index may have different grace periods: each announces
//! its heartbeat period, and a sweep waits at least four of the longest.
//! One gateway sweeps a node at a time (a claim in the index); keys of any
//! other shape than a fragment's are left alone.
//!
//! Pins on the overflow store are swept the same way, from the index's
//! record of the pins Tenfold made ([`crate::recorded_pins`]): a pin
//! recorded more than a grace period ago whose content id no stored
//! fragment or queued removal names, and whose data is not being written,
//! is undone. Pins Tenfold did not record (others', on a shared daemon)
//! are never looked at.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenfold_common::MAX_DELETE_KEYS;

use crate::error::GatewayError;
use crate::fragment::parse_node_key;
use crate::index::{Counter, PinUse, now_ms};
use crate::object_store::{ObjectStore, new_object_id};

/// Unnamed replicas tracked per node at most; a node with more is swept
/// on from the start once these are gone.
const MAX_TRACKED: usize = 100_000;
/// Shortest pause between two sweeps, however short the grace period.
const MIN_PERIOD: Duration = Duration::from_millis(500);
/// The overflow store's sweep claim (node ids start at 1).
const OVERFLOW_CLAIM: i64 = 0;
/// Recorded pins looked at per sweep.
const PINS_PER_SWEEP: i64 = 1000;

/// The sweep's state on this gateway.
#[derive(Debug)]
pub struct OrphanSweep {
    /// How long a replica stays unnamed before it is removed.
    pub grace: Duration,
    /// This gateway's name in the index's sweep claims.
    owner: String,
    /// Per node, the unnamed replicas seen and when first.
    seen: Mutex<HashMap<i64, HashMap<String, Instant>>>,
}

impl OrphanSweep {
    /// A sweep that removes replicas unnamed for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            owner: new_object_id(),
            seen: Mutex::default(),
        }
    }

    /// Time between sweeps of a node: half the grace period.
    fn period(&self) -> Duration {
        (self.grace / 2).max(MIN_PERIOD)
    }

    /// Time between heartbeats of long writes: a quarter of the grace period.
    fn heartbeat(&self) -> Duration {
        (self.grace / 4).max(MIN_PERIOD / 2)
    }

    fn take_seen(&self, node_id: i64) -> HashMap<String, Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node_id)
            .unwrap_or_default()
    }

    fn keep_seen(&self, node_id: i64, seen: HashMap<String, Instant>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node_id, seen);
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The grace period a sweep keeps to: `own`, or four of the longest
/// heartbeat period a gateway announced (ms), whichever is longer: a write
/// on a gateway that renews its heartbeat slowly is never swept by one
/// with a shorter grace period.
fn effective_grace(own: Duration, longest_heartbeat_ms: Option<i64>) -> Duration {
    let theirs = longest_heartbeat_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(Duration::ZERO, |ms| {
            Duration::from_millis(ms).saturating_mul(4)
        });
    own.max(theirs)
}

/// What to do with an unnamed replica first seen at `first_seen`.
fn is_due(first_seen: Instant, now: Instant, grace: Duration) -> bool {
    now.saturating_duration_since(first_seen) >= grace
}

impl ObjectStore {
    /// Sweeps every node that is up and not claimed by another gateway,
    /// keeping to `grace` ([`ObjectStore::effective_grace`]); returns how
    /// many orphans were removed.
    pub async fn sweep_orphans(&self, grace: Duration) -> usize {
        let sweep = &self.orphan_sweep;
        let claim_until = || now_ms().saturating_add(millis(sweep.period() * 4));
        let mut removed = 0;
        for node in self.balancer.status() {
            if self.balancer.is_down(node.id) {
                continue;
            }
            match self
                .index
                .claim_sweep(node.id, &sweep.owner, claim_until())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // Another gateway sweeps it: what was seen here ages no more.
                    drop(sweep.take_seen(node.id));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = node.id, error = %e, "claiming a node's sweep");
                    continue;
                }
            }
            let before = sweep.take_seen(node.id);
            match self.sweep_node(node.id, &before, grace).await {
                Ok((seen, gone)) => {
                    if gone > 0 {
                        tracing::info!(node = node.id, removed = gone, "orphan replicas removed");
                        self.count_swept(Counter::OrphansSwept, gone).await;
                    }
                    removed += gone;
                    sweep.keep_seen(node.id, seen);
                }
                Err(e) => {
                    tracing::warn!(node = node.id, error = %e, "sweeping a node for orphans");
                    sweep.keep_seen(node.id, before);
                }
            }
        }
        removed
    }

    /// Adds `swept` to `counter`, for `tenfold status`.
    async fn count_swept(&self, counter: Counter, swept: usize) {
        let swept = u64::try_from(swept).unwrap_or(u64::MAX);
        if let Err(e) = self.index.add_to_counter(counter, swept).await {
            tracing::warn!(error = %e, ?counter, "counting what the sweep removed");
        }
    }

    /// Undoes the recorded pins that nothing names `grace` after they were
    /// made (see the module documentation); returns how many.
    pub async fn sweep_pins(&self, grace: Duration) -> usize {
        if self.balancer.overflow().is_none() {
            return 0;
        }
        let sweep = &self.orphan_sweep;
        let until = now_ms().saturating_add(millis(sweep.period() * 4));
        match self
            .index
            .claim_sweep(OVERFLOW_CLAIM, &sweep.owner, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "claiming the overflow sweep");
                return 0;
            }
        }
        match self.sweep_recorded_pins(grace).await {
            Ok(0) => 0,
            Ok(undone) => {
                tracing::info!(undone, "orphan pins undone");
                self.count_swept(Counter::OrphanPinsSwept, undone).await;
                undone
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweeping the overflow store's pins");
                0
            }
        }
    }

    async fn sweep_recorded_pins(&self, grace: Duration) -> Result<usize, GatewayError> {
        let live_since = now_ms().saturating_sub(millis(grace));
        let made = self
            .index
            .pins_made_before(live_since, PINS_PER_SWEEP)
            .await?;
        let mut undone = 0;
        for (cid, data_id) in made {
            // Nothing here starts writing this data until it is decided.
            let hold = self.write_intents.hold_idle([data_id.as_str()]);
            if !hold.holds(&data_id) {
                continue;
            }
            match self.index.pin_use(&cid, &data_id, live_since).await? {
                PinUse::Writing => {}
                PinUse::Named => self.index.forget_pins_of(&cid).await?,
                // Its records go with the pin (still in use: the next sweep).
                PinUse::Unnamed => {
                    if self.release_pin(&cid).await? {
                        tracing::debug!(cid, data_id, "orphan pin undone");
                        undone += 1;
                    }
                }
            }
        }
        Ok(undone)
    }

    /// Lists node `node_id` page by page and removes the replicas unnamed
    /// since before the grace period; returns the unnamed ones still
    /// waiting, with when each was first seen, and how many were removed.
    #[tracing::instrument(skip(self, before))]
    async fn sweep_node(
        &self,
        node_id: i64,
        before: &HashMap<String, Instant>,
        grace: Duration,
    ) -> Result<(HashMap<String, Instant>, usize), GatewayError> {
        let mut seen = HashMap::new();
        let (mut listed, mut removed) = (0, 0);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .balancer
                .list_keys(node_id, after.as_deref())
                .await
                .map_err(GatewayError::Storage)?;
            let ours: Vec<(&str, &str)> = page
                .keys
                .iter()
                .filter_map(|key| parse_node_key(key).map(|(data_id, ..)| (key.as_str(), data_id)))
                .collect();
            let first = ours.iter().map(|&(_, id)| id).min();
            let last = ours.iter().map(|&(_, id)| id).max();
            if let Some(range) = first.zip(last) {
                // Nothing here starts writing this data until it is decided.
                let hold = self.write_intents.hold_idle(ours.iter().map(|&(_, id)| id));
                let live_since = now_ms().saturating_sub(millis(grace));
                let named = self.index.named_on_node(node_id, range, live_since).await?;
                let now = Instant::now();
                let mut due = Vec::new();
                for &(key, data_id) in &ours {
                    if !hold.holds(data_id)
                        || named.writing.contains(data_id)
                        || named.keys.contains(key)
                    {
                        continue;
                    }
                    let first_seen = before.get(key).copied().unwrap_or(now);
                    if is_due(first_seen, now, grace) {
                        due.push((key.to_owned(), first_seen));
                    } else {
                        seen.insert(key.to_owned(), first_seen);
                    }
                }
                // The page's orphans go in one DeleteObjects.
                let mut results = Vec::with_capacity(due.len());
                for chunk in due.chunks(MAX_DELETE_KEYS) {
                    let keys: Vec<String> = chunk.iter().map(|(key, _)| key.clone()).collect();
                    match self.balancer.delete_many(node_id, &keys).await {
                        Ok(answers) => {
                            results
                                .extend(answers.into_iter().map(|a| a.map_err(|e| e.to_string())));
                        }
                        Err(e) => results.extend(keys.iter().map(|_| Err(e.to_string()))),
                    }
                }
                drop(hold);
                for ((key, first_seen), result) in due.into_iter().zip(results) {
                    match result {
                        Ok(()) => {
                            tracing::debug!(key, "orphan replica removed");
                            removed += 1;
                        }
                        Err(e) => {
                            tracing::debug!(key, error = %e, "orphan replica not removed yet");
                            seen.insert(key, first_seen);
                        }
                    }
                }
            }
            listed += page.keys.len();
            match page.next {
                Some(next) if seen.len() < MAX_TRACKED => after = Some(next),
                _ => break,
            }
        }
        tracing::debug!(listed, unnamed = seen.len(), removed, "node swept");
        Ok((seen, removed))
    }

    /// The grace period the sweep keeps to: this gateway's, or four
    /// heartbeat periods of the slowest gateway on the index, if longer.
    ///
    /// # Errors
    /// [`GatewayError::Index`].
    pub async fn effective_grace(&self) -> Result<Duration, GatewayError> {
        let longest = self.index.longest_heartbeat().await?;
        Ok(effective_grace(self.orphan_sweep.grace, longest))
    }

    /// Records that this gateway's writes in progress are still going, and
    /// how often it says so (done before the gateway serves, then every
    /// heartbeat period).
    pub async fn record_heartbeats(&self) {
        let writing = self.write_intents.in_flight();
        // Heartbeats older than four grace periods name no live write.
        let expired = match self.effective_grace().await {
            Ok(grace) => now_ms().saturating_sub(millis(grace.saturating_mul(4))),
            Err(_) => i64::MIN,
        };
        let (owner, period) = (
            &self.orphan_sweep.owner,
            millis(self.orphan_sweep.heartbeat()),
        );
        let recorded = self
            .index
            .heartbeat_writes(owner, period, &writing, expired)
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, writes = writing.len(), "recording the heartbeat of writes in progress");
        }
    }

    /// Runs the sweep, and the heartbeats of this gateway's long writes,
    /// for as long as the store lives.
    pub fn spawn_orphan_sweep(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let heartbeat = self.orphan_sweep.heartbeat();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.record_heartbeats().await;
            }
        });
        let weak = Arc::downgrade(self);
        let period = self.orphan_sweep.period();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                match store.effective_grace().await {
                    Ok(grace) => {
                        store.sweep_orphans(grace).await;
                        store.sweep_pins(grace).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the gateways' heartbeat periods");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_due_once_unnamed_for_the_whole_grace_period() {
        let grace = Duration::from_secs(60);
        let now = Instant::now();
        assert!(!is_due(now, now, grace));
        assert!(!is_due(now - Duration::from_secs(59), now, grace));
        assert!(is_due(now - grace, now, grace));
        // A first sighting "after" now (clock read earlier) is not due.
        assert!(!is_due(now + Duration::from_secs(1), now, grace));
    }

    #[test]
    fn the_slowest_heartbeat_lengthens_the_grace_period() {
        let own = Duration::from_secs(2);
        assert_eq!(effective_grace(own, None), own);
        assert_eq!(effective_grace(own, Some(250)), own);
        // A gateway with a grace period of an hour renews every 15 minutes.
        assert_eq!(
            effective_grace(own, Some(900_000)),
            Duration::from_secs(3600)
        );
        assert_eq!(effective_grace(own, Some(-5)), own);
    }

    #[test]
    fn sweeps_and_heartbeats_follow_the_grace_period() {
        let sweep = OrphanSweep::new(Duration::from_secs(3600));
        assert_eq!(sweep.period(), Duration::from_secs(1800));
        assert_eq!(sweep.heartbeat(), Duration::from_secs(900));
        let short = OrphanSweep::new(Duration::from_millis(10));
        assert_eq!(short.period(), MIN_PERIOD);
    }
}
