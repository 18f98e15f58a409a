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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenfold_balancer::{BalancerError, Placement, Replica};

use crate::error::GatewayError;
use crate::fragment::data_id_of;
use crate::index::{GarbageRetry, QueuedReplica, now_ms};
use crate::object_store::ObjectStore;

/// Node deletions in flight at once.
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
                match self.balancer.delete(*node_id, &replica.key).await {
                    Ok(()) | Err(BalancerError::UnknownNode(_)) => Ok(()),
                    Err(e) => Err(GatewayError::Storage(e)),
                }
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

    /// Removes copies now; those that could not be removed are queued.
    pub async fn discard_replicas(&self, replicas: Vec<Replica>) {
        let failed: Vec<Replica> = futures::stream::iter(replicas)
            .map(|replica| async move {
                match self.remove_replica(&replica).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(?replica, error = %e, "replica not removed, queueing it");
                        Some(replica)
                    }
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        if !failed.is_empty()
            && let Err(e) = self.index.add_garbage(&failed).await
        {
            tracing::error!(error = %e, count = failed.len(), "could not queue replicas for removal");
        }
    }

    /// Tries to remove one claimed replica.
    async fn remove_queued(&self, queued: &QueuedReplica) -> Outcome {
        if let Placement::Node { node_id, .. } = queued.replica.placement {
            if self.read_leases.is_read(data_id_of(&queued.replica.key)) {
                return Outcome::Held;
            }
            if self.balancer.is_down(node_id) {
                return Outcome::Failed(format!("node {node_id} is down"));
            }
        }
        match self.remove_replica(&queued.replica).await {
            Ok(()) => Outcome::Removed,
            Err(e) => Outcome::Failed(e.to_string()),
        }
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
        // Every removal ends before any is recorded. A removal may write
        // the index itself (an overflow pin's release), and the writer is
        // handed out in turn: a recording that waited for it while a
        // removal in the buffer, queued for it too, went unpolled would
        // wait for ever, and every write behind it.
        let outcomes: Vec<(QueuedReplica, Outcome)> = futures::stream::iter(batch)
            .map(|queued| async move {
                let outcome = self.remove_queued(&queued).await;
                (queued, outcome)
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
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
                let _ = tokio::time::timeout(IDLE, store.garbage_ready.notified()).await;
            }
        })
    }
}
