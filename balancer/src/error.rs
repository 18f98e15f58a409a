//! The balancer's error type.

use tenfold_overflow::OverflowError;

use crate::node::Network;

/// Everything that can go wrong while placing, reading or deleting fragments.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// Not enough healthy nodes with free space accepted a replica;
    /// `unreachable` of the nodes tried did not answer (or failed), the
    /// others were full.
    #[error(
        "not enough {network} nodes with free space: {placed} of {needed} replicas of {key} placed ({unreachable} nodes unreachable)"
    )]
    InsufficientNodes {
        network: Network,
        key: String,
        needed: usize,
        placed: usize,
        unreachable: usize,
    },
    /// The nodes could not hold a fragment and neither could the overflow
    /// store.
    #[error("{nodes}, and the overflow store failed: {overflow}")]
    OverflowFailed {
        nodes: Box<BalancerError>,
        overflow: OverflowError,
    },
    /// A request to the overflow store failed.
    #[error(transparent)]
    Overflow(#[from] OverflowError),
    /// The TLS settings for https nodes are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Content ids are recorded but no overflow store is configured.
    #[error("no overflow store is configured (--ipfs-api)")]
    NoOverflow,
    /// No replica of a fragment could be read and verified.
    #[error("no replica of {key} could be read ({tried} tried): {last}")]
    Unreadable {
        key: String,
        tried: usize,
        last: String,
    },
    /// A request to one node failed.
    #[error("node {node}: {message}")]
    Node { node: i64, message: String },
    /// A node id the registry does not know.
    #[error("unknown node {0}")]
    UnknownNode(i64),
}

impl BalancerError {
    /// Whether a placement fell short because nodes (or the overflow store)
    /// did not answer, rather than for want of room: worth retrying.
    pub fn nodes_unreachable(&self) -> bool {
        match self {
            BalancerError::InsufficientNodes { unreachable, .. } => *unreachable > 0,
            BalancerError::OverflowFailed { nodes, .. } => nodes.nodes_unreachable(),
            _ => false,
        }
    }
}
