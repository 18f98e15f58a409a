//! Reading a fragment back: the best-ranked replica first, every answer
//! verified against the fragment's checksum, the next replica on failure.

use std::time::Instant;

use bytes::Bytes;
use md5::{Digest, Md5};
use tracing::Instrument;

use crate::error::BalancerError;
use crate::node_client::{self, NodeFailure};
use crate::registry::Balancer;

impl Balancer {
    /// Reads the fragment stored under `key` from one of `replicas` (node
    /// ids) and checks it against `md5`. Nodes are tried by rank: healthy
    /// before down, then lowest recent latency. A node whose bytes do not
    /// verify is demoted.
    ///
    /// # Errors
    /// [`BalancerError::Unreadable`] when no replica answers with the right
    /// bytes.
    #[tracing::instrument(skip_all, fields(key, replicas = replicas.len()))]
    pub async fn read(
        &self,
        key: &str,
        replicas: &[i64],
        md5: [u8; 16],
    ) -> Result<Bytes, BalancerError> {
        let mut nodes: Vec<_> = replicas
            .iter()
            .filter_map(|id| self.node(*id).ok())
            .collect();
        nodes.sort_by_key(|n| n.read_rank());
        let mut last = String::from("no registered node holds it");
        for node in &nodes {
            let span = tracing::debug_span!("node_get", node = node.spec.id, key);
            let _slot = node.slots.acquire().await;
            let started = Instant::now();
            let result = node_client::get(&node.client, &node.spec.bucket, key)
                .instrument(span)
                .await
                .and_then(|data| {
                    let digest: [u8; 16] = Md5::digest(&data).into();
                    if digest == md5 {
                        Ok(data)
                    } else {
                        Err(NodeFailure::Corrupt)
                    }
                });
            match result {
                Ok(data) => {
                    node.record_success(started);
                    return Ok(data);
                }
                Err(failure) => {
                    tracing::warn!(node = node.spec.id, %failure, "replica unreadable, trying the next");
                    node.record_failure(&failure);
                    last = format!("node {}: {failure}", node.spec.id);
                }
            }
        }
        Err(BalancerError::Unreadable {
            key: key.to_owned(),
            tried: nodes.len(),
            last,
        })
    }
}
