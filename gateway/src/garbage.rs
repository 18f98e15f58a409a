//! Replica clean-up: replicas of overwritten, deleted or failed objects are
//! deleted from their nodes (or unpinned from the overflow store), and
//! queued in the index when that fails, to be retried until it succeeds.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenfold_balancer::{BalancerError, Placement, Replica};

use crate::error::GatewayError;
use crate::object_store::ObjectStore;

/// Node deletions in flight at once.
const DELETE_CONCURRENCY: usize = 16;
/// Queue entries handled per pass.
const BATCH: i64 = 512;
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
            Placement::Overflow { cid } => {
                if self.index.cid_in_use(cid).await? {
                    return Ok(());
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
                }
                Ok(())
            }
        }
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

    /// One pass over the queue; returns how many copies were removed.
    pub async fn collect_garbage(&self) -> usize {
        let batch = match self.index.garbage(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading the garbage queue");
                return 0;
            }
        };
        futures::stream::iter(batch)
            .map(|(id, replica)| async move {
                let gone = match self.remove_replica(&replica).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(?replica, error = %e, "garbage not removed yet");
                        false
                    }
                };
                gone && self.index.remove_garbage(id).await.is_ok()
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .filter(|done| futures::future::ready(*done))
            .count()
            .await
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
                let deleted = store.collect_garbage().await;
                if deleted > 0 {
                    tracing::debug!(deleted, "garbage collected");
                    continue;
                }
                let _ = tokio::time::timeout(IDLE, store.garbage_ready.notified()).await;
            }
        })
    }
}
