//! Replica placement: each fragment on distinct nodes of each network, chosen
//! at random among healthy nodes with room, failing over to the next
//! candidate when a node errors, times out or is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::seq::SliceRandom;
use tracing::Instrument;

use crate::error::BalancerError;
use crate::node::Network;
use crate::node_client::{self, NodeFailure};
use crate::registry::{Balancer, NodeHandle};

/// How many replicas each fragment gets on each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPolicy {
    pub mainnet: usize,
    pub testnet: usize,
}

impl Default for ReplicaPolicy {
    /// The seed's policy: three copies on the mainnet, one on the testnet.
    fn default() -> Self {
        Self {
            mainnet: 3,
            testnet: 1,
        }
    }
}

/// One verified replica of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub node_id: i64,
    pub network: Network,
}

/// A placement that could not be completed, with the replicas it did write
/// (the caller removes them).
#[derive(Debug)]
pub struct PlacementFailure {
    pub error: BalancerError,
    pub written: Vec<Placement>,
}

impl Balancer {
    /// Places one fragment under `key` on every network per the policy.
    ///
    /// # Errors
    /// A [`PlacementFailure`] when some network lacks enough nodes that take
    /// the replica; it lists the replicas that were written anyway.
    #[tracing::instrument(skip_all, fields(key, len = data.len()))]
    pub async fn place(
        &self,
        key: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<Vec<Placement>, PlacementFailure> {
        let (main, test) = futures::join!(
            self.place_on(Network::Mainnet, self.policy.mainnet, key, &data, md5),
            self.place_on(Network::Testnet, self.policy.testnet, key, &data, md5),
        );
        match (main, test) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Ok(a)
            }
            (Err(mut f), Ok(other)) | (Ok(other), Err(mut f)) => {
                f.written.extend(other);
                Err(f)
            }
            (Err(mut f), Err(g)) => {
                f.written.extend(g.written);
                Err(f)
            }
        }
    }

    async fn place_on(
        &self,
        network: Network,
        needed: usize,
        key: &str,
        data: &Bytes,
        md5: [u8; 16],
    ) -> Result<Vec<Placement>, PlacementFailure> {
        let len = data.len() as u64;
        // Random order among nodes that are up, then (as a last resort) among
        // nodes that failed lately; full nodes are left out.
        let (mut up, mut down): (Vec<Arc<NodeHandle>>, Vec<Arc<NodeHandle>>) =
            (Vec::new(), Vec::new());
        for node in self.nodes_in(network) {
            match node.placement_choice(len) {
                Some(true) => up.push(node),
                Some(false) => down.push(node),
                None => {}
            }
        }
        up.shuffle(&mut rand::rng());
        down.shuffle(&mut rand::rng());
        let mut candidates: VecDeque<_> = up.into_iter().chain(down).collect();
        let mut inflight = FuturesUnordered::new();
        let mut placed = Vec::with_capacity(needed);
        while inflight.len() < needed {
            let Some(node) = candidates.pop_front() else {
                break;
            };
            inflight.push(put_replica(node, key, data.clone(), md5));
        }
        while let Some((node, result)) = inflight.next().await {
            match result {
                Ok(()) => placed.push(Placement {
                    node_id: node.spec.id,
                    network,
                }),
                Err(failure) => {
                    tracing::warn!(node = node.spec.id, %failure, "replica refused, trying the next node");
                    node.record_failure(&failure);
                    if let Some(next) = candidates.pop_front() {
                        inflight.push(put_replica(next, key, data.clone(), md5));
                    }
                }
            }
        }
        if placed.len() < needed {
            return Err(PlacementFailure {
                error: BalancerError::InsufficientNodes {
                    network,
                    key: key.to_owned(),
                    needed,
                    placed: placed.len(),
                },
                written: placed,
            });
        }
        Ok(placed)
    }

    /// Removes one replica from its node.
    ///
    /// # Errors
    /// [`BalancerError::Node`] when the node did not confirm, or
    /// [`BalancerError::UnknownNode`].
    pub async fn delete(&self, node_id: i64, key: &str) -> Result<(), BalancerError> {
        let node = self.node(node_id)?;
        let span = tracing::debug_span!("node_delete", node = node_id, key);
        let _slot = node.slots.acquire().await;
        node_client::delete(&node.client, &node.spec.bucket, key)
            .instrument(span)
            .await
            .map_err(|f| BalancerError::Node {
                node: node_id,
                message: f.to_string(),
            })
    }
}

async fn put_replica(
    node: Arc<NodeHandle>,
    key: &str,
    data: Bytes,
    md5: [u8; 16],
) -> (Arc<NodeHandle>, Result<(), NodeFailure>) {
    let span = tracing::debug_span!("node_put", node = node.spec.id, key, len = data.len());
    let result = async {
        let _slot = node
            .slots
            .acquire()
            .await
            .map_err(|e| NodeFailure::Other(e.to_string()))?;
        node.ensure_bucket().await?;
        let started = Instant::now();
        let len = data.len() as u64;
        node_client::put(&node.client, &node.spec.bucket, key, data, md5).await?;
        node.record_success(started);
        node.record_placed(len);
        Ok(())
    }
    .instrument(span)
    .await;
    (node, result)
}
