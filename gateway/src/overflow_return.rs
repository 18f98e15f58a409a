//! Return from overflow: fragments that went to the overflow store because
//! the nodes were full are moved back onto nodes once they have room again
//! (nodes added, objects deleted), until each has its full node placement;
//! then their content ids are unpinned.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tenfold_balancer::{Check, Placement, Replica};

use crate::fragment::node_key;
use crate::index::OverflowedFragment;
use crate::object_store::ObjectStore;

/// Overflowed fragments looked at per pass.
const BATCH: i64 = 64;
/// Fragments moved at once.
const CONCURRENCY: usize = 4;

impl ObjectStore {
    /// One pass: moves back what the nodes have room for. Returns how many
    /// fragments got their full node placement back.
    pub async fn return_from_overflow(&self) -> usize {
        if self.balancer.overflow().is_none() {
            return 0;
        }
        let batch = match self.index.overflowed(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "listing overflowed fragments");
                return 0;
            }
        };
        futures::stream::iter(batch)
            .filter(|o| {
                let room = self
                    .balancer
                    .room_for(o.fragment.size, &o.fragment.placements);
                futures::future::ready(room)
            })
            .map(|o| self.return_fragment(o))
            .buffer_unordered(CONCURRENCY)
            .filter(|settled| futures::future::ready(*settled))
            .count()
            .await
    }

    /// Reads one overflowed fragment and places the node replicas it lacks;
    /// `true` when it has them all now.
    #[tracing::instrument(skip_all, fields(data = %o.data_id, segment = o.seq, fragment = o.fragment.index))]
    async fn return_fragment(&self, o: OverflowedFragment) -> bool {
        // The new replicas are not orphans until recorded; while the sweep
        // decides about this data, it waits for the next pass.
        let Some(_writing) = self.write_intents.begin(&o.data_id) else {
            return false;
        };
        let f = &o.fragment;
        let key = node_key(&o.data_id, o.seq, f.index);
        let data = match self
            .balancer
            .read(&key, f.size, &f.placements, Check::Md5(f.md5))
            .await
        {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "overflowed fragment unreadable, left in place");
                return false;
            }
        };
        let (added, settled) = match self
            .balancer
            .place_missing(&key, data, f.md5, &f.placements)
            .await
        {
            Ok(added) => (added, true),
            Err(failure) => (failure.written, false),
        };
        if added.is_empty() && !settled {
            return false;
        }
        let recorded = self
            .index
            .return_from_overflow(&o.data_id, o.seq, f, &added, settled)
            .await;
        match recorded {
            Ok(true) => {
                if settled {
                    tracing::info!(replicas = added.len(), "fragment returned from overflow");
                    self.garbage_ready.notify_one();
                }
                settled
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, "recording a fragment returned from overflow");
                }
                // Gone meanwhile, or not recorded: the new replicas are
                // referenced by nothing.
                let orphans = added
                    .into_iter()
                    .map(|placement: Placement| Replica {
                        key: key.clone(),
                        placement,
                    })
                    .collect();
                self.discard_replicas(orphans).await;
                false
            }
        }
    }

    /// Runs the return task every `interval` for as long as the store lives.
    pub fn spawn_overflow_return(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                let returned = store.return_from_overflow().await;
                if returned > 0 {
                    tracing::debug!(returned, "fragments returned from overflow");
                }
            }
        });
    }
}
