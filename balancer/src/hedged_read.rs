//! Reading a fragment back, hedged: the best-ranked replica first, the next
//! one too when the first has not answered within its usual time, the first
//! answer that verifies wins and the others are cancelled.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use md5::{Digest, Md5};
use tracing::Instrument;

use crate::error::BalancerError;
use crate::node_client::{self, NodeFailure};
use crate::registry::{Balancer, NodeHandle};

impl Balancer {
    /// Reads the fragment stored under `key` (`len` bytes) from one of
    /// `replicas` (node ids) and checks it against `md5`.
    ///
    /// Replicas are ranked healthy before demoted before down, then by the
    /// expected time of the read. The best one is asked first; when it has
    /// not answered within its [hedge delay](NodeHandle::hedge_delay), or as
    /// soon as it fails, the next one is asked as well. The first answer that
    /// verifies is returned and the reads still running are dropped. A node
    /// whose bytes do not verify is demoted; one that errors is marked down.
    ///
    /// # Errors
    /// [`BalancerError::Unreadable`] when no replica answers with the right
    /// bytes.
    #[tracing::instrument(skip_all, fields(key, replicas = replicas.len()))]
    pub async fn read(
        &self,
        key: &str,
        len: u64,
        replicas: &[i64],
        md5: [u8; 16],
    ) -> Result<Bytes, BalancerError> {
        let mut nodes: Vec<_> = replicas
            .iter()
            .filter_map(|id| self.node(*id).ok())
            .collect();
        nodes.sort_by_cached_key(|n| n.read_rank(len));
        let mut untried = nodes.iter();
        let mut running = FuturesUnordered::new();
        let mut last = String::from("no registered node holds it");
        let mut ask_next = true;
        // When to ask the next replica if nothing has answered by then.
        let mut hedge_at = None;
        loop {
            if ask_next {
                hedge_at = untried.next().map(|node| {
                    running.push(read_one(node, key, md5));
                    tokio::time::Instant::now() + node.hedge_delay()
                });
            }
            if running.is_empty() {
                break;
            }
            let hedge = async {
                match hedge_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            ask_next = tokio::select! {
                Some((node, result)) = running.next() => match result {
                    Ok(data) => return Ok(data),
                    Err(failure) => {
                        tracing::warn!(node = node.spec.id, %failure, "replica unreadable, trying the next");
                        last = format!("node {}: {failure}", node.spec.id);
                        true
                    }
                },
                () = hedge => {
                    tracing::debug!("replica slow, hedging to the next");
                    true
                }
            };
        }
        Err(BalancerError::Unreadable {
            key: key.to_owned(),
            tried: nodes.len(),
            last,
        })
    }
}

/// One replica read, verified against `md5`, its outcome recorded in the
/// node's statistics (also when the read is dropped half-way).
async fn read_one<'a>(
    node: &'a Arc<NodeHandle>,
    key: &str,
    md5: [u8; 16],
) -> (&'a Arc<NodeHandle>, Result<Bytes, NodeFailure>) {
    let span = tracing::debug_span!("node_get", node = node.spec.id, key);
    let _slot = node.slots.acquire().await;
    let mut pending = Abandoned {
        node,
        started: Instant::now(),
        done: false,
    };
    let result = node_client::get(&node.client, &node.spec.bucket, key)
        .instrument(span)
        .await
        .and_then(|fetched| {
            let digest: [u8; 16] = Md5::digest(&fetched.data).into();
            if digest == md5 {
                Ok(fetched)
            } else {
                Err(NodeFailure::Corrupt)
            }
        });
    pending.done = true;
    let result = match result {
        Ok(fetched) => {
            node.record_read(fetched.data.len(), fetched.first_byte, fetched.total);
            Ok(fetched.data)
        }
        Err(failure) => {
            node.record_failure(&failure);
            Err(failure)
        }
    };
    (node, result)
}

/// Records a read that was dropped before it finished (another replica won).
struct Abandoned<'a> {
    node: &'a NodeHandle,
    started: Instant,
    done: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.node.record_abandoned(self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tenfold_node::{NodeConfig, run_node};

    use super::*;
    use crate::node::{Network, NodeSpec};
    use crate::placement::ReplicaPolicy;

    async fn start_node(dir: &std::path::Path, id: i64, delay: Duration) -> NodeSpec {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let config = NodeConfig {
            data: dir.join(format!("node{id}")),
            capacity: 1 << 30,
            access_key: "k".into(),
            secret_key: "s".into(),
            delay,
        };
        tokio::spawn(run_node(config, listener));
        NodeSpec {
            id,
            name: format!("node{id}"),
            endpoint,
            network: Network::Mainnet,
            capacity: 1 << 30,
            stored_bytes: 0,
            access_key: "k".into(),
            secret_key: "s".into(),
            bucket: "tenfold".into(),
        }
    }

    /// Two real nodes; the one ranked first answers 3 s late. The read
    /// must come back from the other one long before, and the slow node's
    /// statistics must record the abandoned read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_first_replica_is_hedged_to_the_next() {
        let dir = std::env::temp_dir().join(format!("tenfold-hedge-{}", std::process::id()));
        let slow_for = Duration::from_secs(3);
        let slow = start_node(&dir, 1, slow_for).await;
        let fast = start_node(&dir, 2, Duration::ZERO).await;
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![slow, fast]);
        let data = Bytes::from(vec![7u8; 200_000]);
        let md5: [u8; 16] = Md5::digest(&data).into();
        for id in [1, 2] {
            let node = balancer.node(id).unwrap();
            node.ensure_bucket().await.unwrap();
            node_client::put(&node.client, &node.spec.bucket, "frag", data.clone(), md5)
                .await
                .unwrap();
        }
        // Rank the slow node first, as if it had been fast until now.
        for _ in 0..5 {
            balancer.node(1).unwrap().record_read(
                data.len(),
                Duration::from_millis(1),
                Duration::from_millis(2),
            );
            balancer.node(2).unwrap().record_read(
                data.len(),
                Duration::from_millis(40),
                Duration::from_millis(50),
            );
        }
        let started = Instant::now();
        let got = balancer
            .read("frag", data.len() as u64, &[1, 2], md5)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(got, data);
        assert!(
            took < slow_for / 2,
            "the read waited for the slow node: {took:?}"
        );
        let status = balancer.status();
        let slow_p95 = status[0].read_p95_ms.unwrap();
        assert!(
            slow_p95 >= crate::registry::HEDGE_FLOOR.as_secs_f64() * 1000.0,
            "the abandoned read was not recorded: p95 {slow_p95} ms"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
