//! Replica clean-up: replicas of overwritten, deleted or failed objects are
//! deleted from their nodes (or unpinned from the overflow store).
//!
//! Replicas released by a commit wait in the index's queue for the grace
//! period (`gc_delay`), so reads that started before the commit finish;
//! those this gateway is still reading wait longer ([`crate::read_leases`]).
//! Each queued replica is claimed, tried and, when its node is down or
//! fails, put back with a back-off of its own, so one bad node never holds
//! back the others. Replicas of uploads that failed were never visible:
//! they go at once, and only those that cannot are queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenfold_balancer::{BalancerError, Placement, Replica};
use tenfold_common::MAX_DELETE_KEYS;

use crate::error::GatewayError;
use crate::fragment::data_id_of;
use crate::index::{GarbageRetry, QueuedReplica, now_ms};
use crate::object_store::ObjectStore;

/// Removal requests in flight at once (a node's replicas go in one).
const DELETE_CONCURRENCY: usize = 16;
/// Queue entries claimed per pass.
const BATCH: i64 = 512;
/// Outcomes of a pass recorded in one index transaction, at most (one
/// commit, one flush of the index, for many replicas).
const RECORD_EVERY: usize = 128;
/// How long a claimed entry is kept from other gateways: far longer than a
/// pass takes, short enough that a gateway that stopped half-way delays
/// little.
const CLAIM: Duration = Duration::from_secs(300);
/// The wait after a first failed removal, doubled with each further one...
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// ... up to this.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// How long a replica of data this gateway is reading waits before it is
/// looked at again.
const LEASED_WAIT: Duration = Duration::from_secs(5);

/// When a queued removal that failed `attempts` times before (this one
/// included) is tried again, from `now` (ms).
fn retry_at(now: i64, attempts: u32) -> i64 {
    let wait = RETRY_FIRST
        .saturating_mul(1 << attempts.min(16))
        .min(RETRY_MAX);
    now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One request of a removal: a replica alone, or several on one node (by
/// their places in the list removed).
enum Removal {
    Alone(usize),
    OnNode(i64, Vec<usize>),
}

/// A node's answer for one replica: removed, or gone with its node (a node
/// that was unregistered has nothing left to delete).
fn node_removal(answer: Result<(), BalancerError>) -> Result<(), GatewayError> {
    match answer {
        Ok(()) | Err(BalancerError::UnknownNode(_)) => Ok(()),
        Err(e) => Err(GatewayError::Storage(e)),
    }
}

/// What became of a claimed replica.
enum Outcome {
    Removed,
    /// Kept for now, not for a fault of the node: read here still.
    Held,
    Failed(String),
}
/// Pause between passes when nothing wakes the collector.
const IDLE: Duration = Duration::from_secs(5);

impl ObjectStore {
    /// Removes one copy: deletes it from its node, or unpins its content id
    /// unless another stored fragment has the same one. A node that was
    /// unregistered has nothing left to delete.
    async fn remove_replica(&self, replica: &Replica) -> Result<(), GatewayError> {
        match &replica.placement {
            Placement::Node { node_id, .. } => {
                node_removal(self.balancer.delete(*node_id, &replica.key).await)
            }
            Placement::Overflow { cid } => self.release_pin(cid).await.map(drop),
        }
    }

    /// Unpins `cid` unless a stored fragment still has its copy there
    /// (content addressing gives identical fragments one content id), and
    /// forgets its records (no longer the orphan sweep's); `true` when it
    /// was unpinned.
    pub(crate) async fn release_pin(&self, cid: &str) -> Result<bool, GatewayError> {
        if self.index.cid_in_use(cid).await? {
            return Ok(false);
        }
        self.balancer
            .unpin(cid)
            .await
            .map_err(GatewayError::Storage)?;
        // An upload of identical content may have committed the same
        // content id meanwhile: pin it again.
        if self.index.cid_in_use(cid).await? {
            tracing::info!(cid, "content id used again meanwhile: re-pinned");
            self.balancer
                .pin(cid)
                .await
                .map_err(GatewayError::Storage)?;
            return Ok(false);
        }
        self.index.forget_pins_of(cid).await?;
        Ok(true)
    }

    /// Removes `replicas`: those on one node in one DeleteObjects (up to
    /// [`MAX_DELETE_KEYS`]), an overflow pin each on its own,
    /// [`DELETE_CONCURRENCY`] requests at a time, so that a slow node holds
    /// back only its own. Each one's outcome, in order.
    async fn remove_replicas(&self, replicas: &[Replica]) -> Vec<Result<(), GatewayError>> {
        let mut on_nodes: HashMap<i64, Vec<usize>> = HashMap::new();
        let mut jobs = Vec::new();
        for (i, replica) in replicas.iter().enumerate() {
            match replica.placement {
                Placement::Node { node_id, .. } => on_nodes.entry(node_id).or_default().push(i),
                Placement::Overflow { .. } => jobs.push(Removal::Alone(i)),
            }
        }
        for (node_id, on_node) in on_nodes {
            for chunk in on_node.chunks(MAX_DELETE_KEYS) {
                jobs.push(match chunk {
                    [i] => Removal::Alone(*i),
                    many => Removal::OnNode(node_id, many.to_vec()),
                });
            }
        }
        let removals: Vec<_> = jobs
            .into_iter()
            .map(|job| self.remove_together(replicas, job))
            .collect();
        let done: Vec<Vec<(usize, Result<(), GatewayError>)>> = futures::stream::iter(removals)
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        let mut outcomes: Vec<Option<Result<(), GatewayError>>> = std::iter::repeat_with(|| None)
            .take(replicas.len())
            .collect();
        for (i, outcome) in done.into_iter().flatten() {
            outcomes[i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(GatewayError::Internal("replica not tried".into()))))
            .collect()
    }

    /// Runs one removal of [`Self::remove_replicas`]: the outcome of each
    /// replica it removes, by its place in `replicas`.
    async fn remove_together(
        &self,
        replicas: &[Replica],
        job: Removal,
    ) -> Vec<(usize, Result<(), GatewayError>)> {
        let (node_id, at) = match job {
            Removal::Alone(i) => return vec![(i, self.remove_replica(&replicas[i]).await)],
            Removal::OnNode(node_id, at) => (node_id, at),
        };
        let keys: Vec<String> = at.iter().map(|&i| replicas[i].key.clone()).collect();
        match self.balancer.delete_many(node_id, &keys).await {
            Ok(answers) => at
                .into_iter()
                .zip(answers.into_iter().map(node_removal))
                .collect(),
            Err(BalancerError::UnknownNode(_)) => at.into_iter().map(|i| (i, Ok(()))).collect(),
            Err(e) => {
                let message = e.to_string();
                at.into_iter()
                    .map(|i| {
                        (
                            i,
                            Err(GatewayError::Storage(BalancerError::Node {
                                node: node_id,
                                message: message.clone(),
                            })),
                        )
                    })
                    .collect()
            }
        }
    }

    /// Removes copies now; those that could not be removed are queued.
    pub async fn discard_replicas(&self, replicas: Vec<Replica>) {
        let outcomes = self.remove_replicas(&replicas).await;
        let failed: Vec<Replica> = replicas
            .into_iter()
            .zip(outcomes)
            .filter_map(|(replica, outcome)| {
                let e = outcome.err()?;
                tracing::warn!(?replica, error = %e, "replica not removed, queueing it");
                Some(replica)
            })
            .collect();
        if !failed.is_empty()
            && let Err(e) = self.index.add_garbage(&failed).await
        {
            tracing::error!(error = %e, count = failed.len(), "could not queue replicas for removal");
        }
    }

    /// Whether a claimed replica is kept for now without being tried: one
    /// this gateway is reading, or one on a node that is down.
    fn not_yet(&self, queued: &QueuedReplica) -> Option<Outcome> {
        let Placement::Node { node_id, .. } = queued.replica.placement else {
            return None;
        };
        if self.read_leases.is_read(data_id_of(&queued.replica.key)) {
            return Some(Outcome::Held);
        }
        if self.balancer.is_down(node_id) {
            return Some(Outcome::Failed(format!("node {node_id} is down")));
        }
        None
    }

    /// One pass over the replicas that are due; returns how many were
    /// claimed and how many removed.
    pub async fn collect_garbage(&self) -> (usize, usize) {
        let released_before = now_ms().saturating_sub(millis(self.gc_delay));
        let batch = match self
            .index
            .claim_garbage(released_before, millis(CLAIM), BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "claiming from the garbage queue");
                return (0, 0);
            }
        };
        let claimed = batch.len();
        let mut outcomes: Vec<(QueuedReplica, Outcome)> = Vec::with_capacity(claimed);
        let mut tried = Vec::new();
        for queued in batch {
            match self.not_yet(&queued) {
                Some(outcome) => outcomes.push((queued, outcome)),
                None => tried.push(queued),
            }
        }
        // Every removal ends before any is recorded. A removal may write
        // the index itself (an overflow pin's release), and the writer is
        // handed out in turn: a recording that waited for it while a
        // removal in the buffer, queued for it too, went unpolled would
        // wait for ever, and every write behind it.
        let replicas: Vec<Replica> = tried.iter().map(|q| q.replica.clone()).collect();
        let removed_or_not = self.remove_replicas(&replicas).await;
        outcomes.extend(
            tried
                .into_iter()
                .zip(removed_or_not)
                .map(|(queued, outcome)| {
                    let outcome = match outcome {
                        Ok(()) => Outcome::Removed,
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    (queued, outcome)
                }),
        );
        let mut removed = 0;
        for chunk in outcomes.chunks(RECORD_EVERY) {
            let now = now_ms();
            let mut gone = Vec::new();
            let mut later = Vec::new();
            for (queued, outcome) in chunk {
                match outcome {
                    Outcome::Removed => gone.push(queued.id),
                    Outcome::Held => later.push(GarbageRetry {
                        id: queued.id,
                        at: now.saturating_add(millis(LEASED_WAIT)),
                        failure: None,
                    }),
                    Outcome::Failed(error) => {
                        tracing::debug!(replica = ?queued.replica, attempts = queued.attempts + 1, %error, "garbage not removed yet");
                        later.push(GarbageRetry {
                            id: queued.id,
                            at: retry_at(now, queued.attempts),
                            failure: Some(error.clone()),
                        });
                    }
                }
            }
            match self.index.settle_garbage(&gone, &later).await {
                Ok(()) => removed += gone.len(),
                // The claims lapse and the entries come back later.
                Err(e) => tracing::warn!(error = %e, "recording garbage removals"),
            }
        }
        (claimed, removed)
    }

    /// Wakes the garbage collector for replicas a commit or deletion just
    /// released, when they fall due sooner than its idle pass would come
    /// (`gc_delay` under [`IDLE`]): it then waits `gc_delay` and removes
    /// them, rather than up to [`IDLE`] later. With a longer `gc_delay` the
    /// idle passes find them: waking the collector on every write would
    /// only run an empty pass, an index transaction, against the writes
    /// that follow.
    pub fn garbage_released(&self) {
        if self.gc_delay < IDLE {
            self.garbage_ready.notify_one();
        }
    }

    /// Aborts multipart uploads older than the configured age.
    pub async fn abort_abandoned_uploads(&self) {
        let age_ms = i64::try_from(self.abandoned_after.as_millis()).unwrap_or(i64::MAX);
        match self
            .index
            .abort_uploads_before(crate::index::now_ms().saturating_sub(age_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted abandoned multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "aborting abandoned uploads"),
        }
    }

    /// Runs the collector (and the abandoned-upload sweep) for as long as
    /// the store lives.
    pub fn spawn_garbage_collector(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(store) = weak.upgrade() else { return };
                store.abort_abandoned_uploads().await;
                let (claimed, removed) = store.collect_garbage().await;
                if removed > 0 {
                    tracing::debug!(removed, "garbage collected");
                }
                // A full batch: more may be due right away.
                if claimed == usize::try_from(BATCH).unwrap_or(usize::MAX) {
                    continue;
                }
                let released = tokio::time::timeout(IDLE, store.garbage_ready.notified())
                    .await
                    .is_ok();
                if released && store.gc_delay < IDLE {
                    // What a commit just released falls due `gc_delay` from
                    // now (what repair and audits release is due at once);
                    // releases meanwhile leave one wake-up for the pass
                    // after, so a stream of them runs a pass per `gc_delay`.
                    tokio::time::sleep(store.gc_delay).await;
                }
            }
        })
    }
}
