//! Reading a fragment back, hedged: the best-ranked replica first, the next
//! one too when the first has not answered within its usual time, the first
//! answer that passes its [`Check`] wins and the others are cancelled.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::Instrument;

use crate::chunks::Chunks;
use crate::error::BalancerError;
use crate::node_client::NodeFailure;
use crate::placement::Placement;
use crate::registry::{Balancer, NodeHandle, Reading};

/// What a fragment read must pass before it counts as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The fragment's MD5: a replica with other bytes is demoted and the
    /// next one read.
    Md5([u8; 16]),
    /// For bytes the caller authenticates itself (sealed frames, whose AEAD
    /// tags are checked as they are opened): from a node in good standing
    /// only the length is checked, since MD5 is the dearest step of a read;
    /// from a demoted node or the overflow store, the MD5 as well, so a
    /// known liar never wins a race. A caller whose own check fails reads
    /// again with [`Check::Md5`], which finds and demotes the replica that
    /// lied.
    Sealed([u8; 16]),
}

impl Check {
    /// Whether `data` (which should be `len` bytes) passes, coming from a
    /// source that is `trusted` or not.
    fn passes(self, data: &Chunks, len: u64, trusted: bool) -> bool {
        match self {
            Check::Sealed(_) if trusted => data.len() as u64 == len,
            Check::Md5(md5) | Check::Sealed(md5) => data.len() as u64 == len && data.md5() == md5,
        }
    }
}

impl Balancer {
    /// Reads the fragment stored under `key` (`len` bytes) from one of its
    /// `placements` and checks it with `check`: from the nodes first
    /// ([`Self::read_nodes`]), from the overflow store when no node replica
    /// could be read.
    ///
    /// # Errors
    /// [`BalancerError::Unreadable`] when no copy answers with the right
    /// bytes.
    #[tracing::instrument(skip_all, fields(key, placements = placements.len()))]
    pub async fn read(
        &self,
        key: &str,
        len: u64,
        placements: &[Placement],
        check: Check,
    ) -> Result<Chunks, BalancerError> {
        let nodes: Vec<i64> = placements.iter().filter_map(Placement::node_id).collect();
        let cid = placements.iter().find_map(Placement::cid);
        let from_nodes = if nodes.is_empty() && cid.is_some() {
            None
        } else {
            match self.read_nodes(key, len, &nodes, check).await {
                Ok(data) => return Ok(data),
                Err(e) => Some(e),
            }
        };
        let (Some(cid), Some(overflow)) = (cid, &self.overflow) else {
            return Err(from_nodes.unwrap_or(BalancerError::NoOverflow));
        };
        let span = tracing::debug_span!("overflow_get", cid, len);
        let unreadable = |last: String| BalancerError::Unreadable {
            key: key.to_owned(),
            tried: nodes.len() + 1,
            last,
        };
        let data = overflow
            .get(cid, 0..len)
            .instrument(span)
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .into();
        if !check.passes(&data, len, false) {
            return Err(unreadable(format!("{cid}: checksum mismatch")));
        }
        Ok(data)
    }

    /// Reads the fragment stored under `key` (`len` bytes) from one of
    /// `replicas` (node ids) and checks it with `check`.
    ///
    /// Replicas are ranked healthy before down before demoted, then by the
    /// expected time of the read. The best one is asked first; when it has
    /// not answered within its [hedge delay](NodeHandle::hedge_delay), or as
    /// soon as it fails, the next one is asked as well. A demoted node (one
    /// that returned wrong bytes lately) is never hedged to: it is asked
    /// only once every other replica has failed, and its answer is always
    /// MD5-checked. The first answer that passes is returned and the reads
    /// still running are dropped. A node whose bytes do not pass is
    /// demoted; one that errors is marked down.
    ///
    /// # Errors
    /// [`BalancerError::Unreadable`] when no replica answers with the right
    /// bytes.
    #[tracing::instrument(skip_all, fields(key, replicas = replicas.len()))]
    pub async fn read_nodes(
        &self,
        key: &str,
        len: u64,
        replicas: &[i64],
        check: Check,
    ) -> Result<Chunks, BalancerError> {
        // Whether a node is demoted is decided once, here: a node demoted
        // by this very read is not held back from the rest of it.
        let mut nodes: Vec<_> = replicas
            .iter()
            .filter_map(|id| self.node(*id).ok())
            .map(|node| (node.read_rank(len), node.is_demoted(), node))
            .collect();
        nodes.sort_by_key(|(rank, _, _)| *rank);
        let mut untried = nodes.iter().peekable();
        let mut running = FuturesUnordered::new();
        let mut last = String::from("no registered node holds it");
        let mut ask_next = true;
        // Whether the next replica is asked because the last one is slow.
        let mut hedging = false;
        // When to ask the next replica if nothing has answered by then.
        let mut hedge_at = None;
        loop {
            if ask_next {
                let idle = running.is_empty();
                hedge_at = untried.next_if(|(_, demoted, _)| !demoted || idle).map(
                    |(_, demoted, node)| {
                        if *demoted {
                            node.record_last_resort();
                            tracing::info!(
                                node = node.spec.id,
                                "every other replica failed: asking a demoted node"
                            );
                        }
                        node.record_asked(hedging);
                        let reading = node.start_read(len);
                        running.push(read_one(node, reading, key, len, check));
                        tokio::time::Instant::now() + node.hedge_delay()
                    },
                );
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
            (ask_next, hedging) = tokio::select! {
                Some((node, result)) = running.next() => match result {
                    Ok(data) => return Ok(data),
                    Err(failure) => {
                        tracing::warn!(node = node.spec.id, %failure, "replica unreadable, trying the next");
                        last = format!("node {}: {failure}", node.spec.id);
                        (true, false)
                    }
                },
                () = hedge => {
                    tracing::debug!("replica slow, hedging to the next");
                    (true, true)
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

/// One replica read, checked with `check`, its outcome recorded in the
/// node's statistics (also when the read is dropped half-way).
async fn read_one<'a>(
    node: &'a Arc<NodeHandle>,
    mut reading: Reading,
    key: &str,
    len: u64,
    check: Check,
) -> (&'a Arc<NodeHandle>, Result<Chunks, NodeFailure>) {
    let span = tracing::debug_span!("node_get", node = node.spec.id, key);
    let _turn = node.load.read_turn(len).await;
    reading.begin();
    let mut pending = Abandoned {
        node,
        started: Instant::now(),
        done: false,
    };
    let result = node
        .client
        .get(&node.spec.bucket, key, len)
        .instrument(span)
        .await
        .and_then(|fetched| {
            if check.passes(&fetched.data, len, !node.is_demoted()) {
                Ok(fetched)
            } else {
                Err(NodeFailure::Corrupt)
            }
        });
    pending.done = true;
    let result = match result {
        Ok(fetched) => {
            node.record_read(
                &mut reading,
                fetched.data.len(),
                fetched.first_byte,
                fetched.total,
            );
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
    use bytes::Bytes;
    use md5::{Digest, Md5};
    use std::time::Duration;

    use super::*;
    use crate::node::Network;
    use crate::node_client::crc32c;
    use crate::placement::ReplicaPolicy;
    use crate::testing::start_node;

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
            node.client
                .put(&node.spec.bucket, "frag", data.clone(), md5, crc32c(&data))
                .await
                .unwrap();
        }
        // Rank the slow node first, as if it had been fast until now.
        for _ in 0..5 {
            let node = balancer.node(1).unwrap();
            node.record_read(
                &mut node.start_read(0),
                data.len(),
                Duration::from_millis(1),
                Duration::from_millis(2),
            );
            let node = balancer.node(2).unwrap();
            node.record_read(
                &mut node.start_read(0),
                data.len(),
                Duration::from_millis(40),
                Duration::from_millis(50),
            );
        }
        let started = Instant::now();
        let got = balancer
            .read_nodes("frag", data.len() as u64, &[1, 2], Check::Md5(md5))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(got.into_bytes(), data);
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

    /// A sealed read trusts the length of a node in good standing; a node
    /// found out by an MD5-checked read is demoted: not asked while another
    /// replica can still answer, however slow, and MD5-checked when it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demoted_node_is_asked_only_when_every_other_replica_failed() {
        let dir = std::env::temp_dir().join(format!("tenfold-sealed-{}", std::process::id()));
        let liar_spec = start_node(&dir, 1, Duration::ZERO).await;
        let honest_spec = start_node(&dir, 2, Duration::from_millis(300)).await;
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![liar_spec.clone(), honest_spec.clone()]);
        let data = Bytes::from(vec![7u8; 50_000]);
        let lie = Bytes::from(vec![6u8; 50_000]);
        let md5: [u8; 16] = Md5::digest(&data).into();
        for (id, bytes) in [(1, &lie), (2, &data)] {
            let node = balancer.node(id).unwrap();
            node.ensure_bucket().await.unwrap();
            let sum: [u8; 16] = Md5::digest(bytes).into();
            node.client
                .put(&node.spec.bucket, "frag", bytes.clone(), sum, crc32c(bytes))
                .await
                .unwrap();
        }
        let len = data.len() as u64;
        // In good standing, the liar's bytes of the right length pass (the
        // caller's AEAD tags catch them) ...
        let got = balancer
            .read_nodes("frag", len, &[1, 2], Check::Sealed(md5))
            .await
            .unwrap();
        assert_eq!(got.into_bytes(), lie);
        // ... and an MD5-checked read demotes it and reads the other.
        let got = balancer
            .read_nodes("frag", len, &[1, 2], Check::Md5(md5))
            .await
            .unwrap();
        assert_eq!(got.into_bytes(), data);
        assert!(balancer.node(1).unwrap().is_demoted());
        // Demoted, it is not hedged to, even when the honest node is late
        // (as if that were usually fast) and the liar would answer first.
        let errors_before = balancer.status()[0].errors;
        for _ in 0..3 {
            for _ in 0..crate::registry::LATENCY_SAMPLES {
                let node = balancer.node(2).unwrap();
                node.record_read(
                    &mut node.start_read(0),
                    data.len(),
                    Duration::from_millis(1),
                    Duration::from_millis(2),
                );
            }
            let got = balancer
                .read_nodes("frag", len, &[1, 2], Check::Sealed(md5))
                .await
                .unwrap();
            assert_eq!(got.into_bytes(), data);
        }
        let status = balancer.status();
        assert_eq!(
            (status[0].errors, status[0].last_resort_reads),
            (errors_before, 0),
            "the demoted node was asked: {status:?}"
        );

        // Once every other replica has failed, it is asked, and its answer
        // is MD5-checked even on a sealed read.
        let mut dead = start_node(&dir, 3, Duration::ZERO).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        dead.endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut specs = vec![liar_spec.clone(), honest_spec.clone(), dead];
        balancer.set_nodes(specs.clone());
        let err = balancer
            .read_nodes("frag", len, &[1, 3], Check::Sealed(md5))
            .await
            .unwrap_err();
        assert!(matches!(err, BalancerError::Unreadable { .. }), "{err}");
        assert_eq!(balancer.status()[0].last_resort_reads, 1);
        // A demoted node that holds the right bytes serves them then.
        let node = balancer.node(1).unwrap();
        node.client
            .put(&node.spec.bucket, "frag", data.clone(), md5, crc32c(&data))
            .await
            .unwrap();
        let got = balancer
            .read_nodes("frag", len, &[3, 1], Check::Sealed(md5))
            .await
            .unwrap();
        assert_eq!(got.into_bytes(), data);
        assert_eq!(balancer.status()[0].last_resort_reads, 2);
        // With no other replica at all, it is asked straight away.
        specs.truncate(1);
        balancer.set_nodes(specs);
        let got = balancer
            .read_nodes("frag", len, &[1], Check::Md5(md5))
            .await
            .unwrap();
        assert_eq!(got.into_bytes(), data);
        assert_eq!(balancer.status()[0].last_resort_reads, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An in-memory overflow store that counts its reads.
    #[derive(Debug, Default)]
    struct MemoryStore {
        content: std::sync::Mutex<std::collections::HashMap<String, Bytes>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl tenfold_overflow::OverflowStore for MemoryStore {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn add(&self, data: Bytes) -> Result<String, tenfold_overflow::OverflowError> {
            let cid = hex::encode(Md5::digest(&data));
            self.content.lock().unwrap().insert(cid.clone(), data);
            Ok(cid)
        }
        async fn get(
            &self,
            cid: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, tenfold_overflow::OverflowError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let data = self.content.lock().unwrap().get(cid).cloned().unwrap();
            Ok(data.slice(range.start as usize..range.end as usize))
        }
        async fn pin(&self, _cid: &str) -> Result<(), tenfold_overflow::OverflowError> {
            Ok(())
        }
        async fn unpin(&self, _cid: &str) -> Result<(), tenfold_overflow::OverflowError> {
            Ok(())
        }
        async fn health(
            &self,
        ) -> Result<tenfold_overflow::OverflowHealth, tenfold_overflow::OverflowError> {
            unreachable!()
        }
    }

    /// Node replicas are read first, the overflow copy only when no node
    /// answers, and an overflow copy with the wrong bytes is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_overflow_copy_is_read_last() {
        let dir =
            std::env::temp_dir().join(format!("tenfold-overflow-read-{}", std::process::id()));
        let live = start_node(&dir, 1, Duration::ZERO).await;
        let mut dead = start_node(&dir, 2, Duration::ZERO).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        dead.endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let store = Arc::new(MemoryStore::default());
        let balancer = Balancer::new(ReplicaPolicy::default()).with_overflow(store.clone());
        balancer.set_nodes(vec![live, dead]);
        let data = Bytes::from(vec![9u8; 100_000]);
        let md5: [u8; 16] = Md5::digest(&data).into();
        let node = balancer.node(1).unwrap();
        node.ensure_bucket().await.unwrap();
        node.client
            .put(&node.spec.bucket, "frag", data.clone(), md5, crc32c(&data))
            .await
            .unwrap();
        let cid = tenfold_overflow::OverflowStore::add(&*store, data.clone())
            .await
            .unwrap();
        let on = |node_id| Placement::Node {
            node_id,
            network: Network::Mainnet,
        };
        let overflow = Placement::Overflow { cid: cid.clone() };
        let len = data.len() as u64;
        let reads = || store.reads.load(std::sync::atomic::Ordering::SeqCst);

        let got = balancer
            .read("frag", len, &[on(1), overflow.clone()], Check::Md5(md5))
            .await
            .unwrap();
        assert_eq!((got.into_bytes(), reads()), (data.clone(), 0));
        let got = balancer
            .read("frag", len, &[on(2), overflow.clone()], Check::Md5(md5))
            .await
            .unwrap();
        assert_eq!((got.into_bytes(), reads()), (data.clone(), 1));
        let got = balancer
            .read(
                "frag",
                len,
                std::slice::from_ref(&overflow),
                Check::Md5(md5),
            )
            .await
            .unwrap();
        assert_eq!((got.into_bytes(), reads()), (data.clone(), 2));

        store
            .content
            .lock()
            .unwrap()
            .insert(cid, Bytes::from(vec![8u8; 100_000]));
        for check in [Check::Md5(md5), Check::Sealed(md5)] {
            let err = balancer
                .read("frag", len, &[on(2), overflow.clone()], check)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("checksum mismatch"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
