//! Audits: one replica read back from its node and checked against the
//! fragment's MD5, for the scrub that verifies every replica over time.

use tracing::Instrument;

use crate::node_client::NodeFailure;
use crate::registry::Balancer;

/// What an audit of one replica found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The node returned the right bytes.
    Intact,
    /// The node does not have the replica.
    Missing,
    /// The node returned other bytes (or more of them).
    Corrupt,
    /// The node could not be asked (down, timed out): no finding about
    /// the replica; the node lifecycle deals with unreachable nodes.
    Unreachable(String),
}

impl Balancer {
    /// Reads the replica `key` of `len` bytes from node `node_id` and checks
    /// it against `md5`. A corrupt answer demotes the node, as a read would.
    pub async fn audit(&self, node_id: i64, key: &str, len: u64, md5: [u8; 16]) -> AuditOutcome {
        let node = match self.node(node_id) {
            Ok(node) => node,
            Err(e) => return AuditOutcome::Unreachable(e.to_string()),
        };
        let span = tracing::debug_span!("node_audit", node = node_id, key, len);
        let fetched = async {
            let _turn = node.load.read_turn(len).await;
            node.client.get(&node.spec.bucket, key, len).await
        }
        .instrument(span)
        .await;
        match fetched {
            Ok(f) if f.data.len() as u64 == len && f.data.md5() == md5 => AuditOutcome::Intact,
            Ok(_) | Err(NodeFailure::Corrupt) => {
                node.record_failure(&NodeFailure::Corrupt);
                AuditOutcome::Corrupt
            }
            Err(NodeFailure::Missing) => AuditOutcome::Missing,
            Err(other) => {
                node.record_failure(&other);
                AuditOutcome::Unreachable(other.to_string())
            }
        }
    }
}
