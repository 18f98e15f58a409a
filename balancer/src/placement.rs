//! Replica placement: each fragment on distinct nodes of each network, chosen
//! at random among healthy nodes with room, failing over to the next
//! candidate when a node errors, times out or is full.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tenfold_common::replica_batch::Record;
use tracing::Instrument;

use crate::choice::Choices;
use crate::error::BalancerError;
use crate::node::Network;
use crate::node_client::{KeyPage, NodeFailure, crc32c};
use crate::registry::{Balancer, NodeHandle};
use crate::write_batch;

/// How many replicas each fragment gets on each network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPolicy {
    pub mainnet: usize,
    pub testnet: usize,
}

impl ReplicaPolicy {
    /// Copies the policy asks for in all.
    pub fn total(self) -> usize {
        self.mainnet + self.testnet
    }

    /// Whether `placements` hold every node copy the policy asks for (the
    /// overflow store's copy does not count).
    pub fn is_met(self, placements: &[Placement]) -> bool {
        copies_on(placements, Network::Mainnet) >= self.mainnet
            && copies_on(placements, Network::Testnet) >= self.testnet
    }
}

/// Node copies among `placements` on `network`.
fn copies_on(placements: &[Placement], network: Network) -> usize {
    placements
        .iter()
        .filter(|p| matches!(p, Placement::Node { network: n, .. } if *n == network))
        .count()
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

/// Where one verified copy of a fragment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On a storage node, under the fragment's key.
    Node { node_id: i64, network: Network },
    /// In the overflow store, under its content id.
    Overflow { cid: String },
}

impl Placement {
    /// The node holding this copy, if it is on a node.
    pub fn node_id(&self) -> Option<i64> {
        match self {
            Placement::Node { node_id, .. } => Some(*node_id),
            Placement::Overflow { .. } => None,
        }
    }

    /// The content id of this copy, if it is in the overflow store.
    pub fn cid(&self) -> Option<&str> {
        match self {
            Placement::Node { .. } => None,
            Placement::Overflow { cid } => Some(cid),
        }
    }

    /// `mainnet`, `testnet` or `overflow`, as in the index.
    pub fn network_name(&self) -> &'static str {
        match self {
            Placement::Node { network, .. } => network.as_str(),
            Placement::Overflow { .. } => OVERFLOW,
        }
    }
}

/// The index's name for the overflow tier's placements.
pub const OVERFLOW: &str = "overflow";

/// DELETEs in flight at once to a node that does not take DeleteObjects.
const DELETES_ONE_BY_ONE: usize = 4;

impl serde::Serialize for Placement {
    /// `{"network": …, "node": id or null, "cid": content id or null}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Columns<'a> {
            network: &'a str,
            node: Option<i64>,
            cid: Option<&'a str>,
        }
        Columns {
            network: self.network_name(),
            node: self.node_id(),
            cid: self.cid(),
        }
        .serialize(s)
    }
}

/// A copy of a fragment as needed to remove it: its placement and the
/// fragment's key on nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub key: String,
    pub placement: Placement,
}

/// A placement that could not be completed, with the copies it did write
/// (the caller removes them).
#[derive(Debug)]
pub struct PlacementFailure {
    pub error: BalancerError,
    pub written: Vec<Placement>,
}

impl Balancer {
    /// Places one fragment under `key` on every network per the policy.
    /// When the nodes cannot hold every replica (full, down or too few),
    /// the fragment also goes to the overflow store, if there is one.
    ///
    /// The write quorum: the fragment is placed once it has at least
    /// [`Balancer::min_copies`] copies (the overflow's pin counts as one),
    /// or, when the nodes are only full (none failed to answer), once the
    /// overflow store, the tier for a full cluster, holds it. A fragment
    /// placed short of the policy is the caller's to queue for repair
    /// ([`ReplicaPolicy::is_met`]).
    ///
    /// # Errors
    /// A [`PlacementFailure`] below the quorum; it lists the copies that
    /// were written anyway, for the caller to remove.
    #[tracing::instrument(skip_all, fields(key, len = data.len()))]
    pub async fn place(
        &self,
        key: &str,
        data: Bytes,
        md5: [u8; 16],
    ) -> Result<Vec<Placement>, PlacementFailure> {
        let digests = (md5, crc32c(&data));
        let (main, test) = futures::join!(
            self.place_on(
                Network::Mainnet,
                self.policy.mainnet,
                &[],
                key,
                &data,
                digests
            ),
            self.place_on(
                Network::Testnet,
                self.policy.testnet,
                &[],
                key,
                &data,
                digests
            ),
        );
        let (mut placed, short) = merge([main, test]);
        let Some(mut error) = short else {
            return Ok(placed);
        };
        if let Some(overflow) = &self.overflow {
            let span = tracing::debug_span!("overflow_put", store = %overflow.describe());
            match overflow.put(key, data).instrument(span).await {
                Ok(cid) => {
                    tracing::info!(key, %cid, replicas = placed.len(), reason = %error, "fragment overflowed");
                    placed.push(Placement::Overflow { cid });
                    if !error.nodes_unreachable() {
                        return Ok(placed);
                    }
                }
                Err(e) => {
                    error = BalancerError::OverflowFailed {
                        nodes: Box::new(error),
                        overflow: e,
                    };
                }
            }
        }
        if placed.len() >= self.min_copies() {
            tracing::warn!(key, copies = placed.len(), reason = %error, "fragment placed short of its target");
            return Ok(placed);
        }
        Err(PlacementFailure {
            error,
            written: placed,
        })
    }

    /// The write quorum: copies a fragment needs before a write is
    /// acknowledged (never more than the policy asks for).
    pub fn min_copies(&self) -> usize {
        self.min_copies.clamp(1, self.policy.total().max(1))
    }

    /// Whether the nodes seem to have room for the node replicas a fragment
    /// of `len` bytes placed at `have` lacks.
    pub fn room_for(&self, len: u64, have: &[Placement]) -> bool {
        [
            (Network::Mainnet, self.policy.mainnet),
            (Network::Testnet, self.policy.testnet),
        ]
        .into_iter()
        .all(|(network, wanted)| {
            let (held, free) = self.nodes_in(network).iter().fold((0, 0), |(h, f), n| {
                if have.iter().any(|p| p.node_id() == Some(n.spec.id)) {
                    (h + 1, f)
                } else {
                    (h, f + usize::from(n.placement_choice(len) == Some(true)))
                }
            });
            held + free >= wanted
        })
    }

    /// Places the node replicas a fragment at `have` lacks, on nodes that do
    /// not hold it yet; never in the overflow store. Returns the new
    /// placements.
    ///
    /// # Errors
    /// A [`PlacementFailure`] when the nodes could not take them all; it
    /// lists the ones they did take.
    #[tracing::instrument(skip_all, fields(key, len = data.len()))]
    pub async fn place_missing(
        &self,
        key: &str,
        data: Bytes,
        md5: [u8; 16],
        have: &[Placement],
    ) -> Result<Vec<Placement>, PlacementFailure> {
        let holders: Vec<i64> = have.iter().filter_map(Placement::node_id).collect();
        let missing =
            |network: Network, wanted: usize| wanted.saturating_sub(copies_on(have, network));
        let digests = (md5, crc32c(&data));
        let (main, test) = futures::join!(
            self.place_on(
                Network::Mainnet,
                missing(Network::Mainnet, self.policy.mainnet),
                &holders,
                key,
                &data,
                digests
            ),
            self.place_on(
                Network::Testnet,
                missing(Network::Testnet, self.policy.testnet),
                &holders,
                key,
                &data,
                digests
            ),
        );
        match merge([main, test]) {
            (placed, None) => Ok(placed),
            (written, Some(error)) => Err(PlacementFailure { error, written }),
        }
    }

    async fn place_on(
        &self,
        network: Network,
        needed: usize,
        exclude: &[i64],
        key: &str,
        data: &Bytes,
        digests: ([u8; 16], u32),
    ) -> Result<Vec<Placement>, PlacementFailure> {
        let len = data.len() as u64;
        // Random nodes with room, the less full of two draws each (see
        // `choice.rs`); nodes that failed lately only as a last resort.
        let nodes = self.nodes_in(network);
        let mut candidates = Choices::new(&nodes, len, exclude).map(Arc::clone);
        let mut inflight = FuturesUnordered::new();
        let mut placed = Vec::with_capacity(needed);
        let mut unreachable = 0;
        while inflight.len() < needed {
            let Some(node) = candidates.next() else {
                break;
            };
            inflight.push(put_replica(node, key, data.clone(), digests));
        }
        while let Some((node, result)) = inflight.next().await {
            match result {
                Ok(()) => placed.push(Placement::Node {
                    node_id: node.spec.id,
                    network,
                }),
                Err(failure) => {
                    tracing::warn!(node = node.spec.id, %failure, "replica refused, trying the next node");
                    node.record_failure(&failure);
                    unreachable += usize::from(!matches!(failure, NodeFailure::Full(_)));
                    if let Some(next) = candidates.next() {
                        inflight.push(put_replica(next, key, data.clone(), digests));
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
                    unreachable,
                },
                written: placed,
            });
        }
        Ok(placed)
    }

    /// Unpins a copy from the overflow store. The caller makes sure no
    /// other fragment has the same content id.
    ///
    /// # Errors
    /// [`BalancerError::NoOverflow`] without an overflow store, or
    /// [`BalancerError::Overflow`] when it did not confirm.
    pub async fn unpin(&self, cid: &str) -> Result<(), BalancerError> {
        let overflow = self.overflow.as_ref().ok_or(BalancerError::NoOverflow)?;
        let span = tracing::debug_span!("overflow_unpin", cid);
        overflow.unpin(cid).instrument(span).await?;
        Ok(())
    }

    /// Pins a content id in the overflow store again.
    ///
    /// # Errors
    /// [`BalancerError::NoOverflow`] without an overflow store, or
    /// [`BalancerError::Overflow`] when it did not confirm.
    pub async fn pin(&self, cid: &str) -> Result<(), BalancerError> {
        let overflow = self.overflow.as_ref().ok_or(BalancerError::NoOverflow)?;
        overflow.pin(cid).await?;
        Ok(())
    }

    /// Removes one replica from its node.
    ///
    /// # Errors
    /// [`BalancerError::Node`] when the node did not confirm, or
    /// [`BalancerError::UnknownNode`].
    pub async fn delete(&self, node_id: i64, key: &str) -> Result<(), BalancerError> {
        let node = self.node(node_id)?;
        let span = tracing::debug_span!("node_delete", node = node_id, key);
        let _slot = node.load.slots.acquire().await;
        node.client
            .delete(&node.spec.bucket, key)
            .instrument(span)
            .await
            .map_err(|f| BalancerError::Node {
                node: node_id,
                message: f.to_string(),
            })
    }

    /// Removes several replicas from one node in one DeleteObjects (at
    /// most [`tenfold_common::MAX_DELETE_KEYS`]): each one's outcome, in
    /// order. A node that does not take DeleteObjects gets a DELETE for
    /// each.
    ///
    /// # Errors
    /// [`BalancerError::Node`] when the node did not answer the request,
    /// or [`BalancerError::UnknownNode`].
    pub async fn delete_many(
        &self,
        node_id: i64,
        keys: &[String],
    ) -> Result<Vec<Result<(), BalancerError>>, BalancerError> {
        let node = self.node(node_id)?;
        let failed = |f: NodeFailure| BalancerError::Node {
            node: node_id,
            message: f.to_string(),
        };
        let span = tracing::debug_span!("node_delete_many", node = node_id, keys = keys.len());
        let answers = {
            let _slot = node.load.slots.acquire().await;
            node.client
                .delete_many(&node.spec.bucket, keys)
                .instrument(span)
                .await
                .map_err(failed)?
        };
        Ok(match answers {
            Some(answers) => answers.into_iter().map(|a| a.map_err(failed)).collect(),
            None => {
                tracing::debug!(
                    node = node_id,
                    "the node takes no DeleteObjects: a DELETE for each replica"
                );
                let deletes: Vec<_> = keys.iter().map(|key| self.delete(node_id, key)).collect();
                futures::stream::iter(deletes)
                    .buffered(DELETES_ONE_BY_ONE)
                    .collect()
                    .await
            }
        })
    }

    /// One page of the keys stored in a node's fragment bucket, from the
    /// continuation token `after`.
    ///
    /// # Errors
    /// [`BalancerError::Node`] when the node did not answer a listing, or
    /// [`BalancerError::UnknownNode`].
    pub async fn list_keys(
        &self,
        node_id: i64,
        after: Option<&str>,
    ) -> Result<KeyPage, BalancerError> {
        let node = self.node(node_id)?;
        let span = tracing::debug_span!("node_list", node = node_id);
        let _slot = node.load.slots.acquire().await;
        node.client
            .list(&node.spec.bucket, after)
            .instrument(span)
            .await
            .map_err(|f| BalancerError::Node {
                node: node_id,
                message: f.to_string(),
            })
    }
}

/// The copies both networks wrote, and the first network's shortfall.
fn merge(
    results: [Result<Vec<Placement>, PlacementFailure>; 2],
) -> (Vec<Placement>, Option<BalancerError>) {
    let mut placed = Vec::new();
    let mut short = None;
    for result in results {
        match result {
            Ok(p) => placed.extend(p),
            Err(f) => {
                placed.extend(f.written);
                // Name the unreachable nodes, if any: that makes it a
                // failure worth retrying.
                if short.is_none() || f.error.nodes_unreachable() {
                    short = Some(f.error);
                }
            }
        }
    }
    (placed, short)
}

async fn put_replica(
    node: Arc<NodeHandle>,
    key: &str,
    data: Bytes,
    (md5, crc32c): ([u8; 16], u32),
) -> (Arc<NodeHandle>, Result<(), NodeFailure>) {
    let span = tracing::debug_span!("node_put", node = node.spec.id, key, len = data.len());
    let result = async {
        let len = data.len() as u64;
        let _writing = node.start_write(len);
        node.ensure_bucket().await?;
        let batchable = write_batch::batchable(data.len());
        let record = Record {
            key: key.to_owned(),
            md5,
            crc32c,
            data,
        };
        if batchable {
            write_batch::put_small(&node, record).await?;
        } else {
            write_batch::put_one(&node, record).await?;
        }
        node.record_placed(len);
        Ok(())
    }
    .instrument(span)
    .await;
    (node, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::start_node;
    use std::time::Duration;

    /// Replicas on a real node go in one DeleteObjects: the node takes it,
    /// each key's answer comes back in order, and the keys are gone.
    #[tokio::test]
    async fn a_nodes_replicas_are_deleted_in_one_request() {
        let dir = std::env::temp_dir().join(format!("tenfold-delete-many-{}", std::process::id()));
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![start_node(&dir, 1, Duration::ZERO).await]);
        let node = balancer.node(1).unwrap();
        node.ensure_bucket().await.unwrap();
        let small = Bytes::from_static(b"small");
        let big = Bytes::from(vec![5u8; 300_000]);
        for (key, data) in [("s", &small), ("b", &big), ("kept", &small)] {
            let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(data).into();
            node.client
                .put(&node.spec.bucket, key, data.clone(), md5, crc32c(data))
                .await
                .unwrap();
        }
        let keys = ["s", "b", "never"].map(String::from);
        let answers = node
            .client
            .delete_many(&node.spec.bucket, &keys)
            .await
            .unwrap()
            .expect("tenfold-node takes DeleteObjects");
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        for key in ["s", "b"] {
            let gone = node.client.get(&node.spec.bucket, key, 1 << 20).await;
            assert!(matches!(gone, Err(NodeFailure::Missing)), "{key}");
        }
        assert!(node.client.get(&node.spec.bucket, "kept", 10).await.is_ok());
        let again = balancer.delete_many(1, &keys).await.unwrap();
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert!(matches!(
            balancer.delete_many(9, &keys).await,
            Err(BalancerError::UnknownNode(9))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A server that answers DeleteObjects `501 Not Implemented` gets a
    /// DELETE for each key instead, and each key's answer is that DELETE's.
    #[tokio::test]
    async fn a_node_without_delete_objects_gets_a_delete_per_key() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut have = 0;
                    loop {
                        let Ok(n) = conn.read(&mut buf[have..]).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        have += n;
                        let text = String::from_utf8_lossy(&buf[..have]).into_owned();
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if have < head_end + 4 + length {
                            continue;
                        }
                        let line = text.lines().next().unwrap_or_default().to_owned();
                        let (status, body) = if line.starts_with("POST") {
                            (
                                "501 Not Implemented",
                                "<Error><Code>NotImplemented</Code></Error>",
                            )
                        } else if line.contains("/tenfold/bad ") {
                            ("403 Forbidden", "<Error><Code>AccessDenied</Code></Error>")
                        } else {
                            ("204 No Content", "")
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        log.lock().unwrap().push(line);
                        conn.write_all(answer.as_bytes()).await.unwrap();
                        buf.copy_within(head_end + 4 + length..have, 0);
                        have -= head_end + 4 + length;
                    }
                });
            }
        });
        let dir =
            std::env::temp_dir().join(format!("tenfold-no-delete-many-{}", std::process::id()));
        let mut spec = start_node(&dir, 1, Duration::ZERO).await;
        spec.endpoint = endpoint;
        let balancer = Balancer::new(ReplicaPolicy::default());
        balancer.set_nodes(vec![spec]);
        let keys = ["one", "bad", "two"].map(String::from);
        let answers = balancer.delete_many(1, &keys).await.unwrap();
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(
            matches!(answers[1], Err(BalancerError::Node { node: 1, .. })),
            "{answers:?}"
        );
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        let methods: Vec<&str> = seen.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(methods, ["DELETE", "DELETE", "DELETE", "POST"], "{seen:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_policy_is_met_by_node_copies_on_each_network_only() {
        let policy = ReplicaPolicy::default();
        let node = |node_id, network| Placement::Node { node_id, network };
        let mut copies = vec![
            node(1, Network::Mainnet),
            node(2, Network::Mainnet),
            node(3, Network::Testnet),
            Placement::Overflow { cid: "c".into() },
        ];
        assert!(
            !policy.is_met(&copies),
            "the pin does not stand in for a node"
        );
        copies.push(node(4, Network::Testnet));
        assert!(
            !policy.is_met(&copies),
            "a second testnet copy is no mainnet one"
        );
        copies.push(node(5, Network::Mainnet));
        assert!(policy.is_met(&copies));
        assert_eq!(policy.total(), 4);
    }

    #[test]
    fn a_shortfall_is_worth_retrying_only_when_nodes_did_not_answer() {
        let short = |unreachable| BalancerError::InsufficientNodes {
            network: Network::Mainnet,
            key: "k".into(),
            needed: 3,
            placed: 1,
            unreachable,
        };
        assert!(!short(0).nodes_unreachable());
        assert!(short(2).nodes_unreachable());
        let via_overflow = BalancerError::OverflowFailed {
            nodes: Box::new(short(1)),
            overflow: tenfold_overflow::OverflowError::Unreachable {
                store: "ipfs".into(),
                message: "down".into(),
            },
        };
        assert!(via_overflow.nodes_unreachable());
    }

    #[test]
    fn the_quorum_never_asks_more_than_the_policy() {
        let balancer = Balancer::new(ReplicaPolicy {
            mainnet: 1,
            testnet: 0,
        });
        assert_eq!(balancer.min_copies(), 1);
        assert_eq!(Balancer::new(ReplicaPolicy::default()).min_copies(), 4);
        let quorum = Balancer::new(ReplicaPolicy::default()).with_min_copies(2);
        assert_eq!(quorum.min_copies(), 2);
        assert_eq!(
            Balancer::new(ReplicaPolicy::default())
                .with_min_copies(0)
                .min_copies(),
            1
        );
    }
}
