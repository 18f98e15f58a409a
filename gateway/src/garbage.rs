//! Replica clean-up: replicas of overwritten, deleted or failed objects are
//! deleted from their nodes, and queued in the index when a node cannot be
//! reached, to be retried until it confirms.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::object_store::ObjectStore;

/// Node deletions in flight at once.
const DELETE_CONCURRENCY: usize = 16;
/// Queue entries handled per pass.
const BATCH: i64 = 512;
/// Pause between passes when nothing wakes the collector.
const IDLE: Duration = Duration::from_secs(5);

impl ObjectStore {
    /// Deletes replicas now; those whose node does not confirm are queued.
    pub async fn discard_replicas(&self, replicas: Vec<(i64, String)>) {
        let failed: Vec<(i64, String)> = futures::stream::iter(replicas)
            .map(|(node, key)| async move {
                match self.balancer.delete(node, &key).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(node, key, error = %e, "replica not deleted, queueing it");
                        Some((node, key))
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
            tracing::error!(error = %e, count = failed.len(), "could not queue replicas for deletion");
        }
    }

    /// One pass over the queue; returns how many replicas were deleted.
    pub async fn collect_garbage(&self) -> usize {
        let batch = match self.index.garbage(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading the garbage queue");
                return 0;
            }
        };
        futures::stream::iter(batch)
            .map(|(id, node, key)| async move {
                let gone = match self.balancer.delete(node, &key).await {
                    Ok(()) => true,
                    // The node was unregistered: nothing left to delete.
                    Err(tenfold_balancer::BalancerError::UnknownNode(_)) => true,
                    Err(e) => {
                        tracing::debug!(node, key, error = %e, "garbage not deleted yet");
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
